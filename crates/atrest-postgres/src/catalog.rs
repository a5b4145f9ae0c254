//! The catalog of file records in PostgreSQL: [`PgCatalog`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use atrest::catalog::stored::{self, StoredRecord};
use atrest::catalog::{SealInProgress, SealTicket, SealedBlob};
use atrest::{BlobName, Catalog, CatalogError, Error, FileRecord, check_name};
use atrest_filekey::{
    FileContext, FileId, FileVersion, KeyVersion, OsRng, TenantId, WrappedFileKey,
};
use atrest_tenant::{Rewrapped, WrappedKeyIndex};
use tokio_postgres::{Row, Transaction};

use crate::db::{BoxFuture, Failure, Mode, PgError, Postgres, Schema};
use crate::keys::store_error;

/// The catalog's tables, as `atrest_sqlite::SqliteCatalog` has them. Names and
/// blob names compare byte by byte (`COLLATE "C"`), as in SQLite, whatever
/// the database's locale.
pub(crate) const SCHEMA: Schema = Schema {
    component: "catalog",
    migrations: &[
        r#"
CREATE TABLE atrest_catalog_tenants (
    name   text  COLLATE "C" PRIMARY KEY,
    tenant bytea NOT NULL UNIQUE
);
CREATE TABLE atrest_catalog_files (
    tenant bytea NOT NULL,
    name   text  COLLATE "C" NOT NULL,
    file   bytea NOT NULL UNIQUE,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE atrest_catalog_versions (
    tenant        bytea    NOT NULL,
    file          bytea    NOT NULL REFERENCES atrest_catalog_files (file),
    version       bigint   NOT NULL CHECK (version > 0),
    state         text     NOT NULL CHECK (state IN ('sealing', 'sealed')),
    blob          text     COLLATE "C" NOT NULL UNIQUE,
    tik_version   bigint,
    wrapped       bytea,
    plaintext_len bigint   CHECK (plaintext_len >= 0),
    blob_len      bigint   CHECK (blob_len >= 0),
    segment_size  bigint   CHECK (segment_size >= 0),
    format        smallint CHECK (format >= 0),
    tag           bytea,
    started_at    bigint   NOT NULL,
    sealed_at     bigint,
    PRIMARY KEY (tenant, file, version),
    CHECK (state = 'sealing' OR (wrapped IS NOT NULL AND sealed_at IS NOT NULL AND tag IS NOT NULL))
);
CREATE INDEX atrest_catalog_versions_by_tik ON atrest_catalog_versions (tenant, tik_version);
CREATE TABLE atrest_catalog_retired_tiks (
    tenant      bytea  NOT NULL,
    tik_version bigint NOT NULL,
    PRIMARY KEY (tenant, tik_version)
);
"#,
        // 2: the SHA-256 digest of each blob, so copies are checked and
        // repaired without keys (empty for records committed before).
        "ALTER TABLE atrest_catalog_versions ADD COLUMN blob_sha256 bytea
         CHECK (blob_sha256 IS NULL OR octet_length(blob_sha256) = 32);",
        // 3: a file's versions by file id (the next version number, the
        // joins from a name to its versions and the foreign key's checks).
        "CREATE INDEX atrest_catalog_versions_by_file ON atrest_catalog_versions (file, version);",
    ],
    tables: &[
        "atrest_catalog_tenants",
        "atrest_catalog_files",
        "atrest_catalog_versions",
        "atrest_catalog_retired_tiks",
    ],
};

/// The columns a record is read from, in [`read_record`]'s order.
const RECORD_COLUMNS: &str = "f.tenant, f.name, f.file, v.version, v.blob, v.sealed_at, v.wrapped,
     v.plaintext_len, v.blob_len, v.segment_size, v.format, v.tag, v.blob_sha256";

/// The catalog ([`Catalog`], and the [`WrappedKeyIndex`] it is) in
/// PostgreSQL, for a service whose instances share one database: the same
/// tables, transactions and answers as `atrest_sqlite::SqliteCatalog`.
///
/// Every changing method is one serializable transaction, run again when it
/// loses a race to another instance's: two seals of one name get two
/// versions, a TIK version is claimed for retirement only if no key is or
/// can still be attached under it, and a re-wrap replaces a key only if it
/// is still the one read.
///
/// Database failures are [`CatalogError::Database`] whose `kind` is the
/// [`PgError::kind`] of its source (the [`WrappedKeyIndex`] methods report
/// them as [`atrest_tenant::Error::Store`], or
/// [`atrest_tenant::Error::Conflict`] for a race still lost after the
/// retries).
#[derive(Debug, Clone)]
pub struct PgCatalog {
    db: Postgres,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn database(error: PgError) -> Error {
    CatalogError::Database {
        kind: error.kind(),
        source: Box::new(error),
    }
    .into()
}

fn corrupt(what: &'static str) -> Failure<Error> {
    Failure::Stop(CatalogError::Corrupt(what).into())
}

fn stop(error: impl Into<Error>) -> Failure<Error> {
    Failure::Stop(error.into())
}

fn tenant_id(bytes: &[u8]) -> Result<TenantId, Failure<Error>> {
    stored::tenant_id(bytes).map_err(stop)
}

fn file_id(bytes: &[u8]) -> Result<FileId, Failure<Error>> {
    stored::file_id(bytes).map_err(stop)
}

fn file_version(value: i64) -> Result<FileVersion, Failure<Error>> {
    stored::file_version(value).map_err(stop)
}

fn blob_name(text: &str) -> Result<BlobName, Failure<Error>> {
    stored::blob_name(text).map_err(stop)
}

fn wrapped_key(bytes: &[u8]) -> Result<WrappedFileKey, Failure<Error>> {
    stored::wrapped_key(bytes).map_err(stop)
}

fn unsigned<T: TryFrom<i64>>(value: i64, what: &'static str) -> Result<T, Failure<Error>> {
    T::try_from(value).map_err(|_| corrupt(what))
}

/// A value for a `bigint` column.
fn signed(value: u64, what: &'static str) -> Result<i64, Failure<Error>> {
    i64::try_from(value).map_err(|_| Failure::Db(PgError::out_of_range(what)))
}

fn number(version: FileVersion) -> Result<i64, Failure<Error>> {
    signed(u64::from(version), "file version out of range")
}

fn key_bytes(key: &WrappedFileKey) -> &[u8] {
    key.as_ref()
}

fn tik_number(version: KeyVersion) -> i64 {
    i64::from(u32::from(version))
}

fn read_record(row: &Row) -> Result<FileRecord, Failure<Error>> {
    StoredRecord {
        tenant: row.try_get(0)?,
        name: row.try_get(1)?,
        file: row.try_get(2)?,
        version: row.try_get(3)?,
        blob: row.try_get(4)?,
        sealed_at: row.try_get(5)?,
        wrapped_key: row.try_get(6)?,
        plaintext_len: row.try_get(7)?,
        blob_len: row.try_get(8)?,
        segment_size: row.try_get(9)?,
        format: i64::from(row.try_get::<_, i16>(10)?),
        tag: row.try_get(11)?,
        blob_sha256: row.try_get(12)?,
    }
    .decode()
    .map_err(stop)
}

impl PgCatalog {
    /// The catalog in the database `db` connects to; creates or migrates
    /// its tables first.
    ///
    /// # Errors
    /// [`CatalogError::Database`]: [`atrest::ErrorKind::Unavailable`] if
    /// the server cannot be reached, [`atrest::ErrorKind::Usage`] if the
    /// database was migrated by a newer version
    /// ([`PgError::is_newer_schema`]), [`atrest::ErrorKind::Integrity`] if
    /// a catalog table carries a trigger or a rule.
    pub async fn open(db: &Postgres) -> Result<Self, Error> {
        db.migrate(&SCHEMA).await.map_err(database)?;
        Ok(Self { db: db.clone() })
    }

    async fn run<T, F>(&self, mode: Mode, body: F) -> Result<T, Error>
    where
        F: for<'t> Fn(&'t Transaction<'t>) -> BoxFuture<'t, Result<T, Failure<Error>>>,
    {
        self.db
            .transaction(mode, body)
            .await
            .map_err(|failure| match failure {
                Failure::Db(error) => database(error),
                Failure::Stop(error) => error,
            })
    }

    /// As `run`, for the [`WrappedKeyIndex`] methods.
    async fn run_index<T, F>(&self, mode: Mode, body: F) -> Result<T, atrest_tenant::Error>
    where
        F: for<'t> Fn(&'t Transaction<'t>) -> BoxFuture<'t, Result<T, Failure<Error>>>,
    {
        self.db
            .transaction(mode, body)
            .await
            .map_err(|failure| match failure {
                Failure::Db(error) => store_error(error),
                Failure::Stop(Error::Catalog(CatalogError::Corrupt(what))) => {
                    atrest_tenant::Error::Corrupt(what)
                }
                Failure::Stop(Error::Keys(error)) => error,
                Failure::Stop(other) => atrest_tenant::Error::store(other.kind(), other),
            })
    }

    async fn query_records(&self, tenant: TenantId) -> Result<Vec<FileRecord>, Error> {
        self.run(Mode::Read, move |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        &format!(
                            "SELECT {RECORD_COLUMNS} FROM atrest_catalog_versions v
                             JOIN atrest_catalog_files f ON f.file = v.file
                             WHERE v.state = 'sealed' AND f.tenant = $1
                             ORDER BY f.name, v.version"
                        ),
                        &[&tenant.as_bytes().as_slice()],
                    )
                    .await?;
                rows.iter().map(read_record).collect()
            })
        })
        .await
    }
}

