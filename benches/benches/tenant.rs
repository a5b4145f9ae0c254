//! Key hierarchy rates: generate + wrap and unwrap (release) through a
//! tenant's TIK with a warm cache; release latency with a cold cache
//! against SoftHSM2 (the customer keys in a PKCS#11 token); and the re-wrap
//! rate of a TIK roll.
//!
//! `cargo bench -p atrest-benches --bench tenant`
//!
//! The warm-cache figures include building each audit record; the records
//! go to an in-memory sink that counts them, so the figures measure the
//! hierarchy, not the durability of a log (see the `audit` bench for that).
//! The SoftHSM2 group needs the Debian package `softhsm2` (installed by
//! `scripts/test`); without it, it is skipped with a message.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest::{BlobName, Catalog as _};
use atrest_filekey::{FileContext, FileId, FileVersion, OsRng, TenantId};
use atrest_sqlite::{SqliteCatalog, SqliteSealedKeys, SqliteStore};
use atrest_tenant::{
    Access, Decision, KeyHierarchy, MasterKey, Pkcs11Keys, RootKeyProvider, ServiceKeys,
    TenantKeyDir,
};
use atrest_test_support::TempDir;
use atrest_test_support::audit::Counting;
use atrest_test_support::softhsm::{self, SoftHsm};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const USER: Access<'static> = Access::User {
    principal: "reader",
};

std::thread_local! {
    /// The runtime the benchmarks drive the async API on (one per thread,
    /// current-thread: the least a call costs to wait for).
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
}

/// Runs `future` to its end on this thread's runtime.
fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|runtime| runtime.block_on(future))
}

fn hierarchy(dir: &Path, extra: &[Arc<dyn RootKeyProvider>]) -> (KeyHierarchy, Arc<SqliteStore>) {
    let master = MasterKey::create_file(&dir.join("master.key")).unwrap();
    let tenant_keys =
        Arc::new(TenantKeyDir::open(&dir.join("tenant-keys"), master.clone()).unwrap());
    let sealed = block_on(SqliteSealedKeys::open(&dir.join("keys.sqlite"))).unwrap();
    let service = Arc::new(ServiceKeys::new("service", Arc::new(sealed), master).unwrap());
    block_on(service.create_key("root")).unwrap();
    block_on(service.create_key("availability")).unwrap();
    let store = Arc::new(block_on(SqliteStore::open(&dir.join("tenants.sqlite"))).unwrap());
    let mut builder =
        KeyHierarchy::builder(store.clone(), tenant_keys, Arc::new(Counting::default()))
            .provider(service)
            .service_root_key("service", "root")
            .availability_key("service", "availability")
            .policy(Arc::new(|_: &Access<'_>, _: TenantId, _: FileId| {
                Decision::Allow
            }));
    for provider in extra {
        builder = builder.provider(provider.clone());
    }
    (builder.build().unwrap(), store)
}

fn context(tenant: TenantId) -> FileContext {
    FileContext::new(
        tenant,
        FileId::random(&mut OsRng).unwrap(),
        FileVersion::FIRST,
    )
}

fn warm(c: &mut Criterion) {
    let dir = TempDir::new("bench-warm");
    let (hierarchy, _) = hierarchy(dir.path(), &[]);
    let tenant = TenantId::random(&mut OsRng).unwrap();
    block_on(hierarchy.create_service_tenant(tenant)).unwrap();
    let ctx = context(tenant);
    let (_, wrapped) = block_on(hierarchy.new_file_key(&USER, &ctx)).unwrap();

    let mut group = c.benchmark_group("tenant/warm-cache");
    group.throughput(Throughput::Elements(1));
    group.bench_function("generate+wrap", |b| {
        b.iter(|| block_on(hierarchy.new_file_key(&USER, std::hint::black_box(&ctx))).unwrap());
    });
    group.bench_function("release (policy + unwrap)", |b| {
        b.iter(|| {
            block_on(hierarchy.release_file_key(&USER, &ctx, std::hint::black_box(&wrapped)))
                .unwrap()
        });
    });
    group.finish();
}

