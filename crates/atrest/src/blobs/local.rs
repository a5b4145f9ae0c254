//! Blobs as files of a local directory: uploads written to a staging file
//! and renamed into place once durable, or in place for a batch whose
//! flush is shared; reads and positioned reads on the runtime's blocking
//! pool.

use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use atrest_core::blocking;
use atrest_stream::RunBuffer;
use bytes::Bytes;

use crate::blob::{BlobName, BlobReader, BlobUpload};
use crate::{Error, ErrorKind};

/// How much an upload keeps in memory before it creates its file: a small
/// blob is then written in one call on the blocking pool, when it
/// finishes.
const BUFFERED: usize = 1 << 20;

/// How the blobs of a batch written in place are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlushRule {
    /// One `syncfs` of the directory's file system flushes every blob of
    /// the batch, bytes and names, with one flush of the disk's cache
    /// instead of one per blob, and reports each writeback error of the
    /// file system since the handle was opened: only on Linux 5.8 and
    /// later (before, `syncfs` reports no writeback error) and on a file
    /// system known to honour it (ext2/3/4, XFS, Btrfs, F2FS, tmpfs).
    SyncFs,
    /// Elsewhere (another kernel, a FUSE or network file system, another
    /// system): each blob's bytes are flushed (`fdatasync`) as it
    /// finishes, and the flush makes the names durable.
    EachFile,
}

/// The rule for the file system under `handle`.
fn flush_rule(handle: &std::fs::File) -> FlushRule {
    #[cfg(target_os = "linux")]
    {
        // f_type values of statfs(2) for the file systems known to report
        // writeback errors through syncfs.
        const HONOURS_SYNCFS: [u64; 5] = [
            0xEF53,      // ext2, ext3, ext4
            0x5846_5342, // XFS
            0x9123_683E, // Btrfs
            0xF2F5_2010, // F2FS
            0x0102_1994, // tmpfs (nothing to write back)
        ];
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut numbers = kernel
            .trim()
            .split(|c: char| !c.is_ascii_digit())
            .map(|part| part.parse::<u32>().unwrap_or(0));
        let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
        let reports_errors = (major, minor) >= (5, 8);
        let known = rustix::fs::fstatfs(handle)
            .is_ok_and(|fs| HONOURS_SYNCFS.contains(&fs.f_type.cast_unsigned()));
        if reports_errors && known {
            return FlushRule::SyncFs;
        }
    }
    let _ = handle;
    FlushRule::EachFile
}

/// A local directory of blobs, and how the blobs of a batch written into
/// it are made durable.
pub(super) struct LocalDir {
    pub(super) path: PathBuf,
    /// The directory, open since the store was made: blobs are created,
    /// published and removed relative to it (`openat`, `renameat`), so a
    /// path that comes to name another directory (a mount over it, a
    /// rename) never receives them, and [`LocalDir::check_still_there`]
    /// refuses to write once it does. `syncfs` goes through it.
    handle: std::fs::File,
    /// The directory's device and inode when it was opened.
    identity: (u64, u64),
    flush_rule: FlushRule,
    /// Serializes the flushes and remembers a failed one: a writeback
    /// error is reported to the first flush after it, and the batches
    /// flushed at the same time cannot tell whether their blobs were hit,
    /// so from then on no batch is called durable (fail closed).
    failed: Mutex<Option<String>>,
    /// Blobs written in place so far, counted once their bytes are
    /// written; and how many of them the last flush covered (the count
    /// when it began), unless a flush failed. A batch whose blobs a flush
    /// covered needs no flush of its own.
    written_in_place: AtomicU64,
    flushed_in_place: AtomicU64,
    flush_failed: AtomicBool,
}

impl LocalDir {
    /// Whether [`LocalDir::flush`] flushes the blobs' bytes too (else each
    /// blob flushes its own as it finishes).
    pub(super) fn flushes_all(&self) -> bool {
        self.flush_rule == FlushRule::SyncFs
    }

    pub(super) fn open(path: &Path) -> Result<Self, Error> {
        let handle = std::fs::File::open(path).map_err(local_error)?;
        let stat = rustix::fs::fstat(&handle).map_err(|e| local_error(e.into()))?;
        Ok(Self {
            path: path.to_path_buf(),
            identity: (stat.st_dev as u64, stat.st_ino as u64),
            flush_rule: flush_rule(&handle),
            handle,
            failed: Mutex::new(None),
            written_in_place: AtomicU64::new(0),
            flushed_in_place: AtomicU64::new(0),
            flush_failed: AtomicBool::new(false),
        })
    }

