//! The provider: its builder, its clients (one per region) and the
//! [`RootKeyProvider`] calls.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use atrest_tenant::{KeyMaterial, ProviderError, RootKeyProvider, RootKeyRef, TikBinding};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_kms::Client;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Region, SharedHttpClient};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{EncryptionAlgorithmSpec, KeySpec, KeyUsageType};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use crate::error::{Op, map_sdk_error, state_refusal};
use crate::{AwsCredentials, KeyArn};

/// How long connecting to KMS may take, unless configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a whole call (its retry included) may take, unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The encryption context key under which every wrap binds its
/// [`TikBinding`] (base64url, unpadded). KMS authenticates the context with
/// the ciphertext, and AWS CloudTrail records it with each `Encrypt` and
/// `Decrypt`: the customer's trail shows which tenant's key was used.
pub const ENCRYPTION_CONTEXT_KEY: &str = "atrest:tik-binding";

/// Longest wrapped value accepted: KMS's largest ciphertext blob.
pub const MAX_WRAPPED: usize = 6144;

/// The SDK behaviour this crate was written and tested against (retries,
/// timeouts), fixed so that an SDK upgrade does not change it silently.
fn behavior_version() -> BehaviorVersion {
    BehaviorVersion::v2026_11_17()
}

/// Configures an [`AwsKmsKeys`]; made by [`AwsKmsKeys::builder`].
#[derive(Debug)]
pub struct AwsKmsKeysBuilder {
    name: String,
    credentials: AwsCredentials,
    endpoint: Option<String>,
    connect_timeout: Duration,
    timeout: Duration,
    ca_certificates: Vec<Vec<u8>>,
}

impl AwsKmsKeysBuilder {
    /// Sends every region's requests to this endpoint (`https://…`, or
    /// `http://` to a loopback address) instead of
    /// `https://kms.<region>.amazonaws.com`: a local KMS emulator, or a
    /// VPC endpoint (of one region: add a provider per region for several).
    #[must_use]
    pub fn endpoint(mut self, url: &str) -> Self {
        self.endpoint = Some(url.to_owned());
        self
    }

    /// How long connecting may take (default [`DEFAULT_CONNECT_TIMEOUT`]).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a whole call may take, connecting and one retry included
    /// (default [`DEFAULT_TIMEOUT`]). A call that takes longer fails with
    /// [`ProviderError::Unavailable`].
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Trusts the CA certificate(s) in this PEM text for `https`, besides
    /// the system's trust store.
    #[must_use]
    pub fn ca_certificate_pem(mut self, pem: &[u8]) -> Self {
        self.ca_certificates.push(pem.to_vec());
        self
    }

    /// Reads the credentials and makes the provider. Nothing is sent yet,
    /// and no runtime is needed: calls run on the runtime of the task that
    /// awaits them.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if the name or endpoint is invalid
    /// (`http` to a host other than a loopback address), a CA certificate
    /// does not parse, or the credentials cannot be read (a file others may
    /// read included).
    pub fn build(self) -> Result<AwsKmsKeys, ProviderError> {
        let misconfigured = |detail: String| ProviderError::Misconfigured {
            provider: self.name.clone(),
            detail,
        };
        // Validates the name.
        let _ = RootKeyRef::new(self.name.clone(), "-", 1)?;
        if let Some(endpoint) = &self.endpoint {
            check_endpoint(endpoint).map_err(&misconfigured)?;
        }
        let credentials = self.credentials.provider().map_err(&misconfigured)?;
        let mut trust = TrustStore::default();
        for pem in &self.ca_certificates {
            check_pem(pem).map_err(&misconfigured)?;
            trust = trust.with_pem_certificate(pem.clone());
        }
        let context = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| misconfigured(format!("cannot make the TLS context: {e}")))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(context)
            .build_https();
        Ok(AwsKmsKeys {
            name: self.name,
            endpoint: self.endpoint,
            credentials,
            http,
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
            clients: Mutex::new(HashMap::new()),
        })
    }
}

