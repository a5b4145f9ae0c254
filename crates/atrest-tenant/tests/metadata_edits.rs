//! A writer of the metadata database, without the master key or the
//! tenant keys, tries to turn a customer's refusal into a release.
//!
//! The victim is a customer-key tenant whose two customer keys were
//! destroyed in SoftHSM2: user requests must be refused, although the
//! service's availability key still wraps its TIK (a marked system
//! operation shows that it does). Every single edit and every pair of edits
//! to the victim's rows of the key metadata tables — each cell changed to
//! each other value seen in the same column, each row deleted — is applied
//! to a copy of the database, a fresh hierarchy is built over it, and a user
//! asks for the victim's file key. Not one attempt may succeed.
//!
//! Values come from bystanders of every shape: a customer-key tenant whose
//! keys work (two TIK versions, one key revoked), a service-managed tenant
//! and a purged tenant.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use atrest_filekey::{OsRng, TenantId};
use atrest_sqlite::SqliteStore;
use atrest_tenant::{
    Administration, KeyHierarchy, MasterKey, RootKeyProvider, ServiceKeys, TenantKeyDir,
};
use atrest_test_support::sqlite as rusqlite;
use common::{USER, context, service_keys, system, token, with_tokens};
use rusqlite::Connection;
use rusqlite::types::Value;

/// The tables that decide a release.
const TABLES: [&str; 4] = ["tenants", "root_key_slots", "tik_versions", "tik_wraps"];

/// One edit a database writer can make to the victim's rows.
#[derive(Debug, Clone, PartialEq)]
enum Edit {
    /// Sets one cell to a value seen in the same column.
    Set {
        table: &'static str,
        rowid: i64,
        column: String,
        value: Value,
    },
    /// Deletes one row.
    Delete { table: &'static str, rowid: i64 },
}

impl Edit {
    fn cell(&self) -> (&'static str, i64, Option<&str>) {
        match self {
            Self::Set {
                table,
                rowid,
                column,
                ..
            } => (table, *rowid, Some(column)),
            Self::Delete { table, rowid } => (table, *rowid, None),
        }
    }

