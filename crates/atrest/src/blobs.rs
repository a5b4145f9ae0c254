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
//! The API is synchronous (it drives its own single-threaded tokio runtime)
//! so it plugs into the threaded [`crate::Files::seal`] /
//! [`crate::Files::open`]; do not call it from inside an async runtime.
//! Cloud credentials come from the usual environment variables
//! (`AWS_ACCESS_KEY_ID`, `AZURE_STORAGE_ACCOUNT_NAME`,
//! `GOOGLE_SERVICE_ACCOUNT`, …).
//!
//! [`ReplicatedBlobs`] keeps every blob in several such stores (a primary
//! and replicas), checks copies against the digest in their records and
//! repairs them, without any key.

use std::io::{self, Read, Write};
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt as _};
use tokio::io::AsyncWriteExt as _;
use tokio::runtime::Runtime;

use crate::blob::{BlobName, BlobUpload, Blobs};
use crate::{Error, ErrorKind};

mod replicated;

pub use replicated::{
    BlobCheck, CopyFailure, CopyReport, CopyState, RepairOutcome, ReplicatedBlobs,
};

/// How much a [`BlobWriter`] collects before handing it to the upload.
const SEND_LEN: usize = 1 << 20;
/// The upload's part size (S3's minimum is 5 MiB).
const PART_LEN: usize = 5 << 20;
/// Parts in flight at once: with [`PART_LEN`] and [`SEND_LEN`], bounds a
/// writer's memory to about 16 MiB whatever the blob's size.
const PARTS_IN_FLIGHT: usize = 2;

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

fn io_error(error: object_store::Error) -> io::Error {
    io::Error::other(blob_error(error))
}

/// Where sealed blobs are stored.
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
    runtime: Runtime,
    /// For a local directory: the directory, which
    /// [`Blobs::create_deferred`] writes into directly.
    local_dir: Option<LocalDir>,
}

/// An upload to a local store that never finished: the staging file of a
/// blob, left by a writer that stopped (or still writing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialUpload {
    /// The blob it was for.
    pub blob: BlobName,
    /// The staging file.
    pub path: std::path::PathBuf,
    /// Its size.
    pub bytes: u64,
    /// When it was last written.
    pub modified: std::time::SystemTime,
}

