//! Seals: begun and given their keys in commits flushed with the next
//! durable one, committed in one durable transaction, or abandoned.

use std::time::{SystemTime, UNIX_EPOCH};

use atrest::catalog::stored;
use atrest::catalog::{Precondition, SealTicket, SealedBlob};
use atrest::{BlobName, CatalogError, FileRecord, check_name};
use atrest_filekey::{
    FileContext, FileId, FileVersion, KeyVersion, OsRng, TenantId, WrappedFileKey,
};
use rusqlite::{Connection, params};

use super::{Connections, RECORD_COLUMNS, stored_record};
use crate::db::Failure;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Every commit flushed: the connection's setting outside
/// [`Connections::unflushed`]. (Both settings are cached statements: each
/// step of a seal runs them.)
const FLUSH_EVERY_COMMIT: &str = "PRAGMA synchronous = FULL";

/// A commit flushed with the next flushed one: inside
/// [`Connections::unflushed`].
const FLUSH_WITH_NEXT_COMMIT: &str = "PRAGMA synchronous = NORMAL";

impl Connections {
    /// Runs `work` in one write transaction whose commit is not flushed to
    /// disk on its own: it becomes durable with the next flushed commit of
    /// any connection, since SQLite's write-ahead log is synced whole and
    /// in order. Other connections see it at once.
    ///
    /// Only for the steps that lead up to a seal's commit (beginning it,
    /// attaching its key): [`commit_seals`] flushes them with the version.
    /// A power cut before that loses them, leaving at most a blob that no
    /// row names: garbage for a collector of unnamed blobs (the operator
    /// program's `atrest gc`), never a lost file. A process that dies keeps
    /// them, as the operating system still writes them out.
    fn unflushed<T>(
        &mut self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let db = self.durable()?;
        let _ = db.prepare_cached(FLUSH_WITH_NEXT_COMMIT)?.execute([])?;
        self.relaxed = true;
        let done = self.transaction(work);
        // Every other commit is flushed: `synchronous = FULL` again before
        // anything else runs on the connection. Should this fail, `durable`
        // tries again before the next statement (and refuses to run it
        // until it succeeds); the step's own outcome stands either way, as
        // its transaction is committed or rolled back already.
        if self
            .connection
            .prepare_cached(FLUSH_EVERY_COMMIT)
            .and_then(|mut flush| flush.execute([]))
            .is_ok()
        {
            self.relaxed = false;
        }
        done
    }

