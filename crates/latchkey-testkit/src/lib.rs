//! Test support shared by the black-box suites of the server (`crates/latchkey/tests/api`) and
//! of the companion app (`crates/latchkey-app/tests`): a fresh database per test on SQLite and
//! (when `LATCHKEY_TEST_POSTGRES_URL` is set) PostgreSQL, the real server on port 0 with a
//! manual clock, and a Server-Sent Events reader. Panicking on failure is the point here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod db;
pub mod server;
pub mod sse;