/// Lets this transaction's commit return before its WAL record is flushed
/// (`synchronous_commit = off`, for this transaction only): the steps that
/// lead up to a seal's commit, which flushes them with it, as PostgreSQL
/// flushes its WAL in order. A crash of the server before then loses only
/// rows of seals never committed (see [`Catalog::begin_seal`]).
async fn flushed_with_the_commit(tx: &Transaction<'_>) -> Result<(), Failure<Error>> {
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    Ok(())
}

async fn begin_in(
    tx: &Transaction<'_>,
    tenant: TenantId,
    seals: &[(String, BlobName)],
) -> Result<Vec<SealTicket>, Failure<Error>> {
    flushed_with_the_commit(tx).await?;
    let id = tenant.as_bytes().as_slice();
    let started_at = signed(now(), "clock out of range")?;
    let mut tickets = Vec::with_capacity(seals.len());
    for (name, blob) in seals {
        let new_file = FileId::time_ordered_now(&mut OsRng)
            .map_err(|e| stop(atrest_tenant::Error::from(e)))?;
        let _ = tx
            .execute(
                "INSERT INTO atrest_catalog_files (tenant, name, file) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&id, name, &new_file.as_bytes().as_slice()],
            )
            .await?;
        let file: Vec<u8> = tx
            .query_one(
                "SELECT file FROM atrest_catalog_files WHERE tenant = $1 AND name = $2",
                &[&id, name],
            )
            .await?
            .try_get(0)?;
        let latest: i64 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM atrest_catalog_versions WHERE file = $1",
                &[&file],
            )
            .await?
            .try_get(0)?;
        let version = u64::try_from(latest)
            .ok()
            .and_then(|latest| latest.checked_add(1))
            .and_then(|next| FileVersion::try_from(next).ok())
            .ok_or_else(|| corrupt("file version"))?;
        let _ = tx
            .execute(
                "INSERT INTO atrest_catalog_versions (tenant, file, version, state, blob, started_at)
                 VALUES ($1, $2, $3, 'sealing', $4, $5)",
                &[&id, &file, &number(version)?, &blob.as_str(), &started_at],
            )
            .await
            .map_err(|e| PgError::lost_race(e, "atrest_catalog_versions_pkey"))?;
        tickets.push(SealTicket {
            context: FileContext::new(tenant, file_id(&file)?, version),
            name: name.clone(),
            blob: blob.clone(),
        });
    }
    Ok(tickets)
}

