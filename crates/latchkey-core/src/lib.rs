//! latchkey's domain: the model of servers, users, sessions and their credentials, and the
//! services that log people in and keep their sessions. Nothing here knows HTTP or SQL:
//! storage is the [`Store`] trait, time is the [`Clock`] trait, so every rule (idle expiry,
//! lockout windows, one-time TOTP codes) is testable without sleeping.

pub mod access;
pub mod app_protocol;
pub mod browser_sessions;
pub mod captcha;
pub mod clock;
pub mod credentials;
pub mod error;
pub mod events;
pub mod ids;
pub mod login;
pub mod model;
pub mod qr;
pub mod scram;
pub mod secret;
pub mod service;
pub mod session_management;
pub mod sessions;
pub mod settings;
pub mod store;
pub mod throttle;
pub mod token_sessions;
pub mod tokens;
pub mod totp;
pub mod vash;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, StoreError};
pub use ids::{Nonce, ServerId, UserId};
pub use service::Latchkey;
pub use settings::Settings;
pub use store::Store;
