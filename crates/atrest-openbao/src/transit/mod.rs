//! The provider: root keys in a transit secrets engine.
//!
//! This module holds the type, its builder and its key references;
//! `client` sends the requests and maps their failures, `admin` describes,
//! creates and rotates keys, and `provider` wraps and unwraps TIKs.

mod admin;
mod client;
mod provider;

use std::net::IpAddr;
use std::sync::RwLock;
use std::time::Duration;

use atrest_tenant::{ProviderError, RootKeyRef};
use reqwest::Url;
use reqwest::header::HeaderValue;

use crate::Credentials;

pub use admin::TransitKeyInfo;

/// How long connecting to the server may take, unless configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a whole request (connect, send, answer) may take, unless
/// configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The key type [`TransitKeys::create_key`] creates.
pub const KEY_TYPE: &str = "aes256-gcm96";

/// Configures a [`TransitKeys`]; made by [`TransitKeys::builder`].
#[derive(Debug)]
pub struct TransitKeysBuilder {
    name: String,
    address: String,
    mount: String,
    credentials: Credentials,
    connect_timeout: Duration,
    timeout: Duration,
    namespace: Option<String>,
    ca_certificates: Vec<Vec<u8>>,
}

impl TransitKeysBuilder {
    /// How long connecting may take (default [`DEFAULT_CONNECT_TIMEOUT`]).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a whole request may take, connecting included (default
    /// [`DEFAULT_TIMEOUT`]). A request that takes longer fails with
    /// [`ProviderError::Unavailable`].
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The OpenBao namespace the mount is in (`X-Vault-Namespace`).
    #[must_use]
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// Trusts the CA certificate(s) in this PEM text for `https`, besides
    /// the system's trust store.
    #[must_use]
    pub fn ca_certificate_pem(mut self, pem: &[u8]) -> Self {
        self.ca_certificates.push(pem.to_vec());
        self
    }

    /// Reads the token and makes the provider. Nothing is sent to the
    /// server yet, and no runtime is needed: requests run on the runtime of
    /// the task that awaits them.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if the name, address, mount or
    /// namespace is invalid, the address is `http` to a host other than a
    /// loopback address, a CA certificate does not parse, the token cannot
    /// be read (or its file is readable by others), or the HTTP client
    /// cannot be made.
    pub fn build(self) -> Result<TransitKeys, ProviderError> {
        let misconfigured = |detail: String| ProviderError::Misconfigured {
            provider: self.name.clone(),
            detail,
        };
        // Validates the name.
        let _ = RootKeyRef::new(self.name.clone(), "-", 1)?;
        let base = parse_address(&self.address).map_err(&misconfigured)?;
        let mount = check_mount(&self.mount).map_err(&misconfigured)?;
        let namespace = self
            .namespace
            .as_deref()
            .map(|ns| {
                HeaderValue::from_str(ns.trim_matches('/'))
                    .map_err(|_| misconfigured(format!("invalid namespace {ns:?}")))
            })
            .transpose()?;
        let token = self.credentials.load(&self.name)?;

        let mut client = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            // The token is in a header of ours: never forward it elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        for pem in &self.ca_certificates {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| misconfigured(format!("invalid CA certificate: {e}")))?;
            client = client.tls_certs_merge(certificates);
        }
        let client = client
            .build()
            .map_err(|e| misconfigured(format!("cannot make the HTTP client: {e}")))?;
        Ok(TransitKeys {
            name: self.name,
            address: self.address,
            mount,
            base,
            client,
            credentials: self.credentials,
            token: RwLock::new(token),
            namespace,
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
        })
    }
}

/// The server's base URL: `http` only to a loopback address.
fn parse_address(address: &str) -> Result<Url, String> {
    let url = Url::parse(address).map_err(|e| format!("invalid address {address:?}: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("address {address:?} has no host"))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(format!(
                    "address {address:?}: plain http only to a loopback address; use https"
                ));
            }
        }
        other => return Err(format!("address {address:?}: unsupported scheme {other}")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the address must not hold credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() || url.cannot_be_a_base() {
        return Err(format!(
            "address {address:?}: only scheme, host, port and path"
        ));
    }
    Ok(url)
}

/// A mount path: segments of letters, digits, `-`, `_` and `.`.
fn check_mount(mount: &str) -> Result<String, String> {
    let mount = mount.trim_matches('/');
    let valid = !mount.is_empty()
        && mount
            .split('/')
            .all(|segment| check_segment(segment) && segment != "." && segment != "..");
    if valid {
        Ok(mount.to_owned())
    } else {
        Err(format!("invalid mount path {mount:?}"))
    }
}

fn check_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `label` is a transit key name: one path segment, not `.` or
/// `..`.
fn is_key_name(label: &str) -> bool {
    check_segment(label) && label != "." && label != ".."
}

/// Root keys in a HashiCorp Vault / OpenBao transit secrets engine: the
/// server wraps and unwraps TIKs, and the keys never leave it.
///
/// A [`RootKeyRef`] here is `<provider name>:<transit key name>@<key
/// version>`. Every call is async and runs on the caller's tokio runtime.
/// See the [crate documentation](crate) for the wrapped form, the error
/// rules, credentials, timeouts and the runtime.
pub struct TransitKeys {
    name: String,
    address: String,
    mount: String,
    base: Url,
    client: reqwest::Client,
    credentials: Credentials,
    token: RwLock<HeaderValue>,
    namespace: Option<HeaderValue>,
    connect_timeout: Duration,
    timeout: Duration,
}

