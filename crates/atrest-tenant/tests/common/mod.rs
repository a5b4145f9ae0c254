//! Shared test fixtures: a hierarchy with a service provider and two
//! fault-injectable customer providers, all backed by real SQLite key stores
//! on disk, and SoftHSM2 tokens. Temporary directories, the audit collector
//! and the token set-up come from `atrest-test-support`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atrest::catalog::{SealTicket, SealedBlob};
use atrest::{BlobName, Catalog};
use atrest_filekey::{FileContext, FileId, FileKey, FileVersion, OsRng, TenantId, WrappedFileKey};
use atrest_sqlite::{SqliteCatalog, SqliteSealedKeys, SqliteStore};
use atrest_tenant::fault::FaultInjector;
use atrest_tenant::{
    Access, Decision, KeyHierarchy, MasterKey, Pkcs11Keys, RecordTag, ReleasePolicy,
    RootKeyProvider, RootKeyRef, ServiceKeys, TenantKeyDir, WrappedKeyIndex,
};
pub use atrest_test_support::TempDir;
/// Collects audit records in memory (the real log is tested in
/// atrest-audit and in the crash test here).
pub use atrest_test_support::audit::Collected;
use atrest_test_support::softhsm;

/// The user PIN of the SoftHSM2 tokens.
pub const PIN: &str = softhsm::USER_PIN;
/// The SoftHSM2 tokens of [`with_tokens`].
pub const TOKENS: [&str; 3] = ["customer-a", "customer-b", "service-master"];

/// The PKCS#11 module (`ATREST_PKCS11_MODULE`, by default SoftHSM2's).
pub fn module() -> PathBuf {
    softhsm::module()
}

/// Runs `body` in a child process whose SoftHSM2 has the tokens of
/// [`TOKENS`] freshly initialized in a temporary directory (SoftHSM2 reads
/// its configuration once per process); `body` gets that directory.
///
/// `test` is the calling test's name: in the test process this initializes
/// the tokens and runs that test again in a child process, waiting for it
/// on the blocking pool; in the child it awaits `body`.
pub async fn with_tokens(test: &str, body: impl AsyncFnOnce(&Path)) {
    if let Some(dir) = std::env::var_os(softhsm::CHILD_VAR) {
        body(Path::new(&dir)).await;
        return;
    }
    let test = test.to_owned();
    // In the test process `softhsm::with_tokens` only starts the child and
    // checks that its test passed; the child comes back here, above.
    atrest_core::blocking::run(move || softhsm::with_tokens(&test, &TOKENS, |_| {})).await;
}

/// A provider for the token labelled `label`, logged in with [`PIN`].
pub async fn token(name: &str, label: &str) -> Arc<Pkcs11Keys> {
    Arc::new(Pkcs11Keys::open(name, &module(), label, PIN).await.unwrap())
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
/// A system operation's access, with `capability` from the hierarchy's
/// administration.
pub fn system(capability: &atrest_tenant::SystemCapability) -> Access<'_> {
    Access::System(capability)
}

/// The service's own root keys (or a stand-in customer key store) named
/// `name`, in `path`, sealed under `master`.
pub async fn service_keys(name: &str, path: &Path, master: MasterKey) -> Arc<ServiceKeys> {
    let store = SqliteSealedKeys::open(path).await.unwrap();
    Arc::new(ServiceKeys::new(name, Arc::new(store), master).unwrap())
}

/// Where the tests keep wrapped file keys: a catalog, as a service does
/// (the one home of wrapped keys, and the index re-wraps update).
pub struct FileKeys {
    pub catalog: Arc<SqliteCatalog>,
}

impl FileKeys {
    /// The catalog in `path`.
    pub async fn open(path: &Path) -> Self {
        Self {
            catalog: Arc::new(SqliteCatalog::open(path).await.unwrap()),
        }
    }

    /// The index re-wraps and retirements go through.
    pub fn index(&self) -> &dyn WrappedKeyIndex {
        self.catalog.as_ref()
    }

    /// A new file of `tenant` with its key, as a seal makes it: a seal
    /// begun in the catalog, the file key made for `access` under the
    /// tenant's current TIK and attached, the seal committed.
    pub async fn new_file(
        &self,
        hierarchy: &KeyHierarchy,
        access: &Access<'_>,
        tenant: TenantId,
    ) -> (FileContext, FileKey, WrappedFileKey) {
        let name = format!("file-{}", FileId::random(&mut OsRng).unwrap());
        let blob = BlobName::random().unwrap();
        let ticket: SealTicket = self.catalog.begin_seal(tenant, &name, &blob).await.unwrap();
        let (key, wrapped) = hierarchy
            .new_file_key(access, &ticket.context)
            .await
            .unwrap();
        self.catalog.attach_key(&ticket, &wrapped).await.unwrap();
        let sealed = SealedBlob {
            plaintext_len: 0,
            blob_len: 0,
            blob_sha256: None,
            segment_size: 65_536,
            format: 1,
            media_type: None,
            sealed_at: 1_700_000_000,
            tag: RecordTag::from_slice(&[0; 32]).unwrap(),
            precondition: atrest::catalog::Precondition::Any,
        };
        let _ = self.catalog.commit_seal(&ticket, &sealed).await.unwrap();
        (ticket.context, key, wrapped)
    }

