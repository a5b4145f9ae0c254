//! The contract of the key metadata store ([`MetadataStore`]) and of the
//! catalog ([`Catalog`]), written once and run by every backend crate
//! (`atrest-sqlite`, `atrest-postgres`) against its own stores, as
//! `object_store` ships its integration suite:
//!
//! ```ignore
//! atrest_test_support::contract_suite!(|test: &str| MyBackend::new(test));
//! ```
//!
//! declares one test per item of the contract, each on a fresh
//! [`Backend`] made for it (a new database, or files in a new directory).

// Each item of the contract is a test: it panics where the store breaks
// the contract, and its name says what the contract is.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::missing_panics_doc,
    missing_docs
)]

use std::sync::Arc;

use atrest::catalog::{SealTicket, SealedBlob};
use atrest::{BlobName, Catalog, CatalogError, Error as FilesError, ErrorKind};
use atrest_filekey::{
    FileContext, FileVersion, Kek, KeyId, KeyVersion, OsRng, TenantId, WrappedFileKey,
};
use atrest_tenant::{
    Error, MetadataStore, RecordTag, Rewrapped, RootKeySlot, SlotRole, TagUpdate, TenantKind,
    TenantRecord, TenantState, TikWrap,
};
use tokio::sync::Barrier;

/// The stores of one backend over one database: each call opens another
/// instance over it (another process of the service, with connections of
/// its own).
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// A key metadata store over the database.
    async fn store(&self) -> Arc<dyn MetadataStore>;

    /// A catalog over the database.
    async fn catalog(&self) -> Arc<dyn Catalog>;
}

/// Runs one contract test on a multi-threaded runtime of its own (the
/// concurrency tests race tasks on it).
pub fn run<F: Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

/// Declares the contract's tests, each on a backend `make(test_name)`
/// returns (an expression of a type that implements [`Backend`]).
#[macro_export]
macro_rules! contract_suite {
    ($make:expr) => {
        $crate::contract_suite!(@each $make;
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
    };
    (@each $make:expr; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                let backend = ($make)(stringify!($test));
                $crate::contract::run($crate::contract::$test(&backend));
            }
        )*
    };
}

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

