//! Replicated blobs on real stores (local directories flushed to disk, and
//! the Azure storage emulator): a copy deleted, corrupted (a flipped byte,
//! a truncated copy) or a location down — writes succeed when `copies`
//! allows, reads return the right plaintext, a check reports the damage, a
//! repair fixes it and a second check is clean; a seal that cannot keep
//! enough copies fails and leaves no record. The digest in the record is
//! covered by its tag.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use atrest::blobs::{BlobCheck, BlobStore, CopyState, RepairOutcome, ReplicatedBlobs};
use atrest::filekey::{OsRng, TenantId};
use atrest::tenant::{Access, Decision, KeyHierarchy, MasterKey, ServiceKeys, TenantKeyDir};
use atrest::{
    BlobDigest, BlobName, BlobReader, BlobUpload, Blobs, Catalog as _, ErrorKind, FileRecord, Files,
};
use atrest_sqlite::{SqliteCatalog, SqliteSealedKeys, SqliteStore};
use atrest_test_support::TempDir;
use atrest_test_support::files::{read, read_range};
use bytes::Bytes;

const ALICE: Access<'static> = Access::User {
    principal: "alice@a",
};

/// Audit records are not what these tests look at.
/// The service's root keys in `path`, sealed under `master`.
async fn service_keys(path: &Path, master: MasterKey) -> Arc<ServiceKeys> {
    let sealed = SqliteSealedKeys::open(path).await.unwrap();
    Arc::new(ServiceKeys::new("service", Arc::new(sealed), master).unwrap())
}

struct Discard;

#[async_trait::async_trait]
impl atrest::audit::Audit for Discard {
    async fn record(
        &self,
        _: atrest::audit::Record,
    ) -> Result<atrest::audit::Receipt, atrest::audit::Error> {
        Ok(atrest::audit::Receipt {
            seq: 0,
            hash: [0; 32],
        })
    }
}

struct World {
    files: Files,
    tenant: TenantId,
    catalog: Arc<SqliteCatalog>,
}

