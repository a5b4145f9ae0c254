//! The provider: root keys in a transit secrets engine.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use atrest_tenant::{KeyMaterial, ProviderError, RootKeyProvider, RootKeyRef, TikBinding};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use zeroize::{Zeroize as _, Zeroizing};

use crate::Credentials;
use crate::error::{Failure, Op, map_failure, transport_failure};
use crate::wire;

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

/// Key types whose encryption authenticates associated data, the only ones
/// that wrap.
const AEAD_KEY_TYPES: [&str; 3] = [KEY_TYPE, "chacha20-poly1305", "xchacha20-poly1305"];

/// What the server says about a transit key ([`TransitKeys::key_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransitKeyInfo {
    /// The key type, for example `aes256-gcm96`.
    pub key_type: String,
    /// The newest version.
    pub latest_version: u32,
    /// Versions below this one no longer decrypt (set by the key's owner).
    pub min_decryption_version: u32,
    /// Versions below this one no longer encrypt (0: any).
    pub min_encryption_version: u32,
    /// Whether the key can be exported (it then leaves the server).
    pub exportable: bool,
    /// Whether a plaintext backup of the key can be taken.
    pub allow_plaintext_backup: bool,
    /// Whether the key may be deleted.
    pub deletion_allowed: bool,
    /// Whether the key needs a derivation context.
    pub derived: bool,
}

impl TransitKeyInfo {
    fn from_wire(data: wire::KeyData) -> Option<Self> {
        let version = |v: u64| u32::try_from(v).ok();
        Some(Self {
            key_type: data.key_type,
            latest_version: version(data.latest_version)?,
            min_decryption_version: version(data.min_decryption_version)?,
            min_encryption_version: version(data.min_encryption_version)?,
            exportable: data.exportable,
            allow_plaintext_backup: data.allow_plaintext_backup,
            deletion_allowed: data.deletion_allowed,
            derived: data.derived,
        })
    }

    /// Refuses a key that cannot wrap as this crate requires: one whose
    /// encryption does not authenticate associated data, that needs a
    /// derivation context, or that can leave the server.
    fn check_wraps(&self, key: &RootKeyRef) -> Result<(), ProviderError> {
        let refuse = |why: &str| ProviderError::Misconfigured {
            provider: key.provider().to_owned(),
            detail: format!("transit key {}: {why}", key.label()),
        };
        if !AEAD_KEY_TYPES.contains(&self.key_type.as_str()) {
            return Err(refuse(&format!(
                "type {} does not authenticate associated data; use {KEY_TYPE}",
                self.key_type
            )));
        }
        if self.derived {
            return Err(refuse("a derived key is not supported"));
        }
        if self.exportable || self.allow_plaintext_backup {
            return Err(refuse(
                "the key can be exported or backed up in plaintext; root keys must be created with exportable=false",
            ));
        }
        Ok(())
    }
}

impl TransitKeys {
    /// What the server says about transit key `label`.
    ///
    /// # Errors
    /// [`ProviderError::NotFound`] if there is no such key; otherwise as
    /// for any call (see the crate documentation's table).
    pub async fn key_info(&self, label: &str) -> Result<TransitKeyInfo, ProviderError> {
        let key = self.key_ref(label, 1)?;
        self.read_key(&key).await
    }

    /// `GET <mount>/keys/<key>`: the key's description.
    async fn read_key(&self, key: &RootKeyRef) -> Result<TransitKeyInfo, ProviderError> {
        let body = self
            .request(key, Op::ReadKey, Method::GET, "keys", None, None)
            .await?;
        serde_json::from_slice::<wire::Answer<wire::KeyData>>(&body)
            .ok()
            .and_then(|answer| TransitKeyInfo::from_wire(answer.data))
            .ok_or_else(|| {
                map_failure(
                    key,
                    Op::ReadKey,
                    Failure::Malformed("not a transit key's description"),
                )
            })
    }

    /// Creates transit key `label` as a root key: type `aes256-gcm96`, not
    /// exportable, no plaintext backup. For operators (a customer creates
    /// their keys with their own tools and the same settings) and tests.
    /// Returns its first version.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if the key already exists;
    /// [`ProviderError::AccessDenied`] if the token may not create it;
    /// otherwise as for any call.
    pub async fn create_key(&self, label: &str) -> Result<RootKeyRef, ProviderError> {
        let key = self.key_ref(label, 1)?;
        match self.read_key(&key).await {
            Err(ProviderError::NotFound { .. }) => {}
            Ok(_) => {
                return Err(ProviderError::Misconfigured {
                    provider: self.name.clone(),
                    detail: format!("transit key {label} already exists"),
                });
            }
            Err(error) => return Err(error),
        }
        let body = serde_json::to_vec(&wire::CreateKey {
            key_type: KEY_TYPE,
            exportable: false,
            allow_plaintext_backup: false,
        })
        .map_err(|_| {
            map_failure(
                &key,
                Op::ManageKey,
                Failure::Request("cannot encode".into()),
            )
        })?;
        let _ = self
            .request(
                &key,
                Op::ManageKey,
                Method::POST,
                "keys",
                None,
                Some(body.into()),
            )
            .await?;
        let info = self.read_key(&key).await?;
        self.key_ref(label, info.latest_version)
    }