async fn attach_in(
    tx: &Transaction<'_>,
    keys: &[(SealTicket, WrappedFileKey)],
) -> Result<(), Failure<Error>> {
    flushed_with_the_commit(tx).await?;
    for (seal, wrapped) in keys {
        let context = &seal.context;
        let tenant = context.tenant.as_bytes().as_slice();
        let retired: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM atrest_catalog_retired_tiks
                 WHERE tenant = $1 AND tik_version = $2)",
                &[&tenant, &tik_number(wrapped.kek_version())],
            )
            .await?
            .try_get(0)?;
        if retired {
            return Err(stop(CatalogError::TikRetired {
                version: wrapped.kek_version(),
            }));
        }
        let changed = tx
            .execute(
                "UPDATE atrest_catalog_versions SET wrapped = $5, tik_version = $6
                 WHERE tenant = $1 AND file = $2 AND version = $3 AND blob = $4
                 AND state = 'sealing' AND wrapped IS NULL",
                &[
                    &tenant,
                    &context.file.as_bytes().as_slice(),
                    &number(context.version)?,
                    &seal.blob.as_str(),
                    &key_bytes(wrapped),
                    &tik_number(wrapped.kek_version()),
                ],
            )
            .await?;
        if changed == 0 {
            return Err(stop(CatalogError::SealNotInProgress {
                version: context.version,
            }));
        }
    }
    Ok(())
}

