//! The catalog of file records in SQLite: [`SqliteCatalog`], its schema,
//! its connections and its reads; the seals' transactions are in `seals`,
//! the index of wrapped keys in `index`.

mod index;
mod seals;

use std::path::Path;

use atrest::catalog::stored::{self, StoredRecord};
use atrest::catalog::{SealInProgress, SealTicket, SealedBlob};
use atrest::tenant::RecordTag;
use atrest::{BlobName, Catalog, CatalogError, Error, FileRecord, TenantName, check_name};
use atrest_filekey::{FileContext, FileVersion, TenantId, WrappedFileKey};
use rusqlite::{Connection, OptionalExtension as _, Row, params};

use self::seals::{abandon_seal, attach_keys, begin_seals, commit_seals};
use crate::db::{self, Failure, Shared};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS catalog_tenants (
    name   TEXT PRIMARY KEY,
    tenant BLOB NOT NULL UNIQUE,
    tag    BLOB  -- binds the name to the tenant; NULL for an untagged name
);
CREATE TABLE IF NOT EXISTS catalog_files (
    tenant BLOB NOT NULL,
    name   TEXT NOT NULL,
    file   BLOB NOT NULL UNIQUE,
    -- The highest version ever given to the file, removed ones included:
    -- a number is never given twice.
    last_version INTEGER NOT NULL DEFAULT 0 CHECK (last_version >= 0),
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
    owner         TEXT,
    sealed_at     INTEGER,
    media_type    TEXT,
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

/// The columns a record is read from, in [`stored_record`]'s order.
const RECORD_COLUMNS: &str = "f.tenant, f.name, f.file, v.version, v.blob, v.sealed_at, v.wrapped,
     v.plaintext_len, v.blob_len, v.segment_size, v.format, v.tag, v.blob_sha256, v.media_type";

/// The catalog ([`Catalog`], and the
/// [`WrappedKeyIndex`](atrest_tenant::WrappedKeyIndex) it is) in one
/// SQLite database: the embedded default.
///
/// Opened with the same settings as the key store (write-ahead log,
/// `synchronous = FULL`, `secure_delete`, a busy timeout and write
/// transactions that lock when they begin), so several threads and
/// processes can share one database file. The steps that only lead up to a
/// seal's commit go through a second connection whose commits are flushed
/// with the next durable one (see [`Catalog::begin_seal`]). Each call runs
/// on the async runtime's blocking pool.
#[derive(Clone)]
pub struct SqliteCatalog {
    db: Shared<Connections>,
    /// What seals begun through this handle are marked with (see
    /// [`SqliteCatalog::owned_by`]).
    owner: Option<std::sync::Arc<str>>,
}

/// The catalog's connection to its database.
///
/// One connection for every statement: with two connections to one file,
/// each commit of one would make the other drop its whole page cache and
/// read the pages again. [`Connections::unflushed`] relaxes the
/// connection's `synchronous` setting for one transaction instead.
struct Connections {
    connection: Connection,
    /// Whether the connection's last [`Connections::unflushed`] could not
    /// set `synchronous = FULL` back: [`Connections::durable`] sets it
    /// before anything else runs.
    relaxed: bool,
}

impl core::fmt::Debug for SqliteCatalog {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteCatalog").finish_non_exhaustive()
    }
}

fn stored_record(row: &Row<'_>) -> rusqlite::Result<StoredRecord> {
    Ok(StoredRecord {
        tenant: row.get(0)?,
        name: row.get(1)?,
        file: row.get(2)?,
        version: row.get(3)?,
        blob: row.get(4)?,
        sealed_at: row.get(5)?,
        wrapped_key: row.get(6)?,
        plaintext_len: row.get(7)?,
        blob_len: row.get(8)?,
        segment_size: row.get(9)?,
        format: row.get(10)?,
        tag: row.get(11)?,
        blob_sha256: row.get(12)?,
        media_type: row.get(13)?,
    })
}

