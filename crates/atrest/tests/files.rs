//! Sealing and opening through the composition, with the catalog as the
//! home of records: round trips (whole files, ranges, every blob store),
//! versions, rotation with a seal in flight, seals of one name from two
//! processes, every way a record and a blob can fail to match, and the
//! classification of errors.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tokio::io::AsyncWriteExt as _;

use atrest::audit::Event;
use atrest::blobs::BlobStore;
use atrest::filekey::{FileId, FileVersion, OsRng, TenantId, WrappedFileKey};
use atrest::tenant::{Access, Decision, KeyHierarchy, MasterKey, ServiceKeys, TenantKeyDir};
use atrest::{
    BlobName, Blobs, Catalog as _, CatalogError, DeliveredKey, Error, ErrorKind, FileRecord,
    FileSelector, Files, MemoryBlobs, WriterSink,
};
use atrest_sqlite::{SqliteCatalog, SqliteSealedKeys, SqliteStore};
use atrest_test_support::TempDir;
use atrest_test_support::files::{read, read_range};

/// The service's root keys in `path`, sealed under `master`.
async fn service_keys(path: &Path, master: MasterKey) -> Arc<ServiceKeys> {
    let sealed = SqliteSealedKeys::open(path).await.unwrap();
    Arc::new(ServiceKeys::new("service", Arc::new(sealed), master).unwrap())
}

#[derive(Default)]
struct Records(
    std::sync::Mutex<Vec<atrest::audit::Record>>,
    /// While set, records of wrapped file keys fail.
    std::sync::atomic::AtomicBool,
);

#[async_trait::async_trait]
impl atrest::audit::Audit for Records {
    async fn record(
        &self,
        record: atrest::audit::Record,
    ) -> Result<atrest::audit::Receipt, atrest::audit::Error> {
        if self.1.load(std::sync::atomic::Ordering::SeqCst)
            && matches!(record.event, Event::FileKeyWrapped { .. })
        {
            return Err(atrest::audit::Error::Poisoned("the disk is gone".into()));
        }
        let mut all = self.0.lock().unwrap();
        all.push(record);
        Ok(atrest::audit::Receipt {
            seq: all.len() as u64,
            hash: [0; 32],
        })
    }
}

const ALICE: Access<'static> = Access::User {
    principal: "alice@a",
};

struct World {
    files: Files,
    catalog: Arc<SqliteCatalog>,
    records: Arc<Records>,
    a: TenantId,
    b: TenantId,
}

/// A hierarchy over the key files and databases in `dir` (created on first
/// use, reopened after), with tenants `a` and `b` whose ids are kept in
/// `dir/tenants`, and blobs in `blobs`.
async fn world_with(dir: &Path, blobs: Arc<dyn Blobs>) -> World {
    let master_path = dir.join("master.key");
    let fresh = !master_path.exists();
    let master = if fresh {
        MasterKey::create_file(&master_path).unwrap()
    } else {
        MasterKey::open_file(&master_path).unwrap()
    };
    let service = service_keys(&dir.join("keys.sqlite"), master.clone()).await;
    if fresh {
        service.create_key("root").await.unwrap();
    }
    let records = Arc::new(Records::default());
    let catalog = Arc::new(
        SqliteCatalog::open(&dir.join("catalog.sqlite"))
            .await
            .unwrap(),
    );
    let (a, b) = if fresh {
        let ids = (
            TenantId::random(&mut OsRng).unwrap(),
            TenantId::random(&mut OsRng).unwrap(),
        );
        // Names for the tests' own look-ups (the catalog alone: not
        // checked).
        let tag = atrest::tenant::RecordTag::from_slice(&[0; 32]).unwrap();
        catalog.name_tenant("a", ids.0, &tag).await.unwrap();
        catalog.name_tenant("b", ids.1, &tag).await.unwrap();
        ids
    } else {
        (
            catalog.tenant_named("a").await.unwrap().unwrap().tenant,
            catalog.tenant_named("b").await.unwrap().unwrap().tenant,
        )
    };
    let tenant_keys =
        Arc::new(TenantKeyDir::open(&dir.join("tenant-keys"), master.clone()).unwrap());
    let keys = KeyHierarchy::builder(
        Arc::new(SqliteStore::open(&dir.join("meta.sqlite")).await.unwrap()),
        tenant_keys,
        records.clone(),
    )
    .provider(service)
    .service_root_key("service", "root")
    .policy(Arc::new(
        move |access: &Access<'_>, tenant: TenantId, _: FileId| match access {
            Access::System { .. } => Decision::Allow,
            Access::User { principal } if principal.ends_with("@a") && tenant == a => {
                Decision::Allow
            }
            Access::User { principal } if principal.ends_with("@b") && tenant == b => {
                Decision::Allow
            }
            _ => Decision::Deny("not a member".into()),
        },
    ))
    .build()
    .unwrap();
    if fresh {
        keys.create_service_tenant(a).await.unwrap();
        keys.create_service_tenant(b).await.unwrap();
    }
    let files = Files::new(Arc::new(keys), catalog.clone(), blobs, records.clone());
    World {
        files,
        catalog,
        records,
        a,
        b,
    }
}

async fn world(dir: &TempDir) -> (World, Arc<MemoryBlobs>) {
    let blobs = Arc::new(MemoryBlobs::new());
    (world_with(dir.path(), blobs.clone()).await, blobs)
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 7 % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

async fn open_all(
    world: &World,
    access: &Access<'_>,
    name: &str,
    version: u64,
) -> Result<Vec<u8>, Error> {
    let version = FileVersion::try_from(version).unwrap();
    read(&world.files, access, world.a, name, Some(version), None)
        .await
        .map(|(_, out)| out)
}

#[tokio::test]
async fn seal_open_and_ranges_round_trip_and_are_audited() {
    let dir = TempDir::new("round");
    let (world, _) = world(&dir).await;
    let files = &world.files;
    for (i, len) in [0, 1, 65_535 - 56, 65_536, 1_000_000]
        .into_iter()
        .enumerate()
    {
        let plain = data(len, i as u8);
        let name = format!("file {i}");
        let record = files
            .seal(&ALICE, world.a, &name, plain.as_slice())
            .await
            .unwrap();
        assert_eq!(record.plaintext_len, len as u64);
        assert_eq!(
            (record.tenant, record.name.as_str()),
            (world.a, name.as_str())
        );
        assert_eq!(record.version, FileVersion::FIRST);
        assert_eq!(files.record(world.a, &name, None).await.unwrap(), record);
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<FileRecord>(&json).unwrap(), record);
        let (opened, out) = read(files, &ALICE, world.a, &name, None, None)
            .await
            .unwrap();
        assert_eq!((opened, out), (record.clone(), plain.clone()));
        for (start, end) in [(0, len), (len / 3, len / 2), (len, len)] {
            let mut part = Vec::new();
            let (_, n) = read_range(
                files,
                &ALICE,
                world.a,
                &name,
                None,
                start as u64..end as u64,
                &mut part,
            )
            .await
            .unwrap();
            assert_eq!(
                (part.as_slice(), n),
                (&plain[start..end], (end - start) as u64)
            );
        }
    }
    assert_eq!(world.catalog.records(world.a).await.unwrap().len(), 5);
    assert!(world.catalog.records(world.b).await.unwrap().is_empty());
    let all = world.records.0.lock().unwrap();
    let count = |f: fn(&Event) -> bool| all.iter().filter(|r| f(&r.event)).count();
    assert_eq!(count(|e| matches!(e, Event::FileSealed { .. })), 5);
    assert_eq!(count(|e| matches!(e, Event::FileOpened { .. })), 20);
}