async fn commit_in(
    tx: &Transaction<'_>,
    seals: &[(SealTicket, SealedBlob)],
) -> Result<Vec<FileRecord>, Failure<Error>> {
    let sealed_at = signed(now(), "clock out of range")?;
    let mut records = Vec::with_capacity(seals.len());
    for (seal, sealed) in seals {
        let context = &seal.context;
        let tenant = context.tenant.as_bytes().as_slice();
        let file = context.file.as_bytes().as_slice();
        let version = number(context.version)?;
        let changed = tx
            .execute(
                "UPDATE atrest_catalog_versions
                 SET state = 'sealed', plaintext_len = $5, blob_len = $6, segment_size = $7,
                     format = $8, sealed_at = $9, tag = $10, blob_sha256 = $11
                 WHERE tenant = $1 AND file = $2 AND version = $3 AND blob = $4
                 AND state = 'sealing' AND wrapped IS NOT NULL",
                &[
                    &tenant,
                    &file,
                    &version,
                    &seal.blob.as_str(),
                    &signed(sealed.plaintext_len, "plaintext length out of range")?,
                    &signed(sealed.blob_len, "blob length out of range")?,
                    &i64::from(sealed.segment_size),
                    &i16::from(sealed.format),
                    &sealed_at,
                    &sealed.tag.as_bytes().as_slice(),
                    &sealed.blob_sha256.as_ref().map(|d| d.as_bytes().as_slice()),
                ],
            )
            .await?;
        if changed == 0 {
            return Err(stop(CatalogError::SealNotInProgress {
                version: context.version,
            }));
        }
        let row = tx
            .query_one(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM atrest_catalog_versions v
                     JOIN atrest_catalog_files f ON f.file = v.file
                     WHERE v.tenant = $1 AND v.file = $2 AND v.version = $3"
                ),
                &[&tenant, &file, &version],
            )
            .await?;
        records.push(read_record(&row)?);
    }
    Ok(records)
}

#[async_trait::async_trait]
impl Catalog for PgCatalog {
    async fn name_tenant(&self, name: &str, tenant: TenantId) -> Result<(), Error> {
        check_name("tenant name", name)?;
        let name = Arc::<str>::from(name);
        self.run(Mode::Write, move |tx| {
            let name = Arc::clone(&name);
            Box::pin(async move {
                let inserted = tx
                    .execute(
                        "INSERT INTO atrest_catalog_tenants (name, tenant) VALUES ($1, $2)
                         ON CONFLICT DO NOTHING",
                        &[&&*name, &tenant.as_bytes().as_slice()],
                    )
                    .await?;
                if inserted == 0 {
                    return Err(stop(CatalogError::TenantNameTaken {
                        name: name.to_string(),
                    }));
                }
                Ok(())
            })
        })
        .await
    }

