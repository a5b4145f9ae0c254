//! The move manifest: what earlier runs moved, so a run started again
//! (after an interruption, a crash, or to pick up new items) skips what is
//! already stored and moves each item once.
//!
//! It is a SQLite database in the deployment directory
//! (`mailbox-move.sqlite`), one row per destination file: the source item
//! it came from (path, size, modification time) and the blob its version
//! was sealed into. The catalog stays the one home of file records; the
//! manifest only says which version came from which item, by blob name
//! (random, chosen before the seal), and the catalog says whether that
//! version is stored.
//!
//! The protocol, per batch of items:
//!
//! 1. the batch's rows are written as `pending`, each with a fresh blob
//!    name, and made durable;
//! 2. the items are sealed (the catalog commits them, durably, once their
//!    blobs are durable);
//! 3. the rows of the items stored are marked `moved` (not synced: a mark
//!    lost in a crash is found again in step 4), those of failed items
//!    removed.
//!
//! When a run starts, before anything else, every `pending` row is settled
//! against the catalog: if the catalog has a sealed version in its blob,
//! the item was stored and the row becomes `moved`; otherwise it was not
//! (the seal never committed), so the row, any seal left in progress and
//! its blob are removed and the item is moved again. An item is skipped
//! only if its row is `moved`, names the same source path, size and
//! modification time, and the catalog has a sealed version in its blob. So
//! an item is moved twice only if the catalog shows the first move was not
//! stored, and skipped only if it is durably stored, wherever the previous
//! run was killed.
//!
//! One run at a time holds the manifest (an exclusive lock on
//! `mailbox-move.lock`); a second run waits for it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use atrest::BlobName;
use atrest::filekey::TenantId;
use atrest_sqlite::rusqlite::{self, Connection, params};
use tokio::task::block_in_place;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS moved_items (
    tenant   BLOB    NOT NULL,
    name     TEXT    NOT NULL,
    source   BLOB    NOT NULL,
    len      INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    blob     TEXT    NOT NULL,
    state    TEXT    NOT NULL CHECK (state IN ('pending', 'moved')),
    PRIMARY KEY (tenant, name)
);
";

/// The file name of the manifest in the deployment directory.
pub(crate) const FILE: &str = "mailbox-move.sqlite";
/// The file name of its lock.
pub(crate) const LOCK: &str = "mailbox-move.lock";

/// Why the manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The database failed.
    #[error("move manifest: {0}")]
    Database(#[from] rusqlite::Error),
    /// The database could not be opened.
    #[error("move manifest: {0}")]
    Open(#[from] atrest::tenant::Error),
    /// The lock file failed.
    #[error("move manifest lock {}: {source}", path.display())]
    Lock {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The catalog could not be asked.
    #[error("move manifest: {0}")]
    Catalog(#[from] atrest::Error),
}

impl Error {
    /// Its exit code, by the convention of every program of the package.
    pub(crate) fn exit_code(&self) -> u8 {
        use atrest_cli::outcome;
        match self {
            Self::Database(_) | Self::Lock { .. } => outcome::FAILED,
            Self::Open(error) => outcome::kind_code(error.kind()),
            Self::Catalog(error) => outcome::kind_code(error.kind()),
        }
    }
}

/// Where an item came from: what decides that it has not changed since it
/// was moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The item's absolute source path, as bytes.
    pub(crate) source: Vec<u8>,
    /// Its size in bytes.
    pub(crate) len: u64,
    /// Its modification time, in nanoseconds since the epoch.
    pub(crate) mtime_ns: i64,
}

/// An item about to be sealed.
#[derive(Debug)]
pub(crate) struct Pending<'a> {
    /// The destination file name.
    pub(crate) name: &'a str,
    /// Where it comes from.
    pub(crate) origin: &'a Origin,
    /// The blob it goes to.
    pub(crate) blob: &'a BlobName,
}

/// The manifest, open and locked by this run.
pub(crate) struct Manifest {
    db: Mutex<Connection>,
    tenant: TenantId,
    /// Items moved by earlier runs (and stored): name to origin.
    moved: HashMap<String, Origin>,
    _lock: std::fs::File,
}

impl core::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Manifest").finish_non_exhaustive()
    }
}

/// What the catalog holds, by blob name.
struct Stored {
    sealed: HashSet<BlobName>,
    in_progress: HashMap<BlobName, atrest::catalog::SealTicket>,
}

impl Stored {
    async fn read(files: &atrest::Files) -> Result<Self, Error> {
        let catalog = files.catalog();
        // In progress first: a seal that commits in between is then seen
        // as sealed, never as absent.
        let in_progress: HashMap<_, _> = catalog
            .seals_in_progress()
            .await?
            .into_iter()
            .map(|seal| (seal.ticket.blob.clone(), seal.ticket))
            .collect();
        let sealed = catalog
            .blob_names()
            .await?
            .into_iter()
            .filter(|blob| !in_progress.contains_key(blob))
            .collect();
        Ok(Self {
            sealed,
            in_progress,
        })
    }
}

