//! Sealing and opening files: the composition of the key hierarchy, the
//! stream format and the audit trail.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atrest_audit::{Audit, Event, FileRef, Outcome, Record, Text};
use atrest_filekey::{FileContext, FileKey, FileVersion, KeyVersion, TenantId};
use atrest_stream::format::FORMAT_VERSION;
use atrest_stream::{
    Backend, Opener, Options, Parallelism, PlaintextChunk, PlaintextSink, Sealer, SegmentSize,
    WriteSink,
};
use atrest_tenant::blocking::block_on;
use atrest_tenant::{Access, KeyHierarchy, MetadataKey, RewrapProgress, RewrapReport};

use crate::blob::{BlobDigest, BlobHasher, BlobName, Blobs};
use crate::catalog::{Catalog, SealInProgress, SealTicket, SealedBlob};
use crate::record::TaggedFields;
use crate::{CatalogError, Error, ErrorKind, FileRecord, RecordError};

/// How files are sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealOptions {
    /// Segment size of new blobs (default 64 KiB).
    pub segment_size: SegmentSize,
    /// AES-256-GCM implementation.
    pub backend: Backend,
    /// Threads for encryption and decryption. Reading, cryptography and
    /// writing overlap, each on its own thread.
    ///
    /// The default is one per core but one, at least one: the reading and
    /// writing threads need a core of their own when the data comes from and
    /// goes to files (measured with `cli_throughput`: on two cores, one
    /// cryptography thread is 1.4 times faster file to file than two).
    pub parallelism: Parallelism,
    /// Whether each record keeps the SHA-256 digest of its blob (default:
    /// yes), so that copies can be checked and repaired without a key
    /// ([`crate::blobs::ReplicatedBlobs`]). Hashing runs at about 1.4 GB/s
    /// per core (SHA extensions; `openssl speed -evp sha256` gives the
    /// machine's figure), on the thread that writes the blob; a store with
    /// one location may turn it off: reads authenticate every segment
    /// anyway, and a check then compares lengths only.
    pub blob_digests: bool,
}

