//! What only the PostgreSQL stores have: versioned migrations under a lock,
//! refusal of newer schemas and of triggers, their runtime (calls from any
//! executor), timeouts and the classification of failures; and the key
//! hierarchy and `Files` end to end over them, a database writer's edits
//! included.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use atrest::{CatalogError, Error as FilesError, ErrorKind, MemoryBlobs};
use atrest_filekey::{OsRng, TenantId};
use atrest_postgres::{PgCatalog, PgError, PgMetadataStore, PgOptions, Postgres};
use atrest_tenant::blocking::block_on;
use atrest_tenant::{Error, MetadataStore, TenantState};
use common::{ALICE, TempDir, TestDatabase, World, customer_keys};

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

#[test]
fn migrations_are_recorded_once_and_newer_schemas_refused() {
    let database = TestDatabase::new("migrations");
    let db = database.connect();
    let _ = PgMetadataStore::open_blocking(&db).unwrap();
    let _ = PgCatalog::open_blocking(&db).unwrap();
    // Opening again applies nothing twice.
    let _ = PgMetadataStore::open_blocking(&db).unwrap();
    let _ = PgCatalog::open_blocking(&db).unwrap();
    let versions = database.query_text(
        "SELECT string_agg(component || ':' || version, ',' ORDER BY component)
         FROM atrest_schema_migrations",
    );
    // The catalog's second migration adds blob digests, its third an index.
    assert_eq!(
        versions.as_deref(),
        Some("catalog:1,catalog:2,catalog:3,keys:1")
    );

    // A newer build migrated the database further: this one refuses it.
    database
        .exec("INSERT INTO atrest_schema_migrations (component, version) VALUES ('catalog', 4)");
    let refused = PgCatalog::open_blocking(&db).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Usage, "{refused}");
    assert!(pg_error(&refused).is_newer_schema(), "{refused}");
    database.exec("INSERT INTO atrest_schema_migrations (component, version) VALUES ('keys', 7)");
    let refused = PgMetadataStore::open_blocking(&db).unwrap_err();
    assert!(matches!(refused, Error::Store { .. }), "{refused}");
    assert_eq!(refused.kind(), ErrorKind::Usage, "{refused}");
    assert!(pg_error(&refused).is_newer_schema(), "{refused}");
}

#[test]
fn instances_starting_at_once_migrate_once() {
    let database = TestDatabase::new("startup");
    const INSTANCES: usize = 8;
    let barrier = Barrier::new(INSTANCES);
    std::thread::scope(|scope| {
        for _ in 0..INSTANCES {
            let (barrier, url) = (&barrier, database.url());
            let _ = scope.spawn(move || {
                let db = Postgres::connect(url, &PgOptions::default()).unwrap();
                barrier.wait();
                let _ = PgCatalog::open_blocking(&db).unwrap();
                let _ = PgMetadataStore::open_blocking(&db).unwrap();
            });
        }
    });
    assert_eq!(
        database
            .query_text("SELECT count(*) FROM atrest_schema_migrations")
            .as_deref(),
        Some("4")
    );
}

#[test]
fn triggers_and_rules_on_the_tables_are_refused() {
    let database = TestDatabase::new("triggers");
    let db = database.connect();
    let store = PgMetadataStore::open_blocking(&db).unwrap();
    let _ = PgCatalog::open_blocking(&db).unwrap();
    let (world_dir, blobs) = (TempDir::new("triggers"), Arc::new(MemoryBlobs::new()));
    let world = World::open(world_dir.path(), database.url(), blobs);
    // A writer of the database plants a trigger that keeps a copy of every
    // wrap a purge deletes.
    database.exec(
        "CREATE TABLE kept (tenant bytea, wrapped bytea);
         CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO kept VALUES (OLD.tenant, OLD.wrapped); RETURN OLD; END $$;
         CREATE TRIGGER keep BEFORE DELETE ON atrest_tik_wraps
         FOR EACH ROW EXECUTE FUNCTION keep();",
    );
    let refused = PgMetadataStore::open_blocking(&db).unwrap_err();
    assert!(matches!(refused, Error::Corrupt(_)), "{refused}");
    // A store opened before refuses to purge, and deletes nothing.
    let purge = block_on(store.purge_tenant(world.a)).unwrap_err();
    assert!(matches!(purge, Error::Corrupt(_)), "{purge}");
    assert_eq!(
        block_on(store.tenant(world.a)).unwrap().unwrap().state,
        TenantState::Active
    );
    assert_eq!(
        database.query_text("SELECT count(*) FROM kept").as_deref(),
        Some("0")
    );
    database.exec("DROP TRIGGER keep ON atrest_tik_wraps");
    let _ = PgMetadataStore::open_blocking(&db).unwrap();

    database.exec("CREATE RULE hide AS ON DELETE TO atrest_catalog_versions DO INSTEAD NOTHING");
    let refused = PgCatalog::open_blocking(&db).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Integrity, "{refused}");
}

