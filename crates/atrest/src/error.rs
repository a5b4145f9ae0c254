//! The error type of `atrest`.

/// Everything that can go wrong sealing or opening a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key operation failed: the release policy refused, the tenant was
    /// purged or revoked, a root key was unavailable, … (see
    /// [`atrest_tenant::Error`]).
    #[error(transparent)]
    Keys(#[from] atrest_tenant::Error),

    /// The blob failed to decrypt (tampered, truncated, another file's, or
    /// cut short) or could not be written or read (see
    /// [`atrest_stream::Error`]).
    #[error(transparent)]
    Stream(#[from] atrest_stream::Error),

    /// The audit record could not be written.
    #[error("audit: {0}")]
    Audit(#[from] atrest_audit::Error),

    /// The file record does not describe a blob this build can open, or
    /// does not match the blob.
    #[error("file record: {0}")]
    Record(String),

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

    /// The blob store failed.
    #[error("blob store: {0}")]
    Blob(String),

    /// A deployment directory, catalog or name is unusable.
    #[error("{0}")]
    Config(String),

    /// Something the caller named does not exist.
    #[error("{0}")]
    NotFound(String),

    /// An I/O error outside the stream (the local file being read or
    /// written).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
