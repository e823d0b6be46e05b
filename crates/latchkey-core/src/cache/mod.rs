//! The session hot path's memory: active sessions by token hash and by id
//! ([`sessions::Sessions`]), and access JWTs already verified ([`verified_tokens`]). Both are
//! bounded caches that evict when full and drop entries once they expire. Beside them, the
//! servers' keys that logins use ([`server_keys`]), which never change. Each thread keeps the
//! sessions it checked recently in a small front table ([`front`]), read without shared writes.

mod front;
pub mod server_keys;
pub mod sessions;
pub mod verified_tokens;
