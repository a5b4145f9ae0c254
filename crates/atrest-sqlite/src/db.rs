//! What every store here shares: opening a database with the settings key
//! material needs, the classification of SQLite's errors, and running
//! statements on the async runtime's blocking pool.

use std::collections::BTreeSet;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use atrest::CatalogError;
use atrest_core::ErrorKind;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, TransactionBehavior};

/// How a connection waits for a lock another connection holds.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// The longest pause between two tries for a lock.
const LOCK_PAUSE: Duration = Duration::from_millis(1);

/// Why a statement of a store stopped: SQLite failed, or the store's own
/// check refused (an error of the trait it implements). Converted to the
/// trait's error where the store answers.
#[derive(Debug)]
pub(crate) enum Failure {
    /// SQLite failed.
    Sqlite(rusqlite::Error),
    /// A key metadata check refused.
    Keys(atrest_tenant::Error),
    /// A catalog check refused.
    Catalog(CatalogError),
    /// The disk holding the database (this file) is full.
    Full(PathBuf),
}

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Self {
        Self::Sqlite(error)
    }
}

impl From<atrest_tenant::Error> for Failure {
    fn from(error: atrest_tenant::Error) -> Self {
        Self::Keys(error)
    }
}

impl From<CatalogError> for Failure {
    fn from(error: CatalogError) -> Self {
        Self::Catalog(error)
    }
}

impl Failure {
    /// As the key metadata traits report it.
    pub(crate) fn into_keys(self) -> atrest_tenant::Error {
        match self {
            Self::Sqlite(error) => atrest_tenant::Error::store(sqlite_kind(&error), error),
            Self::Keys(error) => error,
            Self::Catalog(CatalogError::Corrupt(what)) => atrest_tenant::Error::Corrupt(what),
            Self::Catalog(CatalogError::Database { kind, source }) => {
                atrest_tenant::Error::Store { kind, source }
            }
            Self::Catalog(error) => atrest_tenant::Error::store(error.kind(), error),
            Self::Full(path) => atrest_tenant::Error::store(ErrorKind::Io, out_of_space(&path)),
        }
    }

    /// As the catalog trait reports it.
    pub(crate) fn into_catalog(self) -> atrest::Error {
        match self {
            Self::Sqlite(error) => CatalogError::Database {
                kind: sqlite_kind(&error),
                source: Box::new(error),
            }
            .into(),
            Self::Keys(error) => error.into(),
            Self::Catalog(error) => error.into(),
            Self::Full(path) => CatalogError::Database {
                kind: ErrorKind::Io,
                source: Box::new(out_of_space(&path)),
            }
            .into(),
        }
    }
}

/// The error of a database whose disk is full.
fn out_of_space(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        format!(
            "out of space: the disk holding {} is full (what only reads still works); free some \
             and run again",
            path.display()
        ),
    )
}

/// Whether the file system holding the database `path` has no room left
/// for its user (less than 64 KiB).
pub(crate) fn disk_full(path: &Path) -> bool {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    rustix::fs::statvfs(dir).is_ok_and(|fs| fs.f_bavail.saturating_mul(fs.f_frsize) < 64 * 1024)
}

/// Whether `failure` is SQLite failing to write or create its files (as it
/// does on a full disk), or the database file failing to be made.
fn is_write_failure(failure: &Failure) -> bool {
    use rusqlite::ErrorCode as Code;
    match failure {
        Failure::Sqlite(error) => matches!(
            error.sqlite_error_code(),
            Some(Code::SystemIoFailure | Code::DiskFull | Code::CannotOpen | Code::ReadOnly)
        ),
        Failure::Keys(atrest_tenant::Error::Store { kind, .. }) => *kind == ErrorKind::Io,
        _ => false,
    }
}

