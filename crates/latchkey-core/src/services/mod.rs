//! [`Latchkey`]: the one handle the HTTP layer and the command line hold. It owns the store,
//! the clock, the settings and the session cache, and offers the administrative operations
//! (initialise, servers, users, credentials). Login flows live in [`crate::services::quatrix`].

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, RwLock};

use ed25519_dalek::SigningKey;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::cache::server_keys::{ServerKeys, ServerKeysCache};
use crate::cache::sessions::Sessions;
use crate::cache::verified_tokens::VerifiedTokens;
use crate::crypto::credentials;
use crate::crypto::jwt::KeyRing;
use crate::crypto::secret::{IssuedToken, SecretHash};
use crate::crypto::totp;
use crate::error::{Error, Result};
use crate::model::ids::{ServerId, UserId};
use crate::model::{ApiKey, Permissions, Role, Server, User};
use crate::seams::clock::Clock;
use crate::seams::events::{Events, LocalEvents};
use crate::settings::Settings;
use crate::store::Store;
use admission::LoginLimiter;
use audit::AuditEvent;
use hashing::HashPool;
use throttle::Throttle;

pub mod access;
pub mod administration;
pub mod admission;
pub mod app;
pub mod audit;
pub mod browser;
pub mod console;
pub mod directory;
pub mod hashing;
pub mod management;
pub mod nestjs;
pub mod nextauth;
pub mod operations;
pub mod passkeys;
pub mod polario;
pub mod quatrix;
mod throttle;
pub mod transactions;

/// Setting key holding the default server's id (written by `init`).
pub const DEFAULT_SERVER_SETTING: &str = "default_server";
/// Id of the role that `init` creates and gives the first API key.
pub const ROOT_ROLE: &str = "root";

/// What `init` answers: printed once, never stored in clear.
#[derive(Debug)]
pub struct Initialised {
    pub server_id: ServerId,
    pub api_key: IssuedToken,
}

/// What enabling TOTP answers, once.
#[derive(Debug)]
pub struct TotpEnrolment {
    pub otpauth_uri: String,
    pub secret_base32: String,
}

/// The one handle on latchkey's domain. Its store is private: callers get operations, never
/// the store itself, so every rule (one-time values, attempt limits, revocations reaching the
/// caches) is kept here.
pub struct Latchkey {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    pub settings: Settings,
    pub(crate) sessions: Sessions,
    pub(crate) throttle: Throttle,
    /// Where every argon2id, PBKDF2 and CAPTCHA computation runs (bounded).
    pub(crate) hashing: HashPool,
    pub(crate) login_limiter: LoginLimiter,
    /// Servers' ids and keys, which never change (see [`ServerKeysCache`]).
    server_keys: ServerKeysCache,
    /// SCRAM iteration counts in use per server (unknown names draw from them).
    pub(crate) iteration_counts: polario::IterationCountsCache,
    default_server: OnceCell<ServerId>,
    dummy_hash: OnceCell<String>,
    /// JWT signing keys as last loaded from the store.
    pub(crate) keys: RwLock<Arc<KeyRing>>,
    pub(crate) keys_loaded_at: AtomicI64,
    pub(crate) verified_tokens: VerifiedTokens,
    /// What passkeys are made for (`public_url`); `None`: passkeys are not offered.
    pub(crate) relying_party: Option<passkeys::RelyingParty>,
    /// The HMAC key of passkey ceremony tickets (see [`passkeys`]).
    pub(crate) passkey_ticket_key: OnceCell<[u8; 32]>,
}

