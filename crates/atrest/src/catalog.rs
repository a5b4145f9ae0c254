//! The catalog: the one home of file records.
//!
//! It maps (tenant, file name) to a file id and its versions, and holds
//! each version's [`FileRecord`] — the wrapped file key, the TIK version it
//! is under, sizes, format parameters and the blob's name. There is exactly
//! one stored copy of each wrapped key, here: the catalog *is* the
//! [`WrappedKeyIndex`] that re-wrapping updates in place and that retiring
//! a TIK version asks.
//!
//! # Seals in progress, and why no retire can orphan a key
//!
//! A seal is recorded before its key exists:
//!
//! 1. [`Catalog::begin_seal`] allocates the next version of the name (one
//!    transaction: two seals of one name at once get two versions) and
//!    records the seal as *in progress*, with its blob name and no key;
//! 2. the file key is made under the tenant's current TIK and
//!    [`Catalog::attach_key`] stores its wrap in the in-progress row;
//! 3. the blob is written completely and made durable;
//! 4. [`Catalog::commit_seal`] marks the version sealed. Only sealed
//!    versions are visible to [`Catalog::record`] and [`Catalog::records`],
//!    so a record never points at a missing blob.
//!
//! In-progress rows take part in the index: a re-wrap moves their wrapped
//! keys to the new TIK version like any other (the commit keeps the
//! re-wrapped key), and [`WrappedKeyIndex::claim_retirement`] counts them,
//! as well as every seal still choosing its key (between steps 1 and 2)
//! against every version. A version is claimed for retirement only when
//! nothing counts against it, and the claim is recorded in the same
//! transaction: from then on [`Catalog::attach_key`] refuses keys under it
//! (a process whose cached metadata still names it as current gets
//! [`CatalogError::TikRetired`], and [`crate::Files::seal`] makes the key
//! again under the current version). So a TIK version is destroyed only
//! when no sealed record and no seal in flight uses it, whatever another
//! process has cached. A seal whose process died stays in
//! progress until [`crate::Files::collect_abandoned_seals`] removes it (and
//! its blob), and until then keeps its TIK version from being retired.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use atrest_filekey::{
    FileContext, FileId, FileVersion, KeyVersion, OsRng, TenantId, WrappedFileKey,
};
use atrest_tenant::{RecordTag, Rewrapped, WrappedKeyIndex};
use rusqlite::{Connection, OptionalExtension as _, Row, params};

use crate::blob::{BlobDigest, BlobName};
use crate::{CatalogError, Error, FileRecord};

/// Longest file or tenant name, in characters.
pub const MAX_NAME_CHARS: usize = 256;

/// Checks a file or tenant name against the naming rule: 1 to
/// [`MAX_NAME_CHARS`] characters (not bytes), no control or invisible
/// formatting characters (zero-width spaces and joiners, byte-order marks,
/// bidi controls), and no white space at either end — so two names that
/// look alike are the same name; and, since names may read as paths
/// (`reports/2026/q1.pdf`), no `/`-separated part that is empty, `.` or
/// `..`.
///
/// # Errors
/// [`CatalogError::InvalidName`] naming the rule broken.
pub fn check_name(what: &'static str, name: &str) -> Result<(), CatalogError> {
    let invalid = |rule| CatalogError::InvalidName {
        what,
        name: name.chars().take(MAX_NAME_CHARS + 1).collect(),
        rule,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid("it is longer than 256 characters"));
    }
    if name.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Err(invalid(
            "it contains a control or invisible formatting character",
        ));
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(invalid("it starts or ends with white space"));
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(invalid("a '/'-separated part of it is empty, '.' or '..'"));
    }
    Ok(())
}

/// Format characters that render as nothing (Unicode general category Cf
/// in common use).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// A seal in progress, as [`Catalog::begin_seal`] recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealTicket {
    /// The tenant, file id and the version allocated to this seal: the
    /// context bound to the file key and to every segment of the blob.
    pub context: FileContext,
    /// The file's name.
    pub name: String,
    /// The blob the ciphertext goes to.
    pub blob: BlobName,
}

/// What a completed seal wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedBlob {
    /// Plaintext length in bytes.
    pub plaintext_len: u64,
    /// Blob length in bytes.
    pub blob_len: u64,
    /// The SHA-256 digest of the blob.
    pub blob_sha256: Option<BlobDigest>,
    /// The stream's segment size in bytes.
    pub segment_size: u32,
    /// The stream format version.
    pub format: u8,
    /// The tag of the record this seal commits, under the tenant's
    /// metadata key (see [`FileRecord::tag`]).
    pub tag: RecordTag,
}

/// A seal still in progress (or abandoned by a process that died).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealInProgress {
    /// What was allocated to it.
    pub ticket: SealTicket,
    /// When it began, in seconds since the Unix epoch.
    pub started_at: u64,
}

/// The home of file records; see the [module documentation](self).
///
/// Every method is atomic; implementations must behave correctly with
/// several processes on one database (allocate versions in one
/// transaction, update wrapped keys only if unchanged since read).
#[async_trait::async_trait]
pub trait Catalog: WrappedKeyIndex + Send + Sync {
    /// Gives tenant `tenant` the display name `name`.
    ///
    /// # Errors
    /// [`CatalogError::TenantNameTaken`]; [`CatalogError::InvalidName`];
    /// [`CatalogError::Database`].
    async fn name_tenant(&self, name: &str, tenant: TenantId) -> Result<(), Error>;

