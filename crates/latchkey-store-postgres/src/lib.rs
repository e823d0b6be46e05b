//! The shared store: PostgreSQL, for several stateless latchkey processes behind one load
//! balancer. It mirrors the SQLite store statement for statement (same tables, same migration
//! file names, same semantics), with native types: UUID ids, BYTEA digests and keys, BIGINT
//! unix seconds, BOOLEAN flags. Migrations in `migrations/` are embedded and run at open; sqlx
//! takes an advisory lock, so processes starting together do not race.
//!
//! Because the rows are shared, statements that lock several sessions (the coalesced touch
//! flush, revoking all of a user's sessions) lock them in `session_id` order: two processes
//! flushing overlapping batches then wait for each other instead of deadlocking.

mod events;

pub use events::PgEvents;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::model::ids::{ServerId, UserId};
use latchkey_core::model::{
    Account, ApiKey, AppChallenge, AuditEvent, AuthMethod, BrowserSession, ClientInfo, MfaKind,
    NewAccount, PasswordHashes, Permissions, PushRequest, RefreshUse, Role, ScramHandshake,
    ScramVerifier, Server, Session, SessionState, SessionTouch, SigningKey, User, UserCredentials,
};
use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::store::{Store, StoreResult};
use latchkey_core::StoreError;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Decode, Postgres, Row, Type};
use uuid::Uuid;

/// Connections per process. Several processes share one server, whose `max_connections`
/// (100 by default) bounds the sum.
const MAX_CONNECTIONS: u32 = 16;

pub struct PgStore {
    pool: PgPool,
}

fn other(e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(e.to_string())
}

fn db(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict(d.message().to_owned())
        }
        sqlx::Error::RowNotFound => StoreError::NotFound,
        _ => other(e),
    }
}

/// One column of a row, with a decoding failure reported as a store error.
fn get<'r, T>(row: &'r PgRow, column: &str) -> StoreResult<T>
where
    T: Decode<'r, Postgres> + Type<Postgres>,
{
    row.try_get(column).map_err(other)
}

fn key32(bytes: &[u8]) -> StoreResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| other("stored key is not 32 bytes"))
}

fn counter(row: &PgRow, column: &str) -> StoreResult<u32> {
    u32::try_from(get::<i64>(row, column)?).map_err(|_| other(format!("{column} out of range")))
}

fn count(n: i64) -> StoreResult<u64> {
    u64::try_from(n).map_err(other)
}

/// LIMIT and OFFSET take a BIGINT; anything beyond it means "no bound".
fn bound(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn server_id(row: &PgRow) -> StoreResult<ServerId> {
    ServerId::parse(&get::<String>(row, "server_id")?).map_err(other)
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://...`) and migrates it.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let mut options = PgConnectOptions::from_str(url).map_err(other)?;
        if options.get_application_name().is_none() {
            options = options.application_name("latchkey");
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(other)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| other(format!("migration failed: {e}")))?;
        tracing::debug!("PostgreSQL store open and migrated");
        Ok(Self { pool })
    }
}

const SESSION_COLUMNS: &str = "session_id, server_id, user_id, methods, state, created_at, \
    last_active_at, idle_expires_at, absolute_expires_at, client_ip, user_agent, device_name, \
    pending_mfa, mfa_failures, captcha_answer, captcha_failures, password_ok, revoked_at, \
    idle_timeout";

const USER_COLUMNS: &str = "user_id, server_id, userid, created_at";

