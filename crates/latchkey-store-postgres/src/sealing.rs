//! Secrets sealed at open (see `latchkey_core::crypto::sealing`). The first open with a master
//! key claims the database for it, in one transaction: it stores the key's check value and
//! seals every secret an earlier version stored in clear. Every later open checks the value, so
//! a wrong or new key is refused before any secret is read. Processes opening together
//! serialise on the check row's insert; the second finds the first's value and checks it.

use latchkey_core::crypto::sealing::{Column, Sealer};
use latchkey_core::store::StoreResult;
use latchkey_core::StoreError;
use sqlx::PgPool;

use crate::db;

const CHECK_KEY: &str = "master_key_check";

/// What a process must do when it claims a database for its master key, before the claim
/// commits (write the key file): an error abandons the claim.
pub type OnClaim<'a> = &'a (dyn Fn() -> Result<(), String> + Send + Sync);

pub(crate) async fn seal_at_open(
    pool: &PgPool,
    sealer: &Sealer,
    on_claim: OnClaim<'_>,
) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(db)?;
    let claimed = sqlx::query(
        "INSERT INTO setting (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    )
    .bind(CHECK_KEY)
    .bind(sealer.check_value())
    .execute(&mut *tx)
    .await
    .map_err(db)?
    .rows_affected()
        == 1;
    if !claimed {
        let value: String = sqlx::query_scalar("SELECT value FROM setting WHERE key = $1")
            .bind(CHECK_KEY)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        return if sealer.verifies(&value) {
            Ok(())
        } else {
            Err(StoreError::WrongMasterKey)
        };
    }
    let mut sealed = 0;
    for column in Column::STORED {
        let Some((table, id, secret)) = column.place() else {
            continue;
        };
        let id_type = if table == "person" { "uuid" } else { "text" };
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(&format!(
            "SELECT {id}::text, {secret} FROM {table} WHERE {secret} IS NOT NULL"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        for (row, clear) in rows {
            sqlx::query(&format!(
                "UPDATE {table} SET {secret} = $1 WHERE {id} = $2::{id_type}"
            ))
            .bind(sealer.seal(column, &row, &clear))
            .bind(&row)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            sealed += 1;
        }
    }
    // The key is on disk before the claim is: a crash in between leaves an unclaimed database
    // and a key file, which the next open uses.
    on_claim().map_err(|e| StoreError::Other(format!("keeping the master key: {e}")))?;
    tx.commit().await.map_err(db)?;
    if sealed > 0 {
        scrub(pool).await;
        tracing::info!(
            secrets = sealed,
            "sealed the secrets stored in clear with the master key"
        );
    }
    Ok(())
}

/// The clear values the sealing replaced linger in dead tuples: rewrite the three tables (a
/// one-time cost at the upgrade; WAL archives and earlier backups still hold them, see
/// docs/operating.md).
async fn scrub(pool: &PgPool) {
    if let Err(e) = sqlx::query("VACUUM FULL server, signing_key, person")
        .execute(pool)
        .await
    {
        tracing::warn!(error = %e, "scrubbing the replaced clear secrets failed");
    }
}
