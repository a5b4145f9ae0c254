//! The catalog as the index of wrapped file keys ([`WrappedKeyIndex`]):
//! what re-wrapping reads and replaces, and what retiring a TIK version
//! asks.

use std::sync::Arc;

use atrest::{CatalogError, Error};
use atrest_filekey::{FileContext, KeyVersion, TenantId, WrappedFileKey};
use atrest_tenant::{Rewrapped, WrappedKeyIndex};
use tokio_postgres::Transaction;

use super::{
    PgCatalog, check_tik_version, corrupt, file_id, file_version, key_bytes, number, tik_number,
    unsigned, wrapped_key,
};
use crate::db::{BoxFuture, Failure, Mode};
use crate::keys::store_error;

impl PgCatalog {
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
                        "SELECT file, version, wrapped, tik_version FROM atrest_catalog_versions
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
                        let wrapped = wrapped_key(&row.try_get::<_, Vec<u8>>(2)?)?;
                        let tik_version: i64 = row.try_get(3)?;
                        check_tik_version(tik_version, &wrapped)?;
                        Ok((context, wrapped))
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
    /// same serializable transaction, after which [`atrest::Catalog::attach_key`]
    /// refuses keys under it.
    async fn claim_retirement(
        &self,
        tenant: TenantId,
        version: KeyVersion,
    ) -> Result<u64, atrest_tenant::Error> {
        self.run_index(Mode::Write, move |tx| {
            Box::pin(async move {
                let id = tenant.as_bytes().as_slice();
                // By the column and by the version the wrapped key's own
                // bytes name: a column edited to another version must not
                // let this one be destroyed under a key still wrapped with
                // it.
                let named = u32::from(version).to_be_bytes();
                let at = WrappedFileKey::KEK_VERSION_AT;
                // 1-based.
                let (start, len) = (
                    i32::try_from(at.start + 1).map_err(|_| corrupt("KEK version offset"))?,
                    i32::try_from(at.len()).map_err(|_| corrupt("KEK version offset"))?,
                );
                let references: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM atrest_catalog_versions
                         WHERE tenant = $1 AND (tik_version = $2 OR wrapped IS NULL
                         OR substring(wrapped from $4 for $5) = $3)",
                        &[&id, &tik_number(version), &named.as_slice(), &start, &len],
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