impl core::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlobStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl BlobStore {
    fn with(store: Arc<dyn ObjectStore>, prefix: Path, location: String) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::blob(ErrorKind::Unavailable, e))?;
        Ok(Self {
            store,
            prefix,
            location,
            runtime,
            local_dir: None,
        })
    }

    /// Blobs as files in directory `dir` (created if missing), each written
    /// to a staging file and renamed into place once complete and flushed
    /// to disk; the blobs of a batch are written in place instead (see
    /// [`Blobs::create_deferred`]).
    ///
    /// # Errors
    /// [`Error::Blob`] if the directory cannot be created or used.
    pub fn local(dir: &FsPath) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::blob(ErrorKind::Io, e))?;
        // A blob is flushed to disk (file and directory) before `finish`
        // returns, so a file record never points at a blob a crash can lose.
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(blob_error)?
            .with_fsync(true);
        let mut blobs = Self::with(Arc::new(store), Path::default(), dir.display().to_string())?;
        blobs.local_dir = Some(LocalDir::open(dir)?);
        Ok(blobs)
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
        Self::with(Arc::from(store), prefix, url.to_owned())
    }

    /// Where the blobs are (a directory or a URL).
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, name: &BlobName) -> Path {
        self.prefix.clone().join(name.as_str())
    }

    /// Starts writing a new blob. Nothing is visible under `name` until
    /// [`BlobWriter::finish`]; a writer dropped without it aborts the
    /// upload.
    ///
    /// In a local directory the bytes go straight into a staging file
    /// beside the blob (`<blob>#<random number>`), which `finish` flushes
    /// to disk and renames to the blob's name (replacing a blob there
    /// whole) before flushing the directory. Elsewhere they go to an
    /// `object_store` upload (multipart for a large blob).
    ///
    /// # Errors
    /// [`Error::Blob`] if the staging file cannot be created.
    pub fn create(&self, name: &BlobName) -> Result<BlobWriter<'_>, Error> {
        let target = match &self.local_dir {
            Some(dir) => Target::Local(LocalUpload::staged(dir, name)?),
            None => Target::Object(ObjectUpload {
                blobs: self,
                upload: Some(
                    BufWriter::with_capacity(Arc::clone(&self.store), self.path(name), PART_LEN)
                        .with_max_concurrency(PARTS_IN_FLIGHT),
                ),
                buffer: Vec::new(),
                written: 0,
            }),
        };
        Ok(BlobWriter(target))
    }

    /// Reads a blob from the start.
    ///
    /// # Errors
    /// [`Error::Blob`] ([`ErrorKind::NotFound`] if there is no such blob).
    pub fn open(&self, name: &BlobName) -> Result<BlobReader<'_>, Error> {
        let result = self
            .runtime
            .block_on(self.store.get(&self.path(name)))
            .map_err(blob_error)?;
        let source = match result.payload {
            GetResultPayload::File(file, _) => Source::File(file),
            GetResultPayload::Stream(stream) => Source::Stream(stream, Bytes::new()),
        };
        Ok(BlobReader {
            blobs: self,
            source,
        })
    }

    /// Positioned reads of a blob (for range reads, which fetch only the
    /// segments they need).
    ///
    /// # Errors
    /// As for [`BlobStore::open`].
    pub fn ranged(&self, name: &BlobName) -> Result<RangedBlob<'_>, Error> {
        let path = self.path(name);
        let size = self
            .runtime
            .block_on(self.store.head(&path))
            .map_err(blob_error)?
            .size;
        Ok(RangedBlob {
            blobs: self,
            path,
            size,
        })
    }

    /// Deletes a blob.
    ///
    /// # Errors
    /// [`Error::Blob`].
    pub fn delete(&self, name: &BlobName) -> Result<(), Error> {
        self.runtime
            .block_on(self.store.delete(&self.path(name)))
            .map_err(blob_error)
    }

    /// The staging files of uploads to a local store that have not
    /// finished (`<blob>#<n>` beside where the blob goes); none for other
    /// stores, whose unfinished uploads their service expires.
    ///
    /// # Errors
    /// [`Error::Blob`] if the directory cannot be read.
    pub fn partial_uploads(&self) -> Result<Vec<PartialUpload>, Error> {
        let Some(LocalDir { path: dir, .. }) = &self.local_dir else {
            return Ok(Vec::new());
        };
        let mut partial = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| Error::blob(ErrorKind::Io, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::blob(ErrorKind::Io, e))?;
            let name = entry.file_name();
            let Some((blob, suffix)) = name.to_str().and_then(|n| n.split_once('#')) else {
                continue;
            };
            let (Ok(blob), false) = (blob.parse::<BlobName>(), suffix.is_empty()) else {
                continue;
            };
            let meta = entry
                .metadata()
                .map_err(|e| Error::blob(ErrorKind::Io, e))?;
            if !meta.is_file() {
                continue;
            }
            partial.push(PartialUpload {
                blob,
                path: entry.path(),
                bytes: meta.len(),
                modified: meta.modified().map_err(|e| Error::blob(ErrorKind::Io, e))?,
            });
        }
        partial.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(partial)
    }

    /// Removes the staging file of an unfinished upload.
    ///
    /// # Errors
    /// [`Error::Blob`] if it cannot be removed.
    pub fn remove_partial_upload(&self, upload: &PartialUpload) -> Result<(), Error> {
        match std::fs::remove_file(&upload.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::blob(ErrorKind::Io, e)),
        }
    }

    /// Every blob with its size, by name.
    ///
    /// # Errors
    /// [`Error::Blob`].
    pub fn list(&self) -> Result<Vec<(BlobName, u64)>, Error> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let metas: Vec<_> = self
            .runtime
            .block_on(self.store.list(prefix).collect::<Vec<_>>());
        let mut blobs = Vec::new();
        for meta in metas {
            let meta = meta.map_err(blob_error)?;
            if let Some(Ok(name)) = meta.location.filename().map(str::parse::<BlobName>) {
                blobs.push((name, meta.size));
            }
        }
        blobs.sort();
        Ok(blobs)
    }
}