pub async fn tenant_names_are_unique_both_ways(backend: &dyn Backend) {
    let catalog = backend.catalog().await;
    let (a, b) = (
        TenantId::random(&mut OsRng).unwrap(),
        TenantId::random(&mut OsRng).unwrap(),
    );
    catalog.name_tenant("zeta", a).await.unwrap();
    catalog.name_tenant("Alpha", b).await.unwrap();
    let taken = catalog.name_tenant("zeta", b).await.unwrap_err();
    assert!(matches!(
        taken,
        FilesError::Catalog(CatalogError::TenantNameTaken { .. })
    ));
    assert_eq!(taken.kind(), ErrorKind::Conflict);
    // A tenant has one name.
    let second = catalog.name_tenant("other", a).await.unwrap_err();
    assert_eq!(second.kind(), ErrorKind::Conflict, "{second}");
    let invalid = catalog.name_tenant(" padded", a).await.unwrap_err();
    assert_eq!(invalid.kind(), ErrorKind::Usage);

    assert_eq!(catalog.tenant_named("zeta").await.unwrap(), Some(a));
    assert_eq!(catalog.tenant_named("nope").await.unwrap(), None);
    assert_eq!(
        catalog.tenant_name(b).await.unwrap().as_deref(),
        Some("Alpha")
    );
    // By name, byte by byte: upper case first.
    assert_eq!(
        catalog.tenant_names().await.unwrap(),
        vec![("Alpha".to_owned(), b), ("zeta".to_owned(), a)]
    );
    catalog.unname_tenant("zeta").await.unwrap();
    catalog.unname_tenant("zeta").await.unwrap();
    assert_eq!(catalog.tenant_name(a).await.unwrap(), None);
    catalog.name_tenant("other", a).await.unwrap();
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

pub async fn seals_are_versions_visible_once_committed(backend: &dyn Backend) {
    let catalog = backend.catalog().await;
    let tenant = TenantId::random(&mut OsRng).unwrap();
    let v1 = kek(1);
    let first = catalog
        .begin_seal(tenant, "reports/q1.pdf", &blob())
        .await
        .unwrap();
    assert_eq!(first.context.version, FileVersion::FIRST);
    let second = catalog
        .begin_seal(tenant, "reports/q1.pdf", &blob())
        .await
        .unwrap();
    assert_eq!(u64::from(second.context.version), 2);
    assert_eq!(first.context.file, second.context.file, "one id per name");
    let invalid = catalog
        .begin_seal(tenant, "a/../b", &blob())
        .await
        .unwrap_err();
    assert_eq!(invalid.kind(), ErrorKind::Usage);

    // In progress: not a record yet, but its blob is kept.
    let missing = catalog
        .record(tenant, "reports/q1.pdf", None)
        .await
        .unwrap_err();
    assert!(matches!(
        missing,
        FilesError::Catalog(CatalogError::UnknownFile { .. })
    ));
    assert_eq!(
        catalog
            .seals_in_progress()
            .await
            .unwrap()
            .iter()
            .map(|s| s.ticket.clone())
            .collect::<Vec<_>>()
            .len(),
        2
    );
    let mut names = vec![first.blob.clone(), second.blob.clone()];
    names.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(catalog.blob_names().await.unwrap(), names);

    // A commit needs a key.
    let keyless = catalog
        .commit_seal(&first, &sealed(5, 7))
        .await
        .unwrap_err();
    assert!(matches!(
        keyless,
        FilesError::Catalog(CatalogError::SealNotInProgress { .. })
    ));
    let key = key_for(&first, &v1);
    catalog.attach_key(&first, &key).await.unwrap();
    let again = catalog.attach_key(&first, &key).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict, "one key per seal");
    let record = catalog.commit_seal(&first, &sealed(5, 7)).await.unwrap();
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
        catalog
            .record(tenant, "reports/q1.pdf", None)
            .await
            .unwrap(),
        record,
        "the newest sealed version"
    );
    let twice = catalog
        .commit_seal(&first, &sealed(5, 7))
        .await
        .unwrap_err();
    assert_eq!(twice.kind(), ErrorKind::Conflict);

    // Version 2 commits; then version 3 is abandoned.
    catalog
        .attach_key(&second, &key_for(&second, &v1))
        .await
        .unwrap();
    let newest = catalog.commit_seal(&second, &sealed(6, 8)).await.unwrap();
    assert_eq!(
        catalog
            .record(tenant, "reports/q1.pdf", None)
            .await
            .unwrap(),
        newest
    );
    assert_eq!(
        catalog
            .record(tenant, "reports/q1.pdf", Some(FileVersion::FIRST))
            .await
            .unwrap(),
        record
    );
    let third = catalog
        .begin_seal(tenant, "reports/q1.pdf", &blob())
        .await
        .unwrap();
    catalog.abandon_seal(&third).await.unwrap();
    let gone = catalog
        .record(tenant, "reports/q1.pdf", Some(third.context.version))
        .await
        .unwrap_err();
    assert!(matches!(
        gone,
        FilesError::Catalog(CatalogError::UnknownVersion { .. })
    ));
    assert_eq!(gone.kind(), ErrorKind::NotFound);
    // Abandoning a sealed version does nothing.
    catalog.abandon_seal(&second).await.unwrap();
    assert_eq!(catalog.records(tenant).await.unwrap(), vec![record, newest]);

    // A name whose only seal is abandoned leaves no trace: sealed again,
    // it gets a new file id and version 1.
    let lone = catalog.begin_seal(tenant, "draft", &blob()).await.unwrap();
    catalog.abandon_seal(&lone).await.unwrap();
    let fresh = catalog.begin_seal(tenant, "draft", &blob()).await.unwrap();
    assert_ne!(fresh.context.file, lone.context.file);
    assert_eq!(fresh.context.version, FileVersion::FIRST);
    catalog.abandon_seal(&fresh).await.unwrap();
    assert!(catalog.seals_in_progress().await.unwrap().is_empty());
    assert!(
        catalog
            .records(TenantId::random(&mut OsRng).unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn batches_are_all_or_nothing(backend: &dyn Backend) {
    let catalog = backend.catalog().await;
    let tenant = TenantId::random(&mut OsRng).unwrap();
    let v1 = kek(1);
    let seals: Vec<(String, BlobName)> = (0..3).map(|i| (format!("batch/{i}"), blob())).collect();
    // One invalid name: nothing begun.
    let mut bad = seals.clone();
    bad.push(("".to_owned(), blob()));
    assert!(catalog.begin_seals(tenant, &bad).await.is_err());
    assert!(catalog.seals_in_progress().await.unwrap().is_empty());
    // One blob name used twice: nothing begun.
    let mut twice = seals.clone();
    twice.push(("batch/x".to_owned(), seals[0].1.clone()));
    let duplicate = catalog.begin_seals(tenant, &twice).await.unwrap_err();
    assert_eq!(duplicate.kind(), ErrorKind::Conflict, "{duplicate}");
    assert!(catalog.seals_in_progress().await.unwrap().is_empty());

    let tickets = catalog.begin_seals(tenant, &seals).await.unwrap();
    assert_eq!(tickets.len(), 3);
    let keys: Vec<WrappedFileKey> = tickets.iter().map(|t| key_for(t, &v1)).collect();
    // One key for a seal no longer in progress: no key stored.
    catalog.abandon_seal(&tickets[2]).await.unwrap();
    let pairs: Vec<(&SealTicket, &WrappedFileKey)> = tickets.iter().zip(&keys).collect();
    let refused = catalog.attach_keys(&pairs).await.unwrap_err();
    assert!(matches!(
        refused,
        FilesError::Catalog(CatalogError::SealNotInProgress { .. })
    ));
    assert_eq!(
        catalog.count_older_than(tenant, version(2)).await.unwrap(),
        0,
        "no key was attached"
    );
    catalog.attach_keys(&pairs[..2]).await.unwrap();
    let commits: Vec<(&SealTicket, SealedBlob)> =
        tickets.iter().map(|t| (t, sealed(10, 3))).collect();
    let refused = catalog.commit_seals(&commits).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict);
    assert!(catalog.records(tenant).await.unwrap().is_empty());
    let records = catalog.commit_seals(&commits[..2]).await.unwrap();
    assert_eq!(
        records.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["batch/0", "batch/1"]
    );
    assert_eq!(catalog.records(tenant).await.unwrap(), records);
}

pub async fn retirement_claims_race_attached_keys(backend: &dyn Backend) {
    let catalog = backend.catalog().await;
    let tenant = TenantId::random(&mut OsRng).unwrap();
    let (v1, v2, v3) = (kek(1), kek(2), kek(3));
    let ticket = catalog.begin_seal(tenant, "a", &blob()).await.unwrap();
    // A seal still choosing its key counts against every version.
    assert_eq!(
        catalog.claim_retirement(tenant, version(2)).await.unwrap(),
        1
    );
    catalog
        .attach_key(&ticket, &key_for(&ticket, &v1))
        .await
        .unwrap();
    assert_eq!(
        catalog.claim_retirement(tenant, version(1)).await.unwrap(),
        1
    );
    // Version 2 is used by nothing: claimed, and then refused.
    assert_eq!(
        catalog.claim_retirement(tenant, version(2)).await.unwrap(),
        0
    );
    let late = catalog.begin_seal(tenant, "b", &blob()).await.unwrap();
    let refused = catalog
        .attach_key(&late, &key_for(&late, &v2))
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        FilesError::Catalog(CatalogError::TikRetired { version: v }) if v == version(2)
    ));
    assert_eq!(refused.kind(), ErrorKind::Conflict);
    // Claiming again is harmless; other tenants are not affected.
    assert_eq!(
        catalog.claim_retirement(tenant, version(2)).await.unwrap(),
        1
    );
    catalog
        .attach_key(&late, &key_for(&late, &v3))
        .await
        .unwrap();
    assert_eq!(
        catalog.claim_retirement(tenant, version(2)).await.unwrap(),
        0
    );
    let elsewhere = TenantId::random(&mut OsRng).unwrap();
    let theirs = catalog.begin_seal(elsewhere, "a", &blob()).await.unwrap();
    catalog
        .attach_key(&theirs, &key_for(&theirs, &v2))
        .await
        .unwrap();

    // The index: keys under versions older than a given one.
    assert_eq!(
        catalog.count_older_than(tenant, version(3)).await.unwrap(),
        1
    );
    assert_eq!(
        catalog.count_older_than(tenant, version(4)).await.unwrap(),
        2
    );
    let older = catalog.older_than(tenant, version(4), 1).await.unwrap();
    assert_eq!(older.len(), 1, "the limit holds");
    let older = catalog.older_than(tenant, version(3), 10).await.unwrap();
    assert_eq!(
        older.iter().map(|(c, _)| *c).collect::<Vec<FileContext>>(),
        vec![ticket.context]
    );
}