    /// Removes a tenant name (for example after its tenant could not be
    /// created).
    ///
    /// # Errors
    /// [`CatalogError::Database`].
    async fn unname_tenant(&self, name: &str) -> Result<(), Error>;

    /// The tenant named `name`, if any.
    ///
    /// # Errors
    /// [`CatalogError::Database`], [`CatalogError::Corrupt`].
    async fn tenant_named(&self, name: &str) -> Result<Option<TenantId>, Error>;

    /// Every tenant name, by name.
    ///
    /// # Errors
    /// [`CatalogError::Database`], [`CatalogError::Corrupt`].
    async fn tenant_names(&self) -> Result<Vec<(String, TenantId)>, Error>;

    /// The name of tenant `tenant`, if it has one.
    ///
    /// # Errors
    /// [`CatalogError::Database`].
    async fn tenant_name(&self, tenant: TenantId) -> Result<Option<String>, Error>;

    /// Records a new seal of file `name` of `tenant` into blob `blob`:
    /// allocates the file id (for a new name) and the next version.
    ///
    /// This and [`Catalog::attach_key`] must be visible to every other
    /// user of the catalog once they return, but need not be durable on
    /// their own: an implementation may leave them to be flushed with the
    /// next durable commit (the seal's [`Catalog::commit_seal`]), as long
    /// as no later commit can be durable without them. A crash then loses
    /// only rows of seals never committed, whose blobs no row names.
    ///
    /// # Errors
    /// [`CatalogError::InvalidName`]; [`CatalogError::Database`].
    async fn begin_seal(
        &self,
        tenant: TenantId,
        name: &str,
        blob: &BlobName,
    ) -> Result<SealTicket, Error>;

    /// Stores the wrapped key of a seal in progress, unless its TIK version
    /// was claimed for retirement.
    ///
    /// # Errors
    /// [`CatalogError::TikRetired`]; [`CatalogError::SealNotInProgress`];
    /// [`CatalogError::Database`].
    async fn attach_key(&self, seal: &SealTicket, wrapped: &WrappedFileKey) -> Result<(), Error>;

    /// Marks a seal in progress sealed, once its blob is durable; returns
    /// its record (with the wrapped key as stored now).
    ///
    /// # Errors
    /// [`CatalogError::SealNotInProgress`] (it was collected as abandoned,
    /// or has no key); [`CatalogError::Database`].
    async fn commit_seal(
        &self,
        seal: &SealTicket,
        sealed: &SealedBlob,
    ) -> Result<FileRecord, Error>;

    /// Forgets a seal in progress (it failed); a sealed version is left
    /// alone.
    ///
    /// # Errors
    /// [`CatalogError::Database`].
    async fn abandon_seal(&self, seal: &SealTicket) -> Result<(), Error>;

    /// Every seal in progress, oldest first.
    ///
    /// # Errors
    /// [`CatalogError::Database`], [`CatalogError::Corrupt`].
    async fn seals_in_progress(&self) -> Result<Vec<SealInProgress>, Error>;

