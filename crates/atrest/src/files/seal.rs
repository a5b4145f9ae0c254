//! Sealing: an upload read from an async source, encrypted a run of
//! segments at a time into a new blob, and committed to the catalog once
//! the blob is durable.

use std::collections::VecDeque;

use atrest_audit::{Event, Outcome, Text};
use atrest_filekey::{FileContext, FileKey, TenantId};
use atrest_stream::{PlaintextRun, SealedRun, Sealer};
use atrest_tenant::Access;
use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};

use super::Files;
use crate::blob::{BlobDigest, BlobHasher, BlobName, BlobUpload};
use crate::catalog::{NewVersion, Precondition, SealTicket};
use crate::{CatalogError, Error, ErrorKind, FileRecord};

/// Sealed runs waiting for the blob store: with the runs being sealed,
/// bounds an upload's memory (about 256 KiB a run).
const RUNS_IN_FLIGHT: usize = 8;

/// A blob written whole: what its record says about it.
pub(super) struct WrittenBlob {
    pub(super) plaintext_len: u64,
    pub(super) blob_len: u64,
    pub(super) digest: Option<BlobDigest>,
}

impl Files {
    /// Seals an upload as a new version of file `name` of `tenant`: the
    /// catalog allocates the version, a fresh file key is wrapped under the
    /// tenant's current TIK, everything `plaintext` yields (any buffered
    /// async source: a `tokio::io::BufReader` around an `AsyncRead`, a
    /// `tokio_util::io::StreamReader` around a stream of `Bytes`) is encrypted
    /// into a new blob with a random name (the tenant, file and version
    /// bound as associated data, not stored), and once the blob is durable
    /// the record is committed to the catalog. Audited.
    ///
    /// Reading, the cipher and the blob store's writes overlap; memory is
    /// bounded (a few runs of about 256 KiB) whatever the file's size, and
    /// a source that stalls holds only this task.
    ///
    /// Several seals of one name at once (tasks, processes) each get their
    /// own version. The key is dropped (zeroized) before this returns. If
    /// it fails, or the future is dropped, the blob's upload is aborted;
    /// if it fails, the catalog's row of the seal in progress is removed
    /// too (a process that dies, or a future dropped, leaves it for
    /// [`Files::collect_abandoned_seals`]).
    ///
    /// # Errors
    /// [`Error::Catalog`] for an invalid name; [`Error::Keys`] if the
    /// tenant's keys cannot be used; [`Error::Io`] if reading `plaintext`
    /// fails; [`Error::Stream`]; [`Error::Blob`]; [`Error::Audit`].
    pub async fn seal<R: AsyncBufRead + Send + Unpin>(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        name: &str,
        plaintext: R,
    ) -> Result<FileRecord, Error> {
        self.seal_version(access, tenant, name, plaintext, &NewVersion::default())
            .await
    }

    /// [`Files::seal`] with a media type kept in the version's record and
    /// a precondition on the file's newest version (optimistic
    /// concurrency): checked before anything is written, so that an
    /// upload bound to fail is refused at once, and again in the commit's
    /// transaction, so that of two uploads that each replace the version
    /// they read, one fails.
    ///
    /// # Errors
    /// As [`Files::seal`]; [`CatalogError::PreconditionFailed`] (a
    /// conflict) if the precondition does not hold.
    pub async fn seal_version<R: AsyncBufRead + Send + Unpin>(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        name: &str,
        plaintext: R,
        version: &NewVersion,
    ) -> Result<FileRecord, Error> {
        if version.precondition != Precondition::Any {
            self.check_precondition(tenant, name, &version.precondition)
                .await?;
        }
        let blob = BlobName::random()?;
        let ticket = self.catalog.begin_seal(tenant, name, &blob).await?;
        let result = self.seal_ticket(access, &ticket, plaintext, version).await;
        let context = &ticket.context;
        match result {
            Ok(record) => {
                let event = Event::FileSealed {
                    file: Self::file_ref(context),
                    bytes: record.plaintext_len,
                    segments: record.segments(),
                };
                self.audit(context, event, Outcome::Success).await?;
                // A purge that completed meanwhile (here or on another
                // instance) made the version unreadable: not acknowledged.
                self.keys.confirm_not_purged(tenant).await?;
                Ok(record)
            }
            Err(error) => {
                // Best effort, blob first: if this process dies in between,
                // the seal's row still names the blob, and
                // `collect_abandoned_seals` removes both.
                let _ = self.blobs.delete(&ticket.blob).await;
                let _ = self.catalog.abandon_seal(&ticket).await;
                let event = Event::FileSealed {
                    file: Self::file_ref(context),
                    bytes: 0,
                    segments: 0,
                };
                let outcome = Outcome::Failed {
                    error: Text::lossy(error.to_string()),
                };
                self.audit(context, event, outcome).await?;
                Err(error)
            }
        }
    }