/// Keys, a catalog and tenant `a` in `dir`, with blobs in `blobs`.
async fn world(dir: &Path, blobs: Arc<dyn Blobs>) -> World {
    std::fs::create_dir_all(dir).unwrap();
    let master = MasterKey::create_file(&dir.join("master.key")).unwrap();
    let service = service_keys(&dir.join("keys.sqlite"), master.clone()).await;
    service.create_key("root").await.unwrap();
    let catalog = Arc::new(
        SqliteCatalog::open(&dir.join("catalog.sqlite"))
            .await
            .unwrap(),
    );
    let tenant = TenantId::random(&mut OsRng).unwrap();
    // A name for the test's own look-up (the catalog alone: not checked).
    let tag = atrest::tenant::RecordTag::from_slice(&[0; 32]).unwrap();
    catalog.name_tenant("a", tenant, &tag).await.unwrap();
    let audit = Arc::new(Discard);
    let keys = KeyHierarchy::builder(
        Arc::new(SqliteStore::open(&dir.join("meta.sqlite")).await.unwrap()),
        Arc::new(TenantKeyDir::open(&dir.join("tenant-keys"), master).unwrap()),
        audit.clone(),
    )
    .provider(service)
    .service_root_key("service", "root")
    .policy(Arc::new(|_: &Access<'_>, _, _| Decision::Allow))
    .build()
    .unwrap();
    keys.create_service_tenant(tenant).await.unwrap();
    World {
        files: Files::new(Arc::new(keys), catalog.clone(), blobs, audit),
        tenant,
        catalog,
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 7 % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

/// Local directories `dir/0`, `dir/1`, …: the primary first.
fn local_dirs(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| dir.join(format!("loc{i}"))).collect()
}

fn replicated(dirs: &[PathBuf], copies: usize) -> Arc<ReplicatedBlobs> {
    let stores: Vec<Arc<dyn Blobs>> = dirs
        .iter()
        .map(|d| Arc::new(BlobStore::local(d).unwrap()) as Arc<dyn Blobs>)
        .collect();
    let mut stores = stores.into_iter();
    let primary = stores.next().unwrap();
    Arc::new(ReplicatedBlobs::new(primary, stores.collect(), copies).unwrap())
}

async fn open(world: &World, name: &str) -> Vec<u8> {
    read(&world.files, &ALICE, world.tenant, name, None, None)
        .await
        .unwrap()
        .1
}

async fn open_range(world: &World, name: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = read_range(
        &world.files,
        &ALICE,
        world.tenant,
        name,
        None,
        range,
        &mut out,
    )
    .await
    .unwrap();
    out
}

async fn check(blobs: &ReplicatedBlobs, record: &FileRecord) -> BlobCheck {
    blobs
        .check(&record.blob, record.blob_len, record.blob_sha256)
        .await
}

fn states(check: &BlobCheck) -> Vec<CopyState> {
    check.copies.iter().map(|c| c.state.clone()).collect()
}

/// Repairs what `check` found, asserts every bad copy was repaired, and
/// that a second check is clean.
async fn repair_and_recheck(blobs: &ReplicatedBlobs, record: &FileRecord, mut found: BlobCheck) {
    blobs.repair(&mut found).await;
    assert!(found.is_repaired(), "{found:#?}");
    let again = check(blobs, record).await;
    assert!(again.is_clean(), "{again:#?}");
}

#[tokio::test]
async fn the_record_keeps_the_digest_of_its_blob() {
    let dir = TempDir::new("digest");
    let dirs = local_dirs(dir.path(), 2);
    let blobs = replicated(&dirs, 2);
    let world = world(&dir.path().join("world"), blobs.clone()).await;
    let plain = data(300_000, 1);
    let record = world
        .files
        .seal(&ALICE, world.tenant, "f", plain.as_slice())
        .await
        .unwrap();
    let bytes = std::fs::read(dirs[0].join(record.blob.as_str())).unwrap();
    assert_eq!(record.blob_sha256, Some(BlobDigest::of(&bytes)));
    assert_eq!(bytes.len() as u64, record.blob_len);
    assert_eq!(
        std::fs::read(dirs[1].join(record.blob.as_str())).unwrap(),
        bytes
    );
    assert!(blobs.take_failures().is_empty());
    assert!(check(&blobs, &record).await.is_clean());
    assert_eq!(open(&world, "f").await, plain);
}

#[tokio::test]
async fn a_deleted_copy_is_read_around_reported_and_repaired() {
    let dir = TempDir::new("deleted");
    let dirs = local_dirs(dir.path(), 3);
    let blobs = replicated(&dirs, 3);
    let world = world(&dir.path().join("world"), blobs.clone()).await;
    let plain = data(1 << 20, 2);
    let record = world
        .files
        .seal(&ALICE, world.tenant, "f", plain.as_slice())
        .await
        .unwrap();
    // The primary's copy and one replica's are gone.
    std::fs::remove_file(dirs[0].join(record.blob.as_str())).unwrap();
    std::fs::remove_file(dirs[2].join(record.blob.as_str())).unwrap();
    assert_eq!(open(&world, "f").await, plain);
    assert_eq!(
        open_range(&world, "f", 1000..70_000).await,
        plain[1000..70_000]
    );
    let found = check(&blobs, &record).await;
    assert_eq!(
        states(&found),
        [CopyState::Missing, CopyState::Good, CopyState::Missing]
    );
    repair_and_recheck(&blobs, &record, found).await;
    assert_eq!(
        std::fs::read(dirs[0].join(record.blob.as_str())).unwrap(),
        std::fs::read(dirs[1].join(record.blob.as_str())).unwrap()
    );
    assert_eq!(open(&world, "f").await, plain);
}

#[tokio::test]
async fn a_corrupted_copy_is_read_around_reported_and_repaired() {
    let dir = TempDir::new("corrupted");
    let dirs = local_dirs(dir.path(), 3);
    let blobs = replicated(&dirs, 2);
    let world = world(&dir.path().join("world"), blobs.clone()).await;
    let plain = data(1 << 20, 3);
    let record = world
        .files
        .seal(&ALICE, world.tenant, "f", plain.as_slice())
        .await
        .unwrap();
    // A flipped byte in the middle of the primary's copy: the segments
    // before it are released from the primary, the rest from a replica.
    let primary = dirs[0].join(record.blob.as_str());
    let mut bytes = std::fs::read(&primary).unwrap();
    bytes[600_000] ^= 1;
    std::fs::write(&primary, &bytes).unwrap();
    // The first replica's copy is cut short.
    let replica = dirs[1].join(record.blob.as_str());
    let cut = std::fs::read(&replica).unwrap();
    std::fs::write(&replica, &cut[..cut.len() - 5000]).unwrap();

    assert_eq!(open(&world, "f").await, plain);
    assert_eq!(
        open_range(&world, "f", 500_000..900_000).await,
        plain[500_000..900_000]
    );
    let found = check(&blobs, &record).await;
    assert!(matches!(
        found.copies[0].state,
        CopyState::WrongDigest { .. }
    ));
    assert_eq!(
        found.copies[1].state,
        CopyState::WrongLength {
            len: record.blob_len - 5000
        }
    );
    assert_eq!(found.copies[2].state, CopyState::Good);
    repair_and_recheck(&blobs, &record, found).await;
    assert_eq!(open(&world, "f").await, plain);

    // With every copy damaged, the open fails and says so.
    for d in &dirs {
        std::fs::write(d.join(record.blob.as_str()), &bytes).unwrap();
    }
    let error = read(&world.files, &ALICE, world.tenant, "f", None, None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Integrity);
    let mut none = check(&blobs, &record).await;
    blobs.repair(&mut none).await;
    assert!(!none.is_repaired());
    assert!(matches!(
        none.copies[0].repair,
        Some(RepairOutcome::Failed { .. })
    ));
}

/// Makes a local location unusable: its directory becomes a file.
fn take_down(dir: &Path) {
    std::fs::rename(dir, dir.with_extension("away")).unwrap();
    std::fs::write(dir, b"not a directory").unwrap();
}

fn bring_back(dir: &Path) {
    std::fs::remove_file(dir).unwrap();
    std::fs::rename(dir.with_extension("away"), dir).unwrap();
}

#[tokio::test]
async fn a_location_down_takes_no_write_and_is_repaired_when_back() {
    let dir = TempDir::new("down");
    let dirs = local_dirs(dir.path(), 3);
    let blobs = replicated(&dirs, 2);
    let world = world(&dir.path().join("world"), blobs.clone()).await;
    take_down(&dirs[1]);
    let plain = data(700_000, 4);
    let record = world
        .files
        .seal(&ALICE, world.tenant, "f", plain.as_slice())
        .await
        .unwrap();
    let failures = blobs.take_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].location, 1);
    assert_eq!(failures[0].blob, Some(record.blob.clone()));
    // A batch too.
    let items = vec![atrest::BatchItem {
        name: "g".to_owned(),
        blob: BlobName::random().unwrap(),
        plaintext: &plain[..1000],
        request: None,
        media_type: None,
    }];
    let batch = world
        .files
        .seal_batch(&ALICE, world.tenant, items, 1)
        .await
        .unwrap();
    let batched = batch.into_iter().next().unwrap().unwrap();
    assert_eq!(open(&world, "f").await, plain);
    assert_eq!(open(&world, "g").await, plain[..1000]);
    // The primary goes down too: reads come from the last copy.
    take_down(&dirs[0]);
    assert_eq!(open(&world, "f").await, plain);
    assert_eq!(open_range(&world, "f", 5..600_000).await, plain[5..600_000]);
    let found = check(&blobs, &record).await;
    assert!(
        matches!(
            found.copies[0].state,
            CopyState::Unreachable { .. } | CopyState::Missing
        ),
        "{found:?}"
    );
    bring_back(&dirs[0]);
    bring_back(&dirs[1]);
    for record in [&record, &batched] {
        let found = check(&blobs, record).await;
        assert_eq!(
            states(&found),
            [CopyState::Good, CopyState::Missing, CopyState::Good]
        );
        repair_and_recheck(&blobs, record, found).await;
    }
}

#[tokio::test]
async fn more_copies_than_working_locations_fails_the_seal_and_leaves_no_record() {
    let dir = TempDir::new("too-few");
    let dirs = local_dirs(dir.path(), 2);
    let blobs = replicated(&dirs, 2);
    let world = world(&dir.path().join("world"), blobs.clone()).await;
    take_down(&dirs[1]);
    let error = world
        .files
        .seal(&ALICE, world.tenant, "f", data(200_000, 5).as_slice())
        .await
        .unwrap_err();
    assert_ne!(error.kind(), ErrorKind::Usage, "{error}");
    assert!(
        world
            .catalog
            .records(world.tenant)
            .await
            .unwrap()
            .is_empty(),
        "no record"
    );
    assert!(world.catalog.seals_in_progress().await.unwrap().is_empty());
    assert!(
        std::fs::read_dir(&dirs[0]).unwrap().next().is_none(),
        "no blob"
    );
    // Copies outside 1..=locations are refused.
    let primary: Arc<dyn Blobs> = Arc::new(BlobStore::local(&dirs[0]).unwrap());
    for copies in [0, 2] {
        let refused = ReplicatedBlobs::new(primary.clone(), Vec::new(), copies).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Usage);
    }
}

