//! Opening SQLite databases with the settings key metadata needs; the
//! catalog of the `atrest` crate opens its database the same way.

use std::collections::BTreeSet;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
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
///   writer instead of failing at once with `SQLITE_BUSY`;
/// - a new database file is created readable and writable by its owner
///   only (0600); SQLite gives its `-wal` and `-shm` files the same mode;
/// - the query planner's stability guarantee (`SQLITE_DBCONFIG_ENABLE_QPSG`):
///   a prepared statement keeps its plan whatever values are bound to it,
///   rather than being compiled again whenever a parameter compared with
///   an indexed column changes (which the statistics this build of SQLite
///   supports would otherwise do, at a cost larger than the query's);
/// - the schema is checked after it is applied: the database may hold
///   exactly the tables and indexes `schema` creates, and no trigger or
///   view. Anything else — a trigger planted to copy rows before a purge
///   deletes them, for example — is refused ([`Error::Corrupt`]).
///
/// # Errors
/// [`Error::Store`] if the database cannot be opened or the schema applied;
/// [`Error::Corrupt`] for objects `schema` does not create.
///
/// `schema` must be idempotent (`CREATE TABLE IF NOT EXISTS`).
pub fn open(path: &Path, schema: &str) -> Result<Connection, Error> {
    // `:memory:` and `file:` URIs name no file of their own to create.
    let special = path
        .to_str()
        .is_some_and(|p| p == ":memory:" || p.starts_with("file:"));
    let created = if special {
        Ok(None)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(Some)
    };
    match created {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::Store(Box::new(e))),
    }
    let mut connection = Connection::open(path)?;
    connection.set_transaction_behavior(TransactionBehavior::Immediate);
    connection.busy_timeout(Duration::from_secs(10))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "secure_delete", "ON")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    let _ = connection.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    connection.execute_batch(&format!("BEGIN IMMEDIATE;\n{schema}\nCOMMIT;"))?;
    let expected = objects(&{
        let reference = Connection::open_in_memory()?;
        reference.execute_batch(schema)?;
        reference
    })?;
    let found = objects(&connection)?;
    if let Some((kind, _)) = found.difference(&expected).next() {
        return Err(Error::Corrupt(match kind.as_str() {
            "trigger" => "the database holds a trigger the schema does not create",
            "view" => "the database holds a view the schema does not create",
            _ => "the database holds a table or index the schema does not create",
        }));
    }
    Ok(connection)
}

/// The (type, name) of every table, index, trigger and view in a database,
/// SQLite's own objects excepted.
fn objects(connection: &Connection) -> Result<BTreeSet<(String, String)>, Error> {
    let mut statement = connection.prepare(
        "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    )?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let mut objects = BTreeSet::new();
    for row in rows {
        objects.insert(row?);
    }
    Ok(objects)
}

/// Moves the write-ahead log into the database file and truncates it, so
/// that rows deleted with `secure_delete` leave no copy in the log.
///
/// A checkpoint cannot finish while another connection reads an older
/// snapshot; it is retried for a few seconds, then reported.
///
/// # Errors
/// [`Error::Store`] if the checkpoint fails or stays blocked by readers
/// (the deleted rows may then remain in the log until a later checkpoint).
pub fn checkpoint(connection: &Connection) -> Result<(), Error> {
    let started = std::time::Instant::now();
    loop {
        // (busy, frames in the log, frames checkpointed)
        let busy: i64 =
            connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
        if busy == 0 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(Error::Store(
                "the write-ahead log could not be checkpointed: other connections kept reading"
                    .into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
