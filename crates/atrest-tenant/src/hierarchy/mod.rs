//! The tenant key hierarchy: tenants, their TIK versions, file keys, the
//! TIK cache, rotation, revocation and purge.
//!
//! [`KeyHierarchy`], its [`Builder`], its caches and the helpers its
//! operations share live here; the operations live in one module each:
//! - `binding`: what binds TIK wraps and tenant records to their tenant,
//!   and the authentication of a record read from the store;
//! - `tik`: a TIK version under its root keys — wrapped, unwrapped by
//!   the model's rules, derived into the KEK and cached;
//! - `file_keys`: new file keys and their release, under the policy;
//! - `rotation`: rolling TIKs and root keys, re-wrapping file keys and
//!   retiring TIK versions;
//! - `lifecycle`: creating tenants, revoking customer keys, purging.

mod binding;
mod changes;
mod file_keys;
mod lifecycle;
mod rotation;
mod tik;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use atrest_audit::{Audit, Event, FileRef, KeyRef, Outcome, Record, Text};
use atrest_filekey::{FileContext, Kek, KeyVersion, TenantId};

pub use self::changes::DEFAULT_CHANGE_POLL;
pub use self::file_keys::{NewFileKey, PendingKeyRecords};
pub use self::rotation::{RewrapProgress, RewrapReport, RootRollReport};
pub use self::tik::FALLBACK_CACHE_TTL;
use crate::policy::{Administration, Issuer};
use crate::store::TenantRecord;
use crate::tenant_key::{MetadataKey, TenantKeyStore};
use crate::{Access, DenyAll, Error, MetadataStore, ReleasePolicy, RootKeyProvider, RootKeyRef};

/// The default TIK cache lifetime, and so the default bound on revocation
/// lag: five minutes.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);

/// Awaits each future in turn (wrapping a TIK under each of a tenant's
/// root keys: a handful, one after the other).
async fn join_all<T>(
    futures: Vec<impl Future<Output = Result<T, Error>>>,
) -> Result<Vec<T>, Error> {
    let mut out = Vec::with_capacity(futures.len());
    for future in futures {
        out.push(future.await?);
    }
    Ok(out)
}

type TikCache = HashMap<(TenantId, KeyVersion), Cached<Arc<Kek>>>;

struct Cached<T> {
    value: T,
    expires: Instant,
}

/// A tenant's metadata as cached (its record authenticated), with the
/// texts its audit records use.
struct TenantEntry {
    record: TenantRecord,
    /// The tenant's metadata key; `None` for a purged tenant.
    metadata: Option<Arc<MetadataKey>>,
    tenant_text: Text,
    tik_text: Text,
}

/// Builds a [`KeyHierarchy`].
pub struct Builder {
    store: Arc<dyn MetadataStore>,
    tenant_keys: Arc<dyn TenantKeyStore>,
    audit: Arc<dyn Audit>,
    providers: HashMap<String, Arc<dyn RootKeyProvider>>,
    service_root: Option<(String, String)>,
    availability: Option<(String, String)>,
    policy: Arc<dyn ReleasePolicy>,
    ttl: Duration,
    change_poll: Duration,
    actor: String,
}

impl Builder {
    /// Registers a root-key provider under its name.
    #[must_use]
    pub fn provider(mut self, provider: Arc<dyn RootKeyProvider>) -> Self {
        let _ = self.providers.insert(provider.name().to_owned(), provider);
        self
    }

    /// The root key that wraps the TIKs of new service-managed tenants:
    /// key `label` of provider `provider`, at its current version.
    #[must_use]
    pub fn service_root_key(mut self, provider: &str, label: &str) -> Self {
        self.service_root = Some((provider.to_owned(), label.to_owned()));
        self
    }

    /// The availability key that wraps the TIKs of new customer-key tenants
    /// next to their customer keys.
    #[must_use]
    pub fn availability_key(mut self, provider: &str, label: &str) -> Self {
        self.availability = Some((provider.to_owned(), label.to_owned()));
        self
    }

