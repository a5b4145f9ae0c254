//! A writer of the metadata database puts back an older copy of a tenant's
//! record — from a backup, or saved before a change — to undo the change:
//! a stricter fallback policy, a revocation mark. Each version of the
//! record is tagged under a record key of its own, destroyed when the next
//! version replaces it, so the older copy is refused as tampered with (and
//! audited), never obeyed. Records tagged before record keys existed are
//! believed until their first change, and never again after it.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use atrest_audit::Event;
use atrest_filekey::TenantId;
use atrest_tenant::fault::Fault;
use atrest_tenant::{
    Error, FallbackPolicy, MetadataStore as _, TenantKeyStore as _, TenantRecord, TenantTag,
    record_keys_marker_id,
};
use atrest_test_support::sqlite as rusqlite;
use common::{Fixture, USER, context};
use rusqlite::params;

/// The tenant's row as the database holds it (the record's tag and the
/// fallback policy's columns).
type Row = (
    Vec<u8>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

fn database(f: &Fixture) -> rusqlite::Connection {
    rusqlite::Connection::open(f.dir.path().join("tenants.sqlite")).unwrap()
}

fn save(f: &Fixture, tenant: TenantId) -> Row {
    database(f)
        .query_row(
            "SELECT tag, fallback, outage_start, outage_end, outage_reason
             FROM tenants WHERE tenant = ?1",
            params![tenant.as_bytes()],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            },
        )
        .unwrap()
}

fn put_back(f: &Fixture, tenant: TenantId, row: &Row) {
    let changed = database(f)
        .execute(
            "UPDATE tenants SET tag = ?2, fallback = ?3, outage_start = ?4, outage_end = ?5,
                                outage_reason = ?6
             WHERE tenant = ?1",
            params![tenant.as_bytes(), row.0, row.1, row.2, row.3, row.4],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

fn rejections(f: &Fixture) -> usize {
    f.audit
        .count(|event, _| matches!(event, Event::MetadataRejected {}))
}

#[tokio::test]
async fn an_older_copy_of_a_tenant_record_is_refused_not_obeyed() {
    let f = Fixture::new("rollback").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    let lax = save(&f, tenant);

    // The operator forbids the availability key for user requests; the
    // customer's keys then go down: users are refused.
    f.hierarchy
        .set_fallback_policy(tenant, FallbackPolicy::Never)
        .await
        .unwrap();
    let strict = save(&f, tenant);
    assert_ne!(lax.0, strict.0);
    f.customer_a.set(Fault::Unavailable);
    f.customer_b.set(Fault::Unavailable);
    f.hierarchy.flush_cache();
    let refused = f
        .hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::RootKey(p) if p.is_unavailable()),
        "{refused}"
    );

    // The writer puts back the record of before: it would serve users
    // through the availability key. Refused, as tampered with.
    put_back(&f, tenant, &lax);
    f.hierarchy.flush_cache();
    let before = rejections(&f);
    let refused = f
        .hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Tampered { tenant: t, what } if *t == tenant && what.contains("older copy")),
        "{refused}"
    );
    assert_eq!(refused.kind(), atrest_core::ErrorKind::Integrity);
    assert_eq!(rejections(&f), before + 1);
    // Nothing reads it as a record to change either.
    let refused = f
        .hierarchy
        .set_fallback_policy(tenant, FallbackPolicy::Automatic)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Tampered { .. }), "{refused}");

    // The record as it stands is obeyed again; and a revocation mark, put
    // back to unmarked the same way, is refused too.
    put_back(&f, tenant, &strict);
    f.customer_a.set(Fault::None);
    f.customer_b.set(Fault::None);
    f.hierarchy.flush_cache();
    let _ = f
        .hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    let unmarked = save(&f, tenant);
    let [key_a, _] = Fixture::customer_keys();
    f.hierarchy
        .revoke_customer_key(tenant, &key_a)
        .await
        .unwrap();
    let marked = f.store.tenant(tenant).await.unwrap().unwrap();
    assert!(marked.slots[0].revoked);
    put_back(&f, tenant, &unmarked);
    database(&f)
        .execute(
            "UPDATE root_key_slots SET revoked = 0 WHERE tenant = ?1",
            params![tenant.as_bytes()],
        )
        .unwrap();
    f.hierarchy.flush_cache();
    let refused = f
        .hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Tampered { .. }), "{refused}");
}

