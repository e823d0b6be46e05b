//! Sessions: inserted whole, then changed only by transitions. Each transition is one
//! conditional UPDATE naming the state it leaves; a concurrent request (from any process) waits
//! on the row lock, re-checks the condition on the row the first one committed, and changes
//! nothing, so a revoked session is never resurrected and no attempt limit is exceeded.
//! Deadlines are computed by the database from the row itself (`now + LEAST(timeout,
//! absolute_expires_at - now)`, which cannot overflow), never from a copy read earlier.

use async_trait::async_trait;
use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::{AuditRecord, AuthMethod, MfaKind, Session, SessionState, SessionTouch};
use latchkey_core::store::{CaptchaVerdict, SessionStore, StoreResult, Transition};
use uuid::Uuid;

use crate::audit::bind_audit;
use crate::rows::{counter, mfa_kind, session_state, SessionRow, AUDIT_COLUMNS, SESSION_COLUMNS};
use crate::{bound, count, db, PgStore};

#[async_trait]
impl SessionStore for PgStore {
    async fn insert_session(
        &self,
        s: &Session,
        token_hash: &SecretHash,
        refresh: Option<&SecretHash>,
        audit: Option<&AuditRecord>,
    ) -> StoreResult<()> {
        let session = format!(
            "INSERT INTO session ({SESSION_COLUMNS}, token_hash, refresh_hash) VALUES ($1, $2, \
             $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, \
             $21)"
        );
        // With an audit record, one statement writes both (a data-modifying CTE): one commit.
        let sql = match audit {
            None => session,
            Some(_) => format!(
                "WITH audit AS (INSERT INTO audit_event ({AUDIT_COLUMNS}) \
                 VALUES ($22, $23, $24, $25, $26, $27, $28)) {session}"
            ),
        };
        let mut query = sqlx::query(&sql)
            .bind(s.id)
            .bind(s.server_id.as_str())
            .bind(s.user_id)
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
            .bind(refresh.map(|h| h.0.to_vec()));
        if let Some(record) = audit {
            query = bind_audit(query, record);
        }
        query.execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        sqlx::query_as::<_, SessionRow>(&format!(
            "SELECT {SESSION_COLUMNS} FROM session WHERE session_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(Session::try_from)
        .transpose()
    }

    async fn session_by_token(&self, token_hash: &SecretHash) -> StoreResult<Option<Session>> {
        sqlx::query_as::<_, SessionRow>(&format!(
            "SELECT {SESSION_COLUMNS} FROM session WHERE token_hash = $1"
        ))
        .bind(&token_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(Session::try_from)
        .transpose()
    }

    async fn claim_mfa_attempt(&self, id: Uuid, max_attempts: u32) -> StoreResult<Option<u32>> {
        // The column keeps its first name, mfa_failures; it counts claimed attempts.
        let claimed: Option<i64> = sqlx::query_scalar(
            "UPDATE session SET mfa_failures = mfa_failures + 1 \
             WHERE session_id = $1 AND state = 'pending_mfa' AND mfa_failures < $2 \
             RETURNING mfa_failures",
        )
        .bind(id)
        .bind(i64::from(max_attempts))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        claimed.map(|n| counter(n, "MFA attempts")).transpose()
    }

    async fn complete_mfa(
        &self,
        id: Uuid,
        method: AuthMethod,
        at: Transition,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE session SET state = 'active', \
                 methods = CASE WHEN methods = '' THEN $2 ELSE methods || ',' || $2 END, \
                 pending_mfa = NULL, last_active_at = $3, \
                 idle_expires_at = $3 + LEAST(idle_timeout, absolute_expires_at - $3) \
             WHERE session_id = $1 AND state = 'pending_mfa' \
             AND idle_expires_at > $3 AND absolute_expires_at > $3",
        )
        .bind(id)
        .bind(method.as_str())
        .bind(at.now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_captcha_answer(&self, id: Uuid, answer: &SecretHash) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE session SET captcha_answer = $2 \
             WHERE session_id = $1 AND state = 'blocked_captcha'",
        )
        .bind(id)
        .bind(&answer.0[..])
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
        // The right answer, in the statement that uses it up. SET expressions see the row as
        // it was: the new state follows from the password verdict and the pending factor kept
        // with the login. A session past a deadline is not blocked any more, whatever answer.
        let passed: Option<(String, Option<String>)> = sqlx::query_as(
            "UPDATE session SET captcha_answer = NULL, \
                 state = CASE WHEN NOT password_ok THEN 'revoked' \
                              WHEN pending_mfa IS NULL THEN 'active' \
                              ELSE 'pending_mfa' END, \
                 revoked_at = CASE WHEN NOT password_ok THEN $3 ELSE revoked_at END, \
                 last_active_at = $3, \
                 idle_expires_at = CASE \
                     WHEN NOT password_ok THEN idle_expires_at \
                     WHEN pending_mfa IS NULL \
                         THEN $3 + LEAST(idle_timeout, absolute_expires_at - $3) \
                     ELSE $3 + LEAST($4, idle_timeout, absolute_expires_at - $3) END \
             WHERE session_id = $1 AND state = 'blocked_captcha' AND captcha_answer = $2 \
             AND idle_expires_at > $3 AND absolute_expires_at > $3 \
             RETURNING state, pending_mfa",
        )
        .bind(id)
        .bind(&answer.0[..])
        .bind(at.now)
        .bind(at.login_step_timeout)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some((state, pending)) = passed {
            return Ok(match session_state(&state)? {
                SessionState::Revoked => CaptchaVerdict::PasswordWrong,
                _ => CaptchaVerdict::Passed {
                    mfa: mfa_kind(pending)?,
                },
            });
        }
        // A wrong answer, or none drawn: the challenge is used up and one failure counted; the
        // last allowed one ends the session. A concurrent right answer committed first leaves
        // the session unblocked, so this finds no row.
        let wrong: Option<String> = sqlx::query_scalar(
            "UPDATE session SET captcha_answer = NULL, \
                 captcha_failures = captcha_failures + 1, \
                 state = CASE WHEN captcha_failures + 1 >= $2 THEN 'revoked' ELSE state END, \
                 revoked_at = CASE WHEN captcha_failures + 1 >= $2 THEN $3 \
                                   ELSE revoked_at END \
             WHERE session_id = $1 AND state = 'blocked_captcha' \
             AND idle_expires_at > $3 AND absolute_expires_at > $3 \
             RETURNING state",
        )
        .bind(id)
        .bind(i64::from(max_failures))
        .bind(at.now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(match wrong {
            None => CaptchaVerdict::NotBlocked,
            Some(state) => CaptchaVerdict::Wrong {
                ended: session_state(&state)? == SessionState::Revoked,
            },
        })
    }

    async fn abandon_login(&self, id: Uuid, at: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE session SET state = 'revoked', revoked_at = $2 \
             WHERE session_id = $1 AND state IN ('pending_mfa', 'blocked_captcha')",
        )
        .bind(id)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_session_user(&self, id: Uuid, user_id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE session SET user_id = $2 WHERE session_id = $1 AND state <> 'revoked'",
        )
        .bind(id)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_sessions(&self, touches: &[SessionTouch]) -> StoreResult<()> {
        if touches.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = touches.iter().map(|t| t.id).collect();
        let last_active: Vec<i64> = touches.iter().map(|t| t.last_active_at).collect();
        let idle_expires: Vec<i64> = touches.iter().map(|t| t.idle_expires_at).collect();
        // One statement for the whole batch. A session touched twice in the batch counts once,
        // with its latest values; rows are locked in id order (see the crate doc).
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

    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        except: Option<Uuid>,
        now: i64,
    ) -> StoreResult<Vec<Uuid>> {
        // Locks in id order, like touch_sessions, so the two cannot deadlock.
        sqlx::query_scalar(
            "WITH live AS ( \
                 SELECT session_id FROM session \
                 WHERE user_id = $2 AND state <> 'revoked' \
                 AND ($4::uuid IS NULL OR session_id <> $4) \
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
        .bind(except)
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
        sqlx::query_as::<_, SessionRow>(&format!(
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
        .into_iter()
        .map(Session::try_from)
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

    async fn user_session_ids(&self, user_id: Uuid, now: i64) -> StoreResult<Vec<Uuid>> {
        sqlx::query_scalar(
            "SELECT session_id FROM session WHERE user_id = $1 AND state = 'active' \
             AND idle_expires_at > $2 AND absolute_expires_at > $2",
        )
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
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
}
