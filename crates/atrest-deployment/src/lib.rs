#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod audit;
mod config;
mod error;
mod files;
mod garbage;
mod init;
mod keys;
mod lease;
mod metadata;
mod names;
pub mod observe;
mod policy;
mod replicas;
mod tenants;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use atrest::audit::{AuditLog, Recovery, SigningKey};
use atrest::blobs::BlobStore;
use atrest::tenant::{MasterKey, MetadataStore, ReleasePolicy, ServiceKeys, TenantKeyDir};
use atrest::{Catalog, Files};
use atrest_core::blocking;

use self::config::Config;
use self::error::io_at;

pub use self::audit::{AuditEntries, AuditRecovery, AuditVerification, TrustedAudit};
pub use self::config::{AwsKmsConfig, KmsConfig, MetadataConfig, TokenConfig};
pub use self::error::Error;
pub use self::files::{FileName, Listing, PutReport, newest_of_each};
pub use self::garbage::{Garbage, GarbageReport, ReleasedTenant, Skipped};
pub use self::init::Setup;
pub use self::keys::{Fallback, Options};
pub use self::lease::Holder;
pub use self::policy::Principal;
pub use self::replicas::{DamagedRecord, ScrubReport};
pub use self::tenants::{
    OutageSummary, TENANT_NAME_RULE, TenantKeys, TenantSummary, TikVersionSummary,
    check_tenant_name,
};

const CONFIG: &str = "atrest.json";
const SIGNING_KEY: &str = "audit-signing.key";
const AUDIT_DIR: &str = "audit";
const DEFAULT_WITNESS: &str = "audit-witness";
const SERVICE_PROVIDER: &str = "service";
const TENANT_KEYS: &str = "tenant-keys";
const ROOT_KEY: &str = "root";
const AVAILABILITY_KEY: &str = "availability";

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
    /// The tenant names last authenticated, and the hierarchy that
    /// authenticates them (shared with the membership policy).
    names: Arc<names::TenantNames>,
    files: Files,
    /// `None` once given up ([`Deployment::give_up_administration`]).
    administration: Option<atrest::tenant::Administration>,
    locations: replicas::Locations,
    /// This process's lease on the deployment (`None` if it could not be
    /// taken, on a full or read-only disk: then garbage collection in
    /// another process may abandon this one's uploads, which fail).
    lease: Option<lease::Lease>,
}

impl core::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Deployment")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What a deployment keeps in local files: read on the blocking pool when
/// it is opened.
struct LocalParts {
    config: Config,
    master: MasterKey,
    tenant_keys: TenantKeyDir,
    log: AuditLog,
    recovery: Recovery,
    locations: replicas::Locations,
    lease: Option<lease::Lease>,
}

impl LocalParts {
    /// Reads them from `dir`. Blocks (file reads, the audit log's
    /// recovery).
    fn read(dir: &Path, program: &str) -> Result<Self, Error> {
        let config = Config::read(dir)?;
        let lease = lease::Lease::take(dir, program).ok();
        let master = MasterKey::open_file(&dir.join("master.key"))?;
        let tenant_keys = TenantKeyDir::open(&dir.join(TENANT_KEYS), master.clone())?;
        let signer = read_signing_key(dir, &config)?;
        // A recovery of the log interrupted between its two renames is
        // finished first.
        let _ = atrest::audit::log::restart::finish_restart(dir.join(AUDIT_DIR))?;
        let (log, recovery) = AuditLog::open(
            dir.join(AUDIT_DIR),
            signer,
            audit::config(config.audit_witness(dir).as_deref()),
        )?;
        let locations = replicas::Locations::open(dir, &config)?;
        Ok(Self {
            config,
            master,
            tenant_keys,
            log,
            recovery,
            locations,
            lease,
        })
    }
}

/// Below this much room on its disk, a deployment is not ready to serve
/// ([`Deployment::readiness`]), nor a service to start.
pub const MIN_ROOM: u64 = 1 << 20;

/// The room left for this process's user on the disk holding `dir`, in
/// bytes. Blocks (one `statvfs`).
///
/// # Errors
/// If the file system cannot be asked.
pub fn room_left(dir: &Path) -> std::io::Result<u64> {
    let fs = rustix::fs::statvfs(dir)?;
    Ok(fs.f_bavail.saturating_mul(fs.f_frsize))
}

/// The audit signing key of the deployment in `dir`, checked against the
/// verifying key its configuration names. Blocks.
pub(crate) fn read_signing_key(dir: &Path, config: &Config) -> Result<SigningKey, Error> {
    let signing_key = dir.join(SIGNING_KEY);
    // Read at its size in one allocation, and wiped once parsed.
    let pkcs8 = zeroize::Zeroizing::new(std::fs::read(&signing_key).map_err(io_at(&signing_key))?);
    let signer = SigningKey::from_pkcs8("atrest-audit", &pkcs8)?;
    if signer.verifying_key().to_string() != config.audit_verifying_key {
        return Err(Error::AuditKeyMismatch { path: signing_key });
    }
    Ok(signer)
}