/// With several threads asked for, runs are sealed and opened on the
/// blocking pool, several at once: the files are the same, ranges and
/// tampering included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_sealed_and_opened_on_the_blocking_pool_make_the_same_files() {
    let dir = TempDir::new("parallel");
    let (world, blobs) = world(&dir).await;
    let options = atrest::SealOptions {
        stream: atrest::stream::Options::default()
            .parallelism(atrest::stream::Parallelism::threads(4)),
        blob_digests: true,
    };
    let World {
        files, records, a, ..
    } = world;
    let files = files.with_options(options);
    let plain = data(5_000_000, 9);
    let record = files
        .seal(&ALICE, a, "parallel", plain.as_slice())
        .await
        .unwrap();
    assert_eq!(record.plaintext_len, plain.len() as u64);
    let (_, out) = read(&files, &ALICE, a, "parallel", None, None)
        .await
        .unwrap();
    assert!(out == plain);
    let (_, part) = read(
        &files,
        &ALICE,
        a,
        "parallel",
        None,
        Some(1_234_567..3_456_789),
    )
    .await
    .unwrap();
    assert!(part == plain[1_234_567..3_456_789]);
    // The same bytes as a blob sealed a run at a time in the task.
    let sealed = blobs.bytes(&record.blob).unwrap();
    let key = files
        .keys()
        .release_file_key(&ALICE, &record.context(), &record.wrapped_key)
        .await
        .unwrap();
    let opened = atrest::stream::Opener::new(
        &key,
        &record.context().encode(),
        atrest::stream::Options::default(),
    )
    .open(&sealed)
    .unwrap();
    assert!(opened == plain);
    // A flipped byte in the middle is found, whichever thread opens it.
    let mut tampered = sealed;
    tampered[2_500_000] ^= 1;
    blobs.replace(&record.blob, tampered);
    let refused = read(&files, &ALICE, a, "parallel", None, None)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Integrity, "{refused}");
    drop(records);
}

#[tokio::test]
async fn each_seal_of_a_name_is_a_new_version() {
    let dir = TempDir::new("versions");
    let (world, _) = world(&dir).await;
    let files = &world.files;
    for v in 1..=3u8 {
        let record = files
            .seal(&ALICE, world.a, "notes.txt", data(1000, v).as_slice())
            .await
            .unwrap();
        assert_eq!(u64::from(record.version), u64::from(v));
    }
    let records = world.catalog.records(world.a).await.unwrap();
    assert_eq!(records.len(), 3);
    // One file id for every version; one blob each.
    assert!(records.iter().all(|r| r.file == records[0].file));
    let mut blobs: Vec<_> = records.iter().map(|r| r.blob.clone()).collect();
    blobs.dedup();
    assert_eq!(blobs.len(), 3);
    for v in 1..=3u8 {
        assert_eq!(
            open_all(&world, &ALICE, "notes.txt", v.into())
                .await
                .unwrap(),
            data(1000, v)
        );
    }
    let (newest, _) = read(files, &ALICE, world.a, "notes.txt", None, None)
        .await
        .unwrap();
    assert_eq!(u64::from(newest.version), 3);
    // The same name in another tenant is another file.
    let bob = Access::User { principal: "bob@b" };
    let other = files
        .seal(&bob, world.b, "notes.txt", &b"b"[..])
        .await
        .unwrap();
    assert_eq!(other.version, FileVersion::FIRST);
    assert_ne!(other.file, records[0].file);
    // No such version, no such file.
    let missing = open_all(&world, &ALICE, "notes.txt", 4).await.unwrap_err();
    assert!(matches!(
        missing,
        Error::Catalog(CatalogError::UnknownVersion { .. })
    ));
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    let missing = read(files, &ALICE, world.a, "nope", None, None)
        .await
        .unwrap_err();
    assert!(matches!(
        missing,
        Error::Catalog(CatalogError::UnknownFile { .. })
    ));
}

#[tokio::test]
async fn rotation_with_a_seal_in_flight_loses_no_file() {
    let dir = TempDir::new("rotate");
    let (world, _) = world(&dir).await;
    let files = &world.files;
    let keys = files.keys();
    let originals: Vec<Vec<u8>> = (0..5).map(|i| data(200_000 + i * 1000, i as u8)).collect();
    for (i, plain) in originals.iter().enumerate() {
        let _ = files
            .seal(&ALICE, world.a, &format!("doc-{i}"), plain.as_slice())
            .await
            .unwrap();
    }
    let first = keys.tenant(world.a).await.unwrap().current_tik;

    // A seal that has its key (under the first TIK version) and has
    // written part of its blob when the rotation starts: its source pauses
    // after the first megabyte.
    let in_flight = data(3_000_000, 99);
    let (mut source, reader) = tokio::io::duplex(1 << 16);
    let (reached, reached_rx) = tokio::sync::oneshot::channel();
    let (resume, resume_rx) = tokio::sync::oneshot::channel::<()>();
    let feeding = async {
        source.write_all(&in_flight[..1_000_000]).await.unwrap();
        reached.send(()).unwrap();
        resume_rx.await.unwrap();
        source.write_all(&in_flight[1_000_000..]).await.unwrap();
        drop(source);
    };
    let sealing = files.seal(
        &ALICE,
        world.a,
        "in-flight",
        tokio::io::BufReader::new(reader),
    );
    let rotating = async {
        reached_rx.await.unwrap();
        // While it is paused: roll, re-wrap (the seal in flight included),
        // retire the old version.
        let second = keys.roll_tik(world.a).await.unwrap();
        assert_ne!(first, second);
        // Before the re-wrap, the old version is in use, by the sealed
        // records and by the seal in flight.
        let refused = files.retire_tik(world.a, first).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Conflict);
        let report = files.rewrap(world.a, 2, &mut |_| {}).await.unwrap();
        assert_eq!(report.rewrapped, 6, "5 records and the seal in flight");
        assert_eq!(
            files.retire_unused_tiks(world.a).await.unwrap(),
            vec![first]
        );
        assert_eq!(keys.tik_versions(world.a).await.unwrap(), vec![second]);
        resume.send(()).unwrap();
        second
    };
    let ((), sealed, second) = tokio::join!(feeding, sealing, rotating);
    assert_eq!(sealed.unwrap().tik_version(), second);

    // Every file opens, the one sealed during the rotation included.
    for (i, plain) in originals.iter().enumerate() {
        let (record, out) = read(files, &ALICE, world.a, &format!("doc-{i}"), None, None)
            .await
            .unwrap();
        assert_eq!(&out, plain);
        assert_eq!(
            record.tik_version(),
            keys.tenant(world.a).await.unwrap().current_tik
        );
    }
    assert_eq!(
        open_all(&world, &ALICE, "in-flight", 1).await.unwrap(),
        in_flight
    );

    // And again, all in one call.
    let (third, report, retired) = files.rotate_tik(world.a, 1000, &mut |_| {}).await.unwrap();
    assert_eq!(report.rewrapped, 6);
    assert_eq!(retired.len(), 1);
    for i in 0..5 {
        let (record, _) = read(files, &ALICE, world.a, &format!("doc-{i}"), None, None)
            .await
            .unwrap();
        assert_eq!(record.tik_version(), third);
    }
}

/// A writer of the catalog who edits a row's TIK version column (here to
/// the version the next rotation makes current) cannot have the version
/// the row's key is really wrapped under retired, and destroyed with the
/// file, by that rotation: the index counts the version the wrapped key
/// names, so the version is refused as in use and the file still opens.
#[tokio::test]
async fn an_edited_tik_version_column_never_gets_a_used_version_retired() {
    let dir = TempDir::new("tik-column");
    let (world, _) = world(&dir).await;
    let files = &world.files;
    let plain = data(10_000, 9);
    let record = files
        .seal(&ALICE, world.a, "kept", plain.as_slice())
        .await
        .unwrap();
    assert_eq!(u32::from(record.tik_version()), 1);
    let same = format!("file = x'{}'", hex(record.file.as_bytes()));
    edit_catalog(
        &dir,
        &format!("UPDATE catalog_versions SET tik_version = 2 WHERE {same}"),
    );
    let (current, _, retired) = files.rotate_tik(world.a, 1000, &mut |_| {}).await.unwrap();
    assert_eq!(u32::from(current), 2);
    assert!(retired.is_empty(), "retired {retired:?}");
    let (_, out) = read(files, &ALICE, world.a, "kept", None, None)
        .await
        .unwrap();
    assert!(out == plain);
    // The other way (a column older than the key): re-wrapping refuses
    // the row rather than act on what the column says.
    edit_catalog(
        &dir,
        &format!(
            "UPDATE catalog_versions SET tik_version = 1, wrapped = x'{}' WHERE {same}",
            hex(record.wrapped_key.as_ref())
        ),
    );
    let (_, out) = read(files, &ALICE, world.a, "kept", None, None)
        .await
        .unwrap();
    assert!(out == plain);
    let (_, report, retired) = files.rotate_tik(world.a, 1000, &mut |_| {}).await.unwrap();
    assert_eq!(report.rewrapped, 1);
    assert_eq!(retired.len(), 2, "{retired:?}");
    edit_catalog(
        &dir,
        &format!("UPDATE catalog_versions SET tik_version = 1 WHERE {same}"),
    );
    let refused = files
        .rotate_tik(world.a, 1000, &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Integrity, "{refused}");
    let (_, out) = read(files, &ALICE, world.a, "kept", None, None)
        .await
        .unwrap();
    assert!(out == plain);
}

