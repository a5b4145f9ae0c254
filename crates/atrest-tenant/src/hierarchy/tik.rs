//! A TIK version under its tenant's root keys: its seed wrapped under each
//! of them, unwrapped by the model's rules (customer keys first; the
//! availability key only when they are unavailable, or for a system
//! operation, and audited), and turned with the tenant key into the KEK
//! that file keys are wrapped under, cached for the TTL.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atrest_audit::{Event, Outcome, Text};
use atrest_filekey::{Kek, KeyVersion};

use super::binding::{tik_aad, tik_derivation_input};
use super::{Cached, KeyHierarchy, TenantEntry};
use crate::policy::SystemCapability;
use crate::store::{
    FallbackPolicy, RootKeySlot, SlotRole, TenantKind, TenantRecord, TenantState, TikWrap,
};
use crate::tenant_key::version_key_id;
use crate::{Access, Error, KeyMaterial, ProviderError, RootKeyProvider, RootKeyRef};

/// How long a TIK unwrapped through the availability key for a user
/// request (the customer keys unavailable) stays cached, at most: the
/// customer keys are asked again after it.
pub const FALLBACK_CACHE_TTL: Duration = Duration::from_secs(30);

/// How long an unwrapped TIK may be cached for user requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Caching {
    /// For the cache lifetime: unwrapped by a key the request may use.
    Full,
    /// For this long at most: unwrapped through the availability key
    /// during an outage the tenant's policy allows users through.
    For(Duration),
    /// Not at all: unwrapped for a system operation only.
    Not,
}

impl KeyHierarchy {
    fn provider(&self, key: &RootKeyRef) -> Result<&Arc<dyn RootKeyProvider>, ProviderError> {
        self.providers
            .get(key.provider())
            .ok_or_else(|| ProviderError::Misconfigured {
                provider: key.provider().to_owned(),
                detail: "no provider of that name is registered".into(),
            })
    }

    pub(super) async fn current_key(
        &self,
        configured: Option<&(String, String)>,
        what: &'static str,
    ) -> Result<RootKeyRef, Error> {
        let (provider, label) = configured.ok_or(Error::Misuse(what))?;
        let probe = RootKeyRef::new(provider.clone(), label.clone(), 1)?;
        let version = self.provider(&probe)?.current_version(label).await?;
        Ok(probe.with_version(version))
    }

    pub(super) async fn wrap_tik(
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
    /// returns it and how long it may be cached for user requests.
    async fn unwrap_tik(
        &self,
        entry: &TenantEntry,
        version: KeyVersion,
        access: &Access<'_>,
    ) -> Result<(KeyMaterial, Caching), Error> {
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
            return Ok((self.unwrap_slot(record, wrap).await?, Caching::Full));
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
                Ok(material) => return Ok((material, Caching::Full)),
                Err(error) => errors.push(error),
            }
        }
        let all_unavailable = errors.iter().all(ProviderError::is_unavailable);
        let operation = match access {
            Access::User { principal } => format!("user request by {principal}"),
            Access::System(capability) => format!("system operation {}", capability.operation()),
        };
        let now = SystemTime::now();
        if all_unavailable && !access.is_system() && !record.fallback.allows_users_at(now) {
            // An outage, but the tenant's policy keeps users off the
            // availability key now: refused, audited, and told as the
            // outage it is.
            let reason = match &record.fallback {
                FallbackPolicy::Declared(_) => {
                    "the tenant's fallback policy is `declared` and no outage window is open"
                }
                _ => "the tenant's fallback policy is `never`",
            };
            self.record(
                entry,
                Event::AvailabilityKeyFallback {
                    root_keys: customer_keys,
                    operation: Text::lossy(operation),
                },
                Outcome::Denied {
                    reason: Text::lossy(reason),
                },
            )
            .await?;
            let outage = errors.into_iter().next();
            return Err(outage.map_or(Error::Revoked(record.tenant), Error::RootKey));
        }
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
        // Cache only what user requests may use too, and that briefly: the
        // customer keys are asked again soon, and never past the end of a
        // declared window.
        let caching = if all_unavailable {
            let until = match &record.fallback {
                FallbackPolicy::Declared(Some(window)) => UNIX_EPOCH
                    .checked_add(Duration::from_secs(window.end))
                    .and_then(|end| end.duration_since(now).ok()),
                _ => None,
            };
            Caching::For(until.map_or(FALLBACK_CACHE_TTL, |left| left.min(FALLBACK_CACHE_TTL)))
        } else {
            Caching::Not
        };
        Ok((result?, caching))
    }

    /// The KEK of a TIK version, from the cache or unwrapped.
    pub(super) async fn tik(
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
            let _ = self.tik_lookups.hits.fetch_add(1, Relaxed);
            return Ok(Arc::clone(&cached.value));
        }
        let _ = self.tik_lookups.misses.fetch_add(1, Relaxed);
        let (seed, cacheable) = self.unwrap_tik(entry, version, access).await?;
        // Through the version's own key, if it has one (see
        // `version_key_id`). A version without (made before version keys,
        // or erased since) keeps the first derivation: for an erased one
        // that is not its TIK, and no file key opens under it.
        let material = self
            .tenant_keys
            .derive_version(
                tenant,
                entry.record.tik_id,
                version_key_id(entry.record.tik_id, version),
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
        let lifetime = match cacheable {
            Caching::Full => self.ttl,
            Caching::For(lifetime) => lifetime.min(self.ttl),
            Caching::Not => Duration::ZERO,
        };
        if !lifetime.is_zero() {
            // Only beside the entry it was unwrapped by: an entry flushed
            // meanwhile (another process changed the tenant) may be stale.
            let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
            let current = tenants
                .get(&tenant)
                .is_some_and(|cached| std::ptr::eq(Arc::as_ptr(&cached.value), entry));
            let mut tiks = self.tiks.write().unwrap_or_else(PoisonError::into_inner);
            tiks.retain(|_, cached| cached.expires > now);
            if !current {
                return Ok(kek);
            }
            let _ = tiks.insert(
                (tenant, version),
                Cached {
                    value: Arc::clone(&kek),
                    expires: now + lifetime,
                },
            );
        }
        Ok(kek)
    }

    /// A TIK version's seed (what the root keys wrap), through slot `slot`
    /// first, else by the system-operation rules.
    pub(super) async fn tik_material(
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
}