pub async fn rewraps_replace_only_unchanged_keys(backend: &dyn Backend) {
    let catalog = backend.catalog().await;
    let tenant = TenantId::random(&mut OsRng).unwrap();
    let (v1, v2) = (kek(1), kek(2));
    let mut tickets = Vec::new();
    for name in ["x", "y"] {
        let ticket = catalog.begin_seal(tenant, name, &blob()).await.unwrap();
        let key = key_for(&ticket, &v1);
        catalog.attach_key(&ticket, &key).await.unwrap();
        let _ = catalog.commit_seal(&ticket, &sealed(1, 1)).await.unwrap();
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
        catalog.replace(&[batch[0].clone(), changed]).await.unwrap(),
        1
    );
    let x = catalog.record(tenant, "x", None).await.unwrap();
    assert_eq!((x.wrapped_key, x.tik_version()), (batch[0].new, version(2)));
    assert_eq!(
        catalog.count_older_than(tenant, version(2)).await.unwrap(),
        1
    );
    assert_eq!(catalog.replace(&batch).await.unwrap(), 1);
    assert_eq!(
        catalog.count_older_than(tenant, version(2)).await.unwrap(),
        0
    );
    let y = catalog.record(tenant, "y", None).await.unwrap();
    assert_eq!(y.wrapped_key, batch[1].new);
    assert_eq!(y.tag, tag(1), "a re-wrap leaves the record's tag");
}

