//! The brute-force rule of API.md: a CAPTCHA is required after `captcha_after_failures` failed
//! logins for one user name within the failure window (and stays required for that name until
//! one of its logins succeeds), and after `captcha_after_failures_per_address` failed logins
//! from one client address within the window (until the window has passed).
//!
//! Names are counted by a keyed hash whether or not they exist, so locking tells nothing.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::error::Result;
use crate::ids::ServerId;
use crate::settings::Settings;
use crate::store::Store;

pub struct Throttle {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    per_name: u64,
    per_address: u64,
    window: i64,
}

fn key(kind: &str, server: &ServerId, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(server.as_str().as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    format!("{kind}:{}", hex::encode(&h.finalize()[..16]))
}

impl Throttle {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: &Settings) -> Self {
        Self {
            store,
            clock,
            per_name: settings.captcha_after_failures,
            per_address: settings.captcha_after_failures_per_address,
            window: settings.failure_window,
        }
    }

    /// Must the next login of `name` from `address` solve a CAPTCHA?
    pub async fn captcha_needed(
        &self,
        server: &ServerId,
        name: &str,
        address: Option<&str>,
    ) -> Result<bool> {
        let name_key = key("name", server, name);
        if self.store.captcha_required(&name_key).await? {
            return Ok(true);
        }
        if let Some(address) = address {
            let since = self.clock.now() - self.window;
            let from_address = self
                .store
                .failures_since(&key("addr", server, address), since)
                .await?;
            if from_address >= self.per_address {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Counts a failed login; marks the name as needing a CAPTCHA once it reaches the limit.
    pub async fn record_failure(
        &self,
        server: &ServerId,
        name: &str,
        address: Option<&str>,
    ) -> Result<()> {
        let now = self.clock.now();
        let name_key = key("name", server, name);
        self.store.record_failure(&name_key, now).await?;
        if let Some(address) = address {
            self.store
                .record_failure(&key("addr", server, address), now)
                .await?;
        }
        let recent = self
            .store
            .failures_since(&name_key, now - self.window)
            .await?;
        if recent >= self.per_name {
            self.store.require_captcha(&name_key, now).await?;
        }
        Ok(())
    }

    /// A login of `name` succeeded: its failures and CAPTCHA requirement are forgotten.
    pub async fn record_success(&self, server: &ServerId, name: &str) -> Result<()> {
        let name_key = key("name", server, name);
        self.store.clear_failures(&name_key).await?;
        self.store.clear_captcha_requirement(&name_key).await?;
        Ok(())
    }
}
