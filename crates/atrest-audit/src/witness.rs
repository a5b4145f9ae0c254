//! Witnesses: copies of the log's checkpoints kept where the log's writer
//! cannot reach.
//!
//! A log signs a checkpoint at the end of every commit batch. Anyone who can
//! write the log's directory can still delete whole batches from its end, or
//! — holding the signing key — rewrite it and sign again. A *witness* defeats
//! both: the log publishes its checkpoints to it as they are made
//! ([`LogConfig::witness`](crate::LogConfig::witness)), refuses to open when
//! the log no longer matches the witness's latest checkpoint, and
//! [`verify`](crate::verify) checks the log against the checkpoints the
//! operator fetches from it.
//!
//! [`DirectoryWitness`] keeps them in a directory (another disk, a mounted
//! share, a directory the service's user can only append to). Implement
//! [`Witness`] to publish elsewhere (an object store, a transparency log).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use atrest_core::ErrorKind;

use crate::Error;
use crate::checkpoint::Checkpoint;
use crate::fs::{private_dirs, private_file};

/// A place that keeps a log's checkpoints.
pub trait Witness: Send + Sync {
    /// Where it is, for messages.
    fn describe(&self) -> String;

    /// Stores `checkpoint`, newer than every checkpoint published before for
    /// its origin. Called by the log with its writer lock held, so calls for
    /// one log never overlap.
    ///
    /// # Errors
    /// [`Error::Witness`] if it was not stored durably.
    fn publish(&self, checkpoint: &Checkpoint) -> Result<(), Error>;

    /// The newest checkpoint published for the log `origin`, if any.
    ///
    /// # Errors
    /// [`Error::Witness`] if the witness cannot be read or holds something
    /// that is not a checkpoint.
    fn latest(&self, origin: &str) -> Result<Option<Checkpoint>, Error>;
}

/// A [`Witness`] in a directory: one append-only file per log,
/// `<log id>.checkpoints`, one JSON string (the checkpoint's text) per line,
/// each line synced before [`Witness::publish`] returns.
#[derive(Clone, Debug)]
pub struct DirectoryWitness {
    dir: PathBuf,
}

/// How far from its end a witness file is read to find the newest
/// checkpoint: more than two of the longest checkpoints.
const TAIL_READ: u64 = 16 * 1024;

impl DirectoryWitness {
    /// A witness in `dir` (created when the first checkpoint is published).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The witness's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, origin: &str) -> Result<PathBuf, Error> {
        let id = origin
            .strip_prefix("atrest-audit/")
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                self.error(
                    ErrorKind::Integrity,
                    format!("{origin:?} is not an atrest audit log origin"),
                )
            })?;
        Ok(self.dir.join(format!("{id}.checkpoints")))
    }

    fn error(&self, kind: ErrorKind, reason: String) -> Error {
        Error::Witness {
            witness: self.describe(),
            kind,
            reason,
        }
    }

    /// A failure to read or write the witness's file `path`.
    fn unavailable(&self, path: &Path) -> impl Fn(std::io::Error) -> Error + Copy {
        move |e| self.error(ErrorKind::Unavailable, format!("{}: {e}", path.display()))
    }
}

impl Witness for DirectoryWitness {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn publish(&self, checkpoint: &Checkpoint) -> Result<(), Error> {
        let path = self.file(&checkpoint.origin)?;
        let fail = self.unavailable(&path);
        let mut line = serde_json::to_vec(&checkpoint.to_text()).map_err(|e| {
            self.error(
                ErrorKind::Unavailable,
                format!("cannot encode a checkpoint: {e}"),
            )
        })?;
        line.push(b'\n');
        let new = !path.exists();
        if new {
            private_dirs(&self.dir).map_err(fail)?;
        }
        let mut file = private_file()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(fail)?;
        file.write_all(&line).map_err(fail)?;
        file.sync_data().map_err(fail)?;
        if new {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(fail)?;
        }
        Ok(())
    }

    fn latest(&self, origin: &str) -> Result<Option<Checkpoint>, Error> {
        let path = self.file(origin)?;
        let fail = self.unavailable(&path);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        let len = file.metadata().map_err(fail)?.len();
        let start = len.saturating_sub(TAIL_READ);
        file.seek(SeekFrom::Start(start)).map_err(fail)?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail).map_err(fail)?;
        // Complete lines only: a publish cut short by a crash was never
        // acknowledged, and the line before it is the newest checkpoint.
        let complete = match tail.iter().rposition(|&b| b == b'\n') {
            Some(end) => tail.get(..end).unwrap_or_default(),
            None if start == 0 => return Ok(None),
            None => {
                return Err(self.error(
                    ErrorKind::Integrity,
                    "the last checkpoint line is too long".into(),
                ));
            }
        };
        let Some(line) = complete.rsplit(|&b| b == b'\n').next() else {
            return Ok(None);
        };
        if line.is_empty() {
            return Ok(None);
        }
        let text: String = serde_json::from_slice(line).map_err(|e| {
            self.error(
                ErrorKind::Integrity,
                format!("{}: not a checkpoint line: {e}", path.display()),
            )
        })?;
        let checkpoint = Checkpoint::parse(&text)?;
        if checkpoint.origin != origin {
            return Err(self.error(
                ErrorKind::Integrity,
                format!(
                    "{} holds a checkpoint of another log ({})",
                    path.display(),
                    checkpoint.origin
                ),
            ));
        }
        Ok(Some(checkpoint))
    }
}