    /// Fails unless `precondition` holds for the newest version the
    /// catalog has of `name` now.
    async fn check_precondition(
        &self,
        tenant: TenantId,
        name: &str,
        precondition: &Precondition,
    ) -> Result<(), Error> {
        let newest = match self.catalog.record(tenant, name, None).await {
            Ok(record) => Some(record.version),
            Err(Error::Catalog(CatalogError::UnknownFile { .. })) => None,
            Err(error) => return Err(error),
        };
        if precondition.holds(newest) {
            Ok(())
        } else {
            Err(CatalogError::PreconditionFailed {
                tenant,
                name: name.to_owned(),
                newest,
            }
            .into())
        }
    }

    async fn seal_ticket<R: AsyncBufRead + Send + Unpin>(
        &self,
        access: &Access<'_>,
        ticket: &SealTicket,
        plaintext: R,
        version: &NewVersion,
    ) -> Result<FileRecord, Error> {
        let context = &ticket.context;
        let (mut key, wrapped_key) = self.keys.new_file_key(access, context).await?;
        match self.catalog.attach_key(ticket, &wrapped_key).await {
            Ok(()) => {}
            Err(Error::Catalog(CatalogError::TikRetired { .. })) => {
                // Another process rolled the TIK and retired the version
                // this process still had cached as current: make the key
                // again under the current version.
                self.keys.flush_tenant(context.tenant);
                let (fresh, wrapped_key) = self.keys.new_file_key(access, context).await?;
                key = fresh;
                self.catalog.attach_key(ticket, &wrapped_key).await?;
            }
            Err(error) => return Err(error),
        }
        let upload = self.blobs.create(&ticket.blob).await?;
        let written = self
            .write_blob(&key, context, plaintext, upload, self.threads())
            .await;
        drop(key);
        let written = written?;
        let metadata = self.keys.metadata_key(context.tenant).await?;
        let sealed = self.sealed_blob(&metadata, ticket, &written, version);
        self.catalog.commit_seal(ticket, &sealed).await
    }

    /// Encrypts everything `plaintext` yields into `upload` and completes
    /// it: reading and sealing in one stage, the upload's writes in
    /// another, both in this task, `threads` runs sealed at once (on the
    /// blocking pool when more than one). The upload is aborted (dropped)
    /// on any failure.
    pub(super) async fn write_blob<R: AsyncBufRead + Send + Unpin>(
        &self,
        key: &FileKey,
        context: &FileContext,
        plaintext: R,
        mut upload: Box<dyn BlobUpload>,
        threads: usize,
    ) -> Result<WrittenBlob, Error> {
        let (plaintext_len, written, hasher) = self
            .seal_into(key, context, plaintext, upload.as_mut(), threads)
            .await?;
        let blob_len = upload.finish().await?;
        if blob_len != written {
            return Err(Error::blob(
                ErrorKind::Integrity,
                format!("the blob store kept {blob_len} bytes of {written}"),
            ));
        }
        Ok(WrittenBlob {
            plaintext_len,
            blob_len,
            digest: hasher.map(BlobHasher::finish),
        })
    }

