//! The log's files: its directory's layout, private files and directories,
//! the meta file, segment names, and the writers' lock.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Error;

pub(crate) const FORMAT: &str = "atrest-audit";
pub(crate) const FORMAT_VERSION: u32 = 2;
pub(crate) const META_FILE: &str = "LOG";
pub(crate) const LOCK_FILE: &str = "LOCK";
pub(crate) const RECOVERED_DIR: &str = "recovered";
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Meta {
    pub(crate) format: String,
    pub(crate) version: u32,
    pub(crate) log_id: String,
}

pub(crate) fn segment_path(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("{index:08}.log"))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

pub(crate) fn io<T>(path: &Path, result: std::io::Result<T>) -> Result<T, Error> {
    result.map_err(|e| Error::io(path, e))
}

/// The log id of the log in `dir`.
pub(crate) fn read_meta(dir: &Path) -> Result<String, Error> {
    let path = dir.join(META_FILE);
    let text = io(&path, fs::read_to_string(&path))?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| Error::NotALog {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if meta.format != FORMAT {
        return Err(Error::NotALog {
            path,
            reason: format!("format {:?}", meta.format),
        });
    }
    if meta.version != FORMAT_VERSION {
        return Err(Error::NotALog {
            path,
            reason: format!(
                "log format version {}; this build reads version {FORMAT_VERSION}",
                meta.version
            ),
        });
    }
    if meta.log_id.len() != 32 || !meta.log_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::NotALog {
            path,
            reason: "malformed log id".into(),
        });
    }
    Ok(meta.log_id)
}

/// The checkpoint origin of the log in `dir` (`atrest-audit/<log id>`),
/// read from its `LOG` file: what to ask a [`Witness`](crate::Witness) for.
///
/// # Errors
/// [`Error::NotALog`]; [`Error::Io`].
pub fn read_origin(dir: impl AsRef<Path>) -> Result<String, Error> {
    Ok(origin_of(&read_meta(dir.as_ref())?))
}

/// Options to open or create a file of the log: created readable and
/// writable by its owner only (0600).
pub(crate) fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates `dir` and its missing parents, readable by their owner only
/// (0700).
pub(crate) fn private_dirs(dir: &Path) -> std::io::Result<()> {
    std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700).create(dir)
}

/// The origin of the log `log_id` in checkpoints.
pub(crate) fn origin_of(log_id: &str) -> String {
    format!("{FORMAT}/{log_id}")
}

/// The segment files of the log in `dir`, in order; they must be numbered
/// consecutively from 1.
pub(crate) fn segments(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut indices = Vec::new();
    for entry in io(dir, fs::read_dir(dir))? {
        let entry = io(dir, entry)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(index) = name
            .strip_suffix(".log")
            .filter(|n| n.len() == 8)
            .and_then(|n| n.parse::<u32>().ok())
        {
            indices.push(index);
        }
    }
    indices.sort_unstable();
    for (position, &index) in indices.iter().enumerate() {
        if u64::from(index) != position as u64 + 1 {
            return Err(Error::Corrupt {
                path: segment_path(dir, index),
                line: 0,
                reason: format!("segment {} is missing", position + 1),
            });
        }
    }
    if indices.is_empty() {
        return Err(Error::NotALog {
            path: segment_path(dir, 1),
            reason: "no segment".into(),
        });
    }
    Ok(indices.into_iter().map(|i| segment_path(dir, i)).collect())
}

/// Takes `lock` exclusively (or shared), retrying until `timeout`: after
/// 200 µs, then pauses doubling up to 2 ms, since another process holds the
/// lock only for an append or a batch (a few milliseconds with its flush),
/// and a longer pause would leave it unused.
pub(crate) fn take_lock<'a>(
    lock: &'a File,
    path: &Path,
    shared: bool,
    timeout: Duration,
) -> Result<LockGuard<'a>, Error> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        let attempt = if shared {
            lock.try_lock_shared()
        } else {
            lock.try_lock()
        };
        match attempt {
            Ok(()) => return Ok(LockGuard(lock)),
            Err(fs::TryLockError::WouldBlock) => {
                let waited = start.elapsed();
                if waited >= timeout {
                    return Err(Error::Busy { waited });
                }
                std::thread::sleep(pause.min(timeout.saturating_sub(waited)));
                pause = (pause * 2).min(Duration::from_millis(2));
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
    }
}

/// Releases the lock when dropped.
pub(crate) struct LockGuard<'a>(&'a File);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Closing the file or ending the process releases it too.
        let _ = self.0.unlock();
    }
}

/// Opens (creating if needed) the lock file of the log in `dir`.
pub(crate) fn open_lock(dir: &Path) -> Result<File, Error> {
    let path = dir.join(LOCK_FILE);
    io(
        &path,
        private_file()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path),
    )
}