/// How a SQLite failure is classified: a lock held too long is
/// [`ErrorKind::Unavailable`], a violated constraint
/// [`ErrorKind::Conflict`], a damaged database or a value of the wrong type
/// [`ErrorKind::Integrity`], a database that cannot be opened or written
/// for want of permission [`ErrorKind::Usage`], anything else
/// [`ErrorKind::Io`].
pub(crate) fn sqlite_kind(error: &rusqlite::Error) -> ErrorKind {
    use rusqlite::ErrorCode as Code;
    match error.sqlite_error_code() {
        Some(Code::DatabaseBusy | Code::DatabaseLocked) => ErrorKind::Unavailable,
        Some(Code::ConstraintViolation) => ErrorKind::Conflict,
        Some(Code::DatabaseCorrupt | Code::NotADatabase | Code::SchemaChanged) => {
            ErrorKind::Integrity
        }
        Some(
            Code::ReadOnly | Code::PermissionDenied | Code::CannotOpen | Code::NoLargeFileSupport,
        ) => ErrorKind::Usage,
        Some(_) => ErrorKind::Io,
        None => match error {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..) => ErrorKind::Integrity,
            _ => ErrorKind::Io,
        },
    }
}

/// A connection, or the connections of one store, shared by every task of
/// the process, one call at a time: as a short blocking call
/// ([`Shared::run`]) or, for work that grows with the data, on the
/// blocking pool ([`Shared::run_scan`]).
#[derive(Debug)]
pub(crate) struct Shared<C> {
    connections: Arc<Mutex<C>>,
    /// The database file, if it is one: a write that fails while its disk
    /// is full says so.
    path: Option<Arc<Path>>,
}

impl<C> Clone for Shared<C> {
    fn clone(&self) -> Self {
        Self {
            connections: Arc::clone(&self.connections),
            path: self.path.clone(),
        }
    }
}

impl<C: Send + 'static> Shared<C> {
    pub(crate) fn new(connections: C, path: &Path) -> Self {
        Self {
            connections: Arc::new(Mutex::new(connections)),
            path: (!is_special(path)).then(|| Arc::from(path)),
        }
    }

    /// Runs `work` with the connections as a short blocking call
    /// ([`atrest_core::blocking::run_short`]): a statement or transaction
    /// whose work is bounded by its arguments, not by what is stored.
    ///
    /// # Errors
    /// What `work` returns; [`Failure::Full`] for a write that failed
    /// while the disk is full.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut C) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Failure> {
        atrest_core::blocking::run_short(self.call(work)).await
    }

    /// Runs `work` with the connections on the blocking pool
    /// ([`atrest_core::blocking::run`]): for work that grows with what is
    /// stored (every record of a tenant, every blob name), which must
    /// never hold an async worker however long it takes, even where
    /// calls of its kind are usually short.
    ///
    /// # Errors
    /// As [`Shared::run`].
    pub(crate) async fn run_scan<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut C) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Failure> {
        atrest_core::blocking::run(self.call(work)).await
    }

    /// `work` with the connections locked, its write failures told apart
    /// when the disk is full.
    fn call<T>(
        &self,
        work: impl FnOnce(&mut C) -> Result<T, Failure> + Send + 'static,
    ) -> impl FnOnce() -> Result<T, Failure> + Send + 'static {
        let shared = Arc::clone(&self.connections);
        let path = self.path.clone();
        move || {
            let mut connections = shared.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut connections).map_err(|failure| match path {
                Some(path) if is_write_failure(&failure) && disk_full(&path) => {
                    Failure::Full(path.to_path_buf())
                }
                _ => failure,
            })
        }
    }
}

impl Shared<Connection> {
    /// Opens `path` as [`open`] does, on the blocking pool.
    pub(crate) async fn open(
        path: &Path,
        schema: &'static str,
        migrate: fn(&Connection) -> Result<(), Failure>,
    ) -> Result<Self, Failure> {
        let owned = path.to_owned();
        let connection = atrest_core::blocking::run(move || open(&owned, schema, migrate)).await?;
        Ok(Self::new(connection, path))
    }
}

/// SQLite's busy handler, called before each new try for a lock held
/// elsewhere (`attempts` tries so far): pauses as [`lock_pause`] says, or
/// gives up (`SQLITE_BUSY`).
fn wait_for_lock(attempts: i32) -> bool {
    match lock_pause(u32::try_from(attempts).unwrap_or(0)) {
        Some(pause) => {
            std::thread::sleep(pause);
            true
        }
        None => false,
    }
}

