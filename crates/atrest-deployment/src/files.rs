//! Files of a deployment, by tenant and file name: put (one or a batch),
//! get (whole or a byte range), records and listings.

use std::ops::Range;

use atrest::filekey::{FileVersion, TenantId};
use atrest::tenant::{Access, TenantState};
use atrest::{BatchItem, FileRecord, FileSelector, NewVersion, OpenSink};
use serde::Serialize;
use tokio::io::AsyncBufRead;

use crate::{Deployment, Error};

/// Which file version [`Deployment::get`] gives: file `name` of the
/// tenant named `tenant`, version `version` or the newest. The
/// deployment's form of [`atrest::FileSelector`], with the tenant by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileName<'a> {
    /// The tenant's name.
    pub tenant: &'a str,
    /// The file's name.
    pub name: &'a str,
    /// The version, or `None` for the newest.
    pub version: Option<u64>,
}

impl<'a> FileName<'a> {
    /// The newest version of file `name` of tenant `tenant`.
    pub const fn newest(tenant: &'a str, name: &'a str) -> Self {
        Self {
            tenant,
            name,
            version: None,
        }
    }
}

/// One file version in the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// The tenant's name.
    pub tenant: String,
    /// The file's name.
    pub name: String,
    /// The file version.
    pub version: u64,
    /// Plaintext bytes.
    pub bytes: u64,
    /// The TIK version its key is wrapped under.
    pub tik_version: u32,
    /// The blob's name.
    pub blob: String,
    /// When it was sealed (RFC 3339).
    pub sealed: String,
    /// Whether it can still be opened: `false` once its tenant was purged.
    pub readable: bool,
}

impl Listing {
    fn new(tenant: &str, record: &FileRecord, readable: bool) -> Self {
        Self {
            readable,
            tenant: tenant.to_owned(),
            name: record.name.clone(),
            version: u64::from(record.version),
            bytes: record.plaintext_len,
            tik_version: u32::from(record.tik_version()),
            blob: record.blob.to_string(),
            sealed: humantime::format_rfc3339_seconds(record.sealed_time()).to_string(),
        }
    }
}

/// The newest version of each file of `listings` (as [`Deployment::list`]
/// gives them: by tenant, name, then version), in the same order.
pub fn newest_of_each(listings: Vec<Listing>) -> Vec<Listing> {
    let mut newest: Vec<Listing> = Vec::with_capacity(listings.len());
    for listing in listings {
        match newest.last_mut() {
            Some(last) if last.tenant == listing.tenant && last.name == listing.name => {
                *last = listing;
            }
            _ => newest.push(listing),
        }
    }
    newest
}

/// What [`Deployment::put`] did.
#[derive(Clone, Debug, Serialize)]
pub struct PutReport {
    /// The tenant's name.
    pub tenant: String,
    /// The file's name.
    pub name: String,
    /// The new version.
    pub version: u64,
    /// The file record kept in the catalog.
    pub record: FileRecord,
    /// The blob's name.
    pub blob: String,
}

impl PutReport {
    fn new(tenant: &str, record: FileRecord) -> Self {
        Self {
            tenant: tenant.to_owned(),
            name: record.name.clone(),
            version: u64::from(record.version),
            blob: record.blob.to_string(),
            record,
        }
    }
}