    fn apply(&self, db: &Connection) -> rusqlite::Result<usize> {
        match self {
            Self::Set {
                table,
                rowid,
                column,
                value,
            } => db.execute(
                &format!("UPDATE {table} SET \"{column}\" = ?1 WHERE rowid = ?2"),
                rusqlite::params![value, rowid],
            ),
            Self::Delete { table, rowid } => db.execute(
                &format!("DELETE FROM {table} WHERE rowid = ?1"),
                rusqlite::params![rowid],
            ),
        }
    }
}

/// Every single edit of the victim's rows.
fn edits_of(db: &Connection, victim: TenantId) -> Vec<Edit> {
    let mut edits = Vec::new();
    for table in TABLES {
        let mut statement = db
            .prepare(&format!("SELECT rowid, * FROM {table} WHERE tenant = ?1"))
            .unwrap();
        let columns: Vec<String> = statement
            .column_names()
            .skip(1)
            .map(str::to_owned)
            .collect();
        let rows: Vec<(i64, Vec<Value>)> = statement
            .query_map([victim.as_bytes().as_slice()], |row| {
                let values = (1..=columns.len())
                    .map(|i| row.get::<_, Value>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok((row.get(0)?, values))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(!rows.is_empty(), "the victim has rows in {table}");
        for (column_index, column) in columns.iter().enumerate() {
            let seen: Vec<Value> = db
                .prepare(&format!("SELECT DISTINCT \"{column}\" FROM {table}"))
                .unwrap()
                .query_map([], |row| row.get::<_, Value>(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            for (rowid, values) in &rows {
                for value in &seen {
                    if *value != values[column_index] {
                        edits.push(Edit::Set {
                            table,
                            rowid: *rowid,
                            column: column.clone(),
                            value: value.clone(),
                        });
                    }
                }
            }
        }
        for (rowid, _) in &rows {
            edits.push(Edit::Delete {
                table,
                rowid: *rowid,
            });
        }
    }
    edits
}

struct Keys {
    service: Arc<ServiceKeys>,
    tenant_keys: Arc<TenantKeyDir>,
    tokens: Vec<Arc<dyn RootKeyProvider>>,
}

impl Keys {
    async fn hierarchy(&self, db: &Path) -> (KeyHierarchy, Administration) {
        let store = Arc::new(SqliteStore::open(db).await.unwrap());
        let mut builder = KeyHierarchy::builder(store, self.tenant_keys.clone(), {
            Arc::new(common::Collected::default())
        })
        .provider(self.service.clone())
        .service_root_key("service", "root")
        .availability_key("service", "availability")
        .policy(common::policy())
        .cache_ttl(Duration::ZERO);
        for token in &self.tokens {
            builder = builder.provider(token.clone());
        }
        builder.build_with_administration().unwrap()
    }
}

#[tokio::test]
async fn no_edit_or_pair_of_edits_to_the_metadata_releases_a_destroyed_customers_key() {
    with_tokens(
        "no_edit_or_pair_of_edits_to_the_metadata_releases_a_destroyed_customers_key",
        async |dir| {
            let hsm_a = token("hsm-a", "customer-a").await;
            let hsm_b = token("hsm-b", "customer-b").await;
            let master = MasterKey::create_file(&dir.join("master.key")).unwrap();
            let keys = Keys {
                tenant_keys: Arc::new(
                    TenantKeyDir::open(&dir.join("tenant-keys"), master.clone()).unwrap(),
                ),
                service: service_keys("service", &dir.join("keys.sqlite"), master).await,
                tokens: vec![hsm_a.clone(), hsm_b.clone()],
            };
            keys.service.create_key("root").await.unwrap();
            keys.service.create_key("availability").await.unwrap();
            let db = dir.join("tenants.sqlite");
            let (hierarchy, _) = keys.hierarchy(&db).await;
            let new_tenant = || TenantId::random(&mut OsRng).unwrap();

            // The victim, and a file of it.
            let victim = new_tenant();
            let victim_keys = [
                hsm_a.generate_key("victim").await.unwrap(),
                hsm_b.generate_key("victim").await.unwrap(),
            ];
            hierarchy.create_customer_key_tenant(victim, victim_keys).await.unwrap();
            let file = context(victim);
            let (_, wrapped) = hierarchy.new_file_key(&USER, &file).await.unwrap();

            // Bystanders of every shape.
            let healthy = new_tenant();
            let healthy_keys = [
                hsm_a.generate_key("healthy").await.unwrap(),
                hsm_b.generate_key("healthy").await.unwrap(),
            ];
            hierarchy.create_customer_key_tenant(healthy, healthy_keys.clone()).await.unwrap();
            let _ = hierarchy.roll_tik(healthy).await.unwrap();
            hierarchy.revoke_customer_key(healthy, &healthy_keys[1]).await.unwrap();
            let service_managed = new_tenant();
            hierarchy.create_service_tenant(service_managed).await.unwrap();
            let purged = new_tenant();
            hierarchy.create_service_tenant(purged).await.unwrap();
            let _ = hierarchy.purge(purged).await.unwrap();
            drop(hierarchy);

            // The customer destroys both keys.
            hsm_a.destroy_key("victim").await.unwrap();
            hsm_b.destroy_key("victim").await.unwrap();

            // The database as the writer finds it: one file.
            let pristine = {
                let connection = Connection::open(&db).unwrap();
                let _: i64 = connection
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
                    .unwrap();
                drop(connection);
                std::fs::read(&db).unwrap()
            };
            // Thousands of copies: on a memory file system where there is
            // one, as syncing each would take most of the test's time.
            let scratch = Path::new("/dev/shm")
                .is_dir()
                .then(|| atrest_test_support::TempDir::new_in(Path::new("/dev/shm"), "edits"));
            let work = scratch
                .as_ref()
                .map_or_else(|| dir.to_path_buf(), |d| d.path().to_path_buf())
                .join("edited.sqlite");
            let attempt = async |edits: &[&Edit]| -> Option<Result<(), atrest_tenant::Error>> {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", work.display()));
                }
                std::fs::write(&work, &pristine).unwrap();
                {
                    let connection = Connection::open(&work).unwrap();
                    // The writer is not bound by the schema's references.
                    connection
                        .pragma_update(None, "foreign_keys", "OFF")
                        .unwrap();
                    for edit in edits {
                        if edit.apply(&connection).is_err() {
                            // A key or check constraint refuses it (two rows
                            // with one key): not a state the database can
                            // hold.
                            return None;
                        }
                    }
                }
                let (hierarchy, admin) = keys.hierarchy(&work).await;
                let user = hierarchy.release_file_key(&USER, &file, &wrapped).await.map(drop);
                if edits.is_empty() {
                    // Unedited: the availability key does wrap the TIK (a
                    // system operation gets the key), so a user release
                    // is a real possibility the edits must not open.
                    let scan = admin.capability("scan");
                    hierarchy.release_file_key(&system(&scan), &file, &wrapped).await.unwrap();
                }
                Some(user)
            };

            let baseline = attempt(&[]).await.unwrap();
            assert!(baseline.is_err(), "unedited: {baseline:?}");

            let edits = {
                let connection = Connection::open(&work).unwrap();
                edits_of(&connection, victim)
            };
            let mut tried = 0;
            let mut kinds = BTreeSet::new();
            let mut check = async |set: &[&Edit]| -> usize {
                let Some(result) = attempt(set).await else {
                    return 0;
                };
                match result {
                    Ok(()) => panic!("released after {set:?}"),
                    Err(error) => {
                        let text = format!("{error:?}");
                        kinds.insert(text.split([' ', '(', '{']).next().unwrap().to_owned());
                    }
                }
                1
            };
            for edit in &edits {
                tried += check(&[edit]).await;
            }
            let singles = tried;
            for (i, first) in edits.iter().enumerate() {
                for second in &edits[i + 1..] {
                    let (a, b) = (first.cell(), second.cell());
                    if a.0 == b.0 && a.1 == b.1 && (a.2 == b.2 || a.2.is_none() || b.2.is_none()) {
                        continue; // the same cell, or a row and one of its cells
                    }
                    tried += check(&[first, second]).await;
                }
            }
            eprintln!(
                "{} single edits ({singles} applicable), {tried} attempts in all, refused with {kinds:?}",
                edits.len()
            );
            assert!(singles > 60, "only {singles} single edits were tried");
            assert!(tried > singles * 20, "only {tried} attempts");
        },
    ).await;
}
