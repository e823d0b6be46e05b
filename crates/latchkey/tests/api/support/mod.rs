//! The shared test kit (crates/latchkey-testkit), under the names the test modules use.

pub mod db {
    pub use latchkey_testkit::both_backends;
    pub use latchkey_testkit::db::*;
}

pub use latchkey_testkit::{server, sse};
