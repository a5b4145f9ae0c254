//! A whole deployment in one directory: what the example programs run on.
//!
//! ```text
//! DIR/atrest.json          configuration: blob store, PKCS#11 tokens, audit verifying key
//! DIR/master.key           the master key (mode 0600) sealing the service's root keys
//! DIR/keys.sqlite          the service's root keys (`root`, `availability`), sealed
//! DIR/atrest.sqlite        tenant key metadata, wrapped file keys, and the catalog
//!                          (tenant names, file names, versions, file records, blob names)
//! DIR/audit/               the audit log and its signed checkpoints
//! DIR/audit-signing.key    the checkpoint signing key (PKCS#8, mode 0600)
//! DIR/blobs/               the blobs, unless a blob store URL was given
//! ```
//!
//! The catalog is the service's metadata database: it alone maps a tenant
//! and a file name to a blob. Blobs have random names and hold only
//! ciphertext.
//!
//! Principals are written `user@tenant`: the release policy lets a user read
//! the files of their own tenant only. System operations (re-wrap) are
//! allowed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use atrest_audit::{
    AuditLog, Entry, LogConfig, Report, SigningKey, VerifyingKey, stored_checkpoints,
};
use atrest_filekey::{FileContext, FileId, FileVersion, KeyVersion, OsRng, TenantId};
use atrest_tenant::{
    Access, Decision, KeyHierarchy, KeyMaterial, MasterKey, Pkcs11Keys, ProviderError,
    RewrapProgress, RewrapReport, RootKeyProvider, RootKeyRef, RootRollReport, ServiceKeys,
    SqliteStore, TenantRecord,
};
use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};

use crate::blobs::{BlobName, BlobStore};
use crate::{Error, FileRecord, Files};

const CONFIG: &str = "atrest.json";
const SIGNING_KEY: &str = "audit-signing.key";
const SERVICE_PROVIDER: &str = "service";
const ROOT_KEY: &str = "root";
const AVAILABILITY_KEY: &str = "availability";
const CATALOG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS catalog_tenants (
    name   TEXT PRIMARY KEY,
    tenant BLOB NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS catalog_files (
    tenant  BLOB    NOT NULL,
    name    TEXT    NOT NULL,
    version INTEGER NOT NULL,
    file    BLOB    NOT NULL,
    blob    TEXT    NOT NULL,
    record  TEXT    NOT NULL,
    sealed  TEXT    NOT NULL,
    PRIMARY KEY (tenant, name, version)
);";

/// A PKCS#11 token holding customer keys, as configured in a deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The provider name root-key references use (for example `hsm-a`).
    pub name: String,
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The environment variable holding the user PIN (never stored).
    pub pin_env: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    version: u32,
    /// A blob store URL; `None`: `DIR/blobs`.
    blobs: Option<String>,
    tokens: Vec<TokenConfig>,
    audit_verifying_key: String,
}

