//! Where sealed blobs are kept: the [`Blobs`] trait, random
//! [`BlobName`]s, and an in-memory store for tests and examples.
//!
//! A blob holds ciphertext only, under a random name: the store learns
//! neither the tenant, nor the file, nor its name.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use atrest_stream::RunBuffer;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind};

/// The name of a blob: 32 lowercase hex digits, random.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlobName(String);

impl TryFrom<String> for BlobName {
    type Error = InvalidBlobName;

    fn try_from(text: String) -> Result<Self, InvalidBlobName> {
        text.parse()
    }
}

impl From<BlobName> for String {
    fn from(name: BlobName) -> Self {
        name.0
    }
}

/// `N` bytes from the operating system's generator.
pub(crate) fn os_random<const N: usize>() -> Result<[u8; N], Error> {
    let mut bytes = [0_u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| {
        Error::blob(
            ErrorKind::Unavailable,
            "the operating system random number generator failed",
        )
    })?;
    Ok(bytes)
}

impl BlobName {
    /// A fresh random name (128 bits from the operating system).
    ///
    /// # Errors
    /// [`Error::Blob`] ([`ErrorKind::Unavailable`]) if the generator fails.
    pub fn random() -> Result<Self, Error> {
        Ok(Self(hex::encode(os_random::<16>()?)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The text is not a blob name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a blob name (32 lowercase hex digits)")]
pub struct InvalidBlobName(pub String);

impl core::str::FromStr for BlobName {
    type Err = InvalidBlobName;

    fn from_str(text: &str) -> Result<Self, InvalidBlobName> {
        if text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidBlobName(text.chars().take(64).collect()))
        }
    }
}

impl core::fmt::Display for BlobName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The SHA-256 digest of a blob's bytes (its ciphertext, prefix included).
///
/// A seal computes it while the blob is written and the file record keeps
/// it, covered by the record's tag. It lets a copy of a blob be checked and
/// repaired by anyone who can read the catalog, without any key: a copy is
/// good when its length and digest are the record's.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobDigest([u8; 32]);

impl BlobDigest {
    /// The digest with these bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest from a slice of 32 bytes (`None` for any other length).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The digest's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut hasher = BlobHasher::new();
        hasher.update(bytes);
        hasher.finish()
    }
}

impl core::fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl core::fmt::Debug for BlobDigest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "BlobDigest({self})")
    }
}

impl core::str::FromStr for BlobDigest {
    type Err = InvalidBlobDigest;

    fn from_str(text: &str) -> Result<Self, InvalidBlobDigest> {
        let bytes = hex::decode(text).map_err(|_| InvalidBlobDigest)?;
        Self::from_slice(&bytes).ok_or(InvalidBlobDigest)
    }
}

/// The text is not a blob digest (64 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a blob digest is 64 hex digits")]
pub struct InvalidBlobDigest;

impl Serialize for BlobDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BlobDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Computes a [`BlobDigest`] over bytes given in pieces.
pub struct BlobHasher(ring::digest::Context);

impl core::fmt::Debug for BlobHasher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlobHasher").finish_non_exhaustive()
    }
}

impl Default for BlobHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl BlobHasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Self {
        Self(ring::digest::Context::new(&ring::digest::SHA256))
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything added.
    pub fn finish(self) -> BlobDigest {
        let digest = self.0.finish();
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        BlobDigest(bytes)
    }
}

/// A blob being written: nothing is visible under its name until
/// [`BlobUpload::finish`] returns; dropping it without `finish` aborts the
/// upload and leaves nothing.
#[async_trait::async_trait]
pub trait BlobUpload: Send {
    /// Appends `bytes` to the blob.
    ///
    /// # Errors
    /// [`Error::Blob`] if the store refuses them; the upload is then
    /// broken: drop it.
    async fn write(&mut self, bytes: Bytes) -> Result<(), Error>;

    /// Completes the upload: the blob is durable and visible once this
    /// returns. Returns its length.
    ///
    /// # Errors
    /// [`Error::Blob`] if the store refuses it; then nothing is visible.
    async fn finish(self: Box<Self>) -> Result<u64, Error>;
}

