//! A whole deployment in one directory: what the operator programs run on.
//!
//! ```text
//! DIR/atrest.json          configuration: blob store and replicas, PKCS#11 tokens,
//!                          audit verifying key
//! DIR/master.key           the master key (mode 0600) sealing the service's root keys
//! DIR/keys.sqlite          the service's root keys (`root`, `availability`), sealed
//! DIR/atrest.sqlite        tenant key metadata (TIK versions and their wraps)
//! DIR/tenant-keys/         one tenant key per tenant, sealed under the master key;
//!                          a purge destroys it. Keep it out of database backups:
//!                          restoring an old copy of it would undo purges
//! DIR/catalog.sqlite       the catalog: tenant names, file names, versions, and each
//!                          version's record (wrapped file key, sizes, blob name
//!                          and digest)
//! DIR/audit/               the audit log: every batch ends with a signed checkpoint
//! DIR/audit-signing.key    the checkpoint signing key (PKCS#8, mode 0600)
//! DIR/audit-witness/       where checkpoints are published, unless `init` named
//!                          another directory (keep it on other storage)
//! DIR/blobs/               the blobs, unless a blob store URL was given
//! ```
//!
//! The catalog ([`atrest_sqlite::SqliteCatalog`], or PostgreSQL's) is the one home of file records:
//! it alone maps a tenant and a file name to a blob, and it is the index of
//! wrapped file keys that rotation re-wraps. Blobs have random names and
//! hold only ciphertext. With replicas (`init --replica`), every blob is
//! written to each replica location too, and [`Deployment::scrub_blobs`]
//! checks and repairs the copies against the digests in the records.
//!
//! A program opens a deployment with its [`Options`]: its name in the
//! audit trail and, unless it brings its own, the membership release
//! policy: principals are written `user@tenant` ([`Principal`]) and a user
//! reads and writes the files of their own tenant only; system operations
//! (re-wrap) are allowed.

mod config;
mod error;
mod keys;
mod policy;
mod replicas;

use std::fs;
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use atrest::audit::{
    Audit as _, AuditLog, DirectoryWitness, Entry, Event, LogConfig, Record, Recovery, Report,
    SigningKey, Text, VerifyingKey,
};
use atrest::blobs::BlobStore;
use atrest::filekey::{FileVersion, KeyVersion, OsRng, TenantId};
use atrest::stream::{PlaintextSink, WriteSink};
use atrest::tenant::MetadataStore;
use atrest::tenant::blocking::block_on;
use atrest::tenant::{
    Access, MasterKey, Pkcs11Keys, ReleasePolicy, RewrapProgress, RewrapReport, RootKeyProvider,
    RootKeyRef, RootRollReport, ServiceKeys, TenantKeyDir, TenantKind, TenantState,
};
use atrest::{Catalog, FileRecord, Files};
use atrest_sqlite::{SqliteCatalog, SqliteSealedKeys, SqliteStore};
use serde::Serialize;

use self::config::{Config, write_private};
use self::error::io_at;

pub use self::config::{KmsConfig, MetadataConfig, TokenConfig};
pub use self::error::Error;
pub use self::keys::{Fallback, Options};
pub use self::policy::Principal;
pub use self::replicas::{DamagedRecord, ScrubReport};

const CONFIG: &str = "atrest.json";
const SIGNING_KEY: &str = "audit-signing.key";
const AUDIT_DIR: &str = "audit";
const DEFAULT_WITNESS: &str = "audit-witness";
const SERVICE_PROVIDER: &str = "service";
const TENANT_KEYS: &str = "tenant-keys";
const ROOT_KEY: &str = "root";
const AVAILABILITY_KEY: &str = "availability";

/// How a new tenant's root keys are held.
#[derive(Clone, Debug)]
pub enum TenantKeys {
    /// By the service.
    ServiceManaged,
    /// By the customer: one key in each of two PKCS#11 tokens (plus the
    /// service's availability key). The tokens are added to the
    /// deployment's configuration.
    CustomerKey {
        /// The tokens, with the label of the key in each.
        keys: Box<[(TokenConfig, String); 2]>,
        /// Generate the keys in the tokens (sensitive, not extractable)
        /// rather than use existing ones.
        generate: bool,
    },
    /// By the customer: two keys at providers the program registered with
    /// [`Options::provider`] (plus the service's availability key).
    CustomerKeyAt {
        /// The two keys.
        keys: [RootKeyRef; 2],
    },
}

/// One file version in the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// The tenant's name.
    pub tenant: String,
    /// The file's name.
    pub name: String,
    /// The file version.
    pub version: u64,
    /// Plaintext bytes.
    pub bytes: u64,
    /// The TIK version its key is wrapped under.
    pub tik_version: u32,
    /// The blob's name.
    pub blob: String,
    /// When it was sealed (RFC 3339).
    pub sealed: String,
    /// Whether it can still be opened: `false` once its tenant was purged.
    pub readable: bool,
}

impl Listing {
    fn new(tenant: &str, record: &FileRecord, readable: bool) -> Self {
        let sealed = std::time::UNIX_EPOCH + std::time::Duration::from_secs(record.sealed_at);
        Self {
            readable,
            tenant: tenant.to_owned(),
            name: record.name.clone(),
            version: u64::from(record.version),
            bytes: record.plaintext_len,
            tik_version: u32::from(record.tik_version()),
            blob: record.blob.to_string(),
            sealed: atrest::audit::Timestamp::from(sealed).to_string(),
        }
    }
}

/// What [`Deployment::put`] did.
#[derive(Clone, Debug, Serialize)]
pub struct PutReport {
    /// The tenant's name.
    pub tenant: String,
    /// The file's name.
    pub name: String,
    /// The new version.
    pub version: u64,
    /// The file record kept in the catalog.
    pub record: FileRecord,
    /// The blob's name.
    pub blob: String,
}

/// A tenant's state, for display.
#[derive(Clone, Debug, Serialize)]
pub struct TenantSummary {
    /// The tenant's name.
    pub name: String,
    /// Its id.
    pub id: String,
    /// `service-managed` or `customer-key`.
    pub kind: String,
    /// `active` or `purged`.
    pub state: String,
    /// The current TIK version.
    pub current_tik: u32,
    /// Its root keys, as `role provider:label@version`, with `(revoked)`
    /// marks.
    pub root_keys: Vec<String>,
    /// Every TIK version it still has, oldest first, with the number of
    /// file keys wrapped under each.
    pub tik_versions: Vec<TikVersionSummary>,
    /// Whether file keys are still wrapped under versions older than the
    /// current one: a rotation that has not finished (run it again).
    pub rotation_unfinished: bool,
}

