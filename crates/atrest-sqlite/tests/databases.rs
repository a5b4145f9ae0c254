//! What every database here guarantees beyond the contract: files private
//! to their owner, no object the schema does not make (a trigger planted by
//! someone who can write the file is refused), and stores made by earlier
//! versions migrated or refused.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use atrest::ErrorKind;
use atrest_sqlite::{SqliteCatalog, SqliteSealedKeys, SqliteStore};
use atrest_tenant::Error;
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