#[test]
fn calls_work_from_block_on_and_from_inside_a_tokio_runtime() {
    let database = TestDatabase::new("runtimes");
    let db = database.connect();
    let store = Arc::new(PgMetadataStore::open_blocking(&db).unwrap());
    let catalog = Arc::new(PgCatalog::open_blocking(&db).unwrap());
    let tenant = TenantId::random(&mut OsRng).unwrap();
    block_on(atrest::Catalog::name_tenant(catalog.as_ref(), "t", tenant)).unwrap();
    for runtime in [
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    ] {
        let (store, catalog, url) = (store.clone(), catalog.clone(), database.url().to_owned());
        runtime.block_on(async move {
            assert!(store.tenants().await.unwrap().is_empty());
            assert_eq!(
                atrest::Catalog::tenant_named(catalog.as_ref(), "t")
                    .await
                    .unwrap(),
                Some(tenant)
            );
            // A store opened and dropped inside the runtime.
            let inner = Postgres::connect(&url, &PgOptions::default()).unwrap();
            let other = PgCatalog::open(&inner).await.unwrap();
            assert_eq!(
                atrest::Catalog::tenant_name(&other, tenant)
                    .await
                    .unwrap()
                    .as_deref(),
                Some("t")
            );
            drop(other);
            drop(inner);
        });
    }
}