/// One TIK version of a tenant.
#[derive(Debug, Clone, Serialize)]
pub struct TikVersionSummary {
    /// The version.
    pub version: u32,
    /// Whether new file keys are wrapped under it.
    pub current: bool,
    /// File keys wrapped under it.
    pub file_keys: u64,
}

/// A deployment directory, opened.
pub struct Deployment {
    dir: PathBuf,
    config: Config,
    options: Options,
    service: Arc<ServiceKeys>,
    store: Arc<dyn MetadataStore>,
    tenant_keys: Arc<TenantKeyDir>,
    log: Arc<AuditLog>,
    recovery: Recovery,
    fallbacks: keys::FallbackWatch,
    catalog: Arc<dyn Catalog>,
    policy: Arc<dyn ReleasePolicy>,
    files: Files,
    administration: atrest::tenant::Administration,
    locations: replicas::Locations,
}

impl core::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Deployment")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Deployment {
    /// Creates a deployment in `dir` (which must not hold one already): a
    /// new master key file, the service's root and availability keys, the
    /// key store and catalog, the audit log with a checkpoint signing key
    /// and its witness directory (`audit_witness`, or `DIR/audit-witness`),
    /// and the blob store (`blobs_url`, or `DIR/blobs`); then opens it with
    /// `options`.
    ///
    /// All or nothing: the deployment is built in a new directory beside
    /// `dir` and renamed into place only once every part was made and
    /// opened; after a failure (or an interruption) `dir` is as it was.
    /// `dir` must not exist or be empty.
    ///
    /// # Errors
    /// [`Error::AlreadyInitialized`] if `dir` holds a deployment;
    /// [`Error::NotEmpty`] if it holds anything else; [`Error::Io`] if it
    /// cannot be written; errors of the parts (a blob store URL that does
    /// not work, for example).
    pub fn init(
        dir: &Path,
        blobs_url: Option<&str>,
        audit_witness: Option<&Path>,
        options: Options,
    ) -> Result<Self, Error> {
        let setup = Setup {
            blobs: blobs_url.map(str::to_owned),
            audit_witness: audit_witness.map(Path::to_path_buf),
            metadata: MetadataConfig::Sqlite,
            replicas: Vec::new(),
            copies: None,
        };
        Self::init_with(dir, &setup, options)
    }

    /// As [`Deployment::init`], with every choice in `setup`: where blobs,
    /// the audit witness and the key metadata and catalog go.
    ///
    /// # Errors
    /// As for [`Deployment::init`]; [`Error::MetadataUrl`] for a
    /// PostgreSQL URL given with a password (give it through an
    /// environment variable), [`Error::Postgres`] if the database cannot be
    /// reached.
    pub fn init_with(dir: &Path, setup: &Setup, options: Options) -> Result<Self, Error> {
        let blobs_url = setup.blobs.as_deref();
        let audit_witness = setup.audit_witness.as_deref();
        if dir.join(CONFIG).exists() {
            return Err(Error::AlreadyInitialized {
                dir: dir.to_path_buf(),
            });
        }
        let empty = match fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(io_at(dir)(e)),
        };
        if !empty {
            return Err(Error::NotEmpty {
                dir: dir.to_path_buf(),
            });
        }
        // The checks that need no files first.
        if let Some(url) = blobs_url {
            let _ = BlobStore::from_url(url)?;
        }
        let copies = replicas::copies(setup.copies, setup.replicas.len())?;
        // Replicas in local directories are kept by absolute path; the
        // directories this makes are removed again if `init` fails.
        let mut replica_specs = Vec::with_capacity(setup.replicas.len());
        let mut made_dirs = Vec::new();
        for spec in &setup.replicas {
            if replicas::is_local(spec) {
                let path = std::path::absolute(spec).map_err(io_at(spec))?;
                if !path.exists() {
                    made_dirs.push(path.clone());
                }
                replica_specs.push(path.display().to_string());
            } else {
                let _ = BlobStore::from_url(spec)?;
                replica_specs.push(spec.clone());
            }
        }
        let replication = (!replica_specs.is_empty()).then_some((replica_specs, copies));
        let metadata = match &setup.metadata {
            MetadataConfig::Sqlite => None,
            postgres @ MetadataConfig::Postgres { .. } => {
                // Reachable, and its tables made, before anything is written.
                drop(open_postgres(postgres)?);
                Some(postgres.clone())
            }
        };
        let witness = audit_witness
            .map(|path| std::path::absolute(path).map_err(io_at(path)))
            .transpose()?;
        let staging = staging_dir(dir)?;
        let built = Self::build(
            &staging,
            blobs_url,
            replication,
            witness.as_deref(),
            metadata,
            options.clone(),
        )
        .and_then(|()| {
            // Renamed over `dir` if it is an empty directory.
            fs::rename(&staging, dir).map_err(io_at(dir))?;
            sync_parent(dir)
        });
        if let Err(error) = built {
            let _ = fs::remove_dir_all(&staging);
            // Only if still empty: nothing of anyone else's is removed.
            for made in made_dirs.iter().rev() {
                let _ = fs::remove_dir(made);
            }
            return Err(error);
        }
        Self::open(dir, options)
    }

    /// Makes every part of a deployment in `dir` (a new, private
    /// directory), and opens it once.
    fn build(
        dir: &Path,
        blobs_url: Option<&str>,
        replication: Option<(Vec<String>, usize)>,
        audit_witness: Option<&Path>,
        metadata: Option<MetadataConfig>,
        options: Options,
    ) -> Result<(), Error> {
        let master = MasterKey::create_file(&dir.join("master.key"))?;
        let service = service_keys(dir, master)?;
        let _ = block_on(service.create_key(ROOT_KEY))?;
        let _ = block_on(service.create_key(AVAILABILITY_KEY))?;
        drop(service);
        let (signer, pkcs8) = SigningKey::generate("atrest-audit")?;
        write_private(&dir.join(SIGNING_KEY), &pkcs8)?;
        // The default witness is named relative to the deployment, so it
        // moves with it.
        let witness =
            audit_witness.map_or_else(|| PathBuf::from(DEFAULT_WITNESS), Path::to_path_buf);
        let audit_verifying_key = signer.verifying_key().to_string();
        let _ = AuditLog::create(
            dir.join(AUDIT_DIR),
            signer,
            audit_config(Some(&dir.join(&witness))),
        )?;
        let (replicas, copies) = match replication {
            Some((replicas, copies)) => (replicas, Some(copies)),
            None => (Vec::new(), None),
        };
        let config = Config {
            version: 1,
            blobs: blobs_url.map(str::to_owned),
            replicas,
            copies,
            tokens: Vec::new(),
            metadata,
            kms: Vec::new(),
            audit_verifying_key,
            audit_witness: Some(witness),
        };
        config.write(dir)?;
        drop(Self::open(dir, options)?);
        Ok(())
    }

    /// Opens the deployment in `dir` for the program described by
    /// `options`.
    ///
    /// # Errors
    /// [`Error::NoDeployment`] if `dir` holds no deployment (run `init`);
    /// [`Error::Config`] or [`Error::UnsupportedVersion`] for an unusable
    /// configuration file; errors of the parts.
    pub fn open(dir: &Path, options: Options) -> Result<Self, Error> {
        let config = Config::read(dir)?;
        let master = MasterKey::open_file(&dir.join("master.key"))?;
        let tenant_keys = Arc::new(TenantKeyDir::open(&dir.join(TENANT_KEYS), master.clone())?);
        let service = Arc::new(service_keys(dir, master)?);
        let (store, catalog) = open_metadata(dir, &config)?;
        let signing_key = dir.join(SIGNING_KEY);
        // Read at its size in one allocation, and wiped once parsed.
        let pkcs8 = zeroize::Zeroizing::new(fs::read(&signing_key).map_err(io_at(&signing_key))?);
        let signer = SigningKey::from_pkcs8("atrest-audit", &pkcs8)?;
        if signer.verifying_key().to_string() != config.audit_verifying_key {
            return Err(Error::AuditKeyMismatch { path: signing_key });
        }
        let (log, recovery) = AuditLog::open(
            dir.join(AUDIT_DIR),
            signer,
            audit_config(config.audit_witness(dir).as_deref()),
        )?;
        let log = Arc::new(log);
        let locations = replicas::Locations::open(dir, &config)?;
        let fallbacks = keys::FallbackWatch::default();
        let policy = options
            .custom_policy()
            .unwrap_or_else(|| policy::members(catalog.clone()));
        let parts = keys::Parts {
            config: &config,
            options: &options,
            service: &service,
            store: &store,
            tenant_keys: &tenant_keys,
            catalog: &catalog,
            blobs: &locations.stored,
            log: &log,
            fallbacks: &fallbacks,
        };
        let (files, administration) = parts.files(policy.clone())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            options,
            service,
            store,
            tenant_keys,
            log,
            recovery,
            fallbacks,
            catalog,
            policy,
            files,
            administration,
            locations,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options it was opened with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The files API (seal, open) over this deployment's keys and log.
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// The primary blob store.
    pub fn blobs(&self) -> &Arc<BlobStore> {
        &self.locations.primary
    }

    /// The replica blob stores (none unless configured).
    pub fn replicas(&self) -> &[Arc<BlobStore>] {
        &self.locations.replicas
    }

    /// What files are sealed to and opened from: the primary alone, or
    /// the primary and its replicas.
    pub fn stored_blobs(&self) -> &Arc<dyn atrest::Blobs> {
        &self.locations.stored
    }

    /// The key store (tenant key metadata).
    pub fn key_store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    /// The catalog (tenant names and file records).
    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    /// The service's root keys.
    pub fn service_keys(&self) -> &Arc<ServiceKeys> {
        &self.service
    }

    /// The audit log's checkpoint verifying key (text form).
    pub fn audit_verifying_key(&self) -> &str {
        &self.config.audit_verifying_key
    }

    /// The directory the audit log publishes its checkpoints to.
    pub fn audit_witness(&self) -> Option<PathBuf> {
        self.config.audit_witness(&self.dir)
    }

    /// A capability for the system operation `operation` (see
    /// [`Access::System`]): for the operator programs that own the
    /// deployment, never for request handlers.
    pub fn system_capability(&self, operation: &str) -> atrest::tenant::SystemCapability {
        self.administration.capability(operation)
    }

    /// Every use of the availability key since the deployment was opened
    /// because customer keys were unavailable: show them to the operator
    /// (they are in the audit trail too).
    pub fn fallbacks(&self) -> Vec<Fallback> {
        self.fallbacks.seen()
    }

    /// What opening the audit log found and repaired: show it to the
    /// operator when [`Recovery::repaired`].
    pub fn audit_recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The id of the tenant named `name`.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; catalog errors.
    pub fn tenant_id(&self, name: &str) -> Result<TenantId, Error> {
        block_on(self.catalog.tenant_named(name))?.ok_or_else(|| Error::UnknownTenant {
            name: name.to_owned(),
        })
    }

    /// Creates tenant `name`. The release policy knows it at once;
    /// the key hierarchy (and its TIK cache) is rebuilt only if the tenant
    /// brings a PKCS#11 token the deployment did not use yet.
    ///
    /// # Errors
    /// [`Error::InvalidName`] (a name with `@`); [`Error::Library`] for a
    /// name that breaks the naming rule or is taken (a conflict);
    /// [`Error::ProviderConflict`] if a token's provider name is in use for
    /// another token; [`Error::PinNotSet`]; key errors.
    pub fn create_tenant(&mut self, name: &str, keys: &TenantKeys) -> Result<TenantSummary, Error> {
        atrest::check_name("tenant name", name).map_err(atrest::Error::from)?;
        if name.contains('@') {
            return Err(Error::InvalidName {
                what: "tenant name",
                name: name.to_owned(),
                rule: "a tenant name cannot contain '@'",
            });
        }
        let tenant = TenantId::random(&mut OsRng)?;
        // The name first: it is the claim on the name, and a user of the
        // tenant is a member from the moment its keys exist.
        block_on(self.catalog.name_tenant(name, tenant))?;
        if let Err(error) = self.create_tenant_keys(tenant, keys) {
            let _ = block_on(self.catalog.unname_tenant(name));
            return Err(error);
        }
        self.tenant_summary(name)
    }

    fn create_tenant_keys(&mut self, tenant: TenantId, keys: &TenantKeys) -> Result<(), Error> {
        let customer_keys = match keys {
            TenantKeys::ServiceManaged => {
                let _ = block_on(self.files.keys().create_service_tenant(tenant))?;
                return Ok(());
            }
            TenantKeys::CustomerKeyAt { keys } => keys.clone(),
            TenantKeys::CustomerKey { keys, generate } => self.configure_tokens(keys, *generate)?,
        };
        match block_on(
            self.files
                .keys()
                .create_customer_key_tenant(tenant, customer_keys),
        ) {
            Ok(_) => Ok(()),
            // A key the token does not hold: nothing to refuse yet, the
            // operator named a key that is not there.
            Err(atrest::tenant::Error::RootKey(atrest::tenant::ProviderError::NotFound {
                key,
            })) => Err(Error::NoSuchTokenKey {
                key: key.to_string(),
            }),
            Err(error) => Err(error.into()),
        }
    }

    /// Adds the tokens to the configuration (rebuilding the key hierarchy
    /// if one is new), generating the keys in them if asked; returns the
    /// keys' references.
    fn configure_tokens(
        &mut self,
        keys: &[(TokenConfig, String); 2],
        generate: bool,
    ) -> Result<[RootKeyRef; 2], Error> {
        let mut config = self.config.clone();
        let mut refs = Vec::with_capacity(2);
        for (token, label) in keys {
            atrest::check_name("provider name", &token.name).map_err(atrest::Error::from)?;
            let taken = token.name == SERVICE_PROVIDER || self.options.has_provider(&token.name);
            match config.tokens.iter().find(|t| t.name == token.name) {
                Some(known) if known != token => {
                    return Err(Error::ProviderConflict {
                        provider: token.name.clone(),
                    });
                }
                Some(_) => {}
                None if taken => {
                    return Err(Error::ProviderConflict {
                        provider: token.name.clone(),
                    });
                }
                None => config.tokens.push(token.clone()),
            }
            if generate {
                let pin = std::env::var(&token.pin_env).map_err(|_| Error::PinNotSet {
                    variable: token.pin_env.clone(),
                })?;
                let opened = block_on(Pkcs11Keys::open(
                    &token.name,
                    &token.module,
                    &token.token,
                    &pin,
                ))?;
                refs.push(block_on(opened.generate_key(label))?);
            } else {
                refs.push(RootKeyRef::new(token.name.clone(), label.clone(), 1)?);
            }
        }
        if config.tokens != self.config.tokens {
            self.reconfigure(config)?;
        }
        let [a, b]: [RootKeyRef; 2] = refs
            .try_into()
            .unwrap_or_else(|_| unreachable!("one key per token, two tokens"));
        Ok([a, b])
    }

    /// Writes a configuration with a new provider and rebuilds the key
    /// hierarchy (its providers are fixed when it is built).
    fn reconfigure(&mut self, config: Config) -> Result<(), Error> {
        config.write(&self.dir)?;
        self.config = config;
        let parts = keys::Parts {
            config: &self.config,
            options: &self.options,
            service: &self.service,
            store: &self.store,
            tenant_keys: &self.tenant_keys,
            catalog: &self.catalog,
            blobs: &self.locations.stored,
            log: &self.log,
            fallbacks: &self.fallbacks,
        };
        (self.files, self.administration) = parts.files(self.policy.clone())?;
        Ok(())
    }

    /// Adds a key service (an OpenBao or Vault transit engine) whose keys
    /// tenants can then name as customer keys (`NAME:KEY@VERSION`). Its
    /// token must be readable now; the service itself is not asked.
    ///
    /// # Errors
    /// [`Error::ProviderConflict`] if the name is in use;
    /// [`Error::Library`] for an invalid name or address, or a token that
    /// cannot be read.
    pub fn add_kms(&mut self, kms: KmsConfig) -> Result<(), Error> {
        atrest::check_name("provider name", &kms.name).map_err(atrest::Error::from)?;
        let taken = kms.name == SERVICE_PROVIDER
            || self.options.has_provider(&kms.name)
            || self.config.tokens.iter().any(|t| t.name == kms.name)
            || self.config.kms.iter().any(|k| k.name == kms.name);
        if taken {
            return Err(Error::ProviderConflict { provider: kms.name });
        }
        let _ = keys::transit_keys(&kms)?;
        let mut config = self.config.clone();
        config.kms.push(kms);
        self.reconfigure(config)
    }

    /// The configured key services.
    pub fn kms(&self) -> &[KmsConfig] {
        &self.config.kms
    }

    /// Creates key `label` (`aes256-gcm96`, not exportable) in configured
    /// key service `name`, for an operator who runs that service too.
    ///
    /// # Errors
    /// [`Error::UnknownRootKey`] if no key service has that name; the
    /// service's refusal.
    pub fn create_kms_key(&self, name: &str, label: &str) -> Result<RootKeyRef, Error> {
        let kms = self
            .config
            .kms
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| Error::UnknownKms {
                name: name.to_owned(),
            })?;
        Ok(keys::transit_keys(kms)?.create_key(label)?)
    }

    /// A tenant's state.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; key store errors.
    pub fn tenant_summary(&self, name: &str) -> Result<TenantSummary, Error> {
        let id = self.tenant_id(name)?;
        let record = block_on(self.files.keys().tenant(id))?;
        let mut counts = std::collections::BTreeMap::<u32, u64>::new();
        for file in block_on(self.catalog.records(id))? {
            *counts.entry(u32::from(file.tik_version())).or_default() += 1;
        }
        let current = u32::from(record.current_tik);
        let tik_versions: Vec<_> = block_on(self.files.keys().tik_versions(id))?
            .into_iter()
            .map(|version| {
                let version = u32::from(version);
                TikVersionSummary {
                    version,
                    current: version == current,
                    file_keys: counts.get(&version).copied().unwrap_or(0),
                }
            })
            .collect();
        let rotation_unfinished = counts.range(..current).any(|(_, &n)| n > 0);
        Ok(TenantSummary {
            tik_versions,
            rotation_unfinished,
            name: name.to_owned(),
            id: record.tenant.to_string(),
            kind: match record.kind {
                TenantKind::ServiceManaged => "service-managed".into(),
                TenantKind::CustomerKey => "customer-key".into(),
            },
            state: match record.state {
                TenantState::Active => "active".into(),
                TenantState::Purged => "purged".into(),
            },
            current_tik: u32::from(record.current_tik),
            root_keys: record
                .slots
                .iter()
                .map(|slot| {
                    let role = match slot.role {
                        atrest::tenant::SlotRole::Service => "service",
                        atrest::tenant::SlotRole::Customer => "customer",
                        atrest::tenant::SlotRole::Availability => "availability",
                    };
                    let revoked = if slot.revoked { " (revoked)" } else { "" };
                    format!("{role} {}{revoked}", slot.key)
                })
                .collect(),
        })
    }

    /// Every tenant's state.
    ///
    /// # Errors
    /// Catalog and key store errors.
    pub fn tenants(&self) -> Result<Vec<TenantSummary>, Error> {
        block_on(self.catalog.tenant_names())?
            .into_iter()
            .map(|(name, _)| self.tenant_summary(&name))
            .collect()
    }

    /// Seals `plaintext` as a new version of file `name` of tenant
    /// `tenant`, for `access`, into a new blob; the catalog allocates the
    /// version (several writers of one name at once each get their own).
    ///
    /// A version may be written by whoever the policy's write decision
    /// allows (by default: whoever it would give the key to); the library
    /// audits a refusal (`write_denied`).
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`Error::Library`] for an invalid name;
    /// [`Error::InTenant`]: the write refused (kind `Refused`), key, stream,
    /// blob and catalog errors.
    pub fn put(
        &self,
        tenant: &str,
        name: &str,
        access: &Access<'_>,
        plaintext: impl Read + Send,
    ) -> Result<PutReport, Error> {
        atrest::check_name("file name", name).map_err(atrest::Error::from)?;
        let tenant_id = self.tenant_id(tenant)?;
        // The library asks the policy for the write and audits a refusal.
        let record = named(
            tenant,
            tenant_id,
            self.files.seal(access, tenant_id, name, plaintext),
        )?;
        Ok(PutReport {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            version: u64::from(record.version),
            blob: record.blob.to_string(),
            record,
        })
    }

    /// Seals several files of tenant `tenant` at once, for `access`, with
    /// their durable steps shared (see [`atrest::Files::seal_batch`]):
    /// each `(name, blob, plaintext)` becomes a new version of `name` in
    /// blob `blob`. Each item is checked as in [`Deployment::put`]; an item
    /// refused or failed is an `Err` in its place and does not hold the
    /// others back. Every `Ok` version is durable when this returns.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`Error::Library`] if a shared step (the
    /// catalog, the audit log) failed: then no item was committed.
    pub fn put_batch<R: Read + Send>(
        &self,
        tenant: &str,
        access: &Access<'_>,
        items: Vec<atrest::BatchItem<R>>,
        threads: usize,
    ) -> Result<Vec<Result<PutReport, Error>>, Error> {
        let tenant_id = self.tenant_id(tenant)?;
        let mut results: Vec<Option<Result<PutReport, Error>>> = Vec::with_capacity(items.len());
        let mut allowed = Vec::with_capacity(items.len());
        for item in items {
            match Self::check_write(&item.name) {
                Ok(()) => {
                    results.push(None);
                    allowed.push(item);
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        // One result per item allowed, in order (`seal_batch`'s contract):
        // each fills the next place the name check left empty.
        let sealed = self.files.seal_batch(access, tenant_id, allowed, threads)?;
        let mut places = results.iter_mut().filter(|result| result.is_none());
        for result in sealed {
            if let Some(place) = places.next() {
                *place = Some(result.map_err(Error::from).map(|record| PutReport {
                    tenant: tenant.to_owned(),
                    name: record.name.clone(),
                    version: u64::from(record.version),
                    blob: record.blob.to_string(),
                    record,
                }));
            }
        }
        Ok(results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(Error::Library(atrest::Error::Catalog(
                        atrest::CatalogError::Contract("a batch gave fewer results than items"),
                    )))
                })
            })
            .collect())
    }

    /// The check of [`Deployment::put`] before sealing: the name's rule
    /// (the library asks the policy for the write itself).
    fn check_write(name: &str) -> Result<(), Error> {
        atrest::check_name("file name", name).map_err(atrest::Error::from)?;
        Ok(())
    }

    /// The record of a file version (the latest if `version` is `None`),
    /// from the catalog: its wrapped key as re-wraps left it.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`Error::InTenant`] (not found: no such
    /// file or version).
    pub fn record(
        &self,
        tenant: &str,
        name: &str,
        version: Option<u64>,
    ) -> Result<FileRecord, Error> {
        self.lookup(tenant, version, |id, version| {
            self.files.record(id, name, version)
        })
    }

    /// The record of file `name` of tenant `tenant` (version `version`, or
    /// the newest) as the catalog holds it, *not authenticated*: for
    /// choosing a version and a range before [`Deployment::get`], which
    /// authenticates the record it opens (and audits a refusal).
    ///
    /// # Errors
    /// As for [`Deployment::record`].
    pub fn record_to_open(
        &self,
        tenant: &str,
        name: &str,
        version: Option<u64>,
    ) -> Result<FileRecord, Error> {
        self.lookup(tenant, version, |id, version| {
            block_on(self.catalog.record(id, name, version))
        })
    }

    /// Runs `read` with the tenant's id and the version, naming the tenant
    /// in its error.
    fn lookup<T>(
        &self,
        tenant: &str,
        version: Option<u64>,
        read: impl FnOnce(TenantId, Option<FileVersion>) -> Result<T, atrest::Error>,
    ) -> Result<T, Error> {
        let tenant_id = self.tenant_id(tenant)?;
        named(tenant, tenant_id, read(tenant_id, file_version(version)?))
    }

    /// Gives `access` file `name` of tenant `tenant` (or bytes `range` of
    /// it) into `out`. Returns the plaintext bytes written.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`Error::InTenant`]: no such file, the
    /// release refused, a blob that is not authentic, blob and I/O errors.
    pub fn get(
        &self,
        tenant: &str,
        name: &str,
        version: Option<u64>,
        access: &Access<'_>,
        range: Option<Range<u64>>,
        out: &mut (impl Write + Send),
    ) -> Result<u64, Error> {
        self.get_into(tenant, name, version, access, range, &mut WriteSink(out))
    }

    /// As [`Deployment::get`], into a [`PlaintextSink`], which takes the
    /// plaintext of a whole-file read in buffers of its own
    /// ([`atrest::stream::PlaintextChunk`]) rather than copies.
    ///
    /// # Errors
    /// As for [`Deployment::get`].
    pub fn get_into(
        &self,
        tenant: &str,
        name: &str,
        version: Option<u64>,
        access: &Access<'_>,
        range: Option<Range<u64>>,
        sink: &mut (impl PlaintextSink + Send),
    ) -> Result<u64, Error> {
        let tenant_id = self.tenant_id(tenant)?;
        let version = file_version(version)?;
        let bytes = match range {
            Some(range) => self
                .files
                .open_range_into(access, tenant_id, name, version, range, sink)
                .map(|(_, bytes)| bytes),
            None => self
                .files
                .open_into(access, tenant_id, name, version, sink)
                .map(|record| record.plaintext_len),
        };
        named(tenant, tenant_id, bytes)
    }

    /// Every file version of `tenant` (or of every tenant), by name.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; catalog errors.
    pub fn list(&self, tenant: Option<&str>) -> Result<Vec<Listing>, Error> {
        let tenants = match tenant {
            Some(name) => vec![(name.to_owned(), self.tenant_id(name)?)],
            None => block_on(self.catalog.tenant_names())?,
        };
        let mut listings = Vec::new();
        for (tenant, id) in tenants {
            let readable = block_on(self.files.keys().tenant(id))?.state == TenantState::Active;
            for record in block_on(self.catalog.records(id))? {
                listings.push(Listing::new(&tenant, &record, readable));
            }
        }
        Ok(listings)
    }

    /// Rolls the tenant's TIK and re-wraps every wrapped file key in the
    /// catalog under the new version, reporting progress after each batch;
    /// then retires the versions nothing (no record, no upload in flight)
    /// refers to any more. Returns the new version, the re-wrap report and
    /// the versions retired.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; key and catalog errors; a re-wrap that
    /// stopped can be run again.
    pub fn rotate_tik(
        &self,
        tenant: &str,
        progress: &mut dyn FnMut(RewrapProgress),
    ) -> Result<(KeyVersion, RewrapReport, Vec<KeyVersion>), Error> {
        let tenant_id = self.tenant_id(tenant)?;
        named(
            tenant,
            tenant_id,
            self.files.rotate_tik(tenant_id, 1000, progress),
        )
    }

    /// Rolls one of the service's root keys (`root` or `availability`):
    /// a new version wraps every TIK version it protected, and the old
    /// version is destroyed.
    ///
    /// # Errors
    /// [`Error::UnknownServiceKey`] for another label; key and store
    /// errors.
    pub fn rotate_service_key(&self, label: &str) -> Result<(RootKeyRef, RootRollReport), Error> {
        if label != ROOT_KEY && label != AVAILABILITY_KEY {
            return Err(Error::UnknownServiceKey {
                label: label.to_owned(),
            });
        }
        let version = block_on(RootKeyProvider::current_version(&*self.service, label))?;
        let old = RootKeyRef::new(SERVICE_PROVIDER, label, version)?;
        let new = block_on(self.service.roll_key(label))?;
        let report = block_on(self.files.keys().roll_root_key(&old, &new))?;
        block_on(self.service.destroy_version(&old))?;
        Ok((new, report))
    }

    /// Records that the customer revoked the service's use of `key` (a
    /// `provider:label` reference) for tenant `tenant`.
    ///
    /// # Errors
    /// [`Error::UnknownRootKey`] if it is not one of the tenant's root
    /// keys; key errors (it is not a customer key).
    pub fn revoke(&self, tenant: &str, key: &str) -> Result<(), Error> {
        let tenant_id = self.tenant_id(tenant)?;
        let record = block_on(self.files.keys().tenant(tenant_id))?;
        let wanted: RootKeyRef = key.parse()?;
        let found = record
            .slots
            .iter()
            .map(|slot| &slot.key)
            .find(|k| k.provider() == wanted.provider() && k.label() == wanted.label())
            .ok_or_else(|| Error::UnknownRootKey {
                tenant: tenant.to_owned(),
                key: key.to_owned(),
            })?;
        named(
            tenant,
            tenant_id,
            block_on(self.files.keys().revoke_customer_key(tenant_id, found)),
        )
    }

    /// Purges tenant `tenant`: destroys all its key material. Its blobs
    /// stay, unreadable by anyone. Returns the number of TIK versions
    /// destroyed.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; key and store errors.
    pub fn purge(&self, tenant: &str) -> Result<u64, Error> {
        let tenant_id = self.tenant_id(tenant)?;
        named(
            tenant,
            tenant_id,
            block_on(self.files.keys().purge(tenant_id)),
        )
    }

    /// Removes what interrupted uploads left behind: uploads begun more than
    /// `older_than` ago whose records were never written (a process that
    /// died; choose a cut-off longer than any upload), blobs that no file
    /// record or upload in progress names, and staging files of unfinished
    /// uploads to a local store. An upload in progress (begun within the
    /// cut-off) is never touched: its blob is named by the catalog before a
    /// byte of it is written, and the blobs are listed before the catalog
    /// is read. With `dry_run`, only reports. Audited (`garbage_collected`).
    ///
    /// # Errors
    /// Catalog, blob store and audit errors; what was removed before an
    /// error stays removed (running it again finishes the job).
    pub fn collect_garbage(
        &self,
        older_than: std::time::Duration,
        dry_run: bool,
    ) -> Result<GarbageReport, Error> {
        // The store first, then the catalog: anything listed that an upload
        // in progress is writing was named in the catalog before it existed.
        let blobs = self.locations.stored.list()?;
        let mut partial = Vec::new();
        for store in self.locations.all() {
            partial.extend(
                store
                    .partial_uploads()?
                    .into_iter()
                    .map(|upload| (store.clone(), upload)),
            );
        }
        let cutoff = std::time::SystemTime::now()
            .checked_sub(older_than)
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |at| at.as_secs());
        let in_progress = block_on(self.catalog.seals_in_progress())?;
        let abandoned: Vec<_> = in_progress
            .iter()
            .filter(|seal| seal.started_at < cutoff)
            .collect();
        let sizes: std::collections::HashMap<_, _> = blobs.iter().cloned().collect();
        let mut report = GarbageReport {
            dry_run,
            abandoned_uploads: abandoned
                .iter()
                .map(|seal| Garbage {
                    name: seal.ticket.blob.to_string(),
                    bytes: sizes.get(&seal.ticket.blob).copied().unwrap_or(0),
                })
                .collect(),
            ..GarbageReport::default()
        };
        if !dry_run {
            let _ = self.files.collect_abandoned_seals(older_than)?;
        }
        let named: std::collections::HashSet<_> =
            block_on(self.catalog.blob_names())?.into_iter().collect();
        let still_running: std::collections::HashSet<_> = in_progress
            .iter()
            .filter(|seal| seal.started_at >= cutoff)
            .map(|seal| seal.ticket.blob.clone())
            .collect();
        let abandoned: std::collections::HashSet<_> = abandoned
            .iter()
            .map(|seal| seal.ticket.blob.clone())
            .collect();
        for (blob, bytes) in blobs {
            if named.contains(&blob) || abandoned.contains(&blob) {
                continue;
            }
            if !dry_run {
                self.locations.stored.delete(&blob)?;
            }
            report.orphan_blobs.push(Garbage {
                name: blob.to_string(),
                bytes,
            });
        }
        for (store, upload) in partial {
            if still_running.contains(&upload.blob) {
                continue;
            }
            if !dry_run {
                store.remove_partial_upload(&upload)?;
            }
            report.partial_uploads.push(Garbage {
                name: upload.path.display().to_string(),
                bytes: upload.bytes,
            });
        }
        if !dry_run {
            let count = |items: &[Garbage]| items.len() as u64;
            let bytes = |items: &[Garbage]| items.iter().map(|g| g.bytes).sum::<u64>();
            let event = Event::GarbageCollected {
                orphan_blobs: count(&report.orphan_blobs),
                orphan_bytes: bytes(&report.orphan_blobs),
                partial_uploads: count(&report.partial_uploads),
                partial_bytes: bytes(&report.partial_uploads),
                abandoned_uploads: count(&report.abandoned_uploads),
            };
            self.record_event(event, None, None)?;
        }
        Ok(report)
    }

    /// Records `event` in the audit trail, by this program, about tenant
    /// `tenant` (by name) and request `request`.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; audit errors.
    pub fn record_event(
        &self,
        event: Event,
        tenant: Option<&str>,
        request: Option<&str>,
    ) -> Result<(), Error> {
        let mut record = Record::new(Text::lossy(self.options.actor()), event);
        if let Some(tenant) = tenant {
            record = record.tenant(Text::lossy(self.tenant_id(tenant)?.to_string()));
        }
        if let Some(request) = request {
            record = record.request(Text::lossy(request));
        }
        let _ = block_on(self.log.record(record))?;
        Ok(())
    }

    /// Verifies the audit log of the deployment in `dir` without opening
    /// it for writing (so it works on a damaged log too): the chain, the
    /// signature of its last checkpoint line, and the newest checkpoint of
    /// its witness. The verifying key and the witness directory are taken
    /// from `trusted` where given — pass them from a source the
    /// deployment's writers cannot change — and otherwise from the
    /// deployment's configuration.
    ///
    /// # Errors
    /// [`Error::NoDeployment`], configuration and audit errors (a problem in
    /// the log is in the report, not an error).
    pub fn verify_audit(dir: &Path, trusted: &TrustedAudit) -> Result<AuditVerification, Error> {
        let config = Config::read(dir)?;
        let key_text = trusted
            .verifying_key
            .as_deref()
            .unwrap_or(&config.audit_verifying_key);
        let key = VerifyingKey::parse(key_text)?;
        let witness = trusted
            .witness
            .clone()
            .or_else(|| config.audit_witness(dir));
        let log_dir = dir.join(AUDIT_DIR);
        let (report, witnessed) = match &witness {
            Some(witness) => {
                atrest::audit::verify_witnessed(&log_dir, &key, &DirectoryWitness::new(witness))?
            }
            None => (atrest::audit::verify(&log_dir, &[], &key)?, None),
        };
        Ok(AuditVerification {
            report,
            key_from_operator: trusted.verifying_key.is_some(),
            witness,
            witnessed_size: witnessed.map(|c| c.size),
        })
    }

    /// The audit log's records in the deployment in `dir` (read without
    /// opening the deployment for writing), optionally only those about
    /// tenant `tenant`, with the names of the tenants they name.
    ///
    /// # Errors
    /// Audit and catalog errors; [`Error::UnknownTenant`].
    pub fn audit_entries(dir: &Path, tenant: Option<&str>) -> Result<AuditEntries, Error> {
        let config = Config::read(dir)?;
        let (_, catalog) = open_metadata(dir, &config)?;
        let names: std::collections::HashMap<String, String> = block_on(catalog.tenant_names())?
            .into_iter()
            .map(|(name, id)| (id.to_string(), name))
            .collect();
        let wanted = match tenant {
            None => None,
            Some(name) => Some(
                names
                    .iter()
                    .find(|(_, n)| n.as_str() == name)
                    .map(|(id, _)| id.clone())
                    .ok_or_else(|| Error::UnknownTenant {
                        name: name.to_owned(),
                    })?,
            ),
        };
        let entries = atrest::audit::read_entries(dir.join(AUDIT_DIR))?
            .into_iter()
            .filter(|e| {
                wanted
                    .as_ref()
                    .is_none_or(|w| e.tenant.as_ref().is_some_and(|t| t.as_str() == w))
            })
            .collect();
        Ok(AuditEntries {
            entries,
            tenant_names: names,
        })
    }
}

