//! Test fixtures: a fresh PostgreSQL database per test on the server
//! `ATREST_POSTGRES_URL` names, and a service over it.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use atrest::Catalog as _;
use atrest_filekey::{FileId, OsRng, TenantId};
use atrest_postgres::tokio_postgres::{self, NoTls};
use atrest_postgres::{PgCatalog, PgMetadataStore, PgOptions, Postgres};
use atrest_sqlite::SqliteSealedKeys;
#[allow(unused_imports)]
pub use atrest_test_support::TempDir;

pub use atrest_test_support::postgres::{URL_VAR, admin_url};

/// Runs `sql` on `url` as a statement of set-up or clean-up, on a thread of
/// its own: it works from a test's task and from outside any runtime (a
/// test database is made before the contract suite's runtime starts, and
/// dropped inside a test's task or after it).
fn exec_apart(url: &str, sql: &str) {
    std::thread::scope(|scope| {
        scope
            .spawn(|| atrest_test_support::postgres::run_sql(url, sql))
            .join()
    })
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

/// Runs one statement as the administrator.
pub fn admin(sql: &str) {
    exec_apart(&admin_url(), sql);
}

/// Runs `sql` (one or more statements) on `url`, on a connection of its
/// own on the caller's runtime.
pub async fn exec(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {URL_VAR}: {e}"));
    let connection = tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    drop(client);
    let _ = connection.await;
}

/// The first value of the first row of `sql`, as text.
pub async fn query_text(url: &str, sql: &str) -> Option<String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    let rows = client.simple_query(sql).await.unwrap();
    let value = rows.iter().find_map(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
        _ => None,
    });
    drop(client);
    let _ = connection.await;
    value.flatten()
}

