//! What only the PostgreSQL stores have: versioned migrations under a lock,
//! refusal of newer schemas and of triggers, the caller's runtime (stores
//! made, used and dropped inside a task; refused outside a runtime),
//! timeouts and the classification of failures; and the key hierarchy and
//! `Files` end to end over them, a database writer's edits included.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use atrest::{CatalogError, Error as FilesError, ErrorKind, MemoryBlobs};
use atrest_filekey::{OsRng, TenantId};
use atrest_postgres::{PgCatalog, PgError, PgMetadataStore, PgOptions, Postgres};
use atrest_tenant::{Error, MetadataStore, TenantState};
use atrest_test_support::files::read;
use common::{ALICE, TempDir, TestDatabase, World, customer_keys};
use tokio::sync::Barrier;

fn pg_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> &'a PgError {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(pg) = error.downcast_ref::<PgError>() {
            return pg;
        }
        cause = error.source();
    }
    panic!("no PgError in {error}")
}

#[tokio::test]
async fn migrations_are_recorded_once_and_newer_schemas_refused() {
    let database = TestDatabase::new("migrations");
    let db = database.connect();
    let _ = PgMetadataStore::open(&db).await.unwrap();
    let _ = PgCatalog::open(&db).await.unwrap();
    // Opening again applies nothing twice.
    let _ = PgMetadataStore::open(&db).await.unwrap();
    let _ = PgCatalog::open(&db).await.unwrap();
    let versions = database
        .query_text(
            "SELECT string_agg(component || ':' || version, ',' ORDER BY component, version)
             FROM atrest_schema_migrations",
        )
        .await;
    // The catalog's second migration adds blob digests, its third an index,
    // its fourth the owners of seals, its fifth media types, its sixth
    // tenant names' tags, its seventh each file's last version number; the
    // key store's second its change log, its third fallback policies.
    assert_eq!(
        versions.as_deref(),
        Some(
            "catalog:1,catalog:2,catalog:3,catalog:4,catalog:5,catalog:6,catalog:7,\
             keys:1,keys:2,keys:3"
        )
    );

    // A newer build migrated the database further: this one refuses it.
    database
        .exec("INSERT INTO atrest_schema_migrations (component, version) VALUES ('catalog', 8)")
        .await;
    let refused = PgCatalog::open(&db).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Usage, "{refused}");
    assert!(pg_error(&refused).is_newer_schema(), "{refused}");
    database
        .exec("INSERT INTO atrest_schema_migrations (component, version) VALUES ('keys', 7)")
        .await;
    let refused = PgMetadataStore::open(&db).await.unwrap_err();
    assert!(matches!(refused, Error::Store { .. }), "{refused}");
    assert_eq!(refused.kind(), ErrorKind::Usage, "{refused}");
    assert!(pg_error(&refused).is_newer_schema(), "{refused}");
}

