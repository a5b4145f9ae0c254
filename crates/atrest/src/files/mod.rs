//! Sealing and opening files: the composition of the key hierarchy, the
//! stream format, the blob store and the audit trail.
//!
//! [`Files`] is async, as every store it drives is: an upload or a
//! download in progress holds a task, not a thread. The cipher runs a run
//! of segments (about 256 KiB) at a time, in the task or, with more than
//! one thread asked for ([`SealOptions::stream`]'s parallelism), several
//! runs at once on the runtime's blocking pool.

use std::sync::Arc;

use atrest_audit::{Audit, Event, FileRef, Outcome, Record, Text};
use atrest_filekey::{FileContext, FileKey, FileVersion, TenantId};
use atrest_stream::format::FORMAT_VERSION;
use atrest_stream::{Options, Parallelism};
use atrest_tenant::{Access, KeyHierarchy, MetadataKey, RecordTag};

use crate::blob::Blobs;
use crate::catalog::{Catalog, MediaType, NewVersion, SealTicket, SealedBlob, TenantName};
use crate::record::TaggedFields;
use crate::{CatalogError, Error, FileRecord, RecordError};

mod batch;
mod delete;
mod deliver;
mod open;
mod rotation;
mod seal;

pub use batch::BatchItem;
pub use delete::EraseReport;
pub use deliver::{Ciphertext, DELIVERED_KEY_FORMAT, DeliveredKey};
pub use open::{FileSelector, OpenSink, WriterSink};
pub use rotation::CollectReport;

/// How files are sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealOptions {
    /// The stream's options: segment size of new blobs (default 64 KiB),
    /// AES-256-GCM implementation, and how many runs of segments are
    /// sealed or opened at once.
    ///
    /// With one thread (`Parallelism::One`), each run is sealed or opened
    /// in the task that moves the bytes, a run per poll; with more, up to
    /// that many runs at once on the runtime's blocking pool. The default
    /// is one per core but one, at least one: reading and writing need a
    /// core of their own when the data comes from and goes to files
    /// (measured with `cli_throughput`).
    pub stream: Options,
    /// Whether each record keeps the SHA-256 digest of its blob (default:
    /// yes), so that copies can be checked and repaired without a key
    /// ([`crate::blobs::ReplicatedBlobs`]). Hashing runs at about 1.4 GB/s
    /// per core (SHA extensions; `openssl speed -evp sha256` gives the
    /// machine's figure), as the blob is written; a store with one
    /// location may turn it off: reads authenticate every segment anyway,
    /// and a check then compares lengths only.
    pub blob_digests: bool,
}

impl Default for SealOptions {
    fn default() -> Self {
        let threads =
            std::thread::available_parallelism().map_or(1, |cores| cores.get().saturating_sub(1));
        Self {
            stream: Options::default().parallelism(Parallelism::threads(threads)),
            blob_digests: true,
        }
    }
}

/// Seals and opens tenant files, with the catalog as the one home of their
/// records: one call seals an upload as a new version of a named file (the
/// blob written completely first, the record committed second), one gives
/// a principal a file or a byte range of it, and rotation helpers re-wrap
/// and retire TIK versions through the same catalog. Every seal and open is
/// audited (and every key release, by the key hierarchy).
///
/// Shareable across tasks and threads (`Arc<Files>`).
pub struct Files {
    keys: Arc<KeyHierarchy>,
    catalog: Arc<dyn Catalog>,
    blobs: Arc<dyn Blobs>,
    audit: Arc<dyn Audit>,
    actor: Text,
    options: SealOptions,
}

impl core::fmt::Debug for Files {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Files")
            .field("options", &self.options)
            .field("blobs", &self.blobs.location())
            .finish_non_exhaustive()
    }
}

impl Files {
    /// Files whose keys come from `keys`, whose records live in `catalog`
    /// and whose blobs live in `blobs`, audited through `audit` (usually
    /// the same log the hierarchy writes to).
    pub fn new(
        keys: Arc<KeyHierarchy>,
        catalog: Arc<dyn Catalog>,
        blobs: Arc<dyn Blobs>,
        audit: Arc<dyn Audit>,
    ) -> Self {
        Self {
            keys,
            catalog,
            blobs,
            audit,
            actor: Text::lossy("atrest"),
            options: SealOptions::default(),
        }
    }

    /// With these options.
    #[must_use]
    pub fn with_options(mut self, options: SealOptions) -> Self {
        self.options = options;
        self
    }

    /// Names the actor in audit records (the service's identity).
    #[must_use]
    pub fn with_actor(mut self, actor: &str) -> Self {
        self.actor = Text::lossy(actor);
        self
    }