    async fn unname_tenant(&self, name: &str) -> Result<(), Error> {
        let name = Arc::<str>::from(name);
        self.run(Mode::Write, move |tx| {
            let name = Arc::clone(&name);
            Box::pin(async move {
                let _ = tx
                    .execute(
                        "DELETE FROM atrest_catalog_tenants WHERE name = $1",
                        &[&&*name],
                    )
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn tenant_named(&self, name: &str) -> Result<Option<TenantId>, Error> {
        let name = Arc::<str>::from(name);
        self.run(Mode::Read, move |tx| {
            let name = Arc::clone(&name);
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        "SELECT tenant FROM atrest_catalog_tenants WHERE name = $1",
                        &[&&*name],
                    )
                    .await?;
                row.map(|row| tenant_id(&row.try_get::<_, Vec<u8>>(0)?))
                    .transpose()
            })
        })
        .await
    }

    async fn tenant_names(&self) -> Result<Vec<(String, TenantId)>, Error> {
        self.run(Mode::Read, |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT name, tenant FROM atrest_catalog_tenants ORDER BY name",
                        &[],
                    )
                    .await?;
                rows.iter()
                    .map(|row| Ok((row.try_get(0)?, tenant_id(&row.try_get::<_, Vec<u8>>(1)?)?)))
                    .collect()
            })
        })
        .await
    }

    async fn tenant_name(&self, tenant: TenantId) -> Result<Option<String>, Error> {
        self.run(Mode::Read, move |tx| {
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        "SELECT name FROM atrest_catalog_tenants WHERE tenant = $1",
                        &[&tenant.as_bytes().as_slice()],
                    )
                    .await?;
                Ok(row.map(|row| row.try_get(0)).transpose()?)
            })
        })
        .await
    }

    async fn begin_seal(
        &self,
        tenant: TenantId,
        name: &str,
        blob: &BlobName,
    ) -> Result<SealTicket, Error> {
        let mut tickets = self
            .begin_seals(tenant, &[(name.to_owned(), blob.clone())])
            .await?;
        tickets
            .pop()
            .ok_or_else(|| CatalogError::Corrupt("no ticket for a seal that was begun").into())
    }

    async fn attach_key(&self, seal: &SealTicket, wrapped: &WrappedFileKey) -> Result<(), Error> {
        self.attach_keys(&[(seal, wrapped)]).await
    }

    async fn commit_seal(
        &self,
        seal: &SealTicket,
        sealed: &SealedBlob,
    ) -> Result<FileRecord, Error> {
        let mut records = self.commit_seals(&[(seal, *sealed)]).await?;
        records
            .pop()
            .ok_or_else(|| CatalogError::Corrupt("no record for a seal that was committed").into())
    }

    async fn abandon_seal(&self, seal: &SealTicket) -> Result<(), Error> {
        let seal = Arc::new(seal.clone());
        self.run(Mode::Write, move |tx| {
            let seal = Arc::clone(&seal);
            Box::pin(async move {
                let context = &seal.context;
                let file = context.file.as_bytes().as_slice();
                let _ = tx
                    .execute(
                        "DELETE FROM atrest_catalog_versions
                         WHERE tenant = $1 AND file = $2 AND version = $3 AND blob = $4
                         AND state = 'sealing'",
                        &[
                            &context.tenant.as_bytes().as_slice(),
                            &file,
                            &number(context.version)?,
                            &seal.blob.as_str(),
                        ],
                    )
                    .await?;
                // A name whose first seal failed leaves no trace.
                let _ = tx
                    .execute(
                        "DELETE FROM atrest_catalog_files WHERE file = $1
                         AND NOT EXISTS (SELECT 1 FROM atrest_catalog_versions WHERE file = $1)",
                        &[&file],
                    )
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn seals_in_progress(&self) -> Result<Vec<SealInProgress>, Error> {
        self.run(Mode::Read, |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT f.tenant, f.name, f.file, v.version, v.blob, v.started_at
                         FROM atrest_catalog_versions v
                         JOIN atrest_catalog_files f ON f.file = v.file
                         WHERE v.state = 'sealing' ORDER BY v.started_at, v.blob",
                        &[],
                    )
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok(SealInProgress {
                            ticket: SealTicket {
                                context: FileContext::new(
                                    tenant_id(&row.try_get::<_, Vec<u8>>(0)?)?,
                                    file_id(&row.try_get::<_, Vec<u8>>(2)?)?,
                                    file_version(row.try_get(3)?)?,
                                ),
                                name: row.try_get(1)?,
                                blob: blob_name(row.try_get(4)?)?,
                            },
                            started_at: unsigned(row.try_get(5)?, "seal start time")?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn record(
        &self,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<FileRecord, Error> {
        let number = version.map(u64::from).map(i64::try_from);
        let number = match number {
            None => None,
            // No version beyond i64::MAX can be stored.
            Some(Err(_)) => Some(-1),
            Some(Ok(number)) => Some(number),
        };
        let shared_name = Arc::<str>::from(name);
        let row = self
            .run(Mode::Read, move |tx| {
                let name = Arc::clone(&shared_name);
                Box::pin(async move {
                    let row = tx
                        .query_opt(
                            &format!(
                                "SELECT {RECORD_COLUMNS} FROM atrest_catalog_versions v
                                 JOIN atrest_catalog_files f ON f.file = v.file
                                 WHERE f.tenant = $1 AND f.name = $2 AND v.state = 'sealed'
                                 AND ($3::bigint IS NULL OR v.version = $3)
                                 ORDER BY v.version DESC LIMIT 1"
                            ),
                            &[&tenant.as_bytes().as_slice(), &&*name, &number],
                        )
                        .await?;
                    row.as_ref().map(read_record).transpose()
                })
            })
            .await?;
        match (row, version) {
            (Some(record), _) => Ok(record),
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

    async fn records(&self, tenant: TenantId) -> Result<Vec<FileRecord>, Error> {
        self.query_records(tenant).await
    }

    async fn blob_names(&self) -> Result<Vec<BlobName>, Error> {
        self.run(Mode::Read, |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT blob FROM atrest_catalog_versions ORDER BY blob",
                        &[],
                    )
                    .await?;
                rows.iter().map(|row| blob_name(row.try_get(0)?)).collect()
            })
        })
        .await
    }

    /// One transaction.
    async fn begin_seals(
        &self,
        tenant: TenantId,
        seals: &[(String, BlobName)],
    ) -> Result<Vec<SealTicket>, Error> {
        for (name, _) in seals {
            check_name("file name", name)?;
        }
        let seals = Arc::new(seals.to_vec());
        self.run(Mode::Write, move |tx| {
            let seals = Arc::clone(&seals);
            Box::pin(async move { begin_in(tx, tenant, &seals).await })
        })
        .await
    }

    /// One transaction: every key is stored, or none.
    async fn attach_keys(&self, keys: &[(&SealTicket, &WrappedFileKey)]) -> Result<(), Error> {
        let keys: Arc<Vec<(SealTicket, WrappedFileKey)>> = Arc::new(
            keys.iter()
                .map(|(seal, wrapped)| ((*seal).clone(), **wrapped))
                .collect(),
        );
        self.run(Mode::Write, move |tx| {
            let keys = Arc::clone(&keys);
            Box::pin(async move { attach_in(tx, &keys).await })
        })
        .await
    }

    /// One transaction, one durable commit.
    async fn commit_seals(
        &self,
        seals: &[(&SealTicket, SealedBlob)],
    ) -> Result<Vec<FileRecord>, Error> {
        let seals: Arc<Vec<(SealTicket, SealedBlob)>> = Arc::new(
            seals
                .iter()
                .map(|(seal, sealed)| ((*seal).clone(), *sealed))
                .collect(),
        );
        self.run(Mode::Write, move |tx| {
            let seals = Arc::clone(&seals);
            Box::pin(async move { commit_in(tx, &seals).await })
        })
        .await
    }
}

#[async_trait::async_trait]
impl WrappedKeyIndex for PgCatalog {
    async fn older_than(
        &self,
        tenant: TenantId,
        version: KeyVersion,
        limit: usize,
    ) -> Result<Vec<(FileContext, WrappedFileKey)>, atrest_tenant::Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run_index(Mode::Read, move |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT file, version, wrapped FROM atrest_catalog_versions
                         WHERE tenant = $1 AND tik_version < $2 AND wrapped IS NOT NULL
                         ORDER BY file, version LIMIT $3",
                        &[&tenant.as_bytes().as_slice(), &tik_number(version), &limit],
                    )
                    .await?;
                rows.iter()
                    .map(|row| {
                        let context = FileContext::new(
                            tenant,
                            file_id(&row.try_get::<_, Vec<u8>>(0)?)?,
                            file_version(row.try_get(1)?)?,
                        );
                        Ok((context, wrapped_key(&row.try_get::<_, Vec<u8>>(2)?)?))
                    })
                    .collect()
            })
        })
        .await
    }

    async fn count_older_than(
        &self,
        tenant: TenantId,
        version: KeyVersion,
    ) -> Result<u64, atrest_tenant::Error> {
        self.run_index(Mode::Read, move |tx| {
            Box::pin(async move {
                let count: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM atrest_catalog_versions
                         WHERE tenant = $1 AND tik_version < $2 AND wrapped IS NOT NULL",
                        &[&tenant.as_bytes().as_slice(), &tik_number(version)],
                    )
                    .await?
                    .try_get(0)?;
                unsigned(count, "count")
            })
        })
        .await
    }

    /// Counts sealed records and seals in progress under `version`, plus
    /// every seal of the tenant still choosing its key (it may be about to
    /// wrap under any version); with none, marks the version retired in the
    /// same serializable transaction, after which [`Catalog::attach_key`]
    /// refuses keys under it.
    async fn claim_retirement(
        &self,
        tenant: TenantId,
        version: KeyVersion,
    ) -> Result<u64, atrest_tenant::Error> {
        self.run_index(Mode::Write, move |tx| {
            Box::pin(async move {
                let id = tenant.as_bytes().as_slice();
                let references: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM atrest_catalog_versions
                         WHERE tenant = $1 AND (tik_version = $2 OR wrapped IS NULL)",
                        &[&id, &tik_number(version)],
                    )
                    .await?
                    .try_get(0)?;
                if references == 0 {
                    let _ = tx
                        .execute(
                            "INSERT INTO atrest_catalog_retired_tiks (tenant, tik_version)
                             VALUES ($1, $2) ON CONFLICT DO NOTHING",
                            &[&id, &tik_number(version)],
                        )
                        .await?;
                }
                unsigned(references, "count")
            })
        })
        .await
    }

    async fn replace(&self, batch: &[Rewrapped]) -> Result<u64, atrest_tenant::Error> {
        let batch = Arc::new(batch.to_vec());
        self.run_index(Mode::Write, move |tx| {
            let batch = Arc::clone(&batch);
            Box::pin(async move {
                let update = tx
                    .prepare(
                        // Never under a version claimed for retirement
                        // meanwhile: the key would be lost with its wraps.
                        "UPDATE atrest_catalog_versions SET wrapped = $5, tik_version = $6
                         WHERE tenant = $1 AND file = $2 AND version = $3 AND wrapped = $4
                         AND NOT EXISTS (SELECT 1 FROM atrest_catalog_retired_tiks
                                         WHERE tenant = $1 AND tik_version = $6)",
                    )
                    .await?;
                let mut replaced = 0;
                for entry in batch.iter() {
                    let context = &entry.context;
                    replaced += tx
                        .execute(
                            &update,
                            &[
                                &context.tenant.as_bytes().as_slice(),
                                &context.file.as_bytes().as_slice(),
                                &number(context.version)?,
                                &key_bytes(&entry.old),
                                &key_bytes(&entry.new),
                                &tik_number(entry.new.kek_version()),
                            ],
                        )
                        .await?;
                }
                Ok(replaced)
            })
        })
        .await
    }
}