/// What [`Deployment::collect_garbage`] removed (or, in a dry run, would
/// remove).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GarbageReport {
    /// Whether this was a dry run (nothing removed).
    pub dry_run: bool,
    /// Blobs no file record or upload in progress names.
    pub orphan_blobs: Vec<Garbage>,
    /// Staging files of uploads that never finished.
    pub partial_uploads: Vec<Garbage>,
    /// Uploads begun before the cut-off whose records were never written
    /// (their blobs, if any, go with them).
    pub abandoned_uploads: Vec<Garbage>,
}

/// One thing [`Deployment::collect_garbage`] found.
#[derive(Clone, Debug, Serialize)]
pub struct Garbage {
    /// The blob's name, or the staging file's path.
    pub name: String,
    /// Its size in bytes (0 if unknown).
    pub bytes: u64,
}

/// A new, private directory beside `dir` to build a deployment in.
fn staging_dir(dir: &Path) -> Result<PathBuf, Error> {
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_at(&parent))?;
    let name = dir.file_name().ok_or_else(|| Error::NotEmpty {
        dir: dir.to_path_buf(),
    })?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut staging_name = std::ffi::OsString::from(".");
    staging_name.push(name);
    staging_name.push(format!(".atrest-init-{}-{nanos}", std::process::id()));
    let staging = parent.join(staging_name);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io_at(&staging))?;
    Ok(staging)
}