pub async fn concurrent_seals_of_one_name_get_distinct_versions(backend: &dyn Backend) {
    let tenant = TenantId::random(&mut OsRng).unwrap();
    const INSTANCES: usize = 4;
    const SEALS: usize = 5;
    let barrier = Arc::new(Barrier::new(INSTANCES));
    let v1 = Arc::new(kek(1));
    let mut workers = Vec::new();
    let mut first = None;
    for _ in 0..INSTANCES {
        let catalog = backend.catalog().await;
        first.get_or_insert_with(|| Arc::clone(&catalog));
        let (barrier, v1) = (Arc::clone(&barrier), Arc::clone(&v1));
        workers.push(tokio::spawn(async move {
            let _ = barrier.wait().await;
            let mut versions = Vec::new();
            for _ in 0..SEALS {
                let ticket = catalog.begin_seal(tenant, "shared", &blob()).await.unwrap();
                catalog
                    .attach_key(&ticket, &key_for(&ticket, &v1))
                    .await
                    .unwrap();
                let record = catalog.commit_seal(&ticket, &sealed(1, 2)).await.unwrap();
                versions.push(u64::from(record.version));
            }
            versions
        }));
    }
    let mut versions = Vec::new();
    for worker in workers {
        versions.extend(worker.await.unwrap());
    }
    versions.sort_unstable();
    let expected: Vec<u64> = (1..=(INSTANCES * SEALS) as u64).collect();
    assert_eq!(versions, expected);
    let records = first.unwrap().records(tenant).await.unwrap();
    assert_eq!(records.len(), INSTANCES * SEALS);
    assert!(records.iter().all(|r| r.file == records[0].file));
}
