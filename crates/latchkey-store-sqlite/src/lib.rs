//! The embedded default store: one SQLite file (WAL, busy timeout, foreign keys on), created
//! with its parent folder on first use. Migrations in `migrations/` are embedded and run at
//! open. Ids are TEXT, secrets BLOB digests, times INTEGER unix seconds.

use std::path::Path;
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
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;
use uuid::Uuid;

pub struct SqliteStore {
    pool: SqlitePool,
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

fn uuid(s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(other)
}

fn key32(bytes: &[u8]) -> StoreResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| other("stored key is not 32 bytes"))
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `url` (`sqlite://PATH`) and migrates it.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| other(format!("not a sqlite URL: {url}")))?;
        if path.is_empty() {
            return Err(other("the sqlite URL names no file"));
        }
        if let Some(parent) = Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| other(format!("cannot create {}: {e}", parent.display())))?;
            }
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(other)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(other)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| other(format!("migration failed: {e}")))?;
        Ok(Self { pool })
    }
}

const SESSION_COLUMNS: &str = "session_id, server_id, user_id, methods, state, created_at, \
    last_active_at, idle_expires_at, absolute_expires_at, client_ip, user_agent, device_name, \
    pending_mfa, mfa_failures, captcha_answer, captcha_failures, password_ok, revoked_at, \
    idle_timeout";

fn session_from_row(row: &SqliteRow) -> StoreResult<Session> {
    let state: String = row.try_get("state").map_err(other)?;
    let pending: Option<String> = row.try_get("pending_mfa").map_err(other)?;
    let user_id: Option<String> = row.try_get("user_id").map_err(other)?;
    let captcha: Option<Vec<u8>> = row.try_get("captcha_answer").map_err(other)?;
    Ok(Session {
        id: uuid(&row.try_get::<String, _>("session_id").map_err(other)?)?,
        server_id: ServerId::parse(&row.try_get::<String, _>("server_id").map_err(other)?)
            .map_err(other)?,
        user_id: user_id.as_deref().map(uuid).transpose()?,
        methods: AuthMethod::split(&row.try_get::<String, _>("methods").map_err(other)?),
        state: SessionState::parse(&state).ok_or_else(|| other(format!("bad state {state}")))?,
        created_at: row.try_get("created_at").map_err(other)?,
        last_active_at: row.try_get("last_active_at").map_err(other)?,
        idle_expires_at: row.try_get("idle_expires_at").map_err(other)?,
        absolute_expires_at: row.try_get("absolute_expires_at").map_err(other)?,
        idle_timeout: row.try_get("idle_timeout").map_err(other)?,
        client: ClientInfo {
            ip: row.try_get("client_ip").map_err(other)?,
            user_agent: row.try_get("user_agent").map_err(other)?,
            device_name: row.try_get("device_name").map_err(other)?,
        },
        pending_mfa: pending.as_deref().and_then(MfaKind::parse),
        mfa_failures: row.try_get::<i64, _>("mfa_failures").map_err(other)? as u32,
        captcha_answer: captcha.as_deref().and_then(SecretHash::from_slice),
        captcha_failures: row.try_get::<i64, _>("captcha_failures").map_err(other)? as u32,
        password_ok: row.try_get("password_ok").map_err(other)?,
        revoked_at: row.try_get("revoked_at").map_err(other)?,
    })
}

fn server_from_row(row: &SqliteRow) -> StoreResult<Server> {
    Ok(Server {
        id: ServerId::parse(&row.try_get::<String, _>("server_id").map_err(other)?)
            .map_err(other)?,
        name: row.try_get("name").map_err(other)?,
        secret_key: key32(&row.try_get::<Vec<u8>, _>("secret_key").map_err(other)?)?,
        public_key: key32(&row.try_get::<Vec<u8>, _>("public_key").map_err(other)?)?,
        created_at: row.try_get("created_at").map_err(other)?,
    })
}

fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    Ok(User {
        id: uuid(&row.try_get::<String, _>("user_id").map_err(other)?)?,
        server_id: ServerId::parse(&row.try_get::<String, _>("server_id").map_err(other)?)
            .map_err(other)?,
        userid: UserId::parse(&row.try_get::<String, _>("userid").map_err(other)?)
            .map_err(other)?,
        created_at: row.try_get("created_at").map_err(other)?,
    })
}

