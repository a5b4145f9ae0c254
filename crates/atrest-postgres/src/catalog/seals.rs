//! Seals: begun, given their keys and committed, or abandoned, each step
//! one transaction.

use std::sync::Arc;

use atrest::catalog::{Precondition, SealTicket, SealedBlob};
use atrest::{BlobName, CatalogError, Error, FileRecord, check_name};
use atrest_filekey::{FileContext, FileId, FileVersion, OsRng, TenantId, WrappedFileKey};
use tokio_postgres::Transaction;

use super::{
    PgCatalog, RECORD_COLUMNS, corrupt, file_id, file_version, key_bytes, now, number, read_record,
    signed, stop, tik_number,
};
use crate::db::{Failure, Mode, PgError};

impl PgCatalog {
    /// Begins `seals` in one transaction.
    pub(super) async fn begin(
        &self,
        tenant: TenantId,
        seals: &[(String, BlobName)],
    ) -> Result<Vec<SealTicket>, Error> {
        for (name, _) in seals {
            check_name("file name", name)?;
        }
        let seals = Arc::new(seals.to_vec());
        let owner = self.owner.clone();
        self.run(Mode::Write, move |tx| {
            let seals = Arc::clone(&seals);
            let owner = owner.clone();
            Box::pin(async move { begin_in(tx, tenant, &seals, owner.as_deref()).await })
        })
        .await
    }

    /// Attaches `keys` in one transaction: every key is stored, or none.
    pub(super) async fn attach(
        &self,
        keys: &[(&SealTicket, &WrappedFileKey)],
    ) -> Result<(), Error> {
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

    /// Commits `seals` in one transaction, one durable commit.
    pub(super) async fn commit(
        &self,
        seals: &[(&SealTicket, SealedBlob)],
    ) -> Result<Vec<FileRecord>, Error> {
        let seals: Arc<Vec<(SealTicket, SealedBlob)>> = Arc::new(
            seals
                .iter()
                .map(|(seal, sealed)| ((*seal).clone(), sealed.clone()))
                .collect(),
        );
        self.run(Mode::Write, move |tx| {
            let seals = Arc::clone(&seals);
            Box::pin(async move { commit_in(tx, &seals).await })
        })
        .await
    }

    /// Deletes a seal in progress, and its name if it has no other version.
    pub(super) async fn abandon(&self, seal: &SealTicket) -> Result<(), Error> {
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
}

/// Lets this transaction's commit return before its WAL record is flushed
/// (`synchronous_commit = off`, for this transaction only): the steps that
/// lead up to a seal's commit, which flushes them with it, as PostgreSQL
/// flushes its WAL in order. A crash of the server before then loses only
/// rows of seals never committed (see [`atrest::Catalog::begin_seal`]).
async fn flushed_with_the_commit(tx: &Transaction<'_>) -> Result<(), Failure<Error>> {
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    Ok(())
}

async fn begin_in(
    tx: &Transaction<'_>,
    tenant: TenantId,
    seals: &[(String, BlobName)],
    owner: Option<&str>,
) -> Result<Vec<SealTicket>, Failure<Error>> {
    flushed_with_the_commit(tx).await?;
    let id = tenant.as_bytes().as_slice();
    let started_at = signed(now(), "clock out of range")?;
    let mut tickets = Vec::with_capacity(seals.len());
    for (name, blob) in seals {
        let new_file = FileId::time_ordered_now(&mut OsRng)
            .map_err(|e| stop(atrest_tenant::Error::from(e)))?;
        // A new name gets its file here, at version 1, with nothing read
        // (reads of the indexes' newest pages, which every concurrent
        // begin writes to, would make serializable transactions that
        // begin at once conflict); a name the catalog has keeps its file
        // and gets the version after its latest (sealed or in progress).
        let made = tx
            .query_opt(
                "INSERT INTO atrest_catalog_files (tenant, name, file) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING RETURNING file",
                &[&id, name, &new_file.as_bytes().as_slice()],
            )
            .await?;
        let (file, latest): (Vec<u8>, i64) = match made {
            Some(row) => (row.try_get(0)?, 0),
            None => {
                let row = tx
                    .query_one(
                        "SELECT f.file, coalesce(
                             (SELECT max(v.version) FROM atrest_catalog_versions v
                              WHERE v.file = f.file), 0)
                         FROM atrest_catalog_files f WHERE f.tenant = $1 AND f.name = $2",
                        &[&id, name],
                    )
                    .await?;
                (row.try_get(0)?, row.try_get(1)?)
            }
        };
        let version = u64::try_from(latest)
            .ok()
            .and_then(|latest| latest.checked_add(1))
            .and_then(|next| FileVersion::try_from(next).ok())
            .ok_or_else(|| corrupt("file version"))?;
        let _ = tx
            .execute(
                "INSERT INTO atrest_catalog_versions
                 (tenant, file, version, state, blob, started_at, owner)
                 VALUES ($1, $2, $3, 'sealing', $4, $5, $6)",
                &[
                    &id,
                    &file,
                    &number(version)?,
                    &blob.as_str(),
                    &started_at,
                    &owner,
                ],
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
        if sealed.precondition != Precondition::Any {
            // A serializable transaction: two commits that each read the
            // newest version the other replaces cannot both succeed (one
            // is run again, and then sees the other's version).
            let newest: Option<i64> = tx
                .query_one(
                    "SELECT max(version) FROM atrest_catalog_versions
                     WHERE file = $1 AND state = 'sealed'",
                    &[&file],
                )
                .await?
                .try_get(0)?;
            let newest = newest.map(file_version).transpose()?;
            if !sealed.precondition.holds(newest) {
                return Err(stop(CatalogError::PreconditionFailed {
                    tenant: context.tenant,
                    name: seal.name.clone(),
                    newest,
                }));
            }
        }
        let changed = tx
            .execute(
                "UPDATE atrest_catalog_versions
                 SET state = 'sealed', plaintext_len = $5, blob_len = $6, segment_size = $7,
                     format = $8, sealed_at = $9, tag = $10, blob_sha256 = $11, media_type = $12
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
                    &sealed.media_type.as_ref().map(|m| m.as_str()),
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