/// A record whose wrapped key names a TIK version the tenant does not
/// have (its bytes edited; or the catalog restored from an older backup
/// than the key metadata) is an integrity failure, audited: not a file
/// that is missing.
#[tokio::test]
async fn a_record_naming_a_tik_version_the_tenant_lacks_is_tampered_not_missing() {
    let dir = TempDir::new("unknown-tik");
    let (world, _) = world(&dir).await;
    let files = &world.files;
    let record = files
        .seal(&ALICE, world.a, "kept", &b"kept"[..])
        .await
        .unwrap();
    let mut wrapped = record.wrapped_key.as_ref().to_vec();
    wrapped[WrappedFileKey::KEK_VERSION_AT].copy_from_slice(&99u32.to_be_bytes());
    edit_catalog(
        &dir,
        &format!(
            "UPDATE catalog_versions SET wrapped = x'{}' WHERE file = x'{}'",
            hex(&wrapped),
            hex(record.file.as_bytes())
        ),
    );
    let failed_before = failed_opens(&world);
    let error = read(files, &ALICE, world.a, "kept", None, None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Integrity, "{error}");
    assert!(
        matches!(error, Error::Catalog(CatalogError::Tampered { .. })),
        "{error}"
    );
    assert_eq!(failed_opens(&world), failed_before + 1);
}

#[tokio::test]
async fn a_seal_choosing_its_key_blocks_every_retire() {
    let dir = TempDir::new("choosing");
    let (world, _) = world(&dir).await;
    let files = &world.files;
    let _ = files.seal(&ALICE, world.a, "x", &b"x"[..]).await.unwrap();
    let first = files.keys().tenant(world.a).await.unwrap().current_tik;
    let _ = files.keys().roll_tik(world.a).await.unwrap();
    let _ = files.rewrap(world.a, 10, &mut |_| {}).await.unwrap();
    // A seal that has begun but has no key yet could wrap under any
    // version: nothing is retired meanwhile.
    let blob = BlobName::random().unwrap();
    let ticket = world.catalog.begin_seal(world.a, "y", &blob).await.unwrap();
    assert!(files.retire_unused_tiks(world.a).await.unwrap().is_empty());
    world.catalog.abandon_seal(&ticket).await.unwrap();
    assert_eq!(
        files.retire_unused_tiks(world.a).await.unwrap(),
        vec![first]
    );
}

#[tokio::test]
async fn failed_and_abandoned_seals_leave_nothing() {
    let dir = TempDir::new("abandon");
    let (world, blobs) = world(&dir).await;
    let files = &world.files;

    // A reader that fails halfway: no record, no blob, no seal in progress.
    struct Failing(usize);
    impl tokio::io::AsyncRead for Failing {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.0 == 0 {
                return std::task::Poll::Ready(Err(std::io::Error::other("the client went away")));
            }
            let n = buf.remaining().min(self.0);
            buf.initialize_unfilled_to(n).fill(1);
            buf.advance(n);
            self.0 -= n;
            std::task::Poll::Ready(Ok(()))
        }
    }
    let failed = files
        .seal(
            &ALICE,
            world.a,
            "broken",
            tokio::io::BufReader::new(Failing(500_000)),
        )
        .await
        .unwrap_err();
    assert_eq!(failed.kind(), ErrorKind::Io, "{failed}");
    assert!(world.catalog.seals_in_progress().await.unwrap().is_empty());
    assert!(blobs.list().await.unwrap().is_empty());
    assert!(files.record(world.a, "broken", None).await.is_err());

    // A seal whose process died: left in progress until collected.
    let blob = BlobName::random().unwrap();
    let ticket = world
        .catalog
        .begin_seal(world.a, "died", &blob)
        .await
        .unwrap();
    let mut upload = blobs.create(&blob).await.unwrap();
    upload
        .write(Bytes::from_static(b"half a blob"))
        .await
        .unwrap();
    upload.finish().await.unwrap();
    let report = files
        .collect_abandoned_seals(std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(report.abandoned_seals.is_empty(), "too recent to collect");
    let report = files
        .collect_abandoned_seals(std::time::Duration::ZERO)
        .await
        .unwrap();
    // Started this second: collected once the cut-off has passed it.
    if report.abandoned_seals.is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let report = files
            .collect_abandoned_seals(std::time::Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(report.abandoned_seals.len(), 1);
    }
    assert!(world.catalog.seals_in_progress().await.unwrap().is_empty());
    assert!(blobs.list().await.unwrap().is_empty());
    // Its commit now fails instead of publishing a half blob.
    let committed = (world.catalog.commit_seal(
        &ticket,
        &atrest::catalog::SealedBlob {
            plaintext_len: 1,
            blob_len: 1,
            blob_sha256: None,
            segment_size: 65_536,
            format: 1,
            media_type: None,
            sealed_at: 1_700_000_000,
            tag: atrest::tenant::RecordTag::from_slice(&[0; 32]).unwrap(),
            precondition: atrest::Precondition::Any,
        },
    ))
    .await;
    assert!(matches!(
        committed,
        Err(Error::Catalog(CatalogError::SealNotInProgress { .. }))
    ));
}

/// Swaps two file names in the catalog database, as a writer of the
/// metadata database could.
fn swap_names(dir: &TempDir, a: &str, b: &str) {
    for (from, to) in [(a, "swap"), (b, a), ("swap", b)] {
        edit_catalog(
            dir,
            &format!("UPDATE catalog_files SET name = '{to}' WHERE name = '{from}'"),
        );
    }
}

