//! Crash safety: a child process is killed with SIGKILL at random points of
//! a TIK roll with re-wrap, and of a purge. Afterwards the stores open
//! cleanly, the audit log recovers and verifies, every file key that
//! unwrapped before still unwraps to the same key (after a purge: none of
//! the purged tenant's does, and every other tenant's still does).
//!
//! Everything is on disk: SQLite key stores, master key files, the audit
//! log.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use atrest_audit::{AuditLog, LogConfig, SigningKey, verify};
use atrest_filekey::{FileContext, OsRng, TenantId};
use atrest_sqlite::SqliteStore;
use atrest_tenant::{
    Error, KeyHierarchy, MasterKey, MetadataStore as _, RootKeyProvider, RootKeyRef, ServiceKeys,
    TenantKeyDir, TenantState,
};
use common::{FileKeys, TempDir, USER, service_keys, system};

const CHILD_DIR: &str = "ATREST_CRASH_CHILD_DIR";
const CHILD_OP: &str = "ATREST_CRASH_CHILD_OP";
const CHILD_TENANT: &str = "ATREST_CRASH_CHILD_TENANT";

struct World {
    hierarchy: KeyHierarchy,
    admin: atrest_tenant::Administration,
    store: Arc<SqliteStore>,
    file_keys: FileKeys,
    log: Arc<AuditLog>,
}

/// Opens (creating on first use) every store of a deployment in `dir`.
async fn open_world(dir: &Path) -> World {
    let provider = async |name: &str, label: &str| -> Arc<ServiceKeys> {
        let key_file = dir.join(format!("{name}.key"));
        let master = if key_file.exists() {
            MasterKey::open_file(&key_file).unwrap()
        } else {
            MasterKey::create_file(&key_file).unwrap()
        };
        let keys = service_keys(name, &dir.join(format!("{name}.sqlite")), master).await;
        if keys.keys().await.unwrap().is_empty() {
            keys.create_key(label).await.unwrap();
        }
        keys
    };
    let service = provider("service", "root").await;
    if !service
        .keys()
        .await
        .unwrap()
        .iter()
        .any(|(k, _)| k.label() == "availability")
    {
        service.create_key("availability").await.unwrap();
    }
    let a = provider("customer-a", "key-1").await;
    let b = provider("customer-b", "key-1").await;
    let store = Arc::new(
        SqliteStore::open(&dir.join("tenants.sqlite"))
            .await
            .unwrap(),
    );
    let file_keys = FileKeys::open(&dir.join("catalog.sqlite")).await;
    let audit_dir = dir.join("audit");
    let log = if audit_dir.exists() {
        AuditLog::open(&audit_dir, audit_signer(dir), LogConfig::default())
            .unwrap()
            .0
    } else {
        AuditLog::create(&audit_dir, audit_signer(dir), LogConfig::default()).unwrap()
    };
    let log = Arc::new(log);
    let tenant_keys = Arc::new(
        TenantKeyDir::open(
            &dir.join("tenant-keys"),
            MasterKey::open_file(&dir.join("service.key")).unwrap(),
        )
        .unwrap(),
    );
    let (hierarchy, admin) = KeyHierarchy::builder(store.clone(), tenant_keys, log.clone())
        .provider(service as Arc<dyn RootKeyProvider>)
        .provider(a as Arc<dyn RootKeyProvider>)
        .provider(b as Arc<dyn RootKeyProvider>)
        .service_root_key("service", "root")
        .availability_key("service", "availability")
        .policy(common::policy())
        .build_with_administration()
        .unwrap();
    World {
        hierarchy,
        admin,
        store,
        file_keys,
        log,
    }
}

fn customer_keys() -> [RootKeyRef; 2] {
    [
        "customer-a:key-1".parse().unwrap(),
        "customer-b:key-1".parse().unwrap(),
    ]
}

