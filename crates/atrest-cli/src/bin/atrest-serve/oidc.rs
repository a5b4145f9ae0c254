//! Sign-in through an OpenID Connect provider: JWT access tokens checked
//! against the keys the provider publishes, its claims mapped to a tenant
//! id and a principal by configuration — the identity system decides the
//! tenant.
//!
//! The provider's discovery document (`ISSUER/.well-known/openid-configuration`)
//! names its JWKS; the keys are fetched at start, cached, and fetched
//! again ([`KeyLifetimes`]) when a token names a key not among them (at
//! most once per [`KeyLifetimes::min_fetch_interval`], so that tokens with
//! made-up key ids cannot make the service hammer the provider) and when
//! they are older than [`KeyLifetimes::refresh_after`], so that a key the
//! provider withdraws stops counting soon. Keys that could not be fetched
//! again for [`KeyLifetimes::trusted_for`] are not used at all: the
//! provider's tokens are answered `503` until it answers again (an attacker
//! who can cut the service off from the provider cannot keep a withdrawn key
//! in use). The provider is reached over HTTPS (or plain HTTP on a loopback
//! address only), without following redirects, trusting the system's roots
//! or only the CA file given.
//!
//! What a token must hold is in [`token`].

pub(crate) mod token;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use tokio::sync::{Mutex, RwLock};

use self::token::{Identity, Keys, Rejected, Rules};

/// How long the provider's keys are used before they are fetched again,
/// and how long without a successful fetch they are trusted at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyLifetimes {
    /// The shortest time between two fetches of the keys.
    pub(crate) min_fetch_interval: Duration,
    /// Keys fetched longer ago than this are fetched again at the next
    /// token (by that request; the others go on with the keys there are).
    /// A key the provider withdraws is refused from then on.
    pub(crate) refresh_after: Duration,
    /// Keys last fetched longer ago than this are not used: tokens are
    /// answered `503` until a fetch succeeds.
    pub(crate) trusted_for: Duration,
}

