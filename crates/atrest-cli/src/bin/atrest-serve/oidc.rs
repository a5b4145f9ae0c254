//! Sign-in through an OpenID Connect provider: JWT access tokens checked
//! against the keys the provider publishes, its claims mapped to a tenant
//! id and a principal by configuration — the identity system decides the
//! tenant.
//!
//! The provider's discovery document (`ISSUER/.well-known/openid-configuration`)
//! names its JWKS; the keys are fetched at start, cached, fetched again
//! when a token names a key not among them (at most once per
//! [`REFRESH_INTERVAL`], so that tokens with made-up key ids cannot make
//! the service hammer the provider) and when they are older than
//! [`KEYS_MAX_AGE`]. The provider is reached over HTTPS (or plain HTTP on
//! a loopback address only), without following redirects, trusting the
//! system's roots or only the CA file given.
//!
//! What a token must hold is in [`token`].

pub(crate) mod token;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use tokio::sync::{Mutex, RwLock};

use self::token::{Identity, Keys, Rejected, Rules};

/// The shortest time between two fetches of the provider's keys.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Keys older than this are fetched again at the next token.
pub(crate) const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);

/// How long a token naming an unknown key waits for another request's
/// fetch of the keys before it is judged with the keys there are.
const FETCH_WAIT: Duration = Duration::from_secs(2);

/// The largest discovery or JWKS document read.
const MAX_DOCUMENT: usize = 1 << 20;

/// How the service reaches and trusts its OpenID provider.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// The issuer, exactly as the provider's tokens and discovery document
    /// name it.
    pub(crate) issuer: String,
    /// The audience tokens must be for (this service).
    pub(crate) audience: String,
    /// The claim holding the tenant id.
    pub(crate) tenant_claim: String,
    /// The claim naming the caller.
    pub(crate) subject_claim: String,
    /// The signature algorithms accepted.
    pub(crate) algorithms: Vec<Algorithm>,
    /// The clock difference tolerated on `exp` and `nbf`.
    pub(crate) leeway: Duration,
    /// A CA certificate file (PEM) to trust for the provider instead of
    /// the system's roots.
    pub(crate) ca: Option<PathBuf>,
}

/// Why the provider cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProviderError {
    /// The settings cannot work (an issuer that is not HTTPS, a CA file
    /// that does not parse, a discovery document naming another issuer).
    #[error("OpenID provider: {0}")]
    Settings(String),
    /// The provider cannot be reached or answered with an error.
    #[error("OpenID provider {url}: {why}")]
    Unreachable {
        /// What was fetched.
        url: String,
        /// What went wrong.
        why: String,
    },
}

/// Why a bearer token that looks like a JWT was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignInError {
    /// The token is not valid: `401`.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// The provider's keys cannot be had: `503`.
    #[error(transparent)]
    Unavailable(#[from] ProviderError),
}

/// The OpenID provider, its keys cached.
#[derive(Debug)]
pub(crate) struct Provider {
    rules: Rules,
    client: reqwest::Client,
    cached: RwLock<Arc<Cached>>,
    /// Held while keys are fetched: when they were last tried, and the
    /// JWKS address once discovery succeeded.
    fetching: Mutex<Fetching>,
}

/// The keys and when they were fetched.
#[derive(Debug, Default)]
struct Cached {
    keys: Keys,
    fetched: Option<Instant>,
}

#[derive(Debug, Default)]
struct Fetching {
    jwks_uri: Option<String>,
    tried: Option<Instant>,
}