    /// Refuses to read or write once the directory's path names another
    /// directory than the one opened (a file system mounted over it, or it
    /// renamed and another put in its place): what other processes find
    /// there is no longer what this store holds, so the location counts
    /// as failed.
    fn check_still_there(&self) -> io::Result<()> {
        let now = rustix::fs::stat(&self.path).map_err(io::Error::from)?;
        if (now.st_dev as u64, now.st_ino as u64) == self.identity {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "the blob directory {} is no longer the one opened at start (a file system \
             mounted over it, or another directory in its place): nothing is read or written",
            self.path.display()
        )))
    }

    /// Creates file `name` in the directory, which must not exist yet.
    fn create_new(&self, name: &str) -> io::Result<std::fs::File> {
        self.check_still_there()?;
        self.create_in_checked_dir(name)
    }

    /// [`LocalDir::create_new`] for a caller that has just called
    /// [`LocalDir::check_still_there`] for the files it makes in turn (the
    /// blobs of a share of a batch).
    fn create_in_checked_dir(&self, name: &str) -> io::Result<std::fs::File> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::openat(
            &self.handle,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// Opens blob `name` of the directory to read it.
    pub(super) fn open_blob(&self, name: &BlobName) -> io::Result<std::fs::File> {
        use rustix::fs::{Mode, OFlags};
        self.check_still_there()?;
        let fd = rustix::fs::openat(
            &self.handle,
            name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// Removes file `name` from the directory.
    fn remove(&self, name: &str) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(
            &self.handle,
            name,
            rustix::fs::AtFlags::empty(),
        )?)
    }

    /// Renames file `from` to `to` in the directory (replacing `to`).
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.handle, from, &self.handle, to)?)
    }

    /// Makes the names in the directory durable (not the bytes of blobs
    /// written in place, which [`LocalDir::flush`] does).
    fn sync_names(&self) -> io::Result<()> {
        self.handle.sync_all()
    }

    /// Counts a blob written in place (its bytes written): the next
    /// flush covers it.
    fn note_written_in_place(&self) {
        let _ = self.written_in_place.fetch_add(1, Ordering::SeqCst);
    }

    /// Why no blob written in place can be called durable any more, if a
    /// flush of the directory failed.
    pub(super) fn stopped(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether every blob written in place so far is durable: a flush that
    /// began after the last of them succeeded (and none failed). Does
    /// not block.
    pub(super) fn is_flushed(&self) -> bool {
        !self.flush_failed.load(Ordering::SeqCst)
            && self.flushed_in_place.load(Ordering::SeqCst)
                >= self.written_in_place.load(Ordering::SeqCst)
    }

    /// Makes every blob finished in the directory so far durable, with its
    /// name; nothing to do if a flush that began after the last blob was
    /// written, such as one a concurrent batch waited on, covered them.
    /// Blocks: call it on the blocking pool.
    pub(super) fn flush(&self) -> Result<(), Error> {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(reason) = failed.as_ref() {
            return Err(Error::blob(
                ErrorKind::Io,
                format!(
                    "an earlier flush of the blob directory failed ({reason}): blobs written since may not be durable"
                ),
            ));
        }
        let covers = self.written_in_place.load(Ordering::SeqCst);
        if self.flushed_in_place.load(Ordering::SeqCst) >= covers && covers > 0 {
            return Ok(());
        }
        let flushed = match self.flush_rule {
            #[cfg(target_os = "linux")]
            FlushRule::SyncFs => rustix::fs::syncfs(&self.handle).map_err(io::Error::from),
            // The bytes were flushed blob by blob.
            _ => self.sync_names(),
        };
        match flushed {
            Ok(()) => {
                let _ = self.flushed_in_place.fetch_max(covers, Ordering::SeqCst);
                Ok(())
            }
            Err(error) => {
                self.flush_failed.store(true, Ordering::SeqCst);
                *failed = Some(error.to_string());
                Err(Error::blob(ErrorKind::Io, error))
            }
        }
    }
}

/// A local file system's error, with a file that exists already as a
/// conflict and a missing one as not found.
pub(super) fn local_error(error: io::Error) -> Error {
    let kind = match error.kind() {
        io::ErrorKind::AlreadyExists => ErrorKind::Conflict,
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        _ => ErrorKind::Io,
    };
    Error::blob(kind, error)
}

