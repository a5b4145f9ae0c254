//! A blob store over the [`object_store`] crate: the local filesystem by
//! default, or any `object_store` URL (`s3://bucket/prefix`,
//! `az://container/prefix`, `gs://bucket/prefix`, `file:///dir`), so the
//! same program scales beyond one machine.
//!
//! Blob names are 128-bit random hex strings ([`BlobName::random`]): they
//! say nothing about the tenant, the file or its name, and the blobs hold
//! only ciphertext. The storage layer can neither decrypt nor identify what
//! it holds.
//!
//! Async, on the caller's tokio runtime: an object store's requests are
//! awaited, a local directory's file calls run on the runtime's blocking
//! pool. Cloud credentials come from the usual environment variables
//! (`AWS_ACCESS_KEY_ID`, `AZURE_STORAGE_ACCOUNT_NAME`,
//! `GOOGLE_SERVICE_ACCOUNT`, …).
//!
//! [`ReplicatedBlobs`] keeps every blob in several such stores (a primary
//! and replicas), checks copies against the digest in their records and
//! repairs them, without any key.

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use atrest_core::blocking;
use bytes::Bytes;
use futures_util::StreamExt as _;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt as _};

use crate::blob::{BlobName, BlobReader, BlobUpload, Blobs};
use crate::{Error, ErrorKind};

mod local;
mod object;
mod replicated;

pub use local::PartialUpload;
use local::{LocalDir, LocalReader, LocalUpload, local_error};
use object::{ObjectReader, ObjectUpload};
pub use replicated::{
    BlobCheck, CopyFailure, CopyReport, CopyState, RepairOutcome, ReplicatedBlobs,
};

/// The upload's part size (S3's minimum is 5 MiB).
const PART_LEN: usize = 5 << 20;
/// Parts in flight at once: bounds an upload's memory to about 10 MiB
/// whatever the blob's size.
const PARTS_IN_FLIGHT: usize = 2;

/// An `object_store` error, with its kind.
fn blob_error(error: object_store::Error) -> Error {
    let kind = match &error {
        object_store::Error::NotFound { .. } => ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            ErrorKind::Conflict
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => ErrorKind::Refused,
        object_store::Error::InvalidPath { .. }
        | object_store::Error::NotSupported { .. }
        | object_store::Error::NotImplemented { .. }
        | object_store::Error::UnknownConfigurationKey { .. } => ErrorKind::Usage,
        _ => ErrorKind::Unavailable,
    };
    Error::blob(kind, error)
}

/// Where sealed blobs are stored: a local directory or an `object_store`
/// URL. Cheap to clone (the clones share the store).
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
    /// For a local directory: the directory, which uploads and reads use
    /// directly.
    local_dir: Option<Arc<LocalDir>>,
}

