//! Rotation, which never re-encrypts data: a TIK rolled to a new version,
//! file keys re-wrapped under it in resumable batches, old versions
//! retired once nothing refers to them, and a root key rolled by
//! re-wrapping the TIK versions under it.

use atrest_audit::{Event, Outcome};
use atrest_filekey::{KeyVersion, OsRng, TenantId};

use super::{KeyHierarchy, join_all};
use crate::policy::SystemCapability;
use crate::store::{Rewrapped, TenantRecord, TenantState};
use crate::tenant_key::version_key_id;
use crate::{Access, Error, KeyMaterial, RootKeyRef, WrappedKeyIndex};

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

impl KeyHierarchy {
    /// Creates TIK version `version`'s own key in the tenant key store;
    /// one left by an earlier attempt that stopped is used as it is.
    pub(super) async fn create_version_key(
        &self,
        tenant: TenantId,
        tik_id: atrest_filekey::KeyId,
        version: KeyVersion,
    ) -> Result<(), Error> {
        match self
            .tenant_keys
            .create(tenant, version_key_id(tik_id, version))
            .await
        {
            Ok(()) | Err(Error::TenantExists(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

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
        // The version's own key before the version: a roll that stops in
        // between leaves a key no version uses (a purge destroys it).
        self.create_version_key(tenant, record.tik_id, next).await?;
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
        let tag = self.retag(&entry, &rolled).await?;
        let written = self
            .store
            .add_tik_version(tenant, previous, &wraps, &tag)
            .await;
        self.retagged(&rolled, &tag, written).await?;
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
        progress: &mut (dyn FnMut(RewrapProgress) + Send),
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
    /// `index` refers to it and it is not the current version: its version
    /// key first (see [`crate::version_key_id`]), then its wraps.
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
        // The version's own key first: once it is gone, the file keys ever
        // wrapped under this version are gone too, whatever a database
        // backup keeps of their wraps.
        let _ = self
            .tenant_keys
            .destroy_key(tenant, version_key_id(record.tik_id, version))
            .await?;
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
                let tag = self.retag(&entry, &next).await?;
                let written = self
                    .store
                    .replace_root_key(tenant, slot, to, &wraps, &tag)
                    .await;
                self.retagged(&next, &tag, written).await?;
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
}
