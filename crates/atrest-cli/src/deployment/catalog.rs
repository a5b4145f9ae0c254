//! The catalog: the one home of tenant names, file names, versions, file
//! records and blob names, in two tables of `DIR/atrest.sqlite`.
//!
//! Everything else in the deployment reaches the catalog through the few
//! functions here, so that it can be replaced by another catalog without
//! touching the rest.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use atrest::FileRecord;
use atrest::blobs::BlobName;
use atrest::filekey::{FileId, TenantId};
use rusqlite::{Connection, ErrorCode, OptionalExtension as _, params};

use super::error::Error;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS catalog_tenants (
    name   TEXT PRIMARY KEY,
    tenant BLOB NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS catalog_files (
    tenant  BLOB    NOT NULL,
    name    TEXT    NOT NULL,
    version INTEGER NOT NULL,
    file    BLOB    NOT NULL,
    blob    TEXT    NOT NULL,
    record  TEXT    NOT NULL,
    sealed  TEXT    NOT NULL,
    PRIMARY KEY (tenant, name, version)
);";

/// A file version, as the catalog lists it.
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) version: u64,
    pub(super) blob: BlobName,
    pub(super) record: FileRecord,
    /// When it was sealed (RFC 3339).
    pub(super) sealed: String,
}

/// The catalog of a deployment. Shared (`Arc`) by the deployment and its
/// release policy, which looks tenant names up in it.
pub(super) struct Catalog {
    connection: Mutex<Connection>,
}