fn rewrap(c: &mut Criterion) {
    const KEYS: u64 = 5_000;
    let dir = TempDir::new("bench-rewrap");
    let (hierarchy, _) = hierarchy(dir.path(), &[]);
    let tenant = TenantId::random(&mut OsRng).unwrap();
    block_on(hierarchy.create_service_tenant(tenant)).unwrap();
    // The catalog, the index of wrapped keys a re-wrap updates: seals in
    // progress with their keys attached, as uploads leave them.
    let catalog = block_on(SqliteCatalog::open(&dir.path().join("catalog.sqlite"))).unwrap();
    let seals: Vec<(String, BlobName)> = (0..KEYS)
        .map(|i| (format!("file-{i}"), BlobName::random().unwrap()))
        .collect();
    let tickets = block_on(catalog.begin_seals(tenant, &seals)).unwrap();
    let contexts: Vec<FileContext> = tickets.iter().map(|ticket| ticket.context).collect();
    let made = block_on(hierarchy.new_file_keys(&USER, tenant, &contexts)).unwrap();
    let wraps: Vec<_> = tickets
        .iter()
        .zip(&made)
        .map(|(ticket, made)| (ticket, &made.as_ref().unwrap().1))
        .collect();
    block_on(catalog.attach_keys(&wraps)).unwrap();
    let mut group = c.benchmark_group("tenant/tik-roll");
    group.sample_size(10);
    group.throughput(Throughput::Elements(KEYS));
    group.bench_function("roll + rewrap 5000 keys (batches of 1000, SQLite)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                block_on(hierarchy.roll_tik(tenant)).unwrap();
                let report =
                    block_on(hierarchy.rewrap_file_keys(tenant, &catalog, 1000, &mut |_| {}))
                        .unwrap();
                total += start.elapsed();
                assert_eq!(report.rewrapped, KEYS);
            }
            total
        });
    });
    group.finish();
}

/// SoftHSM2 reads `SOFTHSM2_CONF` when initialized; the bench re-runs
/// itself with that set to fresh tokens in a temporary directory.
fn cold_softhsm(c: &mut Criterion) {
    let module = softhsm::module();
    if !module.exists() {
        eprintln!(
            "tenant/cold-cache-softhsm2: skipped, {} not installed (scripts/test installs softhsm2)",
            module.display()
        );
        return;
    }
    let Some(dir) = std::env::var_os("ATREST_BENCH_SOFTHSM_DIR") else {
        let hsm = SoftHsm::init("bench", &["customer-a", "customer-b"]).unwrap();
        let status = hsm
            .command(std::env::current_exe().unwrap())
            .args(std::env::args_os().skip(1))
            .env("ATREST_BENCH_SOFTHSM_DIR", hsm.dir())
            .env("ATREST_BENCH_SOFTHSM_ONLY", "1")
            .status()
            .unwrap();
        assert!(status.success());
        return;
    };
    let dir = PathBuf::from(dir);
    let hsm_a = Arc::new(
        block_on(Pkcs11Keys::open(
            "hsm-a",
            &module,
            "customer-a",
            softhsm::USER_PIN,
        ))
        .unwrap(),
    );
    let hsm_b = Arc::new(
        block_on(Pkcs11Keys::open(
            "hsm-b",
            &module,
            "customer-b",
            softhsm::USER_PIN,
        ))
        .unwrap(),
    );
    let keys = [
        block_on(hsm_a.generate_key("k")).unwrap(),
        block_on(hsm_b.generate_key("k")).unwrap(),
    ];
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let (hierarchy, _) = hierarchy(&state, &[hsm_a, hsm_b]);
    let tenant = TenantId::random(&mut OsRng).unwrap();
    block_on(hierarchy.create_customer_key_tenant(tenant, keys)).unwrap();
    let ctx = context(tenant);
    let (_, wrapped) = block_on(hierarchy.new_file_key(&USER, &ctx)).unwrap();

    let mut group = c.benchmark_group("tenant/cold-cache-softhsm2");
    group.throughput(Throughput::Elements(1));
    group.bench_function("release (TIK unwrap in the token + file key unwrap)", |b| {
        b.iter(|| {
            hierarchy.flush_cache();
            block_on(hierarchy.release_file_key(&USER, &ctx, &wrapped)).unwrap()
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    if std::env::var_os("ATREST_BENCH_SOFTHSM_ONLY").is_none() {
        warm(c);
        rewrap(c);
    }
    cold_softhsm(c);
}

criterion_group!(tenant, benches);
criterion_main!(tenant);