#[tokio::test]
async fn each_change_tags_the_record_under_a_new_key_and_destroys_the_last() {
    let f = Fixture::new("record-keys").await;
    let tenant = f.customer_tenant().await;
    let key_of = |record: &TenantRecord| match record.tag {
        Some(TenantTag::Keyed { key, previous, .. }) => (key, previous),
        other => panic!("{other:?}"),
    };
    let first = f.store.tenant(tenant).await.unwrap().unwrap();
    let (first_key, none) = key_of(&first);
    assert_eq!(none, None);
    for policy in [FallbackPolicy::Never, FallbackPolicy::Declared(None)] {
        let before = key_of(&f.store.tenant(tenant).await.unwrap().unwrap()).0;
        f.hierarchy
            .set_fallback_policy(tenant, policy)
            .await
            .unwrap();
        let (key, previous) = key_of(&f.store.tenant(tenant).await.unwrap().unwrap());
        assert_eq!(previous, Some(before));
        assert_ne!(key, before);
        // The replaced record's key is gone; the new one stands.
        assert!(matches!(
            f.tenant_keys.derive(tenant, before, b"probe").await,
            Err(Error::TenantKeyMissing(_))
        ));
        f.tenant_keys.derive(tenant, key, b"probe").await.unwrap();
    }
    assert!(matches!(
        f.tenant_keys.derive(tenant, first_key, b"probe").await,
        Err(Error::TenantKeyMissing(_))
    ));
}

/// A change that stopped after writing the record but before destroying
/// the replaced record's key (the process killed in between): the first
/// reader of the new record destroys it.
#[tokio::test]
async fn a_reader_finishes_a_replacement_cut_short() {
    let f = Fixture::new("cut-short").await;
    let tenant = f.customer_tenant().await;
    let lax = save(&f, tenant);
    let Some(TenantTag::Keyed { key: old_key, .. }) =
        f.store.tenant(tenant).await.unwrap().unwrap().tag
    else {
        panic!("a keyed tag")
    };
    f.hierarchy
        .set_fallback_policy(tenant, FallbackPolicy::Never)
        .await
        .unwrap();
    // What a change cut short leaves: the new record written and the
    // replaced record's key still there (made again here under its id).
    f.tenant_keys.create(tenant, old_key).await.unwrap();
    // Read by another process (this one saw its own change finished).
    let (reader, _) = Fixture::build(
        &f.store,
        &f.tenant_keys,
        &f.audit,
        &f.service,
        &f.customer_a,
        &f.customer_b,
        std::time::Duration::from_secs(300),
    );
    let _ = reader.tenant(tenant).await.unwrap();
    assert!(matches!(
        f.tenant_keys.derive(tenant, old_key, b"probe").await,
        Err(Error::TenantKeyMissing(_))
    ));
    // The record of before, put back: refused.
    put_back(&f, tenant, &lax);
    f.hierarchy.flush_cache();
    assert!(matches!(
        f.hierarchy.tenant(tenant).await,
        Err(Error::Tampered { .. })
    ));
}

/// A record tagged before record keys (under the tenant's metadata key) is
/// believed until its first change, which tags the next under a record key
/// and marks the tenant so; after it, the old record is an older copy.
#[tokio::test]
async fn a_record_tagged_before_record_keys_moves_to_them_at_its_first_change() {
    let f = Fixture::new("legacy").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    // The tenant as an earlier version left it: its record tagged the
    // earlier way, no record key, no marker.
    let record = f.store.tenant(tenant).await.unwrap().unwrap();
    let Some(TenantTag::Keyed { key, .. }) = record.tag else {
        panic!("a keyed tag")
    };
    let legacy = legacy_tag(&f, &record).await;
    database(&f)
        .execute(
            "UPDATE tenants SET tag = ?2 WHERE tenant = ?1",
            params![tenant.as_bytes(), legacy.to_vec()],
        )
        .unwrap();
    let marker = record_keys_marker_id(record.tik_id);
    assert!(f.tenant_keys.destroy_key(tenant, marker).await.unwrap());
    assert!(f.tenant_keys.destroy_key(tenant, key).await.unwrap());
    f.hierarchy.flush_cache();
    let _ = f
        .hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    let legacy_row = save(&f, tenant);
    assert_eq!(legacy_row.0.len(), 32);

    // Its first change moves it to record keys.
    f.hierarchy
        .set_fallback_policy(tenant, FallbackPolicy::Never)
        .await
        .unwrap();
    let moved = f.store.tenant(tenant).await.unwrap().unwrap();
    assert!(
        matches!(moved.tag, Some(TenantTag::Keyed { previous: None, .. })),
        "{:?}",
        moved.tag
    );
    f.tenant_keys
        .derive(tenant, marker, b"probe")
        .await
        .unwrap();

    // The record of before, put back: refused.
    put_back(&f, tenant, &legacy_row);
    f.hierarchy.flush_cache();
    let refused = f
        .hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Tampered { what, .. } if what.contains("older copy")),
        "{refused}"
    );
}