impl Deployment {
    /// Seals `plaintext` (any buffered async source) as a new version of file
    /// `name` of tenant `tenant`, for `access`, into a new blob; the
    /// catalog allocates the version (several writers of one name at once
    /// each get their own).
    ///
    /// A version may be written by whoever the policy's write decision
    /// allows (by default: whoever it would give the key to); the library
    /// audits a refusal (`write_denied`).
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`Error::Library`] for an invalid name;
    /// [`Error::InTenant`]: the write refused (kind `Refused`), key, stream,
    /// blob and catalog errors.
    pub async fn put(
        &self,
        access: &Access<'_>,
        tenant: &str,
        name: &str,
        plaintext: impl AsyncBufRead + Send + Unpin,
    ) -> Result<PutReport, Error> {
        self.put_version(access, tenant, name, plaintext, &NewVersion::default())
            .await
    }

    /// [`Deployment::put`] with a media type kept in the version's record
    /// and a precondition on the file's newest version (see
    /// [`atrest::Files::seal_version`]).
    ///
    /// # Errors
    /// As [`Deployment::put`]; a precondition that does not hold is an
    /// [`Error::InTenant`] of kind `Conflict`
    /// ([`atrest::CatalogError::PreconditionFailed`]).
    pub async fn put_version(
        &self,
        access: &Access<'_>,
        tenant: &str,
        name: &str,
        plaintext: impl AsyncBufRead + Send + Unpin,
        version: &NewVersion,
    ) -> Result<PutReport, Error> {
        let name = atrest::normalize_name(name);
        atrest::check_name("file name", &name).map_err(atrest::Error::from)?;
        let tenant_id = self.tenant_id(tenant).await?;
        // The library asks the policy for the write and audits a refusal.
        let sealed = self
            .files
            .seal_version(access, tenant_id, &name, plaintext, version)
            .await;
        let record = named(tenant, tenant_id, sealed)?;
        Ok(PutReport::new(tenant, record))
    }

    /// Deletes version `version` of file `name` of tenant `tenant` (`None`:
    /// every version), for `access` (see [`atrest::Files::delete`]); the
    /// keys are erased for good by [`Deployment::erase_deleted`]. Returns
    /// the versions deleted.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`Error::InTenant`]: not found, refused,
    /// catalog and audit errors.
    pub async fn delete(
        &self,
        access: &Access<'_>,
        file: &FileName<'_>,
    ) -> Result<Vec<FileRecord>, Error> {
        let (tenant_id, version, name) = self.select(file).await?;
        let deleted = self.files.delete(access, tenant_id, &name, version).await;
        named(file.tenant, tenant_id, deleted)
    }

    /// Makes the deletions of tenant `tenant` final: a crypto-erasure
    /// (see [`atrest::Files::erase_deleted`]), `progress` called after
    /// each batch of re-wrapped keys.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; key and catalog errors (running it again
    /// finishes the job).
    pub async fn erase_deleted(
        &self,
        tenant: &str,
        progress: &mut (dyn FnMut(atrest::tenant::RewrapProgress) + Send),
    ) -> Result<atrest::EraseReport, Error> {
        let tenant_id = self.tenant_id(tenant).await?;
        let erased = self.files.erase_deleted(tenant_id, 1000, progress).await;
        named(tenant, tenant_id, erased)
    }

    /// Seals several files of tenant `tenant` at once, for `access`, with
    /// their durable steps shared (see [`atrest::Files::seal_batch`]):
    /// each item becomes a new version of its name in its blob,
    /// `concurrency` written at a time. Each item is checked as in
    /// [`Deployment::put`]; an item refused or failed is an `Err` in its
    /// place and does not hold the others back. Every `Ok` version is
    /// durable when this returns.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`Error::Library`] if a shared step (the
    /// catalog, the audit log) failed: then no item was committed.
    pub async fn put_batch<R: AsyncBufRead + Send + Unpin>(
        &self,
        access: &Access<'_>,
        tenant: &str,
        items: Vec<BatchItem<R>>,
        concurrency: usize,
    ) -> Result<Vec<Result<PutReport, Error>>, Error> {
        let tenant_id = self.tenant_id(tenant).await?;
        let mut results: Vec<Option<Result<PutReport, Error>>> = Vec::with_capacity(items.len());
        let mut allowed = Vec::with_capacity(items.len());
        for mut item in items {
            if let std::borrow::Cow::Owned(name) = atrest::normalize_name(&item.name) {
                item.name = name;
            }
            match atrest::check_name("file name", &item.name) {
                Ok(()) => {
                    results.push(None);
                    allowed.push(item);
                }
                Err(error) => results.push(Some(Err(atrest::Error::from(error).into()))),
            }
        }
        // One result per item allowed, in order (`seal_batch`'s contract):
        // each fills the next place the name check left empty.
        let sealed = self
            .files
            .seal_batch(access, tenant_id, allowed, concurrency)
            .await;
        let sealed = named(tenant, tenant_id, sealed)?;
        let mut places = results.iter_mut().filter(|result| result.is_none());
        for result in sealed {
            if let Some(place) = places.next() {
                *place = Some(
                    named(tenant, tenant_id, result).map(|record| PutReport::new(tenant, record)),
                );
            }
        }
        Ok(results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(Error::Library(atrest::Error::Catalog(
                        atrest::CatalogError::Contract("a batch gave fewer results than items"),
                    )))
                })
            })
            .collect())
    }

    /// The record of a file version (the newest if `file.version` is
    /// `None`), from the catalog, authenticated: its wrapped key as
    /// re-wraps left it.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`Error::InTenant`] (not found: no such
    /// file or version).
    pub async fn record(&self, file: &FileName<'_>) -> Result<FileRecord, Error> {
        let (tenant, version, name) = self.select(file).await?;
        let record = self.files.record(tenant, &name, version).await;
        named(file.tenant, tenant, record)
    }

    /// The record of a file version as the catalog holds it, *not
    /// authenticated*: for choosing a version and a range before
    /// [`Deployment::get_record`] opens it (or [`Deployment::get`] reads
    /// it again), which authenticates the record it opens (and audits a
    /// refusal).
    ///
    /// # Errors
    /// As for [`Deployment::record`].
    pub async fn record_to_open(&self, file: &FileName<'_>) -> Result<FileRecord, Error> {
        let (tenant, version, name) = self.select(file).await?;
        let record = self.catalog.record(tenant, &name, version).await;
        named(file.tenant, tenant, record)
    }

    /// The tenant's id, the version and the name (composed, NFC) of
    /// `file`.
    async fn select<'a>(
        &self,
        file: &FileName<'a>,
    ) -> Result<(TenantId, Option<FileVersion>, std::borrow::Cow<'a, str>), Error> {
        let tenant = self.tenant_id(file.tenant).await?;
        let version = file.version.map(FileVersion::try_from).transpose()?;
        Ok((tenant, version, atrest::normalize_name(file.name)))
    }

    /// Gives `access` file `file` (or bytes `range` of it) into `sink`, as
    /// [`atrest::Files::open`] does; returns its record.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`Error::InTenant`]: no such file, the
    /// release refused, a blob that is not authentic, blob and I/O errors.
    pub async fn get(
        &self,
        access: &Access<'_>,
        file: &FileName<'_>,
        range: Option<Range<u64>>,
        sink: &mut dyn OpenSink,
    ) -> Result<FileRecord, Error> {
        self.open_file(access, file, None, range, sink).await
    }

    /// Gives `access` the file version whose record `record` is (read with
    /// [`Deployment::record_to_open`]; or bytes `range` of it) into `sink`,
    /// as [`Deployment::get`] does, without reading the record again: it is
    /// authenticated as the record of `file` before a byte is released
    /// ([`atrest::Files::open_record`]). Give `file` the record's version to
    /// open that version and no other.
    ///
    /// # Errors
    /// As for [`Deployment::get`].
    pub async fn get_record(
        &self,
        access: &Access<'_>,
        file: &FileName<'_>,
        record: FileRecord,
        range: Option<Range<u64>>,
        sink: &mut dyn OpenSink,
    ) -> Result<FileRecord, Error> {
        self.open_file(access, file, Some(record), range, sink)
            .await
    }

    /// [`Deployment::get`], or [`Deployment::get_record`] with `record`.
    async fn open_file(
        &self,
        access: &Access<'_>,
        file: &FileName<'_>,
        record: Option<FileRecord>,
        range: Option<Range<u64>>,
        sink: &mut dyn OpenSink,
    ) -> Result<FileRecord, Error> {
        let (tenant, version, name) = self.select(file).await?;
        let selector = FileSelector {
            tenant,
            name: &name,
            version,
        };
        let opened = match record {
            Some(record) => {
                self.files
                    .open_record(access, &selector, record, range, sink)
                    .await
            }
            None => self.files.open(access, &selector, range, sink).await,
        };
        named(file.tenant, tenant, opened)
    }

    /// Releases the key of a file version to `access` for decryption on
    /// the recipient's side (see [`atrest::Files::deliver_key`]): audited
    /// as a release and as a delivery to them.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`Error::InTenant`]: not found, refused,
    /// a record that does not authenticate, audit errors.
    pub async fn deliver_key(
        &self,
        access: &Access<'_>,
        file: &FileName<'_>,
    ) -> Result<(FileRecord, atrest::DeliveredKey), Error> {
        let (tenant, version, name) = self.select(file).await?;
        let selector = FileSelector {
            tenant,
            name: &name,
            version,
        };
        let delivered = self.files.deliver_key(access, &selector).await;
        named(file.tenant, tenant, delivered)
    }

    /// The ciphertext of a file version as stored, for a client that
    /// holds its delivered key (see [`atrest::Files::ciphertext`]). No key
    /// is released.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`Error::InTenant`]: not found, a record
    /// that does not authenticate, a blob that cannot be opened.
    pub async fn ciphertext(
        &self,
        file: &FileName<'_>,
    ) -> Result<(FileRecord, atrest::Ciphertext), Error> {
        let (tenant, version, name) = self.select(file).await?;
        let selector = FileSelector {
            tenant,
            name: &name,
            version,
        };
        let opened = self.files.ciphertext(&selector).await;
        named(file.tenant, tenant, opened)
    }

    /// Every file version of `tenant` (or of every tenant), by name.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; catalog errors.
    pub async fn list(&self, tenant: Option<&str>) -> Result<Vec<Listing>, Error> {
        let tenants = match tenant {
            Some(name) => vec![(name.to_owned(), self.tenant_id(name).await?)],
            None => self.tenant_names().await?,
        };
        let mut listings = Vec::new();
        for (tenant, id) in tenants {
            let readable = self.files.keys().tenant(id).await?.state == TenantState::Active;
            for record in self.catalog.records(id).await? {
                listings.push(Listing::new(&tenant, &record, readable));
            }
        }
        Ok(listings)
    }
}

/// `result`, its error speaking of tenant `id` by its name `name`.
pub(crate) fn named<T, E: Into<atrest::Error>>(
    name: &str,
    id: TenantId,
    result: Result<T, E>,
) -> Result<T, Error> {
    result.map_err(|error| Error::InTenant {
        name: name.to_owned(),
        id: id.to_string(),
        source: Box::new(error.into()),
    })
}