    /// The record of a sealed version of file `name` (the newest if
    /// `version` is `None`).
    ///
    /// # Errors
    /// [`CatalogError::UnknownFile`], [`CatalogError::UnknownVersion`];
    /// [`CatalogError::Database`], [`CatalogError::Corrupt`].
    async fn record(
        &self,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<FileRecord, Error>;

    /// Every sealed version of every file of `tenant`, by name and
    /// version.
    ///
    /// # Errors
    /// [`CatalogError::Database`], [`CatalogError::Corrupt`].
    async fn records(&self, tenant: TenantId) -> Result<Vec<FileRecord>, Error>;

    /// The name of every blob the catalog refers to (sealed or in
    /// progress): what garbage collection must keep.
    ///
    /// # Errors
    /// [`CatalogError::Database`], [`CatalogError::Corrupt`].
    async fn blob_names(&self) -> Result<Vec<BlobName>, Error>;

    /// [`Catalog::begin_seal`] for several files of `tenant` at once, each
    /// `(name, blob)`; all or none are recorded. An implementation should
    /// do it in one transaction (this default calls `begin_seal` for each,
    /// abandoning those begun if one fails).
    ///
    /// # Errors
    /// As for [`Catalog::begin_seal`].
    async fn begin_seals(
        &self,
        tenant: TenantId,
        seals: &[(String, BlobName)],
    ) -> Result<Vec<SealTicket>, Error> {
        let mut tickets = Vec::with_capacity(seals.len());
        for (name, blob) in seals {
            match self.begin_seal(tenant, name, blob).await {
                Ok(ticket) => tickets.push(ticket),
                Err(error) => {
                    for ticket in &tickets {
                        let _ = self.abandon_seal(ticket).await;
                    }
                    return Err(error);
                }
            }
        }
        Ok(tickets)
    }

    /// [`Catalog::attach_key`] for several seals in progress at once; all or
    /// none are stored. An implementation should do it in one transaction
    /// (this default calls `attach_key` for each).
    ///
    /// # Errors
    /// As for [`Catalog::attach_key`].
    async fn attach_keys(&self, keys: &[(&SealTicket, &WrappedFileKey)]) -> Result<(), Error> {
        for (seal, wrapped) in keys {
            self.attach_key(seal, wrapped).await?;
        }
        Ok(())
    }

    /// [`Catalog::commit_seal`] for several seals at once, once all their
    /// blobs are durable: one durable commit for the lot. An
    /// implementation should do it in one transaction (this default calls
    /// `commit_seal` for each). Returns the records in order.
    ///
    /// # Errors
    /// As for [`Catalog::commit_seal`].
    async fn commit_seals(
        &self,
        seals: &[(&SealTicket, SealedBlob)],
    ) -> Result<Vec<FileRecord>, Error> {
        let mut records = Vec::with_capacity(seals.len());
        for (seal, sealed) in seals {
            records.push(self.commit_seal(seal, sealed).await?);
        }
        Ok(records)
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS catalog_tenants (
    name   TEXT PRIMARY KEY,
    tenant BLOB NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS catalog_files (
    tenant BLOB NOT NULL,
    name   TEXT NOT NULL,
    file   BLOB NOT NULL UNIQUE,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS catalog_versions (
    tenant        BLOB    NOT NULL,
    file          BLOB    NOT NULL REFERENCES catalog_files (file),
    version       INTEGER NOT NULL CHECK (version > 0),
    state         TEXT    NOT NULL CHECK (state IN ('sealing', 'sealed')),
    blob          TEXT    NOT NULL UNIQUE,
    tik_version   INTEGER,
    wrapped       BLOB,
    plaintext_len INTEGER,
    blob_len      INTEGER,
    blob_sha256   BLOB,
    segment_size  INTEGER,
    format        INTEGER,
    tag           BLOB,
    started_at    INTEGER NOT NULL,
    sealed_at     INTEGER,
    PRIMARY KEY (tenant, file, version),
    CHECK (state = 'sealing' OR (wrapped IS NOT NULL AND sealed_at IS NOT NULL AND tag IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS catalog_versions_by_tik ON catalog_versions (tenant, tik_version);
-- A file's versions by file id: the next version number, the joins from a
-- name to its versions and the foreign key's checks, without a scan.
CREATE INDEX IF NOT EXISTS catalog_versions_by_file ON catalog_versions (file, version);
CREATE TABLE IF NOT EXISTS catalog_retired_tiks (
    tenant      BLOB    NOT NULL,
    tik_version INTEGER NOT NULL,
    PRIMARY KEY (tenant, tik_version)
);
";

/// The columns a record is read from, in [`read_record`]'s order.
const RECORD_COLUMNS: &str = "f.tenant, f.name, f.file, v.version, v.blob, v.sealed_at, v.wrapped,
     v.plaintext_len, v.blob_len, v.segment_size, v.format, v.tag, v.blob_sha256";

/// The embedded catalog: SQLite, opened with the same settings as the key
/// store (write-ahead log, `synchronous = FULL`, `secure_delete`, a busy
/// timeout and write transactions that lock when they begin), so several
/// threads and processes can share one database file. The steps that only
/// lead up to a seal's commit go through a second connection whose commits
/// are flushed with the next durable one (see [`Catalog::begin_seal`]).
pub struct SqliteCatalog {
    db: Mutex<Connection>,
    /// A second connection to the same file with `synchronous = NORMAL`,
    /// for [`SqliteCatalog::unflushed`] (none for an in-memory database,
    /// which a second connection would not share).
    unflushed: Option<Mutex<Connection>>,
}

impl core::fmt::Debug for SqliteCatalog {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteCatalog").finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn id16(bytes: &[u8]) -> Option<[u8; 16]> {
    <[u8; 16]>::try_from(bytes).ok()
}

fn tenant_id(bytes: &[u8]) -> Result<TenantId, CatalogError> {
    id16(bytes)
        .and_then(|bytes| TenantId::from_bytes(bytes).ok())
        .ok_or(CatalogError::Corrupt("tenant id"))
}

fn file_id(bytes: &[u8]) -> Result<FileId, CatalogError> {
    id16(bytes)
        .and_then(|bytes| FileId::from_bytes(bytes).ok())
        .ok_or(CatalogError::Corrupt("file id"))
}

fn file_version(value: u64) -> Result<FileVersion, CatalogError> {
    FileVersion::try_from(value).map_err(|_| CatalogError::Corrupt("file version"))
}

fn blob_name(text: &str) -> Result<BlobName, CatalogError> {
    text.parse().map_err(|_| CatalogError::Corrupt("blob name"))
}

fn wrapped_key(bytes: &[u8]) -> Result<WrappedFileKey, CatalogError> {
    WrappedFileKey::from_bytes(bytes).map_err(|_| CatalogError::Corrupt("wrapped file key"))
}

/// The raw columns of [`RECORD_COLUMNS`].
type RecordRow = (
    Vec<u8>,
    String,
    Vec<u8>,
    u64,
    String,
    u64,
    Vec<u8>,
    u64,
    u64,
    u32,
    u8,
    Vec<u8>,
    Option<Vec<u8>>,
);

fn record_row(row: &Row<'_>) -> rusqlite::Result<RecordRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
        row.get(10)?,
        row.get(11)?,
        row.get(12)?,
    ))
}

fn read_record(row: RecordRow) -> Result<FileRecord, CatalogError> {
    let (
        tenant,
        name,
        file,
        version,
        blob,
        sealed_at,
        wrapped,
        plaintext_len,
        blob_len,
        segment_size,
        format,
        tag,
        blob_sha256,
    ) = row;
    Ok(FileRecord {
        tenant: tenant_id(&tenant)?,
        name,
        file: file_id(&file)?,
        version: file_version(version)?,
        blob: blob_name(&blob)?,
        sealed_at,
        wrapped_key: wrapped_key(&wrapped)?,
        plaintext_len,
        blob_len,
        blob_sha256: blob_sha256
            .map(|bytes| BlobDigest::from_slice(&bytes).ok_or(CatalogError::Corrupt("blob digest")))
            .transpose()?,
        segment_size,
        format,
        tag: RecordTag::from_slice(&tag).ok_or(CatalogError::Corrupt("record tag"))?,
    })
}

/// Migrates a catalog made before blob digests: its versions get the
/// `blob_sha256` column (empty for the records already there, whose tags
/// cover no digest). Checked again inside the write transaction, so several
/// processes opening one old catalog at once migrate it once.
fn add_blob_digests(db: &Connection) -> rusqlite::Result<()> {
    let has_column = |db: &Connection| {
        db.prepare("SELECT blob_sha256 FROM catalog_versions LIMIT 0")
            .is_ok()
    };
    if has_column(db) {
        return Ok(());
    }
    db.execute_batch("BEGIN IMMEDIATE")?;
    let altered = if has_column(db) {
        Ok(0)
    } else {
        db.execute(
            "ALTER TABLE catalog_versions ADD COLUMN blob_sha256 BLOB",
            [],
        )
    };
    match altered {
        Ok(_) => db.execute_batch("COMMIT"),
        Err(error) => {
            let _ = db.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

impl SqliteCatalog {
    /// Opens (creating if needed) the catalog database at `path`.
    ///
    /// # Errors
    /// [`CatalogError::Database`] if it cannot be opened.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let db = Self::connect(path)?;
        if db
            .prepare("SELECT tag FROM catalog_versions LIMIT 0")
            .is_err()
        {
            return Err(CatalogError::Corrupt(
                "schema: the catalog was made by an earlier version (records without tags)",
            )
            .into());
        }
        add_blob_digests(&db).map_err(CatalogError::from)?;
        let special = path
            .to_str()
            .is_some_and(|p| p == ":memory:" || p.starts_with("file:"));
        let unflushed = if special {
            None
        } else {
            let connection = Self::connect(path)?;
            connection
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(CatalogError::from)?;
            Some(Mutex::new(connection))
        };
        Ok(Self {
            db: Mutex::new(db),
            unflushed,
        })
    }

    fn connect(path: &Path) -> Result<Connection, Error> {
        let connection = atrest_tenant::db::open(path, SCHEMA).map_err(|error| match error {
            atrest_tenant::Error::Store { kind, source } => {
                Error::Catalog(CatalogError::Database { kind, source })
            }
            other => Error::Keys(other),
        })?;
        // Room for every statement the catalog prepares, so none is
        // compiled again for want of space.
        connection.set_prepared_statement_cache_capacity(64);
        Ok(connection)
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` in one write transaction whose commit is not flushed to
    /// disk on its own: it becomes durable with the next flushed commit of
    /// any connection, since SQLite's write-ahead log is synced whole and
    /// in order. Other connections see it at once.
    ///
    /// Only for the steps that lead up to a seal's commit (beginning it,
    /// attaching its key): [`SqliteCatalog::commit_seals`] flushes them with
    /// the version. A power cut before that loses them, leaving at most a
    /// blob that no row names: garbage for a collector of unnamed blobs
    /// (the operator program's `atrest gc`), never a lost file. A process
    /// that dies keeps them, as the operating system still writes them out.
    fn unflushed<T>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        // This process writes through one connection at a time, so its two
        // never wait for each other's lock.
        let mut durable = self.db();
        let mut unflushed = self
            .unflushed
            .as_ref()
            .map(|db| db.lock().unwrap_or_else(PoisonError::into_inner));
        let db = match unflushed.as_deref_mut() {
            Some(db) => db,
            None => &mut *durable,
        };
        let tx = db.transaction().map_err(CatalogError::from)?;
        let value = work(&tx)?;
        tx.commit().map_err(CatalogError::from)?;
        Ok(value)
    }

    fn query_records(
        &self,
        condition: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<FileRecord>, Error> {
        let db = self.db();
        let mut statement = db
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM catalog_versions v
                 JOIN catalog_files f ON f.file = v.file
                 WHERE v.state = 'sealed' AND {condition}
                 ORDER BY f.name, v.version"
            ))
            .map_err(CatalogError::from)?;
        let rows = statement
            .query_map(params, record_row)
            .map_err(CatalogError::from)?;
        let mut records = Vec::new();
        for row in rows {
            records.push(read_record(row.map_err(CatalogError::from)?)?);
        }
        Ok(records)
    }
}

/// The [`Catalog`] calls, blocking: SQLite answers without an async
/// runtime.
impl SqliteCatalog {
    /// The blocking form of [`Catalog::name_tenant`].
    ///
    /// # Errors
    /// As for [`Catalog::name_tenant`].
    pub fn name_tenant(&self, name: &str, tenant: TenantId) -> Result<(), Error> {
        check_name("tenant name", name)?;
        let inserted = self
            .db()
            .execute(
                "INSERT INTO catalog_tenants (name, tenant) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![name, tenant.as_bytes()],
            )
            .map_err(CatalogError::from)?;
        if inserted == 0 {
            return Err(CatalogError::TenantNameTaken {
                name: name.to_owned(),
            }
            .into());
        }
        Ok(())
    }

    /// The blocking form of [`Catalog::unname_tenant`].
    ///
    /// # Errors
    /// As for [`Catalog::unname_tenant`].
    pub fn unname_tenant(&self, name: &str) -> Result<(), Error> {
        let _ = self
            .db()
            .execute("DELETE FROM catalog_tenants WHERE name = ?1", params![name])
            .map_err(CatalogError::from)?;
        Ok(())
    }

    /// The blocking form of [`Catalog::tenant_named`].
    ///
    /// # Errors
    /// As for [`Catalog::tenant_named`].
    pub fn tenant_named(&self, name: &str) -> Result<Option<TenantId>, Error> {
        let bytes: Option<Vec<u8>> = self
            .db()
            .prepare_cached("SELECT tenant FROM catalog_tenants WHERE name = ?1")
            .and_then(|mut s| s.query_row(params![name], |row| row.get(0)).optional())
            .map_err(CatalogError::from)?;
        Ok(bytes.map(|bytes| tenant_id(&bytes)).transpose()?)
    }

    /// The blocking form of [`Catalog::tenant_names`].
    ///
    /// # Errors
    /// As for [`Catalog::tenant_names`].
    pub fn tenant_names(&self) -> Result<Vec<(String, TenantId)>, Error> {
        let db = self.db();
        let mut statement = db
            .prepare_cached("SELECT name, tenant FROM catalog_tenants ORDER BY name")
            .map_err(CatalogError::from)?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(CatalogError::from)?;
        let mut names = Vec::new();
        for row in rows {
            let (name, tenant) = row.map_err(CatalogError::from)?;
            names.push((name, tenant_id(&tenant)?));
        }
        Ok(names)
    }

    /// The blocking form of [`Catalog::tenant_name`].
    ///
    /// # Errors
    /// As for [`Catalog::tenant_name`].
    pub fn tenant_name(&self, tenant: TenantId) -> Result<Option<String>, Error> {
        Ok(self
            .db()
            .prepare_cached("SELECT name FROM catalog_tenants WHERE tenant = ?1")
            .and_then(|mut s| {
                s.query_row(params![tenant.as_bytes()], |row| row.get(0))
                    .optional()
            })
            .map_err(CatalogError::from)?)
    }

    /// The blocking form of [`Catalog::begin_seal`].
    ///
    /// # Errors
    /// As for [`Catalog::begin_seal`].
    pub fn begin_seal(
        &self,
        tenant: TenantId,
        name: &str,
        blob: &BlobName,
    ) -> Result<SealTicket, Error> {
        let mut tickets = self.begin_seals(tenant, &[(name.to_owned(), blob.clone())])?;
        tickets
            .pop()
            .ok_or_else(|| CatalogError::Corrupt("no ticket for a seal that was begun").into())
    }

    /// The blocking form of [`Catalog::begin_seals`]: one transaction.
    ///
    /// # Errors
    /// As for [`Catalog::begin_seal`].
    pub fn begin_seals(
        &self,
        tenant: TenantId,
        seals: &[(String, BlobName)],
    ) -> Result<Vec<SealTicket>, Error> {
        for (name, _) in seals {
            check_name("file name", name)?;
        }
        // Flushed with the seals' commit.
        self.unflushed(|tx| {
            let mut tickets = Vec::with_capacity(seals.len());
            let started_at = now();
            for (name, blob) in seals {
                let new_file = FileId::time_ordered_now(&mut OsRng)
                    .map_err(atrest_tenant::Error::from)?;
                let _ = tx
                    .prepare_cached(
                        "INSERT INTO catalog_files (tenant, name, file) VALUES (?1, ?2, ?3)
                         ON CONFLICT DO NOTHING",
                    )
                    .and_then(|mut s| s.execute(params![tenant.as_bytes(), name, new_file.as_bytes()]))
                    .map_err(CatalogError::from)?;
                let file: Vec<u8> = tx
                    .prepare_cached("SELECT file FROM catalog_files WHERE tenant = ?1 AND name = ?2")
                    .and_then(|mut s| s.query_row(params![tenant.as_bytes(), name], |row| row.get(0)))
                    .map_err(CatalogError::from)?;
                let latest: u64 = tx
                    .prepare_cached(
                        "SELECT coalesce(max(version), 0) FROM catalog_versions WHERE file = ?1",
                    )
                    .and_then(|mut s| s.query_row(params![file], |row| row.get(0)))
                    .map_err(CatalogError::from)?;
                let version = latest
                    .checked_add(1)
                    .and_then(|next| FileVersion::try_from(next).ok())
                    .ok_or(CatalogError::Corrupt("file version"))?;
                let _ = tx
                    .prepare_cached(
                        "INSERT INTO catalog_versions (tenant, file, version, state, blob, started_at)
                         VALUES (?1, ?2, ?3, 'sealing', ?4, ?5)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            tenant.as_bytes(),
                            file,
                            u64::from(version),
                            blob.as_str(),
                            started_at
                        ])
                    })
                    .map_err(CatalogError::from)?;
                tickets.push(SealTicket {
                    context: FileContext::new(tenant, file_id(&file)?, version),
                    name: name.clone(),
                    blob: blob.clone(),
                });
            }
            Ok(tickets)
        })
    }

    /// The blocking form of [`Catalog::attach_keys`]: one transaction.
    ///
    /// # Errors
    /// As for [`Catalog::attach_key`].
    pub fn attach_keys(&self, keys: &[(&SealTicket, &WrappedFileKey)]) -> Result<(), Error> {
        // Flushed with the seals' commit.
        self.unflushed(|tx| {
            for (seal, wrapped) in keys {
                let context = &seal.context;
                let retired: bool = tx
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM catalog_retired_tiks
                         WHERE tenant = ?1 AND tik_version = ?2)",
                    )
                    .and_then(|mut s| {
                        s.query_row(
                            params![context.tenant.as_bytes(), u32::from(wrapped.kek_version())],
                            |row| row.get(0),
                        )
                    })
                    .map_err(CatalogError::from)?;
                if retired {
                    return Err(CatalogError::TikRetired {
                        version: wrapped.kek_version(),
                    }
                    .into());
                }
                let changed = tx
                    .prepare_cached(
                        "UPDATE catalog_versions SET wrapped = ?5, tik_version = ?6
                         WHERE tenant = ?1 AND file = ?2 AND version = ?3 AND blob = ?4
                         AND state = 'sealing' AND wrapped IS NULL",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            context.tenant.as_bytes(),
                            context.file.as_bytes(),
                            u64::from(context.version),
                            seal.blob.as_str(),
                            wrapped.as_ref(),
                            u32::from(wrapped.kek_version())
                        ])
                    })
                    .map_err(CatalogError::from)?;
                if changed == 0 {
                    return Err(CatalogError::SealNotInProgress {
                        version: context.version,
                    }
                    .into());
                }
            }
            Ok(())
        })
    }

    /// The blocking form of [`Catalog::commit_seals`]: one transaction,
    /// one durable commit.
    ///
    /// # Errors
    /// As for [`Catalog::commit_seal`].
    pub fn commit_seals(
        &self,
        seals: &[(&SealTicket, SealedBlob)],
    ) -> Result<Vec<FileRecord>, Error> {
        let mut db = self.db();
        let tx = db.transaction().map_err(CatalogError::from)?;
        let sealed_at = now();
        let mut records = Vec::with_capacity(seals.len());
        for (seal, sealed) in seals {
            let context = &seal.context;
            let changed = tx
                .prepare_cached(
                    "UPDATE catalog_versions
                     SET state = 'sealed', plaintext_len = ?5, blob_len = ?6, segment_size = ?7,
                         format = ?8, sealed_at = ?9, tag = ?10, blob_sha256 = ?11
                     WHERE tenant = ?1 AND file = ?2 AND version = ?3 AND blob = ?4
                     AND state = 'sealing' AND wrapped IS NOT NULL",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        context.tenant.as_bytes(),
                        context.file.as_bytes(),
                        u64::from(context.version),
                        seal.blob.as_str(),
                        sealed.plaintext_len,
                        sealed.blob_len,
                        sealed.segment_size,
                        sealed.format,
                        sealed_at,
                        sealed.tag.as_bytes(),
                        sealed.blob_sha256.as_ref().map(|d| d.as_bytes().as_slice())
                    ])
                })
                .map_err(CatalogError::from)?;
            if changed == 0 {
                return Err(CatalogError::SealNotInProgress {
                    version: context.version,
                }
                .into());
            }
            let row = tx
                .prepare_cached(&format!(
                    "SELECT {RECORD_COLUMNS} FROM catalog_versions v
                     JOIN catalog_files f ON f.file = v.file
                     WHERE v.tenant = ?1 AND v.file = ?2 AND v.version = ?3"
                ))
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            context.tenant.as_bytes(),
                            context.file.as_bytes(),
                            u64::from(context.version)
                        ],
                        record_row,
                    )
                })
                .map_err(CatalogError::from)?;
            records.push(read_record(row)?);
        }
        tx.commit().map_err(CatalogError::from)?;
        Ok(records)
    }

    /// The blocking form of [`Catalog::attach_key`].
    ///
    /// # Errors
    /// As for [`Catalog::attach_key`].
    pub fn attach_key(&self, seal: &SealTicket, wrapped: &WrappedFileKey) -> Result<(), Error> {
        self.attach_keys(&[(seal, wrapped)])
    }

    /// The blocking form of [`Catalog::commit_seal`].
    ///
    /// # Errors
    /// As for [`Catalog::commit_seal`].
    pub fn commit_seal(&self, seal: &SealTicket, sealed: &SealedBlob) -> Result<FileRecord, Error> {
        let mut records = self.commit_seals(&[(seal, *sealed)])?;
        records
            .pop()
            .ok_or_else(|| CatalogError::Corrupt("no record for a seal that was committed").into())
    }

    /// The blocking form of [`Catalog::abandon_seal`].
    ///
    /// # Errors
    /// As for [`Catalog::abandon_seal`].
    pub fn abandon_seal(&self, seal: &SealTicket) -> Result<(), Error> {
        let context = &seal.context;
        let mut db = self.db();
        let tx = db.transaction().map_err(CatalogError::from)?;
        let _ = tx
            .execute(
                "DELETE FROM catalog_versions
                 WHERE tenant = ?1 AND file = ?2 AND version = ?3 AND blob = ?4
                 AND state = 'sealing'",
                params![
                    context.tenant.as_bytes(),
                    context.file.as_bytes(),
                    u64::from(context.version),
                    seal.blob.as_str()
                ],
            )
            .map_err(CatalogError::from)?;
        // A name whose first seal failed leaves no trace.
        let _ = tx
            .execute(
                "DELETE FROM catalog_files WHERE file = ?1
                 AND NOT EXISTS (SELECT 1 FROM catalog_versions WHERE file = ?1)",
                params![context.file.as_bytes()],
            )
            .map_err(CatalogError::from)?;
        tx.commit().map_err(CatalogError::from)?;
        Ok(())
    }

    /// The blocking form of [`Catalog::seals_in_progress`].
    ///
    /// # Errors
    /// As for [`Catalog::seals_in_progress`].
    pub fn seals_in_progress(&self) -> Result<Vec<SealInProgress>, Error> {
        let db = self.db();
        let mut statement = db
            .prepare_cached(
                "SELECT f.tenant, f.name, f.file, v.version, v.blob, v.started_at
                 FROM catalog_versions v JOIN catalog_files f ON f.file = v.file
                 WHERE v.state = 'sealing' ORDER BY v.started_at, v.blob",
            )
            .map_err(CatalogError::from)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, u64>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, u64>(5)?,
                ))
            })
            .map_err(CatalogError::from)?;
        let mut seals = Vec::new();
        for row in rows {
            let (tenant, name, file, version, blob, started_at) =
                row.map_err(CatalogError::from)?;
            seals.push(SealInProgress {
                ticket: SealTicket {
                    context: FileContext::new(
                        tenant_id(&tenant)?,
                        file_id(&file)?,
                        file_version(version)?,
                    ),
                    name,
                    blob: blob_name(&blob)?,
                },
                started_at,
            });
        }
        Ok(seals)
    }

    /// The blocking form of [`Catalog::record`].
    ///
    /// # Errors
    /// As for [`Catalog::record`].
    pub fn record(
        &self,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<FileRecord, Error> {
        let version_number = version.map(u64::from);
        let row = self
            .db()
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM catalog_versions v
                 JOIN catalog_files f ON f.file = v.file
                 WHERE f.tenant = ?1 AND f.name = ?2 AND v.state = 'sealed'
                 AND (?3 IS NULL OR v.version = ?3)
                 ORDER BY v.version DESC LIMIT 1"
            ))
            .and_then(|mut s| {
                s.query_row(params![tenant.as_bytes(), name, version_number], record_row)
                    .optional()
            })
            .map_err(CatalogError::from)?;
        match (row, version) {
            (Some(row), _) => Ok(read_record(row)?),
            (None, None) => Err(CatalogError::UnknownFile {
                tenant,
                name: name.to_owned(),
            }
            .into()),
            (None, Some(version)) => Err(CatalogError::UnknownVersion {
                tenant,
                name: name.to_owned(),
                version,
            }
            .into()),
        }
    }

    /// The blocking form of [`Catalog::records`].
    ///
    /// # Errors
    /// As for [`Catalog::records`].
    pub fn records(&self, tenant: TenantId) -> Result<Vec<FileRecord>, Error> {
        self.query_records("f.tenant = ?1", &[&tenant.as_bytes().as_slice()])
    }

    /// The blocking form of [`Catalog::blob_names`].
    ///
    /// # Errors
    /// As for [`Catalog::blob_names`].
    pub fn blob_names(&self) -> Result<Vec<BlobName>, Error> {
        let db = self.db();
        let mut statement = db
            .prepare_cached("SELECT blob FROM catalog_versions ORDER BY blob")
            .map_err(CatalogError::from)?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(CatalogError::from)?;
        let mut names = Vec::new();
        for row in rows {
            names.push(blob_name(&row.map_err(CatalogError::from)?)?);
        }
        Ok(names)
    }
}

#[async_trait::async_trait]
impl Catalog for SqliteCatalog {
    async fn name_tenant(&self, name: &str, tenant: TenantId) -> Result<(), Error> {
        SqliteCatalog::name_tenant(self, name, tenant)
    }

    async fn unname_tenant(&self, name: &str) -> Result<(), Error> {
        SqliteCatalog::unname_tenant(self, name)
    }

    async fn tenant_named(&self, name: &str) -> Result<Option<TenantId>, Error> {
        SqliteCatalog::tenant_named(self, name)
    }

    async fn tenant_names(&self) -> Result<Vec<(String, TenantId)>, Error> {
        SqliteCatalog::tenant_names(self)
    }

    async fn tenant_name(&self, tenant: TenantId) -> Result<Option<String>, Error> {
        SqliteCatalog::tenant_name(self, tenant)
    }

    async fn begin_seal(
        &self,
        tenant: TenantId,
        name: &str,
        blob: &BlobName,
    ) -> Result<SealTicket, Error> {
        SqliteCatalog::begin_seal(self, tenant, name, blob)
    }

    async fn attach_key(&self, seal: &SealTicket, wrapped: &WrappedFileKey) -> Result<(), Error> {
        SqliteCatalog::attach_key(self, seal, wrapped)
    }

    async fn commit_seal(
        &self,
        seal: &SealTicket,
        sealed: &SealedBlob,
    ) -> Result<FileRecord, Error> {
        SqliteCatalog::commit_seal(self, seal, sealed)
    }

    async fn abandon_seal(&self, seal: &SealTicket) -> Result<(), Error> {
        SqliteCatalog::abandon_seal(self, seal)
    }

    async fn seals_in_progress(&self) -> Result<Vec<SealInProgress>, Error> {
        SqliteCatalog::seals_in_progress(self)
    }

    async fn record(
        &self,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<FileRecord, Error> {
        SqliteCatalog::record(self, tenant, name, version)
    }

    async fn records(&self, tenant: TenantId) -> Result<Vec<FileRecord>, Error> {
        SqliteCatalog::records(self, tenant)
    }

    async fn blob_names(&self) -> Result<Vec<BlobName>, Error> {
        SqliteCatalog::blob_names(self)
    }

    async fn begin_seals(
        &self,
        tenant: TenantId,
        seals: &[(String, BlobName)],
    ) -> Result<Vec<SealTicket>, Error> {
        SqliteCatalog::begin_seals(self, tenant, seals)
    }

    async fn attach_keys(&self, keys: &[(&SealTicket, &WrappedFileKey)]) -> Result<(), Error> {
        SqliteCatalog::attach_keys(self, keys)
    }

    async fn commit_seals(
        &self,
        seals: &[(&SealTicket, SealedBlob)],
    ) -> Result<Vec<FileRecord>, Error> {
        SqliteCatalog::commit_seals(self, seals)
    }
}

fn index_corrupt(error: CatalogError) -> atrest_tenant::Error {
    match error {
        CatalogError::Corrupt(what) => atrest_tenant::Error::Corrupt(what),
        CatalogError::Database { kind, source } => atrest_tenant::Error::Store { kind, source },
        other => atrest_tenant::Error::store(other.kind(), other),
    }
}

/// The [`WrappedKeyIndex`] calls, blocking: SQLite answers without an async
/// runtime.
impl SqliteCatalog {
    /// The blocking form of [`WrappedKeyIndex::older_than`].
    ///
    /// # Errors
    /// As for [`WrappedKeyIndex::older_than`].
    pub fn older_than(
        &self,
        tenant: TenantId,
        version: KeyVersion,
        limit: usize,
    ) -> Result<Vec<(FileContext, WrappedFileKey)>, atrest_tenant::Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let db = self.db();
        let mut statement = db.prepare_cached(
            "SELECT file, version, wrapped FROM catalog_versions
             WHERE tenant = ?1 AND tik_version < ?2 AND wrapped IS NOT NULL
             ORDER BY file, version LIMIT ?3",
        )?;
        let rows = statement.query_map(
            params![tenant.as_bytes(), u32::from(version), limit],
            |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, u64>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                ))
            },
        )?;
        let mut keys = Vec::new();
        for row in rows {
            let (file, file_version_number, wrapped) = row?;
            let context = FileContext::new(
                tenant,
                file_id(&file).map_err(index_corrupt)?,
                file_version(file_version_number).map_err(index_corrupt)?,
            );
            keys.push((context, wrapped_key(&wrapped).map_err(index_corrupt)?));
        }
        Ok(keys)
    }

    /// The blocking form of [`WrappedKeyIndex::count_older_than`].
    ///
    /// # Errors
    /// As for [`WrappedKeyIndex::count_older_than`].
    pub fn count_older_than(
        &self,
        tenant: TenantId,
        version: KeyVersion,
    ) -> Result<u64, atrest_tenant::Error> {
        Ok(self.db().query_row(
            "SELECT count(*) FROM catalog_versions
             WHERE tenant = ?1 AND tik_version < ?2 AND wrapped IS NOT NULL",
            params![tenant.as_bytes(), u32::from(version)],
            |row| row.get(0),
        )?)
    }

    /// The blocking form of [`WrappedKeyIndex::claim_retirement`].
    ///
    /// # Errors
    /// As for [`WrappedKeyIndex::claim_retirement`].
    pub fn claim_retirement(
        &self,
        tenant: TenantId,
        version: KeyVersion,
    ) -> Result<u64, atrest_tenant::Error> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let references: u64 = tx.query_row(
            "SELECT count(*) FROM catalog_versions
             WHERE tenant = ?1 AND (tik_version = ?2 OR wrapped IS NULL)",
            params![tenant.as_bytes(), u32::from(version)],
            |row| row.get(0),
        )?;
        if references == 0 {
            let _ = tx.execute(
                "INSERT OR IGNORE INTO catalog_retired_tiks (tenant, tik_version) VALUES (?1, ?2)",
                params![tenant.as_bytes(), u32::from(version)],
            )?;
        }
        tx.commit()?;
        Ok(references)
    }

    /// The blocking form of [`WrappedKeyIndex::replace`].
    ///
    /// # Errors
    /// As for [`WrappedKeyIndex::replace`].
    pub fn replace(&self, batch: &[Rewrapped]) -> Result<u64, atrest_tenant::Error> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let mut replaced = 0;
        {
            let mut update = tx.prepare_cached(
                // Never under a version claimed for retirement meanwhile: the
                // key would be lost with the version's wraps.
                "UPDATE catalog_versions SET wrapped = ?5, tik_version = ?6
                 WHERE tenant = ?1 AND file = ?2 AND version = ?3 AND wrapped = ?4
                 AND NOT EXISTS (SELECT 1 FROM catalog_retired_tiks
                                 WHERE tenant = ?1 AND tik_version = ?6)",
            )?;
            for entry in batch {
                let context = &entry.context;
                replaced += update.execute(params![
                    context.tenant.as_bytes(),
                    context.file.as_bytes(),
                    u64::from(context.version),
                    entry.old.as_ref(),
                    entry.new.as_ref(),
                    u32::from(entry.new.kek_version())
                ])? as u64;
            }
        }
        tx.commit()?;
        Ok(replaced)
    }
}

#[async_trait::async_trait]
impl WrappedKeyIndex for SqliteCatalog {
    async fn older_than(
        &self,
        tenant: TenantId,
        version: KeyVersion,
        limit: usize,
    ) -> Result<Vec<(FileContext, WrappedFileKey)>, atrest_tenant::Error> {
        SqliteCatalog::older_than(self, tenant, version, limit)
    }

    async fn count_older_than(
        &self,
        tenant: TenantId,
        version: KeyVersion,
    ) -> Result<u64, atrest_tenant::Error> {
        SqliteCatalog::count_older_than(self, tenant, version)
    }

    /// Counts sealed records and seals in progress under `version`, plus
    /// every seal of the tenant still choosing its key (it may be about to
    /// wrap under any version); with none, marks the version retired in the
    /// same transaction, after which [`Catalog::attach_key`] refuses keys
    /// under it.
    async fn claim_retirement(
        &self,
        tenant: TenantId,
        version: KeyVersion,
    ) -> Result<u64, atrest_tenant::Error> {
        SqliteCatalog::claim_retirement(self, tenant, version)
    }

    async fn replace(&self, batch: &[Rewrapped]) -> Result<u64, atrest_tenant::Error> {
        SqliteCatalog::replace(self, batch)
    }
}
