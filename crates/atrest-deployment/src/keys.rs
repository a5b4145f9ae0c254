//! The key hierarchy and files API of a deployment: built in one place,
//! from the deployment's parts and the program's [`Options`].

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atrest::audit::{
    Audit, AuditLog, Auditor, Event, Outcome, Receipt, Record, Sink, SinkError, SinkPolicy,
};
use atrest::tenant::{
    Administration, KeyHierarchy, KeyMaterial, MetadataStore, Pkcs11Keys, ProviderError,
    ReleasePolicy, RootKeyProvider, RootKeyRef, ServiceKeys, TenantKeyDir, TikBinding,
};
use atrest::{Catalog, Files};

use atrest_awskms::{AwsCredentials, AwsKmsKeys};
use atrest_openbao::{Credentials, TransitKeys};

use super::config::{AwsKmsConfig, Config, KmsConfig, TokenConfig};
use super::error::Error;
use super::observe::{AuditedSink, Observer, TimedAudit, TimedBlobs};
use super::{AVAILABILITY_KEY, ROOT_KEY, SERVICE_PROVIDER};

/// What the program running on a deployment brings to it: its name in the
/// audit trail, and optionally its own release policy, extra root-key
/// providers and TIK cache lifetime.
#[derive(Clone)]
pub struct Options {
    actor: String,
    policy: Option<Arc<dyn ReleasePolicy>>,
    providers: Vec<Arc<dyn RootKeyProvider>>,
    cache_ttl: Option<Duration>,
    observer: Option<Arc<dyn Observer>>,
}

impl core::fmt::Debug for Options {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Options")
            .field("actor", &self.actor)
            .field("custom_policy", &self.policy.is_some())
            .field(
                "providers",
                &self.providers.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .field("cache_ttl", &self.cache_ttl)
            .field("observer", &self.observer)
            .finish()
    }
}

impl Options {
    /// Options for the program `actor` (its name in audit records), with
    /// the membership policy (see [`super::Principal`]), the configured
    /// PKCS#11 tokens as the only providers besides the service's keys, and
    /// the library's default cache lifetime.
    pub fn new(actor: &str) -> Self {
        Self {
            actor: actor.to_owned(),
            policy: None,
            providers: Vec::new(),
            cache_ttl: None,
            observer: None,
        }
    }

    /// Tells `observer` of the deployment's work (audit records, audit
    /// commits and blob operations, timed), for a program's metrics.
    #[must_use]
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Decides key releases (and writes, see [`super::Deployment::put`])
    /// with `policy` instead of the membership policy.
    #[must_use]
    pub fn policy(mut self, policy: Arc<dyn ReleasePolicy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Registers a root-key provider besides the configured tokens (a
    /// network KMS, a stand-in for a customer's key store). Customer-key
    /// tenants name its keys with [`super::TenantKeys::CustomerKeyAt`].
    #[must_use]
    pub fn provider(mut self, provider: Arc<dyn RootKeyProvider>) -> Self {
        self.providers.push(provider);
        self
    }

    /// How long unwrapped TIKs stay cached (the bound on how long a
    /// revocation at a customer's key store takes to stop user requests).
    #[must_use]
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = Some(ttl);
        self
    }

    /// How long an authenticated tenant name is remembered
    /// ([`super::names`]): as long as the key hierarchy takes to follow
    /// the key store's change log, and never longer than TIKs stay cached
    /// (not at all if they are not).
    pub(super) fn name_lifetime(&self) -> Duration {
        self.cache_ttl
            .unwrap_or(atrest::tenant::DEFAULT_CACHE_TTL)
            .min(atrest::tenant::DEFAULT_CHANGE_POLL)
    }

    /// The program's name in audit records.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    pub(super) fn custom_policy(&self) -> Option<Arc<dyn ReleasePolicy>> {
        self.policy.clone()
    }

    pub(super) fn has_provider(&self, name: &str) -> bool {
        self.providers.iter().any(|p| p.name() == name)
    }
}

/// The parts of an opened deployment the files API is built from.
pub(super) struct Parts<'a> {
    pub(super) config: &'a Config,
    pub(super) options: &'a Options,
    pub(super) service: &'a Arc<ServiceKeys>,
    pub(super) store: &'a Arc<dyn MetadataStore>,
    pub(super) tenant_keys: &'a Arc<TenantKeyDir>,
    pub(super) catalog: &'a Arc<dyn Catalog>,
    pub(super) blobs: &'a Arc<dyn atrest::Blobs>,
    pub(super) log: &'a Arc<AuditLog>,
    pub(super) fallbacks: &'a FallbackWatch,
}

