//! The catalog of file records in PostgreSQL: [`PgCatalog`], its tables and
//! its reads; the seals' transactions are in `seals`, the index of wrapped
//! keys in `index`.

mod index;
mod seals;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use atrest::catalog::stored::{self, StoredRecord};
use atrest::catalog::{SealInProgress, SealTicket, SealedBlob};
use atrest::tenant::RecordTag;
use atrest::{BlobName, Catalog, CatalogError, Error, FileRecord, TenantName, check_name};
use atrest_filekey::{FileContext, FileId, FileVersion, KeyVersion, TenantId, WrappedFileKey};
use tokio_postgres::{Row, Transaction};

use crate::db::{BoxFuture, Failure, Mode, PgError, Postgres, Schema};

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
        // 4: who began a seal (a process's lease), so that one still
        // running is told from one whose process died.
        "ALTER TABLE atrest_catalog_versions ADD COLUMN owner text;",
        // 5: the media type a version was uploaded with (covered by its
        // record's tag when present).
        "ALTER TABLE atrest_catalog_versions ADD COLUMN media_type text;",
        // 6: the tag that binds each tenant name to its tenant (NULL for a
        // name given before).
        "ALTER TABLE atrest_catalog_tenants ADD COLUMN tag bytea;",
        // 7: the highest version ever given to each file, removed ones
        // included, so that a number is never given twice (for the files
        // there, the newest of the versions they have).
        "ALTER TABLE atrest_catalog_files ADD COLUMN last_version bigint NOT NULL DEFAULT 0
             CHECK (last_version >= 0);
         UPDATE atrest_catalog_files f SET last_version = coalesce(
             (SELECT max(v.version) FROM atrest_catalog_versions v WHERE v.file = f.file), 0);",
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
     v.plaintext_len, v.blob_len, v.segment_size, v.format, v.tag, v.blob_sha256, v.media_type";