/// The child's work, until it is killed.
async fn child(dir: &Path, op: &str, tenant: TenantId) {
    let world = open_world(dir).await;
    match op {
        "rotate" => loop {
            world.hierarchy.roll_tik(tenant).await.unwrap();
            rewrap_and_retire(&world, tenant, 7).await;
        },
        "purge" => {
            world.hierarchy.purge(tenant).await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        _ => unreachable!(),
    }
}

/// Moves every wrapped file key to the current TIK version, then retires
/// the older versions.
async fn rewrap_and_retire(world: &World, tenant: TenantId, batch: usize) {
    world
        .hierarchy
        .rewrap_file_keys(tenant, world.file_keys.index(), batch, &mut |_| {})
        .await
        .unwrap();
    let current = world.hierarchy.tenant(tenant).await.unwrap().current_tik;
    for version in world.store.tik_versions(tenant).await.unwrap() {
        if version != current {
            world
                .hierarchy
                .retire_tik(tenant, version, world.file_keys.index())
                .await
                .unwrap();
        }
    }
}

/// Runs the child for `op` on `tenant` and kills it after `delay`.
async fn run_and_kill(test: &str, dir: &Path, op: &str, tenant: TenantId, delay: Duration) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_OP, op)
        .env(CHILD_TENANT, tenant.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(delay).await;
    if let Ok(Some(status)) = child.try_wait() {
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        panic!("child exited before it was killed ({status}): {stderr}");
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait().unwrap();
}

async fn run_child_if_asked() -> bool {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return false;
    };
    let op = std::env::var(CHILD_OP).unwrap();
    let tenant = std::env::var(CHILD_TENANT).unwrap().parse().unwrap();
    child(Path::new(&dir), &op, tenant).await;
    true
}

/// A pseudo-random delay in `[min, max)` milliseconds.
fn random_delay(min: u64, max: u64) -> Duration {
    let mut bytes = [0u8; 8];
    atrest_filekey::SecureRandom::fill(&mut OsRng, &mut bytes).unwrap();
    Duration::from_millis(min + u64::from_le_bytes(bytes) % (max - min))
}

async fn files_for(world: &World, tenant: TenantId, n: usize) -> HashMap<FileContext, [u8; 32]> {
    let mut files = HashMap::with_capacity(n);
    for _ in 0..n {
        let (ctx, key, _) = world
            .file_keys
            .new_file(&world.hierarchy, &USER, tenant)
            .await;
        let _ = files.insert(ctx, *key.expose_secret());
    }
    files
}

async fn assert_all_unwrap(world: &World, files: &HashMap<FileContext, [u8; 32]>) {
    for (ctx, key) in files {
        let wrapped = world.file_keys.wrapped(ctx).await;
        let released = world
            .hierarchy
            .release_file_key(&USER, ctx, &wrapped)
            .await
            .unwrap();
        assert_eq!(released.expose_secret(), key);
    }
}

/// The audit log's signing key, kept beside it so the parent and the child
/// processes share it.
fn audit_signer(dir: &Path) -> SigningKey {
    let path = dir.join("audit-signing.pk8");
    if !path.exists() {
        let (_, pkcs8) = SigningKey::generate("crash-test").unwrap();
        std::fs::write(&path, &pkcs8[..]).unwrap();
    }
    SigningKey::from_pkcs8("crash-test", &std::fs::read(&path).unwrap()).unwrap()
}

fn assert_log_verifies(world: &World, dir: &Path) {
    let checkpoint = world.log.latest_checkpoint().unwrap();
    let key = audit_signer(dir).verifying_key();
    let report = verify(dir.join("audit"), &[checkpoint], &key).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
}