/// Edits the catalog database directly, as a writer of the metadata
/// database could.
fn edit_catalog(dir: &TempDir, sql: &str) {
    let db =
        atrest_test_support::sqlite::Connection::open(dir.path().join("catalog.sqlite")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert!(db.execute(sql, []).unwrap() > 0, "{sql}");
}

#[tokio::test]
async fn records_and_blobs_that_do_not_match_are_refused() {
    let dir = TempDir::new("mismatch");
    let (world, blobs) = world(&dir).await;
    let files = &world.files;
    let plain = data(300_000, 1);
    let record = files
        .seal(&ALICE, world.a, "one", plain.as_slice())
        .await
        .unwrap();
    let other = files
        .seal(&ALICE, world.a, "two", plain.as_slice())
        .await
        .unwrap();
    let open = |name: &'static str| async move {
        read(files, &ALICE, world.a, name, None, None)
            .await
            .map(|(_, out)| out)
    };
    let integrity = |result: Result<Vec<u8>, Error>| {
        let error = result.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Integrity, "{error}");
    };
    let original = blobs.bytes(&record.blob).unwrap();

    // Another file's blob under this record.
    blobs.replace(&record.blob, blobs.bytes(&other.blob).unwrap());
    integrity(open("one").await);
    // A tampered, a truncated and an extended blob.
    let mut tampered = original.clone();
    tampered[150_000] ^= 1;
    blobs.replace(&record.blob, tampered);
    integrity(open("one").await);
    blobs.replace(&record.blob, original[..original.len() - 1].to_vec());
    integrity(open("one").await);
    let mut extended = original.clone();
    extended.extend_from_slice(&[0; 16]);
    blobs.replace(&record.blob, extended);
    integrity(open("one").await);
    // A prefix that declares huge segments: refused from the header, before
    // any segment buffer is sized by it.
    let mut huge = original.clone();
    huge[6..10].copy_from_slice(&(16u32 << 20).to_be_bytes());
    blobs.replace(&record.blob, huge);
    let refused = open("one").await.unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Stream(atrest::stream::Error::SegmentSizeMismatch {
                expected: 65_536,
                found: 16_777_216
            })
        ),
        "{refused}"
    );
    assert_eq!(refused.kind(), ErrorKind::Integrity);
    blobs.replace(&record.blob, original);
    assert_eq!(open("one").await.unwrap(), plain);

    // Records edited in the database: a lying length, format or segment
    // size, another file's blob or wrapped key.
    let same = format!("file = x'{}'", hex(record.file.as_bytes()));
    // A media type given to a version that had none (text/html, to have
    // a browser run the file) is an edit like any other.
    for edit in [
        "plaintext_len = 1",
        "format = 9",
        "segment_size = 7",
        "media_type = 'text/html'",
    ] {
        edit_catalog(
            &dir,
            &format!("UPDATE catalog_versions SET {edit} WHERE {same}"),
        );
        integrity(open("one").await);
        let undo = match edit {
            "plaintext_len = 1" => "plaintext_len = 300000".to_owned(),
            "format = 9" => "format = 1".to_owned(),
            "media_type = 'text/html'" => "media_type = NULL".to_owned(),
            _ => "segment_size = 65536".to_owned(),
        };
        edit_catalog(
            &dir,
            &format!("UPDATE catalog_versions SET {undo} WHERE {same}"),
        );
        assert_eq!(open("one").await.unwrap(), plain);
    }
    edit_catalog(
        &dir,
        &format!(
            "UPDATE catalog_versions SET blob = '{}' WHERE {same}",
            BlobName::random().unwrap()
        ),
    );
    // The record's tag covers its blob's name.
    let moved = open("one").await.unwrap_err();
    assert!(
        matches!(moved, Error::Catalog(CatalogError::Tampered { .. })),
        "{moved}"
    );
    edit_catalog(
        &dir,
        &format!(
            "UPDATE catalog_versions SET blob = '{}' WHERE {same}",
            record.blob
        ),
    );
    assert_eq!(open("one").await.unwrap(), plain);
    edit_catalog(
        &dir,
        &format!(
            "UPDATE catalog_versions SET wrapped = (SELECT wrapped FROM catalog_versions
             WHERE file = x'{}') WHERE {same}",
            hex(other.file.as_bytes())
        ),
    );
    integrity(open("one").await);
    edit_catalog(
        &dir,
        &format!(
            "UPDATE catalog_versions SET wrapped = x'{}' WHERE {same}",
            hex(record.wrapped_key.as_ref())
        ),
    );
    assert_eq!(open("one").await.unwrap(), plain);
    // A seal time no date can show (past the year 9999): corrupt, refused
    // where the record is read, before anything formats it.
    edit_catalog(
        &dir,
        &format!("UPDATE catalog_versions SET sealed_at = 253402300800 WHERE {same}"),
    );
    let late = open("one").await.unwrap_err();
    assert!(
        matches!(late, Error::Catalog(CatalogError::Corrupt("seal time"))),
        "{late}"
    );
    assert_eq!(late.kind(), ErrorKind::Integrity);
    // Another seal time, one a date can show: the record's tag covers it.
    edit_catalog(
        &dir,
        &format!(
            "UPDATE catalog_versions SET sealed_at = {} WHERE {same}",
            record.sealed_at - 3600
        ),
    );
    let earlier = open("one").await.unwrap_err();
    assert!(
        matches!(earlier, Error::Catalog(CatalogError::Tampered { .. })),
        "{earlier}"
    );
    edit_catalog(
        &dir,
        &format!(
            "UPDATE catalog_versions SET sealed_at = {} WHERE {same}",
            record.sealed_at
        ),
    );
    assert_eq!(open("one").await.unwrap(), plain);
    // A record tagged before tags covered the seal time still opens (its
    // time is the one thing of it not covered).
    let metadata = files.keys().metadata_key(world.a).await.unwrap();
    let mut message = world.a.encode().to_vec();
    for text in [record.name.as_str(), record.blob.as_str()] {
        message.extend_from_slice(&(text.len() as u64).to_be_bytes());
        message.extend_from_slice(text.as_bytes());
    }
    message.extend_from_slice(&record.file.encode());
    message.extend_from_slice(&record.version.encode());
    message.extend_from_slice(&record.plaintext_len.to_be_bytes());
    message.extend_from_slice(&record.blob_len.to_be_bytes());
    message.extend_from_slice(&record.segment_size.to_be_bytes());
    message.push(record.format);
    message.push(1);
    message.extend_from_slice(record.blob_sha256.unwrap().as_bytes());
    let legacy = metadata.tag(b"atrest/v1 file record", &message);
    edit_catalog(
        &dir,
        &format!(
            "UPDATE catalog_versions SET tag = x'{}', sealed_at = 1 WHERE {same}",
            hex(legacy.as_bytes())
        ),
    );
    assert_eq!(open("one").await.unwrap(), plain);
    edit_catalog(
        &dir,
        &format!(
            "UPDATE catalog_versions SET tag = x'{}', sealed_at = {} WHERE {same}",
            hex(record.tag.as_bytes()),
            record.sealed_at
        ),
    );
    assert_eq!(open("one").await.unwrap(), plain);

    // Two files' records swapped: each name now leads to the other's file
    // id, blob and key, all authentic for that file. The records' tags
    // bind each to its name, so both are refused.
    let plain_two = data(1_000, 2);
    let _ = files
        .seal(&ALICE, world.a, "two", plain_two.as_slice())
        .await
        .unwrap();
    swap_names(&dir, "one", "two");
    for name in ["one", "two"] {
        let swapped = open(name).await.unwrap_err();
        assert!(
            matches!(swapped, Error::Catalog(CatalogError::Tampered { .. })),
            "{swapped}"
        );
        assert_eq!(swapped.kind(), ErrorKind::Integrity);
    }
    // Asking for version 2 of "one" now finds the second version of the
    // file once named "two": refused too.
    let version_two = read(
        files,
        &ALICE,
        world.a,
        "one",
        Some(FileVersion::try_from(2u64).unwrap()),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(version_two.kind(), ErrorKind::Integrity, "{version_two}");
    swap_names(&dir, "one", "two");
    assert_eq!(open("one").await.unwrap(), plain);
    assert_eq!(open("two").await.unwrap(), plain_two);

    // A principal of another tenant; a range outside the file.
    let bob = Access::User { principal: "bob@b" };
    let refused = read(files, &bob, world.a, "two", None, None)
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        Error::Keys(atrest::tenant::Error::Denied { .. })
    ));
    assert_eq!(refused.kind(), ErrorKind::Refused);
    let mut sink = Vec::new();
    let range = read_range(files, &ALICE, world.a, "two", None, 0..300_001, &mut sink)
        .await
        .unwrap_err();
    assert!(matches!(range, Error::InvalidRange { .. }));
    assert_eq!(range.kind(), ErrorKind::Usage);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn names_follow_one_rule() {
    let dir = TempDir::new("names");
    let (world, _) = world(&dir).await;
    for bad in [
        "",
        " lead",
        "trail ",
        "zero\u{200B}width",
        "new\nline",
        &"x".repeat(257),
        "a/../b",
        "../up",
        "/rooted",
        "dir/",
        "a//b",
        ".",
    ] {
        let error = world
            .files
            .seal(&ALICE, world.a, bad, &b"x"[..])
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::Catalog(CatalogError::InvalidName { .. })),
            "{bad:?}: {error}"
        );
        assert_eq!(error.kind(), ErrorKind::Usage);
    }
    // 256 characters of three bytes each are fine: the limit counts
    // characters.
    let long = "\u{20AC}".repeat(256);
    let _ = world
        .files
        .seal(&ALICE, world.a, &long, &b"x"[..])
        .await
        .unwrap();
    // Names may read as paths.
    let _ = world
        .files
        .seal(&ALICE, world.a, "reports/2026/q1.pdf", &b"x"[..])
        .await
        .unwrap();
    let taken = world
        .catalog
        .name_tenant(
            "a",
            TenantId::random(&mut OsRng).unwrap(),
            &atrest::tenant::RecordTag::from_slice(&[0; 32]).unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(taken.kind(), ErrorKind::Conflict);
}