/// A blob written into a file of a local directory: either in place, for a
/// batch (see `Blobs::create_deferred` for `BlobStore`), or into a staging
/// file published under the blob's name once durable (see
/// `BlobStore::create`). Its first mebibyte stays in memory, so a small
/// blob costs one call on the blocking pool.
pub(super) struct LocalUpload {
    dir: Arc<LocalDir>,
    /// The file being written, by its name in the directory.
    name: String,
    /// The bytes not written to the file yet, and how many.
    buffered: Vec<Bytes>,
    buffered_len: usize,
    /// The file, once made.
    file: Option<Arc<std::fs::File>>,
    /// Whether this upload made the file at `path` and still owns it (so
    /// dropping the upload removes it): from its creation until `finish`.
    owns_file: bool,
    /// A write failed or `finish` ran: nothing more may be written.
    closed: bool,
    written: u64,
    /// For a staged blob: the blob's name, which `finish` publishes it
    /// under.
    publish: Option<String>,
}

/// Bytes of a batch's blobs one call on the blocking pool writes: small
/// batches cost one call, large ones use the cores.
const SHARE: usize = 1 << 20;

impl LocalUpload {
    fn new(dir: &Arc<LocalDir>, name: String, publish: Option<String>) -> Self {
        Self {
            dir: Arc::clone(dir),
            name,
            buffered: Vec::new(),
            buffered_len: 0,
            file: None,
            owns_file: false,
            closed: false,
            written: 0,
            publish,
        }
    }

    /// The blob's own file, created (never replaced) and written in place.
    pub(super) fn in_place(dir: &Arc<LocalDir>, name: &BlobName) -> Self {
        Self::new(dir, name.as_str().to_owned(), None)
    }

    /// A new staging file beside where the blob goes, `<blob>#<n>` with
    /// `n` 64 random bits in decimal: the form `object_store` leaves out
    /// of listings, and `BlobStore::partial_uploads` finds if the writer
    /// never finishes.
    pub(super) fn staged(dir: &Arc<LocalDir>, name: &BlobName) -> Result<Self, Error> {
        let suffix = crate::blob::os_random::<8>()?;
        let staging = format!("{}#{}", name.as_str(), u64::from_le_bytes(suffix));
        Ok(Self::new(dir, staging, Some(name.as_str().to_owned())))
    }

    /// Writes `pieces` to `file`, or to a new file `name` of the directory
    /// (which must not exist; a staging file, `staged`, is locked from then
    /// on, which tells `partial_uploads` that its writer is alive). Returns
    /// the file if there is one, with how the writing went. Blocks.
    fn write_out(
        dir: &LocalDir,
        name: &str,
        file: Option<Arc<std::fs::File>>,
        pieces: &[Bytes],
        staged: bool,
    ) -> (Option<Arc<std::fs::File>>, io::Result<()>) {
        let file = match file {
            Some(file) => file,
            None => match dir.create_new(name) {
                Ok(file) => {
                    // A lock on a file just made cannot be held by another.
                    if staged && let Err(error) = file.lock() {
                        let _ = dir.remove(name);
                        return (None, Err(error));
                    }
                    Arc::new(file)
                }
                Err(error) => return (None, Err(error)),
            },
        };
        let written = pieces
            .iter()
            .try_for_each(|piece| (&*file).write_all(piece));
        (Some(file), written)
    }

    /// Flushes the bytes unless the directory's flush will, and publishes
    /// a staged blob: renames it to its name (a blob there, such as a
    /// damaged copy being repaired, is replaced whole) and flushes the
    /// directory. Blocks.
    fn complete(
        dir: &LocalDir,
        name: &str,
        file: &std::fs::File,
        publish: Option<&str>,
    ) -> io::Result<()> {
        // A staged blob is durable once published; one written in place
        // waits for the directory's flush where that covers the bytes.
        if publish.is_some() || !dir.flushes_all() {
            file.sync_data()?;
        }
        match publish {
            Some(blob) => {
                dir.check_still_there()?;
                dir.rename(name, blob)?;
                dir.sync_names()
            }
            None => {
                dir.note_written_in_place();
                Ok(())
            }
        }
    }

