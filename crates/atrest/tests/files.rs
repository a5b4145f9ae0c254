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

use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier, mpsc};

use atrest::audit::Event;
use atrest::blobs::BlobStore;
use atrest::filekey::{FileId, FileVersion, OsRng, TenantId};
use atrest::tenant::blocking::block_on;
use atrest::tenant::{Access, Decision, KeyHierarchy, MasterKey, ServiceKeys, TenantKeyDir};
use atrest::{
    BlobName, Blobs, Catalog as _, CatalogError, Error, ErrorKind, FileRecord, Files, MemoryBlobs,
};
use atrest_sqlite::{SqliteCatalog, SqliteSealedKeys, SqliteStore};
use atrest_test_support::TempDir;

/// The service's root keys in `path`, sealed under `master`.
fn service_keys(path: &Path, master: MasterKey) -> Arc<ServiceKeys> {
    let sealed = block_on(SqliteSealedKeys::open(path)).unwrap();
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
fn world_with(dir: &Path, blobs: Arc<dyn Blobs>) -> World {
    let master_path = dir.join("master.key");
    let fresh = !master_path.exists();
    let master = if fresh {
        MasterKey::create_file(&master_path).unwrap()
    } else {
        MasterKey::open_file(&master_path).unwrap()
    };
    let service = service_keys(&dir.join("keys.sqlite"), master.clone());
    if fresh {
        block_on(service.create_key("root")).unwrap();
    }
    let records = Arc::new(Records::default());
    let catalog = Arc::new(block_on(SqliteCatalog::open(&dir.join("catalog.sqlite"))).unwrap());
    let (a, b) = if fresh {
        let ids = (
            TenantId::random(&mut OsRng).unwrap(),
            TenantId::random(&mut OsRng).unwrap(),
        );
        block_on(catalog.name_tenant("a", ids.0)).unwrap();
        block_on(catalog.name_tenant("b", ids.1)).unwrap();
        ids
    } else {
        (
            block_on(catalog.tenant_named("a")).unwrap().unwrap(),
            block_on(catalog.tenant_named("b")).unwrap().unwrap(),
        )
    };
    let tenant_keys =
        Arc::new(TenantKeyDir::open(&dir.join("tenant-keys"), master.clone()).unwrap());
    let keys = KeyHierarchy::builder(
        Arc::new(block_on(SqliteStore::open(&dir.join("meta.sqlite"))).unwrap()),
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
        block_on(keys.create_service_tenant(a)).unwrap();
        block_on(keys.create_service_tenant(b)).unwrap();
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

fn world(dir: &TempDir) -> (World, Arc<MemoryBlobs>) {
    let blobs = Arc::new(MemoryBlobs::new());
    (world_with(dir.path(), blobs.clone()), blobs)
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 7 % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

fn open_all(
    world: &World,
    access: &Access<'_>,
    name: &str,
    version: u64,
) -> Result<Vec<u8>, Error> {
    let version = FileVersion::try_from(version).unwrap();
    world
        .files
        .open(access, world.a, name, Some(version), Vec::new())
        .map(|(_, out)| out)
}

#[test]
fn seal_open_and_ranges_round_trip_and_are_audited() {
    let dir = TempDir::new("round");
    let (world, _) = world(&dir);
    let files = &world.files;
    for (i, len) in [0, 1, 65_535 - 56, 65_536, 1_000_000]
        .into_iter()
        .enumerate()
    {
        let plain = data(len, i as u8);
        let name = format!("file {i}");
        let record = files
            .seal(&ALICE, world.a, &name, plain.as_slice())
            .unwrap();
        assert_eq!(record.plaintext_len, len as u64);
        assert_eq!(
            (record.tenant, record.name.as_str()),
            (world.a, name.as_str())
        );
        assert_eq!(record.version, FileVersion::FIRST);
        assert_eq!(files.record(world.a, &name, None).unwrap(), record);
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<FileRecord>(&json).unwrap(), record);
        let (opened, out) = files
            .open(&ALICE, world.a, &name, None, Vec::new())
            .unwrap();
        assert_eq!((opened, out), (record.clone(), plain.clone()));
        for (start, end) in [(0, len), (len / 3, len / 2), (len, len)] {
            let mut part = Vec::new();
            let (_, n) = files
                .open_range(
                    &ALICE,
                    world.a,
                    &name,
                    None,
                    start as u64..end as u64,
                    &mut part,
                )
                .unwrap();
            assert_eq!(
                (part.as_slice(), n),
                (&plain[start..end], (end - start) as u64)
            );
        }
    }
    assert_eq!(block_on(world.catalog.records(world.a)).unwrap().len(), 5);
    assert!(block_on(world.catalog.records(world.b)).unwrap().is_empty());
    let all = world.records.0.lock().unwrap();
    let count = |f: fn(&Event) -> bool| all.iter().filter(|r| f(&r.event)).count();
    assert_eq!(count(|e| matches!(e, Event::FileSealed { .. })), 5);
    assert_eq!(count(|e| matches!(e, Event::FileOpened { .. })), 20);
}

#[test]
fn each_seal_of_a_name_is_a_new_version() {
    let dir = TempDir::new("versions");
    let (world, _) = world(&dir);
    let files = &world.files;
    for v in 1..=3u8 {
        let record = files
            .seal(&ALICE, world.a, "notes.txt", data(1000, v).as_slice())
            .unwrap();
        assert_eq!(u64::from(record.version), u64::from(v));
    }
    let records = block_on(world.catalog.records(world.a)).unwrap();
    assert_eq!(records.len(), 3);
    // One file id for every version; one blob each.
    assert!(records.iter().all(|r| r.file == records[0].file));
    let mut blobs: Vec<_> = records.iter().map(|r| r.blob.clone()).collect();
    blobs.dedup();
    assert_eq!(blobs.len(), 3);
    for v in 1..=3u8 {
        assert_eq!(
            open_all(&world, &ALICE, "notes.txt", v.into()).unwrap(),
            data(1000, v)
        );
    }
    let (newest, _) = files
        .open(&ALICE, world.a, "notes.txt", None, Vec::new())
        .unwrap();
    assert_eq!(u64::from(newest.version), 3);
    // The same name in another tenant is another file.
    let bob = Access::User { principal: "bob@b" };
    let other = files.seal(&bob, world.b, "notes.txt", &b"b"[..]).unwrap();
    assert_eq!(other.version, FileVersion::FIRST);
    assert_ne!(other.file, records[0].file);
    // No such version, no such file.
    let missing = open_all(&world, &ALICE, "notes.txt", 4).unwrap_err();
    assert!(matches!(
        missing,
        Error::Catalog(CatalogError::UnknownVersion { .. })
    ));
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    let missing = files
        .open(&ALICE, world.a, "nope", None, Vec::new())
        .unwrap_err();
    assert!(matches!(
        missing,
        Error::Catalog(CatalogError::UnknownFile { .. })
    ));
}

/// A reader that hands out `first` bytes, then signals and waits before
/// the rest: a seal paused in flight.
struct PausedReader {
    data: Vec<u8>,
    at: usize,
    pause_at: usize,
    paused: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
}

impl Read for PausedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at >= self.pause_at
            && let Some((reached, resume)) = self.paused.take()
        {
            reached.send(()).unwrap();
            resume.recv().unwrap();
        }
        let end = if self.paused.is_some() {
            self.pause_at
        } else {
            self.data.len()
        };
        let n = buf.len().min(end - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn rotation_with_a_seal_in_flight_loses_no_file() {
    let dir = TempDir::new("rotate");
    let (world, _) = world(&dir);
    let files = &world.files;
    let keys = files.keys();
    let originals: Vec<Vec<u8>> = (0..5).map(|i| data(200_000 + i * 1000, i as u8)).collect();
    for (i, plain) in originals.iter().enumerate() {
        let _ = files
            .seal(&ALICE, world.a, &format!("doc-{i}"), plain.as_slice())
            .unwrap();
    }
    let first = block_on(keys.tenant(world.a)).unwrap().current_tik;

    // A seal that has its key (under the first TIK version) and has
    // written part of its blob when the rotation starts.
    let in_flight = data(3_000_000, 99);
    let (reached_tx, reached_rx) = mpsc::channel();
    let (resume_tx, resume_rx) = mpsc::channel();
    let reader = PausedReader {
        data: in_flight.clone(),
        at: 0,
        pause_at: 1_000_000,
        paused: Some((reached_tx, resume_rx)),
    };
    std::thread::scope(|scope| {
        let sealing = scope.spawn(|| files.seal(&ALICE, world.a, "in-flight", reader));
        reached_rx.recv().unwrap();

        // While it is paused: roll, re-wrap (the seal in flight included),
        // retire the old version.
        let second = block_on(keys.roll_tik(world.a)).unwrap();
        assert_ne!(first, second);
        // Before the re-wrap, the old version is in use, by the sealed
        // records and by the seal in flight.
        let refused = files.retire_tik(world.a, first).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Conflict);
        let report = files.rewrap(world.a, 2, &mut |_| {}).unwrap();
        assert_eq!(report.rewrapped, 6, "5 records and the seal in flight");
        assert_eq!(files.retire_unused_tiks(world.a).unwrap(), vec![first]);
        assert_eq!(block_on(keys.tik_versions(world.a)).unwrap(), vec![second]);

        resume_tx.send(()).unwrap();
        let record = sealing.join().unwrap().unwrap();
        assert_eq!(record.tik_version(), second);
    });

    // Every file opens, the one sealed during the rotation included.
    for (i, plain) in originals.iter().enumerate() {
        let (record, out) = files
            .open(&ALICE, world.a, &format!("doc-{i}"), None, Vec::new())
            .unwrap();
        assert_eq!(&out, plain);
        assert_eq!(
            record.tik_version(),
            block_on(keys.tenant(world.a)).unwrap().current_tik
        );
    }
    assert_eq!(open_all(&world, &ALICE, "in-flight", 1).unwrap(), in_flight);

    // And again, all in one call.
    let (third, report, retired) = files.rotate_tik(world.a, 1000, &mut |_| {}).unwrap();
    assert_eq!(report.rewrapped, 6);
    assert_eq!(retired.len(), 1);
    for i in 0..5 {
        let (record, _) = files
            .open(&ALICE, world.a, &format!("doc-{i}"), None, Vec::new())
            .unwrap();
        assert_eq!(record.tik_version(), third);
    }
}

#[test]
fn a_seal_choosing_its_key_blocks_every_retire() {
    let dir = TempDir::new("choosing");
    let (world, _) = world(&dir);
    let files = &world.files;
    let _ = files.seal(&ALICE, world.a, "x", &b"x"[..]).unwrap();
    let first = block_on(files.keys().tenant(world.a)).unwrap().current_tik;
    let _ = block_on(files.keys().roll_tik(world.a)).unwrap();
    let _ = files.rewrap(world.a, 10, &mut |_| {}).unwrap();
    // A seal that has begun but has no key yet could wrap under any
    // version: nothing is retired meanwhile.
    let blob = BlobName::random().unwrap();
    let ticket = block_on(world.catalog.begin_seal(world.a, "y", &blob)).unwrap();
    assert!(files.retire_unused_tiks(world.a).unwrap().is_empty());
    block_on(world.catalog.abandon_seal(&ticket)).unwrap();
    assert_eq!(files.retire_unused_tiks(world.a).unwrap(), vec![first]);
}

#[test]
fn failed_and_abandoned_seals_leave_nothing() {
    let dir = TempDir::new("abandon");
    let (world, blobs) = world(&dir);
    let files = &world.files;

    // A reader that fails halfway: no record, no blob, no seal in progress.
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("the client went away"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }
    let failed = files
        .seal(&ALICE, world.a, "broken", Failing(500_000))
        .unwrap_err();
    assert_eq!(failed.kind(), ErrorKind::Io, "{failed}");
    assert!(
        block_on(world.catalog.seals_in_progress())
            .unwrap()
            .is_empty()
    );
    assert!(blobs.list().unwrap().is_empty());
    assert!(files.record(world.a, "broken", None).is_err());

    // A seal whose process died: left in progress until collected.
    let blob = BlobName::random().unwrap();
    let ticket = block_on(world.catalog.begin_seal(world.a, "died", &blob)).unwrap();
    let mut upload = blobs.create(&blob).unwrap();
    upload.write_all(b"half a blob").unwrap();
    upload.finish().unwrap();
    let report = files
        .collect_abandoned_seals(std::time::Duration::from_secs(3600))
        .unwrap();
    assert!(report.abandoned_seals.is_empty(), "too recent to collect");
    let report = files
        .collect_abandoned_seals(std::time::Duration::ZERO)
        .unwrap();
    // Started this second: collected once the cut-off has passed it.
    if report.abandoned_seals.is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let report = files
            .collect_abandoned_seals(std::time::Duration::ZERO)
            .unwrap();
        assert_eq!(report.abandoned_seals.len(), 1);
    }
    assert!(
        block_on(world.catalog.seals_in_progress())
            .unwrap()
            .is_empty()
    );
    assert!(blobs.list().unwrap().is_empty());
    // Its commit now fails instead of publishing a half blob.
    let committed = block_on(world.catalog.commit_seal(
        &ticket,
        &atrest::catalog::SealedBlob {
            plaintext_len: 1,
            blob_len: 1,
            blob_sha256: None,
            segment_size: 65_536,
            format: 1,
            tag: atrest::tenant::RecordTag::from_slice(&[0; 32]).unwrap(),
        },
    ));
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

#[test]
fn records_and_blobs_that_do_not_match_are_refused() {
    let dir = TempDir::new("mismatch");
    let (world, blobs) = world(&dir);
    let files = &world.files;
    let plain = data(300_000, 1);
    let record = files
        .seal(&ALICE, world.a, "one", plain.as_slice())
        .unwrap();
    let other = files
        .seal(&ALICE, world.a, "two", plain.as_slice())
        .unwrap();
    let open = |name: &str| {
        files
            .open(&ALICE, world.a, name, None, Vec::new())
            .map(|(_, out)| out)
    };
    let integrity = |result: Result<Vec<u8>, Error>| {
        let error = result.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Integrity, "{error}");
    };
    let original = blobs.bytes(&record.blob).unwrap();

    // Another file's blob under this record.
    blobs.replace(&record.blob, blobs.bytes(&other.blob).unwrap());
    integrity(open("one"));
    // A tampered, a truncated and an extended blob.
    let mut tampered = original.clone();
    tampered[150_000] ^= 1;
    blobs.replace(&record.blob, tampered);
    integrity(open("one"));
    blobs.replace(&record.blob, original[..original.len() - 1].to_vec());
    integrity(open("one"));
    let mut extended = original.clone();
    extended.extend_from_slice(&[0; 16]);
    blobs.replace(&record.blob, extended);
    integrity(open("one"));
    // A prefix that declares huge segments: refused from the header, before
    // any segment buffer is sized by it.
    let mut huge = original.clone();
    huge[6..10].copy_from_slice(&(16u32 << 20).to_be_bytes());
    blobs.replace(&record.blob, huge);
    let refused = open("one").unwrap_err();
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
    assert_eq!(open("one").unwrap(), plain);

    // Records edited in the database: a lying length, format or segment
    // size, another file's blob or wrapped key.
    let same = format!("file = x'{}'", hex(record.file.as_bytes()));
    for edit in ["plaintext_len = 1", "format = 9", "segment_size = 7"] {
        edit_catalog(
            &dir,
            &format!("UPDATE catalog_versions SET {edit} WHERE {same}"),
        );
        integrity(open("one"));
        let undo = match edit {
            "plaintext_len = 1" => "plaintext_len = 300000".to_owned(),
            "format = 9" => "format = 1".to_owned(),
            _ => "segment_size = 65536".to_owned(),
        };
        edit_catalog(
            &dir,
            &format!("UPDATE catalog_versions SET {undo} WHERE {same}"),
        );
        assert_eq!(open("one").unwrap(), plain);
    }
    edit_catalog(
        &dir,
        &format!(
            "UPDATE catalog_versions SET blob = '{}' WHERE {same}",
            BlobName::random().unwrap()
        ),
    );
    // The record's tag covers its blob's name.
    let moved = open("one").unwrap_err();
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
    assert_eq!(open("one").unwrap(), plain);
    edit_catalog(
        &dir,
        &format!(
            "UPDATE catalog_versions SET wrapped = (SELECT wrapped FROM catalog_versions
             WHERE file = x'{}') WHERE {same}",
            hex(other.file.as_bytes())
        ),
    );
    integrity(open("one"));
    edit_catalog(
        &dir,
        &format!(
            "UPDATE catalog_versions SET wrapped = x'{}' WHERE {same}",
            hex(record.wrapped_key.as_ref())
        ),
    );
    assert_eq!(open("one").unwrap(), plain);

    // Two files' records swapped: each name now leads to the other's file
    // id, blob and key, all authentic for that file. The records' tags
    // bind each to its name, so both are refused.
    let plain_two = data(1_000, 2);
    let _ = files
        .seal(&ALICE, world.a, "two", plain_two.as_slice())
        .unwrap();
    swap_names(&dir, "one", "two");
    for name in ["one", "two"] {
        let swapped = open(name).unwrap_err();
        assert!(
            matches!(swapped, Error::Catalog(CatalogError::Tampered { .. })),
            "{swapped}"
        );
        assert_eq!(swapped.kind(), ErrorKind::Integrity);
    }
    // Asking for version 2 of "one" now finds the second version of the
    // file once named "two": refused too.
    let version_two = files
        .open(
            &ALICE,
            world.a,
            "one",
            Some(FileVersion::try_from(2u64).unwrap()),
            Vec::new(),
        )
        .unwrap_err();
    assert_eq!(version_two.kind(), ErrorKind::Integrity, "{version_two}");
    swap_names(&dir, "one", "two");
    assert_eq!(open("one").unwrap(), plain);
    assert_eq!(open("two").unwrap(), plain_two);

    // A principal of another tenant; a range outside the file.
    let bob = Access::User { principal: "bob@b" };
    let refused = files
        .open(&bob, world.a, "two", None, Vec::new())
        .unwrap_err();
    assert!(matches!(
        refused,
        Error::Keys(atrest::tenant::Error::Denied { .. })
    ));
    assert_eq!(refused.kind(), ErrorKind::Refused);
    let mut sink = Vec::new();
    let range = files
        .open_range(&ALICE, world.a, "two", None, 0..300_001, &mut sink)
        .unwrap_err();
    assert!(matches!(range, Error::InvalidRange { .. }));
    assert_eq!(range.kind(), ErrorKind::Usage);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn names_follow_one_rule() {
    let dir = TempDir::new("names");
    let (world, _) = world(&dir);
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
    let _ = world.files.seal(&ALICE, world.a, &long, &b"x"[..]).unwrap();
    // Names may read as paths.
    let _ = world
        .files
        .seal(&ALICE, world.a, "reports/2026/q1.pdf", &b"x"[..])
        .unwrap();
    let taken = block_on(
        world
            .catalog
            .name_tenant("a", TenantId::random(&mut OsRng).unwrap()),
    )
    .unwrap_err();
    assert_eq!(taken.kind(), ErrorKind::Conflict);
}

#[test]
fn the_blob_holds_no_identifiers() {
    let dir = TempDir::new("opaque");
    let (world, blobs) = world(&dir);
    let record = world
        .files
        .seal(&ALICE, world.a, "secret-name.txt", &[0u8; 100_000][..])
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
fn round_trip(store: &Arc<dyn Blobs>, dir: &Path) -> FileRecord {
    let plain = data(20 << 20, 5);
    std::fs::create_dir_all(dir).unwrap();
    let world = world_with(dir, store.clone());
    let record = world
        .files
        .seal(&ALICE, world.a, "big", plain.as_slice())
        .unwrap();
    assert_eq!(
        store.list().unwrap(),
        vec![(record.blob.clone(), record.blob_len)]
    );
    let (_, out) = world
        .files
        .open(&ALICE, world.a, "big", None, Vec::new())
        .unwrap();
    assert!(out == plain, "{}", store.location());
    let mut part = Vec::new();
    let _ = world
        .files
        .open_range(
            &ALICE,
            world.a,
            "big",
            None,
            9_000_000..9_100_000,
            &mut part,
        )
        .unwrap();
    assert_eq!(part, plain[9_000_000..9_100_000]);
    // An upload dropped before finish leaves nothing behind.
    let abandoned = BlobName::random().unwrap();
    let mut upload = store.create(&abandoned).unwrap();
    upload.write_all(&[1; 100]).unwrap();
    drop(upload);
    let missing = store.open(&abandoned).err().unwrap();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert_eq!(store.list().unwrap().len(), 1);
    store.delete(&record.blob).unwrap();
    store.delete(&record.blob).unwrap();
    assert!(store.list().unwrap().is_empty());
    record
}

#[test]
fn every_blob_store_round_trips() {
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
        let _ = round_trip(store, &dir.path().join(format!("world-{i}")));
    }
    let bad = BlobStore::from_url("nope://x").unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Usage, "{bad}");
    assert!("not-a-name".parse::<BlobName>().is_err());
}

/// Blobs in Azure storage (the Azurite emulator, through `object_store`'s
/// Azure backend): the same round trip, and nothing Azurite keeps — blob
/// names, bytes, metadata, its own database — holds a tenant id, a file id
/// or a file name.
#[test]
fn azure_storage_round_trips_and_learns_no_identifier() {
    let azurite = atrest_test_support::azurite::azurite();
    let dir = TempDir::new("azure");
    let container = format!("atrest-{}", BlobName::random().unwrap());
    azurite.create_container(&container);
    let store: Arc<dyn Blobs> = Arc::new(
        BlobStore::from_url_with_options(&format!("az://{container}"), azurite.options()).unwrap(),
    );
    println!("blobs at {}", store.location());
    let _ = round_trip(&store, &dir.path().join("round-trip"));

    // A file kept, with a name worth looking for.
    std::fs::create_dir_all(dir.path().join("kept")).unwrap();
    let world = world_with(&dir.path().join("kept"), store.clone());
    let name = "board-minutes-confidential.txt";
    let record = world
        .files
        .seal(&ALICE, world.a, name, data(3 << 20, 9).as_slice())
        .unwrap();
    let (_, out) = world
        .files
        .open(&ALICE, world.a, name, None, Vec::new())
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
    store.delete(&record.blob).unwrap();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The child half of [`two_processes_sealing_one_name_get_two_versions`]:
/// seals `SEAL_NAME` with the content of seed `SEAL_SEED` in the world at
/// `SEAL_DIR`, after waiting for the start file.
#[test]
fn seal_child() {
    let (Ok(dir), Ok(seed)) = (std::env::var("SEAL_DIR"), std::env::var("SEAL_SEED")) else {
        return; // run only as a child of the test below
    };
    let dir = PathBuf::from(dir);
    let seed: u8 = seed.parse().unwrap();
    let world = world_with(
        &dir,
        Arc::new(BlobStore::local(&dir.join("blobs")).unwrap()),
    );
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
            .unwrap();
        println!("sealed version {}", u64::from(record.version));
    }
}

#[test]
fn two_processes_sealing_one_name_get_two_versions() {
    let dir = TempDir::new("procs");
    let world = world_with(
        dir.path(),
        Arc::new(BlobStore::local(&dir.path().join("blobs")).unwrap()),
    );
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
    // Threads of this process seal the same name at the same time.
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        for seed in [3u8, 4] {
            let (world, barrier, dir) = (&world, &barrier, &dir);
            let _ = scope.spawn(move || {
                barrier.wait();
                std::fs::write(dir.path().join("start"), b"").unwrap();
                for _ in 0..5 {
                    let _ = world
                        .files
                        .seal(
                            &ALICE,
                            world.a,
                            "shared.bin",
                            data(150_000, seed).as_slice(),
                        )
                        .unwrap();
                }
            });
        }
    });
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
    let records = block_on(world.catalog.records(world.a)).unwrap();
    let versions: Vec<u64> = records.iter().map(|r| u64::from(r.version)).collect();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());
    let mut by_seed = [0; 5];
    for record in &records {
        let (_, out) = world
            .files
            .open(
                &ALICE,
                world.a,
                "shared.bin",
                Some(record.version),
                Vec::new(),
            )
            .unwrap();
        let seed = (1..=4u8)
            .find(|&seed| out == data(150_000, seed))
            .expect("each version holds one writer's bytes");
        by_seed[usize::from(seed)] += 1;
    }
    assert_eq!(by_seed, [0, 5, 5, 5, 5]);
}

