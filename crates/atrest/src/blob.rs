//! Where sealed blobs are kept: the [`Blobs`] trait, random
//! [`BlobName`]s, and an in-memory store for tests and examples.
//!
//! A blob holds ciphertext only, under a random name: the store learns
//! neither the tenant, nor the file, nor its name.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use atrest_stream::ReadAt;
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
pub trait BlobUpload: Write + Send {
    /// Completes the upload: the blob is durable and visible once this
    /// returns. Returns its length.
    ///
    /// # Errors
    /// [`Error::Blob`] if the store refuses it; then nothing is visible.
    fn finish(self: Box<Self>) -> Result<u64, Error>;
}

/// Where sealed blobs are stored. The catalog holds the only reference to
/// each blob; [`crate::Files`] writes a blob completely before it commits
/// the record that names it.
///
/// Implementations: [`MemoryBlobs`], and with the `blobs` feature
/// `blobs::BlobStore` (the local filesystem or any `object_store` URL) and
/// `blobs::ReplicatedBlobs` (a primary and replicas, each a store; its
/// copies are reached through [`Blobs::locations`] and [`Blobs::open_at`]).
pub trait Blobs: Send + Sync {
    /// Starts writing a new blob.
    ///
    /// # Errors
    /// [`Error::Blob`].
    fn create(&self, name: &BlobName) -> Result<Box<dyn BlobUpload + '_>, Error>;

    /// Reads a blob from the start.
    ///
    /// # Errors
    /// [`Error::Blob`] ([`ErrorKind::NotFound`] if there is no such blob).
    fn open(&self, name: &BlobName) -> Result<Box<dyn Read + Send + '_>, Error>;

    /// Positioned reads of a blob, for range reads that fetch only the
    /// segments they need.
    ///
    /// # Errors
    /// As for [`Blobs::open`].
    fn ranged(&self, name: &BlobName) -> Result<Box<dyn ReadAt + Send + Sync + '_>, Error>;

    /// Deletes a blob (deleting a missing blob is not an error).
    ///
    /// # Errors
    /// [`Error::Blob`].
    fn delete(&self, name: &BlobName) -> Result<(), Error>;

    /// Every blob with its size, by name.
    ///
    /// # Errors
    /// [`Error::Blob`].
    fn list(&self) -> Result<Vec<(BlobName, u64)>, Error>;

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
    fn create_deferred(&self, name: &BlobName) -> Result<Box<dyn BlobUpload + '_>, Error> {
        self.create(name)
    }

    /// Makes the bytes of a blob written with [`Blobs::create_deferred`]
    /// durable (by default there is nothing to do).
    ///
    /// # Errors
    /// [`Error::Blob`].
    fn make_durable(&self, name: &BlobName) -> Result<(), Error> {
        let _ = name;
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
    fn open_at(
        &self,
        name: &BlobName,
        location: usize,
    ) -> Result<Box<dyn Read + Send + '_>, Error> {
        if location == 0 {
            self.open(name)
        } else {
            Err(no_location(location))
        }
    }

    /// Positioned reads of the copy of a blob kept at location `location`.
    ///
    /// # Errors
    /// As for [`Blobs::open_at`].
    fn ranged_at(
        &self,
        name: &BlobName,
        location: usize,
    ) -> Result<Box<dyn ReadAt + Send + Sync + '_>, Error> {
        if location == 0 {
            self.ranged(name)
        } else {
            Err(no_location(location))
        }
    }

    /// Makes the names of the blobs written with
    /// [`Blobs::create_deferred`] (and made durable) durable: after this,
    /// they survive a crash (by default there is nothing to do).
    ///
    /// # Errors
    /// [`Error::Blob`].
    fn make_names_durable(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Whether writing a blob with [`Blobs::create_deferred`] waits on the
    /// store — a network round trip, a flush of its own — rather than only
    /// handing its bytes to the operating system, as a local directory
    /// flushed once per batch does. A caller sealing a batch of in-memory
    /// files uses it to choose its writers: one per blob when writes wait,
    /// else one per core, since more would only contend for the CPU and
    /// the directory. By default `true`.
    fn deferred_writes_wait(&self) -> bool {
        true
    }
}

fn no_location(location: usize) -> Error {
    Error::blob(
        ErrorKind::NotFound,
        format!("the blob store has no location {location}"),
    )
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

impl Write for MemoryUpload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobUpload for MemoryUpload {
    fn finish(self: Box<Self>) -> Result<u64, Error> {
        let len = self.bytes.len() as u64;
        let _ = self
            .blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.name, Arc::new(self.bytes));
        Ok(len)
    }
}

impl Blobs for MemoryBlobs {
    fn create(&self, name: &BlobName) -> Result<Box<dyn BlobUpload + '_>, Error> {
        Ok(Box::new(MemoryUpload {
            blobs: Arc::clone(&self.blobs),
            name: name.clone(),
            bytes: Vec::new(),
        }))
    }

    fn open(&self, name: &BlobName) -> Result<Box<dyn Read + Send + '_>, Error> {
        Ok(Box::new(io::Cursor::new(self.get(name)?.as_ref().clone())))
    }

    fn ranged(&self, name: &BlobName) -> Result<Box<dyn ReadAt + Send + Sync + '_>, Error> {
        Ok(Box::new(self.get(name)?))
    }

    fn delete(&self, name: &BlobName) -> Result<(), Error> {
        let _ = self
            .blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        Ok(())
    }

    fn list(&self) -> Result<Vec<(BlobName, u64)>, Error> {
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