    /// The stages of [`Files::write_blob`] up to the upload's completion:
    /// returns the plaintext's length, the bytes written and their digest
    /// so far.
    pub(super) async fn seal_into<R: AsyncBufRead + Send + Unpin>(
        &self,
        key: &FileKey,
        context: &FileContext,
        mut plaintext: R,
        upload: &mut dyn BlobUpload,
        threads: usize,
    ) -> Result<(u64, u64, Option<BlobHasher>), Error> {
        let associated_data = context.encode();
        let mut runs = Sealer::new(key, &associated_data, self.options.stream).runs()?;
        let (sealed_runs, mut to_store) = tokio::sync::mpsc::channel::<Bytes>(RUNS_IN_FLIGHT);
        let sealing = async move {
            let mut plaintext_len = 0u64;
            let mut pending = Sealing::new(threads);
            let mut run = runs.next_run();
            let last = loop {
                // A run is the last one only once the source has ended; a
                // full run waits for the next byte.
                let (ended, taken) = {
                    let available = plaintext.fill_buf().await?;
                    if available.is_empty() {
                        (true, 0)
                    } else if run.is_full() {
                        (false, 0)
                    } else {
                        (false, run.fill(available))
                    }
                };
                if ended {
                    break run;
                }
                if taken > 0 {
                    plaintext.consume(taken);
                    continue;
                }
                let full = std::mem::replace(&mut run, runs.next_run());
                for sealed in pending.push(full, false).await? {
                    plaintext_len += sealed.plaintext_len() as u64;
                    send(&sealed_runs, sealed).await?;
                }
            };
            for sealed in pending.push(last, true).await? {
                plaintext_len += sealed.plaintext_len() as u64;
                send(&sealed_runs, sealed).await?;
            }
            for sealed in pending.finish().await? {
                plaintext_len += sealed.plaintext_len() as u64;
                send(&sealed_runs, sealed).await?;
            }
            Ok::<u64, Error>(plaintext_len)
        };
        let digests = self.options.blob_digests;
        let storing = async move {
            let mut hasher = digests.then(BlobHasher::new);
            let mut written = 0u64;
            while let Some(ciphertext) = to_store.recv().await {
                if let Some(hasher) = &mut hasher {
                    hasher.update(&ciphertext);
                }
                written += ciphertext.len() as u64;
                upload.write(ciphertext).await?;
            }
            Ok::<_, Error>((written, hasher))
        };
        // Either failing stops the other (the caller then drops the
        // upload: aborted).
        let (plaintext_len, (written, hasher)) = tokio::try_join!(sealing, storing)?;
        Ok((plaintext_len, written, hasher))
    }
}

/// Hands a sealed run to the stage that stores it; fails if that stage
/// stopped (its error is the one reported).
async fn send(to: &tokio::sync::mpsc::Sender<Bytes>, sealed: SealedRun) -> Result<(), Error> {
    to.send(Bytes::from_owner(sealed))
        .await
        .map_err(|_| Error::blob(ErrorKind::Io, "the blob's upload stopped"))
}

/// Runs being sealed, in order: in the task with one thread, else up to
/// `threads` at once on the blocking pool.
struct Sealing {
    threads: usize,
    in_flight: VecDeque<tokio::task::JoinHandle<Result<SealedRun, atrest_stream::Error>>>,
}

impl Sealing {
    fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            in_flight: VecDeque::new(),
        }
    }

    /// Seals `run`; returns the runs sealed by now, in order.
    async fn push(&mut self, run: PlaintextRun, last: bool) -> Result<Vec<SealedRun>, Error> {
        if self.threads == 1 {
            return Ok(vec![run.seal(last)?]);
        }
        self.in_flight
            .push_back(tokio::task::spawn_blocking(move || run.seal(last)));
        let mut sealed = Vec::new();
        while self.in_flight.len() >= self.threads {
            if let Some(task) = self.in_flight.pop_front() {
                sealed.push(joined(task).await?);
            }
        }
        Ok(sealed)
    }

    /// The runs still being sealed, in order.
    async fn finish(mut self) -> Result<Vec<SealedRun>, Error> {
        let mut sealed = Vec::with_capacity(self.in_flight.len());
        while let Some(task) = self.in_flight.pop_front() {
            sealed.push(joined(task).await?);
        }
        Ok(sealed)
    }
}

/// The outcome of cipher work on the blocking pool (a panic there is
/// resumed here).
pub(super) async fn joined<T>(
    task: tokio::task::JoinHandle<Result<T, atrest_stream::Error>>,
) -> Result<T, Error> {
    match task.await {
        Ok(done) => Ok(done?),
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the runtime shut down",
            ))),
        },
    }
}
