//! The error types of this crate.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Errors of the audit log, records and checkpoints.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A text field is not acceptable.
    #[error("invalid audit text: {0}")]
    InvalidText(&'static str),

    /// The directory does not hold an audit log this build can read.
    #[error("{path}: not an atrest audit log: {reason}")]
    NotALog {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// The log is damaged somewhere other than a torn final write, so it is
    /// not repaired automatically: run verification to see where.
    #[error("{path}: audit log damaged at line {line}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// The line (from 1).
        line: u64,
        /// What is wrong.
        reason: String,
    },

    /// An earlier write or fsync failed, so what is on disk is unknown; no
    /// further appends are accepted. Reopen the log to recover.
    #[error("the audit log stopped after a failed write: {0}")]
    Poisoned(String),

    /// A checkpoint or key is malformed.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A checkpoint's signature does not verify under the key.
    #[error("checkpoint signature does not verify")]
    BadSignature,

    /// A required sink failed; the record is durable in the log itself.
    #[error("audit sink {sink} failed: {reason}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What it reported.
        reason: String,
    },

    /// Other writers held the log's lock for longer than the configured
    /// timeout; nothing was written.
    #[error("the audit log is busy: other writers held its lock for {waited:?}")]
    Busy {
        /// How long this writer waited.
        waited: std::time::Duration,
    },

    /// A checkpoint could not be published to, or read from, a witness.
    #[error("audit witness {witness}: {reason}")]
    Witness {
        /// The witness (its location).
        witness: String,
        /// What went wrong.
        reason: String,
    },

    /// The checkpoint signer could not sign (a key in a token that is
    /// unavailable, for example); nothing was written.
    #[error("audit checkpoint signer {signer}: {reason}")]
    Signer {
        /// The signer (its key).
        signer: String,
        /// What went wrong.
        reason: String,
    },

    /// Checkpoint and recovery lines are written by the log itself, never
    /// appended by callers.
    #[error("checkpoint and log_recovered records are written by the audit log itself")]
    Reserved,

    /// The operating system's random number generator failed.
    #[error("the operating system random number generator failed")]
    Rng,

    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Arc<io::Error>,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}