fn tenant_id(bytes: &[u8], subject: &str) -> Result<TenantId, Error> {
    <[u8; 16]>::try_from(bytes)
        .ok()
        .and_then(|b| TenantId::from_bytes(b).ok())
        .ok_or_else(|| Error::CatalogDamaged {
            what: "tenant id",
            subject: format!("tenant {subject:?}"),
            source: None,
        })
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    error.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

impl Catalog {
    /// Opens (creating its tables on first use) the catalog in `path`.
    pub(super) fn open(path: &Path) -> Result<Self, Error> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(Duration::from_secs(10))?;
        connection.execute_batch(SCHEMA)?;
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    fn connection(&self) -> MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every tenant, as (name, id), by name.
    pub(super) fn tenants(&self) -> Result<Vec<(String, TenantId)>, Error> {
        let connection = self.connection();
        let mut statement =
            connection.prepare("SELECT name, tenant FROM catalog_tenants ORDER BY name")?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
        })?;
        let mut tenants = Vec::new();
        for row in rows {
            let (name, bytes) = row?;
            let id = tenant_id(&bytes, &name)?;
            tenants.push((name, id));
        }
        Ok(tenants)
    }

    /// The id of the tenant named `name`.
    pub(super) fn tenant_id(&self, name: &str) -> Result<Option<TenantId>, Error> {
        let bytes: Option<Vec<u8>> = self
            .connection()
            .query_row(
                "SELECT tenant FROM catalog_tenants WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()?;
        bytes.map(|bytes| tenant_id(&bytes, name)).transpose()
    }

    /// The name of tenant `tenant`.
    pub(super) fn tenant_name(&self, tenant: TenantId) -> Result<Option<String>, Error> {
        Ok(self
            .connection()
            .query_row(
                "SELECT name FROM catalog_tenants WHERE tenant = ?1",
                params![tenant.as_bytes()],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Names tenant `tenant` `name`.
    ///
    /// [`Error::TenantExists`] if the name is taken.
    pub(super) fn add_tenant(&self, name: &str, tenant: TenantId) -> Result<(), Error> {
        match self.connection().execute(
            "INSERT INTO catalog_tenants (name, tenant) VALUES (?1, ?2)",
            params![name, tenant.as_bytes()],
        ) {
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => Err(Error::TenantExists {
                name: name.to_owned(),
            }),
            Err(error) => Err(error.into()),
        }
    }

    /// Forgets the tenant named `name` (one whose keys could not be made).
    pub(super) fn remove_tenant(&self, name: &str) -> Result<(), Error> {
        let _ = self
            .connection()
            .execute("DELETE FROM catalog_tenants WHERE name = ?1", params![name])?;
        Ok(())
    }

    /// The id and latest version of file `name` of `tenant`.
    pub(super) fn latest(
        &self,
        tenant: TenantId,
        name: &str,
    ) -> Result<Option<(FileId, u64)>, Error> {
        let row: Option<(Vec<u8>, u64)> = self
            .connection()
            .query_row(
                "SELECT file, version FROM catalog_files WHERE tenant = ?1 AND name = ?2
                 ORDER BY version DESC LIMIT 1",
                params![tenant.as_bytes(), name],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        row.map(|(file, version)| {
            <[u8; 16]>::try_from(file.as_slice())
                .ok()
                .and_then(|b| FileId::from_bytes(b).ok())
                .map(|file| (file, version))
                .ok_or_else(|| Error::CatalogDamaged {
                    what: "file id",
                    subject: format!("file {name:?}"),
                    source: None,
                })
        })
        .transpose()
    }

    /// Records a new file version. `tenant_name` is for the error if
    /// another writer stored the version first ([`Error::VersionConflict`]).
    pub(super) fn put(
        &self,
        (tenant, tenant_name): (TenantId, &str),
        name: &str,
        record: &FileRecord,
        blob: &BlobName,
    ) -> Result<(), Error> {
        let version = u64::from(record.version);
        let record_json =
            serde_json::to_string(record).map_err(|source| Error::CatalogDamaged {
                what: "file record",
                subject: format!("version {version} of {name:?}"),
                source: Some(source.into()),
            })?;
        let inserted = self.connection().execute(
            "INSERT INTO catalog_files (tenant, name, version, file, blob, record, sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                tenant.as_bytes(),
                name,
                version,
                record.file.as_bytes(),
                blob.as_str(),
                record_json,
                atrest::audit::Timestamp::now().to_string()
            ],
        );
        match inserted {
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => Err(Error::VersionConflict {
                tenant: tenant_name.to_owned(),
                name: name.to_owned(),
                version,
            }),
            Err(error) => Err(error.into()),
        }
    }

    /// The record and blob of version `version` of file `name` of `tenant`
    /// (the latest version if `None`), as stored when it was sealed.
    pub(super) fn record(
        &self,
        tenant: TenantId,
        name: &str,
        version: Option<u64>,
    ) -> Result<Option<(FileRecord, BlobName)>, Error> {
        let row: Option<(String, String, u64)> = self
            .connection()
            .query_row(
                "SELECT record, blob, version FROM catalog_files WHERE tenant = ?1 AND name = ?2
                 AND (?3 IS NULL OR version = ?3) ORDER BY version DESC LIMIT 1",
                params![tenant.as_bytes(), name, version],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        row.map(|(record, blob, version)| parse_entry(name, version, &record, &blob))
            .transpose()
    }

    /// Every file version of `tenant`, by name and version.
    pub(super) fn list(&self, tenant: TenantId) -> Result<Vec<Entry>, Error> {
        let connection = self.connection();
        let mut statement = connection.prepare(
            "SELECT name, version, blob, record, sealed FROM catalog_files WHERE tenant = ?1
             ORDER BY name, version",
        )?;
        let rows = statement.query_map(params![tenant.as_bytes()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, u64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
            ))
        })?;
        let mut entries = Vec::new();
        for row in rows {
            let (name, version, blob, record, sealed) = row?;
            let (record, blob) = parse_entry(&name, version, &record, &blob)?;
            entries.push(Entry {
                name,
                version,
                blob,
                record,
                sealed,
            });
        }
        Ok(entries)
    }
}

fn parse_entry(
    name: &str,
    version: u64,
    record: &str,
    blob: &str,
) -> Result<(FileRecord, BlobName), Error> {
    let damaged = |what, source: Box<dyn std::error::Error + Send + Sync>| Error::CatalogDamaged {
        what,
        subject: format!("version {version} of {name:?}"),
        source: Some(source),
    };
    let record: FileRecord =
        serde_json::from_str(record).map_err(|e| damaged("file record", e.into()))?;
    let blob: BlobName = blob
        .parse()
        .map_err(|e: atrest::Error| damaged("blob name", e.into()))?;
    Ok((record, blob))
}
