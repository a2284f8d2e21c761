//! What the four foundation services share. They are small but real services: each owns its
//! storage (SQLite by default, PostgreSQL when given a `postgres://` URL), checks its input at
//! the edge, and publishes its changes through a transactional outbox.

pub mod db;
pub mod error;
pub mod events;
pub mod ids;
pub mod outbox;
pub mod page;
pub mod seed;
pub mod service;
pub mod time;

pub use db::{Backend, Database, DatabaseSettings};
pub use error::FoundationError;