impl Default for SealOptions {
    fn default() -> Self {
        Self {
            segment_size: SegmentSize::DEFAULT,
            backend: Backend::default(),
            parallelism: Parallelism::threads(
                std::thread::available_parallelism()
                    .map_or(1, |cores| cores.get().saturating_sub(1)),
            ),
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
/// Shareable across threads.
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

/// One file of [`Files::seal_batch`]: a new version of file `name` whose
/// ciphertext goes to blob `blob` (choose it with [`BlobName::random`]; a
/// caller that records it before the seal can later ask the catalog
/// whether the version was committed).
#[derive(Debug)]
pub struct BatchItem<R> {
    /// The file's name.
    pub name: String,
    /// The blob the ciphertext goes to (a fresh random name).
    pub blob: BlobName,
    /// The plaintext.
    pub plaintext: R,
    /// The id of the request it comes from, for its audit records (see
    /// [`atrest_audit::in_requests`]); `None`: the id of the caller's
    /// scope, if any.
    pub request: Option<Text>,
}

/// What [`Files::collect_abandoned_seals`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectReport {
    /// Seals in progress that had been started before the cut-off, now
    /// forgotten, with their blobs deleted.
    pub abandoned_seals: Vec<SealInProgress>,
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

    fn audit(&self, context: &FileContext, event: Event, outcome: Outcome) -> Result<(), Error> {
        let record = Record::new(self.actor.clone(), event)
            .tenant(Text::lossy(context.tenant.to_string()))
            .outcome(outcome);
        let _ = block_on(self.audit.record(record))?;
        Ok(())
    }

    fn file_ref(context: &FileContext) -> FileRef {
        FileRef {
            file: Text::lossy(context.file.to_string()),
            version: u64::from(context.version),
        }
    }

    fn stream_options(&self) -> Options {
        Options::default()
            .segment_size(self.options.segment_size)
            .backend(self.options.backend)
            .parallelism(self.options.parallelism)
    }

    /// Seals an upload as a new version of file `name` of `tenant`: the
    /// catalog allocates the version, a fresh file key is wrapped under the
    /// tenant's current TIK, everything `plaintext` yields is encrypted
    /// into a new blob with a random name (the tenant, file and version
    /// bound as associated data, not stored), and once the blob is durable
    /// the record is committed to the catalog. Audited.
    ///
    /// Several seals of one name at once (threads, processes) each get
    /// their own version. The key is dropped (zeroized) before this
    /// returns. If it fails, the blob and the catalog's row of the seal in
    /// progress are removed (a process that dies leaves them for
    /// [`Files::collect_abandoned_seals`]).
    ///
    /// # Errors
    /// [`Error::Catalog`] for an invalid name; [`Error::Keys`] if the
    /// tenant's keys cannot be used; [`Error::Stream`] or [`Error::Io`] if
    /// reading fails; [`Error::Blob`]; [`Error::Audit`].
    pub fn seal<R: Read + Send>(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        name: &str,
        plaintext: R,
    ) -> Result<FileRecord, Error> {
        let blob = BlobName::random()?;
        let ticket = block_on(self.catalog.begin_seal(tenant, name, &blob))?;
        let result = self.seal_into(access, &ticket, plaintext);
        let context = &ticket.context;
        match result {
            Ok(record) => {
                let event = Event::FileSealed {
                    file: Self::file_ref(context),
                    bytes: record.plaintext_len,
                    segments: record.segments(),
                };
                self.audit(context, event, Outcome::Success)?;
                Ok(record)
            }
            Err(error) => {
                // Best effort, blob first: if this process dies in between,
                // the seal's row still names the blob, and
                // `collect_abandoned_seals` removes both.
                let _ = self.blobs.delete(&ticket.blob);
                let _ = block_on(self.catalog.abandon_seal(&ticket));
                let event = Event::FileSealed {
                    file: Self::file_ref(context),
                    bytes: 0,
                    segments: 0,
                };
                let outcome = Outcome::Failed {
                    error: Text::lossy(error.to_string()),
                };
                self.audit(context, event, outcome)?;
                Err(error)
            }
        }
    }

    fn seal_into<R: Read + Send>(
        &self,
        access: &Access<'_>,
        ticket: &SealTicket,
        plaintext: R,
    ) -> Result<FileRecord, Error> {
        let context = &ticket.context;
        let (mut key, wrapped_key) = block_on(self.keys.new_file_key(access, context))?;
        match block_on(self.catalog.attach_key(ticket, &wrapped_key)) {
            Ok(()) => {}
            Err(Error::Catalog(CatalogError::TikRetired { .. })) => {
                // Another process rolled the TIK and retired the version
                // this process still had cached as current: make the key
                // again under the current version.
                self.keys.flush_tenant(context.tenant);
                let (fresh, wrapped_key) = block_on(self.keys.new_file_key(access, context))?;
                key = fresh;
                block_on(self.catalog.attach_key(ticket, &wrapped_key))?;
            }
            Err(error) => return Err(error),
        }
        let upload =
            CountingWriter::new(self.blobs.create(&ticket.blob)?, self.options.blob_digests);
        let associated_data = context.encode();
        let encrypted = Sealer::new(&key, &associated_data, self.stream_options())
            .seal_stream(plaintext, upload);
        drop(key);
        let (upload, plaintext_len) = encrypted?;
        let (blob_len, digest) = upload.finish()?;
        let metadata = block_on(self.keys.metadata_key(context.tenant))?;
        let sealed = self.sealed_blob(&metadata, ticket, plaintext_len, blob_len, digest);
        block_on(self.catalog.commit_seal(ticket, &sealed))
    }

    /// What a seal commits, with the tag of the record it makes.
    fn sealed_blob(
        &self,
        metadata: &MetadataKey,
        ticket: &SealTicket,
        plaintext_len: u64,
        blob_len: u64,
        digest: Option<BlobDigest>,
    ) -> SealedBlob {
        let segment_size = self.options.segment_size.get();
        let tag = TaggedFields {
            tenant: ticket.context.tenant,
            name: &ticket.name,
            file: ticket.context.file,
            version: ticket.context.version,
            blob: &ticket.blob,
            plaintext_len,
            blob_len,
            blob_sha256: digest,
            segment_size,
            format: FORMAT_VERSION,
        }
        .tag(metadata);
        SealedBlob {
            plaintext_len,
            blob_len,
            blob_sha256: digest,
            segment_size,
            format: FORMAT_VERSION,
            tag,
        }
    }

    /// Seals several uploads of `tenant` at once, each as in
    /// [`Files::seal`] but with the durable steps shared: one catalog
    /// transaction records the seals in progress, one attaches their keys
    /// (made together), the blobs are written (`threads` at a time) and
    /// made durable while the keys' audit records are committed together,
    /// and once both are done one transaction commits every version whose
    /// blob is durable; the `file_sealed` records are committed together.
    /// Meant for many small files, each read and encrypted on one thread.
    ///
    /// Returns one result per item, in order. An item that fails (reading
    /// it, its blob) is cleaned up like a failed [`Files::seal`] and does
    /// not hold the others back; once this returns, every `Ok` version is
    /// committed and durable.
    ///
    /// # Errors
    /// Those of the shared steps ([`Error::Catalog`], [`Error::Audit`]).
    /// If recording or keying the seals, or committing the keys' audit
    /// records, failed, nothing was committed and what was begun (blobs
    /// included) is cleaned up. If the commit failed, the seals are
    /// left in progress (with SQLite, none was committed), for
    /// [`Files::collect_abandoned_seals`]; if auditing failed, the versions
    /// are committed: look them up by their blob names to know.
    pub fn seal_batch<R: Read + Send>(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        items: Vec<BatchItem<R>>,
        threads: usize,
    ) -> Result<Vec<Result<FileRecord, Error>>, Error> {
        let threads = threads.max(1);
        let seals: Vec<(String, BlobName)> = items
            .iter()
            .map(|item| (item.name.clone(), item.blob.clone()))
            .collect();
        let tickets = block_on(self.catalog.begin_seals(tenant, &seals))?;
        // Each item's audit records carry its own request's id.
        let by_file: BTreeMap<(String, u64), Text> = tickets
            .iter()
            .zip(&items)
            .filter_map(|(ticket, item)| {
                let request = item.request.clone()?;
                let file = ticket.context.file.to_string();
                Some(((file, u64::from(ticket.context.version)), request))
            })
            .collect();
        atrest_audit::in_requests(by_file, || {
            self.seal_tickets(access, tenant, items, &tickets, threads)
        })
    }

    /// The rest of [`Files::seal_batch`], once its seals are begun.
    fn seal_tickets<R: Read + Send>(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        items: Vec<BatchItem<R>>,
        tickets: &[SealTicket],
        threads: usize,
    ) -> Result<Vec<Result<FileRecord, Error>>, Error> {
        let keyed = self
            .batch_keys(access, tickets)
            .and_then(|(keys, records)| {
                let metadata = block_on(self.keys.metadata_key(tenant))?;
                Ok((keys, records, metadata))
            });
        let (keys, records, metadata) = match keyed {
            Ok(keyed) => keyed,
            Err(error) => {
                self.abandon_all(tickets);
                return Err(error);
            }
        };
        // Encrypt each item into its blob; the key is dropped (zeroized)
        // when its item is done.
        let work: Vec<_> = items
            .into_iter()
            .zip(keys)
            .zip(tickets)
            .map(|((item, key), ticket)| (item.plaintext, key, ticket))
            .collect();
        // The keys' records are committed to the audit trail while the
        // blobs are written and flushed; both must be done before any
        // record of the batch is committed to the catalog.
        let (sealed, recorded) = std::thread::scope(|scope| {
            let recording = records.map(|records| scope.spawn(move || block_on(records.commit())));
            let sealed = parallel(threads, work, |(plaintext, key, ticket)| {
                let key = key?;
                self.write_blob(&key, &metadata, ticket, plaintext)
            });
            // The blobs' names (their directory entries) become durable
            // together, before any record names them.
            let sealed = match self.blobs.make_names_durable() {
                Ok(()) => sealed,
                Err(error) => {
                    let message = error.to_string();
                    sealed
                        .into_iter()
                        .map(|s| s.and_then(|_| Err(Error::blob(ErrorKind::Io, message.clone()))))
                        .collect()
                }
            };
            let recorded = recording.map_or(Ok(()), |recording| {
                recording
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            (sealed, recorded)
        });
        if let Err(error) = recorded {
            // Keys whose making is not in the audit trail protect nothing
            // that is published.
            self.abandon_all(tickets);
            return Err(error.into());
        }
        let committed: Vec<(&SealTicket, SealedBlob)> = tickets
            .iter()
            .zip(&sealed)
            .filter_map(|(ticket, sealed)| sealed.as_ref().ok().map(|s| (ticket, *s)))
            .collect();
        // If the commit fails, some versions may be committed all the same
        // (a catalog without a batch transaction): the seals in progress
        // and their blobs are left for `collect_abandoned_seals`, which
        // never touches a committed version.
        let records = block_on(self.catalog.commit_seals(&committed))?;
        let mut records = records.into_iter();
        let results: Vec<Result<FileRecord, Error>> = sealed
            .into_iter()
            .map(|sealed| match sealed {
                Ok(_) => records.next().ok_or(Error::Catalog(CatalogError::Contract(
                    "commit_seals gave fewer records than seals",
                ))),
                Err(error) => Err(error),
            })
            .collect();
        let mut records = Vec::with_capacity(results.len());
        for (ticket, result) in tickets.iter().zip(&results) {
            let context = &ticket.context;
            let (event, outcome) = match result {
                Ok(record) => (
                    Event::FileSealed {
                        file: Self::file_ref(context),
                        bytes: record.plaintext_len,
                        segments: record.segments(),
                    },
                    Outcome::Success,
                ),
                Err(error) => {
                    let _ = self.blobs.delete(&ticket.blob);
                    let _ = block_on(self.catalog.abandon_seal(ticket));
                    (
                        Event::FileSealed {
                            file: Self::file_ref(context),
                            bytes: 0,
                            segments: 0,
                        },
                        Outcome::Failed {
                            error: Text::lossy(error.to_string()),
                        },
                    )
                }
            };
            records.push(
                Record::new(self.actor.clone(), event)
                    .tenant(Text::lossy(context.tenant.to_string()))
                    .outcome(outcome),
            );
        }
        let _ = block_on(self.audit.record_all(records))?;
        Ok(results)
    }

    /// Makes and attaches (in one transaction) a file key for each seal of
    /// a batch; the keys of items whose key could not be made are errors.
    /// The keys' `file_key_wrapped` records are returned for the caller to
    /// commit before it commits any record of the batch.
    fn batch_keys(&self, access: &Access<'_>, tickets: &[SealTicket]) -> Result<BatchKeys, Error> {
        let mut retried = false;
        loop {
            let contexts: Vec<FileContext> = tickets.iter().map(|t| t.context).collect();
            let Some(tenant) = contexts.first().map(|c| c.tenant) else {
                return Ok((Vec::new(), None));
            };
            let (made, records) = block_on(
                self.keys
                    .new_file_keys_records_pending(access, tenant, &contexts),
            )?;
            let made: Vec<Result<_, Error>> = made
                .into_iter()
                .map(|made| made.map_err(Error::from))
                .collect();
            let wraps: Vec<(&SealTicket, &atrest_filekey::WrappedFileKey)> = tickets
                .iter()
                .zip(&made)
                .filter_map(|(ticket, made)| made.as_ref().ok().map(|(_, w)| (ticket, w)))
                .collect();
            match block_on(self.catalog.attach_keys(&wraps)) {
                Ok(()) => {}
                Err(error) => {
                    // The keys were made: their records go to the audit
                    // trail even though nothing will use them.
                    block_on(records.commit())?;
                    match error {
                        Error::Catalog(CatalogError::TikRetired { .. }) if !retried => {
                            // As in `seal_into`: another process retired the
                            // TIK version this one had cached as current.
                            retried = true;
                            if let Some(ticket) = tickets.first() {
                                self.keys.flush_tenant(ticket.context.tenant);
                            }
                            continue;
                        }
                        error => return Err(error),
                    }
                }
            }
            let keys = made
                .into_iter()
                .map(|made| made.map(|(key, _)| key))
                .collect();
            return Ok((keys, Some(records)));
        }
    }

    /// Encrypts `plaintext` into the ticket's blob on this thread and makes
    /// its bytes durable (its name is made durable with the batch's).
    fn write_blob<R: Read>(
        &self,
        key: &FileKey,
        metadata: &MetadataKey,
        ticket: &SealTicket,
        mut plaintext: R,
    ) -> Result<SealedBlob, Error> {
        let upload = CountingWriter::new(
            self.blobs.create_deferred(&ticket.blob)?,
            self.options.blob_digests,
        );
        // One thread per item: the batch runs items side by side.
        let options = self.stream_options().parallelism(Parallelism::One);
        let mut encryptor = Sealer::new(key, &ticket.context.encode(), options).writer(upload)?;
        let plaintext_len = match std::io::copy(&mut plaintext, &mut encryptor) {
            Ok(len) => len,
            Err(error) => {
                // The upload is dropped unfinished: nothing is published.
                drop(encryptor.abandon());
                return Err(error.into());
            }
        };
        let upload = encryptor.finish()?;
        let (blob_len, digest) = upload.finish()?;
        self.blobs.make_durable(&ticket.blob)?;
        Ok(self.sealed_blob(metadata, ticket, plaintext_len, blob_len, digest))
    }

    /// Best-effort clean-up of a batch that failed as a whole: blobs first,
    /// then the seals' rows (a sealed version is left alone).
    fn abandon_all(&self, tickets: &[SealTicket]) {
        for ticket in tickets {
            let _ = self.blobs.delete(&ticket.blob);
            let _ = block_on(self.catalog.abandon_seal(ticket));
        }
    }

    /// The record of file `name` of `tenant`: version `version`, or the
    /// newest if `None`.
    ///
    /// # Errors
    /// [`Error::Catalog`] ([`ErrorKind::NotFound`] if there is no such file
    /// or version).
    pub fn record(
        &self,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<FileRecord, Error> {
        let record = block_on(self.catalog.record(tenant, name, version))?;
        self.authenticate(&record, tenant, name, version)?;
        Ok(record)
    }

    /// Checks a record's tag under its tenant's metadata key.
    fn authenticate(
        &self,
        record: &FileRecord,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<(), Error> {
        let metadata = block_on(self.keys.metadata_key(record.tenant))?;
        record.authenticate(&metadata, tenant, name, version)
    }

    /// The file key of a record read for `name` and `version`: the key is
    /// released first (the policy decides, and the hierarchy audits a
    /// release or a refusal), then the record is authenticated; a record
    /// that fails is audited as a failed open and its key dropped unused.
    fn key_for(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        record: &FileRecord,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<FileKey, Error> {
        if record.tenant != tenant {
            // Another tenant's record answered for this one: nothing of it
            // is released.
            return Err(CatalogError::Tampered {
                tenant,
                name: name.to_owned(),
                version: record.version,
            }
            .into());
        }
        let key = self.release(access, record)?;
        if let Err(error) = self.authenticate(record, tenant, name, version) {
            drop(key);
            self.audit_open(access, record, Err(&error), None)?;
            return Err(error);
        }
        Ok(key)
    }

    fn release(&self, access: &Access<'_>, record: &FileRecord) -> Result<FileKey, Error> {
        if record.format != FORMAT_VERSION {
            return Err(RecordError::UnsupportedFormat(record.format).into());
        }
        let _ = record.segment_size_checked()?;
        Ok(block_on(self.keys.release_file_key(
            access,
            &record.context(),
            &record.wrapped_key,
        ))?)
    }

    fn audit_open(
        &self,
        access: &Access<'_>,
        record: &FileRecord,
        result: Result<u64, &Error>,
        range: Option<[u64; 2]>,
    ) -> Result<(), Error> {
        let context = record.context();
        let (bytes, segments, outcome) = match result {
            Ok(bytes) => {
                let segments = match range {
                    Some([start, end]) => record.segments_in(start, end),
                    None => record.segments(),
                };
                (bytes, segments, Outcome::Success)
            }
            Err(error) => (
                0,
                0,
                Outcome::Failed {
                    error: Text::lossy(error.to_string()),
                },
            ),
        };
        let event = Event::FileOpened {
            file: Self::file_ref(&context),
            principal: Text::lossy(access.principal()),
            bytes,
            segments,
            range,
        };
        self.audit(&context, event, outcome)
    }

    /// Audits each copy of a blob a successful read passed over (missing,
    /// unreachable or damaged: `blob_copy_passed_over`, with the location
    /// and the error), so the operator knows to scrub.
    fn audit_passed_over(
        &self,
        record: &FileRecord,
        passed_over: &[(usize, Error)],
    ) -> Result<(), Error> {
        let context = record.context();
        for (location, error) in passed_over {
            let event = Event::BlobCopyPassedOver {
                file: Self::file_ref(&context),
                blob: Text::lossy(record.blob.as_str()),
                location: *location as u64,
                error: Text::lossy(error.to_string()),
            };
            self.audit(&context, event, Outcome::Success)?;
        }
        Ok(())
    }

    /// Decrypts the record's whole blob into `out`; returns the plaintext
    /// length written.
    ///
    /// Copies are tried in turn (see [`crate::blobs::ReplicatedBlobs`]): a
    /// copy is streamed from its start while nothing has been released;
    /// once some plaintext has been, the read resumes from the next copy
    /// at the first byte not yet released ([`Files::read_range_copies`]).
    /// With one copy, this is one attempt.
    fn read_copies<S: PlaintextSink + Send>(
        &self,
        key: &FileKey,
        record: &FileRecord,
        out: &mut Released<S>,
        passed_over: &mut Vec<(usize, Error)>,
    ) -> Result<u64, Error> {
        // The blob must have been sealed with the segment size the
        // (authenticated) record says, whatever its prefix claims.
        let segment_size = record.segment_size_checked()?;
        let associated_data = record.context().encode();
        let opener = Opener::new(key, &associated_data, self.stream_options())
            .expect_segment_size(segment_size);
        let locations = self.blobs.locations().max(1);
        for location in 0..locations {
            let attempt = self.blobs.open_at(&record.blob, location).and_then(|blob| {
                opener
                    .open_stream_into(blob, out)
                    .map(|_| ())
                    .map_err(Error::from)
            });
            match attempt {
                Ok(()) => return Ok(out.written),
                // Another copy cannot help a failing output.
                Err(error) if out.failed => return Err(error),
                Err(error) => passed_over.push((location, error)),
            }
            if out.written > 0 {
                return self.read_range_copies(
                    &opener,
                    record,
                    0..record.plaintext_len,
                    out,
                    location + 1,
                    passed_over,
                );
            }
        }
        Err(first_failure(passed_over))
    }

    /// Decrypts plaintext bytes `range` of the record's blob into `out`
    /// with positioned reads, from copy `from` on; returns the plaintext
    /// length written (what `out` had already released included).
    ///
    /// Each copy tried is authenticated first (header, key commitment and
    /// last segment), and the read resumes at the first byte of `range`
    /// not yet released. When a copy is missing, unreachable, cut short or
    /// fails authentication, the next copy is tried. Only verified segments
    /// ever reach `out`, so what was released is the file's whichever copy
    /// it came from. A failure of `out` itself ends the read. Each copy
    /// passed over is added to `passed_over`; if no copy serves, the first
    /// of them is returned.
    fn read_range_copies<S: PlaintextSink>(
        &self,
        opener: &Opener<'_>,
        record: &FileRecord,
        range: Range<u64>,
        out: &mut Released<S>,
        from: usize,
        passed_over: &mut Vec<(usize, Error)>,
    ) -> Result<u64, Error> {
        for location in from..self.blobs.locations().max(1) {
            let at = range.start.saturating_add(out.written);
            let attempt = self
                .blobs
                .ranged_at(&record.blob, location)
                .and_then(|blob| {
                    opener
                        .random_access(&*blob)
                        .and_then(|reader| {
                            if reader.plaintext_len() == record.plaintext_len {
                                reader.copy_range(at..range.end, &mut *out).map(|_| ())
                            } else {
                                Err(atrest_stream::Error::Malformed(
                                    "the blob's length does not match its record",
                                ))
                            }
                        })
                        .map_err(Error::from)
                });
            match attempt {
                Ok(()) => return Ok(out.written),
                Err(error) if out.failed => return Err(error),
                Err(error) => passed_over.push((location, error)),
            }
        }
        Err(first_failure(passed_over))
    }

    /// Opens file `name` of `tenant` (version `version`, or the newest) for
    /// `access`: the record is read from the catalog, the key-release
    /// policy is checked and the file key unwrapped (both audited by the
    /// hierarchy), then every byte of the blob is decrypted into `out`, and
    /// the read is audited. Returns the record and the writer.
    ///
    /// Plaintext reaches `out` only once verified, a run of segments at a
    /// time; only an `Ok` return means the whole file, end included, was
    /// authentic. On an error, discard what was written.
    ///
    /// # Errors
    /// [`Error::Catalog`] if there is no such file or version;
    /// [`Error::Keys`] if the release is refused or the key cannot be
    /// unwrapped; [`Error::Stream`] if the blob is not authentic for this
    /// record (tampered, truncated, another file's) or I/O fails;
    /// [`Error::Record`]; [`Error::Blob`]; [`Error::Audit`].
    pub fn open<W: Write + Send>(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
        out: W,
    ) -> Result<(FileRecord, W), Error> {
        let mut sink = WriteSink(out);
        let record = self.open_into(access, tenant, name, version, &mut sink)?;
        Ok((record, sink.0))
    }

    /// As [`Files::open`], into a [`PlaintextSink`]: each run of verified
    /// segments is handed over in a buffer of its own
    /// ([`PlaintextChunk`]), which a sink that passes the plaintext on (an
    /// HTTP response body, say) can keep instead of copying. Returns the
    /// record.
    ///
    /// # Errors
    /// As for [`Files::open`].
    pub fn open_into<S: PlaintextSink + Send>(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
        sink: &mut S,
    ) -> Result<FileRecord, Error> {
        let record = block_on(self.catalog.record(tenant, name, version))?;
        let key = self.key_for(access, tenant, &record, name, version)?;
        let mut out = Released::new(sink);
        let mut passed_over = Vec::new();
        let result = self.read_copies(&key, &record, &mut out, &mut passed_over);
        drop(key);
        if result.is_ok() {
            self.audit_passed_over(&record, &passed_over)?;
        }
        let len = result.and_then(|len| record.check_len(len));
        self.audit_open(access, &record, len.as_ref().copied(), None)?;
        let _ = len?;
        Ok(record)
    }

    /// Opens bytes `range` of file `name` of `tenant` (version `version`,
    /// or the newest) for `access`, decrypting only the segments that cover
    /// it (positioned reads of the blob), into `out`. Audited with the
    /// range. Returns the record and the number of bytes written.
    ///
    /// # Errors
    /// [`Error::InvalidRange`] if the range is not within the file; as for
    /// [`Files::open`] otherwise.
    pub fn open_range<W: Write>(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
        range: Range<u64>,
        out: &mut W,
    ) -> Result<(FileRecord, u64), Error> {
        self.open_range_into(access, tenant, name, version, range, &mut WriteSink(out))
    }

    /// As [`Files::open_range`], into a [`PlaintextSink`].
    ///
    /// # Errors
    /// As for [`Files::open_range`].
    pub fn open_range_into<S: PlaintextSink>(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
        range: Range<u64>,
        sink: &mut S,
    ) -> Result<(FileRecord, u64), Error> {
        let record = block_on(self.catalog.record(tenant, name, version))?;
        if range.start > range.end || range.end > record.plaintext_len {
            return Err(Error::InvalidRange {
                start: range.start,
                end: range.end,
                len: record.plaintext_len,
            });
        }
        let key = self.key_for(access, tenant, &record, name, version)?;
        let mut passed_over = Vec::new();
        let result = record.segment_size_checked().and_then(|segment_size| {
            let associated_data = record.context().encode();
            let opener = Opener::new(&key, &associated_data, self.stream_options())
                .expect_segment_size(segment_size);
            self.read_range_copies(
                &opener,
                &record,
                range.clone(),
                &mut Released::new(sink),
                0,
                &mut passed_over,
            )
        });
        if result.is_ok() {
            self.audit_passed_over(&record, &passed_over)?;
        }
        drop(key);
        self.audit_open(
            access,
            &record,
            result.as_ref().copied(),
            Some([range.start, range.end]),
        )?;
        Ok((record, result?))
    }

    /// Rolls the tenant's TIK, then re-wraps every wrapped file key in the
    /// catalog (seals in progress included) under the new version, in
    /// batches of `batch_size`, calling `progress` after each; then retires
    /// every older TIK version nothing refers to any more. Resumable: run
    /// it again after an interruption (it rolls once more, which is
    /// harmless). Returns the new version, the re-wrap report and the
    /// versions retired.
    ///
    /// # Errors
    /// Those of [`KeyHierarchy::roll_tik`],
    /// [`KeyHierarchy::rewrap_file_keys`] and [`Files::retire_unused_tiks`].
    pub fn rotate_tik(
        &self,
        tenant: TenantId,
        batch_size: usize,
        progress: &mut dyn FnMut(RewrapProgress),
    ) -> Result<(KeyVersion, RewrapReport, Vec<KeyVersion>), Error> {
        let version = block_on(self.keys.roll_tik(tenant))?;
        let report = self.rewrap(tenant, batch_size, progress)?;
        let retired = self.retire_unused_tiks(tenant)?;
        Ok((version, report, retired))
    }

    /// Re-wraps every wrapped file key of `tenant` in the catalog that is
    /// under an older TIK version (see [`KeyHierarchy::rewrap_file_keys`]).
    ///
    /// # Errors
    /// As for [`KeyHierarchy::rewrap_file_keys`].
    pub fn rewrap(
        &self,
        tenant: TenantId,
        batch_size: usize,
        progress: &mut dyn FnMut(RewrapProgress),
    ) -> Result<RewrapReport, Error> {
        Ok(block_on(self.keys.rewrap_file_keys(
            tenant,
            self.catalog.as_ref(),
            batch_size,
            progress,
        ))?)
    }

    /// Retires (destroys) TIK version `version` of `tenant`, if no record
    /// and no seal in flight in the catalog uses it and it is not current.
    ///
    /// # Errors
    /// [`atrest_tenant::Error::TikInUse`] (as [`Error::Keys`]) if something
    /// still uses it; as for [`KeyHierarchy::retire_tik`].
    pub fn retire_tik(&self, tenant: TenantId, version: KeyVersion) -> Result<(), Error> {
        Ok(block_on(self.keys.retire_tik(
            tenant,
            version,
            self.catalog.as_ref(),
        ))?)
    }

    /// Retires every TIK version of `tenant` but the current one that
    /// nothing in the catalog uses (records and seals in flight); versions
    /// still in use are kept, and one another process retires meanwhile is
    /// passed over. Returns those this call retired.
    ///
    /// # Errors
    /// As for [`Files::retire_tik`], except that a version in use is kept,
    /// not an error.
    pub fn retire_unused_tiks(&self, tenant: TenantId) -> Result<Vec<KeyVersion>, Error> {
        let current = block_on(self.keys.tenant(tenant))?.current_tik;
        let mut retired = Vec::new();
        for version in block_on(self.keys.tik_versions(tenant))? {
            if version == current {
                continue;
            }
            match self.retire_tik(tenant, version) {
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
    pub fn collect_abandoned_seals(&self, older_than: Duration) -> Result<CollectReport, Error> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |at| at.as_secs());
        let mut report = CollectReport::default();
        for seal in block_on(self.catalog.seals_in_progress())? {
            if seal.started_at >= cutoff {
                continue;
            }
            // The row goes first: an upload still running past the cut-off
            // then fails at its commit instead of publishing a record whose
            // blob is gone. A crash between the two leaves only a blob no
            // record names, which is garbage, never a lost file.
            block_on(self.catalog.abandon_seal(&seal.ticket))?;
            self.blobs.delete(&seal.ticket.blob)?;
            report.abandoned_seals.push(seal);
        }
        Ok(report)
    }
}

/// The first of the errors of the copies a read tried.
fn first_failure(passed_over: &mut Vec<(usize, Error)>) -> Error {
    if passed_over.is_empty() {
        Error::blob(ErrorKind::NotFound, "no copy of the blob")
    } else {
        passed_over.swap_remove(0).1
    }
}

/// Runs `work` on every input, `threads` at a time, on scoped threads;
/// returns the results in the inputs' order.
fn parallel<T: Send, U: Send>(
    threads: usize,
    inputs: Vec<T>,
    work: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    let count = inputs.len();
    let queue = std::sync::Mutex::new(inputs.into_iter().enumerate());
    let results = std::sync::Mutex::new(Vec::with_capacity(count));
    let next = || {
        queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next()
    };
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, count.max(1)) {
            let _ = scope.spawn(|| {
                while let Some((index, input)) = next() {
                    let output = work(input);
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((index, output));
                }
            });
        }
    });
    let mut results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, output)| output).collect()
}

/// A batch's file keys (or why each could not be made), with their
/// records still to commit (none for an empty batch).
type BatchKeys = (
    Vec<Result<FileKey, Error>>,
    Option<atrest_tenant::PendingKeyRecords>,
);

/// The output of a read: counts the plaintext released, and notes whether
/// the output itself failed (then no other copy of the blob can help).
/// Range reads write through it as a [`Write`].
struct Released<S> {
    inner: S,
    written: u64,
    failed: bool,
}

impl<S> Released<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            written: 0,
            failed: false,
        }
    }