fn session_from_row(row: &PgRow) -> StoreResult<Session> {
    let state: String = get(row, "state")?;
    let pending: Option<String> = get(row, "pending_mfa")?;
    let captcha: Option<Vec<u8>> = get(row, "captcha_answer")?;
    Ok(Session {
        id: get(row, "session_id")?,
        server_id: server_id(row)?,
        user_id: get(row, "user_id")?,
        methods: AuthMethod::split(&get::<String>(row, "methods")?),
        state: SessionState::parse(&state).ok_or_else(|| other(format!("bad state {state}")))?,
        created_at: get(row, "created_at")?,
        last_active_at: get(row, "last_active_at")?,
        idle_expires_at: get(row, "idle_expires_at")?,
        absolute_expires_at: get(row, "absolute_expires_at")?,
        idle_timeout: get(row, "idle_timeout")?,
        client: ClientInfo {
            ip: get(row, "client_ip")?,
            user_agent: get(row, "user_agent")?,
            device_name: get(row, "device_name")?,
        },
        pending_mfa: pending.as_deref().and_then(MfaKind::parse),
        mfa_failures: counter(row, "mfa_failures")?,
        captcha_answer: captcha.as_deref().and_then(SecretHash::from_slice),
        captcha_failures: counter(row, "captcha_failures")?,
        password_ok: get(row, "password_ok")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

fn server_from_row(row: &PgRow) -> StoreResult<Server> {
    Ok(Server {
        id: server_id(row)?,
        name: get(row, "name")?,
        secret_key: key32(&get::<Vec<u8>>(row, "secret_key")?)?,
        public_key: key32(&get::<Vec<u8>>(row, "public_key")?)?,
        created_at: get(row, "created_at")?,
    })
}

fn user_from_row(row: &PgRow) -> StoreResult<User> {
    Ok(User {
        id: get(row, "user_id")?,
        server_id: server_id(row)?,
        userid: UserId::parse(&get::<String>(row, "userid")?).map_err(other)?,
        created_at: get(row, "created_at")?,
    })
}

fn audit_from_row(row: &PgRow) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        at: get(row, "at")?,
        server_id: server_id(row)?,
        kind: get(row, "kind")?,
        userid: get(row, "userid")?,
        session_id: get(row, "session_id")?,
        ip: get(row, "ip")?,
        detail: get(row, "detail")?,
    })
}

const HANDSHAKE_COLUMNS: &str =
    "nonce_hash, server_id, email, client_nonce, salt, iterations, platform, expires_at";

fn handshake_from_row(row: &PgRow) -> StoreResult<ScramHandshake> {
    Ok(ScramHandshake {
        nonce_hash: SecretHash(key32(&get::<Vec<u8>>(row, "nonce_hash")?)?),
        server_id: server_id(row)?,
        email: get(row, "email")?,
        client_nonce: get(row, "client_nonce")?,
        salt: get(row, "salt")?,
        iterations: counter(row, "iterations")?,
        platform: get(row, "platform")?,
        expires_at: get(row, "expires_at")?,
    })
}

fn signing_key_from_row(row: &PgRow) -> StoreResult<SigningKey> {
    Ok(SigningKey {
        kid: get(row, "kid")?,
        secret_key: key32(&get::<Vec<u8>>(row, "secret_key")?)?,
        public_key: key32(&get::<Vec<u8>>(row, "public_key")?)?,
        created_at: get(row, "created_at")?,
        retired_at: get(row, "retired_at")?,
    })
}

fn hash_col(row: &PgRow, column: &str) -> StoreResult<SecretHash> {
    Ok(SecretHash(key32(&get::<Vec<u8>>(row, column)?)?))
}

fn opt_hash_col(row: &PgRow, column: &str) -> StoreResult<Option<SecretHash>> {
    get::<Option<Vec<u8>>>(row, column)?
        .as_deref()
        .map(|b| key32(b).map(SecretHash))
        .transpose()
}

const ACCOUNT_COLUMNS: &str = "account_id, server_id, public_key, description, user_id, \
    blocked, client_version, created_at, last_login, last_provoke";

fn account_from_row(row: &PgRow) -> StoreResult<Account> {
    Ok(Account {
        id: get(row, "account_id")?,
        server_id: server_id(row)?,
        public_key: key32(&get::<Vec<u8>>(row, "public_key")?)?,
        description: get(row, "description")?,
        user_id: get(row, "user_id")?,
        blocked: get(row, "blocked")?,
        client_version: get(row, "client_version")?,
        created_at: get(row, "created_at")?,
        last_login: get(row, "last_login")?,
        last_provoke: get(row, "last_provoke")?,
    })
}

const BROWSER_SESSION_COLUMNS: &str = "server_id, nonce_hash, hsid_hash, session_id, \
    account_id, login_seed, login_challenge, login_expires_at, login_base_url, user_context, \
    created_at";

fn browser_session_from_row(row: &PgRow) -> StoreResult<BrowserSession> {
    Ok(BrowserSession {
        server_id: server_id(row)?,
        nonce_hash: hash_col(row, "nonce_hash")?,
        hsid_hash: hash_col(row, "hsid_hash")?,
        session_id: get(row, "session_id")?,
        account_id: get(row, "account_id")?,
        login_seed: get(row, "login_seed")?,
        login_challenge: opt_hash_col(row, "login_challenge")?,
        login_expires_at: get(row, "login_expires_at")?,
        login_base_url: get(row, "login_base_url")?,
        user_context: get(row, "user_context")?,
        created_at: get(row, "created_at")?,
    })
}

