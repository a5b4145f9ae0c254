//! The error types of this crate.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use atrest_core::ErrorKind;

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

    /// [`restart`](crate::log::restart::restart) of a log that verifies:
    /// there is nothing to set aside.
    #[error("the audit log verifies: there is nothing to recover")]
    Intact,

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
    #[error("audit sink {sink} failed: {source}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What it reported.
        #[source]
        source: SinkError,
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
        /// How it failed: [`ErrorKind::Unavailable`] if it could not be
        /// reached, read or written; [`ErrorKind::Integrity`] if it holds
        /// something that is not a checkpoint of this log.
        kind: ErrorKind,
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
    /// What kind of failure this is: a log, checkpoint or signature that
    /// does not verify or parse is [`ErrorKind::Integrity`]; a log whose
    /// lock other writers hold, a signer, witness or sink that cannot be
    /// reached is [`ErrorKind::Unavailable`] (a retry may succeed); a
    /// failed write is [`ErrorKind::Io`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidText(_) | Self::Reserved | Self::Intact => ErrorKind::Usage,
            Self::NotALog { .. }
            | Self::Corrupt { .. }
            | Self::Malformed { .. }
            | Self::BadSignature => ErrorKind::Integrity,
            Self::Poisoned(_) | Self::Io { .. } => ErrorKind::Io,
            Self::Sink { source, .. } => source.kind(),
            Self::Witness { kind, .. } => *kind,
            Self::Busy { .. } | Self::Signer { .. } | Self::Rng => ErrorKind::Unavailable,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// Why a [`Sink`](crate::Sink) could not take a record: its kind and what
/// it reported.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct SinkError {
    kind: ErrorKind,
    reason: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl SinkError {
    /// A failure of kind `kind` (a destination that cannot be reached is
    /// [`ErrorKind::Unavailable`]), described by `reason`.
    pub fn new(kind: ErrorKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
            source: None,
        }
    }

    /// A failure to write the record to an I/O destination, classified by
    /// [`ErrorKind::of_io`].
    pub fn io(error: io::Error) -> Self {
        Self {
            kind: ErrorKind::of_io(&error),
            reason: error.to_string(),
            source: Some(Arc::new(error)),
        }
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}
