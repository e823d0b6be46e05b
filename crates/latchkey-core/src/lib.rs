//! latchkey's domain: the model of servers, users, sessions and their credentials, and the
//! services that log people in and keep their sessions. Nothing here knows HTTP or SQL.
//!
//! - [`model`]: the records latchkey keeps and the typed ids parsed at the edge;
//! - [`crypto`]: SCRAM, TOTP, password hashes, JWTs, QR payloads, the visual hash, CAPTCHAs;
//! - [`seams`]: what the core is given from outside, time ([`Clock`]) and cross-process events;
//! - [`store`]: the storage seam, narrow traits per entity, one statement per state change;
//! - [`cache`]: the session hot path's in-memory caches;
//! - [`services`]: [`Latchkey`], the one handle, and its operations grouped by API family.

pub mod cache;
pub mod crypto;
pub mod error;
pub mod model;
pub mod seams;
pub mod services;
pub mod settings;
pub mod store;

pub use error::{Error, StoreError};
pub use model::ids::{Nonce, ServerId, UserId};
pub use seams::clock::{Clock, ManualClock, SystemClock};
pub use services::Latchkey;
pub use settings::Settings;
pub use store::Store;
