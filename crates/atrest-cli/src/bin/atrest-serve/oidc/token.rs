//! JWT access tokens checked against an OpenID provider's keys: pure
//! functions of the bytes a client and the provider send (no I/O), so
//! that the fuzz targets run them as the service does.
//!
//! A token is accepted only if all of these hold:
//! - it is a compact JWS whose header names an algorithm of the allow-list
//!   (asymmetric signatures only: never `none`, never an HMAC, whatever
//!   key it names), and no critical extension;
//! - its key is one of the provider's published signing keys (`kid`), of
//!   the family the algorithm needs, and of the algorithm the key itself
//!   names if it names one;
//! - the signature verifies;
//! - `iss` is the configured issuer, `aud` holds the configured audience,
//!   `exp` is in the future and `nbf` (if present) in the past, each within
//!   the configured leeway;
//! - the configured tenant claim is a tenant id, and the subject claim a
//!   non-empty name without `@` or control characters.

use std::collections::HashMap;

use atrest::filekey::TenantId;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};

/// The algorithms a token may be signed with: asymmetric ones only.
pub(crate) const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The longest token looked at (a bearer token is a header line).
pub(crate) const MAX_TOKEN: usize = 16 << 10;

/// What a token must say to be accepted.
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    /// The `iss` the provider's discovery document names.
    pub(crate) issuer: String,
    /// A value `aud` must hold: this service.
    pub(crate) audience: String,
    /// The algorithms accepted (a subset of [`ASYMMETRIC`]).
    pub(crate) algorithms: Vec<Algorithm>,
    /// Seconds of clock difference tolerated on `exp` and `nbf`.
    pub(crate) leeway: u64,
    /// The claim holding the tenant id.
    pub(crate) tenant_claim: String,
    /// The claim naming the caller within the tenant.
    pub(crate) subject_claim: String,
}

/// Who a valid token stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The subject claim.
    pub(crate) subject: String,
    /// The tenant the identity system placed the caller in.
    pub(crate) tenant: TenantId,
}

/// Why a token is refused (for the service's log; the client hears only
/// that its token is not valid).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Not a compact JWS, or a header that does not parse.
    #[error("not a well-formed JWT: {0}")]
    Malformed(String),
    /// The header names an algorithm outside the allow-list.
    #[error("algorithm {0} is not accepted")]
    Algorithm(String),
    /// No published key has the token's `kid`.
    #[error("signed with a key the provider does not publish ({0})")]
    UnknownKey(String),
    /// The signature, or the claims' time, issuer or audience, do not hold.
    #[error("{0}")]
    Invalid(String),
    /// A required claim is missing or not of the expected form.
    #[error("claim {claim:?}: {why}")]
    Claim {
        /// The claim's name.
        claim: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// The part of the header the key is chosen by.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The algorithm (one of the allow-list).
    pub(crate) algorithm: Algorithm,
    /// The key's id, if named.
    pub(crate) kid: Option<String>,
}

/// Reads a token's header, refusing algorithms outside `rules`.
///
/// # Errors
/// [`Rejected::Malformed`], [`Rejected::Algorithm`].
pub(crate) fn header(token: &str, rules: &Rules) -> Result<Header, Rejected> {
    if token.len() > MAX_TOKEN {
        return Err(Rejected::Malformed("longer than a token may be".to_owned()));
    }
    if token.split('.').count() != 3 {
        return Err(Rejected::Malformed(
            "not three base64url parts separated by dots".to_owned(),
        ));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|error| {
        // `none` and unknown algorithms fail to parse as an algorithm.
        if let jsonwebtoken::errors::ErrorKind::Json(_) = error.kind() {
            Rejected::Algorithm(format!("(unknown or absent: {error})"))
        } else {
            Rejected::Malformed(error.to_string())
        }
    })?;
    if !rules.algorithms.contains(&header.alg) {
        return Err(Rejected::Algorithm(format!("{:?}", header.alg)));
    }
    Ok(Header {
        algorithm: header.alg,
        kid: header.kid,
    })
}

/// One published signing key and the algorithms it may verify.
pub(crate) struct Key {
    decoding: DecodingKey,
    algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// A provider's signing keys, from its JWKS document.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    by_id: HashMap<String, Key>,
    /// Keys published without a `kid`, tried for tokens that name none.
    unnamed: Vec<Key>,
}