#[tokio::test]
async fn sigkill_during_tik_roll_and_rewrap_loses_no_key() {
    if run_child_if_asked().await {
        return;
    }
    let dir = TempDir::new("crash-roll");
    let (tenant, files) = {
        let world = open_world(dir.path()).await;
        let tenant = TenantId::random(&mut OsRng).unwrap();
        world
            .hierarchy
            .create_customer_key_tenant(tenant, customer_keys())
            .await
            .unwrap();
        let files = files_for(&world, tenant, 150).await;
        (tenant, files)
    };
    let mut versions_seen = 0;
    for round in 0..8 {
        run_and_kill(
            "sigkill_during_tik_roll_and_rewrap_loses_no_key",
            dir.path(),
            "rotate",
            tenant,
            random_delay(150, 900),
        )
        .await;
        let world = open_world(dir.path()).await;
        assert_all_unwrap(&world, &files).await;
        assert_log_verifies(&world, dir.path());
        let current = u32::from(world.hierarchy.tenant(tenant).await.unwrap().current_tik);
        assert!(
            current >= versions_seen,
            "round {round}: the current TIK went backwards"
        );
        versions_seen = current;
    }
    assert!(
        versions_seen > 1,
        "the child never rolled the TIK: kill delays too short"
    );
    // Finishing the interrupted work leaves everything under the current
    // version, and the older versions can go.
    let world = open_world(dir.path()).await;
    rewrap_and_retire(&world, tenant, 50).await;
    let current = world.hierarchy.tenant(tenant).await.unwrap().current_tik;
    assert_eq!(
        world.store.tik_versions(tenant).await.unwrap(),
        vec![current]
    );
    assert_all_unwrap(&world, &files).await;
}

#[tokio::test]
async fn sigkill_during_a_purge_leaves_it_done_or_not_done() {
    if run_child_if_asked().await {
        return;
    }
    let dir = TempDir::new("crash-purge");
    let (bystander, bystander_files) = {
        let world = open_world(dir.path()).await;
        let tenant = TenantId::random(&mut OsRng).unwrap();
        world.hierarchy.create_service_tenant(tenant).await.unwrap();
        let files = files_for(&world, tenant, 20).await;
        (tenant, files)
    };
    let (mut purged, mut intact) = (0, 0);
    for _ in 0..10 {
        let (victim, files) = {
            let world = open_world(dir.path()).await;
            let tenant = TenantId::random(&mut OsRng).unwrap();
            world
                .hierarchy
                .create_customer_key_tenant(tenant, customer_keys())
                .await
                .unwrap();
            world.hierarchy.roll_tik(tenant).await.unwrap();
            (tenant, files_for(&world, tenant, 20).await)
        };
        run_and_kill(
            "sigkill_during_a_purge_leaves_it_done_or_not_done",
            dir.path(),
            "purge",
            victim,
            random_delay(1, 40),
        )
        .await;
        let world = open_world(dir.path()).await;
        // Killed after the tenant key was destroyed but before the database
        // said so: the purge is already final (nothing unwraps), and
        // running it again finishes it.
        let state = match world.hierarchy.tenant(victim).await {
            Ok(record) => record.state,
            Err(Error::TenantKeyMissing(tenant)) if tenant == victim => {
                for ctx in files.keys() {
                    let wrapped = world.file_keys.wrapped(ctx).await;
                    let result = world.hierarchy.release_file_key(&USER, ctx, &wrapped).await;
                    assert!(
                        matches!(result, Err(Error::TenantKeyMissing(_))),
                        "{result:?}"
                    );
                }
                world.hierarchy.purge(victim).await.unwrap();
                world.hierarchy.tenant(victim).await.unwrap().state
            }
            Err(error) => panic!("{error}"),
        };
        match state {
            TenantState::Active => {
                intact += 1;
                assert_all_unwrap(&world, &files).await;
                assert_eq!(world.store.tik_versions(victim).await.unwrap().len(), 2);
            }
            TenantState::Purged => {
                purged += 1;
                assert!(world.store.tik_versions(victim).await.unwrap().is_empty());
                for ctx in files.keys() {
                    let wrapped = world.file_keys.wrapped(ctx).await;
                    let scan = world.admin.capability("scan");
                    for access in [USER, system(&scan)] {
                        let result = world
                            .hierarchy
                            .release_file_key(&access, ctx, &wrapped)
                            .await;
                        assert!(matches!(result, Err(Error::Purged(_))), "{result:?}");
                    }
                }
            }
        }
        assert_all_unwrap(&world, &bystander_files).await;
        assert_log_verifies(&world, dir.path());
        let _ = bystander;
    }
    eprintln!("purge crash rounds: {purged} purged, {intact} intact");
}