#[tokio::test]
async fn the_blob_holds_no_identifiers() {
    let dir = TempDir::new("opaque");
    let (world, blobs) = world(&dir).await;
    let record = world
        .files
        .seal(&ALICE, world.a, "secret-name.txt", &[0u8; 100_000][..])
        .await
        .unwrap();
    let blob = blobs.bytes(&record.blob).unwrap();
    for needle in [
        world.a.as_bytes().as_slice(),
        record.file.as_bytes(),
        world.a.to_string().as_bytes(),
        record.file.to_string().as_bytes(),
        b"secret-name",
    ] {
        assert!(!blob.windows(needle.len()).any(|w| w == needle));
    }
    // Zero plaintext does not come through either.
    assert!(!blob.windows(64).any(|w| w.iter().all(|&b| b == 0)));
}

/// Seals a 20 MiB file into `store` (in a world kept in `dir`), opens it
/// whole and by a range, checks an upload dropped before `finish` leaves
/// nothing, and deletes the blob (twice: deleting is idempotent). Returns
/// the sealed record.
async fn round_trip(store: &Arc<dyn Blobs>, dir: &Path) -> FileRecord {
    let plain = data(20 << 20, 5);
    std::fs::create_dir_all(dir).unwrap();
    let world = world_with(dir, store.clone()).await;
    let record = world
        .files
        .seal(&ALICE, world.a, "big", plain.as_slice())
        .await
        .unwrap();
    assert_eq!(
        store.list().await.unwrap(),
        vec![(record.blob.clone(), record.blob_len)]
    );
    let (_, out) = read(&world.files, &ALICE, world.a, "big", None, None)
        .await
        .unwrap();
    assert!(out == plain, "{}", store.location());
    let mut part = Vec::new();
    let _ = read_range(
        &world.files,
        &ALICE,
        world.a,
        "big",
        None,
        9_000_000..9_100_000,
        &mut part,
    )
    .await
    .unwrap();
    assert_eq!(part, plain[9_000_000..9_100_000]);
    // An upload dropped before finish leaves nothing behind.
    let abandoned = BlobName::random().unwrap();
    let mut upload = store.create(&abandoned).await.unwrap();
    for _ in 0..3 {
        upload.write(Bytes::from(vec![1; 1 << 20])).await.unwrap();
    }
    drop(upload);
    // An object store's abort runs in a task of its own.
    tokio::task::yield_now().await;
    let missing = store.open(&abandoned).await.err().unwrap();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert_eq!(store.list().await.unwrap().len(), 1);
    store.delete(&record.blob).await.unwrap();
    store.delete(&record.blob).await.unwrap();
    assert!(store.list().await.unwrap().is_empty());
    record
}

#[tokio::test]
async fn every_blob_store_round_trips() {
    let dir = TempDir::new("blobs");
    let stores: Vec<Arc<dyn Blobs>> = vec![
        Arc::new(BlobStore::local(&dir.path().join("local")).unwrap()),
        Arc::new(
            BlobStore::from_url(&format!("file://{}", &dir.path().join("url").display())).unwrap(),
        ),
        Arc::new(BlobStore::from_url("memory:///").unwrap()),
        Arc::new(MemoryBlobs::new()),
    ];
    for (i, store) in stores.iter().enumerate() {
        let _ = round_trip(store, &dir.path().join(format!("world-{i}"))).await;
    }
    let bad = BlobStore::from_url("nope://x").unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Usage, "{bad}");
    assert!("not-a-name".parse::<BlobName>().is_err());
}

