//! The catalog as the index of wrapped file keys ([`WrappedKeyIndex`]):
//! what re-wrapping reads and replaces, and what retiring a TIK version
//! asks.

use atrest::catalog::stored;
use atrest_filekey::{FileContext, KeyVersion, TenantId, WrappedFileKey};
use atrest_tenant::{Rewrapped, WrappedKeyIndex};
use rusqlite::{Connection, params};

use super::{Connections, SqliteCatalog};
use crate::db::Failure;

impl SqliteCatalog {
    async fn run_index<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connections) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, atrest_tenant::Error> {
        self.db.run(work).await.map_err(Failure::into_keys)
    }

    /// As [`SqliteCatalog::run_index`], for work that counts a tenant's
    /// records: on the blocking pool.
    async fn scan_index<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connections) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, atrest_tenant::Error> {
        self.db.run_scan(work).await.map_err(Failure::into_keys)
    }
}

fn older_than(
    db: &Connection,
    tenant: TenantId,
    version: KeyVersion,
    limit: usize,
) -> Result<Vec<(FileContext, WrappedFileKey)>, Failure> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = db.prepare_cached(
        "SELECT file, version, wrapped, tik_version FROM catalog_versions
         WHERE tenant = ?1 AND tik_version < ?2 AND wrapped IS NOT NULL
         ORDER BY file, version LIMIT ?3",
    )?;
    let rows = statement.query_map(
        params![tenant.as_bytes(), u32::from(version), limit],
        |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Vec<u8>>(2)?,
                row.get::<_, i64>(3)?,
            ))
        },
    )?;
    let mut keys = Vec::new();
    for row in rows {
        let (file, file_version, wrapped, tik_version) = row?;
        let context = FileContext::new(
            tenant,
            stored::file_id(&file)?,
            stored::file_version(file_version)?,
        );
        let wrapped = stored::wrapped_key(&wrapped)?;
        stored::check_tik_version(tik_version, &wrapped)?;
        keys.push((context, wrapped));
    }
    Ok(keys)
}

fn claim_retirement(
    db: &mut Connection,
    tenant: TenantId,
    version: KeyVersion,
) -> Result<u64, Failure> {
    let tx = db.transaction()?;
    // By the column and by the version the wrapped key's own bytes name: a
    // column edited to another version must not let this one be destroyed
    // under a key still wrapped with it.
    // 1-based for `substr`.
    let at = WrappedFileKey::KEK_VERSION_AT;
    let references: i64 = tx.query_row(
        "SELECT count(*) FROM catalog_versions
         WHERE tenant = ?1
         AND (tik_version = ?2 OR wrapped IS NULL OR substr(wrapped, ?4, ?5) = ?3)",
        params![
            tenant.as_bytes(),
            u32::from(version),
            &u32::from(version).to_be_bytes()[..],
            at.start + 1,
            at.len()
        ],
        |row| row.get(0),
    )?;
    if references == 0 {
        let _ = tx.execute(
            "INSERT OR IGNORE INTO catalog_retired_tiks (tenant, tik_version) VALUES (?1, ?2)",
            params![tenant.as_bytes(), u32::from(version)],
        )?;
    }
    tx.commit()?;
    Ok(u64::try_from(references).unwrap_or(0))
}

fn replace(db: &mut Connection, batch: &[Rewrapped]) -> Result<u64, Failure> {
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

#[async_trait::async_trait]
impl WrappedKeyIndex for SqliteCatalog {
    async fn older_than(
        &self,
        tenant: TenantId,
        version: KeyVersion,
        limit: usize,
    ) -> Result<Vec<(FileContext, WrappedFileKey)>, atrest_tenant::Error> {
        self.run_index(move |db| older_than(db.durable()?, tenant, version, limit))
            .await
    }

    async fn count_older_than(
        &self,
        tenant: TenantId,
        version: KeyVersion,
    ) -> Result<u64, atrest_tenant::Error> {
        self.scan_index(move |db| {
            let count: i64 = db.durable()?.query_row(
                "SELECT count(*) FROM catalog_versions
                 WHERE tenant = ?1 AND tik_version < ?2 AND wrapped IS NOT NULL",
                params![tenant.as_bytes(), u32::from(version)],
                |row| row.get(0),
            )?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    /// Counts sealed records and seals in progress under `version`, plus
    /// every seal of the tenant still choosing its key (it may be about to
    /// wrap under any version); with none, marks the version retired in the
    /// same transaction, after which [`atrest::Catalog::attach_key`] refuses
    /// keys under it.
    async fn claim_retirement(
        &self,
        tenant: TenantId,
        version: KeyVersion,
    ) -> Result<u64, atrest_tenant::Error> {
        self.scan_index(move |db| claim_retirement(db.durable()?, tenant, version))
            .await
    }

    async fn replace(&self, batch: &[Rewrapped]) -> Result<u64, atrest_tenant::Error> {
        let batch = batch.to_vec();
        self.run_index(move |db| replace(db.durable()?, &batch))
            .await
    }
}