#[test]
fn a_stale_cache_in_another_process_never_wraps_under_a_retired_version() {
    let dir = TempDir::new("stale");
    let blobs: Arc<dyn Blobs> = Arc::new(MemoryBlobs::new());
    // Two services over the same databases, each with its own caches.
    let first = world_with(dir.path(), blobs.clone());
    let second = world_with(dir.path(), blobs);
    let _ = second
        .files
        .seal(&ALICE, second.a, "warm", &b"caches the current TIK"[..])
        .unwrap();
    let old = block_on(first.files.keys().tenant(first.a))
        .unwrap()
        .current_tik;

    // The first rotates and retires the old version; the second still has
    // it cached as current.
    let (new, _, retired) = first.files.rotate_tik(first.a, 100, &mut |_| {}).unwrap();
    assert_eq!(retired, vec![old]);
    let record = second
        .files
        .seal(&ALICE, second.a, "after", &b"sealed with a stale cache"[..])
        .unwrap();
    assert_eq!(record.tik_version(), new);
    for world in [&first, &second] {
        let (_, out) = world
            .files
            .open(&ALICE, world.a, "after", None, Vec::new())
            .unwrap();
        assert_eq!(out, b"sealed with a stale cache");
    }
}

#[test]
fn every_failure_has_its_kind() {
    use atrest::tenant::fault::{Fault, FaultInjector};
    let dir = TempDir::new("kinds");
    let master = MasterKey::create_file(&dir.path().join("master.key")).unwrap();
    let tenant_keys =
        Arc::new(TenantKeyDir::open(&dir.path().join("tenant-keys"), master.clone()).unwrap());
    let service = service_keys(&dir.path().join("keys.sqlite"), master);
    block_on(service.create_key("root")).unwrap();
    let faulty = Arc::new(FaultInjector::new(service));
    let records = Arc::new(Records::default());
    let keys = KeyHierarchy::builder(
        Arc::new(block_on(SqliteStore::open(&dir.path().join("meta.sqlite"))).unwrap()),
        tenant_keys,
        records.clone(),
    )
    .provider(faulty.clone())
    .service_root_key("service", "root")
    .policy(Arc::new(
        |access: &Access<'_>, _: TenantId, _: FileId| match access {
            Access::User { principal } if principal.ends_with("@a") => Decision::Allow,
            _ => Decision::Deny("not a member".into()),
        },
    ))
    .build()
    .unwrap();
    let catalog =
        Arc::new(block_on(SqliteCatalog::open(&dir.path().join("catalog.sqlite"))).unwrap());
    let files = Files::new(
        Arc::new(keys),
        catalog,
        Arc::new(MemoryBlobs::new()),
        records,
    );
    let a = TenantId::random(&mut OsRng).unwrap();
    block_on(files.keys().create_service_tenant(a)).unwrap();
    let _ = files.seal(&ALICE, a, "f", &b"bytes"[..]).unwrap();
    let kind = |result: Result<(FileRecord, Vec<u8>), Error>| result.unwrap_err().kind();
    let open = || files.open(&ALICE, a, "f", None, Vec::new());

    files.keys().flush_cache();
    faulty.set(Fault::Unavailable);
    assert_eq!(kind(open()), ErrorKind::Unavailable);
    faulty.set(Fault::AccessDenied);
    files.keys().flush_cache();
    assert_eq!(kind(open()), ErrorKind::Refused);
    faulty.set(Fault::None);
    assert!(open().is_ok());
    let unknown = TenantId::random(&mut OsRng).unwrap();
    let error = files.seal(&ALICE, unknown, "f", &b""[..]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    let _ = block_on(files.keys().purge(a)).unwrap();
    assert_eq!(kind(open()), ErrorKind::Refused);
    let error = files.seal(&ALICE, a, "g", &b""[..]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Refused, "{error}");
}