#[tokio::test]
async fn the_digest_is_covered_by_the_record_tag() {
    let dir = TempDir::new("tag");
    let dirs = local_dirs(dir.path(), 1);
    let blobs = replicated(&dirs, 1);
    let world = world(&dir.path().join("world"), blobs).await;
    let record = world
        .files
        .seal(&ALICE, world.tenant, "f", &b"hello"[..])
        .await
        .unwrap();
    let db = rusqlite_path(&dir.path().join("world"));
    for sql in [
        "UPDATE catalog_versions SET blob_sha256 = NULL",
        "UPDATE catalog_versions SET blob_sha256 = zeroblob(32)",
    ] {
        edit(&db, sql);
        let error = read(&world.files, &ALICE, world.tenant, "f", None, None)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Integrity, "{sql}");
        edit(
            &db,
            &format!(
                "UPDATE catalog_versions SET blob_sha256 = x'{}'",
                record.blob_sha256.unwrap()
            ),
        );
    }
    assert_eq!(open(&world, "f").await, b"hello");
}

fn rusqlite_path(dir: &Path) -> PathBuf {
    dir.join("catalog.sqlite")
}

fn edit(db: &Path, sql: &str) {
    let connection = atrest_test_support::sqlite::Connection::open(db).unwrap();
    connection.execute_batch(sql).unwrap();
}