/// Reads one blob from its start.
#[async_trait::async_trait]
pub trait BlobReader: Send {
    /// Appends the blob's next bytes to `buf`, `max` of them, fewer only
    /// where the blob ends (none once it has); returns how many. The
    /// buffer is wiped when dropped, as one a run of plaintext gave back
    /// may be read into.
    ///
    /// # Errors
    /// [`Error::Blob`] if the store fails while the blob is read.
    async fn read(&mut self, buf: &mut RunBuffer, max: usize) -> Result<usize, Error>;
}

/// Where sealed blobs are stored. The catalog holds the only reference to
/// each blob; [`crate::Files`] writes a blob completely before it commits
/// the record that names it.
///
/// Async, as the stores behind it are (an object store's requests, a
/// local directory's calls on the runtime's blocking pool): a blob being
/// written or read holds a task, not a thread.
///
/// Implementations: [`MemoryBlobs`], and with the `blobs` feature
/// `blobs::BlobStore` (the local filesystem or any `object_store` URL) and
/// `blobs::ReplicatedBlobs` (a primary and replicas, each a store; its
/// copies are reached through [`Blobs::locations`] and the `*_at`
/// methods).
#[async_trait::async_trait]
pub trait Blobs: Send + Sync {
    /// Starts writing a new blob.
    ///
    /// # Errors
    /// [`Error::Blob`].
    async fn create(&self, name: &BlobName) -> Result<Box<dyn BlobUpload>, Error>;

    /// Reads a blob from the start.
    ///
    /// # Errors
    /// [`Error::Blob`] ([`ErrorKind::NotFound`] if there is no such blob).
    async fn open(&self, name: &BlobName) -> Result<Box<dyn BlobReader>, Error>;

    /// The bytes of a blob in `range`: a positioned read, for range reads
    /// that fetch only the segments they need. A range that runs past the
    /// blob's end gives fewer bytes, or an error, as the store answers:
    /// a caller that needs them all checks the length ([`Blobs::len`]).
    ///
    /// # Errors
    /// As for [`Blobs::open`].
    async fn read_range(&self, name: &BlobName, range: Range<u64>) -> Result<Vec<u8>, Error>;

    /// The length of a blob.
    ///
    /// # Errors
    /// As for [`Blobs::open`].
    async fn len(&self, name: &BlobName) -> Result<u64, Error>;

    /// Deletes a blob (deleting a missing blob is not an error).
    ///
    /// # Errors
    /// [`Error::Blob`].
    async fn delete(&self, name: &BlobName) -> Result<(), Error>;

    /// Every blob with its size, by name.
    ///
    /// # Errors
    /// [`Error::Blob`].
    async fn list(&self) -> Result<Vec<(BlobName, u64)>, Error>;

    /// Where the blobs are (a directory or a URL), for audit records.
    fn location(&self) -> String;

    /// Starts writing a new blob whose durability may be deferred: once
    /// [`BlobUpload::finish`] returns it is complete and visible, but it is
    /// durable only after [`Blobs::make_durable`] for it and then
    /// [`Blobs::make_names_durable`]. This lets a batch of blobs share
    /// syncs. By default the same as [`Blobs::create`] (durable at once).
    ///
    /// # Errors
    /// As for [`Blobs::create`].
    async fn create_deferred(&self, name: &BlobName) -> Result<Box<dyn BlobUpload>, Error> {
        self.create(name).await
    }

    /// Writes whole blobs held in memory (each given as its pieces, in
    /// order) as [`Blobs::create_deferred`], their writes,
    /// [`BlobUpload::finish`] and [`Blobs::make_durable`] would, up to
    /// `concurrency` at once: they are durable once
    /// [`Blobs::make_names_durable`] returns. Returns one result per blob,
    /// in order: its length, or why it failed (the caller deletes a blob
    /// that failed, which may be partly written). A batch of small files costs one call; a store that
    /// can write many blobs more cheaply together than one by one (a
    /// local directory: one call on the blocking pool per `concurrency`
    /// share) overrides it.
    async fn write_deferred(
        &self,
        blobs: Vec<(BlobName, Vec<Bytes>)>,
        concurrency: usize,
    ) -> Vec<Result<u64, Error>> {
        write_deferred_each(self, blobs, concurrency).await
    }