    /// The key hierarchy.
    pub fn keys(&self) -> &Arc<KeyHierarchy> {
        &self.keys
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    /// The blob store.
    pub fn blobs(&self) -> &Arc<dyn Blobs> {
        &self.blobs
    }

    /// The options files are sealed and opened with.
    pub fn options(&self) -> SealOptions {
        self.options
    }

    /// How many runs of segments are sealed or opened at once.
    fn threads(&self) -> usize {
        self.options.stream.parallelism.get().max(1)
    }

    /// A record of `event` about a file of the context's tenant.
    fn record_of(&self, context: &FileContext, event: Event, outcome: Outcome) -> Record {
        Record::new(self.actor.clone(), event)
            .tenant(Text::lossy(context.tenant.to_string()))
            .outcome(outcome)
    }

    async fn audit(
        &self,
        context: &FileContext,
        event: Event,
        outcome: Outcome,
    ) -> Result<(), Error> {
        let _ = self
            .audit
            .record(self.record_of(context, event, outcome))
            .await?;
        Ok(())
    }

    fn file_ref(context: &FileContext) -> FileRef {
        FileRef {
            file: Text::lossy(context.file.to_string()),
            version: u64::from(context.version),
        }
    }

    /// What a seal commits, with the tag of the record it makes.
    fn sealed_blob(
        &self,
        metadata: &MetadataKey,
        ticket: &SealTicket,
        written: &seal::WrittenBlob,
        version: &NewVersion,
    ) -> SealedBlob {
        let segment_size = self.options.stream.segment_size.get();
        let sealed_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs())
            .min(FileRecord::LATEST_SEAL_TIME);
        let tag = TaggedFields {
            tenant: ticket.context.tenant,
            name: &ticket.name,
            file: ticket.context.file,
            version: ticket.context.version,
            blob: &ticket.blob,
            plaintext_len: written.plaintext_len,
            blob_len: written.blob_len,
            blob_sha256: written.digest,
            segment_size,
            format: FORMAT_VERSION,
            media_type: version.media_type.as_ref().map(MediaType::as_str),
            sealed_at: Some(sealed_at),
        }
        .tag(metadata);
        SealedBlob {
            plaintext_len: written.plaintext_len,
            blob_len: written.blob_len,
            blob_sha256: written.digest,
            segment_size,
            format: FORMAT_VERSION,
            media_type: version.media_type.clone(),
            sealed_at,
            tag,
            precondition: version.precondition.clone(),
        }
    }

