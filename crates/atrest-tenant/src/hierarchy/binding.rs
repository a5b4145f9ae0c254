//! What binds a tenant's key metadata to the tenant, so that a writer of
//! the database cannot edit it into a release: the associated data of each
//! TIK wrap (the tenant and its kind, the TIK and its version, the root-key
//! slot), the input a TIK version's key is derived from, and the tag over
//! the tenant's record under a record key of its own ([`TenantTag`]),
//! checked whenever the record is read from the store.

use std::sync::{Arc, PoisonError};

use atrest_audit::Event;
use atrest_filekey::{KeyId, KeyVersion, OsRng, TenantId};
use subtle::ConstantTimeEq as _;

use super::{KeyHierarchy, TenantEntry};
use crate::store::{
    FallbackPolicy, RootKeySlot, SlotRole, TagUpdate, TenantKind, TenantRecord, TenantState,
};
use crate::tenant_key::{MetadataKey, RecordTag, TenantTag, record_keys_marker_id};
use crate::{Error, KeyMaterial, TikBinding};

const TIK_AAD_LABEL: &[u8] = b"atrest/v2 tik";
const TIK_DERIVATION_LABEL: &[u8] = b"atrest/v1 tik";
/// The label of the tenant records' tags of before record keys, under the
/// tenant's metadata key ([`TenantTag::Legacy`]).
const TENANT_RECORD_LABEL: &[u8] = b"atrest/v1 tenant record";
/// The label of tenant records' MACs under their record keys.
const KEYED_RECORD_LABEL: &[u8] = b"atrest/v2 tenant record";
/// How many finished replacements a hierarchy remembers before it starts
/// over (forgetting one only costs a key store call at the next load).
const MAX_REPLACED_KEPT: usize = 65_536;
/// What the marker key derives when asked whether it exists.
const MARKER_PROBE: &[u8] = b"atrest/v1 record keys marker probe";

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
    // The fallback policy, after the slots (whose count comes first, so
    // the end of the slots is known). `automatic` adds nothing: records
    // tagged before policies existed keep their tags, and any other
    // policy changes the message, so none can be edited into `automatic`.
    match &record.fallback {
        FallbackPolicy::Automatic => {}
        FallbackPolicy::Never => out.extend_from_slice(&[FALLBACK_MARK, 1]),
        FallbackPolicy::Declared(None) => out.extend_from_slice(&[FALLBACK_MARK, 2]),
        FallbackPolicy::Declared(Some(window)) => {
            out.extend_from_slice(&[FALLBACK_MARK, 3]);
            out.extend_from_slice(&window.start.to_be_bytes());
            out.extend_from_slice(&window.end.to_be_bytes());
            let reason = window.reason.as_bytes();
            out.extend_from_slice(
                &u32::try_from(reason.len())
                    .unwrap_or(u32::MAX)
                    .to_be_bytes(),
            );
            out.extend_from_slice(reason);
        }
    }
    out
}

/// Begins the fallback policy in a record's tagged message.
const FALLBACK_MARK: u8 = 0xf0;

