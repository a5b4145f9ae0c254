//! What every database here guarantees beyond the contract: files private
//! to their owner, no object the schema does not make (a trigger planted by
//! someone who can write the file is refused), stores made by earlier
//! versions migrated or refused, and a change log whose rows do not name a
//! tenant refused when it is read.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use atrest::ErrorKind;
use atrest_sqlite::{SqliteCatalog, SqliteSealedKeys, SqliteStore};
use atrest_tenant::{Error, MetadataStore as _};
use atrest_test_support::TempDir;
use atrest_test_support::sqlite::Connection;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn databases_are_private_and_refuse_objects_their_schema_does_not_make() {
    let dir = TempDir::new("db-rules");
    let (keys, catalog, sealed) = (
        dir.path().join("keys.sqlite"),
        dir.path().join("catalog.sqlite"),
        dir.path().join("sealed.sqlite"),
    );
    drop(SqliteStore::open(&keys).await.unwrap());
    drop(SqliteCatalog::open(&catalog).await.unwrap());
    drop(SqliteSealedKeys::open(&sealed).await.unwrap());
    for path in [&keys, &catalog, &sealed] {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
    // A trigger planted by someone who can write the file (to copy rows
    // before a purge deletes them, say): the store refuses to open.
    for (path, table) in [
        (&keys, "tik_wraps"),
        (&catalog, "catalog_versions"),
        (&sealed, "service_root_keys"),
    ] {
        Connection::open(path)
            .unwrap()
            .execute_batch(&format!(
                "CREATE TABLE loot (x BLOB);
                 CREATE TRIGGER copy AFTER DELETE ON {table} BEGIN INSERT INTO loot VALUES (1); END;"
            ))
            .unwrap();
    }
    let refused = SqliteStore::open(&keys).await;
    assert!(matches!(refused, Err(Error::Corrupt(_))), "{refused:?}");
    let refused = SqliteSealedKeys::open(&sealed).await;
    assert!(matches!(refused, Err(Error::Corrupt(_))), "{refused:?}");
    let refused = SqliteCatalog::open(&catalog).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Integrity, "{refused}");
}

/// Key stores made before the catalog became the one home of wrapped file
/// keys had tables of their own for them: dropped when empty (the
/// deployments never filled them), refused when not.
#[tokio::test]
async fn a_key_store_of_an_earlier_version_loses_its_empty_file_key_tables() {
    let dir = TempDir::new("db-legacy");
    let legacy = "
        CREATE TABLE file_keys (
            tenant BLOB NOT NULL, file BLOB NOT NULL, version INTEGER NOT NULL,
            tik_version INTEGER NOT NULL, wrapped BLOB NOT NULL,
            PRIMARY KEY (tenant, file, version)
        );
        CREATE INDEX file_keys_by_tik ON file_keys (tenant, tik_version);
        CREATE TABLE retired_tiks (
            tenant BLOB NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (tenant, version)
        );";
    let empty = dir.path().join("empty.sqlite");
    drop(SqliteStore::open(&empty).await.unwrap());
    Connection::open(&empty)
        .unwrap()
        .execute_batch(legacy)
        .unwrap();
    drop(SqliteStore::open(&empty).await.unwrap());
    let tables: i64 = Connection::open(&empty)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('file_keys', 'retired_tiks')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the empty tables were dropped");

    let filled = dir.path().join("filled.sqlite");
    drop(SqliteStore::open(&filled).await.unwrap());
    let db = Connection::open(&filled).unwrap();
    db.execute_batch(legacy).unwrap();
    db.execute(
        "INSERT INTO file_keys VALUES (x'00', x'00', 1, 1, x'00')",
        [],
    )
    .unwrap();
    drop(db);
    let refused = SqliteStore::open(&filled).await;
    assert!(matches!(refused, Err(Error::Corrupt(_))), "{refused:?}");
}

/// A change-log row that names no tenant (the column's `NOT NULL` rewritten
/// away by someone who can write the file) fails the read of the log, as
/// a tenant id of the wrong length does: the caches are not told "nothing
/// changed" past it.
#[tokio::test]
async fn a_change_log_row_without_a_tenant_fails_the_read() {
    let dir = TempDir::new("db-change-log");
    let path = dir.path().join("keys.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    let before = store.changes_since(0).await.unwrap();
    assert_eq!(
        before.tenants,
        Some(Vec::new()),
        "a new store's log is empty"
    );

    let db = Connection::open(&path).unwrap();
    db.execute_batch(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_master
         SET sql = 'CREATE TABLE key_changes (counter INTEGER PRIMARY KEY CHECK (counter > 0), tenant BLOB)'
         WHERE name = 'key_changes';
         PRAGMA writable_schema = OFF;",
    )
    .unwrap();
    drop(db);
    let db = Connection::open(&path).unwrap();
    db.execute("INSERT INTO key_changes VALUES (1, NULL)", [])
        .unwrap();
    drop(db);
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert!(reopened.changes_since(0).await.is_err());

    // And a tenant id that is not one, the same way.
    let db = Connection::open(&path).unwrap();
    db.execute(
        "UPDATE key_changes SET tenant = x'00' WHERE counter = 1",
        [],
    )
    .unwrap();
    drop(db);
    assert!(reopened.changes_since(0).await.is_err());
    // Past both, nothing is read: the log is complete and empty.
    let after = reopened.changes_since(1).await.unwrap();
    assert_eq!((after.counter, after.tenants), (1, Some(Vec::new())));
}

/// A catalog made before files kept the highest version number they were
/// given: opened, each file's is its newest version's, so a number removed
/// after the upgrade is not given again.
#[tokio::test]
async fn a_catalog_of_an_earlier_version_learns_each_files_last_version() {
    use atrest::Catalog as _;
    let dir = TempDir::new("db-last-version");
    let path = dir.path().join("catalog.sqlite");
    let tenant = atrest_filekey::TenantId::random(&mut atrest_filekey::OsRng).unwrap();
    let catalog = SqliteCatalog::open(&path).await.unwrap();
    let mut tickets = Vec::new();
    for _ in 0..3 {
        let blob = atrest::BlobName::random().unwrap();
        tickets.push(catalog.begin_seal(tenant, "doc", &blob).await.unwrap());
    }
    drop(catalog);
    // The files table as it was before the column.
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "PRAGMA foreign_keys = OFF;
             CREATE TABLE old_files (
                 tenant BLOB NOT NULL,
                 name   TEXT NOT NULL,
                 file   BLOB NOT NULL UNIQUE,
                 PRIMARY KEY (tenant, name)
             );
             INSERT INTO old_files SELECT tenant, name, file FROM catalog_files;
             DROP TABLE catalog_files;
             ALTER TABLE old_files RENAME TO catalog_files;",
        )
        .unwrap();
    let catalog = SqliteCatalog::open(&path).await.unwrap();
    catalog.abandon_seal(&tickets[2]).await.unwrap();
    let blob = atrest::BlobName::random().unwrap();
    let next = catalog.begin_seal(tenant, "doc", &blob).await.unwrap();
    assert_eq!(u64::from(next.context.version), 4);
}
