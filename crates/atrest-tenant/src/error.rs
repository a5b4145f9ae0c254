//! Errors of the tenant key hierarchy and of root-key providers.

use atrest_core::ErrorKind;
use atrest_filekey::{KeyVersion, TenantId};

use crate::RootKeyRef;

/// What a root-key provider (service key store, HSM, KMS) reported.
///
/// The distinction matters for the availability-key rule: only
/// [`ProviderError::Unavailable`] lets a user request fall back to the
/// availability key; an answer (`AccessDenied`, `NotFound`, `Destroyed`)
/// never does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The provider answered and refused: the service's access to the key
    /// was removed (wrong or changed PIN, key usage disabled, policy).
    #[error("root key {key}: access denied ({detail})")]
    AccessDenied {
        /// The key.
        key: RootKeyRef,
        /// What the provider said.
        detail: String,
    },
    /// The provider could not be reached or failed (a transient system
    /// error: network, device, token not present, timeout).
    #[error("root key {key}: provider unavailable ({detail})")]
    Unavailable {
        /// The key.
        key: RootKeyRef,
        /// What went wrong.
        detail: String,
    },
    /// The provider has no such key.
    #[error("root key {key}: not found")]
    NotFound {
        /// The key.
        key: RootKeyRef,
    },
    /// The key existed and was destroyed.
    #[error("root key {key}: destroyed")]
    Destroyed {
        /// The key.
        key: RootKeyRef,
    },
    /// A wrapped key did not authenticate under the root key (tampered, or
    /// wrapped for another tenant, TIK version or root key).
    #[error("root key {key}: wrapped key failed to authenticate")]
    AuthenticationFailed {
        /// The key.
        key: RootKeyRef,
    },
    /// The provider cannot be used as configured (bad module path, no such
    /// token, key already exists, unsupported operation).
    #[error("root-key provider {provider}: {detail}")]
    Misconfigured {
        /// The provider's name.
        provider: String,
        /// What is wrong.
        detail: String,
    },
}

impl ProviderError {
    /// Whether this is a transient failure that allows falling back to the
    /// availability key.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// What kind of failure this is: a refusal, a missing or destroyed key
    /// is [`ErrorKind::Refused`]; a wrap that does not authenticate
    /// [`ErrorKind::Integrity`]; a provider that cannot be reached
    /// [`ErrorKind::Unavailable`]; one configured wrongly
    /// [`ErrorKind::Usage`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::AccessDenied { .. } | Self::NotFound { .. } | Self::Destroyed { .. } => {
                ErrorKind::Refused
            }
            Self::AuthenticationFailed { .. } => ErrorKind::Integrity,
            Self::Unavailable { .. } => ErrorKind::Unavailable,
            Self::Misconfigured { .. } => ErrorKind::Usage,
        }
    }

    /// How decisive the error is when several keys failed: an explicit
    /// refusal outranks a missing key, which outranks a transient failure.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            Self::AccessDenied { .. } => 5,
            Self::Destroyed { .. } => 4,
            Self::NotFound { .. } => 3,
            Self::AuthenticationFailed { .. } => 2,
            Self::Misconfigured { .. } => 1,
            Self::Unavailable { .. } => 0,
        }
    }
}