/// The catalog ([`Catalog`], and the [`WrappedKeyIndex`](atrest_tenant::WrappedKeyIndex) it is) in
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
/// [`PgError::kind`] of its source (the [`WrappedKeyIndex`](atrest_tenant::WrappedKeyIndex) methods report
/// them as [`atrest_tenant::Error::Store`], or
/// [`atrest_tenant::Error::Conflict`] for a race still lost after the
/// retries).
#[derive(Debug, Clone)]
pub struct PgCatalog {
    db: Postgres,
    /// What seals begun through this handle are marked with (see
    /// [`PgCatalog::owned_by`]).
    owner: Option<Arc<str>>,
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

/// An `atrest_catalog_tenants` row (name, tenant, tag).
fn tenant_name_of(row: &Row) -> Result<TenantName, Failure<Error>> {
    let tag: Option<Vec<u8>> = row.try_get(2)?;
    Ok(TenantName {
        name: row.try_get(0)?,
        tenant: tenant_id(&row.try_get::<_, Vec<u8>>(1)?)?,
        tag: tag
            .map(|tag| RecordTag::from_slice(&tag).ok_or_else(|| corrupt("tenant name tag")))
            .transpose()?,
    })
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

fn check_tik_version(column: i64, wrapped: &WrappedFileKey) -> Result<(), Failure<Error>> {
    stored::check_tik_version(column, wrapped).map_err(stop)
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
        media_type: row.try_get(13)?,
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
        Ok(Self {
            db: db.clone(),
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

#[async_trait::async_trait]
impl Catalog for PgCatalog {
    async fn name_tenant(
        &self,
        name: &str,
        tenant: TenantId,
        tag: &RecordTag,
    ) -> Result<(), Error> {
        check_name("tenant name", name)?;
        let name = Arc::<str>::from(name);
        let tag = *tag;
        self.run(Mode::Write, move |tx| {
            let name = Arc::clone(&name);
            Box::pin(async move {
                let inserted = tx
                    .execute(
                        "INSERT INTO atrest_catalog_tenants (name, tenant, tag) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                        &[
                            &&*name,
                            &tenant.as_bytes().as_slice(),
                            &tag.as_bytes().as_slice(),
                        ],
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

    async fn tag_tenant_name(
        &self,
        name: &str,
        tenant: TenantId,
        tag: &RecordTag,
    ) -> Result<bool, Error> {
        let name = Arc::<str>::from(name);
        let tag = *tag;
        self.run(Mode::Write, move |tx| {
            let name = Arc::clone(&name);
            Box::pin(async move {
                let changed = tx
                    .execute(
                        "UPDATE atrest_catalog_tenants SET tag = $3
                         WHERE name = $1 AND tenant = $2 AND tag IS NULL",
                        &[
                            &&*name,
                            &tenant.as_bytes().as_slice(),
                            &tag.as_bytes().as_slice(),
                        ],
                    )
                    .await?;
                Ok(changed == 1)
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

    async fn tenant_named(&self, name: &str) -> Result<Option<TenantName>, Error> {
        let name = Arc::<str>::from(name);
        self.run(Mode::Read, move |tx| {
            let name = Arc::clone(&name);
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        "SELECT name, tenant, tag FROM atrest_catalog_tenants WHERE name = $1",
                        &[&&*name],
                    )
                    .await?;
                row.as_ref().map(tenant_name_of).transpose()
            })
        })
        .await
    }

    async fn tenant_names(&self) -> Result<Vec<TenantName>, Error> {
        self.run(Mode::Read, |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT name, tenant, tag FROM atrest_catalog_tenants ORDER BY name",
                        &[],
                    )
                    .await?;
                rows.iter().map(tenant_name_of).collect()
            })
        })
        .await
    }

    async fn tenant_name(&self, tenant: TenantId) -> Result<Option<TenantName>, Error> {
        self.run(Mode::Read, move |tx| {
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        "SELECT name, tenant, tag FROM atrest_catalog_tenants WHERE tenant = $1",
                        &[&tenant.as_bytes().as_slice()],
                    )
                    .await?;
                row.as_ref().map(tenant_name_of).transpose()
            })
        })
        .await
    }

    async fn remove_versions(
        &self,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<Vec<FileRecord>, Error> {
        let shared_name = Arc::<str>::from(name);
        let asked = version.map(number).transpose().map_err(|_| {
            Error::from(CatalogError::Corrupt("a version beyond what can be stored"))
        })?;
        self.run(Mode::Write, move |tx| {
            let name = Arc::clone(&shared_name);
            Box::pin(async move {
                let id = tenant.as_bytes().as_slice();
                let rows = tx
                    .query(
                        &format!(
                            "SELECT {RECORD_COLUMNS} FROM atrest_catalog_versions v
                             JOIN atrest_catalog_files f ON f.file = v.file
                             WHERE f.tenant = $1 AND f.name = $2 AND v.state = 'sealed'
                             AND ($3::bigint IS NULL OR v.version = $3)
                             ORDER BY v.version"
                        ),
                        &[&id, &&*name, &asked],
                    )
                    .await?;
                let removed = rows.iter().map(read_record).collect::<Result<Vec<_>, _>>()?;
                if removed.is_empty() {
                    return Err(stop(match version {
                        None => CatalogError::UnknownFile {
                            tenant,
                            name: name.to_string(),
                        },
                        Some(version) => CatalogError::UnknownVersion {
                            tenant,
                            name: name.to_string(),
                            version,
                        },
                    }));
                }
                for record in &removed {
                    let _ = tx
                        .execute(
                            "DELETE FROM atrest_catalog_versions
                             WHERE tenant = $1 AND file = $2 AND version = $3 AND state = 'sealed'",
                            &[
                                &id,
                                &record.file.as_bytes().as_slice(),
                                &number(record.version)?,
                            ],
                        )
                        .await?;
                }
                let _ = tx
                    .execute(
                        "DELETE FROM atrest_catalog_files f WHERE f.tenant = $1 AND f.name = $2
                         AND NOT EXISTS (SELECT 1 FROM atrest_catalog_versions v WHERE v.file = f.file)",
                        &[&id, &&*name],
                    )
                    .await?;
                Ok(removed)
            })
        })
        .await
    }

    async fn forget_tenant(&self, tenant: TenantId) -> Result<u64, Error> {
        self.run(Mode::Write, move |tx| {
            Box::pin(async move {
                let id = tenant.as_bytes().as_slice();
                let versions = tx
                    .execute(
                        "DELETE FROM atrest_catalog_versions WHERE tenant = $1",
                        &[&id],
                    )
                    .await?;
                let _ = tx
                    .execute("DELETE FROM atrest_catalog_files WHERE tenant = $1", &[&id])
                    .await?;
                let _ = tx
                    .execute(
                        "DELETE FROM atrest_catalog_tenants WHERE tenant = $1",
                        &[&id],
                    )
                    .await?;
                Ok(versions)
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
        let mut records = self.commit_seals(&[(seal, sealed.clone())]).await?;
        records
            .pop()
            .ok_or_else(|| CatalogError::Corrupt("no record for a seal that was committed").into())
    }

    async fn abandon_seal(&self, seal: &SealTicket) -> Result<(), Error> {
        self.abandon(seal).await
    }

    async fn seals_in_progress(&self) -> Result<Vec<SealInProgress>, Error> {
        self.run(Mode::Read, |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT f.tenant, f.name, f.file, v.version, v.blob, v.started_at,
                                v.owner
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
                            owner: row.try_get(6)?,
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
        self.begin(tenant, seals).await
    }

    /// One transaction: every key is stored, or none.
    async fn attach_keys(&self, keys: &[(&SealTicket, &WrappedFileKey)]) -> Result<(), Error> {
        self.attach(keys).await
    }

    /// One transaction, one durable commit.
    async fn commit_seals(
        &self,
        seals: &[(&SealTicket, SealedBlob)],
    ) -> Result<Vec<FileRecord>, Error> {
        self.commit(seals).await
    }
}