/// A batch whose keys' records cannot be committed publishes nothing: no
/// record in the catalog and no blob, though its blobs were written while
/// the records were being committed.
#[test]
fn a_batch_whose_key_records_fail_publishes_nothing() {
    let dir = TempDir::new("batch-audit-fails");
    let (world, blobs) = world(&dir);
    let items = |names: &[&str]| -> Vec<atrest::BatchItem<&'static [u8]>> {
        names
            .iter()
            .map(|name| atrest::BatchItem {
                name: (*name).to_owned(),
                blob: BlobName::random().unwrap(),
                plaintext: &b"small file"[..],
                request: None,
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
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Io, "{error}");
    for name in ["x", "y", "z"] {
        let missing = world.files.record(world.a, name, None).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
    }
    assert!(blobs.list().unwrap().is_empty(), "no blob is left");
    assert!(
        block_on(world.catalog.seals_in_progress())
            .unwrap()
            .is_empty()
    );
    // Once the audit trail works again, the same batch goes through.
    world
        .records
        .1
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let sealed = world
        .files
        .seal_batch(&ALICE, world.a, items(&["x", "y", "z"]), 2)
        .unwrap();
    assert!(sealed.iter().all(Result::is_ok));
    assert_eq!(blobs.list().unwrap().len(), 3);
}

fn read_back(store: &BlobStore, name: &BlobName) -> Vec<u8> {
    let mut read = Vec::new();
    Blobs::open(store, name)
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    read
}

/// A blob of a local store is written into a staging file, which only a
/// finished, flushed upload turns into the blob (replacing one whole, as a
/// repair does).
#[test]
fn a_local_blob_appears_only_whole() {
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
    let mut upload = Blobs::create(&store, &name).unwrap();
    upload.write_all(&first).unwrap();
    // Half written: only a staging file, which neither the listing nor a
    // read sees, and which counts as an unfinished upload.
    let staging = entries();
    assert_eq!(staging.len(), 1, "{staging:?}");
    let (blob, suffix) = staging[0].split_once('#').unwrap();
    assert_eq!(blob, name.as_str());
    assert!(suffix.bytes().all(|b| b.is_ascii_digit()), "{suffix}");
    assert!(Blobs::list(&store).unwrap().is_empty());
    assert_eq!(
        Blobs::open(&store, &name).err().unwrap().kind(),
        ErrorKind::NotFound
    );
    let partial = store.partial_uploads().unwrap();
    assert_eq!(partial.len(), 1);
    assert_eq!(partial[0].blob, name);
    assert_eq!(partial[0].bytes, first.len() as u64);

    assert_eq!(upload.finish().unwrap(), first.len() as u64);
    assert_eq!(entries(), vec![name.as_str().to_owned()]);
    assert!(store.partial_uploads().unwrap().is_empty());
    assert!(read_back(&store, &name) == first);

    // A second upload under the same name leaves the first as it was
    // until it finishes, then replaces it whole, with no staging file left.
    let second = atrest_test_support::seeded(2 << 20, 2);
    let mut again = Blobs::create(&store, &name).unwrap();
    again.write_all(&second).unwrap();
    assert!(read_back(&store, &name) == first);
    assert_eq!(again.finish().unwrap(), second.len() as u64);
    assert_eq!(entries(), vec![name.as_str().to_owned()]);
    assert!(read_back(&store, &name) == second);

    // One dropped half way leaves nothing.
    let other = BlobName::random().unwrap();
    let mut dropped = Blobs::create(&store, &other).unwrap();
    dropped.write_all(&first[..1000]).unwrap();
    drop(dropped);
    assert_eq!(entries(), vec![name.as_str().to_owned()]);
}
