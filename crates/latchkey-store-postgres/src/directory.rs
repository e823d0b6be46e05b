//! Family A's attributes (`user_attribute`, `scope_attribute`) and the account and user
//! listings. Listings are built from fixed SQL pieces: sort columns come from an enum, every
//! value the caller gave is bound, never spliced. The SQL is written with `?` and numbered
//! (`$1`, `$2`, ...) by [`numbered`]; text columns sort with `COLLATE "C"` (byte order, as
//! SQLite sorts) and the user search is `ILIKE` (SQLite's LIKE ignores ASCII case). A merge
//! takes a transaction-scoped advisory lock on its scope first: under READ COMMITTED two
//! merges would otherwise each count only their own new keys and both pass the bound.

use async_trait::async_trait;
use latchkey_core::model::directory::{
    AccountColumn, AttributeFilter, AttributeScope, Attributes, ListedAccount, Listing, Page,
    UserColumn, UserSummary,
};
use latchkey_core::model::ids::ServerId;
use latchkey_core::store::{DirectoryStore, StoreResult};
use sqlx::postgres::PgArguments;
use sqlx::Arguments;
use uuid::Uuid;

use crate::rows::{ListedAccountRow, UserSummaryRow};
use crate::{bound, count, db, PgStore};

/// Where a scope's attributes are: the table and the owner columns with their values.
struct Place {
    table: &'static str,
    /// (column, its placeholder), value.
    owner: Vec<((&'static str, &'static str), String)>,
}