    /// The key-release policy (by default [`DenyAll`]).
    #[must_use]
    pub fn policy(mut self, policy: Arc<dyn ReleasePolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// How long an unwrapped TIK (and a tenant's metadata) stays cached:
    /// the bound on how long a revocation made at the customer's HSM takes
    /// to stop user requests. Default [`DEFAULT_CACHE_TTL`]; zero disables
    /// the cache.
    #[must_use]
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The longest time between two looks at the store's change log
    /// ([`MetadataStore::changes_since`]) before a cached tenant record or
    /// TIK is used: how soon a purge, a revocation or a TIK roll made by
    /// another process (the operator program, another instance) takes
    /// effect here. Default [`DEFAULT_CHANGE_POLL`]; zero looks before
    /// every use of the cache.
    #[must_use]
    pub fn change_poll(mut self, interval: Duration) -> Self {
        self.change_poll = interval;
        self
    }

    /// Who the audit records name as the actor (the service's identity).
    #[must_use]
    pub fn actor(mut self, actor: &str) -> Self {
        actor.clone_into(&mut self.actor);
        self
    }

    /// Builds the hierarchy, for code that runs no system operation of its
    /// own (the hierarchy's re-wrap and root-key roll still run).
    ///
    /// # Errors
    /// As for [`Builder::build_with_administration`].
    pub fn build(self) -> Result<KeyHierarchy, Error> {
        self.build_with_administration()
            .map(|(hierarchy, _)| hierarchy)
    }

    /// Builds the hierarchy and its [`Administration`], the one source of
    /// the [`SystemCapability`]s that [`Access::System`] needs: keep it in
    /// the service's administrative code, away from request handlers.
    ///
    /// # Errors
    /// [`Error::Misuse`] if the service root key or availability key names
    /// a provider that was not registered.
    ///
    /// [`SystemCapability`]: crate::SystemCapability
    pub fn build_with_administration(self) -> Result<(KeyHierarchy, Administration), Error> {
        for (provider, _) in self.service_root.iter().chain(&self.availability) {
            if !self.providers.contains_key(provider) {
                return Err(Error::Misuse(
                    "the service root key or availability key names an unregistered provider",
                ));
            }
        }
        let issuer = Arc::new(Issuer);
        let hierarchy = KeyHierarchy {
            issuer: issuer.clone(),
            store: self.store,
            tenant_keys: self.tenant_keys,
            audit: self.audit,
            providers: self.providers,
            service_root: self.service_root,
            availability: self.availability,
            policy: self.policy,
            ttl: self.ttl,
            change_poll: self.change_poll,
            actor: Text::lossy(self.actor),
            tenants: RwLock::default(),
            tiks: RwLock::default(),
            tik_lookups: TikCacheCounts::default().into(),
            watch: changes::Watch::default(),
            flushes: AtomicU64::new(0),
            replaced: std::sync::Mutex::default(),
        };
        Ok((hierarchy, Administration::new(issuer)))
    }
}

/// Tenant key hierarchies: creates tenants, wraps and releases file keys
/// under their TIKs, and rotates, revokes and purges.
///
/// Shareable across threads (`&self` everywhere). See the crate
/// documentation for the model and its rules.
pub struct KeyHierarchy {
    /// Whose system capabilities this hierarchy accepts.
    issuer: Arc<Issuer>,
    store: Arc<dyn MetadataStore>,
    tenant_keys: Arc<dyn TenantKeyStore>,
    audit: Arc<dyn Audit>,
    providers: HashMap<String, Arc<dyn RootKeyProvider>>,
    service_root: Option<(String, String)>,
    availability: Option<(String, String)>,
    policy: Arc<dyn ReleasePolicy>,
    ttl: Duration,
    change_poll: Duration,
    actor: Text,
    /// Cached tenant entries. Lock order: `tenants` before `tiks`.
    tenants: RwLock<HashMap<TenantId, Cached<Arc<TenantEntry>>>>,
    /// Cached TIKs, each only while its tenant's entry is cached.
    tiks: RwLock<TikCache>,
    tik_lookups: TikLookups,
    watch: changes::Watch,
    /// How many flushes happened: a value loaded across one is not cached.
    flushes: AtomicU64,
    /// The record keys of tenant records whose replacement of the record
    /// before them this process has seen finished (see
    /// `KeyHierarchy::finish_replacing`): not done again at each load.
    replaced: std::sync::Mutex<std::collections::HashSet<atrest_filekey::KeyId>>,
}

/// How often a TIK was found in the cache, and how often it had to be
/// unwrapped (through its root keys) since the hierarchy was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TikCacheCounts {
    /// Found cached.
    pub hits: u64,
    /// Unwrapped (not cached, expired, or flushed).
    pub misses: u64,
}

/// [`TikCacheCounts`], counted as they happen.
#[derive(Debug, Default)]
pub(super) struct TikLookups {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
}

