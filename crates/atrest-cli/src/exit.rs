//! The program's errors and the one mapping from an error to an exit code.

use std::io;
use std::path::PathBuf;

use atrest::ErrorKind;
use atrest_deployment as deployment;

/// The exit codes, as `--help` shows them.
pub(crate) const EXIT_CODES: &str = "\
Exit status:
  0  done
  1  failed: an I/O or storage error (a directory given as a file, a full disk, a closed pipe)
  2  bad usage or configuration (including no deployment: run `atrest init`)
  3  not found (tenant, file, version, key)
  4  refused: release policy, revoked or destroyed customer key, purged tenant
  5  integrity: a blob, record or catalog entry that does not authenticate or parse, or an
     audit log that does not verify
  6  unavailable: a key service or store could not be reached
  7  conflict: it exists already (deployment, tenant, file version), or is still in use";

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The command line asks for something that cannot be done.
    #[error("{message}")]
    Usage {
        /// What is wrong, and what to do instead.
        message: String,
    },

    /// A file named on the command line does not exist.
    #[error("{}: {source}", path.display())]
    NoSuchFile {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },

    /// A file (or standard output) could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// The file, or `standard output`.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },

    /// The audit log does not verify (the report says where).
    #[error("the audit log does not verify")]
    AuditDoesNotVerify,

    /// The demo saw something the model rules out.
    #[error("demo: {what}")]
    Demo {
        /// What it saw.
        what: &'static str,
    },

    /// The deployment failed.
    #[error(transparent)]
    Deployment(#[from] deployment::Error),
}

impl Error {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::Usage {
            message: message.into(),
        }
    }

    /// `map_err` helper for a file named on the command line: "no such
    /// file" is a usage error, anything else an I/O error.
    pub(crate) fn at(path: &std::path::Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| {
            if source.kind() == io::ErrorKind::NotFound {
                Self::NoSuchFile { path, source }
            } else {
                Self::Io {
                    what: path.display().to_string(),
                    source,
                }
            }
        }
    }

    /// `map_err` helper for standard output.
    pub(crate) fn stdout(source: io::Error) -> Self {
        Self::Io {
            what: "standard output".into(),
            source,
        }
    }
}

const FAILED: u8 = 1;
const USAGE: u8 = 2;
const NOT_FOUND: u8 = 3;
const REFUSED: u8 = 4;
const INTEGRITY: u8 = 5;
const UNAVAILABLE: u8 = 6;
const CONFLICT: u8 = 7;

/// The exit code for `error` (see [`EXIT_CODES`]): the program's own
/// errors, then every library error by its [`ErrorKind`].
pub(crate) fn exit_code(error: &Error) -> u8 {
    match error {
        Error::Usage { .. } | Error::NoSuchFile { .. } => USAGE,
        Error::Io { .. } => FAILED,
        Error::AuditDoesNotVerify | Error::Demo { .. } => INTEGRITY,
        Error::Deployment(error) => kind_code(error.kind()),
    }
}

/// The exit code of a kind of failure.
fn kind_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Refused => REFUSED,
        ErrorKind::Integrity => INTEGRITY,
        ErrorKind::Conflict => CONFLICT,
        ErrorKind::Unavailable => UNAVAILABLE,
        ErrorKind::Usage => USAGE,
        ErrorKind::Io => FAILED,
    }
}
