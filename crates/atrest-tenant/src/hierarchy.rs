//! The tenant key hierarchy: tenants, their TIK versions, file keys, the
//! TIK cache, rotation, revocation and purge.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use atrest_audit::{Audit, Event, FileRef, KeyRef, Outcome, Record, Text};
use atrest_filekey::{
    FileContext, FileKey, Kek, KeyId, KeyVersion, OsRng, TenantId, WrappedFileKey,
};

use crate::policy::{Administration, Issuer, SystemCapability};
use crate::store::{
    Rewrapped, RootKeySlot, SlotRole, TagUpdate, TenantKind, TenantRecord, TenantState, TikWrap,
};
use crate::tenant_key::{MetadataKey, RecordTag, TenantKeyStore};
use crate::{
    Access, Decision, DenyAll, Error, KeyMaterial, MetadataStore, ProviderError, ReleasePolicy,
    RootKeyProvider, RootKeyRef, TikBinding, WrappedKeyIndex,
};

const TIK_AAD_LABEL: &[u8] = b"atrest/v2 tik";
const TIK_DERIVATION_LABEL: &[u8] = b"atrest/v1 tik";
/// The label of tenant records' tags under the tenant's metadata key.
const TENANT_RECORD_LABEL: &[u8] = b"atrest/v1 tenant record";

/// The canonical encoding of what a tenant record's tag covers: everything
/// in it that decides a release.
fn record_message(record: &TenantRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + record.slots.len() * 300);
    out.extend_from_slice(&record.tenant.encode());
    out.push(match record.kind {
        TenantKind::ServiceManaged => 1,
        TenantKind::CustomerKey => 2,
    });
    out.push(match record.state {
        TenantState::Active => 1,
        TenantState::Purged => 2,
    });
    out.extend_from_slice(&record.tik_id.encode());
    out.extend_from_slice(&record.current_tik.encode());
    out.push(u8::try_from(record.slots.len()).unwrap_or(u8::MAX));
    for (slot, index) in record.slots.iter().zip(0u8..) {
        out.push(index);
        out.push(role_code(slot.role));
        out.push(u8::from(slot.revoked));
        slot.key.encode_into(&mut out);
    }
    out
}

fn role_code(role: SlotRole) -> u8 {
    match role {
        SlotRole::Service => 1,
        SlotRole::Customer => 2,
        SlotRole::Availability => 3,
    }
}

/// What the tenant key turns into a TIK version's key: the seed the root
/// keys wrap, bound to the tenant, the TIK and the version.
fn tik_derivation_input(
    record: &TenantRecord,
    version: KeyVersion,
    seed: &KeyMaterial,
) -> zeroize::Zeroizing<Vec<u8>> {
    // Sized once, so no reallocation leaves a copy of the seed behind;
    // wiped when dropped.
    let mut input = zeroize::Zeroizing::new(Vec::with_capacity(
        TIK_DERIVATION_LABEL.len()
            + TenantId::ENCODED_LEN
            + KeyId::ENCODED_LEN
            + KeyVersion::ENCODED_LEN
            + KeyMaterial::LEN,
    ));
    input.extend_from_slice(TIK_DERIVATION_LABEL);
    input.extend_from_slice(&record.tenant.encode());
    input.extend_from_slice(&record.tik_id.encode());
    input.extend_from_slice(&version.encode());
    input.extend_from_slice(seed.expose_secret());
    input
}

/// The default TIK cache lifetime, and so the default bound on revocation
/// lag: five minutes.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);

/// The associated data binding a TIK wrap to its tenant and the tenant's
/// kind, the TIK and its version, and the root-key slot it sits in (index,
/// role, key): a wrap moved to another slot, a slot relabelled (a customer
/// key made the availability key, say), or a tenant's kind changed in the
/// database no longer unwraps.
fn tik_aad(record: &TenantRecord, version: KeyVersion, slot: u8, root: &RootKeySlot) -> TikBinding {
    let mut aad = TIK_AAD_LABEL.to_vec();
    aad.extend_from_slice(&record.tenant.encode());
    aad.push(match record.kind {
        TenantKind::ServiceManaged => 1,
        TenantKind::CustomerKey => 2,
    });
    aad.extend_from_slice(&record.tik_id.encode());
    aad.extend_from_slice(&version.encode());
    aad.push(slot);
    aad.push(role_code(root.role));
    root.key.encode_into(&mut aad);
    TikBinding::from_bytes(aad)
}

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

/// Progress of a re-wrap, reported after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewrapProgress {
    /// Wrapped file keys moved to the current TIK version so far.
    pub done: u64,
    /// How many were under older versions when the re-wrap started.
    pub total: u64,
}

/// What a finished re-wrap did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewrapReport {
    /// The TIK version every wrapped file key of the tenant is now under.
    pub tik_version: KeyVersion,
    /// How many wrapped file keys were re-wrapped.
    pub rewrapped: u64,
    /// How many batches (transactions) that took.
    pub batches: u64,
}

/// What rolling a root key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RootRollReport {
    /// Tenants whose TIK versions were re-wrapped.
    pub tenants: u64,
    /// TIK versions re-wrapped.
    pub tik_versions: u64,
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
            actor: Text::lossy(self.actor),
            tenants: RwLock::default(),
            tiks: RwLock::default(),
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
    actor: Text,
    tenants: RwLock<HashMap<TenantId, Cached<Arc<TenantEntry>>>>,
    tiks: RwLock<TikCache>,
}

