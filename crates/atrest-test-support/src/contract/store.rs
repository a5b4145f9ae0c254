//! The contract of the key metadata store
//! ([`MetadataStore`](atrest_tenant::MetadataStore)): tenant records and
//! their wraps read back as written, changes that apply only from the tag
//! they were made from, and races that exactly one change wins.

use std::sync::Arc;

use atrest_filekey::{KeyId, OsRng, TenantId};
use atrest_tenant::{
    CHANGE_LOG_KEPT, Error, FallbackPolicy, OutageWindow, RecordTag, RootKeySlot, SlotRole,
    TagUpdate, TenantKind, TenantRecord, TenantState, TenantTag, TikWrap,
};
use tokio::sync::Barrier;

use super::{Backend, version};

/// A tenant record's tag, one per `byte`: of the kind made before record
/// keys for 1 (the first record of every tenant here, as one made by an
/// earlier version), under a record key for the others, every other one
/// naming the record key it replaced; so every change from the first
/// record writes a tag of another length.
fn tag(byte: u8) -> TenantTag {
    let mac = RecordTag::from_slice(&[byte; 32]).unwrap();
    if byte == 1 {
        return TenantTag::Legacy(mac);
    }
    let id = |first: u8, rest: u8| {
        let mut bytes = [rest; 16];
        bytes[0] = first;
        KeyId::from_bytes(bytes).unwrap()
    };
    TenantTag::Keyed {
        key: id(byte, 1),
        previous: byte.is_multiple_of(2).then(|| id(1, byte)),
        mac,
    }
}

fn wrap(v: u32, slot: u8, byte: u8) -> TikWrap {
    TikWrap {
        version: version(v),
        slot,
        wrapped: vec![byte; 40 + usize::from(slot)],
    }
}

/// A customer-key tenant's record: two customer slots and the
/// availability slot, TIK version 1.
fn customer_record() -> (TenantRecord, Vec<TikWrap>) {
    let slot = |role, key: &str| RootKeySlot {
        role,
        key: key.parse().unwrap(),
        revoked: false,
    };
    let record = TenantRecord {
        tenant: TenantId::random(&mut OsRng).unwrap(),
        kind: TenantKind::CustomerKey,
        state: TenantState::Active,
        tik_id: KeyId::random(&mut OsRng).unwrap(),
        current_tik: version(1),
        slots: vec![
            slot(SlotRole::Customer, "customer-a:key-1"),
            slot(SlotRole::Customer, "customer-b:key-1"),
            slot(SlotRole::Availability, "service:availability"),
        ],
        fallback: FallbackPolicy::Automatic,
        tag: Some(tag(1)),
    };
    (record, vec![wrap(1, 0, 10), wrap(1, 1, 11), wrap(1, 2, 12)])
}

fn update(previous: u8, next: u8) -> TagUpdate {
    TagUpdate {
        previous: tag(previous),
        next: tag(next),
    }
}

fn is_conflict(error: &Error) -> bool {
    matches!(error, Error::Conflict(_))
}

pub async fn tenants_are_stored_and_read_back(backend: &dyn Backend) {
    let store = backend.store().await;
    let (record, wraps) = customer_record();
    let tenant = record.tenant;
    store.create_tenant(&record, &wraps).await.unwrap();
    assert_eq!(store.tenant(tenant).await.unwrap(), Some(record.clone()));
    assert_eq!(store.tik_versions(tenant).await.unwrap(), vec![version(1)]);
    assert_eq!(store.tik_wraps(tenant, version(1)).await.unwrap(), wraps);
    assert!(
        store
            .tik_wraps(tenant, version(2))
            .await
            .unwrap()
            .is_empty()
    );

    // A second tenant, service-managed; tenants are listed by id.
    let other = TenantRecord {
        tenant: TenantId::random(&mut OsRng).unwrap(),
        kind: TenantKind::ServiceManaged,
        slots: vec![RootKeySlot {
            role: SlotRole::Service,
            key: "service:root".parse().unwrap(),
            revoked: false,
        }],
        ..record.clone()
    };
    store
        .create_tenant(&other, &[wrap(1, 0, 20)])
        .await
        .unwrap();
    let mut both = vec![tenant, other.tenant];
    both.sort_by_key(|id| *id.as_bytes());
    assert_eq!(store.tenants().await.unwrap(), both);

    // The same tenant again: refused, nothing changed.
    let again = store
        .create_tenant(&record, &[wrap(1, 0, 99)])
        .await
        .unwrap_err();
    assert!(
        matches!(again, Error::TenantExists(t) if t == tenant),
        "{again}"
    );
    assert_eq!(store.tik_wraps(tenant, version(1)).await.unwrap(), wraps);

    let unknown = TenantId::random(&mut OsRng).unwrap();
    assert_eq!(store.tenant(unknown).await.unwrap(), None);
    assert!(store.tik_versions(unknown).await.unwrap().is_empty());

    // Another instance over the same database sees the same.
    let second = backend.store().await;
    assert_eq!(second.tenant(tenant).await.unwrap(), Some(record));
}

