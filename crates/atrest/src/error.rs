//! The error types of `atrest`.

pub use atrest_core::ErrorKind;
use atrest_filekey::{FileVersion, KeyVersion, TenantId};

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

impl RecordError {
    /// What kind of failure this is: always [`ErrorKind::Integrity`] (the
    /// record and its blob disagree, or the record names a format this
    /// build cannot open).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnsupportedFormat(_)
            | Self::InvalidSegmentSize(_)
            | Self::LengthMismatch { .. } => ErrorKind::Integrity,
        }
    }
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
    /// A new version's precondition (see [`crate::catalog::Precondition`])
    /// does not hold for the file's newest version: another writer got
    /// there first.
    #[error(
        "the precondition of the upload of {name:?} (tenant {tenant}) does not hold: its newest version is {}",
        newest.map_or_else(|| "none".to_owned(), |v| v.to_string())
    )]
    PreconditionFailed {
        /// The tenant.
        tenant: TenantId,
        /// The file name.
        name: String,
        /// The file's newest sealed version (`None`: it has none).
        newest: Option<FileVersion>,
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
    /// A tenant's name fails its authentication: the mapping of the name
    /// to its tenant was edited (or made) by someone without the tenant's
    /// key, or the name was given before names were tagged. Refused.
    #[error(
        "the name {name:?} of tenant {tenant} fails its authentication (edited in the database?); refused"
    )]
    NameTampered {
        /// The name.
        name: String,
        /// The tenant the catalog says it names.
        tenant: TenantId,
    },
    /// The catalog broke the contract of its trait (it answered a batch
    /// with another number of records than it was given, say): its answers
    /// cannot be trusted.
    #[error("the catalog broke its contract: {0}")]
    Contract(&'static str),
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

impl CatalogError {
    /// What kind of failure this is: no such tenant, file or version is
    /// [`ErrorKind::NotFound`]; a name taken, a seal no longer in progress,
    /// a TIK version retired meanwhile or a precondition that does not
    /// hold [`ErrorKind::Conflict`]; an
    /// invalid name [`ErrorKind::Usage`]; a damaged or edited record
    /// [`ErrorKind::Integrity`]; a database failure what the backend
    /// decided.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownTenantName { .. }
            | Self::UnknownFile { .. }
            | Self::UnknownVersion { .. } => ErrorKind::NotFound,
            Self::TenantNameTaken { .. }
            | Self::SealNotInProgress { .. }
            | Self::TikRetired { .. }
            | Self::PreconditionFailed { .. } => ErrorKind::Conflict,
            Self::InvalidName { .. } => ErrorKind::Usage,
            Self::Corrupt(_)
            | Self::Tampered { .. }
            | Self::NameTampered { .. }
            | Self::Contract(_) => ErrorKind::Integrity,
            Self::Database { kind, .. } => *kind,
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

    /// A file's record names a blob that no copy of the blob store holds:
    /// it was removed or lost. The record is intact; the file's bytes are
    /// gone unless a copy is restored.
    #[error(
        "the file's blob {blob} is missing from the blob store ({locations} location(s) tried): \
         it was removed or lost"
    )]
    BlobMissing {
        /// The blob's name.
        blob: crate::BlobName,
        /// How many locations (the primary and replicas) were tried.
        locations: usize,
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

    /// A delivered key's wire form is not one
    /// ([`crate::DeliveredKey::from_wire`]); never holds the key.
    #[error("delivered key: {0}")]
    DeliveredKey(String),
}

impl Error {
    /// What kind of failure this is, as the crate where it arose decided.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Keys(error) => error.kind(),
            Self::Stream(error) => error.kind(),
            Self::Audit(error) => error.kind(),
            Self::Catalog(error) => error.kind(),
            Self::Record(error) => error.kind(),
            Self::InvalidRange { .. } => ErrorKind::Usage,
            Self::BlobMissing { .. } => ErrorKind::Integrity,
            Self::Blob { kind, .. } => *kind,
            Self::Io(_) => ErrorKind::Io,
            Self::DeliveredKey(_) => ErrorKind::Usage,
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
