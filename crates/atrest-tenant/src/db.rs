//! Opening SQLite databases with the settings key metadata needs; the
//! catalog of the `atrest` crate opens its database the same way.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::Error;

/// Opens (creating if needed) a database with the settings every key store
/// here relies on:
///
/// - `journal_mode = WAL` and `synchronous = FULL`: a committed transaction
///   survives a crash or power loss, an uncommitted one leaves no trace;
/// - `secure_delete = ON`: deleted key material is overwritten with zeros
///   in the database file rather than left in free pages;
/// - a busy timeout, so several processes can share the file, and write
///   transactions that take the write lock when they begin (`IMMEDIATE`),
///   so a transaction that reads and then writes waits for a concurrent
///   writer instead of failing at once with `SQLITE_BUSY`.
///
/// # Errors
/// [`Error::Store`] if the database cannot be opened or the schema applied.
///
/// `schema` must be idempotent (`CREATE TABLE IF NOT EXISTS`): several
/// stores may share one database file.
pub fn open(path: &Path, schema: &str) -> Result<Connection, Error> {
    let mut connection = Connection::open(path)?;
    connection.set_transaction_behavior(TransactionBehavior::Immediate);
    connection.busy_timeout(Duration::from_secs(10))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "secure_delete", "ON")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.execute_batch(&format!("BEGIN IMMEDIATE;\n{schema}\nCOMMIT;"))?;
    Ok(connection)
}

/// Moves the write-ahead log into the database file and truncates it, so
/// that rows deleted with `secure_delete` leave no copy in the log.
///
/// # Errors
/// [`Error::Store`] if the checkpoint fails.
pub fn checkpoint(connection: &Connection) -> Result<(), Error> {
    connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}