pub async fn changes_apply_only_from_the_tag_they_were_made_from(backend: &dyn Backend) {
    let store = backend.store().await;
    let (record, wraps) = customer_record();
    let tenant = record.tenant;
    store.create_tenant(&record, &wraps).await.unwrap();
    let v2 = [wrap(2, 0, 30), wrap(2, 1, 31), wrap(2, 2, 32)];

    // A roll from a stale tag, or from a stale current version: refused.
    let stale = store
        .add_tik_version(tenant, version(1), &v2, &update(9, 2))
        .await;
    assert!(is_conflict(&stale.unwrap_err()));
    let stale = store
        .add_tik_version(tenant, version(5), &v2, &update(1, 2))
        .await;
    assert!(is_conflict(&stale.unwrap_err()));
    assert_eq!(store.tenant(tenant).await.unwrap(), Some(record.clone()));
    assert_eq!(store.tik_versions(tenant).await.unwrap(), vec![version(1)]);
    let misuse = store
        .add_tik_version(tenant, version(1), &[], &update(1, 2))
        .await;
    assert!(matches!(misuse.unwrap_err(), Error::Misuse(_)));

    store
        .add_tik_version(tenant, version(1), &v2, &update(1, 2))
        .await
        .unwrap();
    let now = store.tenant(tenant).await.unwrap().unwrap();
    assert_eq!((now.current_tik, now.tag), (version(2), Some(tag(2))));
    assert_eq!(
        store.tik_versions(tenant).await.unwrap(),
        vec![version(1), version(2)]
    );
    assert_eq!(store.tik_wraps(tenant, version(2)).await.unwrap(), v2);

    // Revocation: from the current tag only, of an existing slot only.
    let stale = store.set_revoked(tenant, 1, true, &update(1, 3)).await;
    assert!(is_conflict(&stale.unwrap_err()));
    let missing = store.set_revoked(tenant, 7, true, &update(2, 3)).await;
    assert!(matches!(missing.unwrap_err(), Error::Misuse(_)));
    assert_eq!(
        store.tenant(tenant).await.unwrap().unwrap().tag,
        Some(tag(2)),
        "a refused change leaves the tag"
    );
    store
        .set_revoked(tenant, 1, true, &update(2, 3))
        .await
        .unwrap();
    let now = store.tenant(tenant).await.unwrap().unwrap();
    assert_eq!(
        now.slots.iter().map(|s| s.revoked).collect::<Vec<_>>(),
        [false, true, false]
    );
    assert_eq!(now.tag, Some(tag(3)));
    store
        .set_revoked(tenant, 1, false, &update(3, 4))
        .await
        .unwrap();
    assert!(!store.tenant(tenant).await.unwrap().unwrap().slots[1].revoked);
}