    /// The record of file `name` of `tenant`: version `version`, or the
    /// newest if `None`.
    ///
    /// # Errors
    /// [`Error::Catalog`] ([`crate::ErrorKind::NotFound`] if there is no
    /// such file or version).
    pub async fn record(
        &self,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<FileRecord, Error> {
        let record = self.catalog.record(tenant, name, version).await?;
        self.authenticate(&record, tenant, name, version).await?;
        Ok(record)
    }

    /// The tag that binds name `name` to `tenant`, under the tenant's
    /// metadata key: what [`Catalog::name_tenant`] stores with the name.
    ///
    /// # Errors
    /// [`Error::Keys`] if the tenant's metadata key cannot be had (no such
    /// tenant, purged).
    pub async fn name_tag(&self, tenant: TenantId, name: &str) -> Result<RecordTag, Error> {
        let metadata = self.keys.metadata_key(tenant).await?;
        Ok(metadata.tag(TENANT_NAME_LABEL, &tenant_name_message(tenant, name)))
    }

    /// Checks a stored tenant name's tag: the only way a name is to be
    /// mapped to its tenant (or a tenant shown under a name).
    ///
    /// # Errors
    /// [`CatalogError::NameTampered`] if the tag is missing or does not
    /// bind the name to the tenant; [`Error::Keys`] if the tenant's metadata
    /// key cannot be had (a purged tenant: [`atrest_tenant::Error::Purged`]).
    pub async fn authenticate_name(&self, named: &TenantName) -> Result<(), Error> {
        authenticate_tenant_name(&self.keys, named).await
    }

    /// Checks a record's tag under its tenant's metadata key.
    async fn authenticate(
        &self,
        record: &FileRecord,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<(), Error> {
        let metadata = self.keys.metadata_key(record.tenant).await?;
        record.authenticate(&metadata, tenant, name, version)
    }

    /// The file key of a record read for `name` and `version`, with the
    /// record it was released for: the key is released first (the policy
    /// decides, and the hierarchy audits a release or a refusal), then the
    /// record is authenticated; a record that fails is audited as a failed
    /// open and its key dropped unused. If the key had moved since the
    /// record was read (a re-wrap), the record is read again: the new copy
    /// must differ from the given one in its wrapped key alone, and is the
    /// one authenticated and returned. So a caller may rely on the given
    /// record's other fields once this succeeds.
    async fn key_for(
        &self,
        access: &Access<'_>,
        file: &FileSelector<'_>,
        record: FileRecord,
    ) -> Result<(FileKey, FileRecord), Error> {
        if record.tenant != file.tenant {
            // Another tenant's record answered for this one: nothing of it
            // is released.
            return Err(CatalogError::Tampered {
                tenant: file.tenant,
                name: file.name.to_owned(),
                version: record.version,
            }
            .into());
        }
        let key = match self.release(access, &record).await {
            Ok(key) => key,
            // The key may have been moved to a newer TIK version since the
            // record was read, and the version it was under retired (a
            // rotation or an erasure in another process): with the record
            // as it is now, once.
            Err(
                error @ Error::Keys(
                    atrest_tenant::Error::UnknownTikVersion { .. }
                    | atrest_tenant::Error::FileKey(_),
                ),
            ) => {
                match self
                    .catalog
                    .record(record.tenant, &record.name, Some(record.version))
                    .await
                {
                    Ok(fresh) if fresh.wrapped_key != record.wrapped_key => {
                        // A key moved by a re-wrap changes nothing else of
                        // the record: a record that changed otherwise (the
                        // one read first, whose fields the caller may have
                        // used already, having been edited) is refused.
                        let moved = FileRecord {
                            wrapped_key: fresh.wrapped_key,
                            ..record.clone()
                        };
                        if moved != fresh {
                            let error = Error::from(CatalogError::Tampered {
                                tenant: file.tenant,
                                name: file.name.to_owned(),
                                version: record.version,
                            });
                            self.audit_open(access, &record, Err(&error), None).await?;
                            return Err(error);
                        }
                        let key = self.release(access, &fresh).await?;
                        let key = self.authenticated(key, &fresh, access, file).await?;
                        return Ok((key, fresh));
                    }
                    // The record as it stands names a TIK version the
                    // tenant does not have. A version is retired only once
                    // no record names it, and a new one exists before any
                    // key is wrapped under it: the record's key (or the
                    // key metadata) was changed, or one was restored from
                    // an older backup than the other. Nothing to wait for
                    // and no missing file: an integrity failure, audited.
                    Ok(_)
                        if matches!(
                            error,
                            Error::Keys(atrest_tenant::Error::UnknownTikVersion { .. })
                        ) =>
                    {
                        let error = Error::from(CatalogError::Tampered {
                            tenant: file.tenant,
                            name: file.name.to_owned(),
                            version: record.version,
                        });
                        self.audit_open(access, &record, Err(&error), None).await?;
                        return Err(error);
                    }
                    _ => return Err(error),
                }
            }
            Err(error) => return Err(error),
        };
        let key = self.authenticated(key, &record, access, file).await?;
        Ok((key, record))
    }

    /// `key` if `record` authenticates as `file`'s; otherwise the key is
    /// dropped unused and the open audited as failed.
    async fn authenticated(
        &self,
        key: FileKey,
        record: &FileRecord,
        access: &Access<'_>,
        file: &FileSelector<'_>,
    ) -> Result<FileKey, Error> {
        if let Err(error) = self
            .authenticate(record, file.tenant, file.name, file.version)
            .await
        {
            drop(key);
            self.audit_open(access, record, Err(&error), None).await?;
            return Err(error);
        }
        Ok(key)
    }

    async fn release(&self, access: &Access<'_>, record: &FileRecord) -> Result<FileKey, Error> {
        if record.format != FORMAT_VERSION {
            return Err(RecordError::UnsupportedFormat(record.format).into());
        }
        let _ = record.segment_size_checked()?;
        Ok(self
            .keys
            .release_file_key(access, &record.context(), &record.wrapped_key)
            .await?)
    }
}

/// [`Files::authenticate_name`], for code that holds the key hierarchy
/// alone (a release policy that compares a tenant's name).
///
/// # Errors
/// As for [`Files::authenticate_name`].
pub async fn authenticate_tenant_name(
    keys: &KeyHierarchy,
    named: &TenantName,
) -> Result<(), Error> {
    let metadata = keys.metadata_key(named.tenant).await?;
    let message = tenant_name_message(named.tenant, &named.name);
    if named
        .tag
        .is_some_and(|tag| metadata.verify(TENANT_NAME_LABEL, &message, &tag))
    {
        Ok(())
    } else {
        Err(CatalogError::NameTampered {
            name: named.name.clone(),
            tenant: named.tenant,
        }
        .into())
    }
}

/// The label of tenant names' tags under the tenant's metadata key.
const TENANT_NAME_LABEL: &[u8] = b"atrest/v1 tenant name";

/// What a tenant name's tag covers: the tenant and the name.
fn tenant_name_message(tenant: TenantId, name: &str) -> Vec<u8> {
    let mut message = tenant.encode().to_vec();
    message.extend_from_slice(name.as_bytes());
    message
}
