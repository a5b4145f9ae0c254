//! The error type of this crate.

use atrest_core::ErrorKind;

use crate::{KeyId, KeyVersion};

/// Everything that can go wrong in `atrest-filekey`.
///
/// Errors never carry key bytes. A failed unwrap says only that authentication
/// failed, never why: the wrapped key, the context and the key-encryption key
/// are indistinguishable causes on purpose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The wrapped key did not authenticate under this key-encryption key and
    /// context: wrong tenant, file, file version or key, or tampered bytes.
    #[error("wrapped file key failed to authenticate (wrong key or context, or tampered)")]
    AuthenticationFailed,

    /// The wrapped key names a different key-encryption key (id or version)
    /// than the one it was given to.
    #[error(
        "wrapped file key was made under key {found_id} version {found_version}, not under key {expected_id} version {expected_version}"
    )]
    KekMismatch {
        /// Id of the key that was supplied.
        expected_id: KeyId,
        /// Version of the key that was supplied.
        expected_version: KeyVersion,
        /// Id recorded in the wrapped key.
        found_id: KeyId,
        /// Version recorded in the wrapped key.
        found_version: KeyVersion,
    },

    /// The wrapped key has the wrong length.
    #[error(
        "wrapped file key is {actual} bytes long; format version 1 is exactly {expected} bytes"
    )]
    InvalidLength {
        /// Required length.
        expected: usize,
        /// Length received.
        actual: usize,
    },

    /// The wrapped key uses a format version this build does not know.
    #[error("wrapped file key has format version {0}, which this build does not support")]
    UnsupportedVersion(u8),

    /// The wrapped key names an algorithm suite this build does not know.
    #[error("wrapped file key has algorithm suite {0}, which this build does not support")]
    UnsupportedSuite(u8),

    /// A field of the wrapped key is not canonically encoded (for example a zero
    /// key id or key version).
    #[error("wrapped file key is malformed: {0}")]
    Malformed(&'static str),

    /// An identifier or version failed validation.
    #[error("invalid {kind}: {reason}")]
    InvalidId {
        /// Which identifier type was being built.
        kind: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The cryptographic backend rejected an operation that cannot fail with
    /// valid inputs; report it as a bug.
    #[error("the cryptographic backend failed unexpectedly")]
    Backend,

    /// The operating system's random number generator failed.
    #[error("the operating system random number generator failed")]
    Rng,
}

impl Error {
    /// What kind of failure this is: a wrapped key that does not
    /// authenticate or parse is [`ErrorKind::Integrity`], an identifier
    /// that fails validation [`ErrorKind::Usage`], a failed generator or
    /// backend [`ErrorKind::Unavailable`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::AuthenticationFailed
            | Self::KekMismatch { .. }
            | Self::InvalidLength { .. }
            | Self::UnsupportedVersion(_)
            | Self::UnsupportedSuite(_)
            | Self::Malformed(_) => ErrorKind::Integrity,
            Self::InvalidId { .. } => ErrorKind::Usage,
            Self::Backend | Self::Rng => ErrorKind::Unavailable,
        }
    }
}