/// Everything that can go wrong in `atrest-tenant`.
///
/// Errors never carry key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A root key could not unwrap or wrap a tenant intermediate key; the
    /// most decisive provider answer is given (see [`ProviderError`]).
    #[error(transparent)]
    RootKey(#[from] ProviderError),

    /// The tenant was purged: its key material no longer exists and none of
    /// its files can be decrypted, by any path.
    #[error("tenant {0} was purged; its file keys are destroyed")]
    Purged(TenantId),

    /// Every customer key of the tenant was revoked: user requests are
    /// refused.
    #[error("tenant {0}: the customer revoked the service's access to its root keys")]
    Revoked(TenantId),

    /// The key-release policy refused the request.
    #[error("key release denied: {reason}")]
    Denied {
        /// The policy's reason.
        reason: String,
    },

    /// The key-release policy could not decide (what it asks could not
    /// answer): nothing was released or written.
    #[error("the key-release policy could not decide: {reason}")]
    PolicyUnavailable {
        /// Why.
        reason: String,
    },

    /// The tenant's key metadata fails its authentication: it was edited
    /// by someone without the tenant key (a writer of the database), and is
    /// refused rather than obeyed. The refusal is audited.
    #[error(
        "tenant {tenant}: the {what} fails its authentication (edited in the database?); refused"
    )]
    Tampered {
        /// The tenant.
        tenant: TenantId,
        /// Which record.
        what: &'static str,
    },

    /// The tenant's record says it is active, but its tenant key (kept
    /// outside the database) does not exist: the tenant was purged and the
    /// database restored from an older copy, or the key was removed. Its
    /// files cannot be decrypted.
    #[error(
        "tenant {0} has no tenant key: it was purged (and its metadata restored from an older copy?) or the key was removed"
    )]
    TenantKeyMissing(TenantId),

    /// No such tenant.
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantId),

    /// The tenant already exists.
    #[error("tenant {0} already exists")]
    TenantExists(TenantId),

    /// The tenant has no such TIK version (retired, or never created).
    #[error("tenant {tenant} has no TIK version {version}")]
    UnknownTikVersion {
        /// The tenant.
        tenant: TenantId,
        /// The version asked for.
        version: KeyVersion,
    },

    /// The wrapped file key was not made under this tenant's TIK.
    #[error("the wrapped file key does not belong to tenant {0}")]
    WrongTenant(TenantId),

    /// A TIK version cannot be retired while wrapped file keys refer to it,
    /// nor while it is the current version.
    #[error("TIK version {version} of tenant {tenant} is still in use ({references} wrapped file keys{current})", current = if *.is_current { ", and it is the current version" } else { "" })]
    TikInUse {
        /// The tenant.
        tenant: TenantId,
        /// The version.
        version: KeyVersion,
        /// Wrapped file keys still under it.
        references: u64,
        /// Whether it is the current version.
        is_current: bool,
    },

    /// A wrapped file key failed to unwrap (wrong context, tampered) or
    /// another file-key operation failed.
    #[error(transparent)]
    FileKey(#[from] atrest_filekey::Error),

    /// The audit record of an operation could not be written; the operation
    /// was not carried out (fail closed).
    #[error("audit: {0}")]
    Audit(#[from] atrest_audit::Error),

    /// The key metadata store failed (the database could not be opened,
    /// read or written); `kind` says how, as the store classified it (a
    /// server that cannot be reached is [`ErrorKind::Unavailable`]); the
    /// source is the database's own error.
    #[error("key store: {source}")]
    Store {
        /// How it failed.
        kind: ErrorKind,
        /// The database's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The key metadata store holds a value that is not valid (edited or
    /// damaged): refused rather than guessed at.
    #[error("key store holds an invalid {0}")]
    Corrupt(&'static str),

    /// A concurrent change won (another roll, a purge, a root-key roll
    /// that changed the TIK versions); nothing was changed. Running the
    /// operation again sees the new state.
    #[error("conflict: {0}; nothing was changed")]
    Conflict(&'static str),

    /// A key with this reference already exists.
    #[error("root key {0} already exists")]
    KeyExists(RootKeyRef),

    /// A key file (the master key file) is unusable.
    #[error("key file {}: {problem}", path.display())]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: KeyFileProblem,
    },

    /// The API was used in a way it does not allow.
    #[error("misuse: {0}")]
    Misuse(&'static str),

    /// The operating system's random number generator failed.
    #[error("the operating system random number generator failed")]
    Rng,
}

impl Error {
    /// A failure of the key metadata store, of kind `kind`.
    pub fn store(
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::Store {
            kind,
            source: source.into(),
        }
    }

    /// What kind of failure this is, decided where it arose: a refusal
    /// (policy, revocation, purge, a root key that refuses) is
    /// [`ErrorKind::Refused`]; metadata or a wrapped key that does not
    /// authenticate [`ErrorKind::Integrity`]; a store or provider that
    /// cannot be reached [`ErrorKind::Unavailable`]; and so on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::RootKey(error) => error.kind(),
            Self::Purged(_) | Self::Revoked(_) | Self::Denied { .. } => ErrorKind::Refused,
            Self::Tampered { .. }
            | Self::TenantKeyMissing(_)
            | Self::WrongTenant(_)
            | Self::Corrupt(_) => ErrorKind::Integrity,
            Self::UnknownTenant(_) | Self::UnknownTikVersion { .. } => ErrorKind::NotFound,
            Self::TenantExists(_)
            | Self::TikInUse { .. }
            | Self::Conflict(_)
            | Self::KeyExists(_) => ErrorKind::Conflict,
            Self::FileKey(error) => error.kind(),
            Self::Audit(error) => error.kind(),
            Self::Store { kind, .. } => *kind,
            Self::KeyFile { problem, .. } => problem.kind(),
            Self::Misuse(_) => ErrorKind::Usage,
            Self::Rng | Self::PolicyUnavailable { .. } => ErrorKind::Unavailable,
        }
    }
}

/// What is wrong with a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileProblem {
    /// It could not be created, read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Group or others may read or write it; it must be mode 0600.
    #[error("permissions {mode:03o} let others read it; it must be 600 (chmod 600)")]
    Permissions {
        /// The file's permission bits.
        mode: u32,
    },
    /// It is not a key file of this kind.
    #[error("not an atrest key file of the expected kind")]
    NotAKeyFile,
}

impl KeyFileProblem {
    /// What kind of failure this is: a file that is missing
    /// [`ErrorKind::NotFound`], one that exists already
    /// [`ErrorKind::Conflict`], other I/O failures [`ErrorKind::Io`]; a
    /// file readable by others or of another kind [`ErrorKind::Usage`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Io(error) => ErrorKind::of_io(error),
            Self::Permissions { .. } | Self::NotAKeyFile => ErrorKind::Usage,
        }
    }
}