impl From<TikCacheCounts> for TikLookups {
    fn from(counts: TikCacheCounts) -> Self {
        Self {
            hits: counts.hits.into(),
            misses: counts.misses.into(),
        }
    }
}

impl core::fmt::Debug for KeyHierarchy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyHierarchy")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("cache_ttl", &self.ttl)
            .field("change_poll", &self.change_poll)
            .finish_non_exhaustive()
    }
}

impl KeyHierarchy {
    /// Starts building a hierarchy over the key metadata in `store` and the
    /// tenant keys in `tenant_keys` (kept outside that database; see
    /// [`crate::tenant_key`]), auditing through `audit`.
    pub fn builder(
        store: Arc<dyn MetadataStore>,
        tenant_keys: Arc<dyn TenantKeyStore>,
        audit: Arc<dyn Audit>,
    ) -> Builder {
        Builder {
            store,
            tenant_keys,
            audit,
            providers: HashMap::new(),
            service_root: None,
            availability: None,
            policy: Arc::new(DenyAll),
            ttl: DEFAULT_CACHE_TTL,
            change_poll: DEFAULT_CHANGE_POLL,
            actor: "atrest".into(),
        }
    }

    // ----- audit -------------------------------------------------------

    async fn record(
        &self,
        entry: &TenantEntry,
        event: Event,
        outcome: Outcome,
    ) -> Result<(), Error> {
        let record = Record::new(self.actor.clone(), event)
            .tenant(entry.tenant_text.clone())
            .outcome(outcome);
        let _ = self.audit.record(record).await?;
        Ok(())
    }

    fn tik_ref(entry: &TenantEntry, version: KeyVersion) -> KeyRef {
        KeyRef {
            key: entry.tik_text.clone(),
            version: Some(u32::from(version)),
        }
    }

    fn root_ref(key: &RootKeyRef) -> KeyRef {
        KeyRef {
            key: Text::lossy(format!("{}:{}", key.provider(), key.label())),
            version: Some(key.version()),
        }
    }

    /// The audit outcome and the error of a decision that does not allow:
    /// a refusal is denied; a policy that could not decide is a failure
    /// (unavailable), never a refusal. `None` for [`crate::Decision::Allow`].
    fn refusal(decision: crate::Decision) -> Option<(Outcome, Error)> {
        match decision {
            crate::Decision::Allow => None,
            crate::Decision::Deny(reason) => Some((
                Outcome::Denied {
                    reason: Text::lossy(&reason),
                },
                Error::Denied { reason },
            )),
            crate::Decision::Unavailable(reason) => Some((
                Outcome::Failed {
                    error: Text::lossy(format!(
                        "the key-release policy could not decide: {reason}"
                    )),
                },
                Error::PolicyUnavailable { reason },
            )),
        }
    }

    fn file_ref(context: &FileContext) -> FileRef {
        FileRef {
            file: Text::lossy(context.file.to_string()),
            version: u64::from(context.version),
        }
    }

    fn failed(error: &Error) -> Outcome {
        Outcome::Failed {
            error: Text::lossy(error.to_string()),
        }
    }

    // ----- tenant metadata and the caches ------------------------------

    fn entry_from(record: TenantRecord, metadata: Option<Arc<MetadataKey>>) -> TenantEntry {
        TenantEntry {
            tenant_text: Text::lossy(record.tenant.to_string()),
            tik_text: Text::lossy(format!("tik:{}", record.tik_id)),
            record,
            metadata,
        }
    }