/// The pause before try `attempts + 1` for a lock: 100 µs, doubling up to
/// [`LOCK_PAUSE`], and none (give up) once the pauses add up to about
/// [`LOCK_WAIT`]. SQLite's own timeout pauses up to 100 ms between tries,
/// so when processes share a database a lock held for a millisecond or
/// two would go unused for tens of milliseconds.
fn lock_pause(attempts: u32) -> Option<Duration> {
    // Every pause after the first five is LOCK_PAUSE, so counting them
    // bounds the wait from below, however long the sleeps really took.
    if LOCK_PAUSE.saturating_mul(attempts) >= LOCK_WAIT {
        return None;
    }
    Some(
        Duration::from_micros(100)
            .saturating_mul(1 << attempts.min(4))
            .min(LOCK_PAUSE),
    )
}

/// Whether `path` names an in-memory or URI database rather than a file.
pub(crate) fn is_special(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|p| p == ":memory:" || p.starts_with("file:"))
}

/// Opens (creating if needed) a database with the settings every store
/// here relies on:
///
/// - `journal_mode = WAL` and `synchronous = FULL`: a committed transaction
///   survives a crash or power loss, an uncommitted one leaves no trace;
/// - `secure_delete = ON`: deleted key material is overwritten with zeros
///   in the database file rather than left in free pages;
/// - a wait of about 10 s for another connection's lock
///   (see `wait_for_lock`), so several processes can share the file, and
///   write transactions that take the write lock when they begin
///   (`IMMEDIATE`), so a transaction that reads and then writes waits for
///   a concurrent writer instead of failing at once with `SQLITE_BUSY`;
/// - a new database file is created readable and writable by its owner
///   only (0600); SQLite gives its `-wal` and `-shm` files the same mode;
/// - the query planner's stability guarantee (`SQLITE_DBCONFIG_ENABLE_QPSG`):
///   a prepared statement keeps its plan whatever values are bound to it,
///   rather than being compiled again whenever a parameter compared with
///   an indexed column changes (which the statistics this build of SQLite
///   supports would otherwise do, at a cost larger than the query's);
/// - the schema is checked after it is applied (and `migrate` has run,
///   inside the same write transaction): the database may hold exactly the
///   tables and indexes `schema` creates, and no trigger or view. Anything
///   else — a trigger planted to copy rows before a purge deletes them, for
///   example — is refused ([`CatalogError::Corrupt`], as a failure of the
///   store that opens it).
///
/// `schema` must be idempotent (`CREATE TABLE IF NOT EXISTS`).
///
/// On a full disk, where SQLite cannot make the files it writes beside the
/// database (nor the schema's transaction), a database that has nothing
/// waiting in its write-ahead log is opened read-only instead (`immutable`:
/// what is in its file is all there is), so that what only reads still
/// works; a write then fails with [`Failure::Full`]. A database whose
/// schema needs changing is not (it fails with [`Failure::Full`]).
pub(crate) fn open(
    path: &Path,
    schema: &str,
    migrate: impl FnOnce(&Connection) -> Result<(), Failure>,
) -> Result<Connection, Failure> {
    match open_for_writing(path, schema, migrate) {
        Err(failure) if !is_special(path) && is_write_failure(&failure) && disk_full(path) => {
            open_immutable(path, schema).ok_or_else(|| Failure::Full(path.to_path_buf()))
        }
        other => other,
    }
}

/// Opens `path` read-only as the file holds it, if nothing waits in its
/// write-ahead log and it holds exactly `schema`; `None` otherwise.
fn open_immutable(path: &Path, schema: &str) -> Option<Connection> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|meta| meta.len() > 0) {
        return None;
    }
    // A URI: the few characters it gives a meaning to are escaped.
    let mut uri = String::from("file:");
    for &byte in path.as_os_str().as_bytes() {
        match byte {
            b'%' | b'?' | b'#' => uri.push_str(&format!("%{byte:02X}")),
            _ if byte.is_ascii() => uri.push(char::from(byte)),
            _ => uri.push_str(&format!("%{byte:02X}")),
        }
    }
    uri.push_str("?immutable=1");
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
        | rusqlite::OpenFlags::SQLITE_OPEN_URI
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(uri, flags).ok()?;
    let expected = objects(&{
        let reference = Connection::open_in_memory().ok()?;
        reference.execute_batch(schema).ok()?;
        reference
    })
    .ok()?;
    (objects(&connection).ok()? == expected).then_some(connection)
}

