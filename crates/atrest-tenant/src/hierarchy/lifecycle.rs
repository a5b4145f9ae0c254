//! A tenant's life: created with its tenant key, first TIK version and
//! root-key slots; customer keys revoked; purged for good.

use std::sync::Arc;

use atrest_audit::{Event, Outcome, Text};
use atrest_filekey::{KeyId, KeyVersion, OsRng, TenantId};

use super::{KeyHierarchy, join_all};
use crate::store::{FallbackPolicy, RootKeySlot, SlotRole, TenantKind, TenantRecord, TenantState};
use crate::tenant_key::{MetadataKey, record_keys_marker_id};
use crate::{Error, KeyMaterial, RootKeyRef};

impl KeyHierarchy {
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
            fallback: FallbackPolicy::Automatic,
            tag: None,
        };
        // The tenant key first: a creation that stops after this leaves an
        // unused key of its own (a fresh TIK id), never a tenant without one.
        self.tenant_keys.create(tenant, record.tik_id).await?;
        self.create_version_key(tenant, record.tik_id, KeyVersion::FIRST)
            .await?;
        // Its records are tagged under record keys from the start.
        self.tenant_keys
            .create(tenant, record_keys_marker_id(record.tik_id))
            .await?;
        let metadata =
            Arc::new(MetadataKey::derive(&*self.tenant_keys, tenant, record.tik_id).await?);
        record.tag = Some(self.keyed_tag(&record, None).await?);
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
        let tag = self.retag(&entry, &next).await?;
        let written = self.store.set_revoked(tenant, slot, true, &tag).await;
        self.retagged(&next, &tag, written).await?;
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

    /// Sets a customer-key tenant's fallback policy: when user requests may
    /// be served through the availability key while its customer keys are
    /// unavailable ([`FallbackPolicy`]); under `declared`, with the outage
    /// window the operator declares (or none, to end one). The policy is
    /// part of the tenant's authenticated record; other processes follow
    /// within their change-poll interval. Audited as
    /// `fallback_policy_set`.
    ///
    /// # Errors
    /// [`Error::Misuse`] for a service-managed tenant or a window that is
    /// not valid ([`crate::OutageWindow::check`]); [`Error::Conflict`] if
    /// the record changed meanwhile; as for [`KeyHierarchy::tenant`];
    /// [`Error::Audit`].
    pub async fn set_fallback_policy(
        &self,
        tenant: TenantId,
        policy: FallbackPolicy,
    ) -> Result<(), Error> {
        if let FallbackPolicy::Declared(Some(window)) = &policy {
            window.check()?;
        }
        let entry = self.load_entry(tenant).await?;
        if entry.record.kind != TenantKind::CustomerKey {
            return Err(Error::Misuse(
                "a fallback policy is for customer-key tenants (others have no availability key)",
            ));
        }
        let next = TenantRecord {
            fallback: policy.clone(),
            ..entry.record.clone()
        };
        let tag = self.retag(&entry, &next).await?;
        let written = self.store.set_fallback(tenant, &policy, &tag).await;
        self.retagged(&next, &tag, written).await?;
        self.flush_tenant(tenant);
        let window = match &policy {
            FallbackPolicy::Declared(Some(window)) => Some(window),
            _ => None,
        };
        self.record(
            &entry,
            Event::FallbackPolicySet {
                policy: Text::lossy(policy.name()),
                window: window.map(|w| [w.start, w.end]),
                reason: window.map(|w| Text::lossy(&w.reason)),
            },
            Outcome::Success,
        )
        .await
    }

    /// Accepts `tenant`'s record as the database holds it now, although it
    /// is not the newest the tenant had. After a backup of the key metadata
    /// is restored, the record of every tenant that changed since (a TIK
    /// roll, an erasure, a revocation mark, a fallback policy) is an older
    /// copy whose record key is destroyed, refused as tampered with, as a
    /// database writer's rollback is; the operator who restored the backup
    /// accepts it with this: it is tagged anew under a new record key and
    /// obeyed from then on. Audited as `tenant_record_accepted`.
    ///
    /// What the record's TIK wraps bind (its kind, slots and keys) is still
    /// checked at every unwrap; its revocation marks and fallback policy
    /// are taken as they are: look at what is returned. A record that
    /// authenticates is returned unchanged.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`Error::Purged`];
    /// [`Error::TenantKeyMissing`] (purged since the backup: nothing to
    /// accept); [`Error::Tampered`] for an active record without a tag;
    /// [`Error::Conflict`] if the record changed meanwhile;
    /// [`Error::Store`]; [`Error::Audit`].
    pub async fn accept_restored_record(&self, tenant: TenantId) -> Result<TenantRecord, Error> {
        match self.load_entry(tenant).await {
            Ok(entry) => return Ok(entry.record),
            Err(Error::Tampered { .. }) => {}
            Err(error) => return Err(error),
        }
        let record = self
            .store
            .tenant(tenant)
            .await?
            .ok_or(Error::UnknownTenant(tenant))?;
        if record.state == TenantState::Purged {
            return Err(Error::Purged(tenant));
        }
        // The tenant key must still be there: a tenant purged since the
        // backup stays purged.
        let _ = MetadataKey::derive(&*self.tenant_keys, tenant, record.tik_id).await?;
        let previous = record.tag.ok_or(Error::Tampered {
            tenant,
            what: "tenant record (active, without a tag)",
        })?;
        let tag = crate::store::TagUpdate {
            previous,
            next: self.keyed_tag(&record, None).await?,
        };
        // The store's change of the fallback policy, to the policy the
        // record has: the record as it is, under its new tag.
        let written = self
            .store
            .set_fallback(tenant, &record.fallback, &tag)
            .await;
        self.retagged(&record, &tag, written).await?;
        self.flush_tenant(tenant);
        let accepted = TenantRecord {
            tag: Some(tag.next),
            ..record
        };
        let entry = Self::entry_from(accepted.clone(), None);
        self.record(&entry, Event::TenantRecordAccepted {}, Outcome::Success)
            .await?;
        Ok(accepted)
    }

    /// Whether the tenant key store holds no key of `tenant` at all (its
    /// tenant key and every version key gone, as after a purge): what no
    /// edit of a database can fake, unlike the record's state.
    ///
    /// # Errors
    /// [`Error::KeyFile`] if the store cannot be read.
    pub async fn keys_gone(&self, tenant: TenantId) -> Result<bool, Error> {
        Ok(!self.tenant_keys.holds_keys_of(tenant).await?)
    }

    /// Whether `tenant` is purged for good: its record says so and the
    /// tenant key store holds no key of it (which an edit of the database
    /// cannot fake), so that what only a purged tenant may lose (its
    /// records and blobs, see `atrest gc`) is never lost to an edited row.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::KeyFile`].
    pub async fn purged_for_good(&self, tenant: TenantId) -> Result<bool, Error> {
        let marked = self
            .store
            .tenant(tenant)
            .await?
            .is_some_and(|record| record.state == TenantState::Purged);
        Ok(marked && self.keys_gone(tenant).await?)
    }

    /// Purges a tenant (crypto-shredding): destroys every TIK version and
    /// every wrap of it, the availability key's included, and drops the
    /// tenant from the cache. From then on every file key of the tenant is
    /// unrecoverable, and every attempt fails with [`Error::Purged`] and is
    /// audited. Final: there is no undo. Audited as `tenant_purged`.
    ///
    /// Other processes sharing the store stop using their cached TIKs of
    /// the tenant within their change-poll interval
    /// ([`crate::Builder::change_poll`]).
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
        // restoring a backup. Alone first, then the versions' keys with
        // whatever else the store holds of the tenant, so that a purge cut
        // short never leaves a tenant whose key is there and some of whose
        // versions' keys are not.
        let _ = self.tenant_keys.destroy_key(tenant, record.tik_id).await?;
        let _ = self.tenant_keys.destroy(tenant).await?;
        let destroyed = self.store.purge_tenant(tenant).await?;
        // Once more, now that the record says purged: a TIK roll of another
        // process that read the record before may have made its version's
        // key meanwhile. A purged record whose tenant's keys are still
        // held is taken for an edit of the database (see `load_entry`).
        let _ = self.tenant_keys.destroy(tenant).await?;
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