impl TransitKeys {
    /// Configures a provider named `name` (the first part of its
    /// [`RootKeyRef`]s) for the transit engine mounted at `mount` on the
    /// server at `address` (`https://…`, or `http://127.0.0.1:8200`-style
    /// to a loopback address), authenticating with the token from
    /// `credentials`.
    pub fn builder(
        name: &str,
        address: &str,
        mount: &str,
        credentials: Credentials,
    ) -> TransitKeysBuilder {
        TransitKeysBuilder {
            name: name.to_owned(),
            address: address.to_owned(),
            mount: mount.to_owned(),
            credentials,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            namespace: None,
            ca_certificates: Vec::new(),
        }
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The transit mount path.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// A reference to version `version` of transit key `label`.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if `label` is not a transit key
    /// name (letters, digits, `-`, `_`, `.`) or `version` is 0.
    pub fn key_ref(&self, label: &str, version: u32) -> Result<RootKeyRef, ProviderError> {
        let key = RootKeyRef::new(self.name.clone(), label, version)?;
        self.check_key(&key)?;
        Ok(key)
    }

    /// Refuses a reference of another provider, or whose label is not a
    /// transit key name (it becomes a segment of the request's path).
    fn check_key(&self, key: &RootKeyRef) -> Result<(), ProviderError> {
        if key.provider() != self.name {
            return Err(ProviderError::Misconfigured {
                provider: self.name.clone(),
                detail: format!("root key {key} belongs to another provider"),
            });
        }
        if !is_key_name(key.label()) {
            return Err(ProviderError::Misconfigured {
                provider: self.name.clone(),
                detail: format!(
                    "{:?} is not a transit key name (letters, digits, '-', '_', '.')",
                    key.label()
                ),
            });
        }
        Ok(())
    }
}

impl core::fmt::Debug for TransitKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TransitKeys")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("mount", &self.mount)
            .field("credentials", &self.credentials)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::{Pin, pin};
    use std::task::{Context, Poll, Waker};

    use atrest_tenant::RootKeyProvider as _;

    use super::*;

    pub(super) fn key(version: u32) -> RootKeyRef {
        RootKeyRef::new("kms", "contoso", version).unwrap()
    }

    /// A provider named `kms` for `mount` on `address`, its token in a
    /// private file read (and removed) at once.
    pub(super) fn provider(address: &str, mount: &str) -> TransitKeys {
        use std::os::unix::fs::OpenOptionsExt as _;
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "atrest-openbao-token-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, b"token\n").unwrap();
        let keys = TransitKeys::builder("kms", address, mount, Credentials::FromFile(path.clone()))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        keys
    }

    /// Where nothing listens: every request is refused at connect.
    const NOWHERE: &str = "http://127.0.0.1:1";

    #[test]
    fn addresses_are_https_or_loopback_http() {
        for good in [
            "https://kms.example.com:8200",
            "https://kms.example.com/prefix/",
            "http://127.0.0.1:8200",
            "http://localhost:8200",
            "http://[::1]:8200",
        ] {
            assert!(parse_address(good).is_ok(), "{good}");
        }
        for bad in [
            "http://10.0.0.1:8200",
            "http://kms.example.com",
            "ftp://127.0.0.1",
            "https://user:pass@kms.example.com",
            "https://kms.example.com/?x=1",
            "127.0.0.1:8200",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mounts_and_key_names_are_plain_path_segments() {
        assert_eq!(check_mount("/transit/").unwrap(), "transit");
        assert_eq!(check_mount("tenants/contoso").unwrap(), "tenants/contoso");
        for bad in ["", "/", "a//b", "../sys", "a/./b", "tr ansit", "a?b"] {
            assert!(check_mount(bad).is_err(), "{bad:?}");
        }
        assert!(check_segment("contoso-1.key_2"));
        for bad in ["", "a/b", "a b", "a%2f", "ä"] {
            assert!(!check_segment(bad), "{bad:?}");
        }
        let keys = provider(NOWHERE, "transit");
        assert!(keys.key_ref("a/b", 1).is_err());
        assert!(keys.key_ref("..", 1).is_err());
        let other = RootKeyRef::new("other", "contoso", 1).unwrap();
        assert!(matches!(
            keys.check_key(&other),
            Err(ProviderError::Misconfigured { .. })
        ));
    }

    /// Made, used and dropped inside a task of a one-thread runtime: no
    /// runtime of its own to shut down, so nothing blocks or panics.
    #[tokio::test(flavor = "current_thread")]
    async fn is_made_used_and_dropped_inside_a_task() {
        let task = tokio::spawn(async {
            let keys = provider(NOWHERE, "transit");
            let refused = keys.current_version("contoso").await;
            assert!(
                matches!(&refused, Err(ProviderError::Unavailable { .. })),
                "{refused:?}"
            );
            drop(keys);
        });
        task.await.unwrap();
        // And dropped while a request is under way: the request is dropped
        // with it.
        let keys = provider(NOWHERE, "transit");
        let mut pending = Box::pin(keys.key_info("contoso"));
        let _ = poll_once(pending.as_mut());
        drop(pending);
        drop(keys);
    }

    /// Polls `future` once, with a waker that does nothing.
    fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    /// Outside a tokio runtime a call is refused, not a panic.
    #[test]
    fn a_call_outside_a_tokio_runtime_is_refused() {
        let keys = provider(NOWHERE, "transit");
        let call = pin!(keys.key_info("contoso"));
        let outcome = poll_once(call);
        assert!(
            matches!(&outcome, Poll::Ready(Err(ProviderError::Misconfigured { detail, .. }))
                if detail.contains("tokio runtime")),
            "{outcome:?}"
        );
    }
}
