//! The error type of `atrest`, and the one classification of every failure
//! of the workspace's crates.

use atrest_filekey::{FileVersion, KeyVersion, TenantId};

/// What kind of failure an [`Error`] is: the one classification a program
/// maps to its exit codes and a service to its HTTP statuses, without
/// matching the nested errors of the lower crates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Something named does not exist: a tenant, a file, a version, a
    /// blob (HTTP 404).
    NotFound,
    /// Refused: the release or write policy said no, the customer revoked
    /// or destroyed their keys, the tenant was purged (HTTP 403).
    Refused,
    /// Data or metadata failed to authenticate or is not well-formed: a
    /// tampered, truncated or swapped blob, a damaged record, an audit log
    /// that does not verify. Never retried blindly (HTTP 500, alert).
    Integrity,
    /// A concurrent change won, or the thing already exists; running the
    /// operation again sees the new state (HTTP 409).
    Conflict,
    /// A service the operation needs (a key service, a database, a blob
    /// store) could not be reached or timed out; a retry may succeed
    /// (HTTP 503).
    Unavailable,
    /// Reading or writing local data failed (a full disk, a broken pipe,
    /// a directory where a file was expected) (HTTP 500).
    Io,
    /// The API or the program was used wrongly: an invalid name, range or
    /// configuration (HTTP 400).
    Usage,
}

/// A file record that does not describe a blob this build can open, or
/// does not match its blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record names a stream format version this build does not know.
    #[error("stream format version {0} is not supported")]
    UnsupportedFormat(u8),
    /// The record's segment size is not a valid one.
    #[error("invalid segment size {0}")]
    InvalidSegmentSize(u32),
    /// The blob decrypted to another length than the record gives.
    #[error("the blob holds {blob} bytes, the record says {record}")]
    LengthMismatch {
        /// What the record says.
        record: u64,
        /// What the blob held.
        blob: u64,
    },
}

/// What the catalog (the home of file records) reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// No tenant has this name.
    #[error("no tenant named {name:?}")]
    UnknownTenantName {
        /// The name asked for.
        name: String,
    },
    /// The name is already given to another tenant.
    #[error("tenant name {name:?} is taken")]
    TenantNameTaken {
        /// The name.
        name: String,
    },
    /// The tenant has no file of this name.
    #[error("tenant {tenant} has no file {name:?}")]
    UnknownFile {
        /// The tenant.
        tenant: TenantId,
        /// The file name.
        name: String,
    },
    /// The file has no such (completely sealed) version.
    #[error("tenant {tenant} has no version {version} of {name:?}")]
    UnknownVersion {
        /// The tenant.
        tenant: TenantId,
        /// The file name.
        name: String,
        /// The version asked for.
        version: FileVersion,
    },
    /// A name breaks the naming rule (see [`crate::check_name`]).
    #[error("invalid {what} {name:?}: {rule}")]
    InvalidName {
        /// What was named (`file name`, `tenant name`).
        what: &'static str,
        /// The name, as given.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The seal this refers to is no longer in progress (finished,
    /// abandoned, or collected as stale).
    #[error("the seal of version {version} is no longer in progress")]
    SealNotInProgress {
        /// The version being sealed.
        version: FileVersion,
    },
    /// The file key was wrapped under a TIK version that was retired
    /// meanwhile (the hierarchy's cached metadata was stale); make the key
    /// again.
    #[error("TIK version {version} was retired meanwhile")]
    TikRetired {
        /// The retired version.
        version: KeyVersion,
    },
    /// The catalog holds a value that is not valid (edited or damaged).
    #[error("the catalog holds an invalid {0}")]
    Corrupt(&'static str),
    /// A file record fails its authentication: it was edited in the
    /// database (another file's record put under this name or version,
    /// a size or segment size changed) by someone without the tenant's
    /// metadata key, and is refused.
    #[error(
        "the record of version {version} of {name:?} (tenant {tenant}) fails its authentication (edited in the database?); refused"
    )]
    Tampered {
        /// The tenant.
        tenant: TenantId,
        /// The file name asked for.
        name: String,
        /// The version the record claims.
        version: FileVersion,
    },
    /// The database failed; `kind` says how (busy, I/O, damaged).
    #[error("catalog database: {source}")]
    Database {
        /// How it failed.
        kind: ErrorKind,
        /// The database's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl From<rusqlite::Error> for CatalogError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Database {
            kind: sqlite_kind(&error),
            source: Box::new(error),
        }
    }
}

