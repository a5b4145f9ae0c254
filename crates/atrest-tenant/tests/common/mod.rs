//! Shared test fixtures: temporary directories, an audit collector, and a
//! hierarchy with a service provider and two fault-injectable customer
//! providers, all backed by real SQLite key stores on disk.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atrest_audit::{Audit, Event, Outcome, Receipt, Record};
use atrest_filekey::{FileContext, FileId, FileVersion, OsRng, TenantId};
use atrest_tenant::fault::FaultInjector;
use atrest_tenant::{
    Access, Decision, KeyHierarchy, MasterKey, ReleasePolicy, RootKeyProvider, RootKeyRef,
    ServiceKeys, SqliteStore,
};

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "atrest-tenant-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Collects audit records in memory (the real log is tested in
/// atrest-audit and in the crash test here).
#[derive(Default)]
pub struct Collected(pub Mutex<Vec<Record>>);

impl Audit for Collected {
    fn record(&self, record: Record) -> Result<Receipt, atrest_audit::Error> {
        let mut records = self.0.lock().unwrap();
        records.push(record);
        Ok(Receipt {
            seq: records.len() as u64 - 1,
            hash: [0; 32],
        })
    }
}

impl Collected {
    pub fn events(&self) -> Vec<(Event, Outcome)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|r| (r.event.clone(), r.outcome.clone()))
            .collect()
    }

    pub fn count(&self, matches: impl Fn(&Event, &Outcome) -> bool) -> usize {
        self.events().iter().filter(|(e, o)| matches(e, o)).count()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// Allows users named `reader*` and every system operation.
pub fn policy() -> Arc<dyn ReleasePolicy> {
    Arc::new(|access: &Access<'_>, _: TenantId, _: FileId| match access {
        Access::User { principal } if principal.starts_with("reader") => Decision::Allow,
        Access::System { .. } => Decision::Allow,
        Access::User { .. } => Decision::Deny("not a reader".into()),
    })
}

pub const USER: Access<'static> = Access::User {
    principal: "reader-1",
};
pub const SYSTEM: Access<'static> = Access::System { operation: "test" };

pub fn context(tenant: TenantId) -> FileContext {
    FileContext {
        tenant,
        file: FileId::random(&mut OsRng).unwrap(),
        version: FileVersion::try_from(1u64).unwrap(),
    }
}

pub struct Fixture {
    pub dir: TempDir,
    pub service: Arc<ServiceKeys>,
    pub customer_a: Arc<FaultInjector>,
    pub customer_b: Arc<FaultInjector>,
    pub keys_a: Arc<ServiceKeys>,
    pub keys_b: Arc<ServiceKeys>,
    pub store: Arc<SqliteStore>,
    pub audit: Arc<Collected>,
    pub hierarchy: KeyHierarchy,
}

impl Fixture {
    pub fn new(name: &str) -> Self {
        Self::with_ttl(name, Duration::from_secs(300))
    }

    pub fn with_ttl(name: &str, ttl: Duration) -> Self {
        let dir = TempDir::new(name);
        let master = MasterKey::create_file(&dir.path().join("master.key")).unwrap();
        let service = Arc::new(
            ServiceKeys::open("service", &dir.path().join("keys.sqlite"), master).unwrap(),
        );
        service.create_key("root").unwrap();
        service.create_key("availability").unwrap();
        // Stand-ins for two customer HSMs (the PKCS#11 provider is tested
        // against SoftHSM2 in tests/softhsm.rs).
        let customer = |name: &str| {
            let master = MasterKey::create_file(&dir.path().join(format!("{name}.key"))).unwrap();
            let keys = Arc::new(
                ServiceKeys::open(name, &dir.path().join(format!("{name}.sqlite")), master)
                    .unwrap(),
            );
            keys.create_key("key-1").unwrap();
            keys
        };
        let keys_a = customer("customer-a");
        let keys_b = customer("customer-b");
        let customer_a = Arc::new(FaultInjector::new(keys_a.clone()));
        let customer_b = Arc::new(FaultInjector::new(keys_b.clone()));
        let store = Arc::new(SqliteStore::open(&dir.path().join("tenants.sqlite")).unwrap());
        let audit = Arc::new(Collected::default());
        let hierarchy = Self::build(&store, &audit, &service, &customer_a, &customer_b, ttl);
        Self {
            dir,
            service,
            customer_a,
            customer_b,
            keys_a,
            keys_b,
            store,
            audit,
            hierarchy,
        }
    }

    pub fn build(
        store: &Arc<SqliteStore>,
        audit: &Arc<Collected>,
        service: &Arc<ServiceKeys>,
        a: &Arc<FaultInjector>,
        b: &Arc<FaultInjector>,
        ttl: Duration,
    ) -> KeyHierarchy {
        KeyHierarchy::builder(store.clone(), audit.clone())
            .provider(service.clone() as Arc<dyn RootKeyProvider>)
            .provider(a.clone() as Arc<dyn RootKeyProvider>)
            .provider(b.clone() as Arc<dyn RootKeyProvider>)
            .service_root_key("service", "root")
            .availability_key("service", "availability")
            .policy(policy())
            .cache_ttl(ttl)
            .actor("test-service")
            .build()
            .unwrap()
    }

    pub fn customer_keys() -> [RootKeyRef; 2] {
        [
            "customer-a:key-1".parse().unwrap(),
            "customer-b:key-1".parse().unwrap(),
        ]
    }

    pub fn customer_tenant(&self) -> TenantId {
        let tenant = TenantId::random(&mut OsRng).unwrap();
        self.hierarchy
            .create_customer_key_tenant(tenant, Self::customer_keys())
            .unwrap();
        tenant
    }

    pub fn service_tenant(&self) -> TenantId {
        let tenant = TenantId::random(&mut OsRng).unwrap();
        self.hierarchy.create_service_tenant(tenant).unwrap();
        tenant
    }
}