impl Parts<'_> {
    /// Builds the key hierarchy of a deployment and the files API over it:
    /// the service's root and availability keys, every configured token,
    /// the program's providers, and `policy`; the catalog and the blobs.
    pub(super) async fn files(
        &self,
        policy: Arc<dyn ReleasePolicy>,
    ) -> Result<(Files, Administration), Error> {
        let options = self.options;
        // Every record goes to the log; fallbacks are also kept to show the
        // operator.
        let mut auditor = Auditor::new(self.log.clone())
            .with_sink(Box::new(self.fallbacks.clone()), SinkPolicy::BestEffort);
        let mut blobs = self.blobs.clone();
        let audit: Arc<dyn Audit> = match &options.observer {
            None => Arc::new(auditor),
            Some(observer) => {
                // What is counted is what the log made durable.
                auditor = auditor.with_sink(
                    Box::new(AuditedSink(observer.clone())),
                    SinkPolicy::BestEffort,
                );
                blobs = Arc::new(TimedBlobs {
                    inner: blobs,
                    observer: observer.clone(),
                });
                Arc::new(TimedAudit {
                    inner: Arc::new(auditor),
                    observer: observer.clone(),
                })
            }
        };
        let mut builder =
            KeyHierarchy::builder(self.store.clone(), self.tenant_keys.clone(), audit.clone())
                .provider(self.service.clone())
                .service_root_key(SERVICE_PROVIDER, ROOT_KEY)
                .availability_key(SERVICE_PROVIDER, AVAILABILITY_KEY)
                .policy(policy)
                .actor(&options.actor);
        for token in &self.config.tokens {
            let (provider, problem) = open_token(token).await;
            if let Some(problem) = problem {
                self.fallbacks.token_problem(&token.name, problem);
            }
            builder = builder.provider(provider);
        }
        let transit = self.config.kms.iter().map(|kms| {
            let made = transit_keys(kms).map(|keys| Arc::new(keys) as Arc<dyn RootKeyProvider>);
            (&kms.name, made)
        });
        let aws = self.config.aws_kms.iter().map(|kms| {
            let made = aws_kms_keys(kms).map(|keys| Arc::new(keys) as Arc<dyn RootKeyProvider>);
            (&kms.name, made)
        });
        for (name, made) in transit.chain(aws) {
            let (provider, problem) = open_kms(name, made);
            if let Some(problem) = problem {
                self.fallbacks.token_problem(name, problem);
            }
            builder = builder.provider(provider);
        }
        for provider in &options.providers {
            builder = builder.provider(provider.clone());
        }
        if let Some(ttl) = options.cache_ttl {
            builder = builder.cache_ttl(ttl);
        }
        let (hierarchy, administration) = builder.build_with_administration()?;
        let files = Files::new(Arc::new(hierarchy), self.catalog.clone(), blobs, audit)
            .with_options(atrest::SealOptions {
                // Digests let replicas be checked and repaired without a key;
                // with one location they would only slow every upload down.
                blob_digests: !self.config.replicas.is_empty(),
                ..atrest::SealOptions::default()
            })
            .with_actor(&options.actor);
        Ok((files, administration))
    }
}

/// A configured token, opened with the PIN from its environment variable.
/// One that cannot be opened is a provider that answers every call with
/// why: a refusal (a PIN variable not set, a PIN the token refuses, no
/// token with that label, a module that does not load) refuses for good,
/// and is never tried again (a wrong PIN tried over and over would lock
/// the token); a device that fails is unavailable, and opened again on a
/// later call.
async fn open_token(token: &TokenConfig) -> (Arc<dyn RootKeyProvider>, Option<String>) {
    let provider = TokenProvider {
        config: token.clone(),
        state: Mutex::new(TokenState::Failed {
            error: ProviderError::Unavailable {
                key: token_ref(token),
                detail: "not opened yet".into(),
            },
            at: None,
        }),
    };
    let problem = provider.open().await.err().map(|error| error.to_string());
    (Arc::new(provider), problem)
}

/// How often a token whose device failed is opened again, at most.
const REOPEN_INTERVAL: Duration = Duration::from_secs(5);

/// The reference errors about a token as a whole name (its name was
/// checked when it was configured; a label of its own otherwise).
fn token_ref(token: &TokenConfig) -> RootKeyRef {
    RootKeyRef::new(token.name.clone(), format!("token {}", token.token), 1)
        .or_else(|_| RootKeyRef::new(token.name.clone(), "token", 1))
        .or_else(|_| RootKeyRef::new("pkcs11", "token", 1))
        .unwrap_or_else(|_| unreachable!("a fixed, valid reference"))
}