impl Latchkey {
    /// A latchkey whose events stay in this process (the store's only user, e.g. SQLite).
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: Settings) -> Arc<Self> {
        Self::with_events(store, clock, settings, Arc::new(LocalEvents::new()))
    }

    pub fn with_events(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: Settings,
        events: Arc<dyn Events>,
    ) -> Arc<Self> {
        Arc::new(Self {
            sessions: Sessions::new(store.clone(), clock.clone(), events, &settings),
            throttle: Throttle::new(store.clone(), clock.clone(), &settings),
            hashing: HashPool::new(settings.hash_workers, settings.hash_queue),
            server_keys: ServerKeysCache::new(),
            iteration_counts: Default::default(),
            login_limiter: LoginLimiter::new(
                settings.login_rate_per_address,
                settings.login_burst_per_address,
            ),
            verified_tokens: VerifiedTokens::new(),
            relying_party: settings.public_url.as_deref().and_then(|url| {
                passkeys::RelyingParty::of_public_url(url)
                    .map_err(|reason| tracing::warn!(%reason, "passkeys are not offered"))
                    .ok()
            }),
            passkey_ticket_key: OnceCell::new(),
            store,
            clock,
            settings,
            default_server: OnceCell::new(),
            dummy_hash: OnceCell::new(),
            keys: RwLock::new(Arc::new(KeyRing::default())),
            keys_loaded_at: AtomicI64::new(i64::MIN),
        })
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Creates the default server and a root API key. Fails with `Conflict`, changing nothing,
    /// when the database is already initialised.
    pub async fn init(&self, server_name: &str) -> Result<Initialised> {
        let server_id = ServerId::generate();
        // The setting is the lock: a second init stops here before creating anything.
        self.store
            .insert_setting(DEFAULT_SERVER_SETTING, server_id.as_str())
            .await
            .map_err(|e| match e {
                crate::StoreError::Conflict => {
                    Error::Conflict("the database is already initialised".into())
                }
                other => other.into(),
            })?;
        self.create_server_with_id(server_id.clone(), server_name)
            .await?;
        if self.store.role(ROOT_ROLE).await?.is_none() {
            self.store
                .insert_role(&Role {
                    id: ROOT_ROLE.into(),
                    root: true,
                })
                .await?;
        }
        let api_key = self.create_api_key(ROOT_ROLE).await?;
        Ok(Initialised { server_id, api_key })
    }

    /// Creates a server (tenant) with a fresh Ed25519 identity key.
    pub async fn create_server(&self, name: &str) -> Result<Server> {
        self.create_server_with_id(ServerId::generate(), name).await
    }

    async fn create_server_with_id(&self, id: ServerId, name: &str) -> Result<Server> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(Error::Invalid(
                "server name must be 1 to 200 bytes, none a control character".into(),
            ));
        }
        let signing = SigningKey::from_bytes(&crate::crypto::secret::random_bytes::<32>());
        let server = Server {
            id,
            name: name.to_owned(),
            secret_key: signing.to_bytes(),
            public_key: signing.verifying_key().to_bytes(),
            created_at: self.now(),
        };
        self.store.insert_server(&server).await?;
        Ok(server)
    }

    /// A new API key for a role; the key text is answered once.
    pub async fn create_api_key(&self, role_id: &str) -> Result<IssuedToken> {
        let token = IssuedToken::generate();
        self.store
            .insert_api_key(&ApiKey {
                id: Uuid::new_v4(),
                key_hash: token.hash,
                role_id: role_id.to_owned(),
                created_at: self.now(),
            })
            .await?;
        Ok(token)
    }

    /// The role an API key belongs to, if the key is known.
    pub(crate) async fn role_of_api_key(&self, key: &str) -> Result<Option<Role>> {
        match self.store.api_key(&SecretHash::of(key.as_bytes())).await? {
            Some(k) => Ok(self.store.role(&k.role_id).await?),
            None => Ok(None),
        }
    }

    pub(crate) async fn permissions(&self, role: &Role, server: &ServerId) -> Result<Permissions> {
        if role.root {
            return Ok(Permissions {
                sessions: true,
                accounts: true,
                users: true,
                servers: true,
            });
        }
        Ok(self.store.permissions(&role.id, server).await?)
    }

    /// The server families B, C and D act on: the configured one, else the one `init` made.
    pub async fn default_server(&self) -> Result<ServerId> {
        self.default_server
            .get_or_try_init(|| async {
                let id = self
                    .store
                    .setting(DEFAULT_SERVER_SETTING)
                    .await?
                    .ok_or_else(|| {
                        Error::Unavailable(
                            "latchkey is not initialised: run `latchkey init` first".into(),
                        )
                    })?;
                ServerId::parse(&id)
            })
            .await
            .cloned()
    }

    /// Pins the default server (from configuration) instead of reading the store.
    pub fn set_default_server(&self, id: ServerId) -> Result<()> {
        self.default_server
            .set(id)
            .map_err(|_| Error::Internal("default server already chosen".into()))
    }

    pub async fn server(&self, id: &ServerId) -> Result<Server> {
        self.store
            .server(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no server {id}")))
    }

    /// A server's id and keys: one store read per server and process (they never change).
    pub async fn server_keys(&self, id: &ServerId) -> Result<Arc<ServerKeys>> {
        match self.server_keys.get(id) {
            Some(keys) => Ok(keys),
            None => Ok(self.server_keys.remember(self.server(id).await?)),
        }
    }

    /// Every server, oldest first.
    pub async fn servers(&self) -> Result<Vec<Server>> {
        Ok(self.store.servers().await?)
    }

    /// Resolves `--server ID` or falls back to the default server, checking it exists.
    pub async fn server_or_default(&self, id: Option<&str>) -> Result<ServerId> {
        let id = match id {
            Some(id) => ServerId::parse(id)?,
            None => self.default_server().await?,
        };
        self.server(&id).await?;
        Ok(id)
    }

    /// Creates a user, with a password when one is given.
    pub async fn add_user(
        &self,
        server: &ServerId,
        userid: &UserId,
        password: Option<&str>,
    ) -> Result<User> {
        let user = User {
            id: Uuid::new_v4(),
            server_id: server.clone(),
            userid: userid.clone(),
            created_at: self.now(),
        };
        // Check and derive first, so a refused password creates nothing.
        let hashes = match password {
            Some(p) => Some(self.derive_password(userid, p).await?),
            None => None,
        };
        self.store.insert_user(&user).await.map_err(|e| match e {
            crate::StoreError::Conflict => Error::Conflict(format!("user {userid} already exists")),
            other => other.into(),
        })?;
        if let Some(hashes) = hashes {
            self.store.set_password(user.id, &hashes).await?;
        }
        self.audit(
            server,
            AuditEvent::UserCreated {
                userid: userid.as_str(),
            },
        )
        .await?;
        Ok(user)
    }

    /// The hashes of a new password, once the password policy accepts it.
    async fn derive_password(
        &self,
        userid: &UserId,
        password: &str,
    ) -> Result<crate::model::PasswordHashes> {
        if let Some(refusal) = self
            .settings
            .password_policy
            .refusal(userid.as_str(), password)
        {
            return Err(Error::Invalid(refusal));
        }
        let password = password.to_owned();
        let argon2 = self.settings.argon2;
        let iterations = self.settings.scram_iterations;
        self.hashing
            .run(move |memory| {
                credentials::derive_password_hashes(&password, argon2, iterations, memory)
            })
            .await
    }

    pub async fn user(&self, server: &ServerId, userid: &UserId) -> Result<User> {
        self.store
            .user(server, userid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no user {userid}")))
    }

    /// Sets a new password (argon2id hash and SCRAM verifier).
    pub async fn set_password(
        &self,
        server: &ServerId,
        userid: &UserId,
        password: &str,
    ) -> Result<()> {
        let user = self.user(server, userid).await?;
        let hashes = self.derive_password(userid, password).await?;
        self.store.set_password(user.id, &hashes).await?;
        self.audit(
            server,
            AuditEvent::PasswordSet {
                userid: userid.as_str(),
            },
        )
        .await
    }

    /// Enables TOTP with a fresh secret (replacing any earlier one) and answers the
    /// provisioning URI once.
    pub async fn enable_totp(&self, server: &ServerId, userid: &UserId) -> Result<TotpEnrolment> {
        let user = self.user(server, userid).await?;
        let issuer = self.server(server).await?.name;
        let secret = totp::generate_secret();
        let (otpauth_uri, secret_base32) = totp::provisioning(&secret, &issuer, userid.as_str())?;
        self.store.set_totp_secret(user.id, Some(&secret)).await?;
        self.audit(
            server,
            AuditEvent::TotpEnabled {
                userid: userid.as_str(),
            },
        )
        .await?;
        Ok(TotpEnrolment {
            otpauth_uri,
            secret_base32,
        })
    }

    /// Sets the PIN second factor: 4 to 16 digits, stored as an argon2id hash.
    pub async fn set_pin(&self, server: &ServerId, userid: &UserId, pin: &str) -> Result<()> {
        check_pin_shape(pin)?;
        let user = self.user(server, userid).await?;
        let pin = pin.to_owned();
        let params = self.settings.argon2;
        let hash = self
            .hashing
            .run(move |memory| credentials::hash_secret(pin.as_bytes(), params, memory))
            .await?;
        self.store.set_pin_hash(user.id, Some(&hash)).await?;
        self.audit(
            server,
            AuditEvent::PinSet {
                userid: userid.as_str(),
            },
        )
        .await
    }

    /// Deletes a user and all its sessions.
    pub async fn delete_user(&self, server: &ServerId, userid: &UserId) -> Result<()> {
        let user = self.user(server, userid).await?;
        self.sessions.revoke_all_of_user(user.id).await?;
        self.store.delete_user(user.id).await?;
        self.audit(
            server,
            AuditEvent::UserDeleted {
                userid: userid.as_str(),
            },
        )
        .await
    }

    /// Takes one login from the client address's rate limit (see [`admission`]): checked by
    /// every login route before any hashing.
    pub fn admit_login(&self, address: std::net::IpAddr) -> Result<()> {
        self.login_limiter.check(address)
    }

    /// An argon2id hash of a random secret with the configured cost, checked against when a
    /// user name is unknown so its timing matches a wrong password.
    pub(crate) async fn dummy_hash(&self) -> Result<String> {
        let params = self.settings.argon2;
        self.dummy_hash
            .get_or_try_init(|| async move {
                self.hashing
                    .run(move |memory| {
                        let secret = crate::crypto::secret::random_bytes::<32>();
                        credentials::hash_secret(&secret, params, memory)
                    })
                    .await
            })
            .await
            .cloned()
    }
}

/// A PIN is 4 to 16 ASCII digits.
pub fn check_pin_shape(pin: &str) -> Result<()> {
    if (4..=16).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::Invalid("a PIN is 4 to 16 digits".into()))
    }
}