#[tokio::test]
async fn a_catalog_from_before_digests_gains_the_column_and_its_records_still_open() {
    let dir = TempDir::new("migrate");
    let dirs = local_dirs(dir.path(), 1);
    let blobs = replicated(&dirs, 1);
    let world_dir = dir.path().join("world");
    let world = world(&world_dir, blobs).await;
    let _ = world
        .files
        .seal(&ALICE, world.tenant, "f", &b"hello"[..])
        .await
        .unwrap();
    drop(world);
    let db = rusqlite_path(&world_dir);
    edit(&db, "ALTER TABLE catalog_versions DROP COLUMN blob_sha256");
    let catalog = SqliteCatalog::open(&db).await.unwrap();
    let tenant = catalog.tenant_named("a").await.unwrap().unwrap().tenant;
    let records = catalog.records(tenant).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].blob_sha256, None);
}

/// An Azure location at a port where nothing listens (each request fails
/// after `object_store`'s retries, about a second and a half).
fn nothing_listening() -> Arc<dyn Blobs> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Arc::new(
        BlobStore::from_url_with_options(
            "az://down",
            [
                ("azure_storage_account_name", "devstoreaccount1".to_owned()),
                // Azurite's published development key: protects nothing.
                (
                    "azure_storage_account_key",
                    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
                        .to_owned(),
                ),
                (
                    "azure_storage_endpoint",
                    format!("http://127.0.0.1:{port}/devstoreaccount1"),
                ),
                ("azure_allow_http", "true".to_owned()),
            ],
        )
        .unwrap(),
    )
}

#[tokio::test]
async fn a_location_with_nothing_listening_is_passed_over() {
    let dir = TempDir::new("nothing-listening");
    let dirs = local_dirs(dir.path(), 2);
    let stores: Vec<Arc<dyn Blobs>> = dirs
        .iter()
        .map(|d| Arc::new(BlobStore::local(d).unwrap()) as Arc<dyn Blobs>)
        .collect();
    let blobs = Arc::new(
        ReplicatedBlobs::new(
            stores[0].clone(),
            vec![nothing_listening(), stores[1].clone()],
            2,
        )
        .unwrap(),
    );
    let world = world(&dir.path().join("world"), blobs.clone()).await;
    let plain = data(500_000, 7);
    let record = world
        .files
        .seal(&ALICE, world.tenant, "f", plain.as_slice())
        .await
        .unwrap();
    let failures = blobs.take_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].location, 1);
    assert_eq!(failures[0].error.kind(), ErrorKind::Unavailable);
    // The primary's copy gone: the read passes over it and the location
    // that does not answer.
    std::fs::remove_file(dirs[0].join(record.blob.as_str())).unwrap();
    assert_eq!(open(&world, "f").await, plain);
    let found = check(&blobs, &record).await;
    assert_eq!(found.copies[0].state, CopyState::Missing);
    assert!(matches!(
        found.copies[1].state,
        CopyState::Unreachable { .. }
    ));
    assert_eq!(found.copies[2].state, CopyState::Good);
    let mut repaired = found;
    blobs.repair(&mut repaired).await;
    assert_eq!(
        repaired.copies[0].repair,
        Some(RepairOutcome::Repaired { from: 2 })
    );
    assert!(matches!(
        repaired.copies[1].repair,
        Some(RepairOutcome::Failed { .. })
    ));
    let again = check(&blobs, &record).await;
    assert!(again.copies[0].state.is_good() && again.copies[2].state.is_good());
}