pub async fn root_key_rolls_replace_every_wrap_of_a_slot(backend: &dyn Backend) {
    let store = backend.store().await;
    let (record, wraps) = customer_record();
    let tenant = record.tenant;
    store.create_tenant(&record, &wraps).await.unwrap();
    let v2 = [wrap(2, 0, 30), wrap(2, 1, 31), wrap(2, 2, 32)];
    store
        .add_tik_version(tenant, version(1), &v2, &update(1, 2))
        .await
        .unwrap();
    let key = "customer-a:key-2".parse().unwrap();

    // Wraps for fewer versions than exist (a roll happened meanwhile), or
    // for another slot: refused.
    let short = store
        .replace_root_key(tenant, 0, &key, &[wrap(1, 0, 50)], &update(2, 3))
        .await;
    assert!(is_conflict(&short.unwrap_err()));
    let mixed = [wrap(1, 0, 50), wrap(2, 1, 51)];
    let mixed = store
        .replace_root_key(tenant, 0, &key, &mixed, &update(2, 3))
        .await;
    assert!(is_conflict(&mixed.unwrap_err()));
    let new = [wrap(1, 0, 50), wrap(2, 0, 51)];
    let stale = store
        .replace_root_key(tenant, 0, &key, &new, &update(1, 3))
        .await;
    assert!(is_conflict(&stale.unwrap_err()));

    store
        .replace_root_key(tenant, 0, &key, &new, &update(2, 3))
        .await
        .unwrap();
    let now = store.tenant(tenant).await.unwrap().unwrap();
    assert_eq!(now.slots[0].key, key);
    assert_eq!(now.tag, Some(tag(3)));
    for (v, expected) in [(1, 50), (2, 51)] {
        let wraps = store.tik_wraps(tenant, version(v)).await.unwrap();
        assert_eq!(wraps[0].wrapped, vec![expected; 40]);
        assert_eq!(wraps.len(), 3, "the other slots are untouched");
    }
}

pub async fn retire_and_purge_leave_no_wrap(backend: &dyn Backend) {
    let store = backend.store().await;
    let (record, wraps) = customer_record();
    let tenant = record.tenant;
    store.create_tenant(&record, &wraps).await.unwrap();
    let (bystander, bystander_wraps) = customer_record();
    store
        .create_tenant(&bystander, &bystander_wraps)
        .await
        .unwrap();
    let v2 = [wrap(2, 0, 30), wrap(2, 1, 31), wrap(2, 2, 32)];
    store
        .add_tik_version(tenant, version(1), &v2, &update(1, 2))
        .await
        .unwrap();
    let v3 = [wrap(3, 0, 40), wrap(3, 1, 41), wrap(3, 2, 42)];
    store
        .add_tik_version(tenant, version(2), &v3, &update(2, 3))
        .await
        .unwrap();

    store.retire_tik_version(tenant, version(1)).await.unwrap();
    assert_eq!(
        store.tik_versions(tenant).await.unwrap(),
        vec![version(2), version(3)]
    );
    assert!(
        store
            .tik_wraps(tenant, version(1))
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(store.purge_tenant(tenant).await.unwrap(), 2);
    let purged = store.tenant(tenant).await.unwrap().unwrap();
    assert_eq!((purged.state, purged.tag), (TenantState::Purged, None));
    assert!(store.tik_versions(tenant).await.unwrap().is_empty());
    for v in 1..=3 {
        assert!(
            store
                .tik_wraps(tenant, version(v))
                .await
                .unwrap()
                .is_empty()
        );
    }
    // A purged tenant takes no change, whatever tag is offered.
    let v4 = [wrap(4, 0, 1)];
    let after = store
        .add_tik_version(tenant, version(3), &v4, &update(3, 4))
        .await;
    assert!(is_conflict(&after.unwrap_err()));
    // The bystander is untouched.
    assert_eq!(
        store.tik_wraps(bystander.tenant, version(1)).await.unwrap(),
        bystander_wraps
    );
}

pub async fn of_concurrent_changes_from_one_state_exactly_one_wins(backend: &dyn Backend) {
    let (record, wraps) = customer_record();
    let tenant = record.tenant;
    backend
        .store()
        .await
        .create_tenant(&record, &wraps)
        .await
        .unwrap();
    const RACERS: u8 = 6;
    // Each racer is its own instance, with its own connection, on a task of
    // its own.
    let barrier = Arc::new(Barrier::new(usize::from(RACERS)));
    let mut racers = Vec::new();
    for i in 0..RACERS {
        let store = backend.store().await;
        let barrier = Arc::clone(&barrier);
        racers.push(tokio::spawn(async move {
            let wraps = [wrap(2, 0, i), wrap(2, 1, i), wrap(2, 2, i)];
            let _ = barrier.wait().await;
            if i % 2 == 0 {
                store
                    .add_tik_version(tenant, version(1), &wraps, &update(1, 100 + i))
                    .await
            } else {
                store
                    .set_revoked(tenant, 0, true, &update(1, 100 + i))
                    .await
            }
        }));
    }
    let mut outcomes: Vec<Result<(), Error>> = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.unwrap());
    }
    let winners: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, outcome)| outcome.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    for outcome in &outcomes {
        if let Err(error) = outcome {
            assert!(is_conflict(error), "{error}");
        }
    }
    let winner = u8::try_from(winners[0]).unwrap();
    let now = backend.store().await.tenant(tenant).await.unwrap().unwrap();
    assert_eq!(
        now.tag,
        Some(tag(100 + winner)),
        "the winner's tag is stored"
    );
    if winner % 2 == 0 {
        assert_eq!(now.current_tik, version(2));
        assert!(!now.slots[0].revoked);
    } else {
        assert_eq!(now.current_tik, version(1));
        assert!(now.slots[0].revoked);
    }
}

