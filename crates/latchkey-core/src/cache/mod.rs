//! The session hot path's memory: active sessions by token hash and by id
//! ([`sessions::Sessions`]), and access JWTs already verified ([`verified_tokens`]). Both are
//! bounded caches that evict when full and drop entries once they expire. Beside them, the
//! servers' keys that logins use ([`server_keys`]), which never change. Session checks read
//! without writing shared memory: by token from a map whose reads borrow ([`by_token`]), by id
//! from a small front table each thread keeps of the sessions it checked recently ([`front`]).

mod by_token;
mod front;
pub mod server_keys;
pub mod sessions;
pub mod verified_tokens;
