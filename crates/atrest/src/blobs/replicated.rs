//! Blobs kept in several locations: [`ReplicatedBlobs`].

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::future::join_all;
use serde::Serialize;

use crate::blob::{BlobDigest, BlobHasher, BlobName, BlobReader, BlobUpload, Blobs};
use crate::{Error, ErrorKind};

/// The future an `async_trait` method returns.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How many write failures [`ReplicatedBlobs`] keeps for
/// [`ReplicatedBlobs::take_failures`]; older ones are dropped (a scrub
/// finds the copies they left bad all the same).
const KEPT_FAILURES: usize = 1024;

/// How much a scrub or repair reads at a time.
const CHUNK_LEN: usize = 1 << 16;

/// Blobs kept in several locations: a primary and replicas, each a
/// [`Blobs`] store (usually a [`super::BlobStore`]: a local directory or
/// any `object_store` URL). Every location holds the same ciphertext under
/// the same random name, and nothing else: a replica learns no more than
/// the primary does.
///
/// **Writes** go to every location at once. [`BlobUpload::finish`]
/// succeeds when at least `copies` locations (1 ..= the number of
/// locations) made the blob durable; the failures of the others are kept
/// for [`ReplicatedBlobs::take_failures`] and the copies they lack are left
/// for a repair ([`ReplicatedBlobs::check`], [`ReplicatedBlobs::repair`]).
/// If fewer than `copies` locations can take the blob, the write fails and
/// the copies already made are deleted, so a failed seal leaves nothing.
///
/// **Reads** through [`Blobs::open`], [`Blobs::read_range`] and
/// [`Blobs::len`] take the first location, primary first, that has the
/// blob and answers. A copy that is present but damaged cannot be told
/// from a good one without reading it all, so [`crate::Files::open`] goes
/// further: it reads a copy through [`Blobs::open_at`] and, when it turns
/// out missing, unreachable, cut short or not authentic (the stream layer
/// authenticates every segment, the prefix and the end of the stream), it
/// resumes from the next copy at the first byte of plaintext not yet
/// released, with positioned reads that authenticate the new copy's header,
/// key commitment and last segment first. Plaintext already released came
/// from segments whose tags verified, so it is the file's, whichever copy
/// it came from; no unauthenticated byte is ever released.
///
/// **Checking and repairing** need no key: a copy is good when its length
/// and SHA-256 digest are those of the file record
/// ([`crate::FileRecord::blob_len`], [`crate::FileRecord::blob_sha256`]).
/// A repair copies a good copy over each bad one through the location's
/// ordinary upload (a staging file made durable and renamed into place for
/// a directory; a single atomic upload for an object store), checking the
/// length and digest of what it copied before it completes.
pub struct ReplicatedBlobs {
    shared: Arc<Shared>,
}

/// What a [`ReplicatedBlobs`] and its uploads share.
struct Shared {
    locations: Vec<Arc<dyn Blobs>>,
    copies: usize,
    failures: Mutex<Vec<CopyFailure>>,
}

impl core::fmt::Debug for ReplicatedBlobs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplicatedBlobs")
            .field("locations", &self.places())
            .field("copies", &self.shared.copies)
            .finish_non_exhaustive()
    }
}

/// A location that did not keep a copy of a blob that was written
/// all the same (enough other locations did).
#[derive(Debug)]
pub struct CopyFailure {
    /// The blob.
    pub blob: BlobName,
    /// The location's index (0 is the primary).
    pub location: usize,
    /// Where the location is.
    pub place: String,
    /// What went wrong.
    pub error: Error,
}

/// The state of one copy of a blob, as [`ReplicatedBlobs::check`] found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CopyState {
    /// The length and digest are the record's.
    Good,
    /// The location has no such blob.
    Missing,
    /// The copy has another length than the record's.
    WrongLength {
        /// The copy's length.
        len: u64,
    },
    /// The copy has the record's length but another digest.
    WrongDigest {
        /// The copy's digest.
        digest: BlobDigest,
    },
    /// The location did not answer, or failed while the copy was read.
    Unreachable {
        /// The error.
        error: String,
    },
}

impl CopyState {
    /// Whether the copy is good.
    pub fn is_good(&self) -> bool {
        matches!(self, Self::Good)
    }
}