/// Refuses a catalog of a version before tagged records, and gives one
/// made before blob digests, seal owners or media types their columns
/// (empty for the records already there, whose tags cover neither), and
/// one made before files kept their last version number that number (the
/// newest of the versions they have). Runs inside the write transaction
/// that applies the schema, so several processes opening one old catalog
/// at once migrate it once.
fn migrate(connection: &Connection) -> Result<(), Failure> {
    let has = |column: &str| {
        connection
            .prepare(&format!("SELECT {column} FROM catalog_versions LIMIT 0"))
            .is_ok()
    };
    if !has("tag") {
        return Err(Failure::Catalog(CatalogError::Corrupt(
            "schema: the catalog was made by an earlier version (records without tags)",
        )));
    }
    if !has("blob_sha256") {
        let _ = connection.execute(
            "ALTER TABLE catalog_versions ADD COLUMN blob_sha256 BLOB",
            [],
        )?;
    }
    if !has("owner") {
        let _ = connection.execute("ALTER TABLE catalog_versions ADD COLUMN owner TEXT", [])?;
    }
    if connection
        .prepare("SELECT tag FROM catalog_tenants LIMIT 0")
        .is_err()
    {
        let _ = connection.execute("ALTER TABLE catalog_tenants ADD COLUMN tag BLOB", [])?;
    }
    if !has("media_type") {
        let _ = connection.execute(
            "ALTER TABLE catalog_versions ADD COLUMN media_type TEXT",
            [],
        )?;
    }
    if connection
        .prepare("SELECT last_version FROM catalog_files LIMIT 0")
        .is_err()
    {
        // The versions a file has now are the most that is known of those
        // it ever had.
        connection.execute_batch(
            "ALTER TABLE catalog_files ADD COLUMN last_version INTEGER NOT NULL DEFAULT 0
                 CHECK (last_version >= 0);
             UPDATE catalog_files SET last_version = coalesce(
                 (SELECT max(version) FROM catalog_versions v WHERE v.file = catalog_files.file),
                 0);",
        )?;
    }
    Ok(())
}

fn connect(path: &Path) -> Result<Connection, Failure> {
    let connection = db::open(path, SCHEMA, migrate)?;
    // Room for every statement the catalog prepares, so none is compiled
    // again for want of space.
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

impl SqliteCatalog {
    /// Opens (creating if needed) the catalog database at `path` (a file,
    /// or `:memory:`).
    ///
    /// # Errors
    /// [`CatalogError::Database`] if it cannot be opened;
    /// [`CatalogError::Corrupt`] for a catalog made by a version before
    /// record tags, and for a database holding objects the schema does not
    /// create.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let owned = path.to_owned();
        let connections = atrest_core::blocking::run(move || {
            Ok(Connections {
                connection: connect(&owned)?,
                relaxed: false,
            })
        })
        .await
        .map_err(Failure::into_catalog)?;
        Ok(Self {
            db: Shared::new(connections, path),
            owner: None,
        })
    }

    /// Marks every seal begun through this handle (and its clones) with
    /// `owner`, which [`Catalog::seals_in_progress`] reports: who to ask
    /// whether the seal is still running (a lease, say).
    #[must_use]
    pub fn owned_by(mut self, owner: &str) -> Self {
        self.owner = Some(owner.into());
        self
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connections) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Error> {
        self.db.run(work).await.map_err(Failure::into_catalog)
    }

    /// As [`SqliteCatalog::run`], for work that grows with the catalog:
    /// on the blocking pool.
    async fn scan<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connections) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Error> {
        self.db.run_scan(work).await.map_err(Failure::into_catalog)
    }
}

fn query_records(
    db: &Connection,
    condition: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<FileRecord>, Failure> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM catalog_versions v
         JOIN catalog_files f ON f.file = v.file
         WHERE v.state = 'sealed' AND {condition}
         ORDER BY f.name, v.version"
    ))?;
    let rows = statement.query_map(params, stored_record)?;
    let mut records = Vec::new();
    for row in rows {
        records.push(row?.decode()?);
    }
    Ok(records)
}