    /// Makes the bytes of a blob written with [`Blobs::create_deferred`]
    /// durable (by default there is nothing to do).
    ///
    /// # Errors
    /// [`Error::Blob`].
    async fn make_durable(&self, name: &BlobName) -> Result<(), Error> {
        let _ = name;
        Ok(())
    }

    /// Makes the names of the blobs written with
    /// [`Blobs::create_deferred`] (and made durable) durable: after this,
    /// they survive a crash (by default there is nothing to do).
    ///
    /// # Errors
    /// [`Error::Blob`].
    async fn make_names_durable(&self) -> Result<(), Error> {
        Ok(())
    }

    /// How many locations keep a copy of each blob: 1, unless the store
    /// is replicated (`blobs::ReplicatedBlobs`).
    fn locations(&self) -> usize {
        1
    }

    /// Reads the copy of a blob kept at location `location` (0 is the
    /// primary), from the start: how a reader moves to another copy when
    /// one is missing, unreachable or damaged.
    ///
    /// # Errors
    /// As for [`Blobs::open`]; [`ErrorKind::NotFound`] for a location the
    /// store does not have.
    async fn open_at(
        &self,
        name: &BlobName,
        location: usize,
    ) -> Result<Box<dyn BlobReader>, Error> {
        only_location(location)?;
        self.open(name).await
    }

    /// As [`Blobs::read_range`], from the copy kept at `location`.
    ///
    /// # Errors
    /// As for [`Blobs::open_at`].
    async fn read_range_at(
        &self,
        name: &BlobName,
        location: usize,
        range: Range<u64>,
    ) -> Result<Vec<u8>, Error> {
        only_location(location)?;
        self.read_range(name, range).await
    }

    /// As [`Blobs::len`], of the copy kept at `location`.
    ///
    /// # Errors
    /// As for [`Blobs::open_at`].
    async fn len_at(&self, name: &BlobName, location: usize) -> Result<u64, Error> {
        only_location(location)?;
        self.len(name).await
    }

    /// Whether writing a blob with [`Blobs::create_deferred`] waits on the
    /// store — a network round trip, a flush of its own — rather than only
    /// handing its bytes to the operating system, as a local directory
    /// flushed once per batch does. A caller sealing a batch of in-memory
    /// files uses it to choose how many to write at once: many when writes
    /// wait, else about one per core, since more would only contend for
    /// the CPU and the directory. By default `true`.
    fn deferred_writes_wait(&self) -> bool {
        true
    }
}

/// [`Blobs::write_deferred`] one blob at a time, `concurrency` at once:
/// the default, for stores with nothing cheaper.
pub(crate) async fn write_deferred_each<B: Blobs + ?Sized>(
    store: &B,
    blobs: Vec<(BlobName, Vec<Bytes>)>,
    concurrency: usize,
) -> Vec<Result<u64, Error>> {
    use futures_util::StreamExt as _;
    let writes = blobs.into_iter().map(|(name, pieces)| async move {
        let mut upload = store.create_deferred(&name).await?;
        for piece in pieces {
            upload.write(piece).await?;
        }
        let len = upload.finish().await?;
        store.make_durable(&name).await?;
        Ok(len)
    });
    futures_util::stream::iter(writes)
        .buffered(concurrency.max(1))
        .collect()
        .await
}

/// The results of a group of blob writes once the step that makes them
/// durable failed with `error`: each write that succeeded fails with it.
pub(crate) fn fail_written<T>(
    written: Vec<Result<T, Error>>,
    error: &Error,
) -> Vec<Result<T, Error>> {
    let message = error.to_string();
    written
        .into_iter()
        .map(|w| w.and_then(|_| Err(Error::blob(ErrorKind::Io, message.clone()))))
        .collect()
}