/// The tag an earlier version gave `record`: `HMAC-SHA256(metadata key,
/// len(label) ‖ label ‖ message)` with the metadata key derived from the
/// tenant key. Written out here, as the format it was, so that a change to
/// the record's encoding cannot pass unnoticed.
async fn legacy_tag(f: &Fixture, record: &TenantRecord) -> [u8; 32] {
    let mut input = b"atrest/v1 metadata key".to_vec();
    input.extend_from_slice(&record.tenant.encode());
    input.extend_from_slice(&record.tik_id.encode());
    let metadata = f
        .tenant_keys
        .derive(record.tenant, record.tik_id, &input)
        .await
        .unwrap();
    let mut message = record.tenant.encode().to_vec();
    message.push(2); // a customer-key tenant
    message.push(1); // active
    message.extend_from_slice(&record.tik_id.encode());
    message.extend_from_slice(&record.current_tik.encode());
    message.push(u8::try_from(record.slots.len()).unwrap());
    for (slot, index) in record.slots.iter().zip(0u8..) {
        message.push(index);
        message.push(match slot.role {
            atrest_tenant::SlotRole::Service => 1,
            atrest_tenant::SlotRole::Customer => 2,
            atrest_tenant::SlotRole::Availability => 3,
        });
        message.push(u8::from(slot.revoked));
        for part in [slot.key.provider(), slot.key.label()] {
            message.push(u8::try_from(part.len()).unwrap());
            message.extend_from_slice(part.as_bytes());
        }
        message.extend_from_slice(&slot.key.version().to_be_bytes());
    }
    assert_eq!(record.fallback, FallbackPolicy::Automatic);
    let label = b"atrest/v1 tenant record";
    let mut tagged = u16::try_from(label.len()).unwrap().to_be_bytes().to_vec();
    tagged.extend_from_slice(label);
    tagged.extend_from_slice(&message);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, metadata.expose_secret());
    ring::hmac::sign(&key, &tagged).as_ref().try_into().unwrap()
}

/// After a backup of the key metadata is restored, the record of a tenant
/// that changed since is an older copy: refused until the operator accepts
/// it (audited), then obeyed as it stands.
#[tokio::test]
async fn an_operator_accepts_a_restored_record_and_it_is_obeyed_again() {
    let f = Fixture::new("accept").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (key, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    let backup = save(&f, tenant);
    f.hierarchy
        .set_fallback_policy(tenant, FallbackPolicy::Never)
        .await
        .unwrap();
    put_back(&f, tenant, &backup);
    f.hierarchy.flush_cache();
    assert!(matches!(
        f.hierarchy.release_file_key(&USER, &ctx, &wrapped).await,
        Err(Error::Tampered { .. })
    ));

    let accepted = f.hierarchy.accept_restored_record(tenant).await.unwrap();
    assert_eq!(accepted.fallback, FallbackPolicy::Automatic);
    assert_eq!(
        f.audit
            .count(|event, _| matches!(event, Event::TenantRecordAccepted {})),
        1
    );
    let released = f
        .hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    assert_eq!(released.expose_secret(), key.expose_secret());
    // Accepting a record that authenticates changes nothing.
    let again = f.hierarchy.accept_restored_record(tenant).await.unwrap();
    assert_eq!(again.tag, accepted.tag);
    assert_eq!(
        f.audit
            .count(|event, _| matches!(event, Event::TenantRecordAccepted {})),
        1
    );
    // Changes go on from the accepted record, and older copies of it are
    // refused as before.
    let accepted_row = save(&f, tenant);
    f.hierarchy
        .set_fallback_policy(tenant, FallbackPolicy::Never)
        .await
        .unwrap();
    put_back(&f, tenant, &accepted_row);
    f.hierarchy.flush_cache();
    assert!(matches!(
        f.hierarchy.tenant(tenant).await,
        Err(Error::Tampered { .. })
    ));
}