/// A configured PKCS#11 token (see [`open_token`]).
struct TokenProvider {
    config: TokenConfig,
    state: Mutex<TokenState>,
}

enum TokenState {
    Open(Arc<Pkcs11Keys>),
    /// Why it could not be opened, and when that was last tried (`None`:
    /// never).
    Failed {
        error: ProviderError,
        at: Option<Instant>,
    },
}

impl TokenProvider {
    fn state(&self) -> std::sync::MutexGuard<'_, TokenState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens the token now; remembers the outcome.
    async fn open(&self) -> Result<Arc<Pkcs11Keys>, ProviderError> {
        let token = &self.config;
        let opened = match std::env::var(&token.pin_env) {
            Ok(pin) => {
                let pin = zeroize::Zeroizing::new(pin);
                Pkcs11Keys::open(&token.name, &token.module, &token.token, &pin).await
            }
            // No PIN where the configuration says: a refusal.
            Err(_) => Err(ProviderError::AccessDenied {
                key: token_ref(token),
                detail: format!("the PIN variable {} is not set", token.pin_env),
            }),
        };
        let mut state = self.state();
        match opened {
            Ok(keys) => {
                let keys = Arc::new(keys);
                *state = TokenState::Open(Arc::clone(&keys));
                Ok(keys)
            }
            Err(error) => {
                *state = TokenState::Failed {
                    error: error.clone(),
                    at: Some(Instant::now()),
                };
                Err(error)
            }
        }
    }

    /// The open token; opened again if its device failed long enough ago.
    async fn keys(&self, key: &RootKeyRef) -> Result<Arc<Pkcs11Keys>, ProviderError> {
        if let TokenState::Open(keys) = &*self.state() {
            return Ok(Arc::clone(keys));
        }
        if let TokenState::Failed { error, at } = &*self.state() {
            let due = at.is_none_or(|at| at.elapsed() >= REOPEN_INTERVAL);
            if !error.is_unavailable() || !due {
                return Err(about(error, key));
            }
        }
        self.open().await.map_err(|error| about(&error, key))
    }
}

/// `error` about the token as a whole, told about `key`.
fn about(error: &ProviderError, key: &RootKeyRef) -> ProviderError {
    match error {
        ProviderError::Unavailable { detail, .. } => ProviderError::Unavailable {
            key: key.clone(),
            detail: detail.clone(),
        },
        ProviderError::AccessDenied { detail, .. } => ProviderError::AccessDenied {
            key: key.clone(),
            detail: detail.clone(),
        },
        other => other.clone(),
    }
}

#[async_trait::async_trait]
impl RootKeyProvider for TokenProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn current_version(&self, label: &str) -> Result<u32, ProviderError> {
        let key = RootKeyRef::new(self.config.name.clone(), label, 1)?;
        self.keys(&key).await?.current_version(label).await
    }

    async fn wrap(
        &self,
        key: &RootKeyRef,
        material: &KeyMaterial,
        binding: &TikBinding,
    ) -> Result<Vec<u8>, ProviderError> {
        self.keys(key).await?.wrap(key, material, binding).await
    }

    async fn unwrap(
        &self,
        key: &RootKeyRef,
        wrapped: &[u8],
        binding: &TikBinding,
    ) -> Result<KeyMaterial, ProviderError> {
        self.keys(key).await?.unwrap(key, wrapped, binding).await
    }
}

/// A configured key service; one that cannot be set up (no token, a bad
/// address) is a provider that refuses (see [`Unopened`]).
pub(super) fn open_kms(
    name: &str,
    made: Result<Arc<dyn RootKeyProvider>, ProviderError>,
) -> (Arc<dyn RootKeyProvider>, Option<String>) {
    match made {
        Ok(keys) => (keys, None),
        Err(error) => {
            let detail = error.to_string();
            (
                Arc::new(Unopened {
                    name: name.to_owned(),
                    detail: detail.clone(),
                }),
                Some(detail),
            )
        }
    }
}

/// The PEM text of a configured CA file.
fn read_ca_file(provider: &str, ca_file: &Path) -> Result<Vec<u8>, ProviderError> {
    std::fs::read(ca_file).map_err(|error| ProviderError::Misconfigured {
        provider: provider.to_owned(),
        detail: format!("cannot read the CA file {}: {error}", ca_file.display()),
    })
}