/// Refuses any location but the primary, for a store with one.
fn only_location(location: usize) -> Result<(), Error> {
    if location == 0 {
        Ok(())
    } else {
        Err(Error::blob(
            ErrorKind::NotFound,
            format!("the blob store has no location {location}"),
        ))
    }
}

/// Reads a blob held in memory from its start.
struct MemoryReader {
    bytes: Arc<Vec<u8>>,
    at: usize,
}

#[async_trait::async_trait]
impl BlobReader for MemoryReader {
    async fn read(&mut self, buf: &mut RunBuffer, max: usize) -> Result<usize, Error> {
        let end = self.at.saturating_add(max).min(self.bytes.len());
        let bytes = self.bytes.get(self.at..end).unwrap_or_default();
        buf.extend_from_slice(bytes);
        self.at = end.max(self.at);
        Ok(bytes.len())
    }
}

/// Blobs in memory: for tests and examples (nothing is durable).
#[derive(Debug, Default)]
pub struct MemoryBlobs {
    blobs: Arc<Mutex<BTreeMap<BlobName, Arc<Vec<u8>>>>>,
}

impl MemoryBlobs {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&self, name: &BlobName) -> Result<Arc<Vec<u8>>, Error> {
        self.blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::blob(ErrorKind::NotFound, format!("no blob {name}")))
    }

    /// Replaces a blob's bytes (for tests that tamper with storage).
    pub fn replace(&self, name: &BlobName, bytes: Vec<u8>) {
        let _ = self
            .blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), Arc::new(bytes));
    }

    /// A blob's bytes, if it exists.
    pub fn bytes(&self, name: &BlobName) -> Option<Vec<u8>> {
        self.get(name).ok().map(|bytes| bytes.as_ref().clone())
    }
}

struct MemoryUpload {
    blobs: Arc<Mutex<BTreeMap<BlobName, Arc<Vec<u8>>>>>,
    name: BlobName,
    bytes: Vec<u8>,
}

#[async_trait::async_trait]
impl BlobUpload for MemoryUpload {
    async fn write(&mut self, bytes: Bytes) -> Result<(), Error> {
        self.bytes.extend_from_slice(&bytes);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<u64, Error> {
        let len = self.bytes.len() as u64;
        let _ = self
            .blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.name, Arc::new(self.bytes));
        Ok(len)
    }
}

#[async_trait::async_trait]
impl Blobs for MemoryBlobs {
    async fn create(&self, name: &BlobName) -> Result<Box<dyn BlobUpload>, Error> {
        Ok(Box::new(MemoryUpload {
            blobs: Arc::clone(&self.blobs),
            name: name.clone(),
            bytes: Vec::new(),
        }))
    }

    async fn open(&self, name: &BlobName) -> Result<Box<dyn BlobReader>, Error> {
        Ok(Box::new(MemoryReader {
            bytes: self.get(name)?,
            at: 0,
        }))
    }

    async fn read_range(&self, name: &BlobName, range: Range<u64>) -> Result<Vec<u8>, Error> {
        let bytes = self.get(name)?;
        let clamp = |at: u64| usize::try_from(at).unwrap_or(usize::MAX).min(bytes.len());
        let (start, end) = (clamp(range.start), clamp(range.end));
        Ok(bytes
            .get(start..end.max(start))
            .unwrap_or_default()
            .to_vec())
    }

    async fn len(&self, name: &BlobName) -> Result<u64, Error> {
        Ok(self.get(name)?.len() as u64)
    }

    async fn delete(&self, name: &BlobName) -> Result<(), Error> {
        let _ = self
            .blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<(BlobName, u64)>, Error> {
        Ok(self
            .blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, bytes)| (name.clone(), bytes.len() as u64))
            .collect())
    }

    fn location(&self) -> String {
        "memory".into()
    }

    fn deferred_writes_wait(&self) -> bool {
        false
    }
}