impl Deployment {
    /// Opens the deployment in `dir` for the program described by
    /// `options`.
    ///
    /// # Errors
    /// [`Error::NoDeployment`] if `dir` holds no deployment (run `init`);
    /// [`Error::Config`] or [`Error::UnsupportedVersion`] for an unusable
    /// configuration file; errors of the parts.
    pub async fn open(dir: &Path, options: Options) -> Result<Self, Error> {
        let local = {
            let dir = dir.to_path_buf();
            let program = options.actor().to_owned();
            blocking::run(move || LocalParts::read(&dir, &program)).await?
        };
        let LocalParts {
            config,
            master,
            tenant_keys,
            log,
            recovery,
            locations,
            lease,
        } = local;
        let tenant_keys = Arc::new(tenant_keys);
        let service = Arc::new(metadata::service_keys(dir, master).await?);
        let (store, catalog) =
            metadata::open(dir, &config, lease.as_ref().map(lease::Lease::id)).await?;
        let log = Arc::new(log);
        let fallbacks = keys::FallbackWatch::default();
        let names = Arc::new(names::TenantNames::new(options.name_lifetime()));
        let policy = options
            .custom_policy()
            .unwrap_or_else(|| policy::members(catalog.clone(), names.clone()));
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
        let (files, administration) = parts.files(policy.clone()).await?;
        names.set(files.keys());
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
            names,
            files,
            administration: Some(administration),
            locations,
            lease,
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

    /// How often the key hierarchy found TIKs cached and how often it
    /// unwrapped them, since the deployment was opened.
    pub fn tik_cache_counts(&self) -> atrest::tenant::TikCacheCounts {
        self.files.keys().tik_cache_counts()
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

    /// Whether the deployment can serve requests now: each part that
    /// cannot, and why (empty: ready). Asks the catalog and the key store
    /// for something small, and looks at the audit log, the blob stores
    /// and the room left on the deployment directory's disk.
    pub async fn readiness(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Err(error) = self.catalog.tenant_names().await {
            problems.push(("catalog", error.to_string()));
        }
        if let Err(error) = self.store.tenants().await {
            problems.push(("key store", error.to_string()));
        }
        if let Some(reason) = self.log.stopped() {
            problems.push(("audit log", format!("stopped: {reason}")));
        }
        for store in self.locations.all() {
            if let Some(reason) = store.stopped() {
                problems.push(("blob store", format!("{}: {reason}", store.location())));
            }
        }
        let dir = self.dir.clone();
        let room = blocking::run(move || room_left(&dir)).await;
        if let Ok(room) = room
            && room < MIN_ROOM
        {
            problems.push((
                "disk",
                format!("out of space: {room} bytes left where the deployment is"),
            ));
        }
        problems
    }

    /// What is wrong with where the audit log's witness is, if anything:
    /// none at all, or inside the deployment directory, where whoever can
    /// rewrite the log can rewrite its witness too.
    pub fn audit_witness_warning(&self) -> Option<String> {
        let Some(witness) = self.audit_witness() else {
            return Some(
                "the audit log has no witness: records cut from its end cannot be told; \
                 give --audit-witness DIR on other storage"
                    .into(),
            );
        };
        let resolve =
            |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if resolve(&witness).starts_with(resolve(&self.dir)) {
            return Some(format!(
                "the audit witness {} is inside the deployment directory: whoever can rewrite \
                 the log can rewrite its witness too; give --audit-witness DIR on other storage \
                 (another disk, volume or machine)",
                witness.display()
            ));
        }
        None
    }

    /// A capability for the system operation `operation` (see
    /// [`atrest::tenant::Access::System`]): for the operator programs that
    /// own the deployment, never for request handlers.
    ///
    /// # Errors
    /// [`Error::NoAdministration`] once the deployment gave it up.
    pub fn system_capability(
        &self,
        operation: &str,
    ) -> Result<atrest::tenant::SystemCapability, Error> {
        self.administration
            .as_ref()
            .map(|administration| administration.capability(operation))
            .ok_or(Error::NoAdministration)
    }

    /// Gives up issuing system capabilities, for good: for a program that
    /// hands the deployment to request handlers (the upload service), so
    /// that no handler can obtain one ([`Deployment::system_capability`]
    /// and the operations that need one fail with
    /// [`Error::NoAdministration`] from then on). The key hierarchy's own
    /// system operations (re-wraps, retirements) are not affected.
    pub fn give_up_administration(&mut self) {
        self.administration = None;
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
}
