//! The error type, and its mapping onto `std::io::Error`.

use std::io;
use std::sync::Arc;

use atrest_core::ErrorKind;

/// Everything that can go wrong encrypting or decrypting a stream.
///
/// Through the `Read`/`Write`/`Seek` adapters an `Error` arrives wrapped in an
/// [`io::Error`] whose kind is [`io::ErrorKind::InvalidData`] for a stream
/// that is cut short ([`Error::Truncated`]), not authentic or not canonical,
/// [`io::ErrorKind::InvalidInput`] for misuse, and the original kind for I/O
/// errors of the underlying reader or writer. Get the typed error back with
/// [`Error::from_io`].
///
/// A cut stream is `InvalidData`, not `UnexpectedEof`, on purpose: the
/// common loop that calls `read_exact` until `UnexpectedEof` and then treats
/// the data as complete must never read a truncated file as a whole one.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream ended early: inside the prefix, the header or a segment, or
    /// right after an inner segment (a segment sealed as "not last").
    #[error("the encrypted stream is truncated")]
    Truncated,

    /// A segment failed to authenticate: wrong associated data, or the
    /// ciphertext was modified, reordered, extended or moved from another
    /// stream.
    #[error("a segment of the encrypted stream failed to authenticate")]
    AuthenticationFailed,

    /// Bytes follow the segment sealed as the stream's last one: the stream
    /// is authentic up to its end, and something was appended to it.
    ///
    /// Every API reports it the same way when the appended bytes begin at a
    /// segment boundary (the real last segment is full); the one exception
    /// is [`Opener::open_stream`](crate::Opener::open_stream) with more appended than
    /// the rest of its chunk (about 256 KiB) holds, which opens such segments
    /// in place and reports [`Error::AuthenticationFailed`]. Bytes appended
    /// after a shorter last segment change that segment's apparent length,
    /// which is indistinguishable from tampering with it:
    /// [`Error::AuthenticationFailed`] everywhere.
    #[error("bytes follow the last segment of the encrypted stream")]
    TrailingData,

    /// The key is not the key this stream was encrypted with (its commitment
    /// differs from the one in the prefix).
    #[error("the key does not match the stream's key commitment")]
    CommitmentMismatch,

    /// The prefix names a format version this build does not know.
    #[error("the stream has format version {0}, which this build does not support")]
    UnsupportedVersion(u8),

    /// The prefix names an algorithm suite this build does not know.
    #[error("the stream has algorithm suite {0}, which this build does not support")]
    UnsupportedSuite(u8),

    /// The stream is not a canonical atrest stream.
    #[error("the encrypted stream is malformed: {0}")]
    Malformed(&'static str),

    /// The plaintext would need more than 2^32 segments.
    #[error("the stream would exceed the format's limit of 2^32 segments")]
    TooLong,

    /// The stream's prefix declares a segment size other than the one the
    /// caller required with
    /// [`Opener::expect_segment_size`](crate::Opener::expect_segment_size)
    /// (for example the size a file record says the stream was sealed
    /// with). Raised when the prefix is read, before the key commitment is
    /// checked and before any segment is read or decrypted.
    #[error("the stream's segment size is {found} bytes, not the expected {expected} bytes")]
    SegmentSizeMismatch {
        /// The segment size the caller required.
        expected: u32,
        /// The segment size the stream's prefix declares.
        found: u32,
    },

    /// A segment size outside `256..=16 MiB` was requested.
    #[error("segment size {0} is out of range (256 to 16,777,216 bytes)")]
    InvalidSegmentSize(u32),

    /// A byte range outside the plaintext, or reversed, was requested.
    #[error("range {start}..{end} is not within the plaintext of {len} bytes")]
    InvalidRange {
        /// Start of the requested range.
        start: u64,
        /// End of the requested range.
        end: u64,
        /// Length of the plaintext.
        len: u64,
    },

    /// The output buffer given is too small.
    #[error("the output buffer is too small: {needed} bytes are needed")]
    OutputTooSmall {
        /// Bytes needed.
        needed: u64,
    },

    /// The stream was used after `finish`, or after an earlier error made it
    /// unusable.
    #[error("the stream is {0}")]
    Misuse(&'static str),

    /// The cryptographic backend rejected an operation that cannot fail with
    /// valid inputs; report it as a bug.
    #[error("the cryptographic backend failed unexpectedly")]
    Backend,

    /// The operating system's random number generator failed.
    #[error("the operating system random number generator failed")]
    Rng,

    /// The underlying reader or writer failed.
    #[error("I/O error: {0}")]
    Io(#[source] Arc<io::Error>),
}

impl Error {
    /// The typed error inside an `io::Error` returned by this crate's
    /// adapters, or an [`Error::Io`] for any other `io::Error`.
    pub fn from_io(error: io::Error) -> Self {
        match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<Self>())
        {
            Some(typed) => typed.clone(),
            None => Self::Io(Arc::new(error)),
        }
    }

    /// What kind of failure this is: a stream that is cut short, not
    /// authentic or not canonical is [`ErrorKind::Integrity`]; a request
    /// the API does not allow (a range outside the plaintext, a segment
    /// size out of range, a plaintext longer than the format allows) is
    /// [`ErrorKind::Usage`]; a failure of the underlying reader or writer
    /// is [`ErrorKind::Io`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Truncated
            | Self::AuthenticationFailed
            | Self::TrailingData
            | Self::CommitmentMismatch
            | Self::UnsupportedVersion(_)
            | Self::UnsupportedSuite(_)
            | Self::Malformed(_)
            | Self::SegmentSizeMismatch { .. } => ErrorKind::Integrity,
            Self::TooLong
            | Self::InvalidSegmentSize(_)
            | Self::InvalidRange { .. }
            | Self::OutputTooSmall { .. }
            | Self::Misuse(_) => ErrorKind::Usage,
            Self::Backend | Self::Rng => ErrorKind::Unavailable,
            Self::Io(_) => ErrorKind::Io,
        }
    }

    /// The `io::ErrorKind` this error maps to.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            Self::Truncated
            | Self::AuthenticationFailed
            | Self::TrailingData
            | Self::CommitmentMismatch
            | Self::UnsupportedVersion(_)
            | Self::UnsupportedSuite(_)
            | Self::Malformed(_)
            | Self::SegmentSizeMismatch { .. }
            | Self::TooLong => io::ErrorKind::InvalidData,
            Self::InvalidSegmentSize(_)
            | Self::InvalidRange { .. }
            | Self::OutputTooSmall { .. }
            | Self::Misuse(_) => io::ErrorKind::InvalidInput,
            Self::Rng | Self::Backend => io::ErrorKind::Other,
            Self::Io(e) => e.kind(),
        }
    }
}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        Self::from_io(error)
    }
}

impl From<Error> for io::Error {
    fn from(error: Error) -> Self {
        match error {
            // Hand back the original I/O error where this crate holds the only
            // reference to it.
            Error::Io(inner) => Arc::try_unwrap(inner)
                .unwrap_or_else(|shared| io::Error::new(shared.kind(), Error::Io(shared))),
            other => io::Error::new(other.io_kind(), other),
        }
    }
}
