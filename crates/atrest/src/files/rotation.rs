//! Rotation and clean-up through the catalog: rolling a tenant's TIK and
//! re-wrapping its file keys, retiring versions nothing uses, forgetting
//! abandoned seals.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atrest_filekey::{KeyVersion, TenantId};
use atrest_tenant::{RewrapProgress, RewrapReport};

use super::Files;
use crate::catalog::SealInProgress;
use crate::{CatalogError, Error};

/// What [`Files::collect_abandoned_seals`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectReport {
    /// Seals in progress that had been started before the cut-off, now
    /// forgotten, with their blobs deleted.
    pub abandoned_seals: Vec<SealInProgress>,
}

impl Files {
    /// Rolls the tenant's TIK, then re-wraps every wrapped file key in the
    /// catalog (seals in progress included) under the new version, in
    /// batches of `batch_size`, calling `progress` after each; then retires
    /// every older TIK version nothing refers to any more. Resumable: run
    /// it again after an interruption (it rolls once more, which is
    /// harmless). Returns the new version, the re-wrap report and the
    /// versions retired.
    ///
    /// # Errors
    /// Those of [`atrest_tenant::KeyHierarchy::roll_tik`],
    /// [`atrest_tenant::KeyHierarchy::rewrap_file_keys`] and
    /// [`Files::retire_unused_tiks`].
    pub async fn rotate_tik(
        &self,
        tenant: TenantId,
        batch_size: usize,
        progress: &mut (dyn FnMut(RewrapProgress) + Send),
    ) -> Result<(KeyVersion, RewrapReport, Vec<KeyVersion>), Error> {
        let version = self.keys.roll_tik(tenant).await?;
        let report = self.rewrap(tenant, batch_size, progress).await?;
        let retired = self.retire_unused_tiks(tenant).await?;
        Ok((version, report, retired))
    }

    /// Re-wraps every wrapped file key of `tenant` in the catalog that is
    /// under an older TIK version (see
    /// [`atrest_tenant::KeyHierarchy::rewrap_file_keys`]).
    ///
    /// # Errors
    /// As for [`atrest_tenant::KeyHierarchy::rewrap_file_keys`].
    pub async fn rewrap(
        &self,
        tenant: TenantId,
        batch_size: usize,
        progress: &mut (dyn FnMut(RewrapProgress) + Send),
    ) -> Result<RewrapReport, Error> {
        Ok(self
            .keys
            .rewrap_file_keys(tenant, self.catalog.as_ref(), batch_size, progress)
            .await?)
    }

    /// Retires (destroys) TIK version `version` of `tenant`, if no record
    /// and no seal in flight in the catalog uses it and it is not current.
    ///
    /// # Errors
    /// [`atrest_tenant::Error::TikInUse`] (as [`Error::Keys`]) if something
    /// still uses it; as for [`atrest_tenant::KeyHierarchy::retire_tik`].
    pub async fn retire_tik(&self, tenant: TenantId, version: KeyVersion) -> Result<(), Error> {
        Ok(self
            .keys
            .retire_tik(tenant, version, self.catalog.as_ref())
            .await?)
    }

    /// Retires every TIK version of `tenant` but the current one that
    /// nothing in the catalog uses (records and seals in flight); versions
    /// still in use are kept, and one another process retires meanwhile is
    /// passed over. Returns those this call retired.
    ///
    /// # Errors
    /// As for [`Files::retire_tik`], except that a version in use is kept,
    /// not an error.
    pub async fn retire_unused_tiks(&self, tenant: TenantId) -> Result<Vec<KeyVersion>, Error> {
        let current = self.keys.tenant(tenant).await?.current_tik;
        let mut retired = Vec::new();
        for version in self.keys.tik_versions(tenant).await? {
            if version == current {
                continue;
            }
            match self.retire_tik(tenant, version).await {
                Ok(()) => retired.push(version),
                Err(Error::Keys(atrest_tenant::Error::TikInUse { .. })) => {}
                // Another process retired it since the versions were
                // listed: what this call is for is done.
                Err(Error::Keys(atrest_tenant::Error::UnknownTikVersion {
                    version: gone, ..
                })) if gone == version => {}
                Err(error) => return Err(error),
            }
        }
        Ok(retired)
    }

    /// Forgets every seal in progress that began more than `older_than`
    /// ago — left by a process that died, or still running if it is a very
    /// long upload, so choose a cut-off longer than any upload — and
    /// deletes its blob. Until then such a seal keeps its TIK version from
    /// being retired.
    ///
    /// # Errors
    /// [`Error::Catalog`]; [`Error::Blob`].
    pub async fn collect_abandoned_seals(
        &self,
        older_than: Duration,
    ) -> Result<CollectReport, Error> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |at| at.as_secs());
        let abandoned = self
            .catalog
            .seals_in_progress()
            .await?
            .into_iter()
            .filter(|seal| seal.started_at < cutoff)
            .collect();
        self.abandon_seals(abandoned).await
    }

    /// Forgets the seals in progress `seals` (as
    /// [`Catalog::seals_in_progress`](crate::Catalog::seals_in_progress)
    /// listed them), which the caller knows no living process is running,
    /// and deletes their blobs. A seal committed or forgotten since it was
    /// listed is passed over.
    ///
    /// # Errors
    /// [`Error::Catalog`]; [`Error::Blob`].
    pub async fn abandon_seals(&self, seals: Vec<SealInProgress>) -> Result<CollectReport, Error> {
        let mut report = CollectReport::default();
        for seal in seals {
            // The row goes first: an upload still running after all then
            // fails at its commit instead of publishing a record whose
            // blob is gone. A crash between the two leaves only a blob no
            // record names, which is garbage, never a lost file.
            self.catalog.abandon_seal(&seal.ticket).await?;
            // Committed since it was listed (the row was not removed): its
            // blob is a file's now.
            let context = &seal.ticket.context;
            match self
                .catalog
                .record(context.tenant, &seal.ticket.name, Some(context.version))
                .await
            {
                Ok(record) if record.blob == seal.ticket.blob => continue,
                Ok(_)
                | Err(Error::Catalog(
                    CatalogError::UnknownFile { .. } | CatalogError::UnknownVersion { .. },
                )) => {}
                Err(error) => return Err(error),
            }
            self.blobs.delete(&seal.ticket.blob).await?;
            report.abandoned_seals.push(seal);
        }
        Ok(report)
    }
}
