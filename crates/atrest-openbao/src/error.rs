//! How a failed transit call maps onto [`ProviderError`]: the one place
//! that decides between a refusal and a transient failure.

use core::fmt;

use atrest_tenant::{ProviderError, RootKeyRef};

/// Which call failed, for the error's detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `GET <mount>/keys/<key>`.
    ReadKey,
    /// `POST <mount>/keys/<key>` or `<mount>/keys/<key>/rotate`.
    ManageKey,
    /// `POST <mount>/encrypt/<key>`.
    Encrypt,
    /// `POST <mount>/decrypt/<key>`.
    Decrypt,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ReadKey => "read key",
            Self::ManageKey => "manage key",
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
        })
    }
}

/// What went wrong with one call, before it is given a meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure<'a> {
    /// The request could not be made as configured (an invalid URL).
    Request(String),
    /// No answer: the connection failed, was refused or broke, or the
    /// connect or total timeout expired.
    Transport(String),
    /// An answer with a status other than success, and the `errors` of its
    /// body (empty if it had none).
    Status {
        /// The HTTP status code.
        status: u16,
        /// The server's messages.
        errors: &'a [String],
    },
    /// A success whose body is not what the API documents.
    Malformed(&'static str),
    /// The server could not be authenticated: TLS refused its certificate
    /// (an unknown issuer, another host name, expired) or the handshake was
    /// refused. Not an outage: whoever answered is not the key service.
    Untrusted(String),
}

/// Longest server message kept in an error's detail, in characters.
const MAX_MESSAGE: usize = 200;

/// Maps a failed call on `key` onto what it means for the key hierarchy.
///
/// | failure | error |
/// |---|---|
/// | connection refused or broken, timeout, a 5xx (other than below), 429 or 412 answer, a redirect | `Unavailable` |
/// | a TLS certificate or host name the client refuses, a handshake the server refuses | `AccessDenied`: whoever answered is not the key service |
/// | 503 "… is sealed", 501 or 503 "… not initialized": the key service locked by its owner | `AccessDenied` |
/// | a success that is not the expected answer (too large, not JSON, no `data`: a control group or response wrapping waiting for approval, say) | `Misconfigured`: an answer, never an outage |
/// | 401, 403 (permission denied: the token or its policy) | `AccessDenied` |
/// | 400 "disallowed by policy (too old)": a version below `min_decryption_version`, or "less than the minimum encryption key version" | `AccessDenied` (version retired by the key owner) |
/// | 404; 400 "encryption key not found", "no such key version", "higher than the latest key version" | `NotFound` |
/// | 400 "message authentication failed", "invalid ciphertext …" | `AuthenticationFailed` |
/// | an invalid request URL; any other 4xx | `Misconfigured` |
pub(crate) fn map_failure(key: &RootKeyRef, op: Op, failure: Failure<'_>) -> ProviderError {
    let (status, errors) = match failure {
        Failure::Request(detail) => {
            return ProviderError::Misconfigured {
                provider: key.provider().to_owned(),
                detail: format!("{op} {}: {detail}", key.label()),
            };
        }
        Failure::Transport(detail) => {
            return ProviderError::Unavailable {
                key: key.clone(),
                detail: format!("{op}: {detail}"),
            };
        }
        Failure::Untrusted(detail) => {
            return ProviderError::AccessDenied {
                key: key.clone(),
                detail: format!("{op}: the server could not be authenticated: {detail}"),
            };
        }
        Failure::Malformed(what) => {
            // The server answered: whatever it meant, it is not an outage,
            // so it must not open the way to the availability key.
            return ProviderError::Misconfigured {
                provider: key.provider().to_owned(),
                detail: format!(
                    "{op} {}: unexpected answer from the server: {what}",
                    key.label()
                ),
            };
        }
        Failure::Status { status, errors } => (status, errors),
    };
    let message: String = errors
        .iter()
        .map(|e| e.trim())
        .collect::<Vec<_>>()
        .join("; ")
        .chars()
        .take(MAX_MESSAGE)
        .collect();
    let detail = if message.is_empty() {
        format!("{op}: HTTP {status}")
    } else {
        format!("{op}: HTTP {status}: {message}")
    };
    let lower = message.to_ascii_lowercase();
    let said = |phrase: &str| lower.contains(phrase);
    match status {
        // Sealed or never initialised: the key service's owner locked it,
        // which refuses as a revocation does.
        501 | 503 if said("is sealed") || said("not initialized") => ProviderError::AccessDenied {
            key: key.clone(),
            detail: format!("the key service is sealed or not initialised: {detail}"),
        },
        429 | 412 | 500..=599 => ProviderError::Unavailable {
            key: key.clone(),
            detail,
        },
        300..=399 => ProviderError::Unavailable {
            key: key.clone(),
            detail: format!(
                "{detail} (redirected, not followed: point the address at the active node or its load balancer)"
            ),
        },
        401 | 403 => ProviderError::AccessDenied {
            key: key.clone(),
            detail,
        },
        404 => ProviderError::NotFound { key: key.clone() },
        400 if said("disallowed by policy (too old)") => ProviderError::AccessDenied {
            key: key.clone(),
            detail: format!(
                "version {} was retired by the key owner (below min_decryption_version): {detail}",
                key.version()
            ),
        },
        400 if said("less than the minimum encryption key version") => {
            ProviderError::AccessDenied {
                key: key.clone(),
                detail: format!(
                    "version {} was retired for encryption by the key owner (below min_encryption_version): {detail}",
                    key.version()
                ),
            }
        }
        400 if said("key not found")
            || said("no such key version")
            || said("higher than the latest key version") =>
        {
            ProviderError::NotFound { key: key.clone() }
        }
        400 if op == Op::Decrypt
            && (said("message authentication failed") || said("invalid ciphertext")) =>
        {
            ProviderError::AuthenticationFailed { key: key.clone() }
        }
        _ => ProviderError::Misconfigured {
            provider: key.provider().to_owned(),
            detail: format!("key {}: {detail}", key.label()),
        },
    }
}

