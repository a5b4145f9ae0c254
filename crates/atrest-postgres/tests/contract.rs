//! The contract of the key metadata store and of the catalog, written once
//! and run against each backend: SQLite (`SqliteStore`, `SqliteCatalog`)
//! and PostgreSQL (`PgMetadataStore`, `PgCatalog`). Every test below runs
//! as `sqlite::<name>` and as `postgres::<name>`.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::{Arc, Barrier};

use atrest::catalog::{SealTicket, SealedBlob};
use atrest::{BlobName, Catalog, CatalogError, Error as FilesError, ErrorKind};
use atrest_filekey::{
    FileContext, FileId, FileVersion, Kek, KeyId, KeyVersion, OsRng, TenantId, WrappedFileKey,
};
use atrest_tenant::blocking::block_on;
use atrest_tenant::{
    Error, RecordTag, Rewrapped, RootKeySlot, SlotRole, TagUpdate, TenantKind, TenantRecord,
    TenantState, TikWrap,
};
use common::Backend;

/// Declares each contract test once per backend.
macro_rules! per_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $test() {
                    super::$test(&super::Backend::sqlite(stringify!($test)));
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $test() {
                    super::$test(&super::Backend::postgres(stringify!($test)));
                }
            )*
        }
    };
}

per_backend!(
    tenants_are_stored_and_read_back,
    changes_apply_only_from_the_tag_they_were_made_from,
    root_key_rolls_replace_every_wrap_of_a_slot,
    retire_and_purge_leave_no_wrap,
    of_concurrent_changes_from_one_state_exactly_one_wins,
    tenant_names_are_unique_both_ways,
    seals_are_versions_visible_once_committed,
    batches_are_all_or_nothing,
    retirement_claims_race_attached_keys,
    rewraps_replace_only_unchanged_keys,
    concurrent_seals_of_one_name_get_distinct_versions,
);

fn version(n: u32) -> KeyVersion {
    KeyVersion::try_from(n).unwrap()
}

