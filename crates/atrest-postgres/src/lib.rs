#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod catalog;
mod db;
mod keys;
mod tls;

pub use catalog::PgCatalog;
pub use db::{PgError, PgOptions, Postgres};
pub use keys::PgMetadataStore;

pub use tokio_postgres;