fn name_tenant(
    db: &Connection,
    name: &str,
    tenant: TenantId,
    tag: &RecordTag,
) -> Result<(), Failure> {
    check_name("tenant name", name)?;
    let inserted = db.execute(
        "INSERT INTO catalog_tenants (name, tenant, tag) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        params![name, tenant.as_bytes(), tag.as_bytes()],
    )?;
    if inserted == 0 {
        return Err(Failure::Catalog(CatalogError::TenantNameTaken {
            name: name.to_owned(),
        }));
    }
    Ok(())
}

/// A `catalog_tenants` row: name, tenant, tag.
fn tenant_name_of(row: &Row<'_>) -> rusqlite::Result<(String, Vec<u8>, Option<Vec<u8>>)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn decode_tenant_name(
    (name, tenant, tag): (String, Vec<u8>, Option<Vec<u8>>),
) -> Result<TenantName, Failure> {
    Ok(TenantName {
        name,
        tenant: stored::tenant_id(&tenant)?,
        tag: tag
            .map(|tag| {
                RecordTag::from_slice(&tag)
                    .ok_or(Failure::Catalog(CatalogError::Corrupt("tenant name tag")))
            })
            .transpose()?,
    })
}

fn tenant_named(db: &Connection, name: &str) -> Result<Option<TenantName>, Failure> {
    db.prepare_cached("SELECT name, tenant, tag FROM catalog_tenants WHERE name = ?1")?
        .query_row(params![name], tenant_name_of)
        .optional()?
        .map(decode_tenant_name)
        .transpose()
}

fn tenant_names(db: &Connection) -> Result<Vec<TenantName>, Failure> {
    let mut statement =
        db.prepare_cached("SELECT name, tenant, tag FROM catalog_tenants ORDER BY name")?;
    let rows = statement.query_map([], tenant_name_of)?;
    let mut names = Vec::new();
    for row in rows {
        names.push(decode_tenant_name(row?)?);
    }
    Ok(names)
}

fn tenant_name(db: &Connection, tenant: TenantId) -> Result<Option<TenantName>, Failure> {
    db.prepare_cached("SELECT name, tenant, tag FROM catalog_tenants WHERE tenant = ?1")?
        .query_row(params![tenant.as_bytes()], tenant_name_of)
        .optional()?
        .map(decode_tenant_name)
        .transpose()
}

fn seals_in_progress(db: &Connection) -> Result<Vec<SealInProgress>, Failure> {
    let mut statement = db.prepare_cached(
        "SELECT f.tenant, f.name, f.file, v.version, v.blob, v.started_at, v.owner
         FROM catalog_versions v JOIN catalog_files f ON f.file = v.file
         WHERE v.state = 'sealing' ORDER BY v.started_at, v.blob",
    )?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, Vec<u8>>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, Vec<u8>>(2)?,
            row.get::<_, i64>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, i64>(5)?,
            row.get::<_, Option<String>>(6)?,
        ))
    })?;
    let mut seals = Vec::new();
    for row in rows {
        let (tenant, name, file, version, blob, started_at, owner) = row?;
        seals.push(SealInProgress {
            ticket: SealTicket {
                context: FileContext::new(
                    stored::tenant_id(&tenant)?,
                    stored::file_id(&file)?,
                    stored::file_version(version)?,
                ),
                name,
                blob: stored::blob_name(&blob)?,
            },
            started_at: u64::try_from(started_at)
                .map_err(|_| CatalogError::Corrupt("seal start time"))?,
            owner,
        });
    }
    Ok(seals)
}

fn record(
    db: &Connection,
    tenant: TenantId,
    name: &str,
    version: Option<FileVersion>,
) -> Result<FileRecord, Failure> {
    let row = db
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM catalog_versions v
             JOIN catalog_files f ON f.file = v.file
             WHERE f.tenant = ?1 AND f.name = ?2 AND v.state = 'sealed'
             AND (?3 IS NULL OR v.version = ?3)
             ORDER BY v.version DESC LIMIT 1"
        ))?
        .query_row(
            params![tenant.as_bytes(), name, version.map(u64::from)],
            stored_record,
        )
        .optional()?;
    match (row, version) {
        (Some(row), _) => Ok(row.decode()?),
        (None, None) => Err(Failure::Catalog(CatalogError::UnknownFile {
            tenant,
            name: name.to_owned(),
        })),
        (None, Some(version)) => Err(Failure::Catalog(CatalogError::UnknownVersion {
            tenant,
            name: name.to_owned(),
            version,
        })),
    }
}