/// A location whose uploads fail after `after` bytes (a disk filling up,
/// a connection dropped in the middle of an upload).
struct FailsMidway {
    inner: atrest::MemoryBlobs,
    after: usize,
}

struct FailingUpload {
    inner: Box<dyn BlobUpload>,
    left: usize,
}

#[async_trait::async_trait]
impl BlobUpload for FailingUpload {
    async fn write(&mut self, bytes: Bytes) -> Result<(), atrest::Error> {
        if bytes.len() > self.left {
            return Err(atrest::Error::Io(std::io::Error::other("no space left")));
        }
        self.left -= bytes.len();
        self.inner.write(bytes).await
    }

    async fn finish(self: Box<Self>) -> Result<u64, atrest::Error> {
        self.inner.finish().await
    }
}

#[async_trait::async_trait]
impl Blobs for FailsMidway {
    async fn create(&self, name: &BlobName) -> Result<Box<dyn BlobUpload>, atrest::Error> {
        Ok(Box::new(FailingUpload {
            inner: self.inner.create(name).await?,
            left: self.after,
        }))
    }

    async fn open(&self, name: &BlobName) -> Result<Box<dyn BlobReader>, atrest::Error> {
        self.inner.open(name).await
    }

    async fn read_range(
        &self,
        name: &BlobName,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<u8>, atrest::Error> {
        self.inner.read_range(name, range).await
    }

    async fn len(&self, name: &BlobName) -> Result<u64, atrest::Error> {
        self.inner.len(name).await
    }

    async fn delete(&self, name: &BlobName) -> Result<(), atrest::Error> {
        self.inner.delete(name).await
    }

    async fn list(&self) -> Result<Vec<(BlobName, u64)>, atrest::Error> {
        self.inner.list().await
    }

    fn location(&self) -> String {
        "fails-midway".into()
    }
}

#[tokio::test]
async fn a_location_failing_in_the_middle_of_an_upload_is_dropped_from_it() {
    let dir = TempDir::new("midway");
    let dirs = local_dirs(dir.path(), 1);
    let primary: Arc<dyn Blobs> = Arc::new(BlobStore::local(&dirs[0]).unwrap());
    let failing = Arc::new(FailsMidway {
        inner: atrest::MemoryBlobs::new(),
        after: 100_000,
    });
    let blobs = Arc::new(
        ReplicatedBlobs::new(primary.clone(), vec![failing.clone() as Arc<dyn Blobs>], 1).unwrap(),
    );
    let world = world(&dir.path().join("world"), blobs.clone()).await;
    let plain = data(400_000, 8);
    let record = world
        .files
        .seal(&ALICE, world.tenant, "f", plain.as_slice())
        .await
        .unwrap();
    let failures = blobs.take_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(
        (failures[0].location, failures[0].place.as_str()),
        (1, "fails-midway")
    );
    // The dropped upload left nothing at that location.
    assert!(failing.inner.list().await.unwrap().is_empty());
    assert_eq!(open(&world, "f").await, plain);
    assert_eq!(
        states(&check(&blobs, &record).await),
        [CopyState::Good, CopyState::Missing]
    );

    // With both copies required, the same upload fails and leaves nothing
    // anywhere, and no record.
    let strict = Arc::new(
        ReplicatedBlobs::new(primary, vec![failing.clone() as Arc<dyn Blobs>], 2).unwrap(),
    );
    let world = self::world(&dir.path().join("strict"), strict).await;
    let error = world
        .files
        .seal(&ALICE, world.tenant, "g", plain.as_slice())
        .await
        .unwrap_err();
    assert_ne!(error.kind(), ErrorKind::Usage, "{error}");
    assert!(
        world
            .catalog
            .records(world.tenant)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(failing.inner.list().await.unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(&dirs[0]).unwrap().count(),
        1,
        "only the first world's blob"
    );
}

/// The Azure storage emulator as one replica, and a second Azure location
/// that cannot take anything (its container does not exist): writes
/// succeed with two copies of three, reads come around a deleted and a
/// corrupted copy, and the repair fixes both.
#[tokio::test]
async fn azure_replica_with_a_location_down() {
    let azurite = atrest_test_support::azurite::azurite();
    let dir = TempDir::new("azure-replica");
    let container = format!("atrest-{}", BlobName::random().unwrap());
    azurite.create_container(&container);
    let primary: Arc<dyn Blobs> = Arc::new(BlobStore::local(&dir.path().join("primary")).unwrap());
    let azure: Arc<dyn Blobs> = Arc::new(
        BlobStore::from_url_with_options(&format!("az://{container}"), azurite.options()).unwrap(),
    );
    let missing = format!("atrest-missing-{}", BlobName::random().unwrap());
    let down: Arc<dyn Blobs> = Arc::new(
        BlobStore::from_url_with_options(&format!("az://{missing}"), azurite.options()).unwrap(),
    );
    let blobs = Arc::new(ReplicatedBlobs::new(primary, vec![azure.clone(), down], 2).unwrap());
    let world = world(&dir.path().join("world"), blobs.clone()).await;
    let plain = data(3 << 20, 6);
    let record = world
        .files
        .seal(&ALICE, world.tenant, "f", plain.as_slice())
        .await
        .unwrap();
    let failures = blobs.take_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].location, 2);