/// A database of its own for one test, dropped with it.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates database `atrest_<test>_<pid>_<n>`.
    pub fn new(test: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let mut test: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        test.truncate(30);
        let name = format!(
            "atrest_{test}_{}_{}_{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        admin(&format!("CREATE DATABASE {name}"));
        let mut url = url::Url::parse(&admin_url()).unwrap_or_else(|e| {
            panic!("{URL_VAR} must be a postgresql:// URL: {e}");
        });
        url.set_path(&format!("/{name}"));
        Self {
            name,
            url: url.to_string(),
        }
    }

    /// Its connection string.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pool for it. No connection is opened until it is used.
    pub fn connect(&self) -> Postgres {
        Postgres::connect(&self.url, &PgOptions::default()).unwrap()
    }

    /// Runs `sql` on it, as a writer of the database could.
    pub async fn exec(&self, sql: &str) {
        exec(&self.url, sql).await;
    }

    /// The first value of the first row of `sql`.
    pub async fn query_text(&self, sql: &str) -> Option<String> {
        query_text(&self.url, sql).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::env::var_os(URL_VAR).is_some() {
            admin(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A service over one PostgreSQL database: the key hierarchy over
/// `PgMetadataStore`, `Files` over `PgCatalog`, the master key, the service
/// root keys and the tenant keys as files in a directory, and blobs where
/// given. Tenant `a` (named "a" in the catalog) is a service-managed
/// tenant; tenant `c` (named "c") a customer-key tenant with two stand-in
/// customer keys.
pub struct World {
    pub files: atrest::Files,
    pub keys: Arc<atrest_tenant::KeyHierarchy>,
    pub catalog: Arc<PgCatalog>,
    pub store: Arc<PgMetadataStore>,
    pub audit: Arc<atrest_test_support::audit::Collected>,
    pub a: TenantId,
    pub c: TenantId,
}

/// The user every test's policy lets read and write.
pub const ALICE: atrest_tenant::Access<'static> =
    atrest_tenant::Access::User { principal: "alice" };

/// The customer keys of tenant `c`.
pub fn customer_keys() -> [atrest_tenant::RootKeyRef; 2] {
    [
        "customer-a:key-1".parse().unwrap(),
        "customer-b:key-1".parse().unwrap(),
    ]
}

impl World {
    /// Opens the service whose files are in `dir` over the database at
    /// `url`, creating keys and tenants on first use.
    pub async fn open(dir: &std::path::Path, url: &str, blobs: Arc<dyn atrest::Blobs>) -> Self {
        Self::open_split(dir, url, url, blobs, atrest_tenant::DEFAULT_CACHE_TTL).await
    }

    /// As [`World::open`], with the key metadata store reached at
    /// `store_url` and the catalog at `catalog_url` (the same database, one
    /// of them through a proxy, say), and keys cached for `cache_ttl`.
    pub async fn open_split(
        dir: &std::path::Path,
        store_url: &str,
        catalog_url: &str,
        blobs: Arc<dyn atrest::Blobs>,
        cache_ttl: std::time::Duration,
    ) -> Self {
        use atrest_tenant::{
            Access, Decision, KeyHierarchy, MasterKey, RootKeyProvider, ServiceKeys, TenantKeyDir,
        };
        let provider = async |name: &str, label: &str| {
            let key_file = dir.join(format!("{name}.key"));
            let fresh = !key_file.exists();
            let master = if fresh {
                MasterKey::create_file(&key_file).unwrap()
            } else {
                MasterKey::open_file(&key_file).unwrap()
            };
            let sealed = SqliteSealedKeys::open(&dir.join(format!("{name}.sqlite")))
                .await
                .unwrap();
            let keys = Arc::new(ServiceKeys::new(name, Arc::new(sealed), master.clone()).unwrap());
            if fresh {
                keys.create_key(label).await.unwrap();
            }
            (keys, master, fresh)
        };
        let (service, master, fresh) = provider("service", "root").await;
        if fresh {
            service.create_key("availability").await.unwrap();
        }
        let (customer_a, _, _) = provider("customer-a", "key-1").await;
        let (customer_b, _, _) = provider("customer-b", "key-1").await;
        let tenant_keys = Arc::new(TenantKeyDir::open(&dir.join("tenant-keys"), master).unwrap());
        let store_db = Postgres::connect(store_url, &PgOptions::default()).unwrap();
        let store = Arc::new(PgMetadataStore::open(&store_db).await.unwrap());
        let catalog_db = Postgres::connect(catalog_url, &PgOptions::default()).unwrap();
        let catalog = Arc::new(PgCatalog::open(&catalog_db).await.unwrap());
        let audit = Arc::new(atrest_test_support::audit::Collected::default());
        let keys = Arc::new(
            KeyHierarchy::builder(store.clone(), tenant_keys, audit.clone())
                .provider(service as Arc<dyn RootKeyProvider>)
                .provider(customer_a as Arc<dyn RootKeyProvider>)
                .provider(customer_b as Arc<dyn RootKeyProvider>)
                .service_root_key("service", "root")
                .availability_key("service", "availability")
                .cache_ttl(cache_ttl)
                .policy(Arc::new(
                    |access: &Access<'_>, _: TenantId, _: FileId| match access {
                        Access::User { principal } if *principal == "alice" => Decision::Allow,
                        Access::System { .. } => Decision::Allow,
                        Access::User { .. } => Decision::Deny("not alice".into()),
                    },
                ))
                .build()
                .unwrap(),
        );
        let (a, c) = if fresh {
            let a = TenantId::random(&mut OsRng).unwrap();
            let c = TenantId::random(&mut OsRng).unwrap();
            // Names for the tests' own look-ups (the catalog alone: their
            // tags are not checked here).
            let tag = atrest_tenant::RecordTag::from_slice(&[0; 32]).unwrap();
            catalog.name_tenant("a", a, &tag).await.unwrap();
            catalog.name_tenant("c", c, &tag).await.unwrap();
            let _ = keys.create_service_tenant(a).await.unwrap();
            let _ = keys
                .create_customer_key_tenant(c, customer_keys())
                .await
                .unwrap();
            (a, c)
        } else {
            (
                catalog.tenant_named("a").await.unwrap().unwrap().tenant,
                catalog.tenant_named("c").await.unwrap().unwrap().tenant,
            )
        };
        let files = atrest::Files::new(keys.clone(), catalog.clone(), blobs, audit.clone());
        Self {
            files,
            keys,
            catalog,
            store,
            audit,
            a,
            c,
        }
    }
}