/// A catalog migrated before files kept the highest version number they
/// were given: the migration gives each file its newest version's, so a
/// number removed after the upgrade is not given again.
#[tokio::test]
async fn the_last_version_migration_starts_from_the_newest_version() {
    use atrest::Catalog as _;
    let database = TestDatabase::new("last-version");
    let db = database.connect();
    let catalog = PgCatalog::open(&db).await.unwrap();
    let tenant = TenantId::random(&mut OsRng).unwrap();
    let mut tickets = Vec::new();
    for _ in 0..3 {
        let blob = atrest::BlobName::random().unwrap();
        tickets.push(catalog.begin_seal(tenant, "doc", &blob).await.unwrap());
    }
    drop(catalog);
    database
        .exec(
            "ALTER TABLE atrest_catalog_files DROP COLUMN last_version;
             DELETE FROM atrest_schema_migrations WHERE component = 'catalog' AND version = 7;",
        )
        .await;
    let catalog = PgCatalog::open(&db).await.unwrap();
    catalog.abandon_seal(&tickets[2]).await.unwrap();
    let blob = atrest::BlobName::random().unwrap();
    let next = catalog.begin_seal(tenant, "doc", &blob).await.unwrap();
    assert_eq!(u64::from(next.context.version), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_starting_at_once_migrate_once() {
    let database = TestDatabase::new("startup");
    const INSTANCES: usize = 8;
    let barrier = Arc::new(Barrier::new(INSTANCES));
    let instances: Vec<_> = (0..INSTANCES)
        .map(|_| {
            let (barrier, url) = (barrier.clone(), database.url().to_owned());
            tokio::spawn(async move {
                // Each instance has a pool, and so connections, of its own.
                let db = Postgres::connect(&url, &PgOptions::default()).unwrap();
                let _ = barrier.wait().await;
                let _ = PgCatalog::open(&db).await.unwrap();
                let _ = PgMetadataStore::open(&db).await.unwrap();
            })
        })
        .collect();
    for instance in instances {
        instance.await.unwrap();
    }
    assert_eq!(
        database
            .query_text("SELECT count(*) FROM atrest_schema_migrations")
            .await
            .as_deref(),
        Some("10")
    );
}

#[tokio::test]
async fn triggers_and_rules_on_the_tables_are_refused() {
    let database = TestDatabase::new("triggers");
    let db = database.connect();
    let store = PgMetadataStore::open(&db).await.unwrap();
    let _ = PgCatalog::open(&db).await.unwrap();
    let (world_dir, blobs) = (TempDir::new("triggers"), Arc::new(MemoryBlobs::new()));
    let world = World::open(world_dir.path(), database.url(), blobs).await;
    // A writer of the database plants a trigger that keeps a copy of every
    // wrap a purge deletes.
    database
        .exec(
            "CREATE TABLE kept (tenant bytea, wrapped bytea);
             CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO kept VALUES (OLD.tenant, OLD.wrapped); RETURN OLD; END $$;
             CREATE TRIGGER keep BEFORE DELETE ON atrest_tik_wraps
             FOR EACH ROW EXECUTE FUNCTION keep();",
        )
        .await;
    let refused = PgMetadataStore::open(&db).await.unwrap_err();
    assert!(matches!(refused, Error::Corrupt(_)), "{refused}");
    // A store opened before refuses to purge, and deletes nothing.
    let purge = store.purge_tenant(world.a).await.unwrap_err();
    assert!(matches!(purge, Error::Corrupt(_)), "{purge}");
    assert_eq!(
        store.tenant(world.a).await.unwrap().unwrap().state,
        TenantState::Active
    );
    assert_eq!(
        database
            .query_text("SELECT count(*) FROM kept")
            .await
            .as_deref(),
        Some("0")
    );
    database.exec("DROP TRIGGER keep ON atrest_tik_wraps").await;
    let _ = PgMetadataStore::open(&db).await.unwrap();

    database
        .exec("CREATE RULE hide AS ON DELETE TO atrest_catalog_versions DO INSTEAD NOTHING")
        .await;
    let refused = PgCatalog::open(&db).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Integrity, "{refused}");
}

/// Makes a pool and both stores inside a task, uses them and drops them
/// there: they run on the task's runtime and own none, so nothing blocks or
/// panics on drop.
async fn made_used_and_dropped_inside_a_task(url: String) {
    let task = tokio::spawn(async move {
        let db = Postgres::connect(&url, &PgOptions::default()).unwrap();
        let store = PgMetadataStore::open(&db).await.unwrap();
        let catalog = PgCatalog::open(&db).await.unwrap();
        let tenant = TenantId::random(&mut OsRng).unwrap();
        let tag = atrest_tenant::RecordTag::from_slice(&[0; 32]).unwrap();
        atrest::Catalog::name_tenant(&catalog, "t", tenant, &tag)
            .await
            .unwrap();
        assert!(store.tenants().await.unwrap().is_empty());
        // Another instance over the same database, dropped at once.
        let other = PgCatalog::open(&Postgres::connect(&url, &PgOptions::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            atrest::Catalog::tenant_name(&other, tenant)
                .await
                .unwrap()
                .map(|named| named.name)
                .as_deref(),
            Some("t")
        );
        drop(other);
        atrest::Catalog::unname_tenant(&catalog, "t").await.unwrap();
        drop((store, catalog, db));
    });
    task.await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn stores_are_made_and_dropped_inside_a_task_on_one_thread() {
    let database = TestDatabase::new("one_thread");
    made_used_and_dropped_inside_a_task(database.url().to_owned()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_are_made_and_dropped_inside_a_task_on_several_threads() {
    let database = TestDatabase::new("threads");
    made_used_and_dropped_inside_a_task(database.url().to_owned()).await;
}

/// A store outlives the runtime that ran its connections: dropping it
/// afterwards, outside any runtime, neither blocks nor panics.
#[test]
fn a_store_is_dropped_after_its_runtime_shut_down() {
    let database = TestDatabase::new("shut_down");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = database.connect();
    let catalog = runtime.block_on(async {
        let catalog = PgCatalog::open(&db).await.unwrap();
        assert!(
            atrest::Catalog::tenant_names(&catalog)
                .await
                .unwrap()
                .is_empty()
        );
        catalog
    });
    drop(runtime);
    drop(catalog);
    drop(db);
}

/// Outside a tokio runtime a call is refused with a usage error, not a
/// panic: polled once (with a waker that does nothing), it is ready.
#[test]
fn a_call_outside_a_tokio_runtime_is_refused() {
    fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
        pin!(future).poll(&mut Context::from_waker(Waker::noop()))
    }
    let db = Postgres::connect(
        "postgresql://atrest@127.0.0.1:1/atrest",
        &PgOptions::default(),
    )
    .unwrap();
    let Poll::Ready(Err(refused)) = poll_once(PgCatalog::open(&db)) else {
        panic!("the catalog opened, or waits, outside a runtime");
    };
    assert_eq!(refused.kind(), ErrorKind::Usage, "{refused}");
    assert!(refused.to_string().contains("tokio runtime"), "{refused}");
    let Poll::Ready(Err(refused)) = poll_once(PgMetadataStore::open(&db)) else {
        panic!("the store opened, or waits, outside a runtime");
    };
    assert_eq!(refused.kind(), ErrorKind::Usage, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_classified() {
    // Nothing listens on port 1.
    let mut options = PgOptions::default();
    options.connect_timeout = Duration::from_secs(3);
    let nowhere = Postgres::connect("postgresql://atrest@127.0.0.1:1/atrest", &options).unwrap();
    let started = Instant::now();
    let refused = PgCatalog::open(&nowhere).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    let refused = PgMetadataStore::open(&nowhere).await.unwrap_err();
    assert!(matches!(refused, Error::Store { .. }), "{refused}");
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    assert_eq!(pg_error(&refused).kind(), ErrorKind::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(20));

    // No such database.
    let database = TestDatabase::new("classified");
    let mut url = url::Url::parse(database.url()).unwrap();
    url.set_path("/atrest_no_such_database");
    let missing = Postgres::connect(url.as_str(), &options).unwrap();
    let refused = PgCatalog::open(&missing).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Usage, "{refused}");

    // TLS is required but not supported: refused, not downgraded.
    let tls = Postgres::connect(&format!("{}?sslmode=require", database.url()), &options);
    assert_eq!(tls.unwrap_err().kind(), ErrorKind::Usage);
    let garbage = Postgres::connect("postgresql://[", &options).unwrap_err();
    assert_eq!(garbage.kind(), ErrorKind::Usage);

    // A statement that waits for a lock longer than the statement timeout.
    let mut short = PgOptions::default();
    short.statement_timeout = Duration::from_millis(300);
    let db = Postgres::connect(database.url(), &short).unwrap();
    let catalog = PgCatalog::open(&db).await.unwrap();
    let holder = tokio::spawn({
        let url = database.url().to_owned();
        async move {
            common::exec(
                &url,
                "BEGIN; LOCK TABLE atrest_catalog_tenants IN ACCESS EXCLUSIVE MODE;
                 SELECT pg_sleep(2); COMMIT;",
            )
            .await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let timed_out = atrest::Catalog::tenant_named(&catalog, "slow")
        .await
        .unwrap_err();
    holder.await.unwrap();
    assert_eq!(timed_out.kind(), ErrorKind::Unavailable, "{timed_out}");
    assert_eq!(pg_error(&timed_out).code(), Some("57014"));
}

#[test]
fn debug_output_holds_no_password() {
    let db = Postgres::connect(
        "postgresql://atrest:hunter2-secret@127.0.0.1:5/atrest",
        &PgOptions::default(),
    )
    .unwrap();
    let shown = format!("{db:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("127.0.0.1:5/atrest"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_hierarchy_runs_end_to_end_and_refuses_edited_rows() {
    let database = TestDatabase::new("hierarchy");
    let dir = TempDir::new("pg-hierarchy");
    let blobs = Arc::new(MemoryBlobs::new());
    let world = World::open(dir.path(), database.url(), blobs.clone()).await;
    let (files, keys) = (&world.files, &world.keys);
    for tenant in [world.a, world.c] {
        for i in 0..3u8 {
            let _ = files
                .seal(&ALICE, tenant, &format!("doc-{i}"), &[i; 1000][..])
                .await
                .unwrap();
        }
    }
    // Roll, re-wrap, retire: every file still opens, under the new version.
    for tenant in [world.a, world.c] {
        let first = keys.tenant(tenant).await.unwrap().current_tik;
        let second = keys.roll_tik(tenant).await.unwrap();
        let refused = files.retire_tik(tenant, first).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Conflict, "in use: {refused}");
        let report = files.rewrap(tenant, 2, &mut |_| {}).await.unwrap();
        assert_eq!(report.rewrapped, 3);
        assert_eq!(files.retire_unused_tiks(tenant).await.unwrap(), vec![first]);
        assert_eq!(keys.tik_versions(tenant).await.unwrap(), vec![second]);
        for i in 0..3u8 {
            let (record, out) = read(files, &ALICE, tenant, &format!("doc-{i}"), None, None)
                .await
                .unwrap();
            assert_eq!((out, record.tik_version()), (vec![i; 1000], second));
        }
    }
    // Another instance over the same database opens the same files.
    let second_dir_world = World::open(dir.path(), database.url(), blobs.clone()).await;
    let (_, out) = read(
        &second_dir_world.files,
        &ALICE,
        world.c,
        "doc-1",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(out, vec![1; 1000]);

    // A writer of the database edits a row's TIK version column to the
    // version the next rotation makes current: the version its key is
    // really under (which the wrapped key's bytes name) is not retired by
    // that rotation, and the file still opens.
    let doc_2 = "(SELECT file FROM atrest_catalog_files WHERE name = 'doc-2'
                 AND tenant = (SELECT tenant FROM atrest_catalog_tenants WHERE name = 'a'))";
    let under = keys.tenant(world.a).await.unwrap().current_tik;
    database
        .exec(&format!(
            "UPDATE atrest_catalog_versions SET tik_version = {} WHERE file = {doc_2}",
            u32::from(under) + 1
        ))
        .await;
    let (_, report, retired) = files.rotate_tik(world.a, 10, &mut |_| {}).await.unwrap();
    assert_eq!((report.rewrapped, retired), (2, vec![]));
    let (_, out) = read(files, &ALICE, world.a, "doc-2", None, None)
        .await
        .unwrap();
    assert_eq!(out, vec![2; 1000]);
    database
        .exec(&format!(
            "UPDATE atrest_catalog_versions SET tik_version = {} WHERE file = {doc_2}",
            u32::from(under)
        ))
        .await;
    // Mended, the row is re-wrapped and the old version retired.
    let report = files.rewrap(world.a, 10, &mut |_| {}).await.unwrap();
    assert_eq!(report.rewrapped, 1);
    assert_eq!(
        files.retire_unused_tiks(world.a).await.unwrap(),
        vec![under]
    );

    // Revocation: one customer key revoked, the other still releases; both
    // revoked, user requests are refused.
    let open_doc_0 = |tenant| read(files, &ALICE, tenant, "doc-0", None, None);
    let [key_a, key_b] = customer_keys();
    keys.revoke_customer_key(world.c, &key_a).await.unwrap();
    keys.flush_cache();
    assert!(open_doc_0(world.c).await.is_ok());
    keys.revoke_customer_key(world.c, &key_b).await.unwrap();
    keys.flush_cache();
    let refused = open_doc_0(world.c).await.unwrap_err();
    assert!(
        matches!(refused, FilesError::Keys(Error::Revoked(t)) if t == world.c),
        "{refused}"
    );

    // A writer of the database clears the revocations: the record no
    // longer matches its tag, and is refused.
    database
        .exec("UPDATE atrest_root_key_slots SET revoked = false")
        .await;
    keys.flush_cache();
    let tampered = keys.tenant(world.c).await.unwrap_err();
    assert!(
        matches!(tampered, Error::Tampered { tenant, .. } if tenant == world.c),
        "{tampered}"
    );
    let refused = open_doc_0(world.c).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Integrity, "{refused}");
    // So is a file record put under another name.
    for (from, to) in [("doc-0", "swap"), ("doc-1", "doc-0"), ("swap", "doc-1")] {
        database
            .exec(&format!(
                "UPDATE atrest_catalog_files SET name = '{to}' WHERE name = '{from}'
                 AND tenant = (SELECT tenant FROM atrest_catalog_tenants WHERE name = 'a')"
            ))
            .await;
    }
    let swapped = open_doc_0(world.a).await.unwrap_err();
    assert!(
        matches!(swapped, FilesError::Catalog(CatalogError::Tampered { .. })),
        "{swapped}"
    );

    // Purge: every wrap of the tenant is gone from the database, and none
    // of its files opens.
    let destroyed = keys.purge(world.a).await.unwrap();
    assert_eq!(destroyed, 1);
    let hex_a: String = world
        .a
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        database
            .query_text(&format!(
                "SELECT count(*) FROM atrest_tik_wraps WHERE tenant = '\\x{hex_a}'"
            ))
            .await
            .as_deref(),
        Some("0")
    );
    let record = world.store.tenant(world.a).await.unwrap().unwrap();
    assert_eq!((record.state, record.tag), (TenantState::Purged, None));
    let open_doc_2 = || read(files, &ALICE, world.a, "doc-2", None, None);
    let refused = open_doc_2().await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Refused, "{refused}");
    // A purged tenant's record, restored by the writer, releases nothing:
    // its tenant key is gone.
    database
        .exec(&format!(
            "UPDATE atrest_tenants SET state = 'active' WHERE tenant = '\\x{hex_a}'"
        ))
        .await;
    keys.flush_cache();
    assert!(open_doc_2().await.is_err());
}

/// TLS to the server `scripts/test` starts with `ssl=on` and a certificate
/// from a private CA (`ATREST_POSTGRES_TLS_CA`) for localhost and
/// 127.0.0.1: `verify-full` with that CA connects and the session is
/// encrypted; another CA, or a host name the certificate does not hold,
/// is refused; plaintext to a host that is not loopback, and the modes
/// that fall back or skip the host name, are refused before connecting.
#[tokio::test]
async fn tls_verifies_the_certificate_and_the_host_name() {
    let ca = std::env::var("ATREST_POSTGRES_TLS_CA")
        .expect("ATREST_POSTGRES_TLS_CA is not set: run scripts/test");
    let database = TestDatabase::new("tls");
    let plain = url::Url::parse(database.url()).unwrap();
    let with = |host: &str, query: &str| {
        let mut url = plain.clone();
        url.set_host(Some(host)).unwrap();
        url.set_query(Some(query));
        url.to_string()
    };
    let verified = with(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let db = Postgres::connect(&verified, &PgOptions::default()).unwrap();
    let store = PgMetadataStore::open(&db).await.unwrap();
    assert!(store.tenants().await.unwrap().is_empty());
    // The session the server sees is encrypted (pg_stat_ssl of a
    // connection opened the same way, by name `localhost` this time).
    let by_name = with(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let db = Postgres::connect(&by_name, &PgOptions::default()).unwrap();
    let _ = PgCatalog::open(&db).await.unwrap();
    let encrypted = database
        .query_text(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
             WHERE ssl AND application_name = 'atrest'",
        )
        .await;
    assert_ne!(encrypted.as_deref(), Some("0"), "no encrypted session");

    // Another CA, made here.
    let dir = TempDir::new("pg-tls");
    atrest_test_support::pki::make_ca(dir.path());
    let other = dir.path().join("ca.pem");
    let other_ca = with(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", other.display()),
    );
    // A name the certificate does not hold, for the same address.
    let port = plain.port().unwrap();
    let mut renamed = url::Url::parse(&verified).unwrap();
    renamed.set_host(Some("db.example")).unwrap();
    renamed.set_port(Some(port)).unwrap();
    renamed.set_query(Some(&format!(
        "hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"
    )));
    for (url, what) in [
        (other_ca, "another CA"),
        (renamed.to_string(), "another name"),
    ] {
        let db = Postgres::connect(&url, &PgOptions::default()).unwrap();
        let refused = PgMetadataStore::open(&db).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Refused, "{what}: {refused}");
    }

    for (url, what) in [
        (
            with("db.example", "sslmode=disable"),
            "plaintext to another host",
        ),
        (with("127.0.0.1", "sslmode=prefer"), "prefer"),
        (with("127.0.0.1", "sslmode=require"), "require"),
    ] {
        let refused = Postgres::connect(&url, &PgOptions::default()).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Usage, "{what}: {refused}");
    }
}
