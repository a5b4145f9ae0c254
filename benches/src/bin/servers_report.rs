//! Key release through OpenBao transit and AWS KMS, and sealing and opening small files
//! on the embedded defaults against the servers a multi-instance deployment
//! uses, side by side in one run.
//!
//! ```text
//! scripts/with-servers cargo run --release -p atrest-benches --bin servers_report -- [FILES] [RELEASES]
//! ```
//!
//! `scripts/with-servers` starts a private PostgreSQL, Azurite, `bao
//! server -dev` and moto's AWS KMS emulator (as `scripts/test` does) and
//! runs the command with their addresses in the environment. Defaults: 500
//! files of 4 KiB, 300 cold releases.
//!
//! - **OpenBao**: a customer-key tenant whose two customer keys are transit
//!   keys. A cold release empties the TIK cache first, so it unwraps the TIK
//!   through the server (plus the tenant key and the file key): p50 and p99
//!   latency. A warm release finds the TIK cached: releases per second.
//!   Over plain HTTP to the loopback dev server, then over TLS to the
//!   `-dev-tls` one (verified against its private CA), in the same run.
//! - **AWS KMS**: the same, the two customer keys in two regions of moto's
//!   KMS emulator (plain HTTP on loopback): what the provider adds over
//!   OpenBao (a `DescribeKey` beside each `Decrypt`, SigV4 signing).
//! - **4 KiB files**: seal then open `FILES` files through `atrest::Files`,
//!   every record durable, on SQLite + a local directory and on PostgreSQL +
//!   Azure storage (Azurite): files per second each way, and the ratio.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::panic
)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest::blobs::BlobStore;
use atrest::filekey::{FileContext, FileId, FileVersion, OsRng, TenantId};

use atrest::tenant::{
    Access, Decision, KeyHierarchy, MasterKey, MetadataStore, RootKeyProvider, RootKeyRef,
    ServiceKeys, TenantKeyDir,
};
use atrest::{Blobs, Catalog, FileSelector, Files};
use atrest_awskms::{AwsCredentials, AwsKmsKeys};
use atrest_openbao::{Credentials, TransitKeys};
use atrest_postgres::{PgCatalog, PgMetadataStore, PgOptions, Postgres};
use atrest_sqlite::{SqliteCatalog, SqliteSealedKeys, SqliteStore};
use atrest_test_support::TempDir;
use atrest_test_support::audit::Counting;
use atrest_test_support::kms_emulator;
use atrest_test_support::postgres::{admin_url, database_url, run_sql};
use aws_credential_types::provider::SharedCredentialsProvider;

const USER: Access<'static> = Access::User {
    principal: "reader@bench",
};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run this with scripts/with-servers (see the file's docs)")
    })
}

/// The `percent`th percentile of sorted latencies (nearest rank).
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// A hierarchy over `store`, with the service's keys in `dir` and extra
/// providers.
async fn hierarchy(
    dir: &Path,
    store: Arc<dyn MetadataStore>,
    extra: &[Arc<dyn RootKeyProvider>],
) -> KeyHierarchy {
    let master = MasterKey::create_file(&dir.join("master.key")).unwrap();
    let tenant_keys =
        Arc::new(TenantKeyDir::open(&dir.join("tenant-keys"), master.clone()).unwrap());
    let sealed = SqliteSealedKeys::open(&dir.join("keys.sqlite"))
        .await
        .unwrap();
    let service = Arc::new(ServiceKeys::new("service", Arc::new(sealed), master).unwrap());
    service.create_key("root").await.unwrap();
    service.create_key("availability").await.unwrap();
    let mut builder = KeyHierarchy::builder(store, tenant_keys, Arc::new(Counting::default()))
        .provider(service)
        .service_root_key("service", "root")
        .availability_key("service", "availability")
        .policy(Arc::new(|_: &Access<'_>, _: TenantId, _: FileId| {
            Decision::Allow
        }));
    for provider in extra {
        builder = builder.provider(provider.clone());
    }
    builder.build().unwrap()
}

