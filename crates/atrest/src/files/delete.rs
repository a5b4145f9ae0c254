//! Deleting file versions, and making deletions final (crypto-erasure).
//!
//! A deletion removes the versions' records from the catalog — with them
//! their wrapped file keys — and their blobs; from then on no listing,
//! read or re-wrap sees them. It is made final by
//! [`Files::erase_deleted`]: the tenant's TIK is rolled, every file key
//! still in the catalog is re-wrapped under the new version, and the older
//! versions are retired, each with its own key in the tenant key store
//! (see [`atrest_tenant::version_key_id`]). The wraps a database backup
//! keeps of a deleted version's key then open under nothing: like a purge
//! for one tenant, a restored backup brings no deleted file back. (Neither
//! the files that were under the retired versions when the backup was
//! taken: a backup older than an erasure no longer opens that tenant's
//! files; restore one only with the tenant key store of its time.)

use atrest_audit::{Event, Outcome, Text};
use atrest_filekey::{FileVersion, KeyVersion, TenantId};
use atrest_tenant::{Access, RewrapProgress, RewrapReport};

use super::Files;
use crate::{Error, FileRecord};

/// What [`Files::erase_deleted`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EraseReport {
    /// The TIK version every file key of the tenant is under now.
    pub version: KeyVersion,
    /// The re-wrap that moved them.
    pub rewrap: RewrapReport,
    /// The older versions retired (their keys destroyed).
    pub retired: Vec<KeyVersion>,
    /// Older versions still in use (an upload in flight when the erasure
    /// ran): the keys of deleted versions under them are not erased yet;
    /// erase again once the uploads are done.
    pub pending: Vec<KeyVersion>,
}

impl Files {
    /// Deletes version `version` of file `name` of `tenant` (`None`: every
    /// version of the file) for `access`, whom the policy's write decision
    /// must allow (as for a seal; a refusal is audited as `write_denied`):
    /// the records (and wrapped keys) are removed from the catalog, then
    /// the blobs (a blob whose removal fails is no longer named, and goes
    /// at the next garbage collection). Each version removed is audited
    /// (`file_deleted`). Returns the records removed.
    ///
    /// The file keys are erased for good by [`Files::erase_deleted`].
    ///
    /// # Errors
    /// [`crate::CatalogError::UnknownFile`] or
    /// [`crate::CatalogError::UnknownVersion`] (not found);
    /// [`crate::CatalogError::Tampered`] if the record does not
    /// authenticate; [`Error::Keys`] for a refusal; catalog and audit
    /// errors.
    pub async fn delete(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<Vec<FileRecord>, Error> {
        // The record as its tag vouches for it: the decision is asked for
        // the file the name really is.
        let target = self.record(tenant, name, version).await?;
        self.keys.authorize_write(access, &target.context()).await?;
        let removed = self.catalog.remove_versions(tenant, name, version).await?;
        for record in &removed {
            let _ = self.blobs.delete(&record.blob).await;
        }
        let principal = Text::lossy(access.principal());
        let records = removed
            .iter()
            .map(|record| {
                let context = record.context();
                self.record_of(
                    &context,
                    Event::FileDeleted {
                        file: Self::file_ref(&context),
                        principal: principal.clone(),
                    },
                    Outcome::Success,
                )
            })
            .collect();
        let _ = self.audit.record_all(records).await?;
        Ok(removed)
    }

    /// Makes the deletions of `tenant` final, a crypto-erasure: rolls its
    /// TIK, re-wraps every file key in the catalog under the new version
    /// (`batch_size` at a time, calling `progress`), and retires every
    /// older version, destroying its own key in the tenant key store (see
    /// [`atrest_tenant::version_key_id`]). The wraps a database backup
    /// keeps of a deleted version's key then open under nothing: a
    /// restored backup brings no deleted file back (nor, for this tenant,
    /// the files it holds under the retired versions). Resumable: run it
    /// again after an interruption. A version still used by an upload in
    /// flight is reported `pending`.
    ///
    /// # Errors
    /// As for [`Files::rotate_tik`].
    pub async fn erase_deleted(
        &self,
        tenant: TenantId,
        batch_size: usize,
        progress: &mut (dyn FnMut(RewrapProgress) + Send),
    ) -> Result<EraseReport, Error> {
        let (version, rewrap, retired) = self.rotate_tik(tenant, batch_size, progress).await?;
        let pending = self
            .keys
            .tik_versions(tenant)
            .await?
            .into_iter()
            .filter(|old| *old != version)
            .collect();
        Ok(EraseReport {
            version,
            rewrap,
            retired,
            pending,
        })
    }
}