impl Blobs for BlobStore {
    fn create(&self, name: &BlobName) -> Result<Box<dyn BlobUpload + '_>, Error> {
        Ok(Box::new(BlobStore::create(self, name)?))
    }

    fn open(&self, name: &BlobName) -> Result<Box<dyn Read + Send + '_>, Error> {
        Ok(Box::new(BlobStore::open(self, name)?))
    }

    fn ranged(
        &self,
        name: &BlobName,
    ) -> Result<Box<dyn atrest_stream::ReadAt + Send + Sync + '_>, Error> {
        Ok(Box::new(BlobStore::ranged(self, name)?))
    }

    fn delete(&self, name: &BlobName) -> Result<(), Error> {
        match BlobStore::delete(self, name) {
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn list(&self) -> Result<Vec<(BlobName, u64)>, Error> {
        BlobStore::list(self)
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
    fn create_deferred(&self, name: &BlobName) -> Result<Box<dyn BlobUpload + '_>, Error> {
        match &self.local_dir {
            Some(dir) => Ok(Box::new(LocalUpload::in_place(dir, name)?)),
            None => Ok(Box::new(BlobStore::create(self, name)?)),
        }
    }

    /// Nothing to do: a local batch is flushed whole by
    /// [`Blobs::make_names_durable`].
    fn make_durable(&self, _: &BlobName) -> Result<(), Error> {
        Ok(())
    }

    /// For a local directory, flushes the batch's blobs, bytes and names:
    /// on Linux with one `syncfs` of the file system (each writeback error
    /// is reported once, after which no later batch is called durable),
    /// elsewhere with a sync of the directory.
    fn make_names_durable(&self) -> Result<(), Error> {
        match &self.local_dir {
            Some(dir) => dir.flush(),
            None => Ok(()),
        }
    }

    /// Not for a local directory on Linux, whose batch is flushed whole by
    /// [`Blobs::make_names_durable`]; elsewhere (an object store, or a
    /// local blob flushed as it finishes) a write waits.
    fn deferred_writes_wait(&self) -> bool {
        !(self.local_dir.is_some() && LocalDir::FLUSHES_ALL)
    }
}

/// A local directory of blobs, and how the blobs of a batch written into
/// it are made durable.
struct LocalDir {
    path: std::path::PathBuf,
    /// Open since the store was made. On Linux, `syncfs` through it
    /// flushes the whole file system — every blob of the batch, bytes and
    /// names, with one flush of the disk's cache instead of one per blob —
    /// and reports each writeback error of the file system since it was
    /// opened, once (Linux 5.8 and later).
    #[cfg(target_os = "linux")]
    handle: std::fs::File,
    /// Serializes the flushes and remembers a failed one: a writeback
    /// error is reported to the first flush after it, and the batches
    /// flushed at the same time cannot tell whether their blobs were hit,
    /// so from then on no batch is called durable (fail closed).
    failed: std::sync::Mutex<Option<String>>,
}

impl LocalDir {
    /// Whether [`LocalDir::flush`] flushes the blobs' bytes too (else each
    /// blob flushes its own as it finishes).
    const FLUSHES_ALL: bool = cfg!(target_os = "linux");

    fn open(path: &FsPath) -> Result<Self, Error> {
        Ok(Self {
            path: path.to_path_buf(),
            #[cfg(target_os = "linux")]
            handle: std::fs::File::open(path).map_err(|e| Error::blob(ErrorKind::Io, e))?,
            failed: std::sync::Mutex::new(None),
        })
    }

    /// Makes the names in the directory durable (not the bytes of blobs
    /// written in place, which [`LocalDir::flush`] does).
    fn sync_names(&self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        return self.handle.sync_all();
        #[cfg(not(target_os = "linux"))]
        return std::fs::File::open(&self.path).and_then(|dir| dir.sync_all());
    }

    /// Makes every blob finished in the directory so far durable, with its
    /// name.
    fn flush(&self) -> Result<(), Error> {
        let mut failed = self
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(reason) = failed.as_ref() {
            return Err(Error::blob(
                ErrorKind::Io,
                format!(
                    "an earlier flush of the blob directory failed ({reason}): blobs written since may not be durable"
                ),
            ));
        }
        #[cfg(target_os = "linux")]
        let flushed = rustix::fs::syncfs(&self.handle).map_err(io::Error::from);
        #[cfg(not(target_os = "linux"))]
        let flushed = self.sync_names();
        flushed.map_err(|error| {
            *failed = Some(error.to_string());
            Error::blob(ErrorKind::Io, error)
        })
    }
}

/// A blob written into a file of a local directory: either in place, for a
/// batch (see [`Blobs::create_deferred`] for [`BlobStore`]), or into a
/// staging file published under the blob's name once durable (see
/// [`BlobStore::create`]).
struct LocalUpload<'a> {
    /// `None` once finished.
    file: Option<std::fs::File>,
    /// The file being written.
    path: std::path::PathBuf,
    written: u64,
    /// For a staged blob: the directory, and the blob's path in it, where
    /// `finish` publishes it.
    publish: Option<(&'a LocalDir, std::path::PathBuf)>,
}

impl<'a> LocalUpload<'a> {
    /// The blob's own file, created (never replaced) and written in place.
    fn in_place(dir: &'a LocalDir, name: &BlobName) -> Result<Self, Error> {
        let path = dir.path.join(name.as_str());
        Ok(Self {
            file: Some(create_new(&path)?),
            path,
            written: 0,
            publish: None,
        })
    }

    /// A new staging file beside where the blob goes, `<blob>#<n>` with
    /// `n` 64 random bits in decimal: the form `object_store` leaves out
    /// of listings, and [`BlobStore::partial_uploads`] finds if the writer
    /// never finishes.
    fn staged(dir: &'a LocalDir, name: &BlobName) -> Result<Self, Error> {
        let suffix = crate::blob::os_random::<8>()?;
        let path = dir
            .path
            .join(format!("{}#{}", name.as_str(), u64::from_le_bytes(suffix)));
        Ok(Self {
            file: Some(create_new(&path)?),
            path,
            written: 0,
            publish: Some((dir, dir.path.join(name.as_str()))),
        })
    }

    fn file(&mut self) -> io::Result<&mut std::fs::File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob already finished"))
    }

    /// Flushes the bytes unless the directory's flush will, and publishes a staged blob: renames
    /// it to its name (a blob there, such as a damaged copy being
    /// repaired, is replaced whole) and flushes the directory.
    fn complete(&self, file: std::fs::File) -> io::Result<()> {
        // A staged blob is durable once published; one written in place
        // waits for the directory's flush where that covers the bytes.
        if self.publish.is_some() || !LocalDir::FLUSHES_ALL {
            file.sync_data()?;
        }
        drop(file);
        match &self.publish {
            Some((dir, blob)) => {
                std::fs::rename(&self.path, blob)?;
                dir.sync_names()
            }
            None => Ok(()),
        }
    }
}