/// Makes a rename of `path` durable.
fn sync_parent(path: &Path) -> Result<(), Error> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_at(parent))
}

/// The audit log's settings in a deployment: checkpoints published to the
/// witness directory after every batch.
fn audit_config(witness: Option<&Path>) -> LogConfig {
    LogConfig {
        witness: witness
            .map(|dir| Arc::new(DirectoryWitness::new(dir)) as Arc<dyn atrest::audit::Witness>),
        ..LogConfig::default()
    }
}

/// What the operator trusts for [`Deployment::verify_audit`], instead of
/// what the deployment directory says.
#[derive(Clone, Debug, Default)]
pub struct TrustedAudit {
    /// The checkpoint verifying key (text form, as `init` printed it).
    pub verifying_key: Option<String>,
    /// The witness directory.
    pub witness: Option<PathBuf>,
}

/// The result of [`Deployment::verify_audit`].
#[derive(Clone, Debug)]
pub struct AuditVerification {
    /// What verification found.
    pub report: Report,
    /// Whether the verifying key came from the operator (not the
    /// deployment directory).
    pub key_from_operator: bool,
    /// The witness directory checked against, if any.
    pub witness: Option<PathBuf>,
    /// The size of the witness's newest checkpoint, if it had one.
    pub witnessed_size: Option<u64>,
}