fn tag(byte: u8) -> RecordTag {
    RecordTag::from_slice(&[byte; 32]).unwrap()
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

fn tenants_are_stored_and_read_back(backend: &Backend) {
    let store = backend.store();
    let (record, wraps) = customer_record();
    let tenant = record.tenant;
    block_on(store.create_tenant(&record, &wraps)).unwrap();
    assert_eq!(
        block_on(store.tenant(tenant)).unwrap(),
        Some(record.clone())
    );
    assert_eq!(
        block_on(store.tik_versions(tenant)).unwrap(),
        vec![version(1)]
    );
    assert_eq!(
        block_on(store.tik_wraps(tenant, version(1))).unwrap(),
        wraps
    );
    assert!(
        block_on(store.tik_wraps(tenant, version(2)))
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
    block_on(store.create_tenant(&other, &[wrap(1, 0, 20)])).unwrap();
    let mut both = vec![tenant, other.tenant];
    both.sort_by_key(|id| *id.as_bytes());
    assert_eq!(block_on(store.tenants()).unwrap(), both);

    // The same tenant again: refused, nothing changed.
    let again = block_on(store.create_tenant(&record, &[wrap(1, 0, 99)])).unwrap_err();
    assert!(
        matches!(again, Error::TenantExists(t) if t == tenant),
        "{again}"
    );
    assert_eq!(
        block_on(store.tik_wraps(tenant, version(1))).unwrap(),
        wraps
    );

    let unknown = TenantId::random(&mut OsRng).unwrap();
    assert_eq!(block_on(store.tenant(unknown)).unwrap(), None);
    assert!(block_on(store.tik_versions(unknown)).unwrap().is_empty());

    // Another instance over the same database sees the same.
    let second = backend.store();
    assert_eq!(block_on(second.tenant(tenant)).unwrap(), Some(record));
}

fn changes_apply_only_from_the_tag_they_were_made_from(backend: &Backend) {
    let store = backend.store();
    let (record, wraps) = customer_record();
    let tenant = record.tenant;
    block_on(store.create_tenant(&record, &wraps)).unwrap();
    let v2 = [wrap(2, 0, 30), wrap(2, 1, 31), wrap(2, 2, 32)];

    // A roll from a stale tag, or from a stale current version: refused.
    let stale = block_on(store.add_tik_version(tenant, version(1), &v2, &update(9, 2)));
    assert!(is_conflict(&stale.unwrap_err()));
    let stale = block_on(store.add_tik_version(tenant, version(5), &v2, &update(1, 2)));
    assert!(is_conflict(&stale.unwrap_err()));
    assert_eq!(
        block_on(store.tenant(tenant)).unwrap(),
        Some(record.clone())
    );
    assert_eq!(
        block_on(store.tik_versions(tenant)).unwrap(),
        vec![version(1)]
    );
    let misuse = block_on(store.add_tik_version(tenant, version(1), &[], &update(1, 2)));
    assert!(matches!(misuse.unwrap_err(), Error::Misuse(_)));

    block_on(store.add_tik_version(tenant, version(1), &v2, &update(1, 2))).unwrap();
    let now = block_on(store.tenant(tenant)).unwrap().unwrap();
    assert_eq!((now.current_tik, now.tag), (version(2), Some(tag(2))));
    assert_eq!(
        block_on(store.tik_versions(tenant)).unwrap(),
        vec![version(1), version(2)]
    );
    assert_eq!(block_on(store.tik_wraps(tenant, version(2))).unwrap(), v2);

    // Revocation: from the current tag only, of an existing slot only.
    let stale = block_on(store.set_revoked(tenant, 1, true, &update(1, 3)));
    assert!(is_conflict(&stale.unwrap_err()));
    let missing = block_on(store.set_revoked(tenant, 7, true, &update(2, 3)));
    assert!(matches!(missing.unwrap_err(), Error::Misuse(_)));
    assert_eq!(
        block_on(store.tenant(tenant)).unwrap().unwrap().tag,
        Some(tag(2)),
        "a refused change leaves the tag"
    );
    block_on(store.set_revoked(tenant, 1, true, &update(2, 3))).unwrap();
    let now = block_on(store.tenant(tenant)).unwrap().unwrap();
    assert_eq!(
        now.slots.iter().map(|s| s.revoked).collect::<Vec<_>>(),
        [false, true, false]
    );
    assert_eq!(now.tag, Some(tag(3)));
    block_on(store.set_revoked(tenant, 1, false, &update(3, 4))).unwrap();
    assert!(!block_on(store.tenant(tenant)).unwrap().unwrap().slots[1].revoked);
}

fn root_key_rolls_replace_every_wrap_of_a_slot(backend: &Backend) {
    let store = backend.store();
    let (record, wraps) = customer_record();
    let tenant = record.tenant;
    block_on(store.create_tenant(&record, &wraps)).unwrap();
    let v2 = [wrap(2, 0, 30), wrap(2, 1, 31), wrap(2, 2, 32)];
    block_on(store.add_tik_version(tenant, version(1), &v2, &update(1, 2))).unwrap();
    let key = "customer-a:key-2".parse().unwrap();

    // Wraps for fewer versions than exist (a roll happened meanwhile), or
    // for another slot: refused.
    let short = block_on(store.replace_root_key(tenant, 0, &key, &[wrap(1, 0, 50)], &update(2, 3)));
    assert!(is_conflict(&short.unwrap_err()));
    let mixed = [wrap(1, 0, 50), wrap(2, 1, 51)];
    let mixed = block_on(store.replace_root_key(tenant, 0, &key, &mixed, &update(2, 3)));
    assert!(is_conflict(&mixed.unwrap_err()));
    let new = [wrap(1, 0, 50), wrap(2, 0, 51)];
    let stale = block_on(store.replace_root_key(tenant, 0, &key, &new, &update(1, 3)));
    assert!(is_conflict(&stale.unwrap_err()));

    block_on(store.replace_root_key(tenant, 0, &key, &new, &update(2, 3))).unwrap();
    let now = block_on(store.tenant(tenant)).unwrap().unwrap();
    assert_eq!(now.slots[0].key, key);
    assert_eq!(now.tag, Some(tag(3)));
    for (v, expected) in [(1, 50), (2, 51)] {
        let wraps = block_on(store.tik_wraps(tenant, version(v))).unwrap();
        assert_eq!(wraps[0].wrapped, vec![expected; 40]);
        assert_eq!(wraps.len(), 3, "the other slots are untouched");
    }
}

fn retire_and_purge_leave_no_wrap(backend: &Backend) {
    let store = backend.store();
    let (record, wraps) = customer_record();
    let tenant = record.tenant;
    block_on(store.create_tenant(&record, &wraps)).unwrap();
    let (bystander, bystander_wraps) = customer_record();
    block_on(store.create_tenant(&bystander, &bystander_wraps)).unwrap();
    let v2 = [wrap(2, 0, 30), wrap(2, 1, 31), wrap(2, 2, 32)];
    block_on(store.add_tik_version(tenant, version(1), &v2, &update(1, 2))).unwrap();
    let v3 = [wrap(3, 0, 40), wrap(3, 1, 41), wrap(3, 2, 42)];
    block_on(store.add_tik_version(tenant, version(2), &v3, &update(2, 3))).unwrap();

    block_on(store.retire_tik_version(tenant, version(1))).unwrap();
    assert_eq!(
        block_on(store.tik_versions(tenant)).unwrap(),
        vec![version(2), version(3)]
    );
    assert!(
        block_on(store.tik_wraps(tenant, version(1)))
            .unwrap()
            .is_empty()
    );

    assert_eq!(block_on(store.purge_tenant(tenant)).unwrap(), 2);
    let purged = block_on(store.tenant(tenant)).unwrap().unwrap();
    assert_eq!((purged.state, purged.tag), (TenantState::Purged, None));
    assert!(block_on(store.tik_versions(tenant)).unwrap().is_empty());
    for v in 1..=3 {
        assert!(
            block_on(store.tik_wraps(tenant, version(v)))
                .unwrap()
                .is_empty()
        );
    }
    // A purged tenant takes no change, whatever tag is offered.
    let v4 = [wrap(4, 0, 1)];
    let after = block_on(store.add_tik_version(tenant, version(3), &v4, &update(3, 4)));
    assert!(is_conflict(&after.unwrap_err()));
    // The bystander is untouched.
    assert_eq!(
        block_on(store.tik_wraps(bystander.tenant, version(1))).unwrap(),
        bystander_wraps
    );
}

fn of_concurrent_changes_from_one_state_exactly_one_wins(backend: &Backend) {
    let (record, wraps) = customer_record();
    let tenant = record.tenant;
    block_on(backend.store().create_tenant(&record, &wraps)).unwrap();
    const RACERS: u8 = 6;
    // Each racer is its own instance, with its own connection.
    let stores: Vec<_> = (0..RACERS).map(|_| backend.store()).collect();
    let barrier = Barrier::new(usize::from(RACERS));
    let outcomes: Vec<Result<(), Error>> = std::thread::scope(|scope| {
        let racers: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let i = u8::try_from(i).unwrap();
                    let wraps = [wrap(2, 0, i), wrap(2, 1, i), wrap(2, 2, i)];
                    barrier.wait();
                    if i % 2 == 0 {
                        block_on(store.add_tik_version(
                            tenant,
                            version(1),
                            &wraps,
                            &update(1, 100 + i),
                        ))
                    } else {
                        block_on(store.set_revoked(tenant, 0, true, &update(1, 100 + i)))
                    }
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
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
    let now = block_on(backend.store().tenant(tenant)).unwrap().unwrap();
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

fn tenant_names_are_unique_both_ways(backend: &Backend) {
    let catalog = backend.catalog();
    let (a, b) = (
        TenantId::random(&mut OsRng).unwrap(),
        TenantId::random(&mut OsRng).unwrap(),
    );
    block_on(catalog.name_tenant("zeta", a)).unwrap();
    block_on(catalog.name_tenant("Alpha", b)).unwrap();
    let taken = block_on(catalog.name_tenant("zeta", b)).unwrap_err();
    assert!(matches!(
        taken,
        FilesError::Catalog(CatalogError::TenantNameTaken { .. })
    ));
    assert_eq!(taken.kind(), ErrorKind::Conflict);
    // A tenant has one name.
    let second = block_on(catalog.name_tenant("other", a)).unwrap_err();
    assert_eq!(second.kind(), ErrorKind::Conflict, "{second}");
    let invalid = block_on(catalog.name_tenant(" padded", a)).unwrap_err();
    assert_eq!(invalid.kind(), ErrorKind::Usage);

    assert_eq!(block_on(catalog.tenant_named("zeta")).unwrap(), Some(a));
    assert_eq!(block_on(catalog.tenant_named("nope")).unwrap(), None);
    assert_eq!(
        block_on(catalog.tenant_name(b)).unwrap().as_deref(),
        Some("Alpha")
    );
    // By name, byte by byte: upper case first.
    assert_eq!(
        block_on(catalog.tenant_names()).unwrap(),
        vec![("Alpha".to_owned(), b), ("zeta".to_owned(), a)]
    );
    block_on(catalog.unname_tenant("zeta")).unwrap();
    block_on(catalog.unname_tenant("zeta")).unwrap();
    assert_eq!(block_on(catalog.tenant_name(a)).unwrap(), None);
    block_on(catalog.name_tenant("other", a)).unwrap();
}

/// A KEK standing in for a TIK version.
fn kek(v: u32) -> Kek {
    Kek::generate(KeyId::random(&mut OsRng).unwrap(), version(v), &mut OsRng).unwrap()
}

fn key_for(ticket: &SealTicket, kek: &Kek) -> WrappedFileKey {
    kek.generate_wrapped(&ticket.context, &mut OsRng).unwrap().1
}

fn sealed(len: u64, tag_byte: u8) -> SealedBlob {
    SealedBlob {
        plaintext_len: len,
        blob_len: len + 100,
        blob_sha256: Some(atrest::BlobDigest::from_bytes([tag_byte; 32])),
        segment_size: 65_536,
        format: 1,
        tag: tag(tag_byte),
    }
}

fn blob() -> BlobName {
    BlobName::random().unwrap()
}

fn seals_are_versions_visible_once_committed(backend: &Backend) {
    let catalog = backend.catalog();
    let tenant = TenantId::random(&mut OsRng).unwrap();
    let v1 = kek(1);
    let first = block_on(catalog.begin_seal(tenant, "reports/q1.pdf", &blob())).unwrap();
    assert_eq!(first.context.version, FileVersion::FIRST);
    let second = block_on(catalog.begin_seal(tenant, "reports/q1.pdf", &blob())).unwrap();
    assert_eq!(u64::from(second.context.version), 2);
    assert_eq!(first.context.file, second.context.file, "one id per name");
    let invalid = block_on(catalog.begin_seal(tenant, "a/../b", &blob())).unwrap_err();
    assert_eq!(invalid.kind(), ErrorKind::Usage);

    // In progress: not a record yet, but its blob is kept.
    let missing = block_on(catalog.record(tenant, "reports/q1.pdf", None)).unwrap_err();
    assert!(matches!(
        missing,
        FilesError::Catalog(CatalogError::UnknownFile { .. })
    ));
    assert_eq!(
        block_on(catalog.seals_in_progress())
            .unwrap()
            .iter()
            .map(|s| s.ticket.clone())
            .collect::<Vec<_>>()
            .len(),
        2
    );
    let mut names = vec![first.blob.clone(), second.blob.clone()];
    names.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(block_on(catalog.blob_names()).unwrap(), names);

    // A commit needs a key.
    let keyless = block_on(catalog.commit_seal(&first, &sealed(5, 7))).unwrap_err();
    assert!(matches!(
        keyless,
        FilesError::Catalog(CatalogError::SealNotInProgress { .. })
    ));
    let key = key_for(&first, &v1);
    block_on(catalog.attach_key(&first, &key)).unwrap();
    let again = block_on(catalog.attach_key(&first, &key)).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict, "one key per seal");
    let record = block_on(catalog.commit_seal(&first, &sealed(5, 7))).unwrap();
    assert_eq!(
        (
            record.tenant,
            record.name.as_str(),
            record.file,
            record.version,
            &record.blob,
            &record.wrapped_key,
            record.plaintext_len,
            record.blob_len,
            record.segment_size,
            record.format,
            record.tag,
            record.blob_sha256,
        ),
        (
            tenant,
            "reports/q1.pdf",
            first.context.file,
            FileVersion::FIRST,
            &first.blob,
            &key,
            5,
            105,
            65_536,
            1,
            tag(7),
            Some(atrest::BlobDigest::from_bytes([7; 32])),
        )
    );
    assert_eq!(
        block_on(catalog.record(tenant, "reports/q1.pdf", None)).unwrap(),
        record,
        "the newest sealed version"
    );
    let twice = block_on(catalog.commit_seal(&first, &sealed(5, 7))).unwrap_err();
    assert_eq!(twice.kind(), ErrorKind::Conflict);

    // Version 2 commits; then version 3 is abandoned.
    block_on(catalog.attach_key(&second, &key_for(&second, &v1))).unwrap();
    let newest = block_on(catalog.commit_seal(&second, &sealed(6, 8))).unwrap();
    assert_eq!(
        block_on(catalog.record(tenant, "reports/q1.pdf", None)).unwrap(),
        newest
    );
    assert_eq!(
        block_on(catalog.record(tenant, "reports/q1.pdf", Some(FileVersion::FIRST))).unwrap(),
        record
    );
    let third = block_on(catalog.begin_seal(tenant, "reports/q1.pdf", &blob())).unwrap();
    block_on(catalog.abandon_seal(&third)).unwrap();
    let gone = block_on(catalog.record(tenant, "reports/q1.pdf", Some(third.context.version)))
        .unwrap_err();
    assert!(matches!(
        gone,
        FilesError::Catalog(CatalogError::UnknownVersion { .. })
    ));
    assert_eq!(gone.kind(), ErrorKind::NotFound);
    // Abandoning a sealed version does nothing.
    block_on(catalog.abandon_seal(&second)).unwrap();
    assert_eq!(
        block_on(catalog.records(tenant)).unwrap(),
        vec![record, newest]
    );

    // A name whose only seal is abandoned leaves no trace: sealed again,
    // it gets a new file id and version 1.
    let lone = block_on(catalog.begin_seal(tenant, "draft", &blob())).unwrap();
    block_on(catalog.abandon_seal(&lone)).unwrap();
    let fresh = block_on(catalog.begin_seal(tenant, "draft", &blob())).unwrap();
    assert_ne!(fresh.context.file, lone.context.file);
    assert_eq!(fresh.context.version, FileVersion::FIRST);
    block_on(catalog.abandon_seal(&fresh)).unwrap();
    assert!(block_on(catalog.seals_in_progress()).unwrap().is_empty());
    assert!(
        block_on(catalog.records(TenantId::random(&mut OsRng).unwrap()))
            .unwrap()
            .is_empty()
    );
}

fn batches_are_all_or_nothing(backend: &Backend) {
    let catalog = backend.catalog();
    let tenant = TenantId::random(&mut OsRng).unwrap();
    let v1 = kek(1);
    let seals: Vec<(String, BlobName)> = (0..3).map(|i| (format!("batch/{i}"), blob())).collect();
    // One invalid name: nothing begun.
    let mut bad = seals.clone();
    bad.push(("".to_owned(), blob()));
    assert!(block_on(catalog.begin_seals(tenant, &bad)).is_err());
    assert!(block_on(catalog.seals_in_progress()).unwrap().is_empty());
    // One blob name used twice: nothing begun.
    let mut twice = seals.clone();
    twice.push(("batch/x".to_owned(), seals[0].1.clone()));
    let duplicate = block_on(catalog.begin_seals(tenant, &twice)).unwrap_err();
    assert_eq!(duplicate.kind(), ErrorKind::Conflict, "{duplicate}");
    assert!(block_on(catalog.seals_in_progress()).unwrap().is_empty());

    let tickets = block_on(catalog.begin_seals(tenant, &seals)).unwrap();
    assert_eq!(tickets.len(), 3);
    let keys: Vec<WrappedFileKey> = tickets.iter().map(|t| key_for(t, &v1)).collect();
    // One key for a seal no longer in progress: no key stored.
    block_on(catalog.abandon_seal(&tickets[2])).unwrap();
    let pairs: Vec<(&SealTicket, &WrappedFileKey)> = tickets.iter().zip(&keys).collect();
    let refused = block_on(catalog.attach_keys(&pairs)).unwrap_err();
    assert!(matches!(
        refused,
        FilesError::Catalog(CatalogError::SealNotInProgress { .. })
    ));
    assert_eq!(
        block_on(catalog.count_older_than(tenant, version(2))).unwrap(),
        0,
        "no key was attached"
    );
    block_on(catalog.attach_keys(&pairs[..2])).unwrap();
    let commits: Vec<(&SealTicket, SealedBlob)> =
        tickets.iter().map(|t| (t, sealed(10, 3))).collect();
    let refused = block_on(catalog.commit_seals(&commits)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict);
    assert!(block_on(catalog.records(tenant)).unwrap().is_empty());
    let records = block_on(catalog.commit_seals(&commits[..2])).unwrap();
    assert_eq!(
        records.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["batch/0", "batch/1"]
    );
    assert_eq!(block_on(catalog.records(tenant)).unwrap(), records);
}

fn retirement_claims_race_attached_keys(backend: &Backend) {
    let catalog = backend.catalog();
    let tenant = TenantId::random(&mut OsRng).unwrap();
    let (v1, v2, v3) = (kek(1), kek(2), kek(3));
    let ticket = block_on(catalog.begin_seal(tenant, "a", &blob())).unwrap();
    // A seal still choosing its key counts against every version.
    assert_eq!(
        block_on(catalog.claim_retirement(tenant, version(2))).unwrap(),
        1
    );
    block_on(catalog.attach_key(&ticket, &key_for(&ticket, &v1))).unwrap();
    assert_eq!(
        block_on(catalog.claim_retirement(tenant, version(1))).unwrap(),
        1
    );
    // Version 2 is used by nothing: claimed, and then refused.
    assert_eq!(
        block_on(catalog.claim_retirement(tenant, version(2))).unwrap(),
        0
    );
    let late = block_on(catalog.begin_seal(tenant, "b", &blob())).unwrap();
    let refused = block_on(catalog.attach_key(&late, &key_for(&late, &v2))).unwrap_err();
    assert!(matches!(
        refused,
        FilesError::Catalog(CatalogError::TikRetired { version: v }) if v == version(2)
    ));
    assert_eq!(refused.kind(), ErrorKind::Conflict);
    // Claiming again is harmless; other tenants are not affected.
    assert_eq!(
        block_on(catalog.claim_retirement(tenant, version(2))).unwrap(),
        1
    );
    block_on(catalog.attach_key(&late, &key_for(&late, &v3))).unwrap();
    assert_eq!(
        block_on(catalog.claim_retirement(tenant, version(2))).unwrap(),
        0
    );
    let elsewhere = TenantId::random(&mut OsRng).unwrap();
    let theirs = block_on(catalog.begin_seal(elsewhere, "a", &blob())).unwrap();
    block_on(catalog.attach_key(&theirs, &key_for(&theirs, &v2))).unwrap();

    // The index: keys under versions older than a given one.
    assert_eq!(
        block_on(catalog.count_older_than(tenant, version(3))).unwrap(),
        1
    );
    assert_eq!(
        block_on(catalog.count_older_than(tenant, version(4))).unwrap(),
        2
    );
    let older = block_on(catalog.older_than(tenant, version(4), 1)).unwrap();
    assert_eq!(older.len(), 1, "the limit holds");
    let older = block_on(catalog.older_than(tenant, version(3), 10)).unwrap();
    assert_eq!(
        older.iter().map(|(c, _)| *c).collect::<Vec<FileContext>>(),
        vec![ticket.context]
    );
}

fn rewraps_replace_only_unchanged_keys(backend: &Backend) {
    let catalog = backend.catalog();
    let tenant = TenantId::random(&mut OsRng).unwrap();
    let (v1, v2) = (kek(1), kek(2));
    let mut tickets = Vec::new();
    for name in ["x", "y"] {
        let ticket = block_on(catalog.begin_seal(tenant, name, &blob())).unwrap();
        let key = key_for(&ticket, &v1);
        block_on(catalog.attach_key(&ticket, &key)).unwrap();
        let _ = block_on(catalog.commit_seal(&ticket, &sealed(1, 1))).unwrap();
        tickets.push((ticket, key));
    }
    let batch: Vec<Rewrapped> = tickets
        .iter()
        .map(|(ticket, old)| Rewrapped {
            context: ticket.context,
            old: *old,
            new: key_for(ticket, &v2),
        })
        .collect();
    // The second entry's stored key changed meanwhile: only the first is
    // replaced.
    let changed = Rewrapped {
        old: key_for(&tickets[1].0, &v1),
        ..batch[1].clone()
    };
    assert_eq!(
        block_on(catalog.replace(&[batch[0].clone(), changed])).unwrap(),
        1
    );
    let x = block_on(catalog.record(tenant, "x", None)).unwrap();
    assert_eq!((x.wrapped_key, x.tik_version()), (batch[0].new, version(2)));
    assert_eq!(
        block_on(catalog.count_older_than(tenant, version(2))).unwrap(),
        1
    );
    assert_eq!(block_on(catalog.replace(&batch)).unwrap(), 1);
    assert_eq!(
        block_on(catalog.count_older_than(tenant, version(2))).unwrap(),
        0
    );
    let y = block_on(catalog.record(tenant, "y", None)).unwrap();
    assert_eq!(y.wrapped_key, batch[1].new);
    assert_eq!(y.tag, tag(1), "a re-wrap leaves the record's tag");
}

fn concurrent_seals_of_one_name_get_distinct_versions(backend: &Backend) {
    let tenant = TenantId::random(&mut OsRng).unwrap();
    const INSTANCES: usize = 4;
    const SEALS: usize = 5;
    let catalogs: Vec<Arc<dyn Catalog>> = (0..INSTANCES).map(|_| backend.catalog()).collect();
    let barrier = Barrier::new(INSTANCES);
    let v1 = kek(1);
    let mut versions: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = catalogs
            .iter()
            .map(|catalog| {
                let (barrier, v1) = (&barrier, &v1);
                scope.spawn(move || {
                    barrier.wait();
                    (0..SEALS)
                        .map(|_| {
                            let ticket =
                                block_on(catalog.begin_seal(tenant, "shared", &blob())).unwrap();
                            block_on(catalog.attach_key(&ticket, &key_for(&ticket, v1))).unwrap();
                            let record =
                                block_on(catalog.commit_seal(&ticket, &sealed(1, 2))).unwrap();
                            u64::from(record.version)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    versions.sort_unstable();
    let expected: Vec<u64> = (1..=(INSTANCES * SEALS) as u64).collect();
    assert_eq!(versions, expected);
    let records = block_on(catalogs[0].records(tenant)).unwrap();
    assert_eq!(records.len(), INSTANCES * SEALS);
    assert!(records.iter().all(|r| r.file == records[0].file));
    let _ = FileId::random(&mut OsRng).unwrap();
}