/// Cold and warm releases through the OpenBao at `address` (trusting the
/// CA in PEM file `ca`, for https).
async fn openbao(releases: usize, label: &str, address: &str, ca: Option<&str>) {
    let mut builder = TransitKeys::builder(
        "bao",
        address,
        "transit",
        Credentials::FromEnv("ATREST_OPENBAO_TOKEN".into()),
    );
    if let Some(ca) = ca {
        builder = builder.ca_certificate_pem(&std::fs::read(ca).unwrap());
    }
    let transit = Arc::new(builder.build().unwrap());
    let suffix = format!("{:x}", std::process::id());
    let keys = [
        transit
            .create_key(&format!("bench-a-{suffix}"))
            .await
            .unwrap(),
        transit
            .create_key(&format!("bench-b-{suffix}"))
            .await
            .unwrap(),
    ];
    cold_and_warm(
        &format!("OpenBao transit {label}"),
        "OpenBao",
        releases,
        transit,
        keys,
    )
    .await;
}

/// Cold and warm releases through the AWS KMS emulator, its two keys in two
/// regions.
async fn aws_kms(releases: usize) {
    let endpoint = kms_emulator::endpoint();
    let credentials = aws_credential_types::Credentials::new(
        kms_emulator::ACCESS_KEY.0,
        kms_emulator::ACCESS_KEY.1,
        None,
        None,
        "bench",
    );
    let kms = Arc::new(
        AwsKmsKeys::builder(
            "aws",
            AwsCredentials::Provider(SharedCredentialsProvider::new(credentials)),
        )
        .endpoint(&endpoint)
        .build()
        .unwrap(),
    );
    let mut keys = Vec::new();
    for region in ["us-east-1", "eu-west-1"] {
        let arn = kms_emulator::owner(&endpoint, region, None)
            .create_key()
            .await;
        keys.push(kms.key_ref(&arn).unwrap());
    }
    let keys: [RootKeyRef; 2] = keys.try_into().unwrap();
    cold_and_warm(
        "AWS KMS (moto's emulator, plain HTTP on loopback)",
        "KMS",
        releases,
        kms,
        keys.clone(),
    )
    .await;
    // The emulator's own time for one call, through the SDK alone: the
    // floor under a cold release.
    let owner = kms_emulator::owner(&endpoint, "us-east-1", None);
    let mut calls = Vec::with_capacity(releases);
    for _ in 0..releases {
        let started = Instant::now();
        let _ = owner
            .0
            .describe_key()
            .key_id(keys[0].label())
            .send()
            .await
            .unwrap();
        calls.push(started.elapsed());
    }
    calls.sort();
    println!(
        "  one DescribeKey through the SDK alone (the emulator's floor): p50 {:.2} ms, p99 {:.2} ms",
        percentile(&calls, 50).as_secs_f64() * 1e3,
        percentile(&calls, 99).as_secs_f64() * 1e3
    );
}

/// A customer-key tenant whose customer keys are `keys` at `provider`:
/// `releases` cold releases (the TIK cache emptied first, so the TIK is
/// unwrapped through the provider), p50 and p99; then warm releases for
/// two seconds.
async fn cold_and_warm(
    what: &str,
    through: &str,
    releases: usize,
    provider: Arc<dyn RootKeyProvider>,
    keys: [RootKeyRef; 2],
) {
    let dir = TempDir::new("bench-release");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("tenants.sqlite"))
            .await
            .unwrap(),
    );
    let keys_hierarchy = hierarchy(dir.path(), store, &[provider]).await;
    let tenant = TenantId::random(&mut OsRng).unwrap();
    keys_hierarchy
        .create_customer_key_tenant(tenant, keys)
        .await
        .unwrap();
    let context = FileContext::new(
        tenant,
        FileId::random(&mut OsRng).unwrap(),
        FileVersion::FIRST,
    );
    let (_, wrapped) = keys_hierarchy.new_file_key(&USER, &context).await.unwrap();

    let mut cold = Vec::with_capacity(releases);
    for _ in 0..releases {
        keys_hierarchy.flush_cache();
        let started = Instant::now();
        let _ = keys_hierarchy
            .release_file_key(&USER, &context, &wrapped)
            .await
            .unwrap();
        cold.push(started.elapsed());
    }
    cold.sort();
    let started = Instant::now();
    let mut warm = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        let _ = keys_hierarchy
            .release_file_key(&USER, &context, &wrapped)
            .await
            .unwrap();
        warm += 1;
    }
    let warm_rate = warm as f64 / started.elapsed().as_secs_f64();
    println!("{what} (customer keys), {releases} cold releases:");
    println!(
        "  cold release (TIK through {through}): p50 {:.2} ms, p99 {:.2} ms",
        percentile(&cold, 50).as_secs_f64() * 1e3,
        percentile(&cold, 99).as_secs_f64() * 1e3
    );
    println!("  warm release (TIK cached): {warm_rate:.0} releases/s");
}

