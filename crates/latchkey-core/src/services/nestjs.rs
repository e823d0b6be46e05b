//! Session management (family C) over the sessions of every login method: the caller is
//! whoever holds an access JWT (family B) or a bearer session token (families A and D), and acts
//! on the sessions of its own user only.

use uuid::Uuid;

use crate::cache::sessions::{ActiveSession, SessionKey};
use crate::error::{Error, Result};
use crate::model::Session;
use crate::services::audit::AuditEvent;
use crate::services::Latchkey;

pub const DEFAULT_PAGE_SIZE: i64 = 10;
pub const MAX_PAGE_SIZE: i64 = 50;

/// One page of a user's active sessions, newest activity first.
#[derive(Debug)]
pub struct SessionPage {
    pub sessions: Vec<Session>,
    pub total: u64,
    pub page: u64,
    pub limit: u64,
    pub total_pages: u64,
}

/// What a bearer credential is, by its shape.
enum Bearer {
    Jwt,
    /// A session token, by the key its session is cached under.
    Opaque(SessionKey),
}

impl Bearer {
    /// `None`: empty or over 4 KiB, no credential latchkey issues.
    fn of(token: &[u8]) -> Option<Bearer> {
        if token.is_empty() || token.len() > 4096 {
            return None;
        }
        // A JWT's first dot ends its header, about 40 bytes in (memchr: the rest is not read).
        Some(match memchr::memchr(b'.', token) {
            Some(_) => Bearer::Jwt,
            None => Bearer::Opaque(SessionKey::of_token(token)),
        })
    }
}

impl Latchkey {
    /// Who is calling: a JWT (dot-separated parts) or an opaque session token (base64url,
    /// without dots), as the request carried it; either must name an active, unexpired
    /// session. Counts as activity of that session.
    pub async fn authenticate_bearer(&self, token: &[u8]) -> Result<ActiveSession> {
        match Bearer::of(token).ok_or(Error::SessionInvalid)? {
            Bearer::Jwt => self.authenticate_access_token(token).await,
            Bearer::Opaque(key) => self.sessions.check(key).await,
        }
    }

    /// [`Latchkey::authenticate_bearer`] when memory alone answers it (a JWT verified before,
    /// or a token, whose session is cached); `None` is not a no:
    /// the async check decides.
    pub fn authenticate_bearer_now(&self, token: &[u8]) -> Option<ActiveSession> {
        match Bearer::of(token)? {
            Bearer::Jwt => self.authenticate_access_token_now(token),
            Bearer::Opaque(key) => self.sessions.check_now(key, true),
        }
    }

    /// `page` below 1 counts as 1; `limit` is clamped to 1..=50.
    pub async fn list_sessions(
        &self,
        caller: ActiveSession,
        page: i64,
        limit: i64,
    ) -> Result<SessionPage> {
        let page = page.max(1) as u64;
        let limit = limit.clamp(1, MAX_PAGE_SIZE) as u64;
        // Activity waiting in memory must show in `lastActiveAt` and in the order.
        self.sessions.flush_user(caller.user_id).await?;
        let now = self.now();
        let total = self.store.count_user_sessions(caller.user_id, now).await?;
        let offset = (page - 1).saturating_mul(limit);
        let sessions = if offset >= total {
            Vec::new()
        } else {
            self.store
                .user_sessions(caller.user_id, now, offset, limit)
                .await?
        };
        Ok(SessionPage {
            sessions,
            total,
            page,
            limit,
            total_pages: total.div_ceil(limit),
        })
    }

    pub async fn count_sessions(&self, caller: ActiveSession) -> Result<u64> {
        Ok(self
            .store
            .count_user_sessions(caller.user_id, self.now())
            .await?)
    }

    /// Revokes one of the caller's sessions: `NotFound` when there is no such live session,
    /// `Forbidden` when it belongs to another user.
    pub async fn revoke_own_session(&self, caller: ActiveSession, id: Uuid) -> Result<()> {
        let session = self
            .store
            .session(id)
            .await?
            .ok_or_else(|| Error::NotFound("Session not found".into()))?;
        if session.user_id != Some(caller.user_id) {
            return Err(Error::Forbidden(
                "You can only revoke your own sessions".into(),
            ));
        }
        if !session.is_live(self.now()) {
            return Err(Error::NotFound("Session not found".into()));
        }
        self.sessions.revoke(id).await?;
        self.audit(
            &session.server_id,
            AuditEvent::SessionRevoked {
                session: id,
                by_session: caller.id,
            },
        )
        .await
    }

    /// Revokes every live session of the caller's user, the caller's own included.
    pub async fn revoke_all_sessions(&self, caller: ActiveSession) -> Result<usize> {
        let count = self.sessions.revoke_all_of_user(caller.user_id).await?;
        if let Some(user) = self.store.user_by_id(caller.user_id).await? {
            self.audit(
                &user.server_id,
                AuditEvent::SessionsRevoked {
                    userid: user.userid.as_str(),
                    by_session: caller.id,
                    count,
                },
            )
            .await?;
        }
        Ok(count)
    }

    /// [`Latchkey::validate_session`] when memory alone answers it; `None` is not a no.
    pub fn validate_session_now(&self, caller: ActiveSession, id: Uuid) -> Option<bool> {
        if caller.id == id {
            // Its own session, found active a moment ago by the caller's check.
            return Some(true);
        }
        let active = self.sessions.check_now(SessionKey::Id(id), false)?;
        Some(active.user_id == caller.user_id)
    }

    /// Is `id` an active session of the caller's user? (Another user's: no.)
    pub async fn validate_session(&self, caller: ActiveSession, id: Uuid) -> Result<bool> {
        if let Some(answered) = self.validate_session_now(caller, id) {
            return Ok(answered);
        }
        match self.sessions.peek(SessionKey::Id(id)).await {
            Ok(active) => Ok(active.user_id == caller.user_id),
            Err(Error::SessionInvalid) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