/// What a repair did to one copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RepairOutcome {
    /// A good copy, from location `from`, was written over it.
    Repaired {
        /// The location the good copy came from.
        from: usize,
    },
    /// It could not be repaired.
    Failed {
        /// Why.
        error: String,
    },
}

/// One copy of a blob, checked (and perhaps repaired).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// The location's index (0 is the primary).
    pub location: usize,
    /// Where the location is.
    pub place: String,
    /// What the check found.
    #[serde(flatten)]
    pub state: CopyState,
    /// What a repair did, if one was asked for and the copy was bad.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairOutcome>,
}

/// Every copy of one blob, checked against the length and digest its
/// record gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobCheck {
    /// The blob.
    pub blob: BlobName,
    /// The length the record gives.
    pub len: u64,
    /// The digest the record gives (`None` for a record from before blob
    /// digests: then only the length is checked).
    pub digest: Option<BlobDigest>,
    /// One report per location, primary first.
    pub copies: Vec<CopyReport>,
}

impl BlobCheck {
    /// Whether every copy was good when checked.
    pub fn is_clean(&self) -> bool {
        self.copies.iter().all(|copy| copy.state.is_good())
    }

    /// Whether every bad copy was repaired.
    pub fn is_repaired(&self) -> bool {
        self.copies.iter().all(|copy| {
            copy.state.is_good() || matches!(copy.repair, Some(RepairOutcome::Repaired { .. }))
        })
    }
}

impl ReplicatedBlobs {
    /// Blobs kept at `primary` and every one of `replicas`; a write
    /// succeeds once `copies` of them made it durable.
    ///
    /// # Errors
    /// [`Error::Blob`] ([`ErrorKind::Usage`]) if `copies` is 0 or more than
    /// the number of locations.
    pub fn new(
        primary: Arc<dyn Blobs>,
        replicas: Vec<Arc<dyn Blobs>>,
        copies: usize,
    ) -> Result<Self, Error> {
        let mut locations = Vec::with_capacity(1 + replicas.len());
        locations.push(primary);
        locations.extend(replicas);
        if copies == 0 || copies > locations.len() {
            return Err(Error::blob(
                ErrorKind::Usage,
                format!(
                    "{copies} copies asked for, with {} locations: choose 1 to {}",
                    locations.len(),
                    locations.len()
                ),
            ));
        }
        Ok(Self {
            shared: Arc::new(Shared {
                locations,
                copies,
                failures: Mutex::new(Vec::new()),
            }),
        })
    }

    /// How many locations must make a blob durable for a write to succeed.
    pub fn copies(&self) -> usize {
        self.shared.copies
    }

    /// The locations, primary first.
    pub fn stores(&self) -> &[Arc<dyn Blobs>] {
        &self.shared.locations
    }

    /// Where each location is, primary first.
    pub fn places(&self) -> Vec<String> {
        self.shared.locations.iter().map(|l| l.location()).collect()
    }

