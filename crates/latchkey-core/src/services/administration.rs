//! What the operator's command line does beyond the APIs: looking at users and their
//! sessions, removing second factors, revoking sessions by id or by user. Every change goes
//! through the same caches and audit trail as the APIs' own.

use uuid::Uuid;

use super::audit::AuditEvent;
use super::Latchkey;
use crate::error::{Error, Result};
use crate::model::ids::{ServerId, UserId};
use crate::model::{MfaKind, Session, User};

/// A user as the operator sees it: which credentials it has and how many live sessions.
#[derive(Clone, Debug)]
pub struct UserOverview {
    pub user: User,
    pub password: bool,
    pub totp: bool,
    pub pin: bool,
    pub active_sessions: u64,
}

impl Latchkey {
    /// One user's overview.
    pub async fn user_overview(&self, server: &ServerId, userid: &UserId) -> Result<UserOverview> {
        let creds = self
            .store
            .credentials(server, userid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no user {userid}")))?;
        let active_sessions = self
            .store
            .count_user_sessions(creds.user.id, self.now())
            .await?;
        Ok(UserOverview {
            password: creds.password.is_some(),
            totp: creds.totp_secret.is_some(),
            pin: creds.pin_hash.is_some(),
            user: creds.user,
            active_sessions,
        })
    }

    /// Every user of a server, with their overviews, by user id.
    pub async fn user_overviews(&self, server: &ServerId) -> Result<Vec<UserOverview>> {
        let mut users = self.store.users(server).await?;
        users.sort_by(|a, b| a.userid.as_str().cmp(b.userid.as_str()));
        let mut overviews = Vec::with_capacity(users.len());
        for user in users {
            overviews.push(self.user_overview(server, &user.userid).await?);
        }
        Ok(overviews)
    }

    /// A user's live sessions, newest activity first.
    pub async fn sessions_of(
        &self,
        server: &ServerId,
        userid: &UserId,
        limit: u64,
    ) -> Result<Vec<Session>> {
        let user = self.user(server, userid).await?;
        self.sessions.flush_user(user.id).await?;
        Ok(self
            .store
            .user_sessions(user.id, self.now(), 0, limit)
            .await?)
    }

    /// Revokes one session by id; false when it was not live.
    pub async fn revoke_session_as_operator(&self, id: Uuid) -> Result<bool> {
        let session = self
            .store
            .session(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no session {id}")))?;
        let revoked = self.sessions.revoke(id).await?;
        if revoked {
            self.audit(
                &session.server_id,
                AuditEvent::RevokedByOperator {
                    userid: None,
                    session: Some(id),
                    count: 1,
                },
            )
            .await?;
        }
        Ok(revoked)
    }

    /// Revokes every live session of a user; answers how many.
    pub async fn revoke_user_sessions_as_operator(
        &self,
        server: &ServerId,
        userid: &UserId,
    ) -> Result<usize> {
        let user = self.user(server, userid).await?;
        let count = self.sessions.revoke_all_of_user(user.id).await?;
        self.audit(
            server,
            AuditEvent::RevokedByOperator {
                userid: Some(userid.as_str()),
                session: None,
                count,
            },
        )
        .await?;
        Ok(count)
    }

    /// Removes a user's TOTP second factor; false when it had none.
    pub async fn remove_totp(&self, server: &ServerId, userid: &UserId) -> Result<bool> {
        self.remove_second_factor(server, userid, MfaKind::Totp)
            .await
    }

    /// Removes a user's PIN second factor; false when it had none.
    pub async fn remove_pin(&self, server: &ServerId, userid: &UserId) -> Result<bool> {
        self.remove_second_factor(server, userid, MfaKind::Pin)
            .await
    }

    async fn remove_second_factor(
        &self,
        server: &ServerId,
        userid: &UserId,
        kind: MfaKind,
    ) -> Result<bool> {
        let creds = self
            .store
            .credentials(server, userid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no user {userid}")))?;
        let userid = userid.as_str();
        let (had, event) = match kind {
            MfaKind::Totp => (
                creds.totp_secret.is_some(),
                AuditEvent::TotpRemoved { userid },
            ),
            MfaKind::Pin => (creds.pin_hash.is_some(), AuditEvent::PinRemoved { userid }),
        };
        if !had {
            return Ok(false);
        }
        match kind {
            MfaKind::Totp => self.store.set_totp_secret(creds.user.id, None).await?,
            MfaKind::Pin => self.store.set_pin_hash(creds.user.id, None).await?,
        }
        self.audit(server, event).await?;
        Ok(true)
    }
}