fn blob_names(db: &Connection) -> Result<Vec<BlobName>, Failure> {
    let mut statement = db.prepare_cached("SELECT blob FROM catalog_versions ORDER BY blob")?;
    let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
    let mut names = Vec::new();
    for row in rows {
        names.push(stored::blob_name(&row?)?);
    }
    Ok(names)
}

#[async_trait::async_trait]
impl Catalog for SqliteCatalog {
    async fn name_tenant(
        &self,
        name: &str,
        tenant: TenantId,
        tag: &RecordTag,
    ) -> Result<(), Error> {
        let (name, tag) = (name.to_owned(), *tag);
        self.run(move |db| name_tenant(db.durable()?, &name, tenant, &tag))
            .await
    }

    async fn tag_tenant_name(
        &self,
        name: &str,
        tenant: TenantId,
        tag: &RecordTag,
    ) -> Result<bool, Error> {
        let (name, tag) = (name.to_owned(), *tag);
        self.run(move |db| {
            Ok(db.durable()?.execute(
                "UPDATE catalog_tenants SET tag = ?3 WHERE name = ?1 AND tenant = ?2 AND tag IS NULL",
                params![name, tenant.as_bytes(), tag.as_bytes()],
            )? == 1)
        })
        .await
    }

    async fn unname_tenant(&self, name: &str) -> Result<(), Error> {
        let name = name.to_owned();
        self.run(move |db| {
            let _ = db
                .durable()?
                .execute("DELETE FROM catalog_tenants WHERE name = ?1", params![name])?;
            Ok(())
        })
        .await
    }