impl Manifest {
    /// Opens (creating) the manifest of deployment `dir`, waits for the
    /// lock, settles what an interrupted run left pending, and reads what
    /// tenant `tenant` already has moved. Returns the manifest and how many
    /// pending items were found stored and not stored. Its file calls
    /// (waiting for the lock among them) are made in place on the
    /// multi-threaded runtime (`tokio::task::block_in_place`).
    pub(crate) async fn open(
        dir: &Path,
        tenant: TenantId,
        files: &atrest::Files,
    ) -> Result<(Self, Settled), Error> {
        let (lock, db) = block_in_place(|| {
            let lock_path = dir.join(LOCK);
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .and_then(|file| file.lock().map(|()| file))
                .map_err(|source| Error::Lock {
                    path: lock_path,
                    source,
                })?;
            let db = atrest_sqlite::open_database(&dir.join(FILE), SCHEMA)?;
            Ok::<_, Error>((lock, db))
        })?;
        let mut manifest = Self {
            db: Mutex::new(db),
            tenant,
            moved: HashMap::new(),
            _lock: lock,
        };
        let settled = manifest.settle(files).await?;
        Ok((manifest, settled))
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Settles pending rows (of every tenant: this run holds the lock, so
    /// whoever wrote them is gone) and loads this tenant's moved items.
    async fn settle(&mut self, files: &atrest::Files) -> Result<Settled, Error> {
        let mut settled = Settled::default();
        let rows = block_in_place(|| self.rows())?;
        if rows.is_empty() {
            return Ok(settled);
        }
        let stored = Stored::read(files).await?;
        // What each row becomes: marked moved, forgotten, or kept.
        let mut mark = Vec::new();
        let mut forget = Vec::new();
        for row in rows {
            let Ok(blob) = row.blob.parse::<BlobName>() else {
                // Not a name this program wrote: forget the row.
                forget.push((row.tenant, row.name));
                continue;
            };
            let is_stored = stored.sealed.contains(&blob);
            if row.pending {
                if is_stored {
                    settled.stored += 1;
                    mark.push((row.tenant.clone(), row.name.clone()));
                } else {
                    settled.not_stored += 1;
                    // The seal never committed: its row in progress and its
                    // blob are this program's leftovers, removed before the
                    // row is forgotten (a run killed in between settles it
                    // again).
                    if let Some(ticket) = stored.in_progress.get(&blob) {
                        files.catalog().abandon_seal(ticket).await?;
                    }
                    let _ = files.blobs().delete(&blob).await;
                    forget.push((row.tenant, row.name));
                    continue;
                }
            }
            if is_stored && row.tenant.as_slice() == self.tenant.as_bytes().as_slice() {
                let _ = self.moved.insert(row.name, row.origin);
            }
        }
        let db = self.db.get_mut().unwrap_or_else(PoisonError::into_inner);
        block_in_place(|| Self::apply(db, &mark, &forget))?;
        Ok(settled)
    }

    /// Marks rows moved and forgets others, in one transaction.
    fn apply(
        db: &mut Connection,
        mark: &[(Vec<u8>, String)],
        forget: &[(Vec<u8>, String)],
    ) -> Result<(), Error> {
        let tx = db.transaction()?;
        for (tenant, name) in mark {
            let _ = tx.execute(
                "UPDATE moved_items SET state = 'moved' WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
            )?;
        }
        for (tenant, name) in forget {
            let _ = tx.execute(
                "DELETE FROM moved_items WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn rows(&self) -> Result<Vec<Row>, Error> {
        let db = self.db();
        let mut statement =
            db.prepare("SELECT tenant, name, source, len, mtime_ns, blob, state FROM moved_items")?;
        let rows = statement.query_map([], |row| {
            Ok(Row {
                tenant: row.get(0)?,
                name: row.get(1)?,
                origin: Origin {
                    source: row.get(2)?,
                    len: row.get(3)?,
                    mtime_ns: row.get(4)?,
                },
                blob: row.get(5)?,
                pending: row.get::<_, String>(6)? == "pending",
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether file `name` was moved, and stored, from this very origin.
    pub(crate) fn already_moved(&self, name: &str, origin: &Origin) -> bool {
        self.moved.get(name) == Some(origin)
    }

    /// Records a batch as pending, durably, before it is sealed.
    pub(crate) fn begin(&self, batch: &[Pending<'_>]) -> Result<(), Error> {
        let mut db = self.db();
        db.pragma_update(None, "synchronous", "FULL")?;
        let tx = db.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO moved_items
                 (tenant, name, source, len, mtime_ns, blob, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending')",
            )?;
            for item in batch {
                let _ = insert.execute(params![
                    self.tenant.as_bytes(),
                    item.name,
                    item.origin.source,
                    item.origin.len,
                    item.origin.mtime_ns,
                    item.blob.as_str()
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Marks the stored items of a batch moved and forgets the failed
    /// ones. Not synced: a lost mark is settled again by the next run.
    pub(crate) fn finish(&self, stored: &[&str], failed: &[&str]) -> Result<(), Error> {
        let mut db = self.db();
        db.pragma_update(None, "synchronous", "NORMAL")?;
        let tx = db.transaction()?;
        {
            let mut moved = tx.prepare_cached(
                "UPDATE moved_items SET state = 'moved' WHERE tenant = ?1 AND name = ?2",
            )?;
            for name in stored {
                let _ = moved.execute(params![self.tenant.as_bytes(), name])?;
            }
            let mut forget = tx.prepare_cached(
                "DELETE FROM moved_items WHERE tenant = ?1 AND name = ?2 AND state = 'pending'",
            )?;
            for name in failed {
                let _ = forget.execute(params![self.tenant.as_bytes(), name])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// What settling an interrupted run's pending items found.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Settled {
    /// Pending items the catalog had stored.
    pub(crate) stored: u64,
    /// Pending items it had not (they are moved again).
    pub(crate) not_stored: u64,
}

struct Row {
    tenant: Vec<u8>,
    name: String,
    origin: Origin,
    blob: String,
    pending: bool,
}
