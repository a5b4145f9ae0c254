#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod catalog;
mod db;
mod keys;
mod sealed_keys;

pub use catalog::SqliteCatalog;
pub use keys::SqliteStore;
pub use sealed_keys::SqliteSealedKeys;

/// The SQLite binding the stores here use, for a program that keeps tables
/// of its own ([`open_database`]).
pub use rusqlite;

/// Opens (creating if needed) a database of a program's own tables with
/// the settings every store here uses: write-ahead log with
/// `synchronous = FULL`, `secure_delete`, brief waits for another
/// process's lock, a file created with mode 0600, and a check that it
/// holds only what `schema` (idempotent: `CREATE TABLE IF NOT EXISTS`)
/// creates.
///
/// The connection is blocking: from async code, run its statements on the
/// runtime's blocking pool (`atrest_core::blocking::run`), or with
/// `atrest_core::blocking::run_short` for short ones (as this crate's
/// stores do).
///
/// # Errors
/// [`atrest_tenant::Error::Store`] if it cannot be opened or the schema
/// applied; [`atrest_tenant::Error::Corrupt`] if it holds objects the
/// schema does not create.
pub fn open_database(
    path: &std::path::Path,
    schema: &str,
) -> Result<rusqlite::Connection, atrest_tenant::Error> {
    db::open(path, schema, |_| Ok(())).map_err(db::Failure::into_keys)
}