    // The primary's copy is deleted: read from Azure.
    std::fs::remove_file(dir.path().join("primary").join(record.blob.as_str())).unwrap();
    assert_eq!(open(&world, "f").await, plain);
    let found = check(&blobs, &record).await;
    assert_eq!(found.copies[0].state, CopyState::Missing);
    assert_eq!(found.copies[1].state, CopyState::Good);
    assert!(!found.copies[2].state.is_good());
    let mut repaired = found;
    blobs.repair(&mut repaired).await;
    assert!(matches!(
        repaired.copies[0].repair,
        Some(RepairOutcome::Repaired { from: 1 })
    ));
    assert!(matches!(
        repaired.copies[2].repair,
        Some(RepairOutcome::Failed { .. })
    ));

    // Azure's copy gets a flipped byte: read from the primary, repair
    // Azure's from it.
    let mut bytes = std::fs::read(dir.path().join("primary").join(record.blob.as_str())).unwrap();
    bytes[2_000_000] ^= 0x80;
    let mut upload = azure.create(&record.blob).await.unwrap();
    upload.write(Bytes::from(bytes)).await.unwrap();
    let _ = upload.finish().await.unwrap();
    assert_eq!(open(&world, "f").await, plain);
    let found = check(&blobs, &record).await;
    assert!(matches!(
        found.copies[1].state,
        CopyState::WrongDigest { .. }
    ));
    let mut repaired = found;
    blobs.repair(&mut repaired).await;
    assert!(matches!(
        repaired.copies[1].repair,
        Some(RepairOutcome::Repaired { from: 0 })
    ));
    let again = check(&blobs, &record).await;
    assert!(again.copies[0].state.is_good() && again.copies[1].state.is_good());
    azure.delete(&record.blob).await.unwrap();
}

/// A batch's writers follow whether a write waits on the store: a local
/// directory flushed once per batch (Linux) does not; an object store at a
/// URL does, and so does a set of copies with such a location among them.
#[test]
fn whether_writes_wait_follows_the_locations() {
    let dir = TempDir::new("writes-wait");
    let dirs = local_dirs(dir.path(), 2);
    let local: Vec<Arc<dyn Blobs>> = dirs
        .iter()
        .map(|d| Arc::new(BlobStore::local(d).unwrap()) as Arc<dyn Blobs>)
        .collect();
    let flushed_per_batch = cfg!(target_os = "linux");
    assert_eq!(local[0].deferred_writes_wait(), !flushed_per_batch);
    assert!(!atrest::MemoryBlobs::new().deferred_writes_wait());
    assert!(nothing_listening().deferred_writes_wait());
    let copies = |replica: Arc<dyn Blobs>| {
        ReplicatedBlobs::new(local[0].clone(), vec![replica], 2)
            .unwrap()
            .deferred_writes_wait()
    };
    assert_eq!(copies(local[1].clone()), !flushed_per_batch);
    assert!(copies(nothing_listening()));
}
