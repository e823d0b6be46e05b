pub mod db;
pub mod server;
pub mod sse;