    fn count(&mut self, len: usize, result: std::io::Result<()>) -> std::io::Result<()> {
        match result {
            Ok(()) => {
                self.written += len as u64;
                Ok(())
            }
            Err(error) => {
                self.failed = true;
                Err(error)
            }
        }
    }
}

impl<S: PlaintextSink> PlaintextSink for Released<S> {
    fn write_plaintext(&mut self, plaintext: &[u8]) -> std::io::Result<()> {
        let result = self.inner.write_plaintext(plaintext);
        self.count(plaintext.len(), result)
    }

    fn take_chunk(&mut self, chunk: PlaintextChunk) -> std::io::Result<()> {
        let len = chunk.len();
        let result = self.inner.take_chunk(chunk);
        self.count(len, result)
    }

    fn finish_plaintext(&mut self) -> std::io::Result<()> {
        self.inner
            .finish_plaintext()
            .inspect_err(|_| self.failed = true)
    }
}

impl<S: PlaintextSink> Write for Released<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_plaintext(buf).map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.finish_plaintext()
    }
}

/// Counts (and digests, if asked) what goes through to the blob.
struct CountingWriter<W> {
    inner: W,
    written: u64,
    digest: Option<BlobHasher>,
}

impl<W> CountingWriter<W> {
    fn new(inner: W, digest: bool) -> Self {
        Self {
            inner,
            written: 0,
            digest: digest.then(BlobHasher::new),
        }
    }
}

impl CountingWriter<Box<dyn crate::blob::BlobUpload + '_>> {
    /// Completes the upload; its length must be every byte written.
    /// Returns the length and the digest of the bytes.
    fn finish(self) -> Result<(u64, Option<BlobDigest>), Error> {
        let blob_len = self.inner.finish()?;
        if blob_len != self.written {
            return Err(Error::blob(
                ErrorKind::Integrity,
                format!("the blob store kept {blob_len} bytes of {}", self.written),
            ));
        }
        Ok((blob_len, self.digest.map(BlobHasher::finish)))
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(digest) = &mut self.digest {
            digest.update(buf.get(..n).unwrap_or_default());
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