    /// Rotates transit key `label`: a new version that new TIK wraps use
    /// once [`KeyHierarchy::roll_root_key`](atrest_tenant::KeyHierarchy::roll_root_key)
    /// moved them to it. Older versions still decrypt until the key's owner
    /// raises its `min_decryption_version`. Returns the new version.
    ///
    /// # Errors
    /// [`ProviderError::NotFound`] if there is no such key;
    /// [`ProviderError::AccessDenied`] if the token may not rotate it;
    /// otherwise as for any call.
    pub async fn rotate_key(&self, label: &str) -> Result<RootKeyRef, ProviderError> {
        let key = self.key_ref(label, 1)?;
        let _ = self
            .request(
                &key,
                Op::ManageKey,
                Method::POST,
                "keys",
                Some("rotate"),
                None,
            )
            .await?;
        let info = self.read_key(&key).await?;
        self.key_ref(label, info.latest_version)
    }

    /// A policy (HCL) that lets the service use keys `labels` of this
    /// mount and nothing else: read each key's versions, encrypt and
    /// decrypt with it. It grants `update`, not `create`, on `encrypt`, so
    /// the server never creates a missing key on an encryption.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] for a label that is not a transit
    /// key name (it would be written into the policy's text).
    pub fn service_policy(&self, labels: &[&str]) -> Result<String, ProviderError> {
        let mut policy = String::new();
        for label in labels {
            if !is_key_name(label) {
                return Err(ProviderError::Misconfigured {
                    provider: self.name.clone(),
                    detail: format!("{label:?} is not a transit key name"),
                });
            }
            for (path, capability) in [
                ("keys", "read"),
                ("encrypt", "update"),
                ("decrypt", "update"),
            ] {
                policy.push_str(&format!(
                    "path \"{}/{path}/{label}\" {{\n  capabilities = [\"{capability}\"]\n}}\n",
                    self.mount
                ));
            }
        }
        Ok(policy)
    }
}

/// Largest answer body read, in bytes.
const MAX_BODY: usize = 64 * 1024;

static TOKEN_HEADER: HeaderName = HeaderName::from_static("x-vault-token");
static NAMESPACE_HEADER: HeaderName = HeaderName::from_static("x-vault-namespace");
static REQUEST_HEADER: HeaderName = HeaderName::from_static("x-vault-request");

impl TransitKeys {
    /// Reads the token again from the configured [`Credentials`](crate::Credentials)
    /// (after the operator replaced it); requests from then on use the new
    /// one.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if it cannot be read; the old
    /// token stays in use.
    pub fn reload_credentials(&self) -> Result<(), ProviderError> {
        let token = self.credentials.load(&self.name)?;
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = token;
        Ok(())
    }

    fn token(&self) -> HeaderValue {
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `<address>/v1/<mount>/<operation>/<key>[/<suffix>]`.
    fn url(
        &self,
        key: &RootKeyRef,
        operation: &str,
        suffix: Option<&str>,
    ) -> Result<Url, ProviderError> {
        let mut url = self.base.clone();
        {
            let mut segments = url.path_segments_mut().map_err(|()| {
                map_failure(
                    key,
                    Op::ReadKey,
                    Failure::Request("the address cannot take a path".into()),
                )
            })?;
            let _ = segments.pop_if_empty().push("v1");
            let _ = segments.extend(self.mount.split('/'));
            let _ = segments.push(operation).push(key.label());
            if let Some(suffix) = suffix {
                let _ = segments.push(suffix);
            }
        }
        Ok(url)
    }

    /// Sends `operation` on `key` and returns the body of a successful
    /// answer (zeroized when dropped). It runs in the task that awaits it,
    /// on that task's tokio runtime; dropping the future cancels the
    /// request.
    async fn request(
        &self,
        key: &RootKeyRef,
        op: Op,
        method: Method,
        operation: &str,
        suffix: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        self.check_key(key)?;
        // The HTTP client's connections and timers need a tokio runtime:
        // without one, say so rather than let tokio panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(map_failure(
                key,
                op,
                Failure::Request("called outside a tokio runtime".into()),
            ));
        }
        let url = self.url(key, operation, suffix)?;
        self.send(key, op, method, url, body).await
    }

    async fn send(
        &self,
        key: &RootKeyRef,
        op: Op,
        method: Method,
        url: Url,
        body: Option<Bytes>,
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        let mut request = self
            .client
            .request(method, url)
            .header(TOKEN_HEADER.clone(), self.token())
            .header(REQUEST_HEADER.clone(), HeaderValue::from_static("true"));
        if let Some(namespace) = &self.namespace {
            request = request.header(NAMESPACE_HEADER.clone(), namespace.clone());
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| map_failure(key, op, transport_failure(&e)))?;
        let status = response.status();
        let mut body = Zeroizing::new(Vec::with_capacity(4096));
        // An error answer is decided by its status: a large or broken body
        // after a 403 (a proxy's denial page, say) is still a refusal.
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        if status.is_success() {
                            return Err(map_failure(
                                key,
                                op,
                                Failure::Malformed("the answer is too large"),
                            ));
                        }
                        break;
                    }
                    body.extend_from_slice(&chunk);
                    if let Ok(mut owned) = chunk.try_into_mut() {
                        owned[..].zeroize();
                    }
                }
                Ok(None) => break,
                Err(e) if status.is_success() => {
                    return Err(map_failure(key, op, transport_failure(&e)));
                }
                Err(_) => break,
            }
        }
        if status.is_success() {
            return Ok(body);
        }
        let errors = wire::Errors::parse(&body);
        Err(map_failure(
            key,
            op,
            Failure::Status {
                status: status.as_u16(),
                errors: &errors,
            },
        ))
    }
}