/// Creates a file that must not exist yet.
fn create_new(path: &FsPath) -> Result<std::fs::File, Error> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(local_error)
}

/// A local file system's error, with a file that exists already as a
/// conflict.
fn local_error(error: io::Error) -> Error {
    let kind = match error.kind() {
        io::ErrorKind::AlreadyExists => ErrorKind::Conflict,
        _ => ErrorKind::Io,
    };
    Error::blob(kind, error)
}

impl Write for LocalUpload<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file()?.write(buf)?;
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file()?.flush()
    }
}

impl LocalUpload<'_> {
    /// Closes the blob. A staged blob is durable, under its name, once this
    /// returns; one written in place once [`Blobs::make_names_durable`]
    /// returns. On failure no staging file is left behind.
    fn finish(mut self) -> Result<u64, Error> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::blob(ErrorKind::Io, "blob already finished"))?;
        if let Err(error) = self.complete(file) {
            let _ = std::fs::remove_file(&self.path);
            return Err(local_error(error));
        }
        Ok(self.written)
    }
}

impl BlobUpload for LocalUpload<'_> {
    fn finish(self: Box<Self>) -> Result<u64, Error> {
        LocalUpload::finish(*self)
    }
}

impl Drop for LocalUpload<'_> {
    /// An upload dropped unfinished leaves no file behind.
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes one blob; see [`BlobStore::create`].
pub struct BlobWriter<'a>(Target<'a>);

