//! The program's errors and the one mapping from an error to an exit code.

use std::io;
use std::path::PathBuf;

pub(crate) use atrest_cli::outcome::EXIT_CODES;
use atrest_cli::outcome::{FAILED, INTEGRITY, NOT_FOUND, USAGE, kind_code};
use atrest_deployment as deployment;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The command line asks for something that cannot be done.
    #[error("{message}")]
    Usage {
        /// What is wrong, and what to do instead.
        message: String,
    },

    /// What the command names does not exist (beyond what the deployment
    /// reports itself).
    #[error("{message}")]
    NotFound {
        /// What was not found.
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

    /// A move's journal and the service's trail disagree (the report says
    /// how).
    #[error("the move's trails disagree")]
    MoveTrailsDisagree,

    /// The demo saw something the model rules out.
    #[error("demo: {what}")]
    Demo {
        /// What it saw.
        what: &'static str,
    },

    /// The deployment failed.
    #[error(transparent)]
    Deployment(#[from] deployment::Error),

    /// A library call on this machine failed.
    #[error(transparent)]
    Library(#[from] atrest::Error),

    /// A service answered with an error of this kind.
    #[error("{message}")]
    Remote {
        /// What kind of failure the service reported.
        kind: atrest::ErrorKind,
        /// What it said, and what was asked.
        message: String,
    },

    /// The deployment failed, and there is something the operator can do.
    #[error("{source}\n{hint}")]
    Hinted {
        /// The failure.
        source: deployment::Error,
        /// What to do.
        hint: &'static str,
    },
}

impl Error {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::Usage {
            message: message.into(),
        }
    }

    /// `map_err` helper for a file named on the command line: "no such
    /// file" is said so, anything else as it is; both are I/O failures.
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

/// The exit code for `error` (see [`EXIT_CODES`]): the program's own
/// errors, then every library error by its [`atrest::ErrorKind`].
pub(crate) fn exit_code(error: &Error) -> u8 {
    match error {
        Error::Usage { .. } => USAGE,
        Error::NotFound { .. } => NOT_FOUND,
        Error::NoSuchFile { .. } | Error::Io { .. } => FAILED,
        Error::AuditDoesNotVerify | Error::MoveTrailsDisagree | Error::Demo { .. } => INTEGRITY,
        Error::Deployment(error) | Error::Hinted { source: error, .. } => kind_code(error.kind()),
        Error::Library(error) => kind_code(error.kind()),
        Error::Remote { kind, .. } => kind_code(*kind),
    }
}
