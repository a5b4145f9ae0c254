//! Sealing and opening through the composition: round trips (sync, async,
//! ranges, blob store), and every way a record and a blob can fail to
//! match.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;

use atrest::audit::Event;
use atrest::blobs::{BlobName, BlobStore};
use atrest::filekey::{FileContext, FileId, FileVersion, OsRng, TenantId};
use atrest::tenant::{Access, Decision, KeyHierarchy, MasterKey, ServiceKeys, SqliteStore};
use atrest::{Error, FileRecord, Files};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "atrest-files-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
struct Records(std::sync::Mutex<Vec<atrest::audit::Record>>);

impl atrest::audit::Audit for Records {
    fn record(
        &self,
        record: atrest::audit::Record,
    ) -> Result<atrest::audit::Receipt, atrest::audit::Error> {
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

fn setup(dir: &TempDir) -> (Files, Arc<Records>, TenantId, TenantId) {
    let master = MasterKey::create_file(&dir.0.join("master.key")).unwrap();
    let service =
        Arc::new(ServiceKeys::open("service", &dir.0.join("keys.sqlite"), master).unwrap());
    service.create_key("root").unwrap();
    let records = Arc::new(Records::default());
    let (a, b) = (
        TenantId::random(&mut OsRng).unwrap(),
        TenantId::random(&mut OsRng).unwrap(),
    );
    let keys = KeyHierarchy::builder(
        Arc::new(SqliteStore::open(&dir.0.join("t.sqlite")).unwrap()),
        records.clone(),
    )
    .provider(service)
    .service_root_key("service", "root")
    .policy(Arc::new(
        move |access: &Access<'_>, tenant: TenantId, _: FileId| match access {
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
    keys.create_service_tenant(a).unwrap();
    keys.create_service_tenant(b).unwrap();
    (Files::new(Arc::new(keys), records.clone()), records, a, b)
}

fn context(tenant: TenantId) -> FileContext {
    FileContext::new(
        tenant,
        FileId::random(&mut OsRng).unwrap(),
        FileVersion::FIRST,
    )
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn seal_open_and_ranges_round_trip_and_are_audited() {
    let dir = TempDir::new("round");
    let (files, records, a, _) = setup(&dir);
    for len in [0, 1, 65_535 - 56, 65_536, 1_000_000] {
        let plain = data(len);
        let ctx = context(a);
        let (record, blob) = files
            .seal(&ALICE, &ctx, plain.as_slice(), Vec::new())
            .unwrap();
        assert_eq!(record.plaintext_len, len as u64);
        assert_eq!(record.blob_len, blob.len() as u64);
        assert_eq!(record.context(), ctx);
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<FileRecord>(&json).unwrap(), record);
        let (out, n) = files
            .open(&ALICE, &record, blob.as_slice(), Vec::new())
            .unwrap();
        assert_eq!((out, n), (plain.clone(), len as u64));
        for (start, end) in [(0, len), (len / 3, len / 2), (len, len)] {
            let mut part = Vec::new();
            files
                .open_range(
                    &ALICE,
                    &record,
                    blob.as_slice(),
                    start as u64..end as u64,
                    &mut part,
                )
                .unwrap();
            assert_eq!(part, plain[start..end]);
        }
    }
    let all = records.0.lock().unwrap();
    let sealed = all
        .iter()
        .filter(|r| matches!(r.event, Event::FileSealed { .. }))
        .count();
    let opened = all
        .iter()
        .filter(|r| matches!(r.event, Event::FileOpened { .. }))
        .count();
    assert_eq!((sealed, opened), (5, 20));
    assert!(
        all.iter()
            .any(|r| matches!(&r.event, Event::FileOpened { range: Some([s, e]), .. } if e > s))
    );
}

#[test]
fn records_and_blobs_that_do_not_match_are_refused() {
    let dir = TempDir::new("mismatch");
    let (files, _, a, b) = setup(&dir);
    let plain = data(300_000);
    let (record, blob) = files
        .seal(&ALICE, &context(a), plain.as_slice(), Vec::new())
        .unwrap();
    let (other, other_blob) = files
        .seal(&ALICE, &context(a), plain.as_slice(), Vec::new())
        .unwrap();
    let open = |record: &FileRecord, blob: &[u8], access: &Access<'_>| {
        files.open(access, record, blob, Vec::new()).map(|(_, n)| n)
    };

    // Another file's blob under this record, and the other way round.
    assert!(matches!(
        open(&record, &other_blob, &ALICE),
        Err(Error::Stream(_))
    ));
    assert!(matches!(open(&other, &blob, &ALICE), Err(Error::Stream(_))));
    // A tampered or truncated blob.
    let mut tampered = blob.clone();
    tampered[150_000] ^= 1;
    assert!(matches!(
        open(&record, &tampered, &ALICE),
        Err(Error::Stream(_))
    ));
    assert!(matches!(
        open(&record, &blob[..blob.len() - 1], &ALICE),
        Err(Error::Stream(_))
    ));
    // The record moved to another tenant, file or version.
    for moved in [
        FileRecord {
            tenant: b,
            ..record.clone()
        },
        FileRecord {
            file: FileId::random(&mut OsRng).unwrap(),
            ..record.clone()
        },
        FileRecord {
            version: FileVersion::try_from(2u64).unwrap(),
            ..record.clone()
        },
    ] {
        let bob = Access::User { principal: "bob@b" };
        assert!(open(&moved, &blob, &ALICE).is_err());
        assert!(open(&moved, &blob, &bob).is_err());
    }
    // A record lying about the length, format or segment size.
    assert!(matches!(
        open(
            &FileRecord {
                plaintext_len: 1,
                ..record.clone()
            },
            &blob,
            &ALICE
        ),
        Err(Error::Record(_))
    ));
    assert!(matches!(
        open(
            &FileRecord {
                format: 9,
                ..record.clone()
            },
            &blob,
            &ALICE
        ),
        Err(Error::Record(_))
    ));
    assert!(matches!(
        open(
            &FileRecord {
                segment_size: 7,
                ..record.clone()
            },
            &blob,
            &ALICE
        ),
        Err(Error::Record(_))
    ));
    // A principal of another tenant; a range outside the file.
    let bob = Access::User { principal: "bob@b" };
    assert!(matches!(
        open(&record, &blob, &bob),
        Err(Error::Keys(atrest::tenant::Error::Denied { .. }))
    ));
    let mut sink = Vec::new();
    assert!(matches!(
        files.open_range(&ALICE, &record, blob.as_slice(), 0..300_001, &mut sink),
        Err(Error::InvalidRange { .. })
    ));
}

#[test]
fn the_blob_holds_no_identifiers() {
    let dir = TempDir::new("opaque");
    let (files, _, a, _) = setup(&dir);
    let ctx = context(a);
    let (_, blob) = files
        .seal(&ALICE, &ctx, &[0u8; 100_000][..], Vec::new())
        .unwrap();
    for needle in [
        a.as_bytes().as_slice(),
        ctx.file.as_bytes(),
        a.to_string().as_bytes(),
        ctx.file.to_string().as_bytes(),
    ] {
        assert!(!blob.windows(needle.len()).any(|w| w == needle));
    }
    // Zero plaintext does not come through either.
    assert!(!blob.windows(64).any(|w| w.iter().all(|&b| b == 0)));
}

#[test]
fn async_forms_match_the_sync_ones() {
    let dir = TempDir::new("async");
    let (files, _, a, _) = setup(&dir);
    let plain = data(500_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ctx = context(a);
        let (record, blob) = files
            .seal_async(&ALICE, &ctx, plain.as_slice(), Vec::new())
            .await
            .unwrap();
        assert_eq!(record.blob_len, blob.len() as u64);
        // Sealed async, opened sync, and the other way round.
        let (out, _) = files
            .open(&ALICE, &record, blob.as_slice(), Vec::new())
            .unwrap();
        assert_eq!(out, plain);
        let (record, blob) = files
            .seal(&ALICE, &ctx, plain.as_slice(), Vec::new())
            .unwrap();
        let (out, n) = files
            .open_async(&ALICE, &record, blob.as_slice(), Vec::new())
            .await
            .unwrap();
        assert_eq!((out, n), (plain.clone(), 500_000));
        let mut tampered = blob.clone();
        tampered[1000] ^= 1;
        assert!(
            files
                .open_async(&ALICE, &record, tampered.as_slice(), Vec::new())
                .await
                .is_err()
        );
    });
}

#[test]
fn blob_store_round_trips_locally_and_by_url() {
    let dir = TempDir::new("blobs");
    let (files, _, a, _) = setup(&dir);
    let plain = data(20 << 20);
    for store in [
        BlobStore::local(&dir.0.join("local")).unwrap(),
        BlobStore::from_url(&format!("file://{}", dir.0.join("url").display())).unwrap(),
        BlobStore::from_url("memory:///").unwrap(),
    ] {
        let name = BlobName::random().unwrap();
        let ctx = context(a);
        let (record, writer) = files
            .seal(&ALICE, &ctx, plain.as_slice(), store.create(&name))
            .unwrap();
        assert_eq!(writer.finish().unwrap(), record.blob_len);
        assert_eq!(store.list().unwrap(), vec![(name.clone(), record.blob_len)]);
        let (out, _) = files
            .open(&ALICE, &record, store.open(&name).unwrap(), Vec::new())
            .unwrap();
        assert!(out == plain, "{}", store.location());
        let mut part = Vec::new();
        files
            .open_range(
                &ALICE,
                &record,
                store.ranged(&name).unwrap(),
                9_000_000..9_100_000,
                &mut part,
            )
            .unwrap();
        assert_eq!(part, plain[9_000_000..9_100_000]);
        // An upload dropped before finish leaves nothing behind.
        let abandoned = BlobName::random().unwrap();
        let mut writer = store.create(&abandoned);
        std::io::Write::write_all(&mut writer, &[1; 100]).unwrap();
        drop(writer);
        assert!(matches!(store.open(&abandoned), Err(Error::NotFound(_))));
        store.delete(&name).unwrap();
        assert!(store.list().unwrap().is_empty());
    }
    assert!(BlobStore::from_url("nope://x").is_err());
    assert!("not-a-name".parse::<BlobName>().is_err());
    let mut buf = Vec::new();
    let store = BlobStore::local(&dir.0.join("small")).unwrap();
    let name = BlobName::random().unwrap();
    let mut writer = store.create(&name);
    std::io::Write::write_all(&mut writer, b"hello").unwrap();
    writer.finish().unwrap();
    store.open(&name).unwrap().read_to_end(&mut buf).unwrap();
    assert_eq!(buf, b"hello");
}
