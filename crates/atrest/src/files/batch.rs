//! Batches of small uploads that share their durable steps: the seals
//! begun, their keys made and attached, and the versions committed in one
//! catalog transaction each, the blobs written together, the audit
//! records committed together.

use std::collections::BTreeMap;

use atrest_audit::{Event, Outcome, RequestId, Text};
use atrest_filekey::{FileContext, FileKey, TenantId, WrappedFileKey};
use atrest_stream::{Parallelism, Sealer};
use atrest_tenant::{Access, PendingKeyRecords};
use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};

use super::Files;
use super::seal::WrittenBlob;
use crate::blob::{BlobHasher, BlobName, BlobUpload};
use crate::catalog::{MediaType, NewVersion, SealTicket, SealedBlob};
use crate::{CatalogError, Error, ErrorKind, FileRecord};

/// Ciphertext of a batch sealed into memory before it is written: bounds
/// a batch's memory beyond its bodies.
const BATCH_GROUP: u64 = 8 << 20;

/// An item of a batch up to this size is sealed in one call.
const ONE_CALL: usize = 256 << 10;

/// An upload kept in memory: a blob of a batch, sealed before the batch's
/// blobs are written together.
#[derive(Default)]
struct InMemory {
    pieces: Vec<Bytes>,
}

#[async_trait::async_trait]
impl BlobUpload for InMemory {
    async fn write(&mut self, bytes: Bytes) -> Result<(), Error> {
        self.pieces.push(bytes);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<u64, Error> {
        Ok(self.pieces.iter().map(|piece| piece.len() as u64).sum())
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
    /// The plaintext: any buffered async source (`&[u8]` or a
    /// `std::io::Cursor` for bytes in memory).
    pub plaintext: R,
    /// The ids of the request it comes from, for its audit records (see
    /// [`atrest_audit::in_requests`]); `None`: those of the caller's
    /// scope, if any.
    pub request: Option<RequestId>,
    /// The media type kept in its record, if any. (Batches take no
    /// precondition: seal such an upload with [`Files::seal_version`].)
    pub media_type: Option<MediaType>,
}

/// A batch's file keys (or why each could not be made), with their
/// records still to commit (none for an empty batch).
type BatchKeys = (Vec<Result<FileKey, Error>>, Option<PendingKeyRecords>);

impl Files {
    /// Seals several uploads of `tenant` at once, each as in
    /// [`Files::seal`] but with the durable steps shared: one catalog
    /// transaction records the seals in progress, one attaches their keys
    /// (made together, the policy asked once: `decide_writes`), the items
    /// are sealed in this task into memory and their blobs written
    /// together ([`crate::Blobs::write_deferred`], `concurrency` at a
    /// time) and made durable while the keys' audit records are committed
    /// together, and once both are done one transaction commits every
    /// version whose blob is durable; the `file_sealed` records are
    /// committed together. Meant for many small files (a batch holds its
    /// ciphertext in memory, a few mebibytes at a time).
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
    pub async fn seal_batch<R: AsyncBufRead + Send + Unpin>(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        items: Vec<BatchItem<R>>,
        concurrency: usize,
    ) -> Result<Vec<Result<FileRecord, Error>>, Error> {
        let seals: Vec<(String, BlobName)> = items
            .iter()
            .map(|item| (item.name.clone(), item.blob.clone()))
            .collect();
        let tickets = self.catalog.begin_seals(tenant, &seals).await?;
        // Each item's audit records carry its own request's id.
        let by_file: BTreeMap<(String, u64), RequestId> = tickets
            .iter()
            .zip(&items)
            .filter_map(|(ticket, item)| {
                let request = item.request.clone()?;
                let file = ticket.context.file.to_string();
                Some(((file, u64::from(ticket.context.version)), request))
            })
            .collect();
        let sealing = self.seal_tickets(access, tenant, items, &tickets, concurrency.max(1));
        atrest_audit::in_requests(by_file, sealing).await
    }

    /// The rest of [`Files::seal_batch`], once its seals are begun.
    async fn seal_tickets<R: AsyncBufRead + Send + Unpin>(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        items: Vec<BatchItem<R>>,
        tickets: &[SealTicket],
        concurrency: usize,
    ) -> Result<Vec<Result<FileRecord, Error>>, Error> {
        let keyed = match self.batch_keys(access, tickets).await {
            Ok((keys, records)) => match self.keys.metadata_key(tenant).await {
                Ok(metadata) => Ok((keys, records, metadata)),
                Err(error) => Err(error.into()),
            },
            Err(error) => Err(error),
        };
        let (keys, records, metadata) = match keyed {
            Ok(keyed) => keyed,
            Err(error) => {
                self.abandon_all(tickets).await;
                return Err(error);
            }
        };
        let writing = self.write_batch_blobs(items, keys, &metadata, tickets, concurrency);
        // The keys' records are committed to the audit trail while the
        // blobs are written and flushed; both must be done before any
        // record of the batch is committed to the catalog.
        let recording = async {
            match records {
                Some(records) => records.commit().await,
                None => Ok(()),
            }
        };
        let flushed = async {
            let sealed = writing.await;
            // The blobs' names (their directory entries) become durable
            // together, before any record names them.
            match self.blobs.make_names_durable().await {
                Ok(()) => sealed,
                Err(error) => crate::blob::fail_written(sealed, &error),
            }
        };
        let (recorded, sealed) = tokio::join!(recording, flushed);
        if let Err(error) = recorded {
            // Keys whose making is not in the audit trail protect nothing
            // that is published.
            self.abandon_all(tickets).await;
            return Err(error.into());
        }
        let committed: Vec<(&SealTicket, SealedBlob)> = tickets
            .iter()
            .zip(&sealed)
            .filter_map(|(ticket, sealed)| sealed.as_ref().ok().map(|s| (ticket, s.clone())))
            .collect();
        // If the commit fails, some versions may be committed all the same
        // (a catalog without a batch transaction): the seals in progress
        // and their blobs are left for `collect_abandoned_seals`, which
        // never touches a committed version.
        let records = self.catalog.commit_seals(&committed).await?;
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
        let mut audit = Vec::with_capacity(results.len());
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
                    let _ = self.blobs.delete(&ticket.blob).await;
                    let _ = self.catalog.abandon_seal(ticket).await;
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
            audit.push(self.record_of(context, event, outcome));
        }
        let _ = self.audit.record_all(audit).await?;
        // As for a single seal: nothing acknowledged once a purge of the
        // tenant completed.
        if results.iter().any(Result::is_ok) {
            self.keys.confirm_not_purged(tenant).await?;
        }
        Ok(results)
    }

    /// Makes and attaches (in one transaction) a file key for each seal of
    /// a batch; the keys of items whose key could not be made are errors.
    /// The keys' `file_key_wrapped` records are returned for the caller to
    /// commit before it commits any record of the batch.
    async fn batch_keys(
        &self,
        access: &Access<'_>,
        tickets: &[SealTicket],
    ) -> Result<BatchKeys, Error> {
        let mut retried = false;
        loop {
            let contexts: Vec<FileContext> = tickets.iter().map(|t| t.context).collect();
            let Some(tenant) = contexts.first().map(|c| c.tenant) else {
                return Ok((Vec::new(), None));
            };
            let (made, records) = self
                .keys
                .new_file_keys_records_pending(access, tenant, &contexts)
                .await?;
            let made: Vec<Result<_, Error>> = made
                .into_iter()
                .map(|made| made.map_err(Error::from))
                .collect();
            let wraps: Vec<(&SealTicket, &WrappedFileKey)> = tickets
                .iter()
                .zip(&made)
                .filter_map(|(ticket, made)| made.as_ref().ok().map(|(_, w)| (ticket, w)))
                .collect();
            if let Err(error) = self.catalog.attach_keys(&wraps).await {
                // The keys were made: their records go to the audit
                // trail even though nothing will use them.
                records.commit().await?;
                match error {
                    Error::Catalog(CatalogError::TikRetired { .. }) if !retried => {
                        // As in `seal_ticket`: another process retired the
                        // TIK version this one had cached as current.
                        retried = true;
                        self.keys.flush_tenant(tenant);
                        continue;
                    }
                    error => return Err(error),
                }
            }
            let keys = made
                .into_iter()
                .map(|made| made.map(|(key, _)| key))
                .collect();
            return Ok((keys, Some(records)));
        }
    }

    /// Encrypts the items of a batch into their blobs, in this task, one
    /// after the other into memory, and writes them together
    /// ([`crate::Blobs::write_deferred`], `concurrency` at once) a group of
    /// about [`BATCH_GROUP`] bytes at a time; each blob's bytes are
    /// durable once written (its name is made durable with the batch's).
    /// Each key is dropped (zeroized) once its item is sealed. One result
    /// per item, in order.
    async fn write_batch_blobs<R: AsyncBufRead + Send + Unpin>(
        &self,
        items: Vec<BatchItem<R>>,
        keys: Vec<Result<FileKey, Error>>,
        metadata: &atrest_tenant::MetadataKey,
        tickets: &[SealTicket],
        concurrency: usize,
    ) -> Vec<Result<SealedBlob, Error>> {
        let mut results: Vec<Result<SealedBlob, Error>> = Vec::with_capacity(tickets.len());
        // The sealed blobs of the group not written yet: their place in
        // `results`, their bytes, and what their records will say.
        let mut group: Vec<(usize, Vec<Bytes>, WrittenBlob, NewVersion)> = Vec::new();
        let mut group_len = 0u64;
        let sealing = items.into_iter().zip(keys).zip(tickets).enumerate();
        for (place, ((item, key), ticket)) in sealing {
            // A placeholder, replaced once the group is written.
            results.push(Err(Error::blob(ErrorKind::Io, "the blob was not written")));
            let version = NewVersion {
                media_type: item.media_type,
                ..NewVersion::default()
            };
            let sealed = match key {
                Ok(key) => {
                    self.seal_in_memory(&key, &ticket.context, item.plaintext)
                        .await
                }
                Err(error) => Err(error),
            };
            match sealed {
                Ok((pieces, written)) => {
                    group_len = group_len.saturating_add(written.blob_len);
                    group.push((place, pieces, written, version));
                }
                Err(error) => {
                    if let Some(result) = results.get_mut(place) {
                        *result = Err(error);
                    }
                }
            }
            if group_len >= BATCH_GROUP {
                self.write_group(
                    std::mem::take(&mut group),
                    &mut results,
                    metadata,
                    tickets,
                    concurrency,
                )
                .await;
                group_len = 0;
            }
            // Sealing in memory never waits: let other tasks run between
            // items.
            tokio::task::consume_budget().await;
        }
        self.write_group(group, &mut results, metadata, tickets, concurrency)
            .await;
        results
    }

    /// Encrypts everything `plaintext` yields into memory, as
    /// [`Files::write_blob`] would into a blob: a source that ends within
    /// [`ONE_CALL`] bytes (the usual item of a batch) is read whole and
    /// sealed in one call into a buffer of the stream's size; a longer one
    /// a run at a time.
    async fn seal_in_memory<R: AsyncBufRead + Send + Unpin>(
        &self,
        key: &FileKey,
        context: &FileContext,
        mut plaintext: R,
    ) -> Result<(Vec<Bytes>, WrittenBlob), Error> {
        // Wiped when dropped: it holds plaintext.
        let mut head = zeroize::Zeroizing::new(Vec::new());
        let whole = loop {
            let available = plaintext.fill_buf().await?;
            if available.is_empty() {
                break true;
            }
            if head.len() + available.len() > ONE_CALL {
                break false;
            }
            extend_wiping(&mut head, available);
            let taken = available.len();
            plaintext.consume(taken);
        };
        if whole {
            let options = self.options.stream.parallelism(Parallelism::threads(1));
            let stream = Sealer::new(key, &context.encode(), options).seal(&head)?;
            let digest = self.options.blob_digests.then(|| {
                let mut hasher = BlobHasher::new();
                hasher.update(&stream);
                hasher.finish()
            });
            let written = WrittenBlob {
                plaintext_len: head.len() as u64,
                blob_len: stream.len() as u64,
                digest,
            };
            return Ok((vec![Bytes::from(stream)], written));
        }
        let rest = tokio::io::AsyncReadExt::chain(&head[..], plaintext);
        let mut kept = InMemory::default();
        let (plaintext_len, blob_len, hasher) =
            self.seal_into(key, context, rest, &mut kept, 1).await?;
        let written = WrittenBlob {
            plaintext_len,
            blob_len,
            digest: hasher.map(BlobHasher::finish),
        };
        Ok((kept.pieces, written))
    }

    /// Writes a group of sealed blobs of a batch and sets their results.
    async fn write_group(
        &self,
        group: Vec<(usize, Vec<Bytes>, WrittenBlob, NewVersion)>,
        results: &mut [Result<SealedBlob, Error>],
        metadata: &atrest_tenant::MetadataKey,
        tickets: &[SealTicket],
        concurrency: usize,
    ) {
        if group.is_empty() {
            return;
        }
        let mut blobs = Vec::with_capacity(group.len());
        let mut written = Vec::with_capacity(group.len());
        for (place, pieces, blob, version) in group {
            if let Some(ticket) = tickets.get(place) {
                blobs.push((ticket.blob.clone(), pieces));
                written.push((place, ticket, blob, version));
            }
        }
        let stored = self.blobs.write_deferred(blobs, concurrency).await;
        for ((place, ticket, blob, version), stored) in written.into_iter().zip(stored) {
            let result = stored.and_then(|len| {
                if len == blob.blob_len {
                    Ok(self.sealed_blob(metadata, ticket, &blob, &version))
                } else {
                    Err(Error::blob(
                        ErrorKind::Integrity,
                        format!("the blob store kept {len} bytes of {}", blob.blob_len),
                    ))
                }
            });
            if let Some(slot) = results.get_mut(place) {
                *slot = result;
            }
        }
    }

    /// Best-effort clean-up of a batch that failed as a whole: blobs first,
    /// then the seals' rows (a sealed version is left alone).
    async fn abandon_all(&self, tickets: &[SealTicket]) {
        for ticket in tickets {
            let _ = self.blobs.delete(&ticket.blob).await;
            let _ = self.catalog.abandon_seal(ticket).await;
        }
    }
}

/// Appends `more` to `head`, wiping the memory a growth leaves behind (it
/// holds plaintext).
fn extend_wiping(head: &mut zeroize::Zeroizing<Vec<u8>>, more: &[u8]) {
    let needed = head.len().saturating_add(more.len());
    if needed > head.capacity() {
        let mut grown = Vec::with_capacity(needed.max(head.capacity().saturating_mul(2)));
        grown.extend_from_slice(head);
        // The old buffer is wiped as it is dropped.
        *head = zeroize::Zeroizing::new(grown);
    }
    head.extend_from_slice(more);
}