/// Audit records with the names of the tenants they are about.
#[derive(Clone, Debug)]
pub struct AuditEntries {
    /// The records, oldest first.
    pub entries: Vec<Entry>,
    /// Tenant names by tenant id.
    pub tenant_names: std::collections::HashMap<String, String>,
}

/// `result`, its error speaking of tenant `id` by its name `name`.
fn named<T, E: Into<atrest::Error>>(
    name: &str,
    id: TenantId,
    result: Result<T, E>,
) -> Result<T, Error> {
    result.map_err(|error| Error::InTenant {
        name: name.to_owned(),
        id: id.to_string(),
        source: Box::new(error.into()),
    })
}

/// A version number from the command line, as the library's type.
fn file_version(version: Option<u64>) -> Result<Option<FileVersion>, Error> {
    Ok(version.map(FileVersion::try_from).transpose()?)
}

/// What a new deployment is made with ([`Deployment::init_with`]).
#[derive(Clone, Debug)]
pub struct Setup {
    /// A blob store URL; `None`: `DIR/blobs`.
    pub blobs: Option<String>,
    /// Where the audit log publishes its checkpoints; `None`:
    /// `DIR/audit-witness`.
    pub audit_witness: Option<PathBuf>,
    /// Where key metadata and the catalog are kept.
    pub metadata: MetadataConfig,
    /// Replica locations (`object_store` URLs or local directories): every
    /// blob is written to each of them too. None: blobs are kept at the
    /// primary only, as always.
    pub replicas: Vec<String>,
    /// How many locations must make a blob durable for a write to succeed
    /// (1 to 1 + replicas); `None`: all of them.
    pub copies: Option<usize>,
}

