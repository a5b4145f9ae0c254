//! The contract of the catalog ([`Catalog`](atrest::Catalog)): tenant
//! names, seals and the versions they make, all-or-nothing batches, and the
//! index of wrapped keys that re-wrapping and TIK retirement use.

use std::sync::Arc;

use atrest::catalog::{MediaType, Precondition, SealTicket, SealedBlob};
use atrest::{BlobName, CatalogError, Error as FilesError, ErrorKind, FileRecord, TenantName};
use atrest_filekey::{FileContext, FileVersion, Kek, KeyId, OsRng, TenantId, WrappedFileKey};
use atrest_tenant::Rewrapped;
use tokio::sync::Barrier;

use super::{Backend, tag, version};

pub async fn tenant_names_are_unique_both_ways(backend: &dyn Backend) {
    let catalog = backend.catalog().await;
    let (a, b) = (
        TenantId::random(&mut OsRng).unwrap(),
        TenantId::random(&mut OsRng).unwrap(),
    );
    catalog.name_tenant("zeta", a, &tag(9)).await.unwrap();
    catalog.name_tenant("Alpha", b, &tag(9)).await.unwrap();
    let taken = catalog.name_tenant("zeta", b, &tag(9)).await.unwrap_err();
    assert!(matches!(
        taken,
        FilesError::Catalog(CatalogError::TenantNameTaken { .. })
    ));
    assert_eq!(taken.kind(), ErrorKind::Conflict);
    // A tenant has one name.
    let second = catalog.name_tenant("other", a, &tag(9)).await.unwrap_err();
    assert_eq!(second.kind(), ErrorKind::Conflict, "{second}");
    let invalid = catalog
        .name_tenant(" padded", a, &tag(9))
        .await
        .unwrap_err();
    assert_eq!(invalid.kind(), ErrorKind::Usage);

    // Each name comes back with its tenant and its tag.
    let named = |name: &str, tenant, byte| TenantName {
        name: name.to_owned(),
        tenant,
        tag: Some(tag(byte)),
    };
    assert_eq!(
        catalog.tenant_named("zeta").await.unwrap(),
        Some(named("zeta", a, 9))
    );
    assert_eq!(catalog.tenant_named("nope").await.unwrap(), None);
    assert_eq!(
        catalog.tenant_name(b).await.unwrap(),
        Some(named("Alpha", b, 9))
    );
    // By name, byte by byte: upper case first.
    assert_eq!(
        catalog.tenant_names().await.unwrap(),
        vec![named("Alpha", b, 9), named("zeta", a, 9)]
    );
    // A name that has its tag keeps it; one of another tenant is not
    // tagged for this one.
    assert!(!catalog.tag_tenant_name("zeta", a, &tag(3)).await.unwrap());
    assert!(!catalog.tag_tenant_name("zeta", b, &tag(3)).await.unwrap());
    assert_eq!(
        catalog.tenant_named("zeta").await.unwrap(),
        Some(named("zeta", a, 9))
    );
    catalog.unname_tenant("zeta").await.unwrap();
    catalog.unname_tenant("zeta").await.unwrap();
    assert_eq!(catalog.tenant_name(a).await.unwrap(), None);
    catalog.name_tenant("other", a, &tag(9)).await.unwrap();
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
        media_type: None,
        sealed_at: 1_700_000_000,
        tag: tag(tag_byte),
        precondition: Precondition::Any,
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

    // A name given twice in one batch gets two versions, in order: a new
    // name 1 and 2, a name with a version the next two.
    let again: Vec<(String, BlobName)> = ["batch/0", "batch/new", "batch/0", "batch/new"]
        .iter()
        .map(|name| ((*name).to_owned(), blob()))
        .collect();
    let tickets = catalog.begin_seals(tenant, &again).await.unwrap();
    let versions: Vec<u64> = tickets
        .iter()
        .map(|t| u64::from(t.context.version))
        .collect();
    assert_eq!(versions, [2, 1, 3, 2]);
    assert_eq!(tickets[0].context.file, records[0].file);
    assert_eq!(tickets[1].context.file, tickets[3].context.file);
    let keys: Vec<WrappedFileKey> = tickets.iter().map(|t| key_for(t, &v1)).collect();
    let pairs: Vec<(&SealTicket, &WrappedFileKey)> = tickets.iter().zip(&keys).collect();
    catalog.attach_keys(&pairs).await.unwrap();
    let commits: Vec<(&SealTicket, SealedBlob)> =
        tickets.iter().map(|t| (t, sealed(10, 3))).collect();
    let committed = catalog.commit_seals(&commits).await.unwrap();
    let committed: Vec<(&str, u64)> = committed
        .iter()
        .map(|r| (r.name.as_str(), u64::from(r.version)))
        .collect();
    assert_eq!(
        committed,
        [
            ("batch/0", 2),
            ("batch/new", 1),
            ("batch/0", 3),
            ("batch/new", 2)
        ]
    );
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

    // In a batch, a key under the retired version behind keys under a live
    // one: refused, and none of the batch's keys stored.
    let seals: Vec<(String, BlobName)> = (0..3).map(|i| (format!("c/{i}"), blob())).collect();
    let batch = catalog.begin_seals(tenant, &seals).await.unwrap();
    let keys = [
        key_for(&batch[0], &v3),
        key_for(&batch[1], &v3),
        key_for(&batch[2], &v2),
    ];
    let pairs: Vec<(&SealTicket, &WrappedFileKey)> = batch.iter().zip(&keys).collect();
    let refused = catalog.attach_keys(&pairs).await.unwrap_err();
    assert!(matches!(
        refused,
        FilesError::Catalog(CatalogError::TikRetired { version: v }) if v == version(2)
    ));
    assert_eq!(
        catalog.count_older_than(tenant, version(4)).await.unwrap(),
        2,
        "no key of the batch was attached"
    );
    for ticket in &batch {
        catalog.abandon_seal(ticket).await.unwrap();
    }
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

/// Batches of one tenant begun, keyed and committed at once by several
/// instances (the uploads of several users, or of several processes):
/// every batch commits — none is refused as a conflict with the others —
/// whether its names are new or have versions already, and every name ends
/// with one version per batch that named it.
pub async fn concurrent_batches_of_one_tenant_all_commit(backend: &dyn Backend) {
    let tenant = TenantId::random(&mut OsRng).unwrap();
    const INSTANCES: usize = 4;
    const BATCHES: usize = 8;
    const ITEMS: usize = 24;
    let barrier = Arc::new(Barrier::new(INSTANCES));
    let v1 = Arc::new(kek(1));
    let mut workers = Vec::new();
    let mut first = None;
    for instance in 0..INSTANCES {
        let catalog = backend.catalog().await;
        first.get_or_insert_with(|| Arc::clone(&catalog));
        let (barrier, v1) = (Arc::clone(&barrier), Arc::clone(&v1));
        workers.push(tokio::spawn(async move {
            let _ = barrier.wait().await;
            for batch in 0..BATCHES {
                // Even batches name new files; odd ones the previous
                // batch's names again.
                let names = (0..ITEMS).map(|item| format!("{instance}/{}/{item}", batch / 2));
                let seals: Vec<(String, BlobName)> = names.map(|name| (name, blob())).collect();
                let tickets = catalog.begin_seals(tenant, &seals).await.unwrap();
                let keys: Vec<WrappedFileKey> =
                    tickets.iter().map(|ticket| key_for(ticket, &v1)).collect();
                let attached: Vec<_> = tickets.iter().zip(&keys).collect();
                catalog.attach_keys(&attached).await.unwrap();
                let done: Vec<_> = tickets.iter().map(|t| (t, sealed(1, 2))).collect();
                let records = catalog.commit_seals(&done).await.unwrap();
                let expected = u64::try_from(batch % 2 + 1).unwrap();
                assert!(records.iter().all(|r| u64::from(r.version) == expected));
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let records = first.unwrap().records(tenant).await.unwrap();
    assert_eq!(records.len(), INSTANCES * BATCHES * ITEMS);
}

/// Begins a seal of `name` with a key attached: ready to commit.
async fn ready(catalog: &dyn atrest::Catalog, tenant: TenantId, name: &str) -> SealTicket {
    let ticket = catalog.begin_seal(tenant, name, &blob()).await.unwrap();
    catalog
        .attach_key(&ticket, &key_for(&ticket, &kek(1)))
        .await
        .unwrap();
    ticket
}

pub async fn commits_hold_to_their_precondition_and_keep_the_media_type(backend: &dyn Backend) {
    let catalog = backend.catalog().await;
    let tenant = TenantId::random(&mut OsRng).unwrap();
    let with = |precondition: Precondition| SealedBlob {
        precondition,
        ..sealed(1, 3)
    };
    let precondition_failed = |error: FilesError, expected: Option<u64>| match error {
        FilesError::Catalog(CatalogError::PreconditionFailed { newest, .. }) => {
            assert_eq!(newest.map(u64::from), expected);
        }
        other => panic!("not a failed precondition: {other}"),
    };

    // Present, or one of given versions: not for a file without one.
    for precondition in [
        Precondition::Present,
        Precondition::NewestAmong(vec![FileVersion::FIRST]),
    ] {
        let ticket = ready(catalog.as_ref(), tenant, "doc").await;
        let refused = catalog
            .commit_seal(&ticket, &with(precondition))
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Conflict);
        precondition_failed(refused, None);
        // The seal is still in progress: its caller abandons it.
        catalog.abandon_seal(&ticket).await.unwrap();
    }
    // Absent: the first version, with its media type kept.
    let ticket = ready(catalog.as_ref(), tenant, "doc").await;
    let first = SealedBlob {
        media_type: Some(MediaType::new("text/plain; charset=utf-8").unwrap()),
        ..with(Precondition::Absent)
    };
    let record = catalog.commit_seal(&ticket, &first).await.unwrap();
    assert_eq!(
        record.media_type.as_deref(),
        Some("text/plain; charset=utf-8")
    );
    let read = catalog.record(tenant, "doc", None).await.unwrap();
    assert_eq!(
        read.media_type.as_deref(),
        Some("text/plain; charset=utf-8")
    );
    let v1 = record.version;
    // Absent again: refused, naming the newest version.
    let ticket = ready(catalog.as_ref(), tenant, "doc").await;
    precondition_failed(
        catalog
            .commit_seal(&ticket, &with(Precondition::Absent))
            .await
            .unwrap_err(),
        Some(u64::from(v1)),
    );
    catalog.abandon_seal(&ticket).await.unwrap();

    // Two writers that both read version 1 and replace it: one wins,
    // whichever of their versions was begun first.
    let (a, b) = (
        ready(catalog.as_ref(), tenant, "doc").await,
        ready(catalog.as_ref(), tenant, "doc").await,
    );
    let other = backend.catalog().await;
    let replace = with(Precondition::NewestAmong(vec![v1]));
    let (won, lost) = tokio::join!(
        other.commit_seal(&b, &replace),
        catalog.commit_seal(&a, &replace)
    );
    let (winner, loser) = match (won, lost) {
        (Ok(record), Err(error)) => (record, (error, &a)),
        (Err(error), Ok(record)) => (record, (error, &b)),
        (won, lost) => panic!("both or neither committed: {won:?} {lost:?}"),
    };
    precondition_failed(loser.0, Some(u64::from(winner.version)));
    catalog.abandon_seal(loser.1).await.unwrap();
    assert_eq!(
        catalog.record(tenant, "doc", None).await.unwrap().version,
        winner.version
    );
    // The newest version among several, and Present: both hold now.
    let ticket = ready(catalog.as_ref(), tenant, "doc").await;
    catalog
        .commit_seal(
            &ticket,
            &with(Precondition::NewestAmong(vec![v1, winner.version])),
        )
        .await
        .unwrap();
    let ticket = ready(catalog.as_ref(), tenant, "doc").await;
    catalog
        .commit_seal(&ticket, &with(Precondition::Present))
        .await
        .unwrap();
    assert_eq!(catalog.records(tenant).await.unwrap().len(), 4);

    // Seals committed together are checked in order, each seeing the ones
    // before it as committed: a create, then a replace of that create.
    let seals: Vec<(String, BlobName)> = (0..2).map(|_| ("pair".to_owned(), blob())).collect();
    let tickets = catalog.begin_seals(tenant, &seals).await.unwrap();
    let keys: Vec<WrappedFileKey> = tickets.iter().map(|t| key_for(t, &kek(1))).collect();
    let pairs: Vec<(&SealTicket, &WrappedFileKey)> = tickets.iter().zip(&keys).collect();
    catalog.attach_keys(&pairs).await.unwrap();
    let first = tickets[0].context.version;
    let in_order = [
        (&tickets[0], with(Precondition::Absent)),
        (&tickets[1], with(Precondition::NewestAmong(vec![first]))),
    ];
    // Out of order, the replace finds no version yet: nothing commits.
    let reversed = [in_order[1].clone(), in_order[0].clone()];
    precondition_failed(catalog.commit_seals(&reversed).await.unwrap_err(), None);
    let committed = catalog.commit_seals(&in_order).await.unwrap();
    assert_eq!(committed.len(), 2);
    assert_eq!(committed[1].version, tickets[1].context.version);
}

pub async fn a_forgotten_tenant_leaves_no_record_and_frees_its_name(backend: &dyn Backend) {
    let catalog = backend.catalog().await;
    let (gone, kept) = (
        TenantId::random(&mut OsRng).unwrap(),
        TenantId::random(&mut OsRng).unwrap(),
    );
    catalog.name_tenant("gone", gone, &tag(9)).await.unwrap();
    catalog.name_tenant("kept", kept, &tag(9)).await.unwrap();
    let mut blobs = Vec::new();
    for tenant in [gone, kept] {
        for name in ["a", "b"] {
            let ticket = ready(catalog.as_ref(), tenant, name).await;
            blobs.push((tenant, ticket.blob.clone()));
            catalog.commit_seal(&ticket, &sealed(1, 4)).await.unwrap();
        }
    }
    // One seal of the tenant still in progress: forgotten too.
    let _in_progress = ready(catalog.as_ref(), gone, "c").await;
    assert_eq!(catalog.forget_tenant(gone).await.unwrap(), 3);
    assert!(catalog.records(gone).await.unwrap().is_empty());
    assert_eq!(catalog.records(kept).await.unwrap().len(), 2);
    assert_eq!(catalog.tenant_named("gone").await.unwrap(), None);
    assert!(catalog.seals_in_progress().await.unwrap().is_empty());
    let named = catalog.blob_names().await.unwrap();
    for (tenant, blob) in &blobs {
        assert_eq!(named.contains(blob), *tenant == kept);
    }
    // The name is free; forgetting again is no error.
    let reborn = TenantId::random(&mut OsRng).unwrap();
    catalog.name_tenant("gone", reborn, &tag(9)).await.unwrap();
    assert_eq!(catalog.forget_tenant(gone).await.unwrap(), 0);
    assert_eq!(
        catalog
            .tenant_named("gone")
            .await
            .unwrap()
            .map(|n| n.tenant),
        Some(reborn)
    );
}

pub async fn removed_versions_leave_listings_and_their_names_go_with_the_last(
    backend: &dyn Backend,
) {
    let catalog = backend.catalog().await;
    let tenant = TenantId::random(&mut OsRng).unwrap();
    let mut versions = Vec::new();
    for _ in 0..3 {
        let ticket = ready(catalog.as_ref(), tenant, "doc").await;
        versions.push(catalog.commit_seal(&ticket, &sealed(1, 5)).await.unwrap());
    }
    let other = ready(catalog.as_ref(), tenant, "other").await;
    let other = catalog.commit_seal(&other, &sealed(1, 6)).await.unwrap();
    let file = versions[0].file;

    // One version: gone from records and blob names, the rest kept.
    let removed = catalog
        .remove_versions(tenant, "doc", Some(versions[1].version))
        .await
        .unwrap();
    assert_eq!(removed, vec![versions[1].clone()]);
    let left: Vec<u64> = catalog
        .records(tenant)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.name == "doc")
        .map(|r| u64::from(r.version))
        .collect();
    assert_eq!(left, vec![1, 3]);
    assert!(
        !catalog
            .blob_names()
            .await
            .unwrap()
            .contains(&versions[1].blob)
    );
    let again = catalog
        .remove_versions(tenant, "doc", Some(versions[1].version))
        .await
        .unwrap_err();
    assert!(matches!(
        again,
        FilesError::Catalog(CatalogError::UnknownVersion { .. })
    ));
    assert!(matches!(
        catalog
            .remove_versions(tenant, "none", None)
            .await
            .unwrap_err(),
        FilesError::Catalog(CatalogError::UnknownFile { .. })
    ));

    // Every version, while a seal of the name is in progress: the name
    // stays (the seal still needs its id).
    let in_progress = ready(catalog.as_ref(), tenant, "doc").await;
    let removed = catalog.remove_versions(tenant, "doc", None).await.unwrap();
    assert_eq!(removed.len(), 2);
    let committed = catalog
        .commit_seal(&in_progress, &sealed(1, 7))
        .await
        .unwrap();
    assert_eq!(committed.file, file);
    // Then the last one: the name goes, and comes back with a new id.
    let _ = catalog.remove_versions(tenant, "doc", None).await.unwrap();
    assert!(matches!(
        catalog.record(tenant, "doc", None).await.unwrap_err(),
        FilesError::Catalog(CatalogError::UnknownFile { .. })
    ));
    let reborn = ready(catalog.as_ref(), tenant, "doc").await;
    assert_ne!(reborn.context.file, file);
    assert_eq!(reborn.context.version, FileVersion::FIRST);
    assert_eq!(catalog.records(tenant).await.unwrap(), vec![other]);
}

/// A version number names one version of a file for good: once the newest
/// versions are removed, the next seal gets a number none of them had
/// (an entity tag a client keeps, file id and version, never comes to name
/// other content), in a batch too, from another instance too, and past
/// the numbers of seals still in progress.
pub async fn version_numbers_are_never_given_twice(backend: &dyn Backend) {
    let catalog = backend.catalog().await;
    let tenant = TenantId::random(&mut OsRng).unwrap();
    let mut committed = Vec::new();
    for _ in 0..3 {
        let ticket = ready(catalog.as_ref(), tenant, "doc").await;
        committed.push(catalog.commit_seal(&ticket, &sealed(1, 5)).await.unwrap());
    }
    let numbers = |records: &[FileRecord]| -> Vec<u64> {
        records.iter().map(|r| u64::from(r.version)).collect()
    };
    assert_eq!(numbers(&committed), vec![1, 2, 3]);
    // The newest removed: the next is 4, not 3 again.
    let _ = catalog
        .remove_versions(tenant, "doc", Some(committed[2].version))
        .await
        .unwrap();
    let fourth = ready(catalog.as_ref(), tenant, "doc").await;
    assert_eq!(u64::from(fourth.context.version), 4);
    let fourth = catalog.commit_seal(&fourth, &sealed(1, 6)).await.unwrap();
    // And again, the next two in one batch: 5 and 6.
    let _ = catalog
        .remove_versions(tenant, "doc", Some(fourth.version))
        .await
        .unwrap();
    let blobs = [blob(), blob()];
    let tickets = catalog
        .begin_seals(
            tenant,
            &[
                ("doc".to_owned(), blobs[0].clone()),
                ("doc".to_owned(), blobs[1].clone()),
            ],
        )
        .await
        .unwrap();
    let given: Vec<u64> = tickets
        .iter()
        .map(|t| u64::from(t.context.version))
        .collect();
    assert_eq!(given, vec![5, 6]);
    // A removed version's number is not given again to another instance
    // over the same database either.
    let other = backend.catalog().await;
    let seventh = other.begin_seal(tenant, "doc", &blob()).await.unwrap();
    assert_eq!(u64::from(seventh.context.version), 7);
    // With 5 to 7 still in progress, the newest sealed version (2) removed:
    // the next is 8.
    let _ = catalog
        .remove_versions(tenant, "doc", Some(committed[1].version))
        .await
        .unwrap();
    let eighth = catalog.begin_seal(tenant, "doc", &blob()).await.unwrap();
    assert_eq!(u64::from(eighth.context.version), 8);
}