impl core::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlobStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl BlobStore {
    /// Blobs as files in directory `dir` (created if missing), each written
    /// to a staging file and renamed into place once complete and flushed
    /// to disk; the blobs of a batch are written in place instead (see
    /// [`Blobs::create_deferred`]).
    ///
    /// # Errors
    /// [`Error::Blob`] if the directory cannot be created or used.
    pub fn local(dir: &FsPath) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(local_error)?;
        // Deletions go through `object_store`, which flushes the directory.
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(blob_error)?
            .with_fsync(true);
        Ok(Self {
            store: Arc::new(store),
            prefix: Path::default(),
            location: dir.display().to_string(),
            local_dir: Some(Arc::new(LocalDir::open(dir)?)),
        })
    }

    /// Blobs at an `object_store` URL (`s3://`, `az://`, `gs://`,
    /// `file://`, …), configured from the environment.
    ///
    /// # Errors
    /// [`Error::Blob`] if the URL is not one `object_store` supports.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        Self::from_url_with_options(url, std::iter::empty::<(String, String)>())
    }

    /// As [`BlobStore::from_url`], with `object_store` configuration keys
    /// given explicitly (for example `azure_storage_account_name`,
    /// `azure_storage_endpoint`, `azure_allow_http`); they take precedence
    /// over the environment. Keys are matched without regard to case.
    ///
    /// # Errors
    /// As for [`BlobStore::from_url`], and for an unknown key.
    pub fn from_url_with_options<K, V>(
        url: &str,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, Error>
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let parsed = url::Url::parse(url).map_err(|e| Error::blob(ErrorKind::Usage, e))?;
        let mut merged: std::collections::BTreeMap<String, String> = std::env::vars()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        for (key, value) in options {
            let _ = merged.insert(key.as_ref().to_ascii_lowercase(), value.into());
        }
        let (store, prefix) = object_store::parse_url_opts(&parsed, merged)
            .map_err(|e| Error::blob(ErrorKind::Usage, e))?;
        Ok(Self {
            store: Arc::from(store),
            prefix,
            location: url.to_owned(),
            local_dir: None,
        })
    }

    /// Where the blobs are (a directory or a URL).
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, name: &BlobName) -> Path {
        self.prefix.clone().join(name.as_str())
    }

    /// Why this store calls no batch durable any more, if a flush of its
    /// local directory failed (the process must be restarted: it cannot
    /// tell which blobs the failure hit); `None` otherwise.
    pub fn stopped(&self) -> Option<String> {
        self.local_dir.as_ref().and_then(|dir| dir.stopped())
    }

    /// The staging files of uploads to a local store that have not
    /// finished (`<blob>#<n>` beside where the blob goes); none for other
    /// stores, whose unfinished uploads their service expires.
    ///
    /// # Errors
    /// [`Error::Blob`] if the directory cannot be read.
    pub async fn partial_uploads(&self) -> Result<Vec<PartialUpload>, Error> {
        let Some(dir) = &self.local_dir else {
            return Ok(Vec::new());
        };
        let dir = dir.path.clone();
        blocking::run(move || local::partial_uploads(&dir))
            .await
            .map_err(local_error)
    }

    /// Removes the staging file of an unfinished upload.
    ///
    /// # Errors
    /// [`Error::Blob`] if it cannot be removed.
    pub async fn remove_partial_upload(&self, upload: &PartialUpload) -> Result<(), Error> {
        let path = upload.path.clone();
        match blocking::run_short(move || std::fs::remove_file(path)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(local_error(e)),
        }
    }
}

#[async_trait::async_trait]
impl Blobs for BlobStore {
    /// In a local directory the bytes go to a staging file beside the blob
    /// (`<blob>#<random number>`), which `finish` flushes to disk and
    /// renames to the blob's name (replacing a blob there whole) before
    /// flushing the directory. Elsewhere they go to an `object_store`
    /// upload (multipart for a large blob).
    async fn create(&self, name: &BlobName) -> Result<Box<dyn BlobUpload>, Error> {
        match &self.local_dir {
            Some(dir) => Ok(Box::new(LocalUpload::staged(dir, name)?)),
            None => Ok(Box::new(ObjectUpload::new(
                BufWriter::with_capacity(Arc::clone(&self.store), self.path(name), PART_LEN)
                    .with_max_concurrency(PARTS_IN_FLIGHT),
            ))),
        }
    }

    async fn open(&self, name: &BlobName) -> Result<Box<dyn BlobReader>, Error> {
        if let Some(dir) = &self.local_dir {
            return Ok(Box::new(LocalReader::open(dir, name).await?));
        }
        let result = self.store.get(&self.path(name)).await.map_err(blob_error)?;
        Ok(match result.payload {
            GetResultPayload::File(file, _) => Box::new(LocalReader::new(file)),
            GetResultPayload::Stream(stream) => Box::new(ObjectReader::new(stream)),
        })
    }

