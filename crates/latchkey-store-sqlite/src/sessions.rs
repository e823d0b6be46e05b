//! Sessions: inserted whole, then changed only by transitions. Each transition is one
//! conditional `UPDATE ... WHERE state = ...` that names the state it leaves and reports
//! whether (or to what) it changed the row, so two requests racing on one session cannot both
//! win, and nothing revoked comes back. (In SQLite every `SET` expression sees the row as it
//! was before the statement, which the CASE expressions below rely on.)

use std::collections::HashMap;

use async_trait::async_trait;
use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::{AuditRecord, AuthMethod, MfaKind, Session, SessionState, SessionTouch};
use latchkey_core::store::{AuditStore, CaptchaVerdict, SessionStore, StoreResult, Transition};
use latchkey_core::StoreError;
use uuid::Uuid;

use crate::rows::{all, maybe, mfa_kind, session_state, uuid, SessionRow};
use crate::{count, db, int, SqliteStore};

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert_session(
        &self,
        s: &Session,
        token_hash: &SecretHash,
        refresh: Option<&SecretHash>,
        audit: Option<&AuditRecord>,
    ) -> StoreResult<()> {
        sqlx::query(concat!(
            "INSERT INTO session (",
            session_columns!(),
            ", token_hash, refresh_hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(s.id.to_string())
        .bind(s.server_id.as_str())
        .bind(s.user_id.map(|u| u.to_string()))
        .bind(AuthMethod::join(s.methods.iter().copied()))
        .bind(s.state.as_str())
        .bind(s.created_at)
        .bind(s.last_active_at)
        .bind(s.idle_expires_at)
        .bind(s.absolute_expires_at)
        .bind(&s.client.ip)
        .bind(&s.client.user_agent)
        .bind(&s.client.device_name)
        .bind(s.pending_mfa.map(MfaKind::as_str))
        .bind(i64::from(s.mfa_attempts))
        .bind(s.captcha_answer.map(|h| h.0.to_vec()))
        .bind(i64::from(s.captcha_failures))
        .bind(s.password_ok)
        .bind(s.revoked_at)
        .bind(s.idle_timeout)
        .bind(&token_hash.0[..])
        .bind(refresh.map(|h| h.0.to_vec()))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        // The record right after the session, not in one transaction with it: a transaction is
        // four hand-offs to the connection's thread instead of two and holds SQLite's write
        // lock across them, which cost a fifth of the SCRAM logins per second
        // (docs/benchmarks.md). A session that cannot be inserted still leaves no record.
        if let Some(record) = audit {
            self.insert_audit(record).await?;
        }
        Ok(())
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        let row: Option<SessionRow> = sqlx::query_as(concat!(
            "SELECT ",
            session_columns!(),
            " FROM session WHERE session_id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        maybe(row)
    }

    async fn session_by_token(&self, token_hash: &SecretHash) -> StoreResult<Option<Session>> {
        let row: Option<SessionRow> = sqlx::query_as(concat!(
            "SELECT ",
            session_columns!(),
            " FROM session WHERE token_hash = ?"
        ))
        .bind(&token_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        maybe(row)
    }

    async fn claim_mfa_attempt(&self, id: Uuid, max_attempts: u32) -> StoreResult<Option<u32>> {
        // The column keeps its historical name; it counts attempts claimed, not failures.
        let claimed: Option<i64> = sqlx::query_scalar(
            "UPDATE session SET mfa_failures = mfa_failures + 1 \
             WHERE session_id = ? AND state = 'pending_mfa' AND mfa_failures < ? \
             RETURNING mfa_failures",
        )
        .bind(id.to_string())
        .bind(i64::from(max_attempts))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        claimed
            .map(|n| {
                u32::try_from(n)
                    .map_err(|_| StoreError::Other(format!("stored MFA attempts {n} out of range")))
            })
            .transpose()
    }

    async fn complete_mfa(
        &self,
        id: Uuid,
        method: AuthMethod,
        at: Transition,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE session SET state = 'active', \
             methods = CASE WHEN methods = '' THEN ?1 ELSE methods || ',' || ?1 END, \
             pending_mfa = NULL, last_active_at = ?2, \
             idle_expires_at = MIN(?2 + idle_timeout, absolute_expires_at) \
             WHERE session_id = ?3 AND state = 'pending_mfa' \
             AND idle_expires_at > ?2 AND absolute_expires_at > ?2",
        )
        .bind(method.as_str())
        .bind(at.now)
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_captcha_answer(&self, id: Uuid, answer: &SecretHash) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE session SET captcha_answer = ? \
             WHERE session_id = ? AND state = 'blocked_captcha'",
        )
        .bind(&answer.0[..])
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn answer_captcha(
        &self,
        id: Uuid,
        answer: &SecretHash,
        max_failures: u32,
        at: Transition,
    ) -> StoreResult<CaptchaVerdict> {
        // The right answer: the challenge is used up and the kept password verdict decides,
        // in the statement that matches the answer.
        let passed: Option<(String, Option<String>)> = sqlx::query_as(
            "UPDATE session SET captcha_answer = NULL, \
             state = CASE WHEN password_ok = 0 THEN 'revoked' \
                          WHEN pending_mfa IS NULL THEN 'active' \
                          ELSE 'pending_mfa' END, \
             revoked_at = CASE WHEN password_ok = 0 THEN ?1 ELSE revoked_at END, \
             last_active_at = ?1, \
             idle_expires_at = CASE \
                 WHEN password_ok = 0 THEN idle_expires_at \
                 WHEN pending_mfa IS NULL THEN MIN(?1 + idle_timeout, absolute_expires_at) \
                 ELSE MIN(?1 + MIN(?2, idle_timeout), absolute_expires_at) END \
             WHERE session_id = ?3 AND state = 'blocked_captcha' AND captcha_answer = ?4 \
             AND idle_expires_at > ?1 AND absolute_expires_at > ?1 \
             RETURNING state, pending_mfa",
        )
        .bind(at.now)
        .bind(at.login_step_timeout)
        .bind(id.to_string())
        .bind(&answer.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some((state, pending)) = passed {
            return match session_state(&state)? {
                SessionState::Revoked => Ok(CaptchaVerdict::PasswordWrong),
                SessionState::Active => Ok(CaptchaVerdict::Passed { mfa: None }),
                SessionState::PendingMfa => match mfa_kind(pending)? {
                    Some(kind) => Ok(CaptchaVerdict::Passed { mfa: Some(kind) }),
                    None => Err(StoreError::Other(
                        "session pending MFA names no second factor".into(),
                    )),
                },
                SessionState::BlockedCaptcha => Err(StoreError::Other(
                    "a solved CAPTCHA left the session blocked".into(),
                )),
            };
        }
        // A wrong answer (or none drawn): the challenge is used up too, and the failure counts,
        // ending the session at the limit.
        let failed: Option<String> = sqlx::query_scalar(
            "UPDATE session SET captcha_answer = NULL, captcha_failures = captcha_failures + 1, \
             state = CASE WHEN captcha_failures + 1 >= ?2 THEN 'revoked' ELSE state END, \
             revoked_at = CASE WHEN captcha_failures + 1 >= ?2 THEN ?1 ELSE revoked_at END \
             WHERE session_id = ?3 AND state = 'blocked_captcha' \
             AND idle_expires_at > ?1 AND absolute_expires_at > ?1 \
             RETURNING state",
        )
        .bind(at.now)
        .bind(i64::from(max_failures))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(match failed {
            None => CaptchaVerdict::NotBlocked,
            Some(state) => CaptchaVerdict::Wrong {
                ended: session_state(&state)? == SessionState::Revoked,
            },
        })
    }

    async fn abandon_login(&self, id: Uuid, at: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE session SET state = 'revoked', revoked_at = ? \
             WHERE session_id = ? AND state IN ('pending_mfa', 'blocked_captcha')",
        )
        .bind(at)
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_session_user(&self, id: Uuid, user_id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE session SET user_id = ? WHERE session_id = ? AND state <> 'revoked'",
        )
        .bind(user_id.to_string())
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_sessions(&self, touches: &[SessionTouch]) -> StoreResult<()> {
        // One statement per chunk (3 parameters a row, under SQLite's oldest limit of 999):
        // a flush of many distinct sessions must not cost one round trip each. A session named
        // twice is merged first (UPDATE ... FROM would apply an arbitrary one of its rows).
        let mut merged: HashMap<Uuid, SessionTouch> = HashMap::with_capacity(touches.len());
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

    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        except: Option<Uuid>,
        now: i64,
    ) -> StoreResult<Vec<Uuid>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE session SET state = 'revoked', revoked_at = ?1 \
             WHERE user_id = ?2 AND state <> 'revoked' AND (?3 IS NULL OR session_id <> ?3) \
             AND idle_expires_at > ?1 AND absolute_expires_at > ?1 RETURNING session_id",
        )
        .bind(now)
        .bind(user_id.to_string())
        .bind(except.map(|id| id.to_string()))
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
        let rows: Vec<SessionRow> = sqlx::query_as(concat!(
            "SELECT ",
            session_columns!(),
            " FROM session WHERE user_id = ?1 AND state = 'active' \
             AND idle_expires_at > ?2 AND absolute_expires_at > ?2 \
             ORDER BY last_active_at DESC, created_at DESC, session_id LIMIT ?3 OFFSET ?4"
        ))
        .bind(user_id.to_string())
        .bind(now)
        .bind(int(limit))
        .bind(int(offset))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows)
    }

    async fn count_user_sessions(&self, user_id: Uuid, now: i64) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM session WHERE user_id = ?1 AND state = 'active' \
             AND idle_expires_at > ?2 AND absolute_expires_at > ?2",
        )
        .bind(user_id.to_string())
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        count(n)
    }

    async fn user_session_ids(&self, user_id: Uuid, now: i64) -> StoreResult<Vec<Uuid>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT session_id FROM session WHERE user_id = ?1 AND state = 'active' \
             AND idle_expires_at > ?2 AND absolute_expires_at > ?2",
        )
        .bind(user_id.to_string())
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        ids.iter().map(|s| uuid(s)).collect()
    }

    async fn count_active_sessions(&self, now: i64) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM session WHERE state = 'active' \
             AND idle_expires_at > ?1 AND absolute_expires_at > ?1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        count(n)
    }
}