/// Everything that can go wrong sealing, opening or cataloguing a file.
///
/// [`Error::kind`] classifies it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key operation failed: the policy refused, the tenant was purged
    /// or revoked, a root key was unavailable, … (see
    /// [`atrest_tenant::Error`]).
    #[error(transparent)]
    Keys(#[from] atrest_tenant::Error),

    /// The blob failed to decrypt (tampered, truncated, another file's) or
    /// could not be read or written (see [`atrest_stream::Error`]).
    #[error(transparent)]
    Stream(#[from] atrest_stream::Error),

    /// The audit record could not be written; the operation was not
    /// carried out, or its result not released.
    #[error("audit: {0}")]
    Audit(#[from] atrest_audit::Error),

    /// The catalog failed or has no such file.
    #[error(transparent)]
    Catalog(#[from] CatalogError),

    /// The file record does not describe a blob this build can open, or
    /// does not match the blob.
    #[error("file record: {0}")]
    Record(#[from] RecordError),

    /// The requested byte range is not within the file.
    #[error("range {start}..{end} is not within the file's {len} bytes")]
    InvalidRange {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The file's length.
        len: u64,
    },

    /// The blob store failed; `kind` says how.
    #[error("blob store: {source}")]
    Blob {
        /// How it failed.
        kind: ErrorKind,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// Reading the plaintext or writing the output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Keys(error) => tenant_kind(error),
            Self::Stream(error) => stream_kind(error),
            Self::Audit(error) => audit_kind(error),
            Self::Catalog(error) => catalog_kind(error),
            Self::Record(_) => ErrorKind::Integrity,
            Self::InvalidRange { .. } => ErrorKind::Usage,
            Self::Blob { kind, .. } => *kind,
            Self::Io(_) => ErrorKind::Io,
        }
    }

    pub(crate) fn blob(
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::Blob {
            kind,
            source: source.into(),
        }
    }
}

fn catalog_kind(error: &CatalogError) -> ErrorKind {
    match error {
        CatalogError::UnknownTenantName { .. }
        | CatalogError::UnknownFile { .. }
        | CatalogError::UnknownVersion { .. } => ErrorKind::NotFound,
        CatalogError::TenantNameTaken { .. }
        | CatalogError::SealNotInProgress { .. }
        | CatalogError::TikRetired { .. } => ErrorKind::Conflict,
        CatalogError::InvalidName { .. } => ErrorKind::Usage,
        CatalogError::Corrupt(_) | CatalogError::Tampered { .. } => ErrorKind::Integrity,
        CatalogError::Database { kind, .. } => *kind,
    }
}

/// How a SQLite failure is classified.
pub(crate) fn sqlite_kind(error: &rusqlite::Error) -> ErrorKind {
    use rusqlite::ErrorCode as Code;
    match error.sqlite_error_code() {
        Some(Code::DatabaseBusy | Code::DatabaseLocked) => ErrorKind::Unavailable,
        Some(Code::ConstraintViolation) => ErrorKind::Conflict,
        Some(Code::DatabaseCorrupt | Code::NotADatabase | Code::SchemaChanged) => {
            ErrorKind::Integrity
        }
        Some(
            Code::ReadOnly | Code::PermissionDenied | Code::CannotOpen | Code::NoLargeFileSupport,
        ) => ErrorKind::Usage,
        Some(_) => ErrorKind::Io,
        None => match error {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..) => ErrorKind::Integrity,
            _ => ErrorKind::Io,
        },
    }
}

fn tenant_kind(error: &atrest_tenant::Error) -> ErrorKind {
    use atrest_tenant::{Error as E, KeyFileProblem, ProviderError as P};
    match error {
        E::RootKey(provider) => match provider {
            P::AccessDenied { .. } | P::Destroyed { .. } | P::NotFound { .. } => ErrorKind::Refused,
            P::Unavailable { .. } => ErrorKind::Unavailable,
            P::AuthenticationFailed { .. } => ErrorKind::Integrity,
            _ => ErrorKind::Usage,
        },
        E::Purged(_) | E::Revoked(_) | E::Denied { .. } => ErrorKind::Refused,
        E::UnknownTenant(_) | E::UnknownTikVersion { .. } => ErrorKind::NotFound,
        E::TenantExists(_) | E::TikInUse { .. } | E::Conflict(_) | E::KeyExists(_) => {
            ErrorKind::Conflict
        }
        E::WrongTenant(_)
        | E::FileKey(_)
        | E::Corrupt(_)
        | E::Tampered { .. }
        | E::TenantKeyMissing(_) => ErrorKind::Integrity,
        E::Audit(error) => audit_kind(error),
        E::Store(source) => source
            .downcast_ref::<rusqlite::Error>()
            .map_or(ErrorKind::Io, sqlite_kind),
        E::KeyFile { problem, .. } => match problem {
            KeyFileProblem::Io(error) if error.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            KeyFileProblem::Io(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                ErrorKind::Conflict
            }
            KeyFileProblem::Io(_) => ErrorKind::Io,
            _ => ErrorKind::Usage,
        },
        E::Rng => ErrorKind::Unavailable,
        _ => ErrorKind::Usage,
    }
}

fn stream_kind(error: &atrest_stream::Error) -> ErrorKind {
    use atrest_stream::Error as E;
    match error {
        E::Io(_) => ErrorKind::Io,
        E::InvalidRange { .. } | E::OutputTooSmall { .. } | E::Misuse(_) => ErrorKind::Usage,
        E::Backend | E::Rng => ErrorKind::Unavailable,
        _ => ErrorKind::Integrity,
    }
}

fn audit_kind(error: &atrest_audit::Error) -> ErrorKind {
    use atrest_audit::Error as E;
    match error {
        E::Corrupt { .. } | E::Malformed { .. } | E::BadSignature | E::NotALog { .. } => {
            ErrorKind::Integrity
        }
        E::Io { .. } | E::Poisoned(_) => ErrorKind::Io,
        // Retry later: another writer holds the log, or a service is down.
        E::Busy { .. } | E::Witness { .. } | E::Signer { .. } | E::Sink { .. } | E::Rng => {
            ErrorKind::Unavailable
        }
        _ => ErrorKind::Usage,
    }
}
