//! The brute-force rule (docs/api.md, family D): a CAPTCHA is required after `captcha_after_failures` failed
//! logins for one user name within the failure window (and stays required for that name until
//! one of its logins succeeds), and after `captcha_after_failures_per_address` failed logins
//! from one client address within the window (until the window has passed).
//!
//! Names are counted by a keyed hash whether or not they exist, so locking tells nothing. Each
//! key is one counter row in the store, incremented in one statement (see
//! [`crate::store::ThrottleStore`]): the window starts at a key's first failure.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::model::ids::ServerId;
use crate::seams::clock::Clock;
use crate::settings::Settings;
use crate::store::Store;

/// What the failure counters say of a login about to be judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// A CAPTCHA must be solved first.
    pub captcha: bool,
    /// The name has failures in the window (or a CAPTCHA requirement) to forget on success.
    pub name_failed: bool,
}

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

    /// Must the next login of `name` from `address` solve a CAPTCHA, and has the name
    /// failures for a success to forget?
    pub async fn standing(
        &self,
        server: &ServerId,
        name: &str,
        address: Option<&str>,
    ) -> Result<Standing> {
        let now = self.clock.now();
        let name_key = key("name", server, name);
        let address_key = address.map(|address| key("addr", server, address));
        let keys: Vec<&str> = std::iter::once(name_key.as_str())
            .chain(address_key.as_deref())
            .collect();
        // Both counters in one statement.
        let counts = self.store.failure_counts(&keys, now, self.window).await?;
        let by_name = counts.first().copied().unwrap_or_default();
        let address_limited = counts
            .get(1)
            .is_some_and(|by_address| by_address.failures >= self.per_address);
        Ok(Standing {
            captcha: by_name.captcha_required || address_limited,
            name_failed: by_name.captcha_required || by_name.failures > 0,
        })
    }

    /// Counts a failed login, each counter in one statement: the name's counter marks the name
    /// as needing a CAPTCHA in the same statement that reaches the limit.
    pub async fn record_failure(
        &self,
        server: &ServerId,
        name: &str,
        address: Option<&str>,
    ) -> Result<()> {
        let now = self.clock.now();
        self.store
            .record_failure(
                &key("name", server, name),
                now,
                self.window,
                Some(self.per_name),
            )
            .await?;
        if let Some(address) = address {
            self.store
                .record_failure(&key("addr", server, address), now, self.window, None)
                .await?;
        }
        Ok(())
    }

    /// A login of `name` judged after `standing` was read succeeded: its failures are
    /// forgotten, unless it had none then (no write). A failure counted since stays counted: it
    /// is one.
    pub async fn record_success_after(
        &self,
        standing: Standing,
        server: &ServerId,
        name: &str,
    ) -> Result<()> {
        if standing.name_failed {
            self.record_success(server, name).await?;
        }
        Ok(())
    }

    /// A login of `name` succeeded: its failures and CAPTCHA requirement are forgotten.
    pub async fn record_success(&self, server: &ServerId, name: &str) -> Result<()> {
        self.store
            .clear_failures(&key("name", server, name))
            .await?;
        Ok(())
    }
}