/// Why a JWKS document cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the provider's JWKS document {0}")]
pub(crate) struct JwksError(&'static str);

impl Keys {
    /// The signing keys of a JWKS document usable with `allowed`
    /// algorithms. Keys for encryption, symmetric keys, keys of unknown
    /// types and keys for algorithms not allowed are left out; two keys
    /// with one `kid` leave that id out (which one signed is unknowable).
    ///
    /// # Errors
    /// [`JwksError`] if the document is not a JSON object with a `keys`
    /// array.
    pub(crate) fn from_jwks(document: &[u8], allowed: &[Algorithm]) -> Result<Self, JwksError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(document)
            .map_err(|_| JwksError("is not a JSON object with a \"keys\" array"))?;
        let mut keys = Self::default();
        let mut ambiguous = Vec::new();
        for value in document.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            let Some(key) = Key::from_jwk(&jwk, allowed) else {
                continue;
            };
            match jwk.common.key_id {
                Some(id) => {
                    if keys.by_id.insert(id.clone(), key).is_some() {
                        ambiguous.push(id);
                    }
                }
                None => keys.unnamed.push(key),
            }
        }
        for id in ambiguous {
            keys.by_id.remove(&id);
        }
        Ok(keys)
    }

    /// Whether a key of this id is known (`None`: any key without an id).
    pub(crate) fn knows(&self, kid: Option<&str>) -> bool {
        match kid {
            Some(id) => self.by_id.contains_key(id),
            None => !self.unnamed.is_empty(),
        }
    }

    /// How many keys the document gave.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len() + self.unnamed.len()
    }

    /// Whether the document gave no usable key.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn candidates(&self, kid: Option<&str>) -> Vec<&Key> {
        match kid {
            Some(id) => self.by_id.get(id).into_iter().collect(),
            None => self.unnamed.iter().collect(),
        }
    }
}

impl Key {
    fn from_jwk(jwk: &Jwk, allowed: &[Algorithm]) -> Option<Self> {
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|usage| *usage != PublicKeyUse::Signature)
        {
            return None;
        }
        // What the key's type allows…
        let fits: fn(&Algorithm) -> bool = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => |alg| alg.family() == AlgorithmFamily::Rsa,
            AlgorithmParameters::EllipticCurve(params) => match params.curve {
                EllipticCurve::P256 => |alg| *alg == Algorithm::ES256,
                EllipticCurve::P384 => |alg| *alg == Algorithm::ES384,
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(params) => match params.curve {
                EllipticCurve::Ed25519 => |alg| *alg == Algorithm::EdDSA,
                _ => return None,
            },
            // Symmetric keys never verify anything here.
            _ => return None,
        };
        // …narrowed to the one the key names, and to the allow-list.
        let named = jwk.common.key_algorithm.map(key_algorithm);
        if named == Some(None) {
            return None;
        }
        let algorithms: Vec<Algorithm> = ASYMMETRIC
            .into_iter()
            .filter(fits)
            .filter(|alg| allowed.contains(alg))
            .filter(|alg| named.flatten().is_none_or(|named| named == *alg))
            .collect();
        if algorithms.is_empty() {
            return None;
        }
        let decoding = DecodingKey::from_jwk(jwk).ok()?;
        Some(Self {
            decoding,
            algorithms,
        })
    }
}

/// The signature algorithm a JWK's `alg` names (`None`: an encryption
/// algorithm or an HMAC, never accepted).
fn key_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Checks `token`, whose header [`header`] read, against the provider's
/// `keys` and `rules`.
///
/// # Errors
/// [`Rejected`], saying why.
pub(crate) fn verify(
    token: &str,
    header: &Header,
    keys: &Keys,
    rules: &Rules,
) -> Result<Identity, Rejected> {
    let candidates = keys.candidates(header.kid.as_deref());
    if candidates.is_empty() {
        return Err(Rejected::UnknownKey(
            header.kid.clone().unwrap_or_else(|| "no kid".to_owned()),
        ));
    }
    let mut last = Rejected::Invalid("no key verifies the signature".to_owned());
    for key in candidates {
        if !key.algorithms.contains(&header.algorithm) {
            last = Rejected::Algorithm(format!("{:?} for this key", header.algorithm));
            continue;
        }
        let mut validation = Validation::new(header.algorithm);
        validation.algorithms = vec![header.algorithm];
        validation.leeway = rules.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&rules.issuer]);
        validation.set_audience(&[&rules.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.decoding,
            &validation,
        ) {
            Ok(data) => return identity(&data.claims, rules),
            Err(error) => last = Rejected::Invalid(invalid(&error)),
        }
    }
    Err(last)
}