/// How a new tenant's root keys are held.
#[derive(Clone, Debug)]
pub enum TenantKeys {
    /// By the service.
    ServiceManaged,
    /// By the customer: one key in each of two PKCS#11 tokens (plus the
    /// service's availability key).
    CustomerKey {
        /// The tokens, with the label of the key in each.
        keys: Box<[(TokenConfig, String); 2]>,
        /// Generate the keys in the tokens (sensitive, not extractable)
        /// rather than use existing ones.
        generate: bool,
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

/// Progress of [`Deployment::import_directory`], after each item.
#[derive(Clone, Debug)]
pub struct MoveProgress {
    /// Items done (moved or failed).
    pub done: u64,
    /// Items found.
    pub total: u64,
    /// The item just done.
    pub current: String,
}

/// What [`Deployment::import_directory`] did (also in its audit record).
#[derive(Clone, Debug, Default, Serialize)]
pub struct MoveReport {
    /// Items moved.
    pub items: u64,
    /// Plaintext bytes moved.
    pub bytes: u64,
    /// Items that failed.
    pub failures: u64,
    /// Each failed item and why.
    pub failed: Vec<(String, String)>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
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
    /// Its root keys, as `provider:label@version`, with `(revoked)` marks.
    pub root_keys: Vec<String>,
}

/// A provider that could not be opened (for example a PIN variable that is
/// not set): every call reports it as unavailable.
struct Unopened {
    name: String,
    detail: String,
}

impl RootKeyProvider for Unopened {
    fn name(&self) -> &str {
        &self.name
    }

    fn wrap(&self, key: &RootKeyRef, _: &KeyMaterial, _: &[u8]) -> Result<Vec<u8>, ProviderError> {
        Err(ProviderError::Unavailable {
            key: key.clone(),
            detail: self.detail.clone(),
        })
    }

    fn unwrap(&self, key: &RootKeyRef, _: &[u8], _: &[u8]) -> Result<KeyMaterial, ProviderError> {
        Err(ProviderError::Unavailable {
            key: key.clone(),
            detail: self.detail.clone(),
        })
    }
}

/// The release policy of a deployment: `user@tenant` reads its own
/// tenant's files; system operations are allowed.
fn member_policy(
    names: BTreeMap<TenantId, String>,
) -> impl Fn(&Access<'_>, TenantId, FileId) -> Decision {
    move |access, tenant, _| match access {
        Access::System { .. } => Decision::Allow,
        Access::User { principal } => {
            let member_of = principal.rsplit_once('@').map(|(_, tenant)| tenant);
            match (member_of, names.get(&tenant)) {
                (Some(member_of), Some(name)) if member_of == name => Decision::Allow,
                _ => Decision::Deny(format!("{principal} is not a member of this tenant")),
            }
        }
    }
}

fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| !c.is_control())
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid {what} {name:?}: 1 to 128 characters, no control characters, not starting with '.'"
        )))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// A deployment directory, opened.
pub struct Deployment {
    dir: PathBuf,
    config: Config,
    service: Arc<ServiceKeys>,
    store: Arc<SqliteStore>,
    log: Arc<AuditLog>,
    signer: SigningKey,
    files: Files,
    blobs: BlobStore,
    catalog: Mutex<Connection>,
}