/// Blobs in Azure storage (the Azurite emulator, through `object_store`'s
/// Azure backend): the same round trip, and nothing Azurite keeps — blob
/// names, bytes, metadata, its own database — holds a tenant id, a file id
/// or a file name.
#[tokio::test]
async fn azure_storage_round_trips_and_learns_no_identifier() {
    let azurite = atrest_test_support::azurite::azurite();
    let dir = TempDir::new("azure");
    let container = format!("atrest-{}", BlobName::random().unwrap());
    azurite.create_container(&container);
    let store: Arc<dyn Blobs> = Arc::new(
        BlobStore::from_url_with_options(&format!("az://{container}"), azurite.options()).unwrap(),
    );
    println!("blobs at {}", store.location());
    let _ = round_trip(&store, &dir.path().join("round-trip")).await;

    // A file kept, with a name worth looking for.
    std::fs::create_dir_all(dir.path().join("kept")).unwrap();
    let world = world_with(&dir.path().join("kept"), store.clone()).await;
    let name = "board-minutes-confidential.txt";
    let record = world
        .files
        .seal(&ALICE, world.a, name, data(3 << 20, 9).as_slice())
        .await
        .unwrap();
    let (_, out) = read(&world.files, &ALICE, world.a, name, None, None)
        .await
        .unwrap();
    assert_eq!(out, data(3 << 20, 9));
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("tenant id", world.a.as_bytes().to_vec()),
        ("tenant id", world.a.to_string().into_bytes()),
        ("tenant id", hex(world.a.as_bytes()).into_bytes()),
        ("file id", record.file.as_bytes().to_vec()),
        ("file id", record.file.to_string().into_bytes()),
        ("file id", hex(record.file.as_bytes()).into_bytes()),
        ("file name", name.as_bytes().to_vec()),
        ("file name", b"board-minutes".to_vec()),
    ];
    // Azurite writes its database on a timer: wait until it names the blob.
    let started = std::time::Instant::now();
    let files = loop {
        let files = azurite.stored_files();
        let mentions_blob = files
            .iter()
            .any(|(_, bytes)| contains(bytes, record.blob.as_str().as_bytes()));
        if mentions_blob {
            break files;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "Azurite never stored blob {}",
            record.blob
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(files.iter().map(|(_, b)| b.len()).sum::<usize>() > 3 << 20);
    for (path, bytes) in &files {
        for (what, needle) in &needles {
            assert!(
                !contains(bytes, needle),
                "Azurite's {} holds the {what}",
                path.display()
            );
        }
    }
    store.delete(&record.blob).await.unwrap();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The child half of [`two_processes_sealing_one_name_get_two_versions`]:
/// seals `SEAL_NAME` with the content of seed `SEAL_SEED` in the world at
/// `SEAL_DIR`, after waiting for the start file.
#[tokio::test]
async fn seal_child() {
    let (Ok(dir), Ok(seed)) = (std::env::var("SEAL_DIR"), std::env::var("SEAL_SEED")) else {
        return; // run only as a child of the test below
    };
    let dir = PathBuf::from(dir);
    let seed: u8 = seed.parse().unwrap();
    let world = world_with(
        &dir,
        Arc::new(BlobStore::local(&dir.join("blobs")).unwrap()),
    )
    .await;
    while !dir.join("start").exists() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for _ in 0..5 {
        let record = world
            .files
            .seal(
                &ALICE,
                world.a,
                "shared.bin",
                data(150_000, seed).as_slice(),
            )
            .await
            .unwrap();
        println!("sealed version {}", u64::from(record.version));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sealing_one_name_get_two_versions() {
    let dir = TempDir::new("procs");
    let world = world_with(
        dir.path(),
        Arc::new(BlobStore::local(&dir.path().join("blobs")).unwrap()),
    )
    .await;
    let children: Vec<_> = [1u8, 2]
        .into_iter()
        .map(|seed| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "seal_child", "--nocapture", "--test-threads=1"])
                .env("SEAL_DIR", dir.path())
                .env("SEAL_SEED", seed.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Tasks of this process seal the same name at the same time, on the
    // runtime's threads.
    let world = Arc::new(world);
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let start = dir.path().join("start");
    let sealers: Vec<_> = [3u8, 4]
        .into_iter()
        .map(|seed| {
            let (world, barrier, start) = (world.clone(), barrier.clone(), start.clone());
            tokio::spawn(async move {
                let _ = barrier.wait().await;
                std::fs::write(&start, b"").unwrap();
                for _ in 0..5 {
                    let _ = world
                        .files
                        .seal(
                            &ALICE,
                            world.a,
                            "shared.bin",
                            data(150_000, seed).as_slice(),
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for sealer in sealers {
        sealer.await.unwrap();
    }
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout)
                .matches("sealed version")
                .count(),
            5,
            "{output:?}"
        );
    }
    // 20 seals, 20 versions, each opening to the bytes of one writer.
    let records = world.catalog.records(world.a).await.unwrap();
    let versions: Vec<u64> = records.iter().map(|r| u64::from(r.version)).collect();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());
    let mut by_seed = [0; 5];
    for record in &records {
        let (_, out) = read(
            &world.files,
            &ALICE,
            world.a,
            "shared.bin",
            Some(record.version),
            None,
        )
        .await
        .unwrap();
        let seed = (1..=4u8)
            .find(|&seed| out == data(150_000, seed))
            .expect("each version holds one writer's bytes");
        by_seed[usize::from(seed)] += 1;
    }
    assert_eq!(by_seed, [0, 5, 5, 5, 5]);
}

#[tokio::test]
async fn a_stale_cache_in_another_process_never_wraps_under_a_retired_version() {
    let dir = TempDir::new("stale");
    let blobs: Arc<dyn Blobs> = Arc::new(MemoryBlobs::new());
    // Two services over the same databases, each with its own caches.
    let first = world_with(dir.path(), blobs.clone()).await;
    let second = world_with(dir.path(), blobs).await;
    let _ = second
        .files
        .seal(&ALICE, second.a, "warm", &b"caches the current TIK"[..])
        .await
        .unwrap();
    let old = first
        .files
        .keys()
        .tenant(first.a)
        .await
        .unwrap()
        .current_tik;

    // The first rotates and retires the old version; the second still has
    // it cached as current.
    let (new, _, retired) = first
        .files
        .rotate_tik(first.a, 100, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(retired, vec![old]);
    let record = second
        .files
        .seal(&ALICE, second.a, "after", &b"sealed with a stale cache"[..])
        .await
        .unwrap();
    assert_eq!(record.tik_version(), new);
    for world in [&first, &second] {
        let (_, out) = read(&world.files, &ALICE, world.a, "after", None, None)
            .await
            .unwrap();
        assert_eq!(out, b"sealed with a stale cache");
    }
}

#[tokio::test]
async fn every_failure_has_its_kind() {
    use atrest::tenant::fault::{Fault, FaultInjector};
    let dir = TempDir::new("kinds");
    let master = MasterKey::create_file(&dir.path().join("master.key")).unwrap();
    let tenant_keys =
        Arc::new(TenantKeyDir::open(&dir.path().join("tenant-keys"), master.clone()).unwrap());
    let service = service_keys(&dir.path().join("keys.sqlite"), master).await;
    service.create_key("root").await.unwrap();
    let faulty = Arc::new(FaultInjector::new(service));
    let records = Arc::new(Records::default());
    let keys = KeyHierarchy::builder(
        Arc::new(
            SqliteStore::open(&dir.path().join("meta.sqlite"))
                .await
                .unwrap(),
        ),
        tenant_keys,
        records.clone(),
    )
    .provider(faulty.clone())
    .service_root_key("service", "root")
    .policy(Arc::new(
        |access: &Access<'_>, _: TenantId, _: FileId| match access {
            Access::User { principal } if principal.ends_with("@a") => Decision::Allow,
            // A policy whose member list cannot be read: it cannot decide.
            Access::User { principal } if principal.ends_with("@down") => {
                Decision::Unavailable("the member list cannot be read".into())
            }
            _ => Decision::Deny("not a member".into()),
        },
    ))
    .build()
    .unwrap();
    let catalog = Arc::new(
        SqliteCatalog::open(&dir.path().join("catalog.sqlite"))
            .await
            .unwrap(),
    );
    let files = Files::new(
        Arc::new(keys),
        catalog,
        Arc::new(MemoryBlobs::new()),
        records.clone(),
    );
    let a = TenantId::random(&mut OsRng).unwrap();
    files.keys().create_service_tenant(a).await.unwrap();
    let _ = files.seal(&ALICE, a, "f", &b"bytes"[..]).await.unwrap();
    let kind = |result: Result<(FileRecord, Vec<u8>), Error>| result.unwrap_err().kind();
    let open = || read(&files, &ALICE, a, "f", None, None);

    files.keys().flush_cache();
    faulty.set(Fault::Unavailable);
    assert_eq!(kind(open().await), ErrorKind::Unavailable);
    faulty.set(Fault::AccessDenied);
    files.keys().flush_cache();
    assert_eq!(kind(open().await), ErrorKind::Refused);
    faulty.set(Fault::None);
    assert!(open().await.is_ok());
    // A policy that cannot decide is an outage, not a refusal: for a read,
    // a write and a batch, and so it is audited (failed, not denied).
    let down = Access::User {
        principal: "carol@down",
    };
    let unsure = read(&files, &down, a, "f", None, None).await;
    assert_eq!(kind(unsure), ErrorKind::Unavailable);
    let error = files.seal(&down, a, "g", &b"x"[..]).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    let batch = files
        .seal_batch(
            &down,
            a,
            vec![atrest::BatchItem {
                name: "h".to_owned(),
                blob: BlobName::random().unwrap(),
                plaintext: &b"x"[..],
                request: None,
                media_type: None,
            }],
            1,
        )
        .await
        .unwrap();
    assert_eq!(
        batch[0].as_ref().map_err(Error::kind).unwrap_err(),
        ErrorKind::Unavailable
    );
    let unsure_records = records
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|record| {
            matches!(
                record.event,
                Event::ReleaseDenied { .. } | Event::WriteDenied { .. }
            ) && matches!(record.outcome, atrest::audit::Outcome::Failed { .. })
        })
        .count();
    assert!(unsure_records >= 3, "{unsure_records}");
    let unknown = TenantId::random(&mut OsRng).unwrap();
    let error = files
        .seal(&ALICE, unknown, "f", &b""[..])
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    let _ = files.keys().purge(a).await.unwrap();
    assert_eq!(kind(open().await), ErrorKind::Refused);
    let error = files.seal(&ALICE, a, "g", &b""[..]).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Refused, "{error}");
}

/// A batch whose keys' records cannot be committed publishes nothing: no
/// record in the catalog and no blob, though its blobs were written while
/// the records were being committed.
#[tokio::test]
async fn a_batch_whose_key_records_fail_publishes_nothing() {
    let dir = TempDir::new("batch-audit-fails");
    let (world, blobs) = world(&dir).await;
    let items = |names: &[&str]| -> Vec<atrest::BatchItem<&'static [u8]>> {
        names
            .iter()
            .map(|name| atrest::BatchItem {
                name: (*name).to_owned(),
                blob: BlobName::random().unwrap(),
                plaintext: &b"small file"[..],
                request: None,
                media_type: None,
            })
            .collect()
    };
    world
        .records
        .1
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let error = world
        .files
        .seal_batch(&ALICE, world.a, items(&["x", "y", "z"]), 2)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Io, "{error}");
    for name in ["x", "y", "z"] {
        let missing = world.files.record(world.a, name, None).await.unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
    }
    assert!(blobs.list().await.unwrap().is_empty(), "no blob is left");
    assert!(world.catalog.seals_in_progress().await.unwrap().is_empty());
    // Once the audit trail works again, the same batch goes through.
    world
        .records
        .1
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let sealed = world
        .files
        .seal_batch(&ALICE, world.a, items(&["x", "y", "z"]), 2)
        .await
        .unwrap();
    assert!(sealed.iter().all(Result::is_ok));
    assert_eq!(blobs.list().await.unwrap().len(), 3);
}

async fn read_back(store: &BlobStore, name: &BlobName) -> Vec<u8> {
    let mut reader = Blobs::open(store, name).await.unwrap();
    let mut read = atrest::stream::RunBuffer::new();
    while reader.read(&mut read, 1 << 20).await.unwrap() > 0 {}
    read.to_vec()
}

/// A blob of a local store is written into a staging file, which only a
/// finished, flushed upload turns into the blob (replacing one whole, as a
/// repair does).
#[tokio::test]
async fn a_local_blob_appears_only_whole() {
    let dir = TempDir::new("local-blobs");
    let path = dir.path().join("blobs");
    let store = BlobStore::local(&path).unwrap();
    let entries = || {
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let name = BlobName::random().unwrap();
    let first = atrest_test_support::seeded(3 << 20, 1);
    let mut upload = Blobs::create(&store, &name).await.unwrap();
    upload.write(Bytes::from(first.clone())).await.unwrap();
    // Half written: only a staging file, which neither the listing nor a
    // read sees, and which counts as an unfinished upload.
    let staging = entries();
    assert_eq!(staging.len(), 1, "{staging:?}");
    let (blob, suffix) = staging[0].split_once('#').unwrap();
    assert_eq!(blob, name.as_str());
    assert!(suffix.bytes().all(|b| b.is_ascii_digit()), "{suffix}");
    assert!(Blobs::list(&store).await.unwrap().is_empty());
    assert_eq!(
        Blobs::open(&store, &name).await.err().unwrap().kind(),
        ErrorKind::NotFound
    );
    let partial = store.partial_uploads().await.unwrap();
    assert_eq!(partial.len(), 1);
    assert_eq!(partial[0].blob, name);
    assert_eq!(partial[0].bytes, first.len() as u64);

    assert_eq!(upload.finish().await.unwrap(), first.len() as u64);
    assert_eq!(entries(), vec![name.as_str().to_owned()]);
    assert!(store.partial_uploads().await.unwrap().is_empty());
    assert!(read_back(&store, &name).await == first);

    // A second upload under the same name leaves the first as it was
    // until it finishes, then replaces it whole, with no staging file left.
    let second = atrest_test_support::seeded(2 << 20, 2);
    let mut again = Blobs::create(&store, &name).await.unwrap();
    again.write(Bytes::from(second.clone())).await.unwrap();
    assert!(read_back(&store, &name).await == first);
    assert_eq!(again.finish().await.unwrap(), second.len() as u64);
    assert_eq!(entries(), vec![name.as_str().to_owned()]);
    assert!(read_back(&store, &name).await == second);

    // One dropped half way leaves nothing, whether its bytes were still in
    // memory or already in its staging file.
    for len in [1000, 3 << 20] {
        let other = BlobName::random().unwrap();
        let mut dropped = Blobs::create(&store, &other).await.unwrap();
        dropped
            .write(Bytes::from(first[..len].to_vec()))
            .await
            .unwrap();
        drop(dropped);
        assert_eq!(entries(), vec![name.as_str().to_owned()]);
    }

    // A small blob is written whole when it finishes, in place for a batch:
    // nothing of it is visible before.
    let small = BlobName::random().unwrap();
    let mut upload = store.create_deferred(&small).await.unwrap();
    upload.write(Bytes::from_static(b"small")).await.unwrap();
    assert_eq!(entries(), vec![name.as_str().to_owned()]);
    assert_eq!(upload.finish().await.unwrap(), 5);
    store.make_names_durable().await.unwrap();
    assert_eq!(read_back(&store, &small).await, b"small");
    // One in the way of a batch's blob is never replaced nor removed.
    let mut clash = store.create_deferred(&small).await.unwrap();
    clash.write(Bytes::from_static(b"other")).await.unwrap();
    assert_eq!(
        clash.finish().await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(read_back(&store, &small).await, b"small");
}

/// Whole blobs written together (a batch of small files): each lands whole
/// under its name, a name in the way is a conflict for that blob alone and
/// leaves the blob there untouched, and the results come in order — with
/// the local directory's shares (one call, or several when the batch is
/// large), on both kinds of runtime, and with the default of other stores.
async fn whole_blobs_are_written_together(store: &BlobStore, extra: &dyn Blobs) {
    let taken = BlobName::random().unwrap();
    let mut first = store.create_deferred(&taken).await.unwrap();
    first.write(Bytes::from_static(b"kept")).await.unwrap();
    first.finish().await.unwrap();
    for sizes in [vec![5usize, 4096, 0], vec![700 << 10, 900 << 10, 3]] {
        for (target, local) in [(store as &dyn Blobs, true), (extra, false)] {
            let names: Vec<BlobName> = sizes.iter().map(|_| BlobName::random().unwrap()).collect();
            let mut blobs: Vec<(BlobName, Vec<Bytes>)> = names
                .iter()
                .zip(&sizes)
                .map(|(name, &len)| {
                    let bytes = atrest_test_support::seeded(len, len as u64);
                    let (a, b) = bytes.split_at(len / 2);
                    (
                        name.clone(),
                        vec![Bytes::from(a.to_vec()), Bytes::from(b.to_vec())],
                    )
                })
                .collect();
            if local {
                blobs.insert(1, (taken.clone(), vec![Bytes::from_static(b"other")]));
            }
            let results = target.write_deferred(blobs, 2).await;
            target.make_names_durable().await.unwrap();
            let mut results = results.into_iter();
            for (name, &len) in names.iter().zip(&sizes) {
                assert_eq!(results.next().unwrap().unwrap(), len as u64);
                if local {
                    assert!(
                        read_back(store, name).await
                            == atrest_test_support::seeded(len, len as u64)
                    );
                    if name == &names[0] {
                        let clash = results.next().unwrap().unwrap_err();
                        assert_eq!(clash.kind(), ErrorKind::Conflict);
                    }
                } else {
                    assert_eq!(target.len(name).await.unwrap(), len as u64);
                }
            }
            assert!(results.next().is_none());
        }
    }
    assert_eq!(read_back(store, &taken).await, b"kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_blobs_are_written_together_on_worker_threads() {
    let dir = TempDir::new("whole-blobs-mt");
    let store = BlobStore::local(&dir.path().join("blobs")).unwrap();
    whole_blobs_are_written_together(&store, &MemoryBlobs::new()).await;
}

#[tokio::test(flavor = "current_thread")]
async fn whole_blobs_are_written_together_on_one_thread() {
    let dir = TempDir::new("whole-blobs-st");
    let store = BlobStore::local(&dir.path().join("blobs")).unwrap();
    whole_blobs_are_written_together(&store, &MemoryBlobs::new()).await;
}

/// Unmounts what a test mounted, however the test ends.
struct Unmount(Option<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = Command::new("umount").arg(&path).status();
        }
    }
}

/// The blob directory's path comes to name another directory after the
/// store opened it — a file system mounted over it (as root, where mounts
/// are allowed), or else the directory renamed and another made in its
/// place: nothing more is written, by a single upload or by a batch, nor
/// read, and the error says why.
#[tokio::test]
async fn a_blob_directory_replaced_after_start_takes_no_more_blobs() {
    let dir = TempDir::new("replaced-blobs");
    let path = dir.path().join("blobs");
    let store = BlobStore::local(&path).unwrap();
    let before = BlobName::random().unwrap();
    let mut upload = Blobs::create(&store, &before).await.unwrap();
    upload.write(Bytes::from_static(b"before")).await.unwrap();
    let _ = upload.finish().await.unwrap();

    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&path)
        .status()
        .is_ok_and(|status| status.success());
    let _unmount = Unmount(mounted.then(|| path.clone()));
    if !mounted {
        std::fs::rename(&path, dir.path().join("blobs.moved")).unwrap();
        std::fs::create_dir(&path).unwrap();
    }
    let refused = async {
        let name = BlobName::random().unwrap();
        let mut upload = Blobs::create(&store, &name).await?;
        upload.write(Bytes::from_static(b"after")).await?;
        upload.finish().await
    }
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("no longer the one opened"),
        "{refused}"
    );
    // The directory is checked once for a batch's share of blobs: every
    // blob of it is refused.
    let blobs = (0..3)
        .map(|_| (BlobName::random().unwrap(), vec![Bytes::from_static(b"x")]))
        .collect();
    let batch = store.write_deferred(blobs, 1).await;
    assert_eq!(batch.len(), 3);
    for refused in &batch {
        let refused = refused.as_ref().unwrap_err();
        assert!(
            refused.to_string().contains("no longer the one opened"),
            "{refused}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&path).unwrap().count(),
        0,
        "nothing was written into the directory now at the path"
    );
    let unread = Blobs::open(&store, &before).await.err().unwrap();
    assert!(
        unread.to_string().contains("no longer the one opened"),
        "{unread}"
    );
}

/// The ciphertext of a version, read whole through [`Files::ciphertext`].
async fn ciphertext_of(world: &World, name: &str, version: u64) -> Vec<u8> {
    let selector = FileSelector::version(world.a, name, FileVersion::try_from(version).unwrap());
    let (_, mut reader) = world.files.ciphertext(&selector).await.unwrap();
    let mut all = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        all.extend_from_slice(&chunk);
    }
    all
}

/// A key delivered to a recipient decrypts its version's ciphertext on
/// their side, and nothing else: not the ciphertext changed anywhere, cut
/// short or extended, nor another version's; a member of another tenant
/// gets no key; each delivery is audited with its recipient.
#[tokio::test]
async fn a_delivered_key_opens_its_version_on_the_recipients_side_only() {
    let dir = TempDir::new("delivered");
    let (world, _) = world(&dir).await;
    let first = data(300_000, 1);
    let second = data(70_000, 2);
    for body in [&first, &second] {
        let _ = world
            .files
            .seal(&ALICE, world.a, "slides.pdf", body.as_slice())
            .await
            .unwrap();
    }
    let v1 = FileSelector::version(world.a, "slides.pdf", FileVersion::FIRST);
    let (record, key) = world.files.deliver_key(&ALICE, &v1).await.unwrap();
    assert_eq!(u64::from(record.version), 1);
    // What the client receives, over the wire.
    let key = DeliveredKey::from_wire(&key.expose_to_wire()).unwrap();
    let ciphertext = ciphertext_of(&world, "slides.pdf", 1).await;
    assert_eq!(ciphertext.len() as u64, key.ciphertext_len());
    let mut out = WriterSink(Vec::new());
    let len = key.open(ciphertext.as_slice(), &mut out).await.unwrap();
    assert_eq!(len, first.len() as u64);
    assert_eq!(out.0, first);

    let mut damaged = Vec::new();
    for at in [0, 40, ciphertext.len() / 2, ciphertext.len() - 1] {
        let mut changed = ciphertext.clone();
        changed[at] ^= 1;
        damaged.push(changed);
    }
    damaged.push(ciphertext[..ciphertext.len() - 1].to_vec());
    damaged.push(ciphertext[..ciphertext.len() / 2].to_vec());
    let mut longer = ciphertext.clone();
    longer.push(0);
    damaged.push(longer);
    damaged.push(ciphertext_of(&world, "slides.pdf", 2).await);
    for bytes in damaged {
        let outcome = key
            .open(bytes.as_slice(), &mut WriterSink(Vec::new()))
            .await;
        assert!(
            matches!(outcome, Err(Error::Stream(_) | Error::Record(_))),
            "{outcome:?}"
        );
    }

    let bob = Access::User { principal: "bob@b" };
    assert!(world.files.deliver_key(&bob, &v1).await.is_err());
    let delivered: Vec<_> = world
        .records
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|r| match &r.event {
            Event::FileKeyDelivered { recipient, .. } => Some(recipient.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, ["alice@a"]);
}

/// `open_record` opens a record the caller read beforehand without reading
/// it again, and trusts nothing in it: the record of another name, another
/// version or another tenant, or one with a field changed, is refused as
/// tampered and audited as a failed open, and the sink gets nothing.
#[tokio::test]
async fn open_record_authenticates_the_record_it_is_given() {
    let dir = TempDir::new("open-record");
    let (world, _blobs) = world(&dir).await;
    let files = &world.files;
    let plain = data(100_000, 5);
    let bob = Access::User { principal: "bob@b" };
    for (access, tenant, name) in [
        (&ALICE, world.a, "one"),
        (&ALICE, world.a, "two"),
        (&bob, world.b, "one"),
    ] {
        let _ = files
            .seal(access, tenant, name, plain.as_slice())
            .await
            .unwrap();
    }
    let first = FileVersion::FIRST;
    let _ = files
        .seal(&ALICE, world.a, "one", &b"second"[..])
        .await
        .unwrap();
    let stored = |tenant, name: &'static str| {
        let catalog = world.catalog.clone();
        async move { catalog.record(tenant, name, Some(first)).await.unwrap() }
    };
    let one = stored(world.a, "one").await;
    let open = |record: FileRecord, version: Option<FileVersion>, range| async move {
        let mut sink = WriterSink(Vec::new());
        let file = FileSelector {
            tenant: world.a,
            name: "one",
            version,
        };
        let opened = files
            .open_record(&ALICE, &file, record, range, &mut sink)
            .await;
        (opened, sink.0)
    };

    let (opened, out) = open(one.clone(), Some(first), None).await;
    assert_eq!((opened.unwrap(), out), (one.clone(), plain.clone()));
    let (opened, out) = open(one.clone(), None, Some(10..20)).await;
    assert_eq!(
        (opened.unwrap(), out),
        (one.clone(), plain[10..20].to_vec())
    );

    let mut edited_len = one.clone();
    edited_len.plaintext_len = 1;
    let mut edited_type = one.clone();
    edited_type.media_type = Some("text/html".parse().unwrap());
    let refusals = [
        ("another name", stored(world.a, "two").await, Some(first)),
        ("another tenant", stored(world.b, "one").await, Some(first)),
        (
            "another version than asked",
            one.clone(),
            Some(FileVersion::try_from(2u64).unwrap()),
        ),
        ("a length changed", edited_len, Some(first)),
        ("a media type changed", edited_type, Some(first)),
    ];
    let failed_before = failed_opens(&world);
    for (what, record, version) in refusals {
        let (opened, out) = open(record, version, None).await;
        let error = opened.unwrap_err();
        assert!(
            matches!(error, Error::Catalog(CatalogError::Tampered { .. })),
            "{what}: {error}"
        );
        assert_eq!(error.kind(), ErrorKind::Integrity, "{what}");
        assert!(out.is_empty(), "{what}: plaintext released");
    }
    // Each refusal of a record of this tenant is in the audit trail (one
    // of another tenant is refused before its tenant's key is touched).
    assert_eq!(failed_opens(&world), failed_before + 4);

    // A record whose key does not open (here: another file's) is read
    // again, as after a re-wrap that moved the key: with nothing else
    // changed, the file opens with the stored record's key and the stored
    // record comes back; a copy with any other field changed (a media type
    // to have a browser run the file, a length) is refused, since the
    // caller may have used its fields already.
    let mut moved = one.clone();
    moved.wrapped_key = stored(world.a, "two").await.wrapped_key;
    let (opened, out) = open(moved.clone(), Some(first), None).await;
    assert_eq!(opened.unwrap(), one);
    assert!(out == plain, "the plaintext differs");
    let mut retyped = moved.clone();
    retyped.media_type = Some("text/html".parse().unwrap());
    let mut longer = moved;
    longer.plaintext_len = one.plaintext_len + 100;
    let past_end = one.plaintext_len + 1..one.plaintext_len + 50;
    for (what, record, range) in [
        ("a media type", retyped, None),
        ("a length", longer, Some(past_end)),
    ] {
        let (opened, out) = open(record, Some(first), range).await;
        assert!(
            matches!(opened, Err(Error::Catalog(CatalogError::Tampered { .. }))),
            "{what}: {opened:?}"
        );
        assert!(out.is_empty(), "{what}");
    }
}

/// Failed opens in the audit trail so far.
fn failed_opens(world: &World) -> usize {
    world
        .records
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|record| {
            matches!(record.event, Event::FileOpened { .. })
                && matches!(record.outcome, atrest::audit::Outcome::Failed { .. })
        })
        .count()
}