    fn transaction<T>(
        &mut self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let tx = self.connection.transaction()?;
        let value = work(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// The connection, with every commit flushed (`synchronous = FULL`).
    pub(super) fn durable(&mut self) -> Result<&mut Connection, Failure> {
        if self.relaxed {
            let _ = self
                .connection
                .prepare_cached(FLUSH_EVERY_COMMIT)?
                .execute([])?;
            self.relaxed = false;
        }
        Ok(&mut self.connection)
    }
}

/// Begins every seal of `seals` in one transaction (flushed with their
/// commit).
pub(super) fn begin_seals(
    db: &mut Connections,
    tenant: TenantId,
    seals: &[(String, BlobName)],
    owner: Option<&str>,
) -> Result<Vec<SealTicket>, Failure> {
    for (name, _) in seals {
        check_name("file name", name)?;
    }
    db.unflushed(|tx| {
        let mut tickets = Vec::with_capacity(seals.len());
        let started_at = now();
        for (name, blob) in seals {
            let new_file =
                FileId::time_ordered_now(&mut OsRng).map_err(atrest_tenant::Error::from)?;
            // The name's file (made now with the id just drawn, or the one
            // it has) and the next version number: one past the highest
            // ever given, so that a removed version's number never names
            // other content (a client's entity tag for it stays stale).
            let (file, version): (Vec<u8>, i64) = tx
                .prepare_cached(
                    "INSERT INTO catalog_files (tenant, name, file, last_version)
                     VALUES (?1, ?2, ?3, 1)
                     ON CONFLICT (tenant, name) DO UPDATE SET last_version = 1 + max(
                         last_version,
                         coalesce((SELECT max(version) FROM catalog_versions v
                                   WHERE v.file = catalog_files.file), 0))
                     RETURNING file, last_version",
                )?
                .query_row(
                    params![tenant.as_bytes(), name, new_file.as_bytes()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
            let version = stored::file_version(version)?;
            let _ = tx
                .prepare_cached(
                    "INSERT INTO catalog_versions
                     (tenant, file, version, state, blob, started_at, owner)
                     VALUES (?1, ?2, ?3, 'sealing', ?4, ?5, ?6)",
                )?
                .execute(params![
                    tenant.as_bytes(),
                    file,
                    u64::from(version),
                    blob.as_str(),
                    started_at,
                    owner
                ])?;
            tickets.push(SealTicket {
                context: FileContext::new(tenant, stored::file_id(&file)?, version),
                name: name.clone(),
                blob: blob.clone(),
            });
        }
        Ok(tickets)
    })
}

/// Attaches every key of `keys` in one transaction (flushed with their
/// seals' commit).
pub(super) fn attach_keys(
    db: &mut Connections,
    keys: &[(SealTicket, WrappedFileKey)],
) -> Result<(), Failure> {
    db.unflushed(|tx| {
        // The keys of a batch share their tenant and TIK version: each pair
        // is looked up once.
        let mut live: Option<(TenantId, KeyVersion)> = None;
        for (seal, wrapped) in keys {
            let context = &seal.context;
            let tik = (context.tenant, wrapped.kek_version());
            if live != Some(tik) {
                let retired: bool = tx
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM catalog_retired_tiks
                         WHERE tenant = ?1 AND tik_version = ?2)",
                    )?
                    .query_row(params![tik.0.as_bytes(), u32::from(tik.1)], |row| {
                        row.get(0)
                    })?;
                if retired {
                    return Err(Failure::Catalog(CatalogError::TikRetired {
                        version: tik.1,
                    }));
                }
                live = Some(tik);
            }
            let changed = tx
                .prepare_cached(
                    "UPDATE catalog_versions SET wrapped = ?5, tik_version = ?6
                     WHERE tenant = ?1 AND file = ?2 AND version = ?3 AND blob = ?4
                     AND state = 'sealing' AND wrapped IS NULL",
                )?
                .execute(params![
                    context.tenant.as_bytes(),
                    context.file.as_bytes(),
                    u64::from(context.version),
                    seal.blob.as_str(),
                    wrapped.as_ref(),
                    u32::from(wrapped.kek_version())
                ])?;
            if changed == 0 {
                return Err(Failure::Catalog(CatalogError::SealNotInProgress {
                    version: context.version,
                }));
            }
        }
        Ok(())
    })
}

/// Commits every seal of `seals` in one transaction: one durable commit.
pub(super) fn commit_seals(
    db: &mut Connection,
    seals: &[(SealTicket, SealedBlob)],
) -> Result<Vec<FileRecord>, Failure> {
    let tx = db.transaction()?;
    let mut records = Vec::with_capacity(seals.len());
    for (seal, sealed) in seals {
        let context = &seal.context;
        if sealed.precondition != Precondition::Any {
            // In the transaction, which holds the write lock from its
            // start: no other commit comes between the check and this one.
            let newest: Option<u64> = tx
                .prepare_cached(
                    "SELECT max(version) FROM catalog_versions
                     WHERE file = ?1 AND state = 'sealed'",
                )?
                .query_row(params![context.file.as_bytes()], |row| row.get(0))?;
            let newest = newest
                .map(|v| {
                    FileVersion::try_from(v).map_err(|_| CatalogError::Corrupt("file version"))
                })
                .transpose()?;
            if !sealed.precondition.holds(newest) {
                return Err(Failure::Catalog(CatalogError::PreconditionFailed {
                    tenant: context.tenant,
                    name: seal.name.clone(),
                    newest,
                }));
            }
        }
        let changed = tx
            .prepare_cached(
                "UPDATE catalog_versions
                 SET state = 'sealed', plaintext_len = ?5, blob_len = ?6, segment_size = ?7,
                     format = ?8, sealed_at = ?9, tag = ?10, blob_sha256 = ?11, media_type = ?12
                 WHERE tenant = ?1 AND file = ?2 AND version = ?3 AND blob = ?4
                 AND state = 'sealing' AND wrapped IS NOT NULL",
            )?
            .execute(params![
                context.tenant.as_bytes(),
                context.file.as_bytes(),
                u64::from(context.version),
                seal.blob.as_str(),
                sealed.plaintext_len,
                sealed.blob_len,
                sealed.segment_size,
                sealed.format,
                sealed.sealed_at,
                sealed.tag.as_bytes(),
                sealed.blob_sha256.as_ref().map(|d| d.as_bytes().as_slice()),
                sealed.media_type.as_ref().map(|m| m.as_str())
            ])?;
        if changed == 0 {
            return Err(Failure::Catalog(CatalogError::SealNotInProgress {
                version: context.version,
            }));
        }
        let row = tx
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM catalog_versions v
                 JOIN catalog_files f ON f.file = v.file
                 WHERE v.tenant = ?1 AND v.file = ?2 AND v.version = ?3"
            ))?
            .query_row(
                params![
                    context.tenant.as_bytes(),
                    context.file.as_bytes(),
                    u64::from(context.version)
                ],
                stored_record,
            )?;
        records.push(row.decode()?);
    }
    tx.commit()?;
    Ok(records)
}