/// An endpoint: `https`, or `http` only to a loopback address; scheme,
/// host and port only.
fn check_endpoint(url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("endpoint {url:?}: expected https://HOST[:PORT]"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty()
        || authority.contains(['/', '?', '#', '@'])
        || authority
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!("endpoint {url:?}: only scheme, host and port"));
    }
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed
            .split_once(']')
            .map_or(bracketed, |(host, _)| host)
    } else {
        authority
            .split_once(':')
            .map_or(authority, |(host, _)| host)
    };
    match scheme {
        "https" => Ok(()),
        "http" => {
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "endpoint {url:?}: plain http only to a loopback address; use https"
                ))
            }
        }
        other => Err(format!("endpoint {url:?}: unsupported scheme {other}")),
    }
}

/// At least one certificate, and nothing that does not parse.
fn check_pem(pem: &[u8]) -> Result<(), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|e| format!("invalid CA certificate: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err("invalid CA certificate: no certificate in the PEM text".into());
    }
    Ok(())
}

/// Root keys in AWS KMS: KMS wraps and unwraps TIKs with symmetric keys
/// that never leave it.
///
/// A [`RootKeyRef`] here is `<provider name>:<key ARN>@1`: the label is the
/// key's full ARN, which pins the key and its region (one provider serves
/// keys in several regions, each through a client for its region). KMS
/// keys have no versions a reference could pin (KMS keeps a rotated key's
/// earlier material to itself), so the version is always 1. See the
/// [crate documentation](crate) for the calls, the error rules,
/// credentials and timeouts.
pub struct AwsKmsKeys {
    name: String,
    endpoint: Option<String>,
    credentials: SharedCredentialsProvider,
    http: SharedHttpClient,
    connect_timeout: Duration,
    timeout: Duration,
    clients: Mutex<HashMap<String, Client>>,
}

impl AwsKmsKeys {
    /// Configures a provider named `name` (the first part of its
    /// [`RootKeyRef`]s) that signs with `credentials`.
    pub fn builder(name: &str, credentials: AwsCredentials) -> AwsKmsKeysBuilder {
        AwsKmsKeysBuilder {
            name: name.to_owned(),
            credentials,
            endpoint: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            ca_certificates: Vec::new(),
        }
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A reference to the key with ARN `arn`.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if `arn` is not a key ARN (an alias
    /// or a bare key id included).
    pub fn key_ref(&self, arn: &str) -> Result<RootKeyRef, ProviderError> {
        let key = RootKeyRef::new(self.name.clone(), arn, 1)?;
        self.arn(&key)?;
        Ok(key)
    }

    /// The ARN a reference names, if it is one of this provider's.
    fn arn(&self, key: &RootKeyRef) -> Result<KeyArn, ProviderError> {
        let misconfigured = |detail: String| ProviderError::Misconfigured {
            provider: self.name.clone(),
            detail,
        };
        if key.provider() != self.name {
            return Err(misconfigured(format!(
                "root key {key} belongs to another provider"
            )));
        }
        if key.version() != 1 {
            return Err(misconfigured(format!(
                "root key {key}: KMS keys have no versions to pin; name it @1"
            )));
        }
        KeyArn::parse(key.label()).map_err(misconfigured)
    }

    /// The client for `arn`'s region, made on first use.
    fn client(&self, key: &RootKeyRef, arn: &KeyArn) -> Result<Client, ProviderError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ProviderError::Misconfigured {
                provider: self.name.clone(),
                detail: format!("{key}: called outside a tokio runtime"),
            });
        }
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(arn.region()) {
            return Ok(client.clone());
        }
        let mut config = aws_sdk_kms::Config::builder()
            .behavior_version(behavior_version())
            .region(Region::new(arn.region().to_owned()))
            .credentials_provider(self.credentials.clone())
            .http_client(self.http.clone())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(self.connect_timeout)
                    .operation_timeout(self.timeout)
                    .build(),
            )
            // One retry of a transient failure, inside the timeout.
            .retry_config(RetryConfig::standard().with_max_attempts(2));
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let client = Client::from_conf(config.build());
        clients.insert(arn.region().to_owned(), client.clone());
        Ok(client)
    }

    /// Checks with `DescribeKey` that the key is the one named, enabled,
    /// and a symmetric encryption key. KMS refuses a disabled key or one
    /// pending deletion itself; asking also gives the refusal its reason,
    /// and holds where a KMS-compatible service would not refuse.
    async fn check_key(
        &self,
        client: &Client,
        key: &RootKeyRef,
        arn: &KeyArn,
    ) -> Result<(), ProviderError> {
        let answer = client
            .describe_key()
            .key_id(arn.as_str())
            .send()
            .await
            .map_err(|e| map_sdk_error(key, Op::DescribeKey, &e))?;
        let unexpected = |what: &str| ProviderError::Misconfigured {
            provider: self.name.clone(),
            detail: format!("DescribeKey {}: unexpected answer: {what}", key.label()),
        };
        let metadata = answer
            .key_metadata()
            .ok_or_else(|| unexpected("no key metadata"))?;
        if metadata.arn() != Some(arn.as_str()) {
            return Err(unexpected("it describes another key"));
        }
        if let Some(refusal) = state_refusal(key, metadata.key_state()) {
            return Err(refusal);
        }
        if metadata.key_usage() != Some(&KeyUsageType::EncryptDecrypt)
            || metadata.key_spec() != Some(&KeySpec::SymmetricDefault)
        {
            return Err(ProviderError::AccessDenied {
                key: key.clone(),
                detail: "not a symmetric encryption key (KeySpec SYMMETRIC_DEFAULT, KeyUsage ENCRYPT_DECRYPT)".into(),
            });
        }
        Ok(())
    }
}