    /// The locations that failed to keep a copy of a blob whose write
    /// succeeded (enough others kept it), since the last call; at most
    /// the last 1024 are kept.
    pub fn take_failures(&self) -> Vec<CopyFailure> {
        std::mem::take(
            &mut *self
                .shared
                .failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn store(&self, location: usize) -> Result<&Arc<dyn Blobs>, Error> {
        self.shared.locations.get(location).ok_or_else(|| {
            Error::blob(
                ErrorKind::NotFound,
                format!("the blob store has no location {location}"),
            )
        })
    }

    /// Starts an upload at every location with `start`; succeeds if at
    /// least `copies` started.
    async fn upload<'a, F>(
        &'a self,
        name: &BlobName,
        start: F,
    ) -> Result<Box<dyn BlobUpload>, Error>
    where
        F: Fn(&'a Arc<dyn Blobs>) -> BoxFuture<'a, Result<Box<dyn BlobUpload>, Error>>,
    {
        let started = join_all(self.shared.locations.iter().map(start)).await;
        let mut upload = ReplicatedUpload {
            shared: Arc::clone(&self.shared),
            name: name.clone(),
            live: Vec::with_capacity(started.len()),
            failed: Vec::new(),
        };
        for (location, result) in started.into_iter().enumerate() {
            match result {
                Ok(started) => upload.live.push((location, started)),
                Err(error) => upload.failed.push((location, error)),
            }
        }
        upload.check_enough()?;
        Ok(Box::new(upload))
    }

    /// Runs `step` at every location at once; succeeds if at least
    /// `copies` did.
    async fn at_enough<'a, F>(&'a self, what: &str, step: F) -> Result<(), Error>
    where
        F: Fn(&'a Arc<dyn Blobs>) -> BoxFuture<'a, Result<(), Error>>,
    {
        let results = join_all(self.shared.locations.iter().map(step)).await;
        let mut done = 0;
        let mut failed = Vec::new();
        for (location, result) in results.into_iter().enumerate() {
            match result {
                Ok(()) => done += 1,
                Err(error) => failed.push((location, error)),
            }
        }
        if done >= self.shared.copies {
            Ok(())
        } else {
            Err(self.shared.too_few(what, done, &failed))
        }
    }

    /// Checks every copy of blob `blob` against the length and digest its
    /// record gives (`digest` `None`: the length only). Reads each copy
    /// whole, the locations at once; needs no key.
    pub async fn check(&self, blob: &BlobName, len: u64, digest: Option<BlobDigest>) -> BlobCheck {
        let states = join_all(
            self.shared
                .locations
                .iter()
                .map(|store| check_copy(store.as_ref(), blob, len, digest)),
        )
        .await;
        let copies = self
            .shared
            .locations
            .iter()
            .zip(states)
            .enumerate()
            .map(|(location, (store, state))| CopyReport {
                location,
                place: store.location(),
                state,
                repair: None,
            })
            .collect();
        BlobCheck {
            blob: blob.clone(),
            len,
            digest,
            copies,
        }
    }

    /// Writes a good copy over every bad copy of `check` (as
    /// [`ReplicatedBlobs::check`] found them), and records what it did in
    /// each bad copy's [`CopyReport::repair`]. A copy is written through the
    /// location's ordinary upload, so it replaces the bad one only once it
    /// is complete and durable, and only if what was copied has the
    /// record's length and digest.
    pub async fn repair(&self, check: &mut BlobCheck) {
        let source = check
            .copies
            .iter()
            .find(|copy| copy.state.is_good())
            .map(|copy| copy.location);
        for copy in &mut check.copies {
            if copy.state.is_good() {
                continue;
            }
            let outcome = match source {
                None => RepairOutcome::Failed {
                    error: "no good copy to repair from".into(),
                },
                Some(from) => {
                    let copied = self
                        .copy_over(&check.blob, from, copy.location, check.len, check.digest)
                        .await;
                    match copied {
                        Ok(()) => RepairOutcome::Repaired { from },
                        Err(error) => RepairOutcome::Failed {
                            error: error.to_string(),
                        },
                    }
                }
            };
            copy.repair = Some(outcome);
        }
    }

    /// Copies blob `blob` from location `from` to location `to`, checking
    /// what was copied before the upload completes.
    async fn copy_over(
        &self,
        blob: &BlobName,
        from: usize,
        to: usize,
        len: u64,
        digest: Option<BlobDigest>,
    ) -> Result<(), Error> {
        let mut reader = self.store(from)?.open(blob).await?;
        let mut upload = self.store(to)?.create(blob).await?;
        let mut hasher = BlobHasher::new();
        let mut copied = 0u64;
        loop {
            let chunk = reader.read(CHUNK_LEN).await?;
            if chunk.is_empty() {
                break;
            }
            hasher.update(&chunk);
            copied += chunk.len() as u64;
            if copied > len {
                break;
            }
            upload.write(Bytes::from(chunk)).await?;
        }
        // Dropping the upload unfinished leaves the bad copy as it was.
        if copied != len || digest.is_some_and(|d| d != hasher.finish()) {
            return Err(Error::blob(
                ErrorKind::Integrity,
                "the good copy changed while it was copied; nothing was written",
            ));
        }
        let written = upload.finish().await?;
        if written != len {
            return Err(Error::blob(
                ErrorKind::Integrity,
                format!("the location kept {written} bytes of {len}"),
            ));
        }
        Ok(())
    }
}

impl Shared {
    fn place(&self, location: usize) -> String {
        self.locations
            .get(location)
            .map_or_else(String::new, |l| l.location())
    }

    fn remember(&self, blob: &BlobName, failed: Vec<(usize, Error)>) {
        if failed.is_empty() {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        for (location, error) in failed {
            failures.push(CopyFailure {
                blob: blob.clone(),
                location,
                place: self.place(location),
                error,
            });
        }
        let excess = failures.len().saturating_sub(KEPT_FAILURES);
        drop(failures.drain(..excess));
    }

    fn too_few(&self, what: &str, done: usize, failed: &[(usize, Error)]) -> Error {
        let kind = failed
            .first()
            .map_or(ErrorKind::Unavailable, |(_, error)| error.kind());
        let reasons: Vec<String> = failed
            .iter()
            .map(|(location, error)| format!("{}: {error}", self.place(*location)))
            .collect();
        Error::blob(
            kind,
            format!(
                "{what} at {done} of {} locations, {} required ({})",
                self.locations.len(),
                self.copies,
                reasons.join("; ")
            ),
        )
    }
}

/// Reads one copy whole and compares it with the record.
async fn check_copy(
    store: &dyn Blobs,
    blob: &BlobName,
    len: u64,
    digest: Option<BlobDigest>,
) -> CopyState {
    let mut reader = match store.open(blob).await {
        Ok(reader) => reader,
        Err(error) if error.kind() == ErrorKind::NotFound => return CopyState::Missing,
        Err(error) => {
            return CopyState::Unreachable {
                error: error.to_string(),
            };
        }
    };
    let mut hasher = BlobHasher::new();
    let mut read = 0u64;
    loop {
        match reader.read(CHUNK_LEN).await {
            Ok(chunk) if chunk.is_empty() => break,
            Ok(chunk) => {
                hasher.update(&chunk);
                read += chunk.len() as u64;
            }
            Err(error) if error.kind() == ErrorKind::NotFound => return CopyState::Missing,
            Err(error) => {
                return CopyState::Unreachable {
                    error: error.to_string(),
                };
            }
        }
    }
    let found = hasher.finish();
    if read != len {
        CopyState::WrongLength { len: read }
    } else if digest.is_some_and(|d| d != found) {
        CopyState::WrongDigest { digest: found }
    } else {
        CopyState::Good
    }
}

/// One blob being written to every location.
struct ReplicatedUpload {
    shared: Arc<Shared>,
    name: BlobName,
    /// The locations still taking the blob.
    live: Vec<(usize, Box<dyn BlobUpload>)>,
    /// The locations that failed (their uploads dropped: aborted).
    failed: Vec<(usize, Error)>,
}

impl ReplicatedUpload {
    fn check_enough(&self) -> Result<(), Error> {
        if self.live.len() >= self.shared.copies {
            Ok(())
        } else {
            Err(self
                .shared
                .too_few("blob written", self.live.len(), &self.failed))
        }
    }
}

#[async_trait::async_trait]
impl BlobUpload for ReplicatedUpload {
    /// Writes `bytes` to every location still taking the blob, at once; a
    /// location that fails is dropped from the upload.
    async fn write(&mut self, bytes: Bytes) -> Result<(), Error> {
        let results = join_all(
            self.live
                .iter_mut()
                .map(|(_, upload)| upload.write(bytes.clone())),
        )
        .await;
        let live = std::mem::take(&mut self.live);
        for ((location, upload), result) in live.into_iter().zip(results) {
            match result {
                Ok(()) => self.live.push((location, upload)),
                Err(error) => self.failed.push((location, error)),
            }
        }
        self.check_enough()
    }

    async fn finish(self: Box<Self>) -> Result<u64, Error> {
        let Self {
            shared,
            name,
            live,
            mut failed,
        } = *self;
        let (locations, uploads): (Vec<usize>, Vec<_>) = live.into_iter().unzip();
        let finished = join_all(uploads.into_iter().map(BlobUpload::finish)).await;
        let mut done: Vec<(usize, u64)> = Vec::with_capacity(locations.len());
        for (location, result) in locations.into_iter().zip(finished) {
            match result {
                Ok(len) => done.push((location, len)),
                Err(error) => failed.push((location, error)),
            }
        }
        // Every location was given the same bytes; one that kept another
        // length failed.
        let len = done.first().map(|(_, len)| *len);
        done.retain(|(location, kept)| {
            let same = Some(*kept) == len;
            if !same {
                failed.push((
                    *location,
                    Error::blob(
                        ErrorKind::Integrity,
                        format!("the location kept {kept} bytes, not {len:?}"),
                    ),
                ));
            }
            same
        });
        match len {
            Some(len) if done.len() >= shared.copies => {
                shared.remember(&name, failed);
                Ok(len)
            }
            _ => {
                // Too few copies: the write fails and leaves nothing.
                for (location, _) in &done {
                    if let Some(store) = shared.locations.get(*location) {
                        let _ = store.delete(&name).await;
                    }
                }
                Err(shared.too_few("blob written", done.len(), &failed))
            }
        }
    }
}

#[async_trait::async_trait]
impl Blobs for ReplicatedBlobs {
    async fn create(&self, name: &BlobName) -> Result<Box<dyn BlobUpload>, Error> {
        self.upload(name, |store| store.create(name)).await
    }

    /// The first location, primary first, that has the blob and answers.
    async fn open(&self, name: &BlobName) -> Result<Box<dyn BlobReader>, Error> {
        let mut first_error = None;
        for store in &self.shared.locations {
            match store.open(name).await {
                Ok(reader) => return Ok(reader),
                Err(error) => {
                    let _ = first_error.get_or_insert(error);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| Error::blob(ErrorKind::NotFound, "no location")))
    }

    /// From the first location, primary first, that has the blob and
    /// answers.
    async fn read_range(&self, name: &BlobName, range: Range<u64>) -> Result<Vec<u8>, Error> {
        let mut first_error = None;
        for store in &self.shared.locations {
            match store.read_range(name, range.clone()).await {
                Ok(bytes) => return Ok(bytes),
                Err(error) => {
                    let _ = first_error.get_or_insert(error);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| Error::blob(ErrorKind::NotFound, "no location")))
    }

    /// At the first location, primary first, that has the blob and
    /// answers.
    async fn len(&self, name: &BlobName) -> Result<u64, Error> {
        let mut first_error = None;
        for store in &self.shared.locations {
            match store.len(name).await {
                Ok(len) => return Ok(len),
                Err(error) => {
                    let _ = first_error.get_or_insert(error);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| Error::blob(ErrorKind::NotFound, "no location")))
    }

    /// Deletes the blob at every location (all are tried, at once; the
    /// first error is returned).
    async fn delete(&self, name: &BlobName) -> Result<(), Error> {
        let results = join_all(self.shared.locations.iter().map(|store| store.delete(name))).await;
        results.into_iter().collect()
    }

    /// Every blob any reachable location has, with its size at the first
    /// location that has it.
    async fn list(&self) -> Result<Vec<(BlobName, u64)>, Error> {
        let listings = join_all(self.shared.locations.iter().map(|store| store.list())).await;
        let mut all = std::collections::BTreeMap::new();
        let mut listed = 0;
        let mut first_error = None;
        for listing in listings {
            match listing {
                Ok(blobs) => {
                    listed += 1;
                    for (name, size) in blobs {
                        let _ = all.entry(name).or_insert(size);
                    }
                }
                Err(error) => {
                    let _ = first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if listed == 0 => Err(error),
            _ => Ok(all.into_iter().collect()),
        }
    }

    fn location(&self) -> String {
        self.places().join(" + ")
    }

    async fn create_deferred(&self, name: &BlobName) -> Result<Box<dyn BlobUpload>, Error> {
        self.upload(name, |store| store.create_deferred(name)).await
    }

    async fn make_durable(&self, name: &BlobName) -> Result<(), Error> {
        self.at_enough("blob made durable", |store| store.make_durable(name))
            .await
    }

    async fn make_names_durable(&self) -> Result<(), Error> {
        self.at_enough("names made durable", |store| store.make_names_durable())
            .await
    }

    /// Each write goes to every location, so it waits if any location's
    /// does.
    fn deferred_writes_wait(&self) -> bool {
        self.shared
            .locations
            .iter()
            .any(|location| location.deferred_writes_wait())
    }

    fn locations(&self) -> usize {
        self.shared.locations.len()
    }

    async fn open_at(
        &self,
        name: &BlobName,
        location: usize,
    ) -> Result<Box<dyn BlobReader>, Error> {
        self.store(location)?.open(name).await
    }

    async fn read_range_at(
        &self,
        name: &BlobName,
        location: usize,
        range: Range<u64>,
    ) -> Result<Vec<u8>, Error> {
        self.store(location)?.read_range(name, range).await
    }

    async fn len_at(&self, name: &BlobName, location: usize) -> Result<u64, Error> {
        self.store(location)?.len(name).await
    }
}