impl core::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Deployment")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Deployment {
    /// Creates a deployment in `dir` (which must not hold one already): a
    /// new master key file, the service's root and availability keys, the
    /// key store and catalog, the audit log with a checkpoint signing key,
    /// and the blob store (`blobs_url`, or `DIR/blobs`).
    ///
    /// # Errors
    /// [`Error::Config`] if `dir` already holds a deployment or cannot be
    /// written; errors of the parts.
    pub fn init(dir: &Path, blobs_url: Option<&str>) -> Result<Self, Error> {
        fs::create_dir_all(dir)?;
        if dir.join(CONFIG).exists() {
            return Err(Error::Config(format!(
                "{} already holds a deployment",
                dir.display()
            )));
        }
        let master = MasterKey::create_file(&dir.join("master.key"))?;
        let service = ServiceKeys::open(SERVICE_PROVIDER, &dir.join("keys.sqlite"), master)?;
        let _ = service.create_key(ROOT_KEY)?;
        let _ = service.create_key(AVAILABILITY_KEY)?;
        drop(service);
        let (signer, pkcs8) = SigningKey::generate("atrest-audit")?;
        write_private(&dir.join(SIGNING_KEY), &pkcs8)?;
        let _ = AuditLog::create(dir.join("audit"), LogConfig::default())?;
        if let Some(url) = blobs_url {
            let _ = BlobStore::from_url(url)?;
        }
        let config = Config {
            version: 1,
            blobs: blobs_url.map(str::to_owned),
            tokens: Vec::new(),
            audit_verifying_key: signer.verifying_key().to_string(),
        };
        Self::write_config(dir, &config)?;
        let deployment = Self::open(dir)?;
        deployment.checkpoint()?;
        Ok(deployment)
    }

    fn write_config(dir: &Path, config: &Config) -> Result<(), Error> {
        let text =
            serde_json::to_string_pretty(config).map_err(|e| Error::Config(e.to_string()))?;
        let tmp = dir.join(format!("{CONFIG}.tmp"));
        fs::write(&tmp, text + "\n")?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, dir.join(CONFIG))?;
        Ok(())
    }

    /// Opens the deployment in `dir`.
    ///
    /// # Errors
    /// [`Error::Config`] if `dir` holds no deployment (run `init`) or a
    /// part is unusable.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let config_path = dir.join(CONFIG);
        let text = fs::read_to_string(&config_path).map_err(|_| {
            Error::Config(format!(
                "{} holds no atrest deployment (no {CONFIG}); create one with `atrest init`",
                dir.display()
            ))
        })?;
        let config: Config = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", config_path.display())))?;
        if config.version != 1 {
            return Err(Error::Config(format!(
                "{}: unsupported version {}",
                config_path.display(),
                config.version
            )));
        }
        let master = MasterKey::open_file(&dir.join("master.key"))?;
        let service = Arc::new(ServiceKeys::open(
            SERVICE_PROVIDER,
            &dir.join("keys.sqlite"),
            master,
        )?);
        let store = Arc::new(SqliteStore::open(&dir.join("atrest.sqlite"))?);
        let (log, _) = AuditLog::open(dir.join("audit"), LogConfig::default())?;
        let log = Arc::new(log);
        let pkcs8 = fs::read(dir.join(SIGNING_KEY))?;
        let signer = SigningKey::from_pkcs8("atrest-audit", &pkcs8)?;
        let catalog = Connection::open(dir.join("atrest.sqlite"))
            .map_err(|e| Error::Config(e.to_string()))?;
        catalog
            .busy_timeout(std::time::Duration::from_secs(10))
            .and_then(|()| catalog.execute_batch(CATALOG_SCHEMA))
            .map_err(|e| Error::Config(format!("catalog: {e}")))?;
        let blobs = match &config.blobs {
            Some(url) => BlobStore::from_url(url)?,
            None => BlobStore::local(&dir.join("blobs"))?,
        };
        let catalog = Mutex::new(catalog);
        let files = assemble(&config, &service, &store, &log, &catalog)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            service,
            store,
            log,
            signer,
            files,
            blobs,
            catalog,
        })
    }

    fn build_files(&self) -> Result<Files, Error> {
        assemble(
            &self.config,
            &self.service,
            &self.store,
            &self.log,
            &self.catalog,
        )
    }
}

/// The key hierarchy and files API over a deployment's parts; the release
/// policy knows the tenant names in the catalog now.
fn assemble(
    config: &Config,
    service: &Arc<ServiceKeys>,
    store: &Arc<SqliteStore>,
    log: &Arc<AuditLog>,
    catalog: &Mutex<Connection>,
) -> Result<Files, Error> {
    let names = tenant_names(&catalog.lock().unwrap_or_else(PoisonError::into_inner))?
        .into_iter()
        .map(|(name, id)| (id, name))
        .collect();
    let mut builder = KeyHierarchy::builder(store.clone(), log.clone())
        .provider(service.clone())
        .service_root_key(SERVICE_PROVIDER, ROOT_KEY)
        .availability_key(SERVICE_PROVIDER, AVAILABILITY_KEY)
        .policy(Arc::new(member_policy(names)))
        .actor("atrest-cli");
    for token in &config.tokens {
        builder = builder.provider(open_token(token));
    }
    Ok(Files::new(Arc::new(builder.build()?), log.clone()).with_actor("atrest-cli"))
}

fn open_token(token: &TokenConfig) -> Arc<dyn RootKeyProvider> {
    let opened = std::env::var(&token.pin_env)
        .map_err(|_| format!("the PIN variable {} is not set", token.pin_env))
        .and_then(|pin| {
            Pkcs11Keys::open(&token.name, &token.module, &token.token, &pin)
                .map_err(|e| e.to_string())
        });
    match opened {
        Ok(keys) => Arc::new(keys),
        Err(detail) => Arc::new(Unopened {
            name: token.name.clone(),
            detail,
        }),
    }
}