    /// Writes whole blobs, each in place into its own new file, and
    /// flushes them: see `Blobs::write_deferred` for `BlobStore`. The
    /// blobs go in shares of about [`SHARE`] bytes, `concurrency` at most,
    /// each share one call on the blocking pool that writes its blobs and
    /// then flushes the directory (once for concurrent shares and batches
    /// whose blobs one flush covers), so that the batch's
    /// `make_names_durable` has nothing left to do. A blob that fails
    /// leaves no file behind.
    pub(super) async fn write_all_in_place(
        dir: &Arc<LocalDir>,
        blobs: Vec<(BlobName, Vec<Bytes>)>,
        concurrency: usize,
    ) -> Vec<Result<u64, Error>> {
        let bytes: usize = blobs
            .iter()
            .flat_map(|(_, pieces)| pieces.iter().map(Bytes::len))
            .sum();
        let shares = bytes.div_ceil(SHARE).clamp(1, concurrency.max(1));
        if shares == 1 {
            let dir = Arc::clone(dir);
            return blocking::run_short(move || Self::write_share(&dir, &blobs)).await;
        }
        let per_share = blobs.len().div_ceil(shares).max(1);
        let mut blobs = blobs.into_iter();
        let mut writes = Vec::new();
        loop {
            let share: Vec<(BlobName, Vec<Bytes>)> = blobs.by_ref().take(per_share).collect();
            if share.is_empty() {
                break;
            }
            let dir = Arc::clone(dir);
            writes.push(blocking::run(move || Self::write_share(&dir, &share)));
        }
        futures_util::future::join_all(writes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Writes a share of a batch's blobs, then flushes the directory.
    /// Blocks.
    fn write_share(dir: &LocalDir, share: &[(BlobName, Vec<Bytes>)]) -> Vec<Result<u64, Error>> {
        // The directory is checked once for the share's files, made in turn;
        // if it was replaced, every blob of the share fails with the reason.
        if let Err(error) = dir.check_still_there() {
            let none_made = share.iter().map(|_| Ok(0)).collect();
            return crate::blob::fail_written(none_made, &local_error(error));
        }
        let written: Vec<Result<u64, Error>> = share
            .iter()
            .map(|(name, pieces)| Self::write_whole(dir, name.as_str(), pieces))
            .collect();
        if written.iter().all(Result::is_err) {
            return written;
        }
        match dir.flush() {
            Ok(()) => written,
            Err(error) => crate::blob::fail_written(written, &error),
        }
    }

    /// Writes one whole blob into a new file `name` of a directory just
    /// checked ([`LocalDir::check_still_there`]), flushed unless the
    /// directory's flush covers it; removes the file if that fails.
    /// Blocks.
    fn write_whole(dir: &LocalDir, name: &str, pieces: &[Bytes]) -> Result<u64, Error> {
        // Not made (a file is in the way): nothing of ours to remove.
        let file = Arc::new(dir.create_in_checked_dir(name).map_err(local_error)?);
        let (_, written) = Self::write_out(dir, name, Some(Arc::clone(&file)), pieces, false);
        let result = written.and_then(|()| Self::complete(dir, name, &file, None));
        if let Err(error) = result {
            let _ = dir.remove(name);
            return Err(local_error(error));
        }
        Ok(pieces.iter().map(|piece| piece.len() as u64).sum())
    }

    fn refuse_closed(&self) -> Result<(), Error> {
        if self.closed {
            Err(Error::blob(
                ErrorKind::Usage,
                "the upload failed or was finished",
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl BlobUpload for LocalUpload {
    async fn write(&mut self, bytes: Bytes) -> Result<(), Error> {
        self.refuse_closed()?;
        self.written += bytes.len() as u64;
        if self.buffered_len + bytes.len() <= BUFFERED {
            self.buffered_len += bytes.len();
            self.buffered.push(bytes);
            return Ok(());
        }
        let mut pieces = std::mem::take(&mut self.buffered);
        self.buffered_len = 0;
        pieces.push(bytes);
        let (dir, name, file, staged) = (
            Arc::clone(&self.dir),
            self.name.clone(),
            self.file.take(),
            self.publish.is_some(),
        );
        let made = file.is_none();
        let (file, written) =
            blocking::run(move || Self::write_out(&dir, &name, file, &pieces, staged)).await;
        self.owns_file |= made && file.is_some();
        self.file = file;
        // A failed upload is broken; dropping it removes its file.
        self.closed = written.is_err();
        written.map_err(local_error)
    }

    /// Closes the blob. A staged blob is durable, under its name, once this
    /// returns; one written in place once `make_names_durable` returns. On
    /// failure no file is left behind.
    async fn finish(mut self: Box<Self>) -> Result<u64, Error> {
        self.refuse_closed()?;
        self.closed = true;
        // From here the blocking call owns the file: it publishes it, or
        // removes it on failure.
        let owned = std::mem::take(&mut self.owns_file) || self.file.is_none();
        let pieces = std::mem::take(&mut self.buffered);
        let (dir, name, file, publish) = (
            Arc::clone(&self.dir),
            self.name.clone(),
            self.file.take(),
            self.publish.clone(),
        );
        blocking::run_short(move || {
            let (file, written) = Self::write_out(&dir, &name, file, &pieces, publish.is_some());
            let Some(file) = file else {
                // Not made (a file is in the way): nothing of ours to remove.
                return written;
            };
            let result =
                written.and_then(|()| Self::complete(&dir, &name, &file, publish.as_deref()));
            if result.is_err() && owned {
                let _ = dir.remove(&name);
            }
            result
        })
        .await
        .map_err(local_error)?;
        Ok(self.written)
    }
}

impl Drop for LocalUpload {
    /// An upload dropped unfinished leaves no file behind (an unlink, which
    /// does not wait on the disk).
    fn drop(&mut self) {
        if self.owns_file {
            let _ = self.dir.remove(&self.name);
        }
    }
}

/// Reads a local blob from its start, on the blocking pool.
pub(super) struct LocalReader {
    file: Arc<std::fs::File>,
}

impl LocalReader {
    pub(super) fn new(file: std::fs::File) -> Self {
        Self {
            file: Arc::new(file),
        }
    }

    pub(super) async fn open(dir: &Arc<LocalDir>, name: &BlobName) -> Result<Self, Error> {
        let (dir, name) = (Arc::clone(dir), name.clone());
        let file = blocking::run_short(move || dir.open_blob(&name))
            .await
            .map_err(local_error)?;
        Ok(Self::new(file))
    }
}

#[async_trait::async_trait]
impl BlobReader for LocalReader {
    async fn read(&mut self, buf: &mut RunBuffer, max: usize) -> Result<usize, Error> {
        let file = Arc::clone(&self.file);
        // The buffer goes to the blocking pool and back; if this future is
        // dropped meanwhile, it is wiped there.
        let mut owned = std::mem::take(buf);
        let (owned, read) = blocking::run(move || {
            let read = read_up_to(&file, owned.spare(max));
            if let Ok(n) = read {
                owned.advance(n);
            }
            (owned, read)
        })
        .await;
        *buf = owned;
        read.map_err(local_error)
    }
}

/// Fills `into` from `file`, fewer bytes only where it ends; returns how
/// many.
fn read_up_to(mut file: &std::fs::File, into: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = into.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads `range` of `file`: fewer bytes only where it ends. Blocks.
pub(super) fn read_range(
    mut file: &std::fs::File,
    range: std::ops::Range<u64>,
) -> io::Result<Vec<u8>> {
    use std::io::Seek as _;
    let _ = file.seek(io::SeekFrom::Start(range.start))?;
    let len = range.end.saturating_sub(range.start);
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(64 << 20));
    let _ = file.take(len).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// An upload to a local store that never finished: the staging file of a
/// blob, left by a writer that stopped (or still writing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialUpload {
    /// The blob it was for.
    pub blob: BlobName,
    /// The staging file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// When it was last written.
    pub modified: std::time::SystemTime,
    /// Whether its writer is alive: it keeps the file locked while it
    /// writes (`flock`).
    pub in_use: bool,
}

/// The staging files in `dir` (`<blob>#<n>`). Blocks.
pub(super) fn partial_uploads(dir: &Path) -> io::Result<Vec<PartialUpload>> {
    let mut partial = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some((blob, suffix)) = name.to_str().and_then(|n| n.split_once('#')) else {
            continue;
        };
        let (Ok(blob), false) = (blob.parse::<BlobName>(), suffix.is_empty()) else {
            continue;
        };
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let in_use = match std::fs::File::open(entry.path()) {
            Ok(file) => matches!(
                file.try_lock_shared(),
                Err(std::fs::TryLockError::WouldBlock)
            ),
            // Published or removed since the listing.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        partial.push(PartialUpload {
            blob,
            path: entry.path(),
            bytes: meta.len(),
            modified: meta.modified()?,
            in_use,
        });
    }
    partial.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(partial)
}

/// Every blob in `dir` with its size. Blocks.
pub(super) fn list(dir: &Path) -> io::Result<Vec<(BlobName, u64)>> {
    let mut blobs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(Ok(name)) = entry.file_name().to_str().map(str::parse::<BlobName>) else {
            continue;
        };
        let meta = entry.metadata()?;
        if meta.is_file() {
            blobs.push((name, meta.len()));
        }
    }
    blobs.sort();
    Ok(blobs)
}