/// Longest wrapped value accepted, in bytes (a wrap is about 80).
const MAX_WRAPPED: usize = 1024;

#[async_trait::async_trait]
impl RootKeyProvider for TransitKeys {
    fn name(&self) -> &str {
        &self.name
    }

    /// The newest version of transit key `label` (its `latest_version`),
    /// once the key is found fit to wrap.
    async fn current_version(&self, label: &str) -> Result<u32, ProviderError> {
        let key = self.key_ref(label, 1)?;
        let info = self.read_key(&key).await?;
        info.check_wraps(&key)?;
        Ok(info.latest_version)
    }

    async fn wrap(
        &self,
        key: &RootKeyRef,
        material: &KeyMaterial,
        binding: &TikBinding,
    ) -> Result<Vec<u8>, ProviderError> {
        // The key must exist (an encryption with `create` permission would
        // make a fresh key under a missing name) and be fit to wrap.
        self.read_key(key).await?.check_wraps(key)?;
        let mut plaintext = Zeroizing::new(String::with_capacity(48));
        STANDARD.encode_string(material.expose_secret(), &mut plaintext);
        let associated_data = STANDARD.encode(binding.as_bytes());
        let mut body = Zeroizing::new(Vec::with_capacity(
            128 + plaintext.len() + associated_data.len(),
        ));
        serde_json::to_writer(
            &mut *body,
            &wire::Encrypt {
                plaintext: &plaintext,
                associated_data: &associated_data,
                key_version: key.version(),
            },
        )
        .map_err(|_| map_failure(key, Op::Encrypt, Failure::Request("cannot encode".into())))?;
        drop(plaintext);
        let answer = self
            .request(
                key,
                Op::Encrypt,
                Method::POST,
                "encrypt",
                None,
                Some(Bytes::from_owner(body)),
            )
            .await?;
        let ciphertext = serde_json::from_slice::<wire::Answer<wire::Encrypted>>(&answer)
            .map_err(|_| map_failure(key, Op::Encrypt, Failure::Malformed("no ciphertext")))?
            .data
            .ciphertext;
        if check_wrapped(key, ciphertext.as_bytes()).is_none() {
            return Err(map_failure(
                key,
                Op::Encrypt,
                Failure::Malformed("a ciphertext of another key version or form"),
            ));
        }
        Ok(ciphertext.into_bytes())
    }

    async fn unwrap(
        &self,
        key: &RootKeyRef,
        wrapped: &[u8],
        binding: &TikBinding,
    ) -> Result<KeyMaterial, ProviderError> {
        let ciphertext = check_wrapped(key, wrapped)
            .ok_or_else(|| ProviderError::AuthenticationFailed { key: key.clone() })?;
        let associated_data = STANDARD.encode(binding.as_bytes());
        let body = serde_json::to_vec(&wire::Decrypt {
            ciphertext,
            associated_data: &associated_data,
        })
        .map_err(|_| map_failure(key, Op::Decrypt, Failure::Request("cannot encode".into())))?;
        let answer = self
            .request(
                key,
                Op::Decrypt,
                Method::POST,
                "decrypt",
                None,
                Some(body.into()),
            )
            .await?;
        let decrypted = serde_json::from_slice::<wire::Answer<wire::Decrypted<'_>>>(&answer)
            .map_err(|_| map_failure(key, Op::Decrypt, Failure::Malformed("no plaintext")))?
            .data
            .plaintext;
        let mut plain = Zeroizing::new(Vec::with_capacity(64));
        let decoded = STANDARD.decode_vec(decrypted.as_bytes(), &mut plain);
        if let Cow::Owned(mut owned) = decrypted {
            owned.zeroize();
        }
        // Anything but 32 bytes was not wrapped here.
        decoded
            .ok()
            .and_then(|()| KeyMaterial::from_secret_slice(&plain))
            .filter(|_| plain.len() == KeyMaterial::LEN)
            .ok_or_else(|| ProviderError::AuthenticationFailed { key: key.clone() })
    }
}