/// The encryption context value of a binding.
fn context(binding: &TikBinding) -> String {
    URL_SAFE_NO_PAD.encode(binding.as_bytes())
}

#[async_trait::async_trait]
impl RootKeyProvider for AwsKmsKeys {
    fn name(&self) -> &str {
        &self.name
    }

    /// 1, once the key is found fit to wrap.
    async fn current_version(&self, label: &str) -> Result<u32, ProviderError> {
        let key = RootKeyRef::new(self.name.clone(), label, 1)?;
        let arn = self.arn(&key)?;
        let client = self.client(&key, &arn)?;
        self.check_key(&client, &key, &arn).await?;
        Ok(1)
    }

    async fn wrap(
        &self,
        key: &RootKeyRef,
        material: &KeyMaterial,
        binding: &TikBinding,
    ) -> Result<Vec<u8>, ProviderError> {
        let arn = self.arn(key)?;
        let client = self.client(key, &arn)?;
        // Nothing is sent to a key that is not fit.
        self.check_key(&client, key, &arn).await?;
        let answer = client
            .encrypt()
            .key_id(arn.as_str())
            .plaintext(Blob::new(material.expose_secret().to_vec()))
            .encryption_context(ENCRYPTION_CONTEXT_KEY, context(binding))
            .encryption_algorithm(EncryptionAlgorithmSpec::SymmetricDefault)
            .send()
            .await
            .map_err(|e| map_sdk_error(key, Op::Encrypt, &e))?;
        let unexpected = |what: &str| ProviderError::Misconfigured {
            provider: self.name.clone(),
            detail: format!("Encrypt {}: unexpected answer: {what}", key.label()),
        };
        if answer.key_id() != Some(arn.as_str()) {
            return Err(unexpected("encrypted under another key"));
        }
        let wrapped = answer
            .ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| unexpected("no ciphertext"))?;
        if wrapped.is_empty() || wrapped.len() > MAX_WRAPPED {
            return Err(unexpected("a ciphertext of an impossible length"));
        }
        Ok(wrapped)
    }

    async fn unwrap(
        &self,
        key: &RootKeyRef,
        wrapped: &[u8],
        binding: &TikBinding,
    ) -> Result<KeyMaterial, ProviderError> {
        let arn = self.arn(key)?;
        if wrapped.is_empty() || wrapped.len() > MAX_WRAPPED {
            return Err(ProviderError::AuthenticationFailed { key: key.clone() });
        }
        let client = self.client(key, &arn)?;
        // The key's state is asked beside the decryption, not before it:
        // a cold release waits for one round trip.
        let decrypt = client
            .decrypt()
            .key_id(arn.as_str())
            .ciphertext_blob(Blob::new(wrapped.to_vec()))
            .encryption_context(ENCRYPTION_CONTEXT_KEY, context(binding))
            .encryption_algorithm(EncryptionAlgorithmSpec::SymmetricDefault)
            .send();
        let (checked, decrypted) = tokio::join!(self.check_key(&client, key, &arn), decrypt);
        let mut answer = match (checked, decrypted) {
            (Ok(()), Ok(answer)) => answer,
            (Err(refused), Ok(mut answer)) => {
                // Decrypted, but the key may not be used: the plaintext is
                // wiped unused.
                drop(Zeroizing::new(
                    answer.plaintext.take().map(Blob::into_inner),
                ));
                return Err(refused);
            }
            (Ok(()), Err(failed)) => return Err(map_sdk_error(key, Op::Decrypt, &failed)),
            // An answer outranks an outage.
            (Err(checked), Err(failed)) => {
                let failed = map_sdk_error(key, Op::Decrypt, &failed);
                return Err(if checked.is_unavailable() {
                    failed
                } else {
                    checked
                });
            }
        };
        let plain = Zeroizing::new(
            answer
                .plaintext
                .take()
                .map(Blob::into_inner)
                .unwrap_or_default(),
        );
        // Material of another key, or anything but 32 bytes, was not
        // wrapped here.
        if answer.key_id() != Some(arn.as_str()) {
            return Err(ProviderError::AuthenticationFailed { key: key.clone() });
        }
        KeyMaterial::from_secret_slice(&plain)
            .filter(|_| plain.len() == KeyMaterial::LEN)
            .ok_or_else(|| ProviderError::AuthenticationFailed { key: key.clone() })
    }
}

