//! latchkey's black-box tests: one test binary, the real server over real HTTP, on SQLite and
//! (when LATCHKEY_TEST_POSTGRES_URL is set) PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod admission;
mod backup;
mod browser;
mod chromium;
mod cli;
mod connections;
mod nestjs;
mod nextauth;
mod operating;
mod polario;
mod processes;
mod proxies;
mod quatrix;
mod races;
mod readme;
mod secrets;
mod store_contract;
mod support;