fn tenant_names(catalog: &Connection) -> Result<Vec<(String, TenantId)>, Error> {
    let mut statement = catalog
        .prepare("SELECT name, tenant FROM catalog_tenants ORDER BY name")
        .map_err(|e| Error::Config(e.to_string()))?;
    let rows = statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
        })
        .map_err(|e| Error::Config(e.to_string()))?;
    let mut names = Vec::new();
    for row in rows {
        let (name, bytes) = row.map_err(|e| Error::Config(e.to_string()))?;
        let id = <[u8; 16]>::try_from(bytes.as_slice())
            .ok()
            .and_then(|b| TenantId::from_bytes(b).ok())
            .ok_or_else(|| Error::Config("catalog holds an invalid tenant id".into()))?;
        names.push((name, id));
    }
    Ok(names)
}

impl Deployment {
    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files API (seal, open) over this deployment's keys and log.
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The key store (tenant metadata and wrapped file keys).
    pub fn key_store(&self) -> &Arc<SqliteStore> {
        &self.store
    }

    /// The service's root keys.
    pub fn service_keys(&self) -> &Arc<ServiceKeys> {
        &self.service
    }

    fn catalog(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.catalog.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tenant_names(&self) -> Result<Vec<(String, TenantId)>, Error> {
        tenant_names(&self.catalog())
    }

    /// The id of the tenant named `name`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such tenant.
    pub fn tenant_id(&self, name: &str) -> Result<TenantId, Error> {
        self.tenant_names()?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id)
            .ok_or_else(|| Error::NotFound(format!("no tenant named {name:?}")))
    }

    /// Creates tenant `name`.
    ///
    /// # Errors
    /// [`Error::Config`] if the name is taken or invalid; key errors.
    pub fn create_tenant(&mut self, name: &str, keys: &TenantKeys) -> Result<TenantSummary, Error> {
        check_name("tenant name", name)?;
        if name.contains('@') {
            return Err(Error::Config("a tenant name cannot contain '@'".into()));
        }
        if self.tenant_id(name).is_ok() {
            return Err(Error::Config(format!("tenant {name:?} already exists")));
        }
        let tenant = TenantId::random(&mut OsRng).map_err(atrest_tenant::Error::from)?;
        // Register the tenant's name first: the policy knows its members.
        let _ = self
            .catalog()
            .execute(
                "INSERT INTO catalog_tenants (name, tenant) VALUES (?1, ?2)",
                params![name, tenant.as_bytes()],
            )
            .map_err(|e| Error::Config(e.to_string()))?;
        let created = self.create_tenant_keys(tenant, keys);
        if let Err(error) = created {
            let _ = self
                .catalog()
                .execute("DELETE FROM catalog_tenants WHERE name = ?1", params![name]);
            self.files = self.build_files()?;
            return Err(error);
        }
        self.checkpoint()?;
        self.tenant_summary(name)
    }

    fn create_tenant_keys(&mut self, tenant: TenantId, keys: &TenantKeys) -> Result<(), Error> {
        match keys {
            TenantKeys::ServiceManaged => {
                self.files = self.build_files()?;
                let _ = self.files.keys().create_service_tenant(tenant)?;
            }
            TenantKeys::CustomerKey { keys, generate } => {
                let mut refs = Vec::new();
                for (token, label) in keys.iter() {
                    check_name("provider name", &token.name)?;
                    match self.config.tokens.iter().find(|t| t.name == token.name) {
                        Some(known) if known != token => {
                            return Err(Error::Config(format!(
                                "provider {} is already configured with another token or module",
                                token.name
                            )));
                        }
                        Some(_) => {}
                        None => self.config.tokens.push(token.clone()),
                    }
                    if *generate {
                        let pin = std::env::var(&token.pin_env).map_err(|_| {
                            Error::Config(format!("set the token PIN in {}", token.pin_env))
                        })?;
                        let opened =
                            Pkcs11Keys::open(&token.name, &token.module, &token.token, &pin)
                                .map_err(atrest_tenant::Error::from)?;
                        refs.push(
                            opened
                                .generate_key(label)
                                .map_err(atrest_tenant::Error::from)?,
                        );
                    } else {
                        refs.push(
                            RootKeyRef::new(token.name.clone(), label.clone(), 1)
                                .map_err(atrest_tenant::Error::from)?,
                        );
                    }
                }
                Self::write_config(&self.dir, &self.config)?;
                self.files = self.build_files()?;
                let [a, b]: [RootKeyRef; 2] = refs
                    .try_into()
                    .map_err(|_| Error::Config("a customer-key tenant needs two keys".into()))?;
                let _ = self
                    .files
                    .keys()
                    .create_customer_key_tenant(tenant, [a, b])?;
            }
        }
        Ok(())
    }