/// What a record key's MAC covers: the record, its key's id and that of
/// the record key it replaces.
fn keyed_message(record: &TenantRecord, key: KeyId, previous: Option<KeyId>) -> Vec<u8> {
    let message = record_message(record);
    let mut out = Vec::with_capacity(KEYED_RECORD_LABEL.len() + 2 * 18 + 1 + message.len());
    out.extend_from_slice(KEYED_RECORD_LABEL);
    out.extend_from_slice(&key.encode());
    match previous {
        Some(previous) => {
            out.push(1);
            out.extend_from_slice(&previous.encode());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&message);
    out
}

/// What a tenant record's tag says of it.
enum Verdict {
    /// Authentic.
    Authentic,
    /// Authentic once, but its record key is destroyed (or, for a record
    /// tagged before record keys, the tenant has moved to them): a newer
    /// record replaced it.
    Superseded,
    /// Not authentic.
    Forged,
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
pub(super) fn tik_derivation_input(
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

/// The associated data binding a TIK wrap to its tenant and the tenant's
/// kind, the TIK and its version, and the root-key slot it sits in (index,
/// role, key): a wrap moved to another slot, a slot relabelled (a customer
/// key made the availability key, say), or a tenant's kind changed in the
/// database no longer unwraps.
pub(super) fn tik_aad(
    record: &TenantRecord,
    version: KeyVersion,
    slot: u8,
    root: &RootKeySlot,
) -> TikBinding {
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

impl KeyHierarchy {
    /// A tenant's record, fresh from the store, authenticated: an active
    /// tenant's record must carry the tag its record key gives it
    /// ([`TenantTag`]), and that key must still exist. A record that fails
    /// is refused ([`Error::Tampered`]) and the refusal audited, as is an
    /// active record whose tenant key is gone, an older copy of the record
    /// (its record key destroyed when a newer one replaced it), and a record
    /// that says purged while the tenant key store still holds the tenant's
    /// keys (a purge destroys them before it marks the record).
    pub(super) async fn load_entry(&self, tenant: TenantId) -> Result<TenantEntry, Error> {
        let read = || async {
            self.store
                .tenant(tenant)
                .await?
                .ok_or(Error::UnknownTenant(tenant))
        };
        let mut record = read().await?;
        let mut read_again = true;
        loop {
            if record.state == TenantState::Purged {
                // A purged record only refuses, and has no tag to check; the
                // key store, which an edit of the database cannot change,
                // says whether it is true.
                if self.keys_gone(tenant).await? {
                    return Ok(Self::entry_from(record, None));
                }
                return Err(self
                    .rejected(record, "tenant record (purged, with its keys still held)")
                    .await);
            }
            let metadata =
                match MetadataKey::derive(&*self.tenant_keys, tenant, record.tik_id).await {
                    Ok(key) => key,
                    Err(error @ Error::TenantKeyMissing(_)) => {
                        let entry = Self::entry_from(record, None);
                        self.record(&entry, Event::MetadataRejected {}, Self::failed(&error))
                            .await?;
                        return Err(error);
                    }
                    Err(error) => return Err(error),
                };
            let what = match self.verdict(&record, &metadata).await? {
                Verdict::Authentic => {
                    self.finish_replacing(&record).await;
                    return Ok(Self::entry_from(record, Some(Arc::new(metadata))));
                }
                // Read just before a change replaced it, perhaps: the
                // record as it is now, once.
                Verdict::Superseded if read_again => {
                    read_again = false;
                    record = read().await?;
                    continue;
                }
                Verdict::Superseded => "tenant record (an older copy: a newer one replaced it)",
                Verdict::Forged => "tenant record",
            };
            return Err(self.rejected(record, what).await);
        }
    }

    /// Audits the refusal of `record` as tampered with (`what`), and
    /// returns the error (or the audit's, if it cannot be recorded).
    async fn rejected(&self, record: TenantRecord, what: &'static str) -> Error {
        let error = Error::Tampered {
            tenant: record.tenant,
            what,
        };
        let entry = Self::entry_from(record, None);
        match self
            .record(&entry, Event::MetadataRejected {}, Self::failed(&error))
            .await
        {
            Ok(()) => error,
            Err(audit) => audit,
        }
    }

    /// Whether `record`'s tag is authentic, and under a key that still
    /// stands.
    async fn verdict(
        &self,
        record: &TenantRecord,
        metadata: &MetadataKey,
    ) -> Result<Verdict, Error> {
        match record.tag {
            None => Ok(Verdict::Forged),
            Some(TenantTag::Legacy(tag)) => {
                if !metadata.verify(TENANT_RECORD_LABEL, &record_message(record), &tag) {
                    return Ok(Verdict::Forged);
                }
                // Once the tenant's records are tagged under record keys,
                // one tagged the earlier way is an older copy.
                Ok(if self.marker_exists(record).await? {
                    Verdict::Superseded
                } else {
                    Verdict::Authentic
                })
            }
            Some(TenantTag::Keyed { key, previous, mac }) => {
                let message = keyed_message(record, key, previous);
                match self.tenant_keys.derive(record.tenant, key, &message).await {
                    Ok(expected) => Ok(
                        if bool::from(expected.expose_secret().ct_eq(mac.as_bytes())) {
                            Verdict::Authentic
                        } else {
                            Verdict::Forged
                        },
                    ),
                    Err(Error::TenantKeyMissing(_)) => Ok(Verdict::Superseded),
                    Err(error) => Err(error),
                }
            }
        }
    }

    /// Whether the tenant of `record` has its marker key (its records are
    /// tagged under record keys).
    async fn marker_exists(&self, record: &TenantRecord) -> Result<bool, Error> {
        let marker = record_keys_marker_id(record.tik_id);
        match self
            .tenant_keys
            .derive(record.tenant, marker, MARKER_PROBE)
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::TenantKeyMissing(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Makes `record`'s tenant's marker key, if it has none.
    async fn make_marker(&self, record: &TenantRecord) -> Result<(), Error> {
        if self.marker_exists(record).await? {
            return Ok(());
        }
        let marker = record_keys_marker_id(record.tik_id);
        match self.tenant_keys.create(record.tenant, marker).await {
            Ok(()) | Err(Error::TenantExists(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Finishes the replacement of the record that `record` (authentic,
    /// written, tagged under a record key) replaced: destroys that record's
    /// key, or, if it had none (a record tagged before record keys; or
    /// none at all, for a new tenant, whose marker exists already), makes
    /// the marker after which no record tagged the earlier way is believed.
    /// Done by the change that wrote `record`, and again by whoever reads
    /// it, should that change have stopped short; so a failure here is left
    /// for the next reader, not reported (the change itself is made).
    async fn finish_replacing(&self, record: &TenantRecord) {
        let Some(TenantTag::Keyed { key, previous, .. }) = record.tag else {
            return;
        };
        let replaced = || self.replaced.lock().unwrap_or_else(PoisonError::into_inner);
        if replaced().contains(&key) {
            return;
        }
        let finished = match previous {
            Some(previous) => self
                .tenant_keys
                .destroy_key(record.tenant, previous)
                .await
                .map(|_| ()),
            None => self.make_marker(record).await,
        };
        if finished.is_ok() {
            let mut replaced = replaced();
            // One entry per record version seen; bounded all the same.
            if replaced.len() >= MAX_REPLACED_KEPT {
                replaced.clear();
            }
            let _ = replaced.insert(key);
        }
    }

    /// A new tag for `record`, replacing the record whose record key is
    /// `previous`: under a new record key, made now.
    pub(super) async fn keyed_tag(
        &self,
        record: &TenantRecord,
        previous: Option<KeyId>,
    ) -> Result<TenantTag, Error> {
        let key = KeyId::random(&mut OsRng)?;
        self.tenant_keys.create(record.tenant, key).await?;
        let message = keyed_message(record, key, previous);
        let mac = self
            .tenant_keys
            .derive(record.tenant, key, &message)
            .await
            .map(|mac| RecordTag::from_slice(mac.expose_secret()));
        match mac {
            Ok(Some(mac)) => Ok(TenantTag::Keyed { key, previous, mac }),
            Ok(None) => Err(Error::Misuse("HMAC-SHA256 gives 32 bytes")),
            Err(error) => {
                let _ = self.tenant_keys.destroy_key(record.tenant, key).await;
                Err(error)
            }
        }
    }

    /// The change of tag from `entry`'s record to `next`: a new record key
    /// for `next`. Give the store's answer to [`KeyHierarchy::retagged`].
    pub(super) async fn retag(
        &self,
        entry: &TenantEntry,
        next: &TenantRecord,
    ) -> Result<TagUpdate, Error> {
        let previous = entry.record.tag.ok_or(Error::Purged(entry.record.tenant))?;
        let previous_key = match previous {
            TenantTag::Keyed { key, .. } => Some(key),
            TenantTag::Legacy(_) => None,
        };
        Ok(TagUpdate {
            previous,
            next: self.keyed_tag(next, previous_key).await?,
        })
    }

    /// Ends a change of tag given the store's answer to it: once written,
    /// the replaced record's key is destroyed. The new record key of a
    /// change that failed is left as it is: the store may have written the
    /// record all the same (a connection lost at its commit), and a key
    /// that tags no record is of no use to anyone.
    pub(super) async fn retagged<T>(
        &self,
        next: &TenantRecord,
        update: &TagUpdate,
        written: Result<T, Error>,
    ) -> Result<T, Error> {
        if written.is_ok() {
            let stored = TenantRecord {
                tag: Some(update.next),
                ..next.clone()
            };
            self.finish_replacing(&stored).await;
        }
        written
    }
}