impl Provider {
    /// The provider of `settings`; its discovery document and keys are
    /// fetched at once. A provider that cannot be reached now is no
    /// error (it is tried again at the first token); settings that cannot
    /// work are.
    ///
    /// # Errors
    /// [`ProviderError::Settings`].
    pub(crate) async fn connect(settings: &Settings) -> Result<Self, ProviderError> {
        check_address(&settings.issuer)?;
        if settings.algorithms.is_empty() {
            return Err(ProviderError::Settings(
                "no signature algorithm is accepted".to_owned(),
            ));
        }
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        if let Some(ca) = &settings.ca {
            let pem = std::fs::read(ca).map_err(|error| {
                ProviderError::Settings(format!("the CA file {}: {error}", ca.display()))
            })?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
                ProviderError::Settings(format!("the CA file {}: {error}", ca.display()))
            })?;
            if roots.is_empty() {
                return Err(ProviderError::Settings(format!(
                    "the CA file {} holds no certificate",
                    ca.display()
                )));
            }
            client = client.tls_certs_only(roots);
        }
        let client = client
            .build()
            .map_err(|error| ProviderError::Settings(format!("the HTTP client: {error}")))?;
        let provider = Self {
            rules: Rules {
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                algorithms: settings.algorithms.clone(),
                leeway: settings.leeway.as_secs(),
                tenant_claim: settings.tenant_claim.clone(),
                subject_claim: settings.subject_claim.clone(),
            },
            client,
            cached: RwLock::new(Arc::new(Cached::default())),
            fetching: Mutex::new(Fetching::default()),
        };
        let refreshed = provider.refresh(&mut *provider.fetching.lock().await).await;
        match refreshed {
            Ok(_) => Ok(provider),
            Err(error @ ProviderError::Unreachable { .. }) => {
                tracing::warn!("{error}; tried again at the first token");
                Ok(provider)
            }
            Err(error) => Err(error),
        }
    }

    /// How many signing keys are cached.
    pub(crate) async fn key_count(&self) -> usize {
        self.cached.read().await.keys.len()
    }

    /// Who `token` stands for.
    ///
    /// # Errors
    /// [`SignInError::Rejected`] for a token that is not valid;
    /// [`SignInError::Unavailable`] while no key of the provider could be
    /// fetched.
    pub(crate) async fn identity(&self, token: &str) -> Result<Identity, SignInError> {
        let header = token::header(token, &self.rules)?;
        let mut cached = self.cached.read().await.clone();
        if !cached.keys.knows(header.kid.as_deref()) {
            // A key not seen yet: this request waits for the fetch, but not
            // for long behind another's (tokens with made-up key ids must not
            // hold their connections for a slow provider's whole timeout).
            if let Ok(mut fetching) = tokio::time::timeout(FETCH_WAIT, self.fetching.lock()).await {
                if let Err(error) = self.refresh(&mut fetching).await {
                    tracing::warn!("{error}");
                }
                drop(fetching);
            }
            cached = self.cached.read().await.clone();
            if cached.keys.is_empty() {
                return Err(SignInError::Unavailable(ProviderError::Unreachable {
                    url: self.rules.issuer.clone(),
                    why: "no signing key could be fetched yet".to_owned(),
                }));
            }
        } else if cached.fetched.is_none_or(|at| at.elapsed() >= KEYS_MAX_AGE) {
            // Known but old keys: fetched again by one request; the others
            // go on with the keys they have rather than wait for it.
            if let Ok(mut fetching) = self.fetching.try_lock() {
                if let Err(error) = self.refresh(&mut fetching).await {
                    tracing::warn!("{error}");
                }
                drop(fetching);
                cached = self.cached.read().await.clone();
            }
        }
        Ok(token::verify(token, &header, &cached.keys, &self.rules)?)
    }

    /// Fetches the discovery document (once) and the keys, unless they
    /// were tried less than [`REFRESH_INTERVAL`] ago (then `Ok(false)`),
    /// with `fetching` held. Keys that cannot be fetched leave the cached
    /// ones in place.
    async fn refresh(&self, fetching: &mut Fetching) -> Result<bool, ProviderError> {
        if fetching
            .tried
            .is_some_and(|at| at.elapsed() < REFRESH_INTERVAL)
        {
            return Ok(false);
        }
        fetching.tried = Some(Instant::now());
        let jwks_uri = match &fetching.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.discover().await?;
                fetching.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let document = self.fetch(&jwks_uri).await?;
        let keys = Keys::from_jwks(&document, &self.rules.algorithms).map_err(|error| {
            ProviderError::Unreachable {
                url: jwks_uri.clone(),
                why: error.to_string(),
            }
        })?;
        *self.cached.write().await = Arc::new(Cached {
            keys,
            fetched: Some(Instant::now()),
        });
        Ok(true)
    }

    /// The JWKS address from the discovery document, which must name the
    /// configured issuer.
    async fn discover(&self) -> Result<String, ProviderError> {
        let issuer = self.rules.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let document = self.fetch(&url).await?;
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let discovery: Discovery =
            serde_json::from_slice(&document).map_err(|error| ProviderError::Unreachable {
                url: url.clone(),
                why: format!("not a discovery document: {error}"),
            })?;
        if discovery.issuer != self.rules.issuer {
            return Err(ProviderError::Settings(format!(
                "the discovery document at {url} names issuer {:?}, not {:?}",
                discovery.issuer, self.rules.issuer
            )));
        }
        check_address(&discovery.jwks_uri)?;
        Ok(discovery.jwks_uri)
    }

    /// GETs `url`: a 200 answer of at most [`MAX_DOCUMENT`] bytes.
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, ProviderError> {
        let unreachable = |why: String| ProviderError::Unreachable {
            url: url.to_owned(),
            why,
        };
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(unreachable(format!("answered {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| unreachable(error.to_string()))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(unreachable(format!(
                    "a document longer than {MAX_DOCUMENT} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Refuses an address that is not HTTPS, but for plain HTTP to a loopback
/// address (a provider on the same machine).
fn check_address(address: &str) -> Result<(), ProviderError> {
    let url = url::Url::parse(address)
        .map_err(|error| ProviderError::Settings(format!("{address:?}: {error}")))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(ProviderError::Settings(format!(
            "{address:?} is not an https address (plain http only on loopback)"
        ))),
    }
}

/// A list of accepted signature algorithms.
#[derive(Clone, Debug)]
pub(crate) struct Algorithms(pub(crate) Vec<Algorithm>);

impl Algorithms {
    /// Parses a list such as `RS256,ES256,EdDSA` (asymmetric algorithms
    /// only).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| {
                token::ASYMMETRIC
                    .into_iter()
                    .find(|alg| format!("{alg:?}") == name)
                    .ok_or_else(|| {
                        format!(
                            "{name:?} is not an accepted signature algorithm \
                             (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

/// Sign-in through an OpenID Connect provider (besides the token file).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Accept the JWT access tokens of this OpenID provider (its issuer
    /// URL: HTTPS, or plain HTTP on loopback).
    #[arg(long, value_name = "URL", requires = "oidc_audience")]
    oidc_issuer: Option<String>,
    /// The audience (`aud`) the tokens must be for: this service.
    #[arg(long, value_name = "AUD", requires = "oidc_issuer")]
    oidc_audience: Option<String>,
    /// The claim holding the caller's tenant id.
    #[arg(long, value_name = "CLAIM", default_value = "tenant_id")]
    oidc_tenant_claim: String,
    /// The claim naming the caller within the tenant (the user of the
    /// principal `user@tenant`).
    #[arg(long, value_name = "CLAIM", default_value = "sub")]
    oidc_subject_claim: String,
    /// The signature algorithms accepted (asymmetric only).
    #[arg(long, value_name = "LIST", default_value = "RS256,PS256,ES256,EdDSA", value_parser = Algorithms::parse)]
    oidc_algorithms: Algorithms,
    /// The clock difference tolerated on a token's `exp` and `nbf`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "60s")]
    oidc_leeway: Duration,
    /// Trust only this CA certificate (PEM) for the provider's HTTPS,
    /// instead of the system's roots.
    #[arg(long, value_name = "PEM")]
    oidc_ca: Option<PathBuf>,
}

impl Args {
    /// The settings, if an issuer was given.
    pub(crate) fn settings(self) -> Option<Settings> {
        Some(Settings {
            issuer: self.oidc_issuer?,
            audience: self.oidc_audience?,
            tenant_claim: self.oidc_tenant_claim,
            subject_claim: self.oidc_subject_claim,
            algorithms: self.oidc_algorithms.0,
            leeway: self.oidc_leeway,
            ca: self.oidc_ca,
        })
    }
}