fn audit_from_row(row: &SqliteRow) -> StoreResult<AuditEvent> {
    let session_id: Option<String> = row.try_get("session_id").map_err(other)?;
    Ok(AuditEvent {
        at: row.try_get("at").map_err(other)?,
        server_id: ServerId::parse(&row.try_get::<String, _>("server_id").map_err(other)?)
            .map_err(other)?,
        kind: row.try_get("kind").map_err(other)?,
        userid: row.try_get("userid").map_err(other)?,
        session_id: session_id.as_deref().map(uuid).transpose()?,
        ip: row.try_get("ip").map_err(other)?,
        detail: row.try_get("detail").map_err(other)?,
    })
}

fn hash_col(row: &SqliteRow, column: &str) -> StoreResult<SecretHash> {
    Ok(SecretHash(key32(
        &row.try_get::<Vec<u8>, _>(column).map_err(other)?,
    )?))
}

fn opt_hash_col(row: &SqliteRow, column: &str) -> StoreResult<Option<SecretHash>> {
    let bytes: Option<Vec<u8>> = row.try_get(column).map_err(other)?;
    bytes
        .as_deref()
        .map(|b| key32(b).map(SecretHash))
        .transpose()
}

fn server_col(row: &SqliteRow) -> StoreResult<ServerId> {
    ServerId::parse(&row.try_get::<String, _>("server_id").map_err(other)?).map_err(other)
}

fn account_from_row(row: &SqliteRow) -> StoreResult<Account> {
    let user_id: Option<String> = row.try_get("user_id").map_err(other)?;
    Ok(Account {
        id: row.try_get("account_id").map_err(other)?,
        server_id: server_col(row)?,
        public_key: key32(&row.try_get::<Vec<u8>, _>("public_key").map_err(other)?)?,
        description: row.try_get("description").map_err(other)?,
        user_id: user_id.as_deref().map(uuid).transpose()?,
        blocked: row.try_get("blocked").map_err(other)?,
        client_version: row.try_get("client_version").map_err(other)?,
        created_at: row.try_get("created_at").map_err(other)?,
        last_login: row.try_get("last_login").map_err(other)?,
        last_provoke: row.try_get("last_provoke").map_err(other)?,
    })
}

fn browser_session_from_row(row: &SqliteRow) -> StoreResult<BrowserSession> {
    let session_id: Option<String> = row.try_get("session_id").map_err(other)?;
    Ok(BrowserSession {
        server_id: server_col(row)?,
        nonce_hash: hash_col(row, "nonce_hash")?,
        hsid_hash: hash_col(row, "hsid_hash")?,
        session_id: session_id.as_deref().map(uuid).transpose()?,
        account_id: row.try_get("account_id").map_err(other)?,
        login_seed: row.try_get("login_seed").map_err(other)?,
        login_challenge: opt_hash_col(row, "login_challenge")?,
        login_expires_at: row.try_get("login_expires_at").map_err(other)?,
        login_base_url: row.try_get("login_base_url").map_err(other)?,
        user_context: row.try_get("user_context").map_err(other)?,
        created_at: row.try_get("created_at").map_err(other)?,
    })
}

