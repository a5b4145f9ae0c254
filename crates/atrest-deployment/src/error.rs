//! The error type of a deployment directory.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong with a deployment directory. Each variant
/// says what kind of failure it is, so a program can map it (to an exit
/// code, an HTTP status) without reading messages; causes are kept as
/// sources.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory holds no deployment (no configuration file).
    #[error(
        "{} holds no atrest deployment (no {}); create one with `atrest init`",
        dir.display(),
        super::CONFIG
    )]
    NoDeployment {
        /// The directory.
        dir: PathBuf,
        /// Why the configuration file could not be read.
        #[source]
        source: io::Error,
    },

    /// The directory already holds a deployment.
    #[error("{} already holds a deployment", dir.display())]
    AlreadyInitialized {
        /// The directory.
        dir: PathBuf,
    },

    /// The audit signing key file does not hold the key whose verifying
    /// key the configuration names.
    #[error("{}: not the audit signing key this deployment was created with", path.display())]
    AuditKeyMismatch {
        /// The key file.
        path: PathBuf,
    },

    /// The directory given to `init` holds something other than a
    /// deployment.
    #[error("{} is not empty; give a new or empty directory", dir.display())]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },

    /// The configuration file is not valid JSON of the expected shape.
    #[error("{}: {source}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: serde_json::Error,
    },

    /// The configuration file has a version this build does not know.
    #[error("{}: unsupported configuration version {version}", path.display())]
    UnsupportedVersion {
        /// The configuration file.
        path: PathBuf,
        /// The version it names.
        version: u32,
    },

    /// No tenant has this name.
    #[error(
        "no tenant named {name:?}{}",
        if name.chars().any(char::is_uppercase) { " (tenant names are lower case)" } else { "" }
    )]
    UnknownTenant {
        /// The name asked for.
        name: String,
    },

    /// A token holds no key of the name given.
    #[error("{key}: the token holds no such key (create it, or pass --generate)")]
    NoSuchTokenKey {
        /// The key, as a root-key reference.
        key: String,
    },

    /// The key named is not one of the tenant's root keys.
    #[error("{key} is not a root key of tenant {tenant:?}")]
    UnknownRootKey {
        /// The tenant's name.
        tenant: String,
        /// The key, as given.
        key: String,
    },

    /// No key service of that name is configured.
    #[error("no key service named {name:?} is configured (atrest kms add)")]
    UnknownKms {
        /// The name given.
        name: String,
    },

    /// The deployment's own root keys are `root` and `availability`.
    #[error("{label:?} is not a service key; the service keys are \"root\" and \"availability\"")]
    UnknownServiceKey {
        /// The label given.
        label: String,
    },

    /// A provider name is configured already, with another token or module.
    #[error(
        "provider {provider} is already configured with another token or module; name this \
         tenant's tokens with providers of their own (--provider-a, --provider-b)"
    )]
    ProviderConflict {
        /// The provider's name.
        provider: String,
    },

    /// A name does not follow the rule for its kind.
    #[error("invalid {what} {name:?}: {rule}")]
    InvalidName {
        /// What the name is for (`tenant name`, `file name`, …).
        what: &'static str,
        /// The name given.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },

    /// Other processes have the deployment open, and what was asked needs
    /// it to themselves.
    #[error(
        "other processes have the deployment open: {}; stop them first",
        holders.join(", ")
    )]
    InUse {
        /// Each, as `program (pid N)`.
        holders: Vec<String>,
    },

    /// Something the operator gave (an argument) is not usable.
    #[error("{what}: {detail}")]
    BadArgument {
        /// What was given (`the verifying key given`, …).
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },

    /// A system operation was asked of a deployment that gave up issuing
    /// system capabilities ([`crate::Deployment::give_up_administration`]):
    /// a service whose request handlers hold it.
    #[error(
        "this deployment issues no system capabilities (it serves requests); run the operation with `atrest`"
    )]
    NoAdministration,

    /// The environment variable that should hold a token's PIN is not set.
    #[error("set the token PIN in the environment variable {variable}")]
    PinNotSet {
        /// The variable's name.
        variable: String,
    },

    /// The PostgreSQL database of the deployment's metadata could not be
    /// used.
    #[error("metadata database: {0}")]
    Postgres(#[from] atrest_postgres::PgError),

    /// The number of copies asked for is not one the locations allow.
    #[error("{copies} copies asked for, with {locations} blob locations: choose 1 to {locations}")]
    InvalidCopies {
        /// The copies asked for.
        copies: usize,
        /// The primary and the replicas.
        locations: usize,
    },

    /// A scrub left copies of blobs bad (the report lists them). Only
    /// unreachable locations: [`atrest::ErrorKind::Unavailable`]; otherwise
    /// [`atrest::ErrorKind::Integrity`].
    #[error("{unrepaired} copies of blobs are missing or damaged and were not repaired")]
    BlobsDamaged {
        /// How many copies are still bad.
        unrepaired: usize,
        /// Whether every one of them is at a location that did not answer.
        unreachable_only: bool,
    },

    /// The metadata database's URL is not usable as configured.
    #[error("metadata database: {0}")]
    MetadataUrl(&'static str),

    /// A file of the deployment could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },

    /// The `atrest` library failed (keys, stream, audit, blobs).
    #[error(transparent)]
    Library(#[from] atrest::Error),

    /// The library failed on a tenant it names by id; the message names it
    /// by the name the operator knows it by.
    #[error("{}", source.to_string().replace(id.as_str(), &format!("{name:?}")))]
    InTenant {
        /// The tenant's name.
        name: String,
        /// The tenant's id, as the library's message writes it.
        id: String,
        /// The library's error.
        #[source]
        source: Box<atrest::Error>,
    },
}

impl From<atrest::tenant::Error> for Error {
    fn from(error: atrest::tenant::Error) -> Self {
        Self::Library(error.into())
    }
}

impl From<atrest::audit::Error> for Error {
    fn from(error: atrest::audit::Error) -> Self {
        Self::Library(error.into())
    }
}

impl From<atrest::filekey::Error> for Error {
    fn from(error: atrest::filekey::Error) -> Self {
        Self::Library(atrest::tenant::Error::from(error).into())
    }
}

impl From<atrest::tenant::ProviderError> for Error {
    fn from(error: atrest::tenant::ProviderError) -> Self {
        Self::Library(atrest::tenant::Error::from(error).into())
    }
}

impl Error {
    /// What kind of failure this is (the library's classification, for
    /// exit codes and HTTP statuses).
    pub fn kind(&self) -> atrest::ErrorKind {
        use atrest::ErrorKind as K;
        match self {
            Self::NoDeployment { .. }
            | Self::Config { .. }
            | Self::UnsupportedVersion { .. }
            | Self::UnknownServiceKey { .. }
            | Self::InvalidName { .. }
            | Self::BadArgument { .. }
            | Self::NoAdministration
            | Self::PinNotSet { .. } => K::Usage,
            Self::AlreadyInitialized { .. }
            | Self::InUse { .. }
            | Self::NotEmpty { .. }
            | Self::ProviderConflict { .. } => K::Conflict,
            Self::UnknownTenant { .. }
            | Self::UnknownRootKey { .. }
            | Self::UnknownKms { .. }
            | Self::NoSuchTokenKey { .. } => K::NotFound,
            Self::AuditKeyMismatch { .. } => K::Integrity,
            Self::Io { .. } => K::Io,
            Self::Postgres(error) => error.kind(),
            Self::MetadataUrl(_) | Self::InvalidCopies { .. } => K::Usage,
            Self::BlobsDamaged {
                unreachable_only: true,
                ..
            } => K::Unavailable,
            Self::BlobsDamaged { .. } => K::Integrity,
            Self::Library(error) => error.kind(),
            Self::InTenant { source, .. } => source.kind(),
        }
    }
}

/// `map_err` helper: an I/O error on `path`.
pub(super) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