impl Default for KeyLifetimes {
    fn default() -> Self {
        Self {
            min_fetch_interval: Duration::from_secs(30),
            refresh_after: Duration::from_secs(5 * 60),
            trusted_for: Duration::from_secs(60 * 60),
        }
    }
}

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
    /// When the provider's keys are fetched again.
    pub(crate) key_lifetimes: KeyLifetimes,
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
    lifetimes: KeyLifetimes,
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
            lifetimes: settings.key_lifetimes,
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
    /// fetched, or none for [`KeyLifetimes::trusted_for`].
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
        } else if cached
            .fetched
            .is_none_or(|at| at.elapsed() >= self.lifetimes.refresh_after)
        {
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
        if cached
            .fetched
            .is_none_or(|at| at.elapsed() >= self.lifetimes.trusted_for)
        {
            // Whether a key is still published cannot be told: a withdrawn
            // key must not go on counting because the provider is cut off.
            return Err(SignInError::Unavailable(ProviderError::Unreachable {
                url: self.rules.issuer.clone(),
                why: format!(
                    "its keys could not be fetched for {}",
                    humantime::format_duration(self.lifetimes.trusted_for)
                ),
            }));
        }
        Ok(token::verify(token, &header, &cached.keys, &self.rules)?)
    }

    /// Fetches the discovery document (once) and the keys, unless they
    /// were tried less than [`KeyLifetimes::min_fetch_interval`] ago (then
    /// `Ok(false)`),
    /// with `fetching` held. Keys that cannot be fetched leave the cached
    /// ones in place.
    async fn refresh(&self, fetching: &mut Fetching) -> Result<bool, ProviderError> {
        if fetching
            .tried
            .is_some_and(|at| at.elapsed() < self.lifetimes.min_fetch_interval)
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
            key_lifetimes: KeyLifetimes::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    //! The key cache against a provider on loopback whose published keys
    //! and answers the test changes (the real provider's keys cannot be
    //! changed while it runs; `tests/service_oidc.rs` runs against it).

    use std::sync::Mutex as StdMutex;

    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::get;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;

    /// What the provider's JWKS address answers: a document, or an error.
    type Published = Arc<StdMutex<Result<String, StatusCode>>>;

    struct Signer {
        kid: &'static str,
        pkcs8: Vec<u8>,
        public: Vec<u8>,
    }

    impl Signer {
        fn new(kid: &'static str) -> Self {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            let public = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .unwrap()
                .public_key()
                .as_ref()
                .to_vec();
            Self {
                kid,
                pkcs8: pkcs8.as_ref().to_vec(),
                public,
            }
        }

        fn jwk(&self) -> String {
            format!(
                r#"{{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","kid":"{}","x":"{}"}}"#,
                self.kid,
                URL_SAFE_NO_PAD.encode(&self.public)
            )
        }

        fn token(&self, issuer: &str) -> String {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(self.kid.to_owned());
            let exp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 600;
            let claims = serde_json::json!({
                "iss": issuer,
                "aud": "files",
                "exp": exp,
                "sub": "app",
                "tenant_id": atrest::filekey::TenantId::from_bytes([7; 16]).unwrap().to_string(),
            });
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
        }
    }

    fn jwks(signers: &[&Signer]) -> String {
        let keys: Vec<String> = signers.iter().map(|signer| signer.jwk()).collect();
        format!(r#"{{"keys":[{}]}}"#, keys.join(","))
    }

    /// A provider on loopback publishing what `published` holds; its issuer.
    async fn provider(published: Published) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let discovery = serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { discovery.to_string() }),
            )
            .route(
                "/jwks",
                get(|State(published): State<Published>| async move {
                    published.lock().unwrap().clone()
                }),
            )
            .with_state(published);
        tokio::spawn(async move { axum::serve(listener, app).await });
        issuer
    }

    fn settings(issuer: &str, key_lifetimes: KeyLifetimes) -> Settings {
        Settings {
            issuer: issuer.to_owned(),
            audience: "files".to_owned(),
            tenant_claim: "tenant_id".to_owned(),
            subject_claim: "sub".to_owned(),
            algorithms: vec![Algorithm::EdDSA],
            leeway: Duration::from_secs(5),
            ca: None,
            key_lifetimes,
        }
    }

    #[tokio::test]
    async fn a_withdrawn_key_stops_counting_and_unconfirmed_keys_are_not_trusted() {
        let (old, new) = (Signer::new("old"), Signer::new("new"));
        let published: Published = Arc::new(StdMutex::new(Ok(jwks(&[&old, &new]))));
        let issuer = provider(published.clone()).await;
        let lifetimes = KeyLifetimes {
            min_fetch_interval: Duration::from_millis(100),
            refresh_after: Duration::from_millis(300),
            trusted_for: Duration::from_secs(3),
        };
        let provider = Provider::connect(&settings(&issuer, lifetimes))
            .await
            .unwrap();
        let (old_token, new_token) = (old.token(&issuer), new.token(&issuer));
        assert_eq!(provider.identity(&old_token).await.unwrap().subject, "app");

        // The provider withdraws a key: once the keys are older than
        // `refresh_after`, a token signed with it is refused.
        *published.lock().unwrap() = Ok(jwks(&[&new]));
        tokio::time::sleep(lifetimes.refresh_after + Duration::from_millis(100)).await;
        match provider.identity(&old_token).await {
            Err(SignInError::Rejected(_)) => {}
            other => panic!("a withdrawn key still counts: {other:?}"),
        }
        assert!(provider.identity(&new_token).await.is_ok());

        // The provider cannot be reached: the keys it last published go on
        // counting for a while (a failed fetch is no outage)…
        *published.lock().unwrap() = Err(StatusCode::INTERNAL_SERVER_ERROR);
        tokio::time::sleep(lifetimes.refresh_after + Duration::from_millis(100)).await;
        assert!(provider.identity(&new_token).await.is_ok());
        // …but not beyond `trusted_for` since they were last fetched.
        tokio::time::sleep(lifetimes.trusted_for).await;
        match provider.identity(&new_token).await {
            Err(SignInError::Unavailable(why)) => {
                assert!(why.to_string().contains("could not be fetched"), "{why}");
            }
            other => panic!("keys not confirmed for long still count: {other:?}"),
        }

        // Once the provider answers again, so does the service.
        *published.lock().unwrap() = Ok(jwks(&[&new]));
        tokio::time::sleep(lifetimes.min_fetch_interval).await;
        assert!(provider.identity(&new_token).await.is_ok());
        assert!(matches!(
            provider.identity(&old_token).await,
            Err(SignInError::Rejected(_))
        ));
    }

    #[test]
    fn keys_are_fetched_again_within_minutes_and_trusted_unconfirmed_for_an_hour_at_most() {
        let lifetimes = KeyLifetimes::default();
        assert!(lifetimes.refresh_after <= Duration::from_secs(5 * 60));
        assert!(lifetimes.min_fetch_interval < lifetimes.refresh_after);
        assert!(lifetimes.refresh_after < lifetimes.trusted_for);
        assert!(lifetimes.trusted_for <= Duration::from_secs(60 * 60));
    }
}