    /// A tenant's state.
    ///
    /// # Errors
    /// [`Error::NotFound`]; key store errors.
    pub fn tenant_summary(&self, name: &str) -> Result<TenantSummary, Error> {
        let record: TenantRecord = self.files.keys().tenant(self.tenant_id(name)?)?;
        Ok(TenantSummary {
            name: name.to_owned(),
            id: record.tenant.to_string(),
            kind: match record.kind {
                atrest_tenant::TenantKind::ServiceManaged => "service-managed".into(),
                atrest_tenant::TenantKind::CustomerKey => "customer-key".into(),
            },
            state: match record.state {
                atrest_tenant::TenantState::Active => "active".into(),
                atrest_tenant::TenantState::Purged => "purged".into(),
            },
            current_tik: u32::from(record.current_tik),
            root_keys: record
                .slots
                .iter()
                .map(|slot| {
                    let role = match slot.role {
                        atrest_tenant::SlotRole::Service => "service",
                        atrest_tenant::SlotRole::Customer => "customer",
                        atrest_tenant::SlotRole::Availability => "availability",
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
    /// Key store errors.
    pub fn tenants(&self) -> Result<Vec<TenantSummary>, Error> {
        self.tenant_names()?
            .into_iter()
            .map(|(name, _)| self.tenant_summary(&name))
            .collect()
    }

    /// Seals `plaintext` as a new version of file `name` of tenant
    /// `tenant`, for `principal`, into a new blob.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant; key, stream and blob
    /// errors.
    pub fn put(
        &self,
        tenant: &str,
        name: &str,
        principal: &str,
        plaintext: impl Read + Send,
    ) -> Result<PutReport, Error> {
        check_name("file name", name)?;
        let tenant_id = self.tenant_id(tenant)?;
        let latest = self.latest(tenant_id, name)?;
        let (file, version) = match latest {
            Some((file, version)) => (file, version + 1),
            None => (
                FileId::random(&mut OsRng).map_err(atrest_tenant::Error::from)?,
                1,
            ),
        };
        let context = FileContext::new(
            tenant_id,
            file,
            FileVersion::try_from(version).map_err(atrest_tenant::Error::from)?,
        );
        let blob = BlobName::random()?;
        let writer = self.blobs.create(&blob);
        let access = Access::User { principal };
        let (record, writer) = self.files.seal(&access, &context, plaintext, writer)?;
        let blob_len = writer.finish()?;
        if blob_len != record.blob_len {
            return Err(Error::Blob(format!(
                "wrote {blob_len} bytes, sealed {}",
                record.blob_len
            )));
        }
        self.store.put_file_key(&context, &record.wrapped_key)?;
        let record_json =
            serde_json::to_string(&record).map_err(|e| Error::Config(e.to_string()))?;
        let _ = self
            .catalog()
            .execute(
                "INSERT INTO catalog_files (tenant, name, version, file, blob, record, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    tenant_id.as_bytes(),
                    name,
                    version,
                    file.as_bytes(),
                    blob.as_str(),
                    record_json,
                    atrest_audit::Timestamp::now().to_string()
                ],
            )
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(PutReport {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            version,
            record,
            blob: blob.to_string(),
        })
    }

    fn latest(&self, tenant: TenantId, name: &str) -> Result<Option<(FileId, u64)>, Error> {
        let row: Option<(Vec<u8>, u64)> = self
            .catalog()
            .query_row(
                "SELECT file, version FROM catalog_files WHERE tenant = ?1 AND name = ?2 ORDER BY version DESC LIMIT 1",
                params![tenant.as_bytes(), name],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| Error::Config(e.to_string()))?;
        row.map(|(file, version)| {
            <[u8; 16]>::try_from(file.as_slice())
                .ok()
                .and_then(|b| FileId::from_bytes(b).ok())
                .map(|file| (file, version))
                .ok_or_else(|| Error::Config("catalog holds an invalid file id".into()))
        })
        .transpose()
    }

    /// The record and blob of a file version (the latest if `version` is
    /// `None`), with its wrapped key as currently stored (re-wraps update
    /// it).
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such tenant, file or version.
    pub fn record(
        &self,
        tenant: &str,
        name: &str,
        version: Option<u64>,
    ) -> Result<(FileRecord, BlobName), Error> {
        let tenant_id = self.tenant_id(tenant)?;
        let row: Option<(String, String)> = self
            .catalog()
            .query_row(
                "SELECT record, blob FROM catalog_files WHERE tenant = ?1 AND name = ?2
                 AND (?3 IS NULL OR version = ?3) ORDER BY version DESC LIMIT 1",
                params![tenant_id.as_bytes(), name, version],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| Error::Config(e.to_string()))?;
        let (record, blob) = row.ok_or_else(|| match version {
            Some(v) => Error::NotFound(format!("tenant {tenant:?} has no version {v} of {name:?}")),
            None => Error::NotFound(format!("tenant {tenant:?} has no file {name:?}")),
        })?;
        let mut record: FileRecord = serde_json::from_str(&record)
            .map_err(|e| Error::Config(format!("catalog record: {e}")))?;
        if let Some(current) = self.store.file_key(&record.context())? {
            record.wrapped_key = current;
        }
        Ok((record, blob.parse()?))
    }

    /// Gives `principal` file `name` of tenant `tenant` (or bytes `range`
    /// of it) into `out`. Returns the plaintext bytes written.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Keys`] if the release is refused;
    /// [`Error::Stream`] if the blob is not authentic; blob errors.
    pub fn get(
        &self,
        tenant: &str,
        name: &str,
        version: Option<u64>,
        principal: &str,
        range: Option<Range<u64>>,
        out: &mut (impl Write + Send),
    ) -> Result<u64, Error> {
        let (record, blob) = self.record(tenant, name, version)?;
        let access = Access::User { principal };
        match range {
            Some(range) => {
                let source = self.blobs.ranged(&blob)?;
                self.files.open_range(&access, &record, source, range, out)
            }
            None => {
                let source = self.blobs.open(&blob)?;
                let (_, len) = self.files.open(&access, &record, source, out)?;
                Ok(len)
            }
        }
    }

    /// Every file version of `tenant` (or of every tenant), by name.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant; catalog errors.
    pub fn list(&self, tenant: Option<&str>) -> Result<Vec<Listing>, Error> {
        let mut listings = Vec::new();
        for (name, id) in self.tenant_names()? {
            if tenant.is_some_and(|t| t != name) {
                continue;
            }
            let catalog = self.catalog();
            let mut statement = catalog
                .prepare("SELECT name, version, blob, record, sealed FROM catalog_files WHERE tenant = ?1 ORDER BY name, version")
                .map_err(|e| Error::Config(e.to_string()))?;
            let rows = statement
                .query_map(params![id.as_bytes()], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, u64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                    ))
                })
                .map_err(|e| Error::Config(e.to_string()))?;
            for row in rows {
                let (file, version, blob, record, sealed) =
                    row.map_err(|e| Error::Config(e.to_string()))?;
                let record: FileRecord = serde_json::from_str(&record)
                    .map_err(|e| Error::Config(format!("catalog record: {e}")))?;
                let tik_version = self
                    .store
                    .file_key(&record.context())?
                    .map_or(record.tik_version(), |wrapped| wrapped.kek_version());
                listings.push(Listing {
                    tenant: name.clone(),
                    name: file,
                    version,
                    bytes: record.plaintext_len,
                    tik_version: u32::from(tik_version),
                    blob,
                    sealed,
                });
            }
        }
        if let Some(tenant) = tenant
            && listings.is_empty()
        {
            let _ = self.tenant_id(tenant)?;
        }
        Ok(listings)
    }

    /// Rolls the tenant's TIK and re-wraps every file key under the new
    /// version, reporting progress after each batch; then retires the
    /// versions nothing refers to any more.
    ///
    /// # Errors
    /// Key and store errors; a re-wrap that stopped can be run again.
    pub fn rotate_tik(
        &self,
        tenant: &str,
        progress: &mut dyn FnMut(RewrapProgress),
    ) -> Result<(KeyVersion, RewrapReport), Error> {
        let tenant_id = self.tenant_id(tenant)?;
        let keys = self.files.keys();
        let version = keys.roll_tik(tenant_id)?;
        let report = keys.rewrap_file_keys(tenant_id, self.store.as_ref(), 1000, progress)?;
        for old in atrest_tenant::MetadataStore::tik_versions(self.store.as_ref(), tenant_id)? {
            if old != report.tik_version {
                keys.retire_tik(tenant_id, old, self.store.as_ref())?;
            }
        }
        self.checkpoint()?;
        Ok((version, report))
    }

    /// Rolls one of the service's root keys (`root` or `availability`):
    /// a new version wraps every TIK version it protected, and the old
    /// version is destroyed.
    ///
    /// # Errors
    /// [`Error::Config`] for another label; key and store errors.
    pub fn rotate_service_key(&self, label: &str) -> Result<(RootKeyRef, RootRollReport), Error> {
        if label != ROOT_KEY && label != AVAILABILITY_KEY {
            return Err(Error::Config(format!(
                "the service keys are {ROOT_KEY:?} and {AVAILABILITY_KEY:?}"
            )));
        }
        let version = self
            .service
            .current_version(label)
            .map_err(atrest_tenant::Error::from)?;
        let old = RootKeyRef::new(SERVICE_PROVIDER, label, version)
            .map_err(atrest_tenant::Error::from)?;
        let new = self.service.roll_key(label)?;
        let report = self.files.keys().roll_root_key(&old, &new)?;
        self.service.destroy_version(&old)?;
        self.checkpoint()?;
        Ok((new, report))
    }

    /// Records that the customer revoked the service's use of `key` (a
    /// `provider:label` reference) for tenant `tenant`.
    ///
    /// # Errors
    /// [`Error::Keys`] if it is not one of the tenant's customer keys.
    pub fn revoke(&self, tenant: &str, key: &str) -> Result<(), Error> {
        let tenant_id = self.tenant_id(tenant)?;
        let record = self.files.keys().tenant(tenant_id)?;
        let wanted: RootKeyRef = key.parse().map_err(atrest_tenant::Error::from)?;
        let key = record
            .slots
            .iter()
            .map(|slot| &slot.key)
            .find(|k| k.provider() == wanted.provider() && k.label() == wanted.label())
            .ok_or_else(|| {
                Error::NotFound(format!("{key} is not a root key of tenant {tenant:?}"))
            })?;
        self.files.keys().revoke_customer_key(tenant_id, key)?;
        self.checkpoint()
    }

    /// Purges tenant `tenant`: destroys all its key material. Its blobs
    /// stay, unreadable by anyone. Returns the number of TIK versions
    /// destroyed.
    ///
    /// # Errors
    /// Key and store errors.
    pub fn purge(&self, tenant: &str) -> Result<u64, Error> {
        let destroyed = self.files.keys().purge(self.tenant_id(tenant)?)?;
        self.checkpoint()?;
        Ok(destroyed)
    }

    /// Moves every file under directory `source` into tenant `tenant`, as
    /// files named `prefix` + their path relative to `source`, streaming
    /// each one through [`Deployment::put`] as `principal`. An item that
    /// fails is counted and reported, and the move goes on. The move is
    /// audited as one `data_move` record with its statistics (and every
    /// item's seal, as usual).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant; [`Error::Io`] if `source`
    /// cannot be listed; audit errors.
    pub fn import_directory(
        &self,
        tenant: &str,
        source: &Path,
        prefix: &str,
        principal: &str,
        progress: &mut dyn FnMut(&MoveProgress),
    ) -> Result<MoveReport, Error> {
        let tenant_id = self.tenant_id(tenant)?;
        let started = std::time::Instant::now();
        let mut pending = vec![source.to_path_buf()];
        let mut items = Vec::new();
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    items.push(path);
                }
            }
        }
        items.sort();
        let mut report = MoveReport::default();
        for path in &items {
            let relative = path.strip_prefix(source).unwrap_or(path);
            let name = format!("{prefix}{}", relative.display());
            let moved = fs::File::open(path)
                .map_err(Error::from)
                .and_then(|file| self.put(tenant, &name, principal, file));
            match moved {
                Ok(put) => {
                    report.items += 1;
                    report.bytes += put.record.plaintext_len;
                }
                Err(error) => {
                    report.failures += 1;
                    report.failed.push((name.clone(), error.to_string()));
                }
            }
            progress(&MoveProgress {
                done: report.items + report.failures,
                total: items.len() as u64,
                current: name,
            });
        }
        report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let event = atrest_audit::Event::DataMove {
            source: atrest_audit::Text::lossy(format!("directory {}", source.display())),
            destination: atrest_audit::Text::lossy(format!(
                "tenant {tenant}, blob store {}",
                self.blobs.location()
            )),
            items: report.items,
            bytes: report.bytes,
            failures: report.failures,
            duration_ms: report.duration_ms,
        };
        let record = atrest_audit::Record::new(atrest_audit::Text::lossy("atrest-cli"), event)
            .tenant(atrest_audit::Text::lossy(tenant_id.to_string()))
            .request(atrest_audit::Text::lossy(principal));
        let _ = atrest_audit::Audit::record(self.log.as_ref(), record)?;
        self.checkpoint()?;
        Ok(report)
    }

    /// Signs a checkpoint of the audit log's current head (stored with the
    /// log).
    ///
    /// # Errors
    /// Audit errors.
    pub fn checkpoint(&self) -> Result<(), Error> {
        let _ = self.log.checkpoint(&self.signer)?;
        Ok(())
    }

    /// Verifies the audit log against every stored checkpoint.
    ///
    /// # Errors
    /// Audit errors (a problem in the log is in the report, not an error).
    pub fn verify_audit(&self) -> Result<(Report, usize), Error> {
        let key = VerifyingKey::parse(&self.config.audit_verifying_key)?;
        let dir = self.dir.join("audit");
        let checkpoints = stored_checkpoints(&dir)?;
        let report = atrest_audit::verify(&dir, &checkpoints, &key)?;
        Ok((report, checkpoints.len()))
    }

    /// The audit log's records, optionally only those of tenant `tenant`.
    ///
    /// # Errors
    /// Audit errors; [`Error::NotFound`] for an unknown tenant.
    pub fn audit_entries(&self, tenant: Option<&str>) -> Result<Vec<Entry>, Error> {
        let wanted = tenant
            .map(|t| self.tenant_id(t).map(|id| id.to_string()))
            .transpose()?;
        let entries = atrest_audit::read_entries(self.dir.join("audit"))?;
        Ok(entries
            .into_iter()
            .filter(|e| {
                wanted
                    .as_ref()
                    .is_none_or(|w| e.tenant.as_ref().is_some_and(|t| t.as_str() == w))
            })
            .collect())
    }

    /// The audit log's checkpoint verifying key (text form).
    pub fn audit_verifying_key(&self) -> &str {
        &self.config.audit_verifying_key
    }
}