fn push_from_row(row: &SqliteRow) -> StoreResult<PushRequest> {
    Ok(PushRequest {
        id: uuid(&row.try_get::<String, _>("request_id").map_err(other)?)?,
        server_id: server_col(row)?,
        account_id: row.try_get("account_id").map_err(other)?,
        nonce_hash: hash_col(row, "nonce_hash")?,
        user_context: row.try_get("user_context").map_err(other)?,
        created_at: row.try_get("created_at").map_err(other)?,
        expires_at: row.try_get("expires_at").map_err(other)?,
        answered_at: row.try_get("answered_at").map_err(other)?,
        approved: row.try_get("approved").map_err(other)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT value FROM setting WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn insert_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO setting (key, value) VALUES (?, ?)")
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
             VALUES (?, ?, ?, ?, ?)",
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
        sqlx::query("SELECT * FROM server WHERE server_id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(server_from_row)
            .transpose()
    }

    async fn servers(&self) -> StoreResult<Vec<Server>> {
        sqlx::query("SELECT * FROM server ORDER BY created_at, server_id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(server_from_row)
            .collect()
    }

    async fn insert_role(&self, role: &Role) -> StoreResult<()> {
        sqlx::query("INSERT INTO role (role_id, root) VALUES (?, ?)")
            .bind(&role.id)
            .bind(role.root)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn role(&self, id: &str) -> StoreResult<Option<Role>> {
        let row = sqlx::query("SELECT role_id, root FROM role WHERE role_id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| {
            Ok(Role {
                id: r.try_get("role_id").map_err(other)?,
                root: r.try_get("root").map_err(other)?,
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
             VALUES (?, ?, ?, ?, ?, ?) \
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
             WHERE role_id = ? AND server_id = ?",
        )
        .bind(role_id)
        .bind(server_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        match row {
            None => Ok(Permissions::default()),
            Some(r) => Ok(Permissions {
                sessions: r.try_get("sessions").map_err(other)?,
                accounts: r.try_get("accounts").map_err(other)?,
                users: r.try_get("users").map_err(other)?,
                servers: r.try_get("servers").map_err(other)?,
            }),
        }
    }

    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_key (api_key_id, key_hash, role_id, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(key.id.to_string())
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
            "SELECT api_key_id, key_hash, role_id, created_at FROM api_key WHERE key_hash = ?",
        )
        .bind(&key_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| {
            Ok(ApiKey {
                id: uuid(&r.try_get::<String, _>("api_key_id").map_err(other)?)?,
                key_hash: SecretHash(key32(&r.try_get::<Vec<u8>, _>("key_hash").map_err(other)?)?),
                role_id: r.try_get("role_id").map_err(other)?,
                created_at: r.try_get("created_at").map_err(other)?,
            })
        })
        .transpose()
    }

    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO person (user_id, server_id, userid, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(user.id.to_string())
        .bind(user.server_id.as_str())
        .bind(user.userid.as_str())
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn user(&self, server_id: &ServerId, userid: &UserId) -> StoreResult<Option<User>> {
        sqlx::query(
            "SELECT user_id, server_id, userid, created_at FROM person \
             WHERE server_id = ? AND userid = ?",
        )
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
        sqlx::query("SELECT user_id, server_id, userid, created_at FROM person WHERE user_id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn users(&self, server_id: &ServerId) -> StoreResult<Vec<User>> {
        sqlx::query(
            "SELECT user_id, server_id, userid, created_at FROM person \
             WHERE server_id = ? ORDER BY userid",
        )
        .bind(server_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(user_from_row)
        .collect()
    }

    async fn delete_user(&self, id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM person WHERE user_id = ?")
            .bind(id.to_string())
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
        let Some(r) = sqlx::query("SELECT * FROM person WHERE server_id = ? AND userid = ?")
            .bind(server_id.as_str())
            .bind(userid.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        let argon2: Option<String> = r.try_get("password_argon2").map_err(other)?;
        let password = match argon2 {
            Some(argon2) => Some(PasswordHashes {
                argon2,
                scram: ScramVerifier {
                    salt: r.try_get("scram_salt").map_err(other)?,
                    iterations: r.try_get::<i64, _>("scram_iterations").map_err(other)? as u32,
                    stored_key: key32(
                        &r.try_get::<Vec<u8>, _>("scram_stored_key").map_err(other)?,
                    )?,
                    server_key: key32(
                        &r.try_get::<Vec<u8>, _>("scram_server_key").map_err(other)?,
                    )?,
                },
            }),
            None => None,
        };
        Ok(Some(UserCredentials {
            user: user_from_row(&r)?,
            password,
            totp_secret: r.try_get("totp_secret").map_err(other)?,
            totp_last_step: r.try_get("totp_last_step").map_err(other)?,
            pin_hash: r.try_get("pin_hash").map_err(other)?,
        }))
    }

    async fn set_password(&self, user_id: Uuid, h: &PasswordHashes) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE person SET password_argon2 = ?, scram_salt = ?, scram_iterations = ?, \
             scram_stored_key = ?, scram_server_key = ? WHERE user_id = ?",
        )
        .bind(&h.argon2)
        .bind(&h.scram.salt)
        .bind(h.scram.iterations as i64)
        .bind(&h.scram.stored_key[..])
        .bind(&h.scram.server_key[..])
        .bind(user_id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        found(done.rows_affected())
    }

    async fn set_totp_secret(&self, user_id: Uuid, secret: Option<&[u8]>) -> StoreResult<()> {
        let done =
            sqlx::query("UPDATE person SET totp_secret = ?, totp_last_step = -1 WHERE user_id = ?")
                .bind(secret)
                .bind(user_id.to_string())
                .execute(&self.pool)
                .await
                .map_err(db)?;
        found(done.rows_affected())
    }

    async fn consume_totp_step(&self, user_id: Uuid, step: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE person SET totp_last_step = ? WHERE user_id = ? AND totp_last_step < ?",
        )
        .bind(step)
        .bind(user_id.to_string())
        .bind(step)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_pin_hash(&self, user_id: Uuid, pin_hash: Option<&str>) -> StoreResult<()> {
        let done = sqlx::query("UPDATE person SET pin_hash = ? WHERE user_id = ?")
            .bind(pin_hash)
            .bind(user_id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        found(done.rows_affected())
    }

    async fn insert_session(&self, s: &Session, token_hash: &SecretHash) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO session ({SESSION_COLUMNS}, token_hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(s.id.to_string())
        .bind(s.server_id.as_str())
        .bind(s.user_id.map(|u| u.to_string()))
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
        .bind(s.mfa_failures as i64)
        .bind(s.captcha_answer.map(|h| h.0.to_vec()))
        .bind(s.captcha_failures as i64)
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
            "SELECT {SESSION_COLUMNS} FROM session WHERE session_id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    async fn session_by_token(&self, token_hash: &SecretHash) -> StoreResult<Option<Session>> {
        sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM session WHERE token_hash = ?"
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
            "UPDATE session SET user_id = ?, methods = ?, state = ?, last_active_at = ?, \
             idle_expires_at = ?, absolute_expires_at = ?, client_ip = ?, user_agent = ?, \
             device_name = ?, pending_mfa = ?, mfa_failures = ?, captcha_answer = ?, \
             captcha_failures = ?, password_ok = ?, revoked_at = ?, idle_timeout = ? \
             WHERE session_id = ?",
        )
        .bind(s.user_id.map(|u| u.to_string()))
        .bind(AuthMethod::join(&s.methods))
        .bind(s.state.as_str())
        .bind(s.last_active_at)
        .bind(s.idle_expires_at)
        .bind(s.absolute_expires_at)
        .bind(&s.client.ip)
        .bind(&s.client.user_agent)
        .bind(&s.client.device_name)
        .bind(s.pending_mfa.map(MfaKind::as_str))
        .bind(s.mfa_failures as i64)
        .bind(s.captcha_answer.map(|h| h.0.to_vec()))
        .bind(s.captcha_failures as i64)
        .bind(s.password_ok)
        .bind(s.revoked_at)
        .bind(s.idle_timeout)
        .bind(s.id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        found(done.rows_affected())
    }

    async fn touch_sessions(&self, touches: &[SessionTouch]) -> StoreResult<()> {
        // One statement per chunk (3 parameters a row, under SQLite's oldest limit of 999):
        // a flush of many distinct sessions must not cost one round trip each. A session named
        // twice is merged first (UPDATE ... FROM would apply an arbitrary one of its rows).
        let mut merged: std::collections::HashMap<Uuid, SessionTouch> =
            std::collections::HashMap::with_capacity(touches.len());
        for t in touches {
            merged
                .entry(t.id)
                .and_modify(|m| {
                    m.last_active_at = m.last_active_at.max(t.last_active_at);
                    m.idle_expires_at = m.idle_expires_at.max(t.idle_expires_at);
                })
                .or_insert(*t);
        }
        let touches: Vec<SessionTouch> = merged.into_values().collect();
        let mut tx = self.pool.begin().await.map_err(db)?;
        for chunk in touches.chunks(300) {
            let rows = vec!["(?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "UPDATE session SET \
                 last_active_at = MAX(session.last_active_at, t.column2), \
                 idle_expires_at = MAX(session.idle_expires_at, t.column3) \
                 FROM (VALUES {rows}) AS t \
                 WHERE session.session_id = t.column1 AND session.state = 'active'"
            );
            let mut query = sqlx::query(&sql);
            for t in chunk {
                query = query
                    .bind(t.id.to_string())
                    .bind(t.last_active_at)
                    .bind(t.idle_expires_at);
            }
            query.execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn revoke_session(&self, id: Uuid, at: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE session SET state = 'revoked', revoked_at = ? \
             WHERE session_id = ? AND state <> 'revoked'",
        )
        .bind(at)
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_user_sessions(&self, user_id: Uuid, now: i64) -> StoreResult<Vec<Uuid>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE session SET state = 'revoked', revoked_at = ? \
             WHERE user_id = ? AND state <> 'revoked' \
             AND idle_expires_at > ? AND absolute_expires_at > ? RETURNING session_id",
        )
        .bind(now)
        .bind(user_id.to_string())
        .bind(now)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        ids.iter().map(|s| uuid(s)).collect()
    }

    async fn user_sessions(
        &self,
        user_id: Uuid,
        now: i64,
        offset: u64,
        limit: u64,
    ) -> StoreResult<Vec<Session>> {
        sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM session WHERE user_id = ? AND state = 'active' \
             AND idle_expires_at > ? AND absolute_expires_at > ? \
             ORDER BY last_active_at DESC, created_at DESC, session_id LIMIT ? OFFSET ?"
        ))
        .bind(user_id.to_string())
        .bind(now)
        .bind(now)
        .bind(limit.min(i64::MAX as u64) as i64)
        .bind(offset.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(session_from_row)
        .collect()
    }

    async fn count_user_sessions(&self, user_id: Uuid, now: i64) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM session WHERE user_id = ? AND state = 'active' \
             AND idle_expires_at > ? AND absolute_expires_at > ?",
        )
        .bind(user_id.to_string())
        .bind(now)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(n as u64)
    }

    async fn count_active_sessions(&self, now: i64) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM session WHERE state = 'active' \
             AND idle_expires_at > ? AND absolute_expires_at > ?",
        )
        .bind(now)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(n as u64)
    }

    async fn insert_refresh_token(
        &self,
        token_hash: &SecretHash,
        session_id: Uuid,
        created_at: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO refresh_token (token_hash, session_id, created_at) VALUES (?, ?, ?)",
        )
        .bind(&token_hash.0[..])
        .bind(session_id.to_string())
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn use_refresh_token(&self, token_hash: &SecretHash, at: i64) -> StoreResult<RefreshUse> {
        let fresh: Option<String> = sqlx::query_scalar(
            "UPDATE refresh_token SET used_at = ? WHERE token_hash = ? AND used_at IS NULL \
             RETURNING session_id",
        )
        .bind(at)
        .bind(&token_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some(id) = fresh {
            return Ok(RefreshUse::Fresh {
                session_id: uuid(&id)?,
            });
        }
        let used: Option<String> =
            sqlx::query_scalar("SELECT session_id FROM refresh_token WHERE token_hash = ?")
                .bind(&token_hash.0[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(match used {
            Some(id) => RefreshUse::Reused {
                session_id: uuid(&id)?,
            },
            None => RefreshUse::Unknown,
        })
    }

    async fn insert_handshake(&self, h: &ScramHandshake) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO scram_handshake (nonce_hash, server_id, email, client_nonce, salt, \
             iterations, platform, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&h.nonce_hash.0[..])
        .bind(h.server_id.as_str())
        .bind(&h.email)
        .bind(&h.client_nonce)
        .bind(&h.salt)
        .bind(h.iterations as i64)
        .bind(&h.platform)
        .bind(h.expires_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn take_handshake(&self, nonce_hash: &SecretHash) -> StoreResult<Option<ScramHandshake>> {
        let row = sqlx::query("DELETE FROM scram_handshake WHERE nonce_hash = ? RETURNING *")
            .bind(&nonce_hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| {
            Ok(ScramHandshake {
                nonce_hash: SecretHash(key32(
                    &r.try_get::<Vec<u8>, _>("nonce_hash").map_err(other)?,
                )?),
                server_id: ServerId::parse(&r.try_get::<String, _>("server_id").map_err(other)?)
                    .map_err(other)?,
                email: r.try_get("email").map_err(other)?,
                client_nonce: r.try_get("client_nonce").map_err(other)?,
                salt: r.try_get("salt").map_err(other)?,
                iterations: u32::try_from(r.try_get::<i64, _>("iterations").map_err(other)?)
                    .map_err(other)?,
                platform: r.try_get("platform").map_err(other)?,
                expires_at: r.try_get("expires_at").map_err(other)?,
            })
        })
        .transpose()
    }

    async fn insert_signing_key(&self, key: &SigningKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO signing_key (kid, secret_key, public_key, created_at, retired_at) \
             VALUES (?, ?, ?, ?, ?)",
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
        sqlx::query("SELECT * FROM signing_key ORDER BY created_at DESC, kid DESC")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(|r| {
                Ok(SigningKey {
                    kid: r.try_get("kid").map_err(other)?,
                    secret_key: key32(&r.try_get::<Vec<u8>, _>("secret_key").map_err(other)?)?,
                    public_key: key32(&r.try_get::<Vec<u8>, _>("public_key").map_err(other)?)?,
                    created_at: r.try_get("created_at").map_err(other)?,
                    retired_at: r.try_get("retired_at").map_err(other)?,
                })
            })
            .collect()
    }

    async fn retire_signing_keys(&self, keep_kid: &str, at: i64) -> StoreResult<()> {
        sqlx::query("UPDATE signing_key SET retired_at = ? WHERE kid <> ? AND retired_at IS NULL")
            .bind(at)
            .bind(keep_kid)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_account(&self, a: &NewAccount) -> StoreResult<i64> {
        sqlx::query_scalar(
            "INSERT INTO account (server_id, public_key, description, user_id, client_version, \
             created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING account_id",
        )
        .bind(a.server_id.as_str())
        .bind(&a.public_key[..])
        .bind(&a.description)
        .bind(a.user_id.map(|u| u.to_string()))
        .bind(&a.client_version)
        .bind(a.created_at)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }

    async fn account(&self, server_id: &ServerId, account_id: i64) -> StoreResult<Option<Account>> {
        sqlx::query("SELECT * FROM account WHERE server_id = ? AND account_id = ?")
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
        sqlx::query("SELECT * FROM account WHERE user_id = ? ORDER BY account_id")
            .bind(user_id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(account_from_row)
            .collect()
    }

    async fn set_account_user(&self, account_id: i64, user_id: Option<Uuid>) -> StoreResult<()> {
        let done = sqlx::query("UPDATE account SET user_id = ? WHERE account_id = ?")
            .bind(user_id.map(|u| u.to_string()))
            .bind(account_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        found(done.rows_affected())
    }

    async fn set_account_blocked(&self, account_id: i64, blocked: bool) -> StoreResult<()> {
        let done = sqlx::query("UPDATE account SET blocked = ? WHERE account_id = ?")
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
            "UPDATE account SET last_login = COALESCE(?, last_login), \
             last_provoke = COALESCE(?, last_provoke) WHERE account_id = ?",
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
        sqlx::query(
            "INSERT INTO browser_session (server_id, nonce_hash, hsid_hash, created_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (server_id, nonce_hash) DO NOTHING",
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
        sqlx::query("SELECT * FROM browser_session WHERE server_id = ? AND nonce_hash = ?")
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
        sqlx::query("SELECT * FROM browser_session WHERE hsid_hash = ?")
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
        sqlx::query("SELECT * FROM browser_session WHERE login_challenge = ?")
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
            "UPDATE browser_session SET session_id = ?, account_id = ?, login_seed = ?, \
             login_challenge = ?, login_expires_at = ?, login_base_url = ?, user_context = ? \
             WHERE server_id = ? AND nonce_hash = ?",
        )
        .bind(b.session_id.map(|s| s.to_string()))
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
        let done = sqlx::query(
            "UPDATE browser_session SET login_challenge = NULL, login_seed = NULL, \
             login_expires_at = NULL WHERE login_challenge = ?",
        )
        .bind(&challenge_hash.0[..])
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_app_challenge(&self, c: &AppChallenge) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO app_challenge (challenge_hash, server_id, purpose, account_id, name, \
             userid, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
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
        let row = sqlx::query("DELETE FROM app_challenge WHERE challenge_hash = ? RETURNING *")
            .bind(&challenge_hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| {
            Ok(AppChallenge {
                challenge_hash: hash_col(&r, "challenge_hash")?,
                server_id: server_col(&r)?,
                purpose: r.try_get("purpose").map_err(other)?,
                account_id: r.try_get("account_id").map_err(other)?,
                name: r.try_get("name").map_err(other)?,
                userid: r.try_get("userid").map_err(other)?,
                expires_at: r.try_get("expires_at").map_err(other)?,
            })
        })
        .transpose()
    }

    async fn insert_push(&self, p: &PushRequest) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO push_request (request_id, server_id, account_id, nonce_hash, \
             user_context, created_at, expires_at, answered_at, approved) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(p.id.to_string())
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
        sqlx::query("SELECT * FROM push_request WHERE request_id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(push_from_row)
            .transpose()
    }

    async fn answer_push(&self, id: Uuid, approved: bool, at: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE push_request SET answered_at = ?, approved = ? \
             WHERE request_id = ? AND answered_at IS NULL",
        )
        .bind(at)
        .bind(approved)
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn pending_pushes(&self, account_id: i64, now: i64) -> StoreResult<Vec<PushRequest>> {
        sqlx::query(
            "SELECT * FROM push_request WHERE account_id = ? AND answered_at IS NULL \
             AND expires_at > ? ORDER BY created_at, request_id",
        )
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
        sqlx::query("INSERT INTO login_failure (failure_key, failed_at) VALUES (?, ?)")
            .bind(key)
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn failures_since(&self, key: &str, since: i64) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM login_failure WHERE failure_key = ? AND failed_at > ?",
        )
        .bind(key)
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(n as u64)
    }

    async fn clear_failures(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM login_failure WHERE failure_key = ?")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn require_captcha(&self, key: &str, since: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO captcha_requirement (failure_key, since) VALUES (?, ?) \
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
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM captcha_requirement WHERE failure_key = ?")
                .bind(key)
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        Ok(n > 0)
    }

    async fn clear_captcha_requirement(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM captcha_requirement WHERE failure_key = ?")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_audit(&self, e: &AuditEvent) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_event (at, server_id, kind, userid, session_id, ip, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.at)
        .bind(e.server_id.as_str())
        .bind(&e.kind)
        .bind(&e.userid)
        .bind(e.session_id.map(|s| s.to_string()))
        .bind(&e.ip)
        .bind(&e.detail)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn audit_events(&self, server_id: &ServerId, limit: u64) -> StoreResult<Vec<AuditEvent>> {
        sqlx::query(
            "SELECT * FROM audit_event WHERE server_id = ? ORDER BY audit_event_id DESC LIMIT ?",
        )
        .bind(server_id.as_str())
        .bind(limit.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(audit_from_row)
        .collect()
    }

    async fn purge(&self, failures_before: i64, sessions_before: i64) -> StoreResult<u64> {
        let failures = sqlx::query("DELETE FROM login_failure WHERE failed_at < ?")
            .bind(failures_before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let sessions = sqlx::query(
            "DELETE FROM session WHERE (revoked_at IS NOT NULL AND revoked_at < ?) \
             OR idle_expires_at < ? OR absolute_expires_at < ?",
        )
        .bind(sessions_before)
        .bind(sessions_before)
        .bind(sessions_before)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        let handshakes = sqlx::query("DELETE FROM scram_handshake WHERE expires_at < ?")
            .bind(failures_before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let challenges = sqlx::query("DELETE FROM app_challenge WHERE expires_at < ?")
            .bind(failures_before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let pushes = sqlx::query("DELETE FROM push_request WHERE expires_at < ?")
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

fn found(rows: u64) -> StoreResult<()> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}