    async fn read_range(&self, name: &BlobName, range: Range<u64>) -> Result<Vec<u8>, Error> {
        if let Some(dir) = &self.local_dir {
            let (dir, name) = (Arc::clone(dir), name.clone());
            return blocking::run(move || local::read_range(&dir.open_blob(&name)?, range))
                .await
                .map_err(local_error);
        }
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = self
            .store
            .get_range(&self.path(name), range)
            .await
            .map_err(blob_error)?;
        Ok(bytes.to_vec())
    }

    async fn len(&self, name: &BlobName) -> Result<u64, Error> {
        if let Some(dir) = &self.local_dir {
            let (dir, name) = (Arc::clone(dir), name.clone());
            return blocking::run_short(move || dir.open_blob(&name)?.metadata().map(|m| m.len()))
                .await
                .map_err(local_error);
        }
        Ok(self
            .store
            .head(&self.path(name))
            .await
            .map_err(blob_error)?
            .size)
    }

    async fn delete(&self, name: &BlobName) -> Result<(), Error> {
        match self
            .store
            .delete(&self.path(name))
            .await
            .map_err(blob_error)
        {
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn list(&self) -> Result<Vec<(BlobName, u64)>, Error> {
        if let Some(dir) = &self.local_dir {
            let dir = dir.path.clone();
            return blocking::run(move || local::list(&dir))
                .await
                .map_err(local_error);
        }
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let mut listing = self.store.list(prefix);
        let mut blobs = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(blob_error)?;
            if let Some(Ok(name)) = meta.location.filename().map(str::parse::<BlobName>) {
                blobs.push((name, meta.size));
            }
        }
        blobs.sort();
        Ok(blobs)
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    /// For a local directory, the blob's own file, created (never
    /// replaced) and written in place with no staging file to rename: it
    /// is flushed with the rest of the batch by
    /// [`Blobs::make_names_durable`]. Until `finish` it holds part of the
    /// blob, which nothing reads, as no record names it yet; a writer
    /// dropped unfinished removes it. Elsewhere (an object store, where a
    /// completed upload is durable) as `create`.
    async fn create_deferred(&self, name: &BlobName) -> Result<Box<dyn BlobUpload>, Error> {
        match &self.local_dir {
            Some(dir) => Ok(Box::new(LocalUpload::in_place(dir, name))),
            None => self.create(name).await,
        }
    }

    /// For a local directory, the blobs are written in place, in
    /// `concurrency` shares of one call on the blocking pool each (each
    /// blob flushed too where the directory's flush does not cover it);
    /// elsewhere one at a time, `concurrency` at once.
    async fn write_deferred(
        &self,
        blobs: Vec<(BlobName, Vec<Bytes>)>,
        concurrency: usize,
    ) -> Vec<Result<u64, Error>> {
        match &self.local_dir {
            Some(dir) => LocalUpload::write_all_in_place(dir, blobs, concurrency).await,
            None => crate::blob::write_deferred_each(self, blobs, concurrency).await,
        }
    }

    /// For a local directory, flushes the batch's blobs, bytes and names:
    /// on Linux with one `syncfs` of the file system (each writeback error
    /// is reported once, after which no later batch is called durable),
    /// elsewhere with a sync of the directory.
    async fn make_names_durable(&self) -> Result<(), Error> {
        match &self.local_dir {
            // Nothing to do when a flush since covered every blob written
            // in place (`write_deferred` flushes its own).
            Some(dir) if dir.is_flushed() => Ok(()),
            Some(dir) => {
                let dir = Arc::clone(dir);
                blocking::run_short(move || dir.flush()).await
            }
            None => Ok(()),
        }
    }

    /// Not for a local directory on Linux, whose batch is flushed whole by
    /// [`Blobs::make_names_durable`]; elsewhere (an object store, or a
    /// local blob flushed as it finishes) a write waits.
    fn deferred_writes_wait(&self) -> bool {
        !self.local_dir.as_ref().is_some_and(|dir| dir.flushes_all())
    }
}