enum Target<'a> {
    Local(LocalUpload<'a>),
    Object(ObjectUpload<'a>),
}

impl BlobWriter<'_> {
    /// Completes the upload; returns the blob's length.
    ///
    /// # Errors
    /// [`Error::Blob`] if the blob cannot be flushed or published, or the
    /// store refuses it.
    pub fn finish(self) -> Result<u64, Error> {
        match self.0 {
            Target::Local(upload) => upload.finish(),
            Target::Object(upload) => upload.finish(),
        }
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Target::Local(upload) => upload.write(buf),
            Target::Object(upload) => upload.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Target::Local(upload) => upload.flush(),
            Target::Object(upload) => upload.flush(),
        }
    }
}

impl BlobUpload for BlobWriter<'_> {
    fn finish(self: Box<Self>) -> Result<u64, Error> {
        BlobWriter::finish(*self)
    }
}

/// A blob sent to an `object_store` upload, a part at a time; aborted if
/// dropped unfinished.
struct ObjectUpload<'a> {
    blobs: &'a BlobStore,
    upload: Option<BufWriter>,
    buffer: Vec<u8>,
    written: u64,
}

impl ObjectUpload<'_> {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let part = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(SEND_LEN),
        ));
        let upload = self
            .upload
            .as_mut()
            .ok_or_else(|| io::Error::other("blob already finished"))?;
        self.blobs
            .runtime
            .block_on(upload.put(part))
            .map_err(io_error)
    }

    fn finish(mut self) -> Result<u64, Error> {
        self.send()?;
        let mut upload = self
            .upload
            .take()
            .ok_or_else(|| Error::blob(ErrorKind::Usage, "blob already finished"))?;
        self.blobs
            .runtime
            .block_on(upload.shutdown())
            .map_err(|e| Error::blob(ErrorKind::Unavailable, e))?;
        Ok(self.written)
    }
}

impl Write for ObjectUpload<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = SEND_LEN - self.buffer.len();
        let n = room.min(buf.len());
        self.buffer
            .extend_from_slice(buf.get(..n).unwrap_or_default());
        self.written += n as u64;
        if self.buffer.len() == SEND_LEN {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ObjectUpload<'_> {
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            let _ = self.blobs.runtime.block_on(upload.abort());
        }
    }
}

enum Source {
    File(std::fs::File),
    Stream(BoxStream<'static, object_store::Result<Bytes>>, Bytes),
}

/// Reads one blob from the start; see [`BlobStore::open`].
pub struct BlobReader<'a> {
    blobs: &'a BlobStore,
    source: Source,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.source {
            Source::File(file) => file.read(buf),
            Source::Stream(stream, pending) => {
                while pending.is_empty() {
                    match self.blobs.runtime.block_on(stream.next()) {
                        None => return Ok(0),
                        Some(chunk) => *pending = chunk.map_err(io_error)?,
                    }
                }
                let n = pending.len().min(buf.len());
                buf.get_mut(..n)
                    .unwrap_or_default()
                    .copy_from_slice(&pending.split_to(n));
                Ok(n)
            }
        }
    }
}

/// Positioned reads of one blob; see [`BlobStore::ranged`].
pub struct RangedBlob<'a> {
    blobs: &'a BlobStore,
    path: Path,
    size: u64,
}

impl atrest_stream::ReadAt for RangedBlob<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let end = offset.saturating_add(buf.len() as u64).min(self.size);
        if offset >= end {
            return Ok(0);
        }
        let bytes = self
            .blobs
            .runtime
            .block_on(self.blobs.store.get_range(&self.path, offset..end))
            .map_err(io_error)?;
        let n = bytes.len().min(buf.len());
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(bytes.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}