    /// The wrapped key of a file version as the catalog holds it now.
    pub async fn wrapped(&self, context: &FileContext) -> WrappedFileKey {
        self.catalog
            .records(context.tenant)
            .await
            .unwrap()
            .into_iter()
            .find(|record| record.file == context.file && record.version == context.version)
            .map(|record| record.wrapped_key)
            .unwrap()
    }
}

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
    pub file_keys: FileKeys,
    pub tenant_keys: Arc<TenantKeyDir>,
    pub audit: Arc<Collected>,
    pub hierarchy: KeyHierarchy,
    pub admin: atrest_tenant::Administration,
}

impl Fixture {
    pub async fn new(name: &str) -> Self {
        Self::with_ttl(name, Duration::from_secs(300)).await
    }

    pub async fn with_ttl(name: &str, ttl: Duration) -> Self {
        let dir = TempDir::new(name);
        let master = MasterKey::create_file(&dir.path().join("master.key")).unwrap();
        let tenant_keys =
            Arc::new(TenantKeyDir::open(&dir.path().join("tenant-keys"), master.clone()).unwrap());
        let service = service_keys("service", &dir.path().join("keys.sqlite"), master).await;
        service.create_key("root").await.unwrap();
        service.create_key("availability").await.unwrap();
        // Stand-ins for two customer HSMs (the PKCS#11 provider is tested
        // against SoftHSM2 in tests/softhsm.rs).
        let customer = async |name: &str| {
            let master = MasterKey::create_file(&dir.path().join(format!("{name}.key"))).unwrap();
            let keys = service_keys(name, &dir.path().join(format!("{name}.sqlite")), master).await;
            keys.create_key("key-1").await.unwrap();
            keys
        };
        let keys_a = customer("customer-a").await;
        let keys_b = customer("customer-b").await;
        let customer_a = Arc::new(FaultInjector::new(keys_a.clone()));
        let customer_b = Arc::new(FaultInjector::new(keys_b.clone()));
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("tenants.sqlite"))
                .await
                .unwrap(),
        );
        let file_keys = FileKeys::open(&dir.path().join("catalog.sqlite")).await;
        let audit = Arc::new(Collected::default());
        let (hierarchy, admin) = Self::build(
            &store,
            &tenant_keys,
            &audit,
            &service,
            &customer_a,
            &customer_b,
            ttl,
        );
        Self {
            dir,
            service,
            customer_a,
            customer_b,
            keys_a,
            keys_b,
            store,
            file_keys,
            tenant_keys,
            audit,
            hierarchy,
            admin,
        }
    }

    pub fn build(
        store: &Arc<SqliteStore>,
        tenant_keys: &Arc<TenantKeyDir>,
        audit: &Arc<Collected>,
        service: &Arc<ServiceKeys>,
        a: &Arc<FaultInjector>,
        b: &Arc<FaultInjector>,
        ttl: Duration,
    ) -> (KeyHierarchy, atrest_tenant::Administration) {
        KeyHierarchy::builder(store.clone(), tenant_keys.clone(), audit.clone())
            .provider(service.clone() as Arc<dyn RootKeyProvider>)
            .provider(a.clone() as Arc<dyn RootKeyProvider>)
            .provider(b.clone() as Arc<dyn RootKeyProvider>)
            .service_root_key("service", "root")
            .availability_key("service", "availability")
            .policy(policy())
            .cache_ttl(ttl)
            .actor("test-service")
            .build_with_administration()
            .unwrap()
    }

    pub fn customer_keys() -> [RootKeyRef; 2] {
        [
            "customer-a:key-1".parse().unwrap(),
            "customer-b:key-1".parse().unwrap(),
        ]
    }

    pub async fn customer_tenant(&self) -> TenantId {
        let tenant = TenantId::random(&mut OsRng).unwrap();
        self.hierarchy
            .create_customer_key_tenant(tenant, Self::customer_keys())
            .await
            .unwrap();
        tenant
    }

    pub async fn service_tenant(&self) -> TenantId {
        let tenant = TenantId::random(&mut OsRng).unwrap();
        self.hierarchy.create_service_tenant(tenant).await.unwrap();
        tenant
    }
}
