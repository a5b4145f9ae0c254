//! What binds a tenant's key metadata to the tenant, so that a writer of
//! the database cannot edit it into a release: the associated data of each
//! TIK wrap (the tenant and its kind, the TIK and its version, the root-key
//! slot), the input a TIK version's key is derived from, and the tag over
//! the tenant's record under its metadata key, checked whenever the record
//! is read from the store.

use std::sync::Arc;

use atrest_audit::Event;
use atrest_filekey::{KeyId, KeyVersion, TenantId};

use super::{KeyHierarchy, TenantEntry};
use crate::store::{
    FallbackPolicy, RootKeySlot, SlotRole, TagUpdate, TenantKind, TenantRecord, TenantState,
};
use crate::tenant_key::{MetadataKey, RecordTag};
use crate::{Error, KeyMaterial, TikBinding};

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

/// The tag a tenant's record carries under the tenant's metadata key.
pub(super) fn record_tag(key: &MetadataKey, record: &TenantRecord) -> RecordTag {
    key.tag(TENANT_RECORD_LABEL, &record_message(record))
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
    /// tenant's record must carry the tag its metadata key gives it. A
    /// record that fails is refused ([`Error::Tampered`]) and the refusal
    /// audited, as is an active record whose tenant key is gone, and a
    /// record that says purged while the tenant key store still holds the
    /// tenant's keys (a purge destroys them before it marks the record).
    pub(super) async fn load_entry(&self, tenant: TenantId) -> Result<TenantEntry, Error> {
        let record = self
            .store
            .tenant(tenant)
            .await?
            .ok_or(Error::UnknownTenant(tenant))?;
        if record.state == TenantState::Purged {
            // A purged record only refuses, and has no tag to check; the
            // key store, which an edit of the database cannot change,
            // says whether it is true.
            if self.keys_gone(tenant).await? {
                return Ok(Self::entry_from(record, None));
            }
            let error = Error::Tampered {
                tenant,
                what: "tenant record (purged, with its keys still held)",
            };
            let entry = Self::entry_from(record, None);
            self.record(&entry, Event::MetadataRejected {}, Self::failed(&error))
                .await?;
            return Err(error);
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
        Ok(record_tag(key, record))
    }

    /// The change of tag from `entry`'s record to `next`.
    pub(super) fn retag(entry: &TenantEntry, next: &TenantRecord) -> Result<TagUpdate, Error> {
        Ok(TagUpdate {
            previous: entry.record.tag.ok_or(Error::Purged(entry.record.tenant))?,
            next: Self::tag_for(entry, next)?,
        })
    }
}