impl core::fmt::Debug for KeyHierarchy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyHierarchy")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("cache_ttl", &self.ttl)
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

    // ----- tenant metadata cache ---------------------------------------

    fn entry_from(record: TenantRecord, metadata: Option<Arc<MetadataKey>>) -> TenantEntry {
        TenantEntry {
            tenant_text: Text::lossy(record.tenant.to_string()),
            tik_text: Text::lossy(format!("tik:{}", record.tik_id)),
            record,
            metadata,
        }
    }

    /// A tenant's record, fresh from the store, authenticated: an active
    /// tenant's record must carry the tag its metadata key gives it. A
    /// record that fails is refused ([`Error::Tampered`]) and the refusal
    /// audited, as is an active record whose tenant key is gone.
    async fn load_entry(&self, tenant: TenantId) -> Result<TenantEntry, Error> {
        let record = self
            .store
            .tenant(tenant)
            .await?
            .ok_or(Error::UnknownTenant(tenant))?;
        if record.state == TenantState::Purged {
            // A purged record only refuses; it needs no authentication.
            return Ok(Self::entry_from(record, None));
        }
        let checked = match MetadataKey::derive(&*self.tenant_keys, tenant, record.tik_id).await {
            Ok(key) => {
                let authentic = record.tag.is_some_and(|tag| {
                    key.verify(TENANT_RECORD_LABEL, &record_message(&record), &tag)
                });
                if authentic {
                    Ok(key)
                } else {
                    Err(Error::Tampered {
                        tenant,
                        what: "tenant record",
                    })
                }
            }
            Err(error) => Err(error),
        };
        match checked {
            Ok(key) => Ok(Self::entry_from(record, Some(Arc::new(key)))),
            Err(error @ (Error::Tampered { .. } | Error::TenantKeyMissing(_))) => {
                let entry = Self::entry_from(record, None);
                self.record(&entry, Event::MetadataRejected {}, Self::failed(&error))
                    .await?;
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// The tag `record` must carry under `entry`'s metadata key.
    fn tag_for(entry: &TenantEntry, record: &TenantRecord) -> Result<RecordTag, Error> {
        let key = entry
            .metadata
            .as_ref()
            .ok_or(Error::Purged(entry.record.tenant))?;
        Ok(key.tag(TENANT_RECORD_LABEL, &record_message(record)))
    }

    /// The change of tag from `entry`'s record to `next`.
    fn retag(entry: &TenantEntry, next: &TenantRecord) -> Result<TagUpdate, Error> {
        Ok(TagUpdate {
            previous: entry.record.tag.ok_or(Error::Purged(entry.record.tenant))?,
            next: Self::tag_for(entry, next)?,
        })
    }

    async fn tenant_entry(&self, tenant: TenantId) -> Result<Arc<TenantEntry>, Error> {
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
        let entry = Arc::new(self.load_entry(tenant).await?);
        if !self.ttl.is_zero() {
            let _ = self
                .tenants
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    tenant,
                    Cached {
                        value: Arc::clone(&entry),
                        expires: now + self.ttl,
                    },
                );
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
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.tiks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Drops one tenant's cached TIKs and metadata.
    pub fn flush_tenant(&self, tenant: TenantId) {
        let _ = self
            .tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&tenant);
        self.tiks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(t, _), _| *t != tenant);
    }

    /// Drops expired cache entries now (they are otherwise dropped when the
    /// next TIK is loaded). A service may call this from a timer so expired
    /// key material does not stay in memory.
    pub fn evict_expired(&self) {
        let now = Instant::now();
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, cached| cached.expires > now);
        self.tiks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, cached| cached.expires > now);
    }

    /// How many TIKs are cached (expired ones included until evicted).
    pub fn cached_tiks(&self) -> usize {
        self.tiks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    // ----- root keys ---------------------------------------------------

    fn provider(&self, key: &RootKeyRef) -> Result<&Arc<dyn RootKeyProvider>, ProviderError> {
        self.providers
            .get(key.provider())
            .ok_or_else(|| ProviderError::Misconfigured {
                provider: key.provider().to_owned(),
                detail: "no provider of that name is registered".into(),
            })
    }

    async fn current_key(
        &self,
        configured: Option<&(String, String)>,
        what: &'static str,
    ) -> Result<RootKeyRef, Error> {
        let (provider, label) = configured.ok_or(Error::Misuse(what))?;
        let probe = RootKeyRef::new(provider.clone(), label.clone(), 1)?;
        let version = self.provider(&probe)?.current_version(label).await?;
        Ok(probe.with_version(version))
    }

    async fn wrap_tik(
        &self,
        record: &TenantRecord,
        version: KeyVersion,
        slot: u8,
        key: &RootKeyRef,
        material: &KeyMaterial,
    ) -> Result<TikWrap, Error> {
        let role = record
            .slots
            .get(usize::from(slot))
            .map(|s| s.role)
            .ok_or(Error::Corrupt(
                "a TIK wrap names a root key slot the tenant does not have",
            ))?;
        let aad = tik_aad(
            record,
            version,
            slot,
            &RootKeySlot {
                role,
                key: key.clone(),
                revoked: false,
            },
        );
        Ok(TikWrap {
            version,
            slot,
            wrapped: self.provider(key)?.wrap(key, material, &aad).await?,
        })
    }

    /// Unwraps one TIK wrap with its slot's root key. A key that is gone
    /// although it wrapped this TIK is reported as destroyed.
    async fn unwrap_slot(
        &self,
        record: &TenantRecord,
        wrap: &TikWrap,
    ) -> Result<KeyMaterial, ProviderError> {
        let slot = record.slots.get(usize::from(wrap.slot)).ok_or_else(|| {
            ProviderError::Misconfigured {
                provider: "key store".into(),
                detail: "a TIK wrap names a root key slot the tenant does not have".into(),
            }
        })?;
        let aad = tik_aad(record, wrap.version, wrap.slot, slot);
        match self
            .provider(&slot.key)?
            .unwrap(&slot.key, &wrap.wrapped, &aad)
            .await
        {
            Err(ProviderError::NotFound { key }) => Err(ProviderError::Destroyed { key }),
            other => other,
        }
    }

    /// Recovers a TIK version's key material following the model's rules;
    /// returns it and whether it may be cached for user requests.
    async fn unwrap_tik(
        &self,
        entry: &TenantEntry,
        version: KeyVersion,
        access: &Access<'_>,
    ) -> Result<(KeyMaterial, bool), Error> {
        let record = &entry.record;
        if record.state == TenantState::Purged {
            return Err(Error::Purged(record.tenant));
        }
        let wraps = self.store.tik_wraps(record.tenant, version).await?;
        if wraps.is_empty() {
            // A purge elsewhere since the metadata was cached, or no such version.
            return match self.store.tenant(record.tenant).await? {
                Some(fresh) if fresh.state == TenantState::Purged => {
                    Err(Error::Purged(record.tenant))
                }
                _ => Err(Error::UnknownTikVersion {
                    tenant: record.tenant,
                    version,
                }),
            };
        }
        let in_role = |role: SlotRole| {
            wraps.iter().filter(move |wrap| {
                record
                    .slots
                    .get(usize::from(wrap.slot))
                    .is_some_and(|slot| slot.role == role)
            })
        };
        if record.kind == TenantKind::ServiceManaged {
            let wrap = in_role(SlotRole::Service).next().ok_or(Error::Corrupt(
                "service-managed tenant without a service root key wrap",
            ))?;
            return Ok((self.unwrap_slot(record, wrap).await?, true));
        }

        // Every customer slot must have its wrap: a wrap that is missing
        // (rows deleted from the database) is never taken for an
        // unavailable key, which would open the way to the availability key.
        let customer_slots = record
            .slots
            .iter()
            .filter(|slot| slot.role == SlotRole::Customer)
            .count();
        if customer_slots == 0 || in_role(SlotRole::Customer).count() != customer_slots {
            return Err(Error::Corrupt(
                "a customer-key tenant's TIK version lacks a customer key wrap",
            ));
        }

        // Customer keys first.
        let mut errors = Vec::new();
        let mut customer_keys = Vec::new();
        for wrap in in_role(SlotRole::Customer) {
            let Some(slot) = record.slots.get(usize::from(wrap.slot)) else {
                continue;
            };
            customer_keys.push(Self::root_ref(&slot.key));
            if slot.revoked {
                errors.push(ProviderError::AccessDenied {
                    key: slot.key.clone(),
                    detail: "revoked by the customer".into(),
                });
                continue;
            }
            match self.unwrap_slot(record, wrap).await {
                Ok(material) => return Ok((material, true)),
                Err(error) => errors.push(error),
            }
        }
        let all_unavailable = errors.iter().all(ProviderError::is_unavailable);
        if !all_unavailable && !access.is_system() {
            let all_revoked = record
                .slots
                .iter()
                .filter(|slot| slot.role == SlotRole::Customer)
                .all(|slot| slot.revoked);
            if all_revoked {
                return Err(Error::Revoked(record.tenant));
            }
            let decisive = errors.into_iter().max_by_key(ProviderError::rank);
            return Err(decisive.map_or(Error::Revoked(record.tenant), Error::RootKey));
        }

        // The availability key: customer keys unavailable, or a system
        // operation. Audited whatever the outcome; no key without the record.
        let wrap = in_role(SlotRole::Availability)
            .next()
            .ok_or(Error::Corrupt(
                "customer-key tenant without an availability key wrap",
            ))?;
        let result = self.unwrap_slot(record, wrap).await.map_err(Error::RootKey);
        let operation = match access {
            Access::User { principal } => format!("user request by {principal}"),
            Access::System(capability) => format!("system operation {}", capability.operation()),
        };
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(error) => Self::failed(error),
        };
        self.record(
            entry,
            Event::AvailabilityKeyFallback {
                root_keys: customer_keys,
                operation: Text::lossy(operation),
            },
            outcome,
        )
        .await?;
        // Cache only what user requests may use too.
        Ok((result?, all_unavailable))
    }

    /// The KEK of a TIK version, from the cache or unwrapped.
    async fn tik(
        &self,
        entry: &TenantEntry,
        version: KeyVersion,
        access: &Access<'_>,
    ) -> Result<Arc<Kek>, Error> {
        self.check_capability(access)?;
        let tenant = entry.record.tenant;
        let now = Instant::now();
        if let Some(cached) = self
            .tiks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(tenant, version))
            .filter(|cached| cached.expires > now)
        {
            return Ok(Arc::clone(&cached.value));
        }
        let (seed, cacheable) = self.unwrap_tik(entry, version, access).await?;
        let material = self
            .tenant_keys
            .derive(
                tenant,
                entry.record.tik_id,
                &tik_derivation_input(&entry.record, version, &seed),
            )
            .await?;
        drop(seed);
        let kek = Arc::new(Kek::from_secret_bytes(
            entry.record.tik_id,
            version,
            material.expose_secret(),
        ));
        drop(material);
        if cacheable && !self.ttl.is_zero() {
            let mut tiks = self.tiks.write().unwrap_or_else(PoisonError::into_inner);
            tiks.retain(|_, cached| cached.expires > now);
            let _ = tiks.insert(
                (tenant, version),
                Cached {
                    value: Arc::clone(&kek),
                    expires: now + self.ttl,
                },
            );
        }
        Ok(kek)
    }

    // ----- tenants -----------------------------------------------------

    async fn create(
        &self,
        tenant: TenantId,
        kind: TenantKind,
        slots: Vec<RootKeySlot>,
    ) -> Result<TenantRecord, Error> {
        if self.store.tenant(tenant).await?.is_some() {
            return Err(Error::TenantExists(tenant));
        }
        let mut record = TenantRecord {
            tenant,
            kind,
            state: TenantState::Active,
            tik_id: KeyId::random(&mut OsRng)?,
            current_tik: KeyVersion::FIRST,
            slots,
            tag: None,
        };
        // The tenant key first: a creation that stops after this leaves an
        // unused key of its own (a fresh TIK id), never a tenant without one.
        self.tenant_keys.create(tenant, record.tik_id).await?;
        let metadata =
            Arc::new(MetadataKey::derive(&*self.tenant_keys, tenant, record.tik_id).await?);
        record.tag = Some(metadata.tag(TENANT_RECORD_LABEL, &record_message(&record)));
        let seed = KeyMaterial::generate()?;
        let wraps = record
            .slots
            .iter()
            .zip(0u8..)
            .map(|(slot, index)| self.wrap_tik(&record, KeyVersion::FIRST, index, &slot.key, &seed))
            .collect::<Vec<_>>();
        let wraps = join_all(wraps).await?;
        self.store.create_tenant(&record, &wraps).await?;
        let entry = Self::entry_from(record.clone(), Some(metadata));
        self.record(
            &entry,
            Event::TikRolled {
                tik: Self::tik_ref(&entry, KeyVersion::FIRST),
                previous_version: None,
            },
            Outcome::Success,
        )
        .await?;
        Ok(record)
    }

    /// Creates a service-managed tenant: a first TIK version, wrapped under
    /// the current version of the configured service root key.
    ///
    /// # Errors
    /// [`Error::TenantExists`]; [`Error::Misuse`] if no service root key is
    /// configured; [`Error::RootKey`] if it cannot wrap; [`Error::Store`];
    /// [`Error::Audit`].
    pub async fn create_service_tenant(&self, tenant: TenantId) -> Result<TenantRecord, Error> {
        let key = self
            .current_key(
                self.service_root.as_ref(),
                "no service root key is configured",
            )
            .await?;
        let slots = vec![RootKeySlot {
            role: SlotRole::Service,
            key,
            revoked: false,
        }];
        self.create(tenant, TenantKind::ServiceManaged, slots).await
    }

    /// Creates a customer-key tenant: a first TIK version wrapped under each
    /// of the customer's two root keys and under the availability key. All
    /// three must be usable now.
    ///
    /// # Errors
    /// As for [`KeyHierarchy::create_service_tenant`]; [`Error::Misuse`] if
    /// the two customer keys are the same or no availability key is
    /// configured.
    pub async fn create_customer_key_tenant(
        &self,
        tenant: TenantId,
        customer_keys: [RootKeyRef; 2],
    ) -> Result<TenantRecord, Error> {
        let [first, second] = customer_keys;
        if first == second {
            return Err(Error::Misuse(
                "a customer-key tenant needs two different customer keys",
            ));
        }
        let availability = self
            .current_key(
                self.availability.as_ref(),
                "no availability key is configured",
            )
            .await?;
        let customer = |key| RootKeySlot {
            role: SlotRole::Customer,
            key,
            revoked: false,
        };
        let slots = vec![
            customer(first),
            customer(second),
            RootKeySlot {
                role: SlotRole::Availability,
                key: availability,
                revoked: false,
            },
        ];
        self.create(tenant, TenantKind::CustomerKey, slots).await
    }

    // ----- file keys ---------------------------------------------------

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

    /// Generates the file key of a new file version and wraps it under the
    /// tenant's current TIK, once the policy allowed `access` to write it
    /// ([`ReleasePolicy::decide_write`]). The caller stores the wrapped key
    /// with the file's metadata and encrypts with the key, then drops it.
    ///
    /// Audited as `file_key_wrapped`, or `write_denied`.
    ///
    /// # Errors
    /// [`Error::Denied`] if the policy refuses the write;
    /// [`Error::UnknownTenant`]; [`Error::Purged`]; [`Error::Revoked`] or
    /// [`Error::RootKey`] if the TIK cannot be unwrapped (see [`Access`]);
    /// [`Error::Audit`] (then no key is returned).
    pub async fn new_file_key(
        &self,
        access: &Access<'_>,
        context: &FileContext,
    ) -> Result<(FileKey, WrappedFileKey), Error> {
        self.check_capability(access)?;
        let entry = self.tenant_entry(context.tenant).await?;
        if let Decision::Deny(reason) =
            self.policy
                .decide_write(access, context.tenant, context.file)
        {
            let event = Event::WriteDenied {
                file: Self::file_ref(context),
                principal: Text::lossy(access.principal()),
            };
            let outcome = Outcome::Denied {
                reason: Text::lossy(&reason),
            };
            self.record(&entry, event, outcome).await?;
            return Err(Error::Denied { reason });
        }
        let version = entry.record.current_tik;
        let result = self.tik(&entry, version, access).await.and_then(|tik| {
            tik.generate_wrapped(context, &mut OsRng)
                .map_err(Error::from)
        });
        let event = Event::FileKeyWrapped {
            file: Self::file_ref(context),
            kek: Self::tik_ref(&entry, version),
        };
        match result {
            Ok(pair) => {
                self.record(&entry, event, Outcome::Success).await?;
                Ok(pair)
            }
            Err(error) => {
                self.record(&entry, event, Self::failed(&error)).await?;
                Err(error)
            }
        }
    }

    /// Releases the file key of a file version to `access`: checks the
    /// key-release policy, then unwraps under the TIK version the wrapped
    /// key names. Every release and every refusal is audited; if the record
    /// cannot be written, no key is released.
    ///
    /// # Errors
    /// [`Error::Denied`] if the policy refuses; [`Error::Purged`];
    /// [`Error::WrongTenant`] if the wrapped key is another tenant's;
    /// [`Error::Revoked`] or [`Error::RootKey`] if the TIK cannot be
    /// unwrapped; [`Error::FileKey`] if the wrapped key does not
    /// authenticate for `context`; [`Error::UnknownTenant`],
    /// [`Error::UnknownTikVersion`], [`Error::Store`], [`Error::Audit`].
    pub async fn release_file_key(
        &self,
        access: &Access<'_>,
        context: &FileContext,
        wrapped: &WrappedFileKey,
    ) -> Result<FileKey, Error> {
        self.check_capability(access)?;
        let principal = Text::lossy(access.principal());
        let entry = match self.tenant_entry(context.tenant).await {
            Ok(entry) => entry,
            Err(error) => {
                // No such tenant (or the store failed): refused, and recorded.
                let record = Record::new(
                    self.actor.clone(),
                    Event::ReleaseDenied {
                        file: Self::file_ref(context),
                        principal,
                    },
                )
                .tenant(Text::lossy(context.tenant.to_string()))
                .outcome(Self::failed(&error));
                let _ = self.audit.record(record).await?;
                return Err(error);
            }
        };
        let released = async |entry: &TenantEntry| {
            if entry.record.state == TenantState::Purged {
                return Err(Error::Purged(context.tenant));
            }
            if let Decision::Deny(reason) = self.policy.decide(access, context.tenant, context.file)
            {
                return Err(Error::Denied { reason });
            }
            if wrapped.kek_id() != entry.record.tik_id {
                return Err(Error::WrongTenant(context.tenant));
            }
            let tik = self.tik(entry, wrapped.kek_version(), access).await?;
            Ok(tik.unwrap(wrapped, context)?)
        };
        let result = released(&entry).await;
        let file = Self::file_ref(context);
        match result {
            Ok(key) => {
                let event = Event::FileKeyReleased {
                    file,
                    kek: Self::tik_ref(&entry, wrapped.kek_version()),
                    principal,
                };
                self.record(&entry, event, Outcome::Success).await?;
                Ok(key)
            }
            Err(Error::Denied { reason }) => {
                let event = Event::ReleaseDenied { file, principal };
                let outcome = Outcome::Denied {
                    reason: Text::lossy(reason.as_str()),
                };
                self.record(&entry, event, outcome).await?;
                Err(Error::Denied { reason })
            }
            Err(error) => {
                let event = Event::ReleaseDenied { file, principal };
                self.record(&entry, event, Self::failed(&error)).await?;
                Err(error)
            }
        }
    }

    /// [`KeyHierarchy::new_file_key`] for several files of one tenant at
    /// once, each under the tenant's current TIK, with their
    /// `file_key_wrapped` records committed to the audit trail together
    /// (one sync). Returns one result per context, in order.
    ///
    /// # Errors
    /// As for [`KeyHierarchy::new_file_key`], for the whole batch if the
    /// tenant's TIK cannot be used or the records cannot be written (then
    /// no key is returned).
    pub async fn new_file_keys(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        contexts: &[FileContext],
    ) -> Result<Vec<NewFileKey>, Error> {
        let (keys, records) = self
            .new_file_keys_records_pending(access, tenant, contexts)
            .await?;
        records.commit().await?;
        Ok(keys)
    }

    /// As [`KeyHierarchy::new_file_keys`], but the keys' records (made
    /// here, each with its request id) are committed to the audit trail by
    /// the caller, with [`PendingKeyRecords::commit`]: so a batch can
    /// commit them while it writes what the keys protect, rather than
    /// before. Denials and a TIK that cannot be used are recorded here, as
    /// by `new_file_keys`.
    ///
    /// The caller must commit the records, and see the commit succeed,
    /// before it publishes anything the keys protect (a file record, say);
    /// if the commit fails it must publish nothing. `atrest`'s `Files`
    /// does so for its batches.
    ///
    /// # Errors
    /// As for [`KeyHierarchy::new_file_keys`].
    pub async fn new_file_keys_records_pending(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        contexts: &[FileContext],
    ) -> Result<(Vec<NewFileKey>, PendingKeyRecords), Error> {
        {
            self.check_capability(access)?;
            let entry = self.tenant_entry(tenant).await?;
            let version = entry.record.current_tik;
            let tik = match self.tik(&entry, version, access).await {
                Ok(tik) => tik,
                Err(error) => {
                    let records = contexts
                        .iter()
                        .map(|context| {
                            let event = Event::FileKeyWrapped {
                                file: Self::file_ref(context),
                                kek: Self::tik_ref(&entry, version),
                            };
                            Record::new(self.actor.clone(), event)
                                .tenant(entry.tenant_text.clone())
                                .outcome(Self::failed(&error))
                        })
                        .collect();
                    let _ = self.audit.record_all(records).await?;
                    return Err(error);
                }
            };
            let mut records = Vec::with_capacity(contexts.len());
            let mut keys = Vec::with_capacity(contexts.len());
            for context in contexts {
                let decision = self.policy.decide_write(access, tenant, context.file);
                if let Decision::Deny(reason) = decision {
                    records.push(
                        Record::new(
                            self.actor.clone(),
                            Event::WriteDenied {
                                file: Self::file_ref(context),
                                principal: Text::lossy(access.principal()),
                            },
                        )
                        .tenant(entry.tenant_text.clone())
                        .outcome(Outcome::Denied {
                            reason: Text::lossy(&reason),
                        }),
                    );
                    keys.push(Err(Error::Denied { reason }));
                    continue;
                }
                let made = if context.tenant == tenant {
                    tik.generate_wrapped(context, &mut OsRng)
                        .map_err(Error::from)
                } else {
                    Err(Error::WrongTenant(context.tenant))
                };
                let event = Event::FileKeyWrapped {
                    file: Self::file_ref(context),
                    kek: Self::tik_ref(&entry, version),
                };
                let outcome = match &made {
                    Ok(_) => Outcome::Success,
                    Err(error) => Self::failed(error),
                };
                records.push(
                    Record::new(self.actor.clone(), event)
                        .tenant(entry.tenant_text.clone())
                        .outcome(outcome),
                );
                keys.push(made);
            }
            Ok((
                keys,
                PendingKeyRecords {
                    audit: Arc::clone(&self.audit),
                    records,
                },
            ))
        }
    }

    // ----- rotation ----------------------------------------------------

    /// Rolls the tenant's TIK: a new version, wrapped under every root key
    /// of the tenant, becomes current. New file keys are wrapped under it;
    /// existing wrapped file keys keep working under their version until
    /// [`KeyHierarchy::rewrap_file_keys`] moves them.
    ///
    /// # Errors
    /// [`Error::Purged`]; [`Error::RootKey`] if a root key cannot wrap;
    /// [`Error::Store`] (also if another roll won the race); [`Error::Audit`].
    pub async fn roll_tik(&self, tenant: TenantId) -> Result<KeyVersion, Error> {
        let entry = self.load_entry(tenant).await?;
        let record = &entry.record;
        if record.state == TenantState::Purged {
            return Err(Error::Purged(tenant));
        }
        let previous = record.current_tik;
        let next = self
            .store
            .tik_versions(tenant)
            .await?
            .into_iter()
            .max()
            .unwrap_or(previous)
            .max(previous)
            .next()
            .ok_or(Error::Misuse("the TIK version counter is exhausted"))?;
        let seed = KeyMaterial::generate()?;
        let wraps = record
            .slots
            .iter()
            .zip(0u8..)
            .map(|(slot, index)| self.wrap_tik(record, next, index, &slot.key, &seed))
            .collect::<Vec<_>>();
        let wraps = join_all(wraps).await?;
        let rolled = TenantRecord {
            current_tik: next,
            ..record.clone()
        };
        let tag = Self::retag(&entry, &rolled)?;
        self.store
            .add_tik_version(tenant, previous, &wraps, &tag)
            .await?;
        self.flush_tenant(tenant);
        self.record(
            &entry,
            Event::TikRolled {
                tik: Self::tik_ref(&entry, next),
                previous_version: Some(u32::from(previous)),
            },
            Outcome::Success,
        )
        .await?;
        Ok(next)
    }

    /// Re-wraps every wrapped file key of `tenant` that is under an older
    /// TIK version so it is under the current one, `batch_size` keys per
    /// transaction of `index`, calling `progress` after each batch.
    ///
    /// Resumable: each batch commits on its own, and a re-wrap that stopped
    /// (crash, error) picks up what is still under older versions when run
    /// again. Keys changed concurrently are left alone by
    /// [`WrappedKeyIndex::replace`]. Each batch is audited as
    /// `file_keys_rewrapped`. Runs as a system operation.
    ///
    /// # Errors
    /// Those of [`KeyHierarchy::release_file_key`] for any key that cannot
    /// be unwrapped (the batch is then not written); [`Error::Store`];
    /// [`Error::Audit`].
    pub async fn rewrap_file_keys(
        &self,
        tenant: TenantId,
        index: &dyn WrappedKeyIndex,
        batch_size: usize,
        progress: &mut dyn FnMut(RewrapProgress),
    ) -> Result<RewrapReport, Error> {
        let capability = SystemCapability::issued(&self.issuer, "rewrap");
        let access = Access::System(&capability);
        self.flush_tenant(tenant);
        let entry = self.tenant_entry(tenant).await?;
        let current = entry.record.current_tik;
        let total = index.count_older_than(tenant, current).await?;
        let current_tik = self.tik(&entry, current, &access).await?;
        let mut report = RewrapReport {
            tik_version: current,
            rewrapped: 0,
            batches: 0,
        };
        progress(RewrapProgress { done: 0, total });
        loop {
            let batch = index.older_than(tenant, current, batch_size.max(1)).await?;
            if batch.is_empty() {
                return Ok(report);
            }
            let mut rewrapped = Vec::with_capacity(batch.len());
            for (context, old) in batch {
                if context.tenant != tenant || old.kek_id() != entry.record.tik_id {
                    return Err(Error::WrongTenant(tenant));
                }
                let key = self
                    .tik(&entry, old.kek_version(), &access)
                    .await?
                    .unwrap(&old, &context)?;
                let new = current_tik.wrap(&key, &context, &mut OsRng)?;
                rewrapped.push(Rewrapped { context, old, new });
            }
            let replaced = index.replace(&rewrapped).await?;
            if replaced == 0 {
                return Err(Error::Conflict(
                    "re-wrap made no progress: the index replaced no key of a batch",
                ));
            }
            report.rewrapped += replaced;
            report.batches += 1;
            self.record(
                &entry,
                Event::FileKeysRewrapped {
                    tik: Self::tik_ref(&entry, current),
                    count: replaced,
                },
                Outcome::Success,
            )
            .await?;
            progress(RewrapProgress {
                done: report.rewrapped,
                total: total.max(report.rewrapped),
            });
        }
    }

    /// Retires (destroys) an old TIK version once no wrapped file key in
    /// `index` refers to it and it is not the current version.
    ///
    /// The index is asked to claim the version first
    /// ([`WrappedKeyIndex::claim_retirement`]), atomically with the keys it
    /// stores: a file key that another process, whose cached metadata still
    /// names this version as current, wraps under it afterwards is refused
    /// by the index rather than left under a destroyed version.
    ///
    /// # Errors
    /// [`Error::TikInUse`]; [`Error::UnknownTikVersion`];
    /// [`Error::Store`]; [`Error::Audit`].
    pub async fn retire_tik(
        &self,
        tenant: TenantId,
        version: KeyVersion,
        index: &dyn WrappedKeyIndex,
    ) -> Result<(), Error> {
        let record = self.tenant(tenant).await?;
        if !self.store.tik_versions(tenant).await?.contains(&version) {
            return Err(Error::UnknownTikVersion { tenant, version });
        }
        let is_current = record.current_tik == version;
        let references = if is_current {
            0
        } else {
            index.claim_retirement(tenant, version).await?
        };
        if references > 0 || is_current {
            return Err(Error::TikInUse {
                tenant,
                version,
                references,
                is_current,
            });
        }
        self.store.retire_tik_version(tenant, version).await?;
        self.flush_tenant(tenant);
        let entry = Self::entry_from(record, None);
        self.record(
            &entry,
            Event::TikRetired {
                tik: Self::tik_ref(&entry, version),
            },
            Outcome::Success,
        )
        .await
    }

    /// Rolls a root key: every TIK version wrapped under `from` (in any
    /// tenant) is re-wrapped under `to`, one transaction per tenant. No file
    /// key and no data is touched. For the service's keys, make `to` with
    /// `ServiceKeys::roll_key` first; for a customer key, the customer makes
    /// the new key in their HSM.
    ///
    /// The TIK material is recovered through `from` (or, failing that,
    /// under the system-operation rules). Each tenant is audited as
    /// `root_key_rolled`.
    ///
    /// # Errors
    /// [`Error::RootKey`] if the TIK cannot be recovered or `to` cannot
    /// wrap; [`Error::Store`]; [`Error::Audit`]. Tenants already done stay
    /// done; running it again finishes the rest.
    pub async fn roll_root_key(
        &self,
        from: &RootKeyRef,
        to: &RootKeyRef,
    ) -> Result<RootRollReport, Error> {
        let mut report = RootRollReport::default();
        for tenant in self.store.tenants().await? {
            let mut entry = self.load_entry(tenant).await?;
            let record = entry.record.clone();
            if record.state == TenantState::Purged {
                continue;
            }
            let slots: Vec<u8> = record
                .slots
                .iter()
                .zip(0u8..)
                .filter(|(slot, _)| slot.key == *from)
                .map(|(_, index)| index)
                .collect();
            if slots.is_empty() {
                continue;
            }
            let versions = self.store.tik_versions(tenant).await?;
            for slot in slots {
                let mut wraps = Vec::with_capacity(versions.len());
                for version in &versions {
                    let seed = self.tik_material(&entry, *version, slot).await?;
                    wraps.push(
                        self.wrap_tik(&entry.record, *version, slot, to, &seed)
                            .await?,
                    );
                }
                let mut next = entry.record.clone();
                if let Some(moved) = next.slots.get_mut(usize::from(slot)) {
                    moved.key = to.clone();
                }
                let tag = Self::retag(&entry, &next)?;
                self.store
                    .replace_root_key(tenant, slot, to, &wraps, &tag)
                    .await?;
                next.tag = Some(tag.next);
                entry.record = next;
            }
            self.flush_tenant(tenant);
            report.tenants += 1;
            report.tik_versions += versions.len() as u64;
            self.record(
                &entry,
                Event::RootKeyRolled {
                    root_key: Self::root_ref(to),
                    tik_versions: versions.len() as u64,
                },
                Outcome::Success,
            )
            .await?;
        }
        Ok(report)
    }

    /// A TIK version's seed (what the root keys wrap), through slot `slot`
    /// first, else by the system-operation rules.
    async fn tik_material(
        &self,
        entry: &TenantEntry,
        version: KeyVersion,
        slot: u8,
    ) -> Result<KeyMaterial, Error> {
        let wraps = self.store.tik_wraps(entry.record.tenant, version).await?;
        if let Some(wrap) = wraps.iter().find(|wrap| wrap.slot == slot)
            && let Ok(material) = self.unwrap_slot(&entry.record, wrap).await
        {
            return Ok(material);
        }
        let capability = SystemCapability::issued(&self.issuer, "roll root key");
        let access = Access::System(&capability);
        Ok(self.unwrap_tik(entry, version, &access).await?.0)
    }

    // ----- revocation and purge ----------------------------------------

    /// Records that the customer revoked the service's use of one of the
    /// tenant's customer keys, and drops the tenant's cached TIKs so the
    /// revocation applies at once in this process. User requests then use
    /// only the tenant's other customer key; with both revoked they fail
    /// with [`Error::Revoked`]. Audited as `customer_key_revoked`.
    ///
    /// # Errors
    /// [`Error::Misuse`] if `key` is not a customer key of the tenant;
    /// [`Error::Store`]; [`Error::Audit`].
    pub async fn revoke_customer_key(
        &self,
        tenant: TenantId,
        key: &RootKeyRef,
    ) -> Result<(), Error> {
        let entry = self.load_entry(tenant).await?;
        let record = &entry.record;
        let slot = record
            .slots
            .iter()
            .zip(0u8..)
            .find(|(slot, _)| slot.role == SlotRole::Customer && slot.key == *key)
            .map(|(_, index)| index)
            .ok_or(Error::Misuse(
                "that key is not a customer key of this tenant",
            ))?;
        let mut next = record.clone();
        if let Some(revoked) = next.slots.get_mut(usize::from(slot)) {
            revoked.revoked = true;
        }
        let tag = Self::retag(&entry, &next)?;
        self.store.set_revoked(tenant, slot, true, &tag).await?;
        self.flush_tenant(tenant);
        self.record(
            &entry,
            Event::CustomerKeyRevoked {
                root_key: Self::root_ref(key),
            },
            Outcome::Success,
        )
        .await
    }

    /// Purges a tenant (crypto-shredding): destroys every TIK version and
    /// every wrap of it, the availability key's included, and drops the
    /// tenant from the cache. From then on every file key of the tenant is
    /// unrecoverable, and every attempt fails with [`Error::Purged`] and is
    /// audited. Final: there is no undo. Audited as `tenant_purged`.
    ///
    /// Other processes sharing the store stop using their cached TIKs of
    /// the tenant within the cache TTL.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`Error::Store`]; [`Error::Audit`].
    pub async fn purge(&self, tenant: TenantId) -> Result<u64, Error> {
        // Not authenticated: a purge only destroys, and must work on a
        // tenant whose record was tampered with too.
        let record = self
            .store
            .tenant(tenant)
            .await?
            .ok_or(Error::UnknownTenant(tenant))?;
        // The tenant key first: once it is gone the purge is final, even if
        // the database change below does not happen or is undone by
        // restoring a backup.
        let _ = self.tenant_keys.destroy(tenant).await?;
        let destroyed = self.store.purge_tenant(tenant).await?;
        self.flush_tenant(tenant);
        let entry = Self::entry_from(record, None);
        self.record(
            &entry,
            Event::TenantPurged {
                tik_versions: destroyed,
            },
            Outcome::Success,
        )
        .await?;
        Ok(destroyed)
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
    wrapped: &WrappedFileKey,
    index: &dyn WrappedKeyIndex,
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

/// One result of [`KeyHierarchy::new_file_keys`]: a new file key and its
/// wrap, or why it could not be made.
pub type NewFileKey = Result<(FileKey, WrappedFileKey), Error>;

/// The `file_key_wrapped` records of keys made by
/// [`KeyHierarchy::new_file_keys_records_pending`], not yet in the audit
/// trail. Dropping them uncommitted loses them: commit them before
/// publishing anything the keys protect.
#[must_use = "the keys' records must be committed before anything the keys protect is published"]
pub struct PendingKeyRecords {
    audit: Arc<dyn Audit>,
    records: Vec<Record>,
}

impl PendingKeyRecords {
    /// Commits the records to the audit trail (one sync).
    ///
    /// # Errors
    /// [`Error::Audit`] if they could not be committed.
    pub async fn commit(self) -> Result<(), Error> {
        let _ = self.audit.record_all(self.records).await?;
        Ok(())
    }
}

impl core::fmt::Debug for PendingKeyRecords {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PendingKeyRecords")
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}