#[test]
fn failures_are_classified() {
    // Nothing listens on port 1.
    let mut options = PgOptions::default();
    options.connect_timeout = Duration::from_secs(3);
    let nowhere = Postgres::connect("postgresql://atrest@127.0.0.1:1/atrest", &options).unwrap();
    let started = Instant::now();
    let refused = PgCatalog::open_blocking(&nowhere).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    let refused = PgMetadataStore::open_blocking(&nowhere).unwrap_err();
    assert!(matches!(refused, Error::Store { .. }), "{refused}");
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    assert_eq!(pg_error(&refused).kind(), ErrorKind::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(20));

    // No such database.
    let database = TestDatabase::new("classified");
    let mut url = url::Url::parse(database.url()).unwrap();
    url.set_path("/atrest_no_such_database");
    let missing = Postgres::connect(url.as_str(), &options).unwrap();
    let refused = PgCatalog::open_blocking(&missing).unwrap_err();
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
    let catalog = PgCatalog::open_blocking(&db).unwrap();
    let timed_out = block_on(async {
        let holder = std::thread::spawn({
            let url = database.url().to_owned();
            move || {
                common::exec(
                    &url,
                    "BEGIN; LOCK TABLE atrest_catalog_tenants IN ACCESS EXCLUSIVE MODE;
                     SELECT pg_sleep(2); COMMIT;",
                );
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let outcome = atrest::Catalog::tenant_named(&catalog, "slow").await;
        holder.join().unwrap();
        outcome
    })
    .unwrap_err();
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

#[test]
fn the_key_hierarchy_runs_end_to_end_and_refuses_edited_rows() {
    let database = TestDatabase::new("hierarchy");
    let dir = TempDir::new("pg-hierarchy");
    let blobs = Arc::new(MemoryBlobs::new());
    let world = World::open(dir.path(), database.url(), blobs.clone());
    let (files, keys) = (&world.files, &world.keys);
    for tenant in [world.a, world.c] {
        for i in 0..3u8 {
            let _ = files
                .seal(&ALICE, tenant, &format!("doc-{i}"), &[i; 1000][..])
                .unwrap();
        }
    }
    // Roll, re-wrap, retire: every file still opens, under the new version.
    for tenant in [world.a, world.c] {
        let first = block_on(keys.tenant(tenant)).unwrap().current_tik;
        let second = block_on(keys.roll_tik(tenant)).unwrap();
        let refused = files.retire_tik(tenant, first).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Conflict, "in use: {refused}");
        let report = files.rewrap(tenant, 2, &mut |_| {}).unwrap();
        assert_eq!(report.rewrapped, 3);
        assert_eq!(files.retire_unused_tiks(tenant).unwrap(), vec![first]);
        assert_eq!(block_on(keys.tik_versions(tenant)).unwrap(), vec![second]);
        for i in 0..3u8 {
            let (record, out) = files
                .open(&ALICE, tenant, &format!("doc-{i}"), None, Vec::new())
                .unwrap();
            assert_eq!((out, record.tik_version()), (vec![i; 1000], second));
        }
    }
    // Another instance over the same database opens the same files.
    let second_dir_world = World::open(dir.path(), database.url(), blobs.clone());
    let (_, out) = second_dir_world
        .files
        .open(&ALICE, world.c, "doc-1", None, Vec::new())
        .unwrap();
    assert_eq!(out, vec![1; 1000]);

    // Revocation: one customer key revoked, the other still releases; both
    // revoked, user requests are refused.
    let [key_a, key_b] = customer_keys();
    block_on(keys.revoke_customer_key(world.c, &key_a)).unwrap();
    keys.flush_cache();
    assert!(
        files
            .open(&ALICE, world.c, "doc-0", None, Vec::new())
            .is_ok()
    );
    block_on(keys.revoke_customer_key(world.c, &key_b)).unwrap();
    keys.flush_cache();
    let refused = files
        .open(&ALICE, world.c, "doc-0", None, Vec::new())
        .unwrap_err();
    assert!(
        matches!(refused, FilesError::Keys(Error::Revoked(t)) if t == world.c),
        "{refused}"
    );

    // A writer of the database clears the revocations: the record no
    // longer matches its tag, and is refused.
    database.exec("UPDATE atrest_root_key_slots SET revoked = false");
    keys.flush_cache();
    let tampered = block_on(keys.tenant(world.c)).unwrap_err();
    assert!(
        matches!(tampered, Error::Tampered { tenant, .. } if tenant == world.c),
        "{tampered}"
    );
    let refused = files
        .open(&ALICE, world.c, "doc-0", None, Vec::new())
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Integrity, "{refused}");
    // So is a file record put under another name.
    for (from, to) in [("doc-0", "swap"), ("doc-1", "doc-0"), ("swap", "doc-1")] {
        database.exec(&format!(
            "UPDATE atrest_catalog_files SET name = '{to}' WHERE name = '{from}'
             AND tenant = (SELECT tenant FROM atrest_catalog_tenants WHERE name = 'a')"
        ));
    }
    let swapped = files
        .open(&ALICE, world.a, "doc-0", None, Vec::new())
        .unwrap_err();
    assert!(
        matches!(swapped, FilesError::Catalog(CatalogError::Tampered { .. })),
        "{swapped}"
    );

    // Purge: every wrap of the tenant is gone from the database, and none
    // of its files opens.
    let destroyed = block_on(keys.purge(world.a)).unwrap();
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
            .as_deref(),
        Some("0")
    );
    let record = block_on(world.store.tenant(world.a)).unwrap().unwrap();
    assert_eq!((record.state, record.tag), (TenantState::Purged, None));
    let refused = files
        .open(&ALICE, world.a, "doc-2", None, Vec::new())
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Refused, "{refused}");
    // A purged tenant's record, restored by the writer, releases nothing:
    // its tenant key is gone.
    database.exec(&format!(
        "UPDATE atrest_tenants SET state = 'active' WHERE tenant = '\\x{hex_a}'"
    ));
    keys.flush_cache();
    assert!(
        files
            .open(&ALICE, world.a, "doc-2", None, Vec::new())
            .is_err()
    );
}