impl core::fmt::Debug for AwsKmsKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AwsKmsKeys")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn provider() -> AwsKmsKeys {
        let credentials =
            aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        AwsKmsKeys::builder(
            "aws",
            AwsCredentials::Provider(SharedCredentialsProvider::new(credentials)),
        )
        .endpoint("http://127.0.0.1:1")
        .build()
        .unwrap()
    }

    #[test]
    fn endpoints_are_https_or_loopback_http() {
        for good in [
            "https://kms.eu-west-1.amazonaws.com",
            "https://vpce-0123.kms.eu-west-1.vpce.amazonaws.com:443/",
            "http://127.0.0.1:5000",
            "http://localhost:5000",
            "http://[::1]:5000",
        ] {
            assert!(check_endpoint(good).is_ok(), "{good}");
        }
        for bad in [
            "http://10.0.0.1:5000",
            "http://kms.example.com",
            "ftp://127.0.0.1",
            "https://user:pass@kms.example.com",
            "https://kms.example.com/prefix",
            "https://kms.example.com/?x=1",
            "127.0.0.1:5000",
            "https://",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn references_name_a_key_arn_of_this_provider_at_version_1() {
        let keys = provider();
        assert!(keys.key_ref(ARN).is_ok());
        assert!(keys.key_ref("alias/atrest").is_err());
        assert!(
            keys.key_ref("1234abcd-12ab-34cd-56ef-1234567890ab")
                .is_err()
        );
        let other = RootKeyRef::new("other", ARN, 1).unwrap();
        assert!(matches!(
            keys.arn(&other),
            Err(ProviderError::Misconfigured { .. })
        ));
        let versioned = RootKeyRef::new("aws", ARN, 2).unwrap();
        assert!(matches!(
            keys.arn(&versioned),
            Err(ProviderError::Misconfigured { .. })
        ));
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        assert!(check_pem(b"").is_err());
        assert!(
            check_pem(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").is_err()
        );
    }

    /// Outside a tokio runtime a call is refused, not a panic.
    #[test]
    fn a_call_outside_a_tokio_runtime_is_refused() {
        use std::future::Future as _;
        let keys = provider();
        let mut call = std::pin::pin!(keys.current_version(ARN));
        let outcome = call
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        assert!(
            matches!(&outcome, std::task::Poll::Ready(Err(ProviderError::Misconfigured { detail, .. }))
                if detail.contains("tokio runtime")),
            "{outcome:?}"
        );
    }

    /// Nothing listens: an outage, within the timeout.
    #[tokio::test]
    async fn no_answer_is_an_outage() {
        let keys = provider();
        let key = keys.key_ref(ARN).unwrap();
        let started = std::time::Instant::now();
        let error = keys.current_version(key.label()).await.unwrap_err();
        assert!(error.is_unavailable(), "{error:?}");
        assert!(started.elapsed() < DEFAULT_TIMEOUT + Duration::from_secs(1));
    }
}