pub async fn every_change_is_in_the_change_log_in_commit_order(backend: &dyn Backend) {
    let store = backend.store().await;
    let start = store.changes_since(0).await.unwrap();
    assert!(start.tenants.is_some(), "a new store's log is complete");
    let at = start.counter;
    let nothing = store.changes_since(at).await.unwrap();
    assert_eq!((nothing.counter, nothing.tenants), (at, Some(Vec::new())));

    // Each changing method is one entry.
    let (record, wraps) = customer_record();
    let tenant = record.tenant;
    store.create_tenant(&record, &wraps).await.unwrap();
    let (other, other_wraps) = customer_record();
    store.create_tenant(&other, &other_wraps).await.unwrap();
    let v2 = [wrap(2, 0, 30), wrap(2, 1, 31), wrap(2, 2, 32)];
    store
        .add_tik_version(tenant, version(1), &v2, &update(1, 2))
        .await
        .unwrap();
    store
        .set_revoked(tenant, 0, true, &update(2, 3))
        .await
        .unwrap();
    let rolled = "customer-a:key-2".parse().unwrap();
    store
        .replace_root_key(
            tenant,
            1,
            &rolled,
            &[wrap(1, 1, 50), wrap(2, 1, 51)],
            &update(3, 4),
        )
        .await
        .unwrap();
    store.retire_tik_version(tenant, version(1)).await.unwrap();
    let _ = store.purge_tenant(tenant).await.unwrap();
    let changes = store.changes_since(at).await.unwrap();
    assert_eq!(changes.counter, at + 7);
    let mut both = vec![tenant, other.tenant];
    both.sort_unstable();
    assert_eq!(changes.tenants, Some(both));
    // From any point, only what came after it.
    let last = store.changes_since(at + 6).await.unwrap();
    assert_eq!(last.tenants, Some(vec![tenant]));
    let second = store.changes_since(at + 1).await.unwrap();
    assert_eq!(
        second.tenants.map(|t| t.contains(&other.tenant)),
        Some(true)
    );
    // A change refused (a conflict) leaves no entry.
    let refused = store
        .set_revoked(other.tenant, 0, true, &update(9, 10))
        .await;
    assert!(is_conflict(&refused.unwrap_err()));
    assert_eq!(store.changes_since(at).await.unwrap().counter, at + 7);
    // A counter from the future (a store restored from a backup): the
    // reader must treat everything as changed.
    let ahead = store.changes_since(at + 1_000).await.unwrap();
    assert_eq!((ahead.counter, ahead.tenants), (at + 7, None));

    // Concurrent changes from several instances: one entry each, counters
    // distinct and without gaps.
    const RACERS: u8 = 6;
    let mut racers = Vec::new();
    let barrier = Arc::new(Barrier::new(usize::from(RACERS)));
    for _ in 0..RACERS {
        let store = backend.store().await;
        let barrier = Arc::clone(&barrier);
        racers.push(tokio::spawn(async move {
            let (record, wraps) = customer_record();
            let _ = barrier.wait().await;
            store.create_tenant(&record, &wraps).await.unwrap();
            record.tenant
        }));
    }
    let mut made = Vec::new();
    for racer in racers {
        made.push(racer.await.unwrap());
    }
    made.sort_unstable();
    let raced = store.changes_since(at + 7).await.unwrap();
    assert_eq!(raced.counter, at + 7 + u64::from(RACERS));
    assert_eq!(raced.tenants, Some(made));

    // A fallback policy set is a change too.
    let at = raced.counter;
    store
        .set_fallback(other.tenant, &FallbackPolicy::Never, &update(1, 2))
        .await
        .unwrap();
    let set = store.changes_since(at).await.unwrap();
    assert_eq!(
        (set.counter, set.tenants),
        (at + 1, Some(vec![other.tenant]))
    );
}

