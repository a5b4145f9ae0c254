//! The key hierarchy and files API of a deployment: built in one place,
//! from the deployment's parts and the program's [`Options`].

use std::sync::Arc;
use std::time::Duration;

use atrest::audit::AuditLog;
use atrest::blobs::BlobStore;
use atrest::tenant::{
    KeyHierarchy, KeyMaterial, Pkcs11Keys, ProviderError, ReleasePolicy, RootKeyProvider,
    RootKeyRef, ServiceKeys, SqliteStore,
};
use atrest::{Files, SqliteCatalog};

use super::config::{Config, TokenConfig};
use super::error::Error;
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
        }
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
    pub(super) store: &'a Arc<SqliteStore>,
    pub(super) catalog: &'a Arc<SqliteCatalog>,
    pub(super) blobs: &'a Arc<BlobStore>,
    pub(super) log: &'a Arc<AuditLog>,
}

impl Parts<'_> {
    /// Builds the key hierarchy of a deployment and the files API over it:
    /// the service's root and availability keys, every configured token,
    /// the program's providers, and `policy`; the catalog and the blobs.
    pub(super) fn files(&self, policy: Arc<dyn ReleasePolicy>) -> Result<Files, Error> {
        let options = self.options;
        let mut builder = KeyHierarchy::builder(self.store.clone(), self.log.clone())
            .provider(self.service.clone())
            .service_root_key(SERVICE_PROVIDER, ROOT_KEY)
            .availability_key(SERVICE_PROVIDER, AVAILABILITY_KEY)
            .policy(policy)
            .actor(&options.actor);
        for token in &self.config.tokens {
            builder = builder.provider(open_token(token));
        }
        for provider in &options.providers {
            builder = builder.provider(provider.clone());
        }
        if let Some(ttl) = options.cache_ttl {
            builder = builder.cache_ttl(ttl);
        }
        Ok(Files::new(
            Arc::new(builder.build()?),
            self.catalog.clone(),
            self.blobs.clone(),
            self.log.clone(),
        )
        .with_actor(&options.actor))
    }
}

/// A configured token, opened with the PIN from its environment variable;
/// one that cannot be opened is a provider that reports itself unavailable
/// (so the availability key can serve).
fn open_token(token: &TokenConfig) -> Arc<dyn RootKeyProvider> {
    let opened = std::env::var(&token.pin_env)
        .map_err(|_| format!("the PIN variable {} is not set", token.pin_env))
        .and_then(|pin| {
            Pkcs11Keys::open(&token.name, &token.module, &token.token, &pin)
                .map_err(|e| e.to_string())
        });
    match opened {
        Ok(keys) => Arc::new(keys),
        Err(detail) => Arc::new(Unopened {
            name: token.name.clone(),
            detail,
        }),
    }
}

/// A provider that could not be opened (for example a PIN variable that is
/// not set): every call reports it as unavailable.
struct Unopened {
    name: String,
    detail: String,
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
        _: &[u8],
    ) -> Result<Vec<u8>, ProviderError> {
        Err(ProviderError::Unavailable {
            key: key.clone(),
            detail: self.detail.clone(),
        })
    }

    async fn unwrap(
        &self,
        key: &RootKeyRef,
        _: &[u8],
        _: &[u8],
    ) -> Result<KeyMaterial, ProviderError> {
        Err(ProviderError::Unavailable {
            key: key.clone(),
            detail: self.detail.clone(),
        })
    }
}