/// Seals then opens `files` files of 4 KiB; returns (seals/s, opens/s).
async fn small_files(
    dir: &Path,
    store: Arc<dyn MetadataStore>,
    catalog: Arc<dyn Catalog>,
    blobs: Arc<dyn Blobs>,
    files: usize,
) -> (f64, f64) {
    let keys = Arc::new(hierarchy(dir, store, &[]).await);
    let tenant = TenantId::random(&mut OsRng).unwrap();
    keys.create_service_tenant(tenant).await.unwrap();
    let api = Files::new(keys, catalog, blobs, Arc::new(Counting::default()));
    let body = atrest_test_support::seeded(4096, 3);
    // Warm up: the tenant's TIK and metadata key in the cache.
    let _ = api
        .seal(&USER, tenant, "warm-up", body.as_slice())
        .await
        .unwrap();
    let started = Instant::now();
    for i in 0..files {
        let _ = api
            .seal(&USER, tenant, &format!("item-{i}"), body.as_slice())
            .await
            .unwrap();
    }
    let seal_rate = files as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for i in 0..files {
        let name = format!("item-{i}");
        let mut out = atrest::WriterSink(Vec::new());
        let _ = api
            .open(&USER, &FileSelector::newest(tenant, &name), None, &mut out)
            .await
            .unwrap();
        assert_eq!(out.0.len(), 4096);
    }
    let open_rate = files as f64 / started.elapsed().as_secs_f64();
    (seal_rate, open_rate)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let files: usize = args.next().map_or(500, |a| a.parse().unwrap());
    let releases: usize = args.next().map_or(300, |a| a.parse().unwrap());

    openbao(
        releases,
        "over plain HTTP (loopback)",
        &var("ATREST_OPENBAO_ADDR"),
        None,
    )
    .await;
    if let Ok(address) = std::env::var("ATREST_OPENBAO_TLS_ADDR") {
        let ca = var("ATREST_TEST_CA");
        openbao(releases, "over TLS", &address, Some(&ca)).await;
    }
    aws_kms(releases).await;

    let local = TempDir::new("bench-local");
    let embedded = small_files(
        local.path(),
        Arc::new(
            SqliteStore::open(&local.path().join("atrest.sqlite"))
                .await
                .unwrap(),
        ),
        Arc::new(
            SqliteCatalog::open(&local.path().join("catalog.sqlite"))
                .await
                .unwrap(),
        ),
        Arc::new(BlobStore::local(&local.path().join("blobs")).unwrap()),
        files,
    )
    .await;

    let servers = TempDir::new("bench-servers");
    let admin = admin_url();
    let database = format!("atrest_bench_{:x}", std::process::id());
    // The statements run on a runtime of their own, off this one's worker.
    let sql = |statement: String| {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || run_sql(&admin, &statement))
    };
    sql(format!("CREATE DATABASE {database}")).await.unwrap();
    let db = Postgres::connect(&database_url(&admin, &database), &PgOptions::default()).unwrap();
    let azurite = atrest_test_support::azurite::azurite();
    let container = format!("atrest-bench-{:x}", std::process::id());
    azurite.create_container(&container);
    let remote = small_files(
        servers.path(),
        Arc::new(PgMetadataStore::open(&db).await.unwrap()),
        Arc::new(PgCatalog::open(&db).await.unwrap()),
        Arc::new(
            BlobStore::from_url_with_options(&format!("az://{container}"), azurite.options())
                .unwrap(),
        ),
        files,
    )
    .await;
    drop(db);
    sql(format!("DROP DATABASE {database} WITH (FORCE)"))
        .await
        .unwrap();

    println!("{files} files of 4 KiB, sealed then opened, every record durable:");
    println!(
        "  SQLite + local directory:     seal {:>7.0} files/s, open {:>7.0} files/s",
        embedded.0, embedded.1
    );
    println!(
        "  PostgreSQL + Azure (Azurite): seal {:>7.0} files/s, open {:>7.0} files/s",
        remote.0, remote.1
    );
    println!(
        "  ratio servers / embedded:     seal {:.2}, open {:.2}",
        remote.0 / embedded.0,
        remote.1 / embedded.1
    );
}