/// [`open`], for writing.
fn open_for_writing(
    path: &Path,
    schema: &str,
    migrate: impl FnOnce(&Connection) -> Result<(), Failure>,
) -> Result<Connection, Failure> {
    // `:memory:` and `file:` URIs name no file of their own to create.
    if !is_special(path) {
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Failure::Keys(atrest_tenant::Error::store(
                    ErrorKind::of_io(&e),
                    e,
                )));
            }
        }
    }
    let mut connection = Connection::open(path)?;
    connection.set_transaction_behavior(TransactionBehavior::Immediate);
    connection.busy_handler(Some(wait_for_lock))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "secure_delete", "ON")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    let _ = connection.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let applied = connection
        .execute_batch(schema)
        .map_err(Failure::from)
        .and_then(|()| migrate(&connection));
    match applied {
        Ok(()) => connection.execute_batch("COMMIT")?,
        Err(error) => {
            let _ = connection.execute_batch("ROLLBACK");
            return Err(error);
        }
    }
    let expected = objects(&{
        let reference = Connection::open_in_memory()?;
        reference.execute_batch(schema)?;
        reference
    })?;
    let found = objects(&connection)?;
    if let Some((kind, _)) = found.difference(&expected).next() {
        return Err(Failure::Catalog(CatalogError::Corrupt(
            match kind.as_str() {
                "trigger" => "the database holds a trigger the schema does not create",
                "view" => "the database holds a view the schema does not create",
                _ => "the database holds a table or index the schema does not create",
            },
        )));
    }
    Ok(connection)
}

/// The (type, name) of every table, index, trigger and view in a database,
/// SQLite's own objects excepted.
fn objects(connection: &Connection) -> rusqlite::Result<BTreeSet<(String, String)>> {
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

/// Whether the database holds a table named `name`.
pub(crate) fn has_table(connection: &Connection, name: &str) -> rusqlite::Result<bool> {
    connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [name],
        |row| row.get(0),
    )
}

/// Moves the write-ahead log into the database file and truncates it, so
/// that rows deleted with `secure_delete` leave no copy in the log.
///
/// A checkpoint cannot finish while another connection reads an older
/// snapshot; it is retried for a few seconds, then reported
/// ([`ErrorKind::Unavailable`]: the deleted rows may then remain in the log
/// until a later checkpoint).
pub(crate) fn checkpoint(connection: &Connection) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    loop {
        // (busy, frames in the log, frames checkpointed)
        let busy: i64 =
            connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
        if busy == 0 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(Failure::Keys(atrest_tenant::Error::store(
                ErrorKind::Unavailable,
                "the write-ahead log could not be checkpointed: other connections kept reading",
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work that grows with the data goes to the blocking pool even where
    /// short calls run on the calling worker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scans_leave_the_workers_to_other_tasks() {
        let shared = Shared::new((), Path::new(":memory:"));
        let on = tokio::spawn(async move {
            let caller = std::thread::current().id();
            let here = || Ok(std::thread::current().id());
            let scanned = shared.run_scan(move |()| here()).await.unwrap();
            (caller, scanned, std::thread::current().id())
        });
        let (caller, scanned, after) = on.await.unwrap();
        // A task resumed on the same worker or another: the scan ran on
        // neither (a pool thread is never a worker).
        assert_ne!(scanned, caller);
        assert_ne!(scanned, after);
    }

    /// Tries for a lock come at most a millisecond apart, for about ten
    /// seconds in all, and then stop.
    #[test]
    fn lock_waits_pause_briefly_and_end() {
        let mut total = Duration::ZERO;
        let mut attempts = 0;
        while let Some(pause) = lock_pause(attempts) {
            assert!(pause <= LOCK_PAUSE, "{pause:?} before try {attempts}");
            assert!(pause >= Duration::from_micros(100));
            total += pause;
            attempts += 1;
        }
        assert!(total >= LOCK_WAIT - 5 * LOCK_PAUSE, "{total:?}");
        assert!(total <= LOCK_WAIT + LOCK_PAUSE, "{total:?}");
        assert!(lock_pause(u32::MAX).is_none());
        assert!(!wait_for_lock(i32::MAX));
        assert!(wait_for_lock(-1), "a negative count is a first try");
    }
}