/// The ciphertext of a wrapped value, if it is a transit ciphertext of
/// `key`'s version: `vault:v<version>:<base64>`.
fn check_wrapped<'a>(key: &RootKeyRef, wrapped: &'a [u8]) -> Option<&'a str> {
    if wrapped.len() > MAX_WRAPPED {
        return None;
    }
    let text = core::str::from_utf8(wrapped).ok()?;
    let rest = text.strip_prefix("vault:v")?;
    let (version, payload) = rest.split_once(':')?;
    let canonical = !version.starts_with('0') && version.bytes().all(|b| b.is_ascii_digit());
    let valid_payload = !payload.is_empty()
        && payload
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    (canonical && version.parse::<u32>().ok()? == key.version() && valid_payload).then_some(text)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::{Pin, pin};
    use std::task::{Context, Poll, Waker};

    use super::*;

    fn key(version: u32) -> RootKeyRef {
        RootKeyRef::new("kms", "contoso", version).unwrap()
    }

    /// A provider named `kms` for `mount` on `address`, its token in a
    /// private file read (and removed) at once.
    fn provider(address: &str, mount: &str) -> TransitKeys {
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

    #[test]
    fn the_service_policy_grants_update_on_named_keys_only() {
        let keys = provider("http://127.0.0.1:1", "/tenants/contoso/");
        let policy = keys.service_policy(&["contoso"]).unwrap();
        assert!(
            keys.service_policy(&["x\" { capabilities = [\"sudo\"] }"])
                .is_err()
        );
        assert!(policy.contains("path \"tenants/contoso/decrypt/contoso\""));
        assert!(policy.contains("[\"update\"]") && !policy.contains("create"));
    }

    #[test]
    fn keys_that_cannot_wrap_are_refused() {
        let info = TransitKeyInfo {
            key_type: KEY_TYPE.into(),
            latest_version: 1,
            min_decryption_version: 1,
            min_encryption_version: 0,
            exportable: false,
            allow_plaintext_backup: false,
            deletion_allowed: false,
            derived: false,
        };
        assert!(info.check_wraps(&key(1)).is_ok());
        for bad in [
            TransitKeyInfo {
                key_type: "rsa-4096".into(),
                ..info.clone()
            },
            TransitKeyInfo {
                exportable: true,
                ..info.clone()
            },
            TransitKeyInfo {
                allow_plaintext_backup: true,
                ..info.clone()
            },
            TransitKeyInfo {
                derived: true,
                ..info.clone()
            },
        ] {
            assert!(
                matches!(
                    bad.check_wraps(&key(1)),
                    Err(ProviderError::Misconfigured { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn urls_are_built_from_segments() {
        let keys = provider("http://127.0.0.1:1/base/", "/tenants/contoso/");
        let url = keys.url(&key(1), "keys", Some("rotate")).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/base/v1/tenants/contoso/keys/contoso/rotate"
        );
        let url = keys.url(&key(3), "decrypt", None).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/base/v1/tenants/contoso/decrypt/contoso"
        );
    }

    #[test]
    fn only_a_ciphertext_of_the_references_version_is_sent() {
        let good = b"vault:v3:AAECAwQFBgcICQoLDA0ODw==";
        assert!(check_wrapped(&key(3), good).is_some());
        for bad in [
            &b"vault:v2:AAECAwQFBgcICQoLDA0ODw=="[..],
            b"vault:v03:AAECAwQFBgcICQoLDA0ODw==",
            b"vault:v3:",
            b"vault:v3:AAEC AwQF",
            b"vault:v3:AAEC\"}",
            b"vault:3:AAECAwQF",
            b"v3:AAECAwQF",
            b"vault:v+3:AAECAwQF",
            b"vault:v4294967299:AAECAwQF",
            b"\xffvault:v3:AAECAwQF",
            b"",
        ] {
            assert!(check_wrapped(&key(3), bad).is_none(), "{bad:?}");
        }
        let long = format!("vault:v3:{}", "A".repeat(MAX_WRAPPED));
        assert!(check_wrapped(&key(3), long.as_bytes()).is_none());
    }
}