/// The transit provider of a configured key service.
pub(super) fn transit_keys(kms: &KmsConfig) -> Result<TransitKeys, ProviderError> {
    let credentials = match (&kms.token_env, &kms.token_file) {
        (Some(var), None) => Credentials::FromEnv(var.clone()),
        (None, Some(file)) => Credentials::FromFile(file.clone()),
        _ => {
            return Err(ProviderError::Misconfigured {
                provider: kms.name.clone(),
                detail: "give exactly one of a token variable and a token file".into(),
            });
        }
    };
    let mut builder = TransitKeys::builder(&kms.name, &kms.address, &kms.mount, credentials);
    if let Some(ca_file) = &kms.ca_file {
        builder = builder.ca_certificate_pem(&read_ca_file(&kms.name, ca_file)?);
    }
    if let Some(timeout) = kms.timeout_ms.map(Duration::from_millis) {
        builder = builder
            .timeout(timeout)
            .connect_timeout(timeout.min(atrest_openbao::DEFAULT_CONNECT_TIMEOUT));
    }
    builder.build()
}

/// The provider of configured AWS KMS keys.
pub(super) fn aws_kms_keys(kms: &AwsKmsConfig) -> Result<AwsKmsKeys, ProviderError> {
    let credentials = match &kms.credentials_file {
        Some(file) => AwsCredentials::FromFile(file.clone()),
        None => AwsCredentials::FromEnv,
    };
    let mut builder = AwsKmsKeys::builder(&kms.name, credentials);
    if let Some(endpoint) = &kms.endpoint {
        builder = builder.endpoint(endpoint);
    }
    if let Some(ca_file) = &kms.ca_file {
        builder = builder.ca_certificate_pem(&read_ca_file(&kms.name, ca_file)?);
    }
    if let Some(timeout) = kms.timeout_ms.map(Duration::from_millis) {
        builder = builder
            .timeout(timeout)
            .connect_timeout(timeout.min(atrest_awskms::DEFAULT_CONNECT_TIMEOUT));
    }
    builder.build()
}

/// A use of the availability key because customer keys were unavailable,
/// as the operator is shown it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Fallback {
    /// The customer keys that were unavailable (`provider:label`), each
    /// with why, where known.
    pub customer_keys: Vec<String>,
    /// What needed the tenant's key.
    pub operation: String,
    /// Whether the availability key then served.
    pub succeeded: bool,
}

/// Keeps the fallbacks the key hierarchy audits, and why tokens could not be
/// opened, for the program to show. Clones share what they keep.
#[derive(Clone, Debug, Default)]
pub(crate) struct FallbackWatch {
    seen: Arc<Mutex<Vec<Fallback>>>,
    token_problems: Arc<Mutex<Vec<(String, String)>>>,
}

impl FallbackWatch {
    fn token_problem(&self, provider: &str, problem: String) {
        self.token_problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((provider.to_owned(), problem));
    }

    /// The fallbacks seen so far.
    pub(crate) fn seen(&self) -> Vec<Fallback> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Sink for FallbackWatch {
    fn name(&self) -> &str {
        "fallback-watch"
    }

    fn deliver(&self, _: &Receipt, record: &Record) -> Result<(), SinkError> {
        let Event::AvailabilityKeyFallback {
            root_keys,
            operation,
        } = &record.event
        else {
            return Ok(());
        };
        let problems = self
            .token_problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let customer_keys = root_keys
            .iter()
            .map(|key| {
                let name = key.key.as_str();
                let why = problems
                    .iter()
                    .find(|(provider, _)| name.starts_with(&format!("{provider}:")))
                    .map(|(_, problem)| format!(" ({problem})"))
                    .unwrap_or_default();
                format!("{name}{why}")
            })
            .collect();
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Fallback {
                customer_keys,
                operation: operation.to_string(),
                succeeded: record.outcome == Outcome::Success,
            });
        Ok(())
    }
}

/// A key service that could not be set up (no token, a token file others
/// can read, a bad address): it refuses every call, since nothing was asked
/// of it and a customer's revocation there must not be bypassed.
struct Unopened {
    name: String,
    detail: String,
}

impl Unopened {
    fn error(&self, _: &RootKeyRef) -> ProviderError {
        ProviderError::Misconfigured {
            provider: self.name.clone(),
            detail: self.detail.clone(),
        }
    }
}

#[async_trait::async_trait]
impl RootKeyProvider for Unopened {
    fn name(&self) -> &str {
        &self.name
    }

    async fn wrap(
        &self,
        key: &RootKeyRef,
        _: &KeyMaterial,
        _: &TikBinding,
    ) -> Result<Vec<u8>, ProviderError> {
        Err(self.error(key))
    }

    async fn unwrap(
        &self,
        key: &RootKeyRef,
        _: &[u8],
        _: &TikBinding,
    ) -> Result<KeyMaterial, ProviderError> {
        Err(self.error(key))
    }
}