pub(super) fn abandon_seal(db: &mut Connection, seal: &SealTicket) -> Result<(), Failure> {
    let context = &seal.context;
    let tx = db.transaction()?;
    let _ = tx.execute(
        "DELETE FROM catalog_versions
         WHERE tenant = ?1 AND file = ?2 AND version = ?3 AND blob = ?4
         AND state = 'sealing'",
        params![
            context.tenant.as_bytes(),
            context.file.as_bytes(),
            u64::from(context.version),
            seal.blob.as_str()
        ],
    )?;
    // A name whose first seal failed leaves no trace.
    let _ = tx.execute(
        "DELETE FROM catalog_files WHERE file = ?1
         AND NOT EXISTS (SELECT 1 FROM catalog_versions WHERE file = ?1)",
        params![context.file.as_bytes()],
    )?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::SqliteCatalog;

    fn synchronous(connection: &rusqlite::Connection) -> i64 {
        connection
            .query_row("PRAGMA synchronous", [], |row| row.get(0))
            .unwrap()
    }

    /// The catalog's one connection relaxes `synchronous` for the
    /// unflushed steps' own transactions only: every other commit is
    /// flushed (FULL = 2, NORMAL = 1).
    #[tokio::test(flavor = "multi_thread")]
    async fn only_the_unflushed_steps_skip_the_flush() {
        let dir = atrest_test_support::TempDir::new("catalog-synchronous");
        let catalog = SqliteCatalog::open(&dir.path().join("catalog.sqlite"))
            .await
            .unwrap();
        let (before, during, after) = catalog
            .db
            .run(|db| {
                let before = synchronous(&db.connection);
                let during = db.unflushed(|tx| Ok(synchronous(tx)))?;
                Ok((before, during, synchronous(&db.connection)))
            })
            .await
            .unwrap();
        assert_eq!((before, during, after), (2, 1, 2));
        // A step that fails restores it as well.
        let (failed, after) = catalog
            .db
            .run(|db| {
                let failed = db.unflushed(|tx| {
                    tx.execute_batch("SELECT * FROM no_such_table")?;
                    Ok(())
                });
                Ok((failed.is_err(), synchronous(&db.connection)))
            })
            .await
            .unwrap();
        assert!(failed);
        assert_eq!(after, 2);
    }
}
