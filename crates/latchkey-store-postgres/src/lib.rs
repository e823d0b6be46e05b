//! PostgreSQL store (placeholder until implemented).