pub async fn the_change_log_keeps_its_last_entries_and_says_when_it_lost_some(
    backend: &dyn Backend,
) {
    let store = backend.store().await;
    let (record, wraps) = customer_record();
    let tenant = record.tenant;
    store.create_tenant(&record, &wraps).await.unwrap();
    let at = store.changes_since(0).await.unwrap().counter;
    // More changes than the log keeps: revoke and restore, over and over.
    let rounds = u8::try_from(CHANGE_LOG_KEPT / 200 + 1).unwrap();
    let mut tag_now = 1u8;
    for _ in 0..rounds {
        for revoked in [true, false].into_iter().cycle().take(200) {
            let next = tag_now.wrapping_add(1);
            store
                .set_revoked(tenant, 0, revoked, &update(tag_now, next))
                .await
                .unwrap();
            tag_now = next;
        }
    }
    let counter = at + u64::from(rounds) * 200;
    let lost = store.changes_since(at).await.unwrap();
    assert_eq!((lost.counter, lost.tenants), (counter, None));
    let kept = store
        .changes_since(counter - CHANGE_LOG_KEPT)
        .await
        .unwrap();
    assert_eq!(kept.tenants, Some(vec![tenant]));
}

pub async fn fallback_policies_are_stored_with_the_record(backend: &dyn Backend) {
    let store = backend.store().await;
    let (record, wraps) = customer_record();
    let tenant = record.tenant;
    store.create_tenant(&record, &wraps).await.unwrap();
    assert_eq!(
        store.tenant(tenant).await.unwrap().unwrap().fallback,
        FallbackPolicy::Automatic
    );
    let window = OutageWindow {
        start: 1_800_000_000,
        end: 1_800_003_600,
        reason: "the customer's key service is down in region a; ticket 4711".into(),
    };
    let policies = [
        FallbackPolicy::Never,
        FallbackPolicy::Declared(None),
        FallbackPolicy::Declared(Some(window)),
        FallbackPolicy::Automatic,
    ];
    for (policy, n) in policies.into_iter().zip(1u8..) {
        // Only from the tag the change was made from.
        let stale = store
            .set_fallback(tenant, &policy, &update(n + 1, n + 2))
            .await;
        assert!(is_conflict(&stale.unwrap_err()));
        store
            .set_fallback(tenant, &policy, &update(n, n + 1))
            .await
            .unwrap();
        let now = store.tenant(tenant).await.unwrap().unwrap();
        assert_eq!((now.fallback, now.tag), (policy, Some(tag(n + 1))));
        assert_eq!(now.slots, record.slots, "the slots are untouched");
    }
    // A tenant created with a policy keeps it.
    let (mut declared, wraps) = customer_record();
    declared.fallback = FallbackPolicy::Declared(None);
    store.create_tenant(&declared, &wraps).await.unwrap();
    assert_eq!(
        store
            .tenant(declared.tenant)
            .await
            .unwrap()
            .unwrap()
            .fallback,
        FallbackPolicy::Declared(None)
    );
}