    async fn remove_versions(
        &self,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<Vec<FileRecord>, Error> {
        let name = name.to_owned();
        self.scan(move |db| {
            let tx = db.durable()?.transaction()?;
            let id = tenant.as_bytes().as_slice();
            let number = version.map(u64::from);
            let removed: Vec<FileRecord> = {
                let mut statement = tx.prepare(&format!(
                    "SELECT {RECORD_COLUMNS} FROM catalog_versions v
                     JOIN catalog_files f ON f.file = v.file
                     WHERE f.tenant = ?1 AND f.name = ?2 AND v.state = 'sealed'
                     AND (?3 IS NULL OR v.version = ?3)
                     ORDER BY v.version"
                ))?;
                let rows = statement.query_map(params![id, name, number], stored_record)?;
                let mut removed = Vec::new();
                for row in rows {
                    removed.push(row?.decode()?);
                }
                removed
            };
            if removed.is_empty() {
                return Err(Failure::Catalog(match version {
                    None => CatalogError::UnknownFile { tenant, name },
                    Some(version) => CatalogError::UnknownVersion {
                        tenant,
                        name,
                        version,
                    },
                }));
            }
            for record in &removed {
                let _ = tx.execute(
                    "DELETE FROM catalog_versions
                     WHERE tenant = ?1 AND file = ?2 AND version = ?3 AND state = 'sealed'",
                    params![id, record.file.as_bytes(), u64::from(record.version)],
                )?;
            }
            let _ = tx.execute(
                "DELETE FROM catalog_files WHERE tenant = ?1 AND name = ?2
                 AND NOT EXISTS (SELECT 1 FROM catalog_versions v WHERE v.file = catalog_files.file)",
                params![id, name],
            )?;
            tx.commit()?;
            Ok(removed)
        })
        .await
    }

    async fn forget_tenant(&self, tenant: TenantId) -> Result<u64, Error> {
        self.scan(move |db| {
            let tx = db.durable()?.transaction()?;
            let id = tenant.as_bytes().as_slice();
            let versions = tx.execute(
                "DELETE FROM catalog_versions WHERE tenant = ?1",
                params![id],
            )?;
            let _ = tx.execute("DELETE FROM catalog_files WHERE tenant = ?1", params![id])?;
            let _ = tx.execute("DELETE FROM catalog_tenants WHERE tenant = ?1", params![id])?;
            tx.commit()?;
            Ok(versions as u64)
        })
        .await
    }

    async fn tenant_named(&self, name: &str) -> Result<Option<TenantName>, Error> {
        let name = name.to_owned();
        self.run(move |db| tenant_named(db.durable()?, &name)).await
    }

    async fn tenant_names(&self) -> Result<Vec<TenantName>, Error> {
        self.scan(|db| tenant_names(db.durable()?)).await
    }

    async fn tenant_name(&self, tenant: TenantId) -> Result<Option<TenantName>, Error> {
        self.run(move |db| tenant_name(db.durable()?, tenant)).await
    }

    async fn begin_seal(
        &self,
        tenant: TenantId,
        name: &str,
        blob: &BlobName,
    ) -> Result<SealTicket, Error> {
        let seals = vec![(name.to_owned(), blob.clone())];
        let owner = self.owner.clone();
        let mut tickets = self
            .run(move |db| begin_seals(db, tenant, &seals, owner.as_deref()))
            .await?;
        tickets
            .pop()
            .ok_or_else(|| CatalogError::Contract("no ticket for a seal that was begun").into())
    }

    async fn attach_key(&self, seal: &SealTicket, wrapped: &WrappedFileKey) -> Result<(), Error> {
        let keys = vec![(seal.clone(), *wrapped)];
        self.run(move |db| attach_keys(db, &keys)).await
    }

    async fn commit_seal(
        &self,
        seal: &SealTicket,
        sealed: &SealedBlob,
    ) -> Result<FileRecord, Error> {
        let seals = vec![(seal.clone(), sealed.clone())];
        let mut records = self
            .run(move |db| commit_seals(db.durable()?, &seals))
            .await?;
        records
            .pop()
            .ok_or_else(|| CatalogError::Contract("no record for a seal that was committed").into())
    }

    async fn abandon_seal(&self, seal: &SealTicket) -> Result<(), Error> {
        let seal = seal.clone();
        self.run(move |db| abandon_seal(db.durable()?, &seal)).await
    }

    async fn seals_in_progress(&self) -> Result<Vec<SealInProgress>, Error> {
        self.scan(|db| seals_in_progress(db.durable()?)).await
    }

    async fn record(
        &self,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<FileRecord, Error> {
        let name = name.to_owned();
        self.run(move |db| record(db.durable()?, tenant, &name, version))
            .await
    }

    async fn records(&self, tenant: TenantId) -> Result<Vec<FileRecord>, Error> {
        self.scan(move |db| {
            query_records(
                db.durable()?,
                "f.tenant = ?1",
                &[&tenant.as_bytes().as_slice()],
            )
        })
        .await
    }

    async fn blob_names(&self) -> Result<Vec<BlobName>, Error> {
        self.scan(|db| blob_names(db.durable()?)).await
    }

    async fn begin_seals(
        &self,
        tenant: TenantId,
        seals: &[(String, BlobName)],
    ) -> Result<Vec<SealTicket>, Error> {
        let seals = seals.to_vec();
        let owner = self.owner.clone();
        self.run(move |db| begin_seals(db, tenant, &seals, owner.as_deref()))
            .await
    }

    async fn attach_keys(&self, keys: &[(&SealTicket, &WrappedFileKey)]) -> Result<(), Error> {
        let keys: Vec<_> = keys
            .iter()
            .map(|(seal, wrapped)| ((*seal).clone(), **wrapped))
            .collect();
        self.run(move |db| attach_keys(db, &keys)).await
    }

    async fn commit_seals(
        &self,
        seals: &[(&SealTicket, SealedBlob)],
    ) -> Result<Vec<FileRecord>, Error> {
        let seals: Vec<_> = seals
            .iter()
            .map(|(seal, sealed)| ((*seal).clone(), sealed.clone()))
            .collect();
        self.run(move |db| commit_seals(db.durable()?, &seals))
            .await
    }
}