/// A transport error and its causes, for a detail.
pub(crate) fn transport_failure(error: &reqwest::Error) -> Failure<'static> {
    if error.is_builder() {
        return Failure::Request(error.to_string());
    }
    if let Some(refused) = atrest_core::tls::refusal(error) {
        return Failure::Untrusted(refused);
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    let mut detail = format!("{what}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    Failure::Transport(detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RootKeyRef {
        RootKeyRef::new("kms", "contoso", 3).unwrap()
    }

    fn status(op: Op, status: u16, message: &str) -> ProviderError {
        let errors = [message.to_owned()];
        map_failure(
            &key(),
            op,
            Failure::Status {
                status,
                errors: &errors,
            },
        )
    }

    #[test]
    fn a_failed_connection_is_unavailable() {
        let error = map_failure(
            &key(),
            Op::Decrypt,
            Failure::Transport("could not connect: connection refused".into()),
        );
        assert!(error.is_unavailable(), "{error:?}");
    }

    #[test]
    fn a_timeout_is_unavailable() {
        let error = map_failure(
            &key(),
            Op::Encrypt,
            Failure::Transport("timed out: operation timed out".into()),
        );
        assert!(error.is_unavailable(), "{error:?}");
    }

    #[test]
    fn server_errors_and_throttling_are_unavailable() {
        for (code, message) in [
            (500, "internal error"),
            (502, ""),
            (503, "no active node"),
            (504, ""),
            (429, "request rate limit exceeded"),
            (412, "required index state not present"),
        ] {
            let error = status(Op::Decrypt, code, message);
            assert!(error.is_unavailable(), "{code}: {error:?}");
        }
    }

    #[test]
    fn a_sealed_or_uninitialised_server_refuses() {
        for (code, message) in [
            (503, "Vault is sealed"),
            (503, "OpenBao is sealed"),
            (501, "Vault is not initialized"),
            (503, "Vault is not initialized"),
        ] {
            let error = status(Op::Decrypt, code, message);
            assert!(
                matches!(&error, ProviderError::AccessDenied { detail, .. } if detail.contains("sealed")),
                "{code} {message}: {error:?}"
            );
        }
    }

    #[test]
    fn a_certificate_refused_is_a_refusal() {
        let error = map_failure(
            &key(),
            Op::Decrypt,
            Failure::Untrusted("unknown issuer".into()),
        );
        assert!(
            matches!(error, ProviderError::AccessDenied { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn a_redirect_is_unavailable() {
        let error = status(Op::Decrypt, 307, "");
        assert!(
            matches!(&error, ProviderError::Unavailable { detail, .. } if detail.contains("redirected")),
            "{error:?}"
        );
    }

    #[test]
    fn a_malformed_success_is_a_refusal_not_an_outage() {
        let error = map_failure(&key(), Op::Decrypt, Failure::Malformed("not JSON"));
        assert!(
            matches!(error, ProviderError::Misconfigured { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn permission_denied_is_access_denied() {
        for code in [403, 401] {
            let error = status(Op::Decrypt, code, "permission denied");
            assert!(
                matches!(&error, ProviderError::AccessDenied { detail, .. } if detail.contains("permission denied")),
                "{error:?}"
            );
        }
    }

    #[test]
    fn a_version_below_min_decryption_version_is_a_refusal() {
        let error = status(
            Op::Decrypt,
            400,
            "ciphertext or signature version is disallowed by policy (too old)",
        );
        assert!(
            matches!(&error, ProviderError::AccessDenied { detail, .. }
                if detail.contains("version 3 was retired by the key owner")),
            "{error:?}"
        );
    }

    #[test]
    fn a_version_below_min_encryption_version_is_a_refusal() {
        let error = status(
            Op::Encrypt,
            400,
            "requested version for encryption is less than the minimum encryption key version",
        );
        assert!(
            matches!(&error, ProviderError::AccessDenied { detail, .. } if detail.contains("retired")),
            "{error:?}"
        );
    }

    #[test]
    fn a_missing_key_is_not_found() {
        for (code, message) in [
            (404, ""),
            (
                404,
                "no handler for route \"transit/decrypt/k\". route entry not found.",
            ),
            (400, "encryption key not found"),
            (400, "no such key version"),
            (
                400,
                "requested version for encryption is higher than the latest key version",
            ),
        ] {
            let error = status(Op::Decrypt, code, message);
            assert!(
                matches!(error, ProviderError::NotFound { .. }),
                "{code} {message}: {error:?}"
            );
        }
    }

    #[test]
    fn a_tag_or_associated_data_mismatch_fails_authentication() {
        for message in [
            "cipher: message authentication failed",
            "invalid ciphertext: could not decode base64",
            "invalid ciphertext: version is too new",
        ] {
            let error = status(Op::Decrypt, 400, message);
            assert!(
                matches!(error, ProviderError::AuthenticationFailed { .. }),
                "{message}: {error:?}"
            );
        }
    }

    #[test]
    fn other_client_errors_are_misconfigured() {
        for (code, message) in [
            (400, "missing 'context' for key derivation"),
            (400, "missing ciphertext to decrypt"),
            (405, "unsupported operation"),
            (413, ""),
        ] {
            let error = status(Op::Decrypt, code, message);
            assert!(
                matches!(error, ProviderError::Misconfigured { .. }),
                "{code} {message}: {error:?}"
            );
        }
        // An authentication message on an encryption is not a tag failure.
        let error = status(Op::Encrypt, 400, "invalid ciphertext");
        assert!(
            matches!(error, ProviderError::Misconfigured { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn an_invalid_request_is_misconfigured() {
        let error = map_failure(&key(), Op::ReadKey, Failure::Request("bad URL".into()));
        assert!(
            matches!(error, ProviderError::Misconfigured { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn long_server_messages_are_cut() {
        let error = status(Op::Decrypt, 500, &"x".repeat(10_000));
        let ProviderError::Unavailable { detail, .. } = error else {
            panic!("{error:?}");
        };
        assert!(detail.len() < MAX_MESSAGE + 50, "{}", detail.len());
    }
}