/// The service's root keys of the deployment in `dir`, sealed under
/// `master` in its key store (`keys.sqlite`).
fn service_keys(dir: &Path, master: MasterKey) -> Result<ServiceKeys, Error> {
    let store = block_on(SqliteSealedKeys::open(&dir.join("keys.sqlite")))?;
    Ok(ServiceKeys::new(SERVICE_PROVIDER, Arc::new(store), master)?)
}

/// A deployment's key store and its catalog.
type Metadata = (Arc<dyn MetadataStore>, Arc<dyn Catalog>);

/// The key store and catalog of the deployment in `dir`, where its
/// configuration says they are.
fn open_metadata(dir: &Path, config: &Config) -> Result<Metadata, Error> {
    match &config.metadata {
        None | Some(MetadataConfig::Sqlite) => Ok((
            Arc::new(block_on(SqliteStore::open(&dir.join("atrest.sqlite")))?),
            Arc::new(block_on(SqliteCatalog::open(&dir.join("catalog.sqlite")))?),
        )),
        Some(postgres @ MetadataConfig::Postgres { .. }) => open_postgres(postgres),
    }
}

/// The PostgreSQL key store and catalog (their tables made or migrated).
fn open_postgres(metadata: &MetadataConfig) -> Result<Metadata, Error> {
    let MetadataConfig::Postgres { url, url_env } = metadata else {
        return Err(Error::MetadataUrl("not a PostgreSQL configuration"));
    };
    let url = match (url, url_env) {
        (Some(url), None) => {
            let parsed: atrest_postgres::tokio_postgres::Config = url
                .parse()
                .map_err(|_| Error::MetadataUrl("the URL does not parse"))?;
            if parsed.get_password().is_some() {
                return Err(Error::MetadataUrl(
                    "the URL holds a password; give the URL in an environment variable instead (--metadata-url-env)",
                ));
            }
            zeroize::Zeroizing::new(url.clone())
        }
        (None, Some(var)) => zeroize::Zeroizing::new(
            std::env::var(var)
                .map_err(|_| Error::MetadataUrl("the metadata URL variable is not set"))?,
        ),
        _ => {
            return Err(Error::MetadataUrl(
                "give either the URL or the variable that holds it",
            ));
        }
    };
    let db = atrest_postgres::Postgres::connect(&url, &atrest_postgres::PgOptions::default())?;
    let store = atrest_postgres::PgMetadataStore::open_blocking(&db)?;
    let catalog = atrest_postgres::PgCatalog::open_blocking(&db)?;
    Ok((Arc::new(store), Arc::new(catalog)))
}