const APP_CHALLENGE_COLUMNS: &str =
    "challenge_hash, server_id, purpose, account_id, name, userid, expires_at";

fn app_challenge_from_row(row: &PgRow) -> StoreResult<AppChallenge> {
    Ok(AppChallenge {
        challenge_hash: hash_col(row, "challenge_hash")?,
        server_id: server_id(row)?,
        purpose: get(row, "purpose")?,
        account_id: get(row, "account_id")?,
        name: get(row, "name")?,
        userid: get(row, "userid")?,
        expires_at: get(row, "expires_at")?,
    })
}

const PUSH_COLUMNS: &str = "request_id, server_id, account_id, nonce_hash, user_context, \
    created_at, expires_at, answered_at, approved";

fn push_from_row(row: &PgRow) -> StoreResult<PushRequest> {
    Ok(PushRequest {
        id: get(row, "request_id")?,
        server_id: server_id(row)?,
        account_id: get(row, "account_id")?,
        nonce_hash: hash_col(row, "nonce_hash")?,
        user_context: get(row, "user_context")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        answered_at: get(row, "answered_at")?,
        approved: get(row, "approved")?,
    })
}

fn found(rows: u64) -> StoreResult<()> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT value FROM setting WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn insert_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO setting (key, value) VALUES ($1, $2)")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_server(&self, server: &Server) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO server (server_id, name, secret_key, public_key, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(server.id.as_str())
        .bind(&server.name)
        .bind(&server.secret_key[..])
        .bind(&server.public_key[..])
        .bind(server.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn server(&self, id: &ServerId) -> StoreResult<Option<Server>> {
        sqlx::query(
            "SELECT server_id, name, secret_key, public_key, created_at FROM server \
             WHERE server_id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(server_from_row)
        .transpose()
    }

    async fn servers(&self) -> StoreResult<Vec<Server>> {
        // COLLATE "C": byte order, as SQLite sorts, whatever the database's locale.
        sqlx::query(
            "SELECT server_id, name, secret_key, public_key, created_at FROM server \
             ORDER BY created_at, server_id COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(server_from_row)
        .collect()
    }

    async fn insert_role(&self, role: &Role) -> StoreResult<()> {
        sqlx::query("INSERT INTO role (role_id, root) VALUES ($1, $2)")
            .bind(&role.id)
            .bind(role.root)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn role(&self, id: &str) -> StoreResult<Option<Role>> {
        let row = sqlx::query("SELECT role_id, root FROM role WHERE role_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| {
            Ok(Role {
                id: get(&r, "role_id")?,
                root: get(&r, "root")?,
            })
        })
        .transpose()
    }

    async fn set_permissions(
        &self,
        role_id: &str,
        server_id: &ServerId,
        p: Permissions,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO permission (role_id, server_id, sessions, accounts, users, servers) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (role_id, server_id) DO UPDATE SET sessions = excluded.sessions, \
             accounts = excluded.accounts, users = excluded.users, servers = excluded.servers",
        )
        .bind(role_id)
        .bind(server_id.as_str())
        .bind(p.sessions)
        .bind(p.accounts)
        .bind(p.users)
        .bind(p.servers)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn permissions(&self, role_id: &str, server_id: &ServerId) -> StoreResult<Permissions> {
        let row = sqlx::query(
            "SELECT sessions, accounts, users, servers FROM permission \
             WHERE role_id = $1 AND server_id = $2",
        )
        .bind(role_id)
        .bind(server_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        match row {
            None => Ok(Permissions::default()),
            Some(r) => Ok(Permissions {
                sessions: get(&r, "sessions")?,
                accounts: get(&r, "accounts")?,
                users: get(&r, "users")?,
                servers: get(&r, "servers")?,
            }),
        }
    }

    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_key (api_key_id, key_hash, role_id, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(key.id)
        .bind(&key.key_hash.0[..])
        .bind(&key.role_id)
        .bind(key.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn api_key(&self, key_hash: &SecretHash) -> StoreResult<Option<ApiKey>> {
        let row = sqlx::query(
            "SELECT api_key_id, key_hash, role_id, created_at FROM api_key WHERE key_hash = $1",
        )
        .bind(&key_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| {
            Ok(ApiKey {
                id: get(&r, "api_key_id")?,
                key_hash: SecretHash(key32(&get::<Vec<u8>>(&r, "key_hash")?)?),
                role_id: get(&r, "role_id")?,
                created_at: get(&r, "created_at")?,
            })
        })
        .transpose()
    }

    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO person (user_id, server_id, userid, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(user.id)
        .bind(user.server_id.as_str())
        .bind(user.userid.as_str())
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn user(&self, server_id: &ServerId, userid: &UserId) -> StoreResult<Option<User>> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM person WHERE server_id = $1 AND userid = $2"
        ))
        .bind(server_id.as_str())
        .bind(userid.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM person WHERE user_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    async fn users(&self, server_id: &ServerId) -> StoreResult<Vec<User>> {
        // COLLATE "C": byte order, as SQLite sorts, whatever the database's locale.
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM person WHERE server_id = $1 \
             ORDER BY userid COLLATE \"C\""
        ))
        .bind(server_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(user_from_row)
        .collect()
    }

    async fn delete_user(&self, id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM person WHERE user_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn credentials(
        &self,
        server_id: &ServerId,
        userid: &UserId,
    ) -> StoreResult<Option<UserCredentials>> {
        let Some(r) = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, password_argon2, scram_salt, scram_iterations, \
             scram_stored_key, scram_server_key, totp_secret, totp_last_step, pin_hash \
             FROM person WHERE server_id = $1 AND userid = $2"
        ))
        .bind(server_id.as_str())
        .bind(userid.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        else {
            return Ok(None);
        };
        let argon2: Option<String> = get(&r, "password_argon2")?;
        let password = match argon2 {
            Some(argon2) => Some(PasswordHashes {
                argon2,
                scram: ScramVerifier {
                    salt: get(&r, "scram_salt")?,
                    iterations: counter(&r, "scram_iterations")?,
                    stored_key: key32(&get::<Vec<u8>>(&r, "scram_stored_key")?)?,
                    server_key: key32(&get::<Vec<u8>>(&r, "scram_server_key")?)?,
                },
            }),
            None => None,
        };
        Ok(Some(UserCredentials {
            user: user_from_row(&r)?,
            password,
            totp_secret: get(&r, "totp_secret")?,
            totp_last_step: get(&r, "totp_last_step")?,
            pin_hash: get(&r, "pin_hash")?,
        }))
    }

    async fn set_password(&self, user_id: Uuid, h: &PasswordHashes) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE person SET password_argon2 = $1, scram_salt = $2, scram_iterations = $3, \
             scram_stored_key = $4, scram_server_key = $5 WHERE user_id = $6",
        )
        .bind(&h.argon2)
        .bind(&h.scram.salt)
        .bind(i64::from(h.scram.iterations))
        .bind(&h.scram.stored_key[..])
        .bind(&h.scram.server_key[..])
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        found(done.rows_affected())
    }

    async fn set_totp_secret(&self, user_id: Uuid, secret: Option<&[u8]>) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE person SET totp_secret = $1, totp_last_step = -1 WHERE user_id = $2",
        )
        .bind(secret)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        found(done.rows_affected())
    }

    async fn consume_totp_step(&self, user_id: Uuid, step: i64) -> StoreResult<bool> {
        // One conditional UPDATE: of two processes checking the same code, one row lock
        // decides and the loser re-reads the new step and updates nothing.
        let done = sqlx::query(
            "UPDATE person SET totp_last_step = $1 WHERE user_id = $2 AND totp_last_step < $1",
        )
        .bind(step)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_pin_hash(&self, user_id: Uuid, pin_hash: Option<&str>) -> StoreResult<()> {
        let done = sqlx::query("UPDATE person SET pin_hash = $1 WHERE user_id = $2")
            .bind(pin_hash)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        found(done.rows_affected())
    }

    async fn insert_session(&self, s: &Session, token_hash: &SecretHash) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO session ({SESSION_COLUMNS}, token_hash) VALUES ($1, $2, $3, $4, $5, \
             $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
        ))
        .bind(s.id)
        .bind(s.server_id.as_str())
        .bind(s.user_id)
        .bind(AuthMethod::join(&s.methods))
        .bind(s.state.as_str())
        .bind(s.created_at)
        .bind(s.last_active_at)
        .bind(s.idle_expires_at)
        .bind(s.absolute_expires_at)
        .bind(&s.client.ip)
        .bind(&s.client.user_agent)
        .bind(&s.client.device_name)
        .bind(s.pending_mfa.map(MfaKind::as_str))
        .bind(i64::from(s.mfa_failures))
        .bind(s.captcha_answer.map(|h| h.0.to_vec()))
        .bind(i64::from(s.captcha_failures))
        .bind(s.password_ok)
        .bind(s.revoked_at)
        .bind(s.idle_timeout)
        .bind(&token_hash.0[..])
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM session WHERE session_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    async fn session_by_token(&self, token_hash: &SecretHash) -> StoreResult<Option<Session>> {
        sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM session WHERE token_hash = $1"
        ))
        .bind(&token_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    async fn update_session(&self, s: &Session) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE session SET user_id = $1, methods = $2, state = $3, last_active_at = $4, \
             idle_expires_at = $5, absolute_expires_at = $6, client_ip = $7, user_agent = $8, \
             device_name = $9, pending_mfa = $10, mfa_failures = $11, captcha_answer = $12, \
             captcha_failures = $13, password_ok = $14, revoked_at = $15, idle_timeout = $16 \
             WHERE session_id = $17",
        )
        .bind(s.user_id)
        .bind(AuthMethod::join(&s.methods))
        .bind(s.state.as_str())
        .bind(s.last_active_at)
        .bind(s.idle_expires_at)
        .bind(s.absolute_expires_at)
        .bind(&s.client.ip)
        .bind(&s.client.user_agent)
        .bind(&s.client.device_name)
        .bind(s.pending_mfa.map(MfaKind::as_str))
        .bind(i64::from(s.mfa_failures))
        .bind(s.captcha_answer.map(|h| h.0.to_vec()))
        .bind(i64::from(s.captcha_failures))
        .bind(s.password_ok)
        .bind(s.revoked_at)
        .bind(s.idle_timeout)
        .bind(s.id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        found(done.rows_affected())
    }

    async fn touch_sessions(&self, touches: &[SessionTouch]) -> StoreResult<()> {
        if touches.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = touches.iter().map(|t| t.id).collect();
        let last_active: Vec<i64> = touches.iter().map(|t| t.last_active_at).collect();
        let idle_expires: Vec<i64> = touches.iter().map(|t| t.idle_expires_at).collect();
        // One statement for the whole batch. A session touched twice in the batch counts once,
        // with its latest values; rows are locked in id order (see the module doc).
        sqlx::query(
            "WITH touch AS ( \
                 SELECT session_id, MAX(last_active_at) AS last_active_at, \
                        MAX(idle_expires_at) AS idle_expires_at \
                 FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[]) \
                      AS t (session_id, last_active_at, idle_expires_at) \
                 GROUP BY session_id \
             ), locked AS ( \
                 SELECT s.session_id FROM session AS s JOIN touch USING (session_id) \
                 WHERE s.state = 'active' ORDER BY s.session_id FOR UPDATE OF s \
             ) \
             UPDATE session AS s \
             SET last_active_at = GREATEST(s.last_active_at, touch.last_active_at), \
                 idle_expires_at = GREATEST(s.idle_expires_at, touch.idle_expires_at) \
             FROM touch JOIN locked USING (session_id) \
             WHERE s.session_id = touch.session_id AND s.state = 'active'",
        )
        .bind(&ids)
        .bind(&last_active)
        .bind(&idle_expires)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn revoke_session(&self, id: Uuid, at: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE session SET state = 'revoked', revoked_at = $1 \
             WHERE session_id = $2 AND state <> 'revoked'",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_user_sessions(&self, user_id: Uuid, now: i64) -> StoreResult<Vec<Uuid>> {
        // Locks in id order, like touch_sessions, so the two cannot deadlock.
        sqlx::query_scalar(
            "WITH live AS ( \
                 SELECT session_id FROM session \
                 WHERE user_id = $2 AND state <> 'revoked' \
                 AND idle_expires_at > $3 AND absolute_expires_at > $3 \
                 ORDER BY session_id FOR UPDATE \
             ) \
             UPDATE session AS s SET state = 'revoked', revoked_at = $1 \
             FROM live WHERE s.session_id = live.session_id AND s.state <> 'revoked' \
             RETURNING s.session_id",
        )
        .bind(now)
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    async fn user_sessions(
        &self,
        user_id: Uuid,
        now: i64,
        offset: u64,
        limit: u64,
    ) -> StoreResult<Vec<Session>> {
        sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM session WHERE user_id = $1 AND state = 'active' \
             AND idle_expires_at > $2 AND absolute_expires_at > $2 \
             ORDER BY last_active_at DESC, created_at DESC, session_id LIMIT $3 OFFSET $4"
        ))
        .bind(user_id)
        .bind(now)
        .bind(bound(limit))
        .bind(bound(offset))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(session_from_row)
        .collect()
    }

    async fn count_user_sessions(&self, user_id: Uuid, now: i64) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM session WHERE user_id = $1 AND state = 'active' \
             AND idle_expires_at > $2 AND absolute_expires_at > $2",
        )
        .bind(user_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        count(n)
    }

    async fn count_active_sessions(&self, now: i64) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM session WHERE state = 'active' \
             AND idle_expires_at > $1 AND absolute_expires_at > $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        count(n)
    }

    async fn insert_refresh_token(
        &self,
        token_hash: &SecretHash,
        session_id: Uuid,
        created_at: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO refresh_token (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&token_hash.0[..])
        .bind(session_id)
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn use_refresh_token(&self, token_hash: &SecretHash, at: i64) -> StoreResult<RefreshUse> {
        // Of concurrent updates of the row, the later ones wait for the first, then re-check
        // `used_at IS NULL` on the row it committed and update nothing: one Fresh only.
        let fresh: Option<Uuid> = sqlx::query_scalar(
            "UPDATE refresh_token SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL \
             RETURNING session_id",
        )
        .bind(at)
        .bind(&token_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some(session_id) = fresh {
            return Ok(RefreshUse::Fresh { session_id });
        }
        let used: Option<Uuid> =
            sqlx::query_scalar("SELECT session_id FROM refresh_token WHERE token_hash = $1")
                .bind(&token_hash.0[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(match used {
            Some(session_id) => RefreshUse::Reused { session_id },
            None => RefreshUse::Unknown,
        })
    }

    async fn insert_handshake(&self, h: &ScramHandshake) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO scram_handshake ({HANDSHAKE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&h.nonce_hash.0[..])
        .bind(h.server_id.as_str())
        .bind(&h.email)
        .bind(&h.client_nonce)
        .bind(&h.salt)
        .bind(i64::from(h.iterations))
        .bind(&h.platform)
        .bind(h.expires_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn take_handshake(&self, nonce_hash: &SecretHash) -> StoreResult<Option<ScramHandshake>> {
        // A concurrent take waits for the first delete, then finds no row: usable once.
        sqlx::query(&format!(
            "DELETE FROM scram_handshake WHERE nonce_hash = $1 RETURNING {HANDSHAKE_COLUMNS}"
        ))
        .bind(&nonce_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(handshake_from_row)
        .transpose()
    }

    async fn insert_signing_key(&self, key: &SigningKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO signing_key (kid, secret_key, public_key, created_at, retired_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.kid)
        .bind(&key.secret_key[..])
        .bind(&key.public_key[..])
        .bind(key.created_at)
        .bind(key.retired_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>> {
        // COLLATE "C": byte order, as SQLite sorts, whatever the database's locale.
        sqlx::query(
            "SELECT kid, secret_key, public_key, created_at, retired_at FROM signing_key \
             ORDER BY created_at DESC, kid COLLATE \"C\" DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(signing_key_from_row)
        .collect()
    }

    async fn retire_signing_keys(&self, keep_kid: &str, at: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE signing_key SET retired_at = $1 WHERE kid <> $2 AND retired_at IS NULL",
        )
        .bind(at)
        .bind(keep_kid)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn insert_account(&self, a: &NewAccount) -> StoreResult<i64> {
        // A conflicting insert still draws an id from the sequence: ids may have gaps.
        sqlx::query_scalar(
            "INSERT INTO account (server_id, public_key, description, user_id, client_version, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING account_id",
        )
        .bind(a.server_id.as_str())
        .bind(&a.public_key[..])
        .bind(&a.description)
        .bind(a.user_id)
        .bind(&a.client_version)
        .bind(a.created_at)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }

    async fn account(&self, server_id: &ServerId, account_id: i64) -> StoreResult<Option<Account>> {
        sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM account WHERE server_id = $1 AND account_id = $2"
        ))
        .bind(server_id.as_str())
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(account_from_row)
        .transpose()
    }

    async fn user_accounts(&self, user_id: Uuid) -> StoreResult<Vec<Account>> {
        sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM account WHERE user_id = $1 ORDER BY account_id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(account_from_row)
        .collect()
    }

    async fn set_account_user(&self, account_id: i64, user_id: Option<Uuid>) -> StoreResult<()> {
        let done = sqlx::query("UPDATE account SET user_id = $1 WHERE account_id = $2")
            .bind(user_id)
            .bind(account_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        found(done.rows_affected())
    }

    async fn set_account_blocked(&self, account_id: i64, blocked: bool) -> StoreResult<()> {
        let done = sqlx::query("UPDATE account SET blocked = $1 WHERE account_id = $2")
            .bind(blocked)
            .bind(account_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        found(done.rows_affected())
    }

    async fn touch_account(
        &self,
        account_id: i64,
        last_login: Option<i64>,
        last_provoke: Option<i64>,
    ) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE account SET last_login = COALESCE($1, last_login), \
             last_provoke = COALESCE($2, last_provoke) WHERE account_id = $3",
        )
        .bind(last_login)
        .bind(last_provoke)
        .bind(account_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        found(done.rows_affected())
    }

    async fn ensure_browser_session(&self, b: &BrowserSession) -> StoreResult<BrowserSession> {
        // Two statements, not one: a concurrent insert of the same key makes this one wait and
        // then do nothing, and only a new statement's snapshot sees the row it committed.
        sqlx::query(
            "INSERT INTO browser_session (server_id, nonce_hash, hsid_hash, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (server_id, nonce_hash) DO NOTHING",
        )
        .bind(b.server_id.as_str())
        .bind(&b.nonce_hash.0[..])
        .bind(&b.hsid_hash.0[..])
        .bind(b.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        self.browser_session(&b.server_id, &b.nonce_hash)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn browser_session(
        &self,
        server_id: &ServerId,
        nonce_hash: &SecretHash,
    ) -> StoreResult<Option<BrowserSession>> {
        sqlx::query(&format!(
            "SELECT {BROWSER_SESSION_COLUMNS} FROM browser_session \
             WHERE server_id = $1 AND nonce_hash = $2"
        ))
        .bind(server_id.as_str())
        .bind(&nonce_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(browser_session_from_row)
        .transpose()
    }

    async fn browser_session_by_hsid(
        &self,
        hsid_hash: &SecretHash,
    ) -> StoreResult<Option<BrowserSession>> {
        sqlx::query(&format!(
            "SELECT {BROWSER_SESSION_COLUMNS} FROM browser_session WHERE hsid_hash = $1"
        ))
        .bind(&hsid_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(browser_session_from_row)
        .transpose()
    }

    async fn browser_session_by_challenge(
        &self,
        challenge_hash: &SecretHash,
    ) -> StoreResult<Option<BrowserSession>> {
        sqlx::query(&format!(
            "SELECT {BROWSER_SESSION_COLUMNS} FROM browser_session WHERE login_challenge = $1"
        ))
        .bind(&challenge_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(browser_session_from_row)
        .transpose()
    }

    async fn update_browser_session(&self, b: &BrowserSession) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE browser_session SET session_id = $1, account_id = $2, login_seed = $3, \
             login_challenge = $4, login_expires_at = $5, login_base_url = $6, \
             user_context = $7 WHERE server_id = $8 AND nonce_hash = $9",
        )
        .bind(b.session_id)
        .bind(b.account_id)
        .bind(&b.login_seed)
        .bind(b.login_challenge.map(|h| h.0.to_vec()))
        .bind(b.login_expires_at)
        .bind(&b.login_base_url)
        .bind(&b.user_context)
        .bind(b.server_id.as_str())
        .bind(&b.nonce_hash.0[..])
        .execute(&self.pool)
        .await
        .map_err(db)?;
        found(done.rows_affected())
    }

    async fn consume_login_challenge(&self, challenge_hash: &SecretHash) -> StoreResult<bool> {
        // A concurrent update of the row waits for the first, then re-checks the condition on
        // the row it committed (challenge now NULL) and updates nothing: one true only.
        let done = sqlx::query(
            "UPDATE browser_session SET login_challenge = NULL, login_seed = NULL, \
             login_expires_at = NULL WHERE login_challenge = $1",
        )
        .bind(&challenge_hash.0[..])
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_app_challenge(&self, c: &AppChallenge) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO app_challenge ({APP_CHALLENGE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&c.challenge_hash.0[..])
        .bind(c.server_id.as_str())
        .bind(&c.purpose)
        .bind(c.account_id)
        .bind(&c.name)
        .bind(&c.userid)
        .bind(c.expires_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn take_app_challenge(
        &self,
        challenge_hash: &SecretHash,
    ) -> StoreResult<Option<AppChallenge>> {
        // A concurrent take waits for the first delete, then finds no row: usable once.
        sqlx::query(&format!(
            "DELETE FROM app_challenge WHERE challenge_hash = $1 \
             RETURNING {APP_CHALLENGE_COLUMNS}"
        ))
        .bind(&challenge_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(app_challenge_from_row)
        .transpose()
    }

    async fn insert_push(&self, p: &PushRequest) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO push_request ({PUSH_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(p.id)
        .bind(p.server_id.as_str())
        .bind(p.account_id)
        .bind(&p.nonce_hash.0[..])
        .bind(&p.user_context)
        .bind(p.created_at)
        .bind(p.expires_at)
        .bind(p.answered_at)
        .bind(p.approved)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn push(&self, id: Uuid) -> StoreResult<Option<PushRequest>> {
        sqlx::query(&format!(
            "SELECT {PUSH_COLUMNS} FROM push_request WHERE request_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(push_from_row)
        .transpose()
    }

    async fn answer_push(&self, id: Uuid, approved: bool, at: i64) -> StoreResult<bool> {
        // As consume_login_challenge: a racing answer re-checks `answered_at IS NULL` on the
        // committed row and updates nothing.
        let done = sqlx::query(
            "UPDATE push_request SET answered_at = $1, approved = $2 \
             WHERE request_id = $3 AND answered_at IS NULL",
        )
        .bind(at)
        .bind(approved)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn pending_pushes(&self, account_id: i64, now: i64) -> StoreResult<Vec<PushRequest>> {
        // UUIDs compare byte by byte, as their lowercase text does in SQLite.
        sqlx::query(&format!(
            "SELECT {PUSH_COLUMNS} FROM push_request WHERE account_id = $1 \
             AND answered_at IS NULL AND expires_at > $2 ORDER BY created_at, request_id"
        ))
        .bind(account_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(push_from_row)
        .collect()
    }

    async fn record_failure(&self, key: &str, at: i64) -> StoreResult<()> {
        sqlx::query("INSERT INTO login_failure (failure_key, failed_at) VALUES ($1, $2)")
            .bind(key)
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn failures_since(&self, key: &str, since: i64) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM login_failure WHERE failure_key = $1 AND failed_at > $2",
        )
        .bind(key)
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        count(n)
    }

    async fn clear_failures(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM login_failure WHERE failure_key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn require_captcha(&self, key: &str, since: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO captcha_requirement (failure_key, since) VALUES ($1, $2) \
             ON CONFLICT (failure_key) DO NOTHING",
        )
        .bind(key)
        .bind(since)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn captcha_required(&self, key: &str) -> StoreResult<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM captcha_requirement WHERE failure_key = $1)",
        )
        .bind(key)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }

    async fn clear_captcha_requirement(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM captcha_requirement WHERE failure_key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_audit(&self, e: &AuditEvent) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_event (at, server_id, kind, userid, session_id, ip, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(e.at)
        .bind(e.server_id.as_str())
        .bind(&e.kind)
        .bind(&e.userid)
        .bind(e.session_id)
        .bind(&e.ip)
        .bind(&e.detail)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn audit_events(&self, server_id: &ServerId, limit: u64) -> StoreResult<Vec<AuditEvent>> {
        sqlx::query(
            "SELECT at, server_id, kind, userid, session_id, ip, detail FROM audit_event \
             WHERE server_id = $1 ORDER BY audit_event_id DESC LIMIT $2",
        )
        .bind(server_id.as_str())
        .bind(bound(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(audit_from_row)
        .collect()
    }

    async fn purge(&self, failures_before: i64, sessions_before: i64) -> StoreResult<u64> {
        let failures = sqlx::query("DELETE FROM login_failure WHERE failed_at < $1")
            .bind(failures_before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        // Refresh tokens go with their sessions (ON DELETE CASCADE), uncounted as in SQLite.
        let sessions = sqlx::query(
            "DELETE FROM session WHERE (revoked_at IS NOT NULL AND revoked_at < $1) \
             OR idle_expires_at < $1 OR absolute_expires_at < $1",
        )
        .bind(sessions_before)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        let handshakes = sqlx::query("DELETE FROM scram_handshake WHERE expires_at < $1")
            .bind(failures_before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let challenges = sqlx::query("DELETE FROM app_challenge WHERE expires_at < $1")
            .bind(failures_before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let pushes = sqlx::query("DELETE FROM push_request WHERE expires_at < $1")
            .bind(sessions_before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(failures.rows_affected()
            + sessions.rows_affected()
            + handshakes.rows_affected()
            + challenges.rows_affected()
            + pushes.rows_affected())
    }
}
