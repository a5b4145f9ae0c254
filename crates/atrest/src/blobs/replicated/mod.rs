//! Blobs kept in several locations: [`ReplicatedBlobs`], its locations and
//! its reads; the upload to every location is in `upload`, the checking and
//! repairing of copies in `check`.

mod check;
mod upload;

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::join_all;

pub use self::check::{BlobCheck, CopyReport, CopyState, RepairOutcome};
use crate::blob::{BlobName, BlobReader, BlobUpload, Blobs};
use crate::{Error, ErrorKind};

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
/// all the same (enough other locations did), or failed to make a batch's
/// blobs durable while enough others did.
#[derive(Debug)]
pub struct CopyFailure {
    /// The blob; `None` for the flush of a batch's names and bytes (every
    /// blob of the batches written there since its last flush may lack its
    /// copy: a scrub finds which).
    pub blob: Option<BlobName>,
    /// The location's index (0 is the primary).
    pub location: usize,
    /// Where the location is.
    pub place: String,
    /// What went wrong.
    pub error: Error,
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
        self.at_enough("blob made durable", Some(name), |store| {
            store.make_durable(name)
        })
        .await
    }

    async fn make_names_durable(&self) -> Result<(), Error> {
        self.at_enough("names made durable", None, |store| {
            store.make_names_durable()
        })
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
