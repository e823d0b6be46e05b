//! One module per API family of docs/api.md; each is thin: parse, call one core service, render.

pub mod admin;
pub mod app;
pub mod nestjs;
pub mod nextauth;
pub mod nextauth_directory;
pub mod nextauth_html;
pub mod nextauth_management;
pub mod nextauth_transactions;
pub mod polario;
pub mod quatrix;