/// Says why the library refused a token, in words for the log.
fn invalid(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as Kind;
    match error.kind() {
        Kind::InvalidSignature => "the signature does not verify".to_owned(),
        Kind::ExpiredSignature => "expired".to_owned(),
        Kind::ImmatureSignature => "not valid yet (nbf)".to_owned(),
        Kind::InvalidIssuer => "issued by another issuer".to_owned(),
        Kind::InvalidAudience => "meant for another audience".to_owned(),
        Kind::MissingRequiredClaim(claim) => format!("no {claim} claim"),
        Kind::InvalidAlgorithm => "the algorithm does not fit the key".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The identity a verified token's claims give.
fn identity(
    claims: &serde_json::Map<String, serde_json::Value>,
    rules: &Rules,
) -> Result<Identity, Rejected> {
    let text = |claim: &str| {
        claims
            .get(claim)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| Rejected::Claim {
                claim: claim.to_owned(),
                why: "missing or not a string",
            })
    };
    let tenant = text(&rules.tenant_claim)?
        .parse::<TenantId>()
        .map_err(|_| Rejected::Claim {
            claim: rules.tenant_claim.clone(),
            why: "not a tenant id",
        })?;
    let subject = text(&rules.subject_claim)?;
    if subject.is_empty()
        || subject.len() > 256
        || subject.chars().any(|c| c == '@' || c.is_control())
    {
        return Err(Rejected::Claim {
            claim: rules.subject_claim.clone(),
            why: "empty, longer than 256 bytes, or holding '@' or a control character",
        });
    }
    Ok(Identity {
        subject: subject.to_owned(),
        tenant,
    })
}

#[cfg(test)]
mod tests {
    use super::{ASYMMETRIC, Algorithm, Keys};

    const EC: &str = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0""#;

    fn keys(members: &[String]) -> Keys {
        let document = format!(r#"{{"keys":[{}]}}"#, members.join(","));
        Keys::from_jwks(document.as_bytes(), &ASYMMETRIC).unwrap()
    }

    #[test]
    fn only_signing_keys_of_allowed_asymmetric_algorithms_are_kept() {
        let kept = keys(&[
            format!(r#"{EC},"kid":"a","use":"sig"}}"#),
            // For encryption, symmetric, or naming an HMAC: left out.
            format!(r#"{EC},"kid":"b","use":"enc"}}"#),
            r#"{"kty":"oct","k":"c2VjcmV0","kid":"c"}"#.to_owned(),
            format!(r#"{EC},"kid":"d","alg":"HS256"}}"#),
            // An unknown key type does not spoil the others.
            r#"{"kty":"XYZ","kid":"e"}"#.to_owned(),
        ]);
        assert!(kept.knows(Some("a")));
        for left_out in ["b", "c", "d", "e"] {
            assert!(!kept.knows(Some(left_out)), "{left_out}");
        }
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn two_keys_with_one_id_leave_the_id_out() {
        let kept = keys(&[
            format!(r#"{EC},"kid":"same"}}"#),
            format!(r#"{EC},"kid":"same"}}"#),
            format!(r#"{EC}}}"#),
        ]);
        assert!(!kept.knows(Some("same")));
        assert!(kept.knows(None));
    }

    #[test]
    fn a_key_is_narrowed_to_the_algorithm_it_names_and_the_allow_list() {
        let document = format!(r#"{{"keys":[{EC},"kid":"a"}}]}}"#);
        let only_rsa = Keys::from_jwks(document.as_bytes(), &[Algorithm::RS256]).unwrap();
        assert!(only_rsa.is_empty());
        for bad in [&b"[]"[..], b"{}", b"{\"keys\":{}}", b"not json"] {
            assert!(Keys::from_jwks(bad, &ASYMMETRIC).is_err());
        }
    }
}