    /// The tenant's entry, from the cache (once the store's change log was
    /// looked at, see [`Builder::change_poll`]) or loaded.
    async fn tenant_entry(&self, tenant: TenantId) -> Result<Arc<TenantEntry>, Error> {
        self.catch_up().await?;
        let now = Instant::now();
        if let Some(cached) = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&tenant)
            .filter(|cached| cached.expires > now)
        {
            return Ok(Arc::clone(&cached.value));
        }
        let epoch = self.epoch();
        let entry = Arc::new(self.load_entry(tenant).await?);
        if !self.ttl.is_zero() {
            let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
            // Loaded across a flush: perhaps from before the change that
            // caused it.
            if self.epoch() == epoch {
                // TIKs cached beside the entry this one replaces go with it.
                self.tiks
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|(t, _), _| *t != tenant);
                let _ = tenants.insert(
                    tenant,
                    Cached {
                        value: Arc::clone(&entry),
                        expires: now + self.ttl,
                    },
                );
            }
        }
        Ok(entry)
    }

    /// The tenant's metadata, fresh from the store and authenticated.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`Error::Tampered`] if the record was
    /// edited; [`Error::TenantKeyMissing`]; [`Error::Store`].
    pub async fn tenant(&self, tenant: TenantId) -> Result<TenantRecord, Error> {
        Ok(self.load_entry(tenant).await?.record)
    }

    /// The tenant's metadata key, which authenticates the records kept
    /// about its files (the `atrest` catalog binds each file record to its
    /// tenant, name and version with it).
    ///
    /// # Errors
    /// [`Error::Purged`]; as for [`KeyHierarchy::tenant`].
    pub async fn metadata_key(&self, tenant: TenantId) -> Result<Arc<MetadataKey>, Error> {
        let entry = self.tenant_entry(tenant).await?;
        entry.metadata.clone().ok_or(Error::Purged(tenant))
    }

    /// A tenant's TIK versions, oldest first.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn tik_versions(&self, tenant: TenantId) -> Result<Vec<KeyVersion>, Error> {
        self.store.tik_versions(tenant).await
    }

    /// Every tenant in the store.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn tenants(&self) -> Result<Vec<TenantId>, Error> {
        self.store.tenants().await
    }

    /// Empties the TIK cache: every cached TIK is dropped (and zeroized once
    /// no operation in flight holds it), so the next use of each asks its
    /// root keys again. Makes a revocation at the customer's HSM take effect
    /// at once.
    pub fn flush_cache(&self) {
        self.next_epoch();
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        let mut tiks = self.tiks.write().unwrap_or_else(PoisonError::into_inner);
        tenants.clear();
        tiks.clear();
    }

    /// Drops one tenant's cached TIKs and metadata.
    pub fn flush_tenant(&self, tenant: TenantId) {
        self.next_epoch();
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        let mut tiks = self.tiks.write().unwrap_or_else(PoisonError::into_inner);
        let _ = tenants.remove(&tenant);
        tiks.retain(|(t, _), _| *t != tenant);
    }

    /// Drops expired cache entries now (they are otherwise dropped when the
    /// next TIK is loaded). A service may call this from a timer so expired
    /// key material does not stay in memory.
    pub fn evict_expired(&self) {
        let now = Instant::now();
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        let mut tiks = self.tiks.write().unwrap_or_else(PoisonError::into_inner);
        tenants.retain(|_, cached| cached.expires > now);
        tiks.retain(|_, cached| cached.expires > now);
    }

    /// How often TIKs were found in the cache and how often unwrapped,
    /// for a program's metrics.
    pub fn tik_cache_counts(&self) -> TikCacheCounts {
        use std::sync::atomic::Ordering::Relaxed;
        TikCacheCounts {
            hits: self.tik_lookups.hits.load(Relaxed),
            misses: self.tik_lookups.misses.load(Relaxed),
        }
    }

    /// How many TIKs are cached (expired ones included until evicted).
    pub fn cached_tiks(&self) -> usize {
        self.tiks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    // ----- system capabilities -----------------------------------------

    /// Refuses a system capability that this hierarchy's administration did
    /// not issue.
    fn check_capability(&self, access: &Access<'_>) -> Result<(), Error> {
        match access {
            Access::System(capability) if !capability.issued_by(&self.issuer) => Err(
                Error::Misuse("a system capability issued for another key hierarchy"),
            ),
            _ => Ok(()),
        }
    }
}

/// The async operations can run on a multi-threaded runtime (their futures
/// are `Send`): checked at compile time.
#[cfg(test)]
#[allow(dead_code)]
fn operations_are_send(
    keys: &KeyHierarchy,
    access: &Access<'_>,
    context: &FileContext,
    wrapped: &atrest_filekey::WrappedFileKey,
    index: &dyn crate::WrappedKeyIndex,
    root: &RootKeyRef,
) {
    fn send<T: Send>(_: T) {}
    let tenant = context.tenant;
    send(keys.tenant(tenant));
    send(keys.create_service_tenant(tenant));
    send(keys.create_customer_key_tenant(tenant, [root.clone(), root.clone()]));
    send(keys.new_file_key(access, context));
    send(keys.release_file_key(access, context, wrapped));
    send(keys.roll_tik(tenant));
    send(keys.retire_tik(tenant, KeyVersion::FIRST, index));
    send(keys.roll_root_key(root, root));
    send(keys.revoke_customer_key(tenant, root));
    send(keys.purge(tenant));
}