impl Place {
    fn of(scope: &AttributeScope) -> Place {
        let scoped = |scope: &'static str, server: String| Place {
            table: "scope_attribute",
            owner: vec![
                (("scope", "?"), scope.to_owned()),
                (("server_id", "?"), server),
            ],
        };
        match scope {
            AttributeScope::Global => scoped("global", String::new()),
            AttributeScope::Server(id) => scoped("server", id.as_str().to_owned()),
            AttributeScope::Privileged(id) => scoped("privileged", id.as_str().to_owned()),
            AttributeScope::User(id) => Place {
                table: "user_attribute",
                owner: vec![(("user_id", "?::uuid"), id.to_string())],
            },
        }
    }

    /// A key naming the scope, for the advisory lock that queues its merges.
    fn lock_key(&self) -> String {
        let mut key = format!("latchkey attributes|{}", self.table);
        for (_, value) in &self.owner {
            key.push('|');
            key.push_str(value);
        }
        key
    }

    fn condition(&self) -> String {
        self.owner
            .iter()
            .map(|((column, mark), _)| format!("{column} = {mark}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn bind<'q>(&'q self, mut query: QueryOf<'q>) -> QueryOf<'q> {
        for (_, value) in &self.owner {
            query = query.bind(value.as_str());
        }
        query
    }

    fn upsert(&self) -> String {
        let columns: Vec<&str> = self.owner.iter().map(|((c, _), _)| *c).collect();
        let marks: Vec<&str> = self.owner.iter().map(|((_, m), _)| *m).collect();
        numbered(&format!(
            "INSERT INTO {} ({}, name, value) VALUES ({}, ?, ?) \
             ON CONFLICT ({}, name) DO UPDATE SET value = excluded.value",
            self.table,
            columns.join(", "),
            marks.join(", "),
            columns.join(", ")
        ))
    }
}

type QueryOf<'q> = sqlx::query::Query<'q, sqlx::Postgres, PgArguments>;

/// `sql` with each `?` replaced by `$1`, `$2`, ... in order (the pieces here hold no other `?`).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// `AND EXISTS (...)` for an attribute filter on the users `user_column` names (`?` marks).
fn filter_sql(filter: Option<&AttributeFilter>, user_column: &str) -> (String, Vec<String>) {
    let Some(filter) = filter else {
        return (String::new(), Vec::new());
    };
    let candidates = filter.json_candidates();
    let marks = vec!["?"; candidates.len()].join(", ");
    let mut binds = vec![filter.key.clone()];
    binds.extend(candidates);
    (
        format!(
            " AND EXISTS (SELECT 1 FROM user_attribute t WHERE t.user_id = {user_column} \
             AND t.name = ? AND t.value IN ({marks}))"
        ),
        binds,
    )
}

/// `ORDER BY` of the chosen columns (NULLs first going up, as both backends sort them), then
/// `tiebreak` so pages never overlap.
fn order_sql<C: Copy>(
    sort: &[(C, bool)],
    column: impl Fn(C) -> &'static str,
    tiebreak: &str,
) -> String {
    let mut parts: Vec<String> = sort
        .iter()
        .map(|(c, descending)| {
            if *descending {
                format!("{} DESC NULLS LAST", column(*c))
            } else {
                format!("{} ASC NULLS FIRST", column(*c))
            }
        })
        .collect();
    parts.push(tiebreak.to_owned());
    format!(" ORDER BY {}", parts.join(", "))
}

fn arguments(values: &[String]) -> StoreResult<PgArguments> {
    let mut args = PgArguments::default();
    for value in values {
        args.add(value.as_str())
            .map_err(|e| latchkey_core::StoreError::Other(e.to_string()))?;
    }
    Ok(args)
}

/// `%text%` for LIKE, with LIKE's own characters escaped (by `\`).
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[async_trait]
impl DirectoryStore for PgStore {
    async fn attributes(&self, scope: &AttributeScope) -> StoreResult<Attributes> {
        let place = Place::of(scope);
        let sql = numbered(&format!(
            "SELECT name, value FROM {} WHERE {}",
            place.table,
            place.condition()
        ));
        let rows: Vec<(String, String)> = place
            .bind(sqlx::query(&sql))
            .try_map(|row: sqlx::postgres::PgRow| {
                use sqlx::Row;
                Ok((row.try_get(0)?, row.try_get(1)?))
            })
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows.into_iter().collect())
    }

    async fn replace_attributes(
        &self,
        scope: &AttributeScope,
        attributes: &Attributes,
    ) -> StoreResult<()> {
        let place = Place::of(scope);
        let delete = numbered(&format!(
            "DELETE FROM {} WHERE {}",
            place.table,
            place.condition()
        ));
        let upsert = place.upsert();
        let mut tx = self.pool.begin().await.map_err(db)?;
        place
            .bind(sqlx::query(&delete))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for (name, value) in attributes {
            place
                .bind(sqlx::query(&upsert))
                .bind(name)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn merge_attributes(
        &self,
        scope: &AttributeScope,
        attributes: &Attributes,
        max_keys: u64,
    ) -> StoreResult<bool> {
        let place = Place::of(scope);
        let upsert = place.upsert();
        let counting = numbered(&format!(
            "SELECT count(*) FROM {} WHERE {}",
            place.table,
            place.condition()
        ));
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Merges of one scope queue here, so each counts what the ones before it left.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(place.lock_key())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for (name, value) in attributes {
            place
                .bind(sqlx::query(&upsert))
                .bind(name)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let mut query = sqlx::query_scalar::<_, i64>(&counting);
        for (_, value) in &place.owner {
            query = query.bind(value.as_str());
        }
        let held = count(query.fetch_one(&mut *tx).await.map_err(db)?)?;
        if held > max_keys {
            tx.rollback().await.map_err(db)?;
            return Ok(false);
        }
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn delete_attributes(&self, scope: &AttributeScope) -> StoreResult<u64> {
        let place = Place::of(scope);
        let sql = numbered(&format!(
            "DELETE FROM {} WHERE {}",
            place.table,
            place.condition()
        ));
        let done = place
            .bind(sqlx::query(&sql))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn delete_attribute(&self, scope: &AttributeScope, key: &str) -> StoreResult<bool> {
        let place = Place::of(scope);
        let sql = numbered(&format!(
            "DELETE FROM {} WHERE {} AND name = ?",
            place.table,
            place.condition()
        ));
        let done = place
            .bind(sqlx::query(&sql))
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_accounts(
        &self,
        server_id: &ServerId,
        listing: &Listing<AccountColumn>,
    ) -> StoreResult<Page<ListedAccount>> {
        let (filter, filter_binds) = filter_sql(listing.filter.as_ref(), "a.user_id");
        let order = order_sql(
            &listing.sort,
            |c| match c {
                AccountColumn::Id => "a.account_id",
                AccountColumn::Description => "a.description COLLATE \"C\"",
                AccountColumn::Userid => "p.userid COLLATE \"C\"",
                AccountColumn::Blocked => "a.blocked",
                AccountColumn::ClientVersion => "a.client_version COLLATE \"C\"",
                AccountColumn::Created => "a.created_at",
                AccountColumn::LastLogin => "a.last_login",
                AccountColumn::LastProvoke => "a.last_provoke",
            },
            "a.account_id",
        );
        let mut binds = vec![server_id.as_str().to_owned()];
        let mut condition = String::new();
        if let Some(user) = listing.user {
            condition.push_str(" AND a.user_id = ?::uuid");
            binds.push(user.to_string());
        }
        condition.push_str(&filter);
        binds.extend(filter_binds);
        let total: i64 = sqlx::query_scalar_with(
            &numbered(&format!(
                "SELECT count(*) FROM account a WHERE a.server_id = ?{condition}"
            )),
            arguments(&binds)?,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let rows: Vec<ListedAccountRow> = sqlx::query_as_with(
            &numbered(&format!(
                "SELECT a.*, p.userid AS owner_userid FROM account a \
                 LEFT JOIN person p ON p.user_id = a.user_id \
                 WHERE a.server_id = ?{condition}{order} LIMIT {} OFFSET {}",
                bound(listing.limit),
                bound(listing.offset)
            )),
            arguments(&binds)?,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(TryFrom::try_from)
                .collect::<StoreResult<_>>()?,
            total: count(total)?,
        })
    }

    async fn list_users(
        &self,
        server_id: &ServerId,
        listing: &Listing<UserColumn>,
    ) -> StoreResult<Page<UserSummary>> {
        let mut binds = vec![server_id.as_str().to_owned()];
        let mut condition = String::new();
        if let Some(search) = &listing.search {
            condition.push_str(" AND p.userid ILIKE ? ESCAPE '\\'");
            binds.push(contains_pattern(search));
        }
        let (filter, filter_binds) = filter_sql(listing.filter.as_ref(), "p.user_id");
        condition.push_str(&filter);
        binds.extend(filter_binds);
        let order = order_sql(
            &listing.sort,
            |c| match c {
                UserColumn::Userid => "p.userid COLLATE \"C\"",
                UserColumn::LastLogin => "last_login",
                UserColumn::NumberAccounts => "accounts",
            },
            "p.userid COLLATE \"C\"",
        );
        let total: i64 = sqlx::query_scalar_with(
            &numbered(&format!(
                "SELECT count(*) FROM person p WHERE p.server_id = ?{condition}"
            )),
            arguments(&binds)?,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let rows: Vec<UserSummaryRow> = sqlx::query_as_with(
            &numbered(&format!(
                "SELECT p.userid, max(a.last_login) AS last_login, \
                        count(a.account_id) AS accounts \
                 FROM person p LEFT JOIN account a ON a.user_id = p.user_id \
                 WHERE p.server_id = ?{condition} \
                 GROUP BY p.user_id, p.userid{order} LIMIT {} OFFSET {}",
                bound(listing.limit),
                bound(listing.offset)
            )),
            arguments(&binds)?,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(TryFrom::try_from)
                .collect::<StoreResult<_>>()?,
            total: count(total)?,
        })
    }

    async fn delete_account(&self, server_id: &ServerId, account_id: i64) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM account WHERE server_id = $1 AND account_id = $2")
            .bind(server_id.as_str())
            .bind(account_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_user_accounts(&self, user_id: Uuid) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM account WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }
}
