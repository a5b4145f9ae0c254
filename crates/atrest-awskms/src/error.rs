//! How a failed KMS call maps onto [`ProviderError`]: the one place that
//! decides between a refusal and a transient failure.

use core::fmt;

use atrest_tenant::{ProviderError, RootKeyRef};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::types::KeyState;

/// Which call failed, for the error's detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `DescribeKey`.
    DescribeKey,
    /// `Encrypt`.
    Encrypt,
    /// `Decrypt`.
    Decrypt,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DescribeKey => "DescribeKey",
            Self::Encrypt => "Encrypt",
            Self::Decrypt => "Decrypt",
        })
    }
}

/// Longest server message kept in an error's detail, in characters.
const MAX_MESSAGE: usize = 200;

/// Maps a failed SDK call on `key` onto what it means for the key
/// hierarchy.
///
/// | failure | error |
/// |---|---|
/// | no connection, a connection that broke, a timeout, an answer cut short | `Unavailable` |
/// | a TLS certificate or host name the client refuses, a handshake the server refuses | `AccessDenied`: whoever answered is not KMS |
/// | a request that could not be made (bad endpoint, credentials that cannot be read) | `Misconfigured` |
/// | an error answer: see [`classify`] | |
pub(crate) fn map_sdk_error<E>(key: &RootKeyRef, op: Op, error: &SdkError<E>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(context) => classify(
            key,
            op,
            context.err().code(),
            context.raw().status().as_u16(),
            context.err().message(),
        ),
        SdkError::ConstructionFailure(_) => ProviderError::Misconfigured {
            provider: key.provider().to_owned(),
            detail: format!(
                "{op} {}: the request could not be made: {}",
                key.label(),
                DisplayErrorContext(error)
            ),
        },
        SdkError::DispatchFailure(_) => match atrest_core::tls::refusal(error) {
            Some(why) => ProviderError::AccessDenied {
                key: key.clone(),
                detail: format!("{op}: the server could not be authenticated: {why}"),
            },
            None => ProviderError::Unavailable {
                key: key.clone(),
                detail: format!("{op}: {}", DisplayErrorContext(error)),
            },
        },
        // A timeout, an answer cut short, and whatever the SDK adds later:
        // no answer from KMS.
        _ => ProviderError::Unavailable {
            key: key.clone(),
            detail: format!("{op}: {}", DisplayErrorContext(error)),
        },
    }
}

/// Maps KMS's error answer (its error code, HTTP status and message) onto
/// what it means for the key hierarchy.
///
/// | answer | error |
/// |---|---|
/// | `AccessDeniedException` and the other refusals of the caller's credentials or signature | `AccessDenied` |
/// | `DisabledException`, `KMSInvalidStateException` (pending deletion or import, a disconnected key store), `InvalidKeyUsageException` | `AccessDenied`: the key's owner made it unusable |
/// | `NotFoundException` | `NotFound` (a deleted key, once its waiting period ended) |
/// | `InvalidCiphertextException`, `IncorrectKeyException` | `AuthenticationFailed`: another encryption context (binding) or key, or a damaged ciphertext |
/// | `KMSInternalException`, `DependencyTimeoutException`, `KeyUnavailableException`, throttling, any 5xx or 429 | `Unavailable` |
/// | `ValidationException`, `InvalidArnException`, `InvalidGrantTokenException`, `DryRunOperationException`, `UnsupportedOperationException`, any other 4xx | `Misconfigured`: an answer, never an outage |
pub(crate) fn classify(
    key: &RootKeyRef,
    op: Op,
    code: Option<&str>,
    status: u16,
    message: Option<&str>,
) -> ProviderError {
    let message: String = message
        .unwrap_or_default()
        .trim()
        .chars()
        .take(MAX_MESSAGE)
        .collect();
    let detail = match (code, message.is_empty()) {
        (Some(code), true) => format!("{op}: {code} (HTTP {status})"),
        (Some(code), false) => format!("{op}: {code} (HTTP {status}): {message}"),
        (None, true) => format!("{op}: HTTP {status}"),
        (None, false) => format!("{op}: HTTP {status}: {message}"),
    };
    let denied = |detail: String| ProviderError::AccessDenied {
        key: key.clone(),
        detail,
    };
    match code.unwrap_or_default() {
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "NotAuthorized"
        | "OptInRequired" => denied(detail),
        "DisabledException" => denied(format!("the key was disabled by its owner: {detail}")),
        "KMSInvalidStateException" => denied(format!(
            "the key's state does not allow its use (pending deletion, pending import or a disconnected key store): {detail}"
        )),
        "InvalidKeyUsageException" => denied(format!(
            "the key is not a symmetric encryption key: {detail}"
        )),
        "NotFoundException" => ProviderError::NotFound { key: key.clone() },
        "InvalidCiphertextException" | "IncorrectKeyException" => {
            ProviderError::AuthenticationFailed { key: key.clone() }
        }
        "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "LimitExceededException"
        | "ServiceUnavailable"
        | "InternalFailure" => ProviderError::Unavailable {
            key: key.clone(),
            detail,
        },
        _ => match status {
            429 | 500..=599 => ProviderError::Unavailable {
                key: key.clone(),
                detail,
            },
            401 | 403 => denied(detail),
            _ => ProviderError::Misconfigured {
                provider: key.provider().to_owned(),
                detail: format!("{} {detail}", key.label()),
            },
        },
    }
}

/// What a key's state, as `DescribeKey` tells it, allows: `None` if the key
/// may be used, the refusal or outage otherwise.
///
/// `Enabled` allows; `Creating` and `Updating` are passing states
/// (`Unavailable`); every other state (`Disabled`, `PendingDeletion`,
/// `PendingImport`, `PendingReplicaDeletion`, `Unavailable` — a custom key
/// store its owner disconnected — and any state added later) refuses.
pub(crate) fn state_refusal(key: &RootKeyRef, state: Option<&KeyState>) -> Option<ProviderError> {
    match state {
        Some(KeyState::Enabled) => None,
        Some(KeyState::Creating | KeyState::Updating) => Some(ProviderError::Unavailable {
            key: key.clone(),
            detail: format!("the key is {}", state.map_or("", KeyState::as_str)),
        }),
        Some(KeyState::Disabled) => Some(ProviderError::AccessDenied {
            key: key.clone(),
            detail: "the key was disabled by its owner (KeyState Disabled)".into(),
        }),
        Some(KeyState::PendingDeletion) => Some(ProviderError::AccessDenied {
            key: key.clone(),
            detail: "the key is scheduled for deletion by its owner (KeyState PendingDeletion)"
                .into(),
        }),
        other => Some(ProviderError::AccessDenied {
            key: key.clone(),
            detail: format!(
                "the key's state does not allow its use (KeyState {})",
                other.map_or("unknown", KeyState::as_str)
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RootKeyRef {
        RootKeyRef::new(
            "aws",
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            1,
        )
        .unwrap()
    }

    #[test]
    fn answers_are_refusals_and_only_failures_are_outages() {
        let key = key();
        let kind = |code: Option<&str>, status: u16| match classify(
            &key,
            Op::Decrypt,
            code,
            status,
            Some("said"),
        ) {
            ProviderError::AccessDenied { .. } => "denied",
            ProviderError::NotFound { .. } => "not found",
            ProviderError::AuthenticationFailed { .. } => "authentication",
            ProviderError::Unavailable { .. } => "unavailable",
            ProviderError::Misconfigured { .. } => "misconfigured",
            _ => "other",
        };
        for (code, status, expected) in [
            ("AccessDeniedException", 400, "denied"),
            ("UnrecognizedClientException", 400, "denied"),
            ("ExpiredTokenException", 400, "denied"),
            ("InvalidSignatureException", 400, "denied"),
            ("DisabledException", 400, "denied"),
            ("KMSInvalidStateException", 400, "denied"),
            ("InvalidKeyUsageException", 400, "denied"),
            ("NotFoundException", 400, "not found"),
            ("InvalidCiphertextException", 400, "authentication"),
            ("IncorrectKeyException", 400, "authentication"),
            ("KMSInternalException", 500, "unavailable"),
            ("DependencyTimeoutException", 503, "unavailable"),
            ("KeyUnavailableException", 500, "unavailable"),
            ("ThrottlingException", 400, "unavailable"),
            ("ValidationException", 400, "misconfigured"),
            ("InvalidArnException", 400, "misconfigured"),
            ("SomethingNew", 400, "misconfigured"),
            ("SomethingNew", 403, "denied"),
            ("SomethingNew", 503, "unavailable"),
            ("SomethingNew", 429, "unavailable"),
        ] {
            assert_eq!(kind(Some(code), status), expected, "{code} {status}");
        }
        assert_eq!(kind(None, 502), "unavailable");
        assert_eq!(kind(None, 404), "misconfigured");
    }

    #[test]
    fn only_an_enabled_key_is_used() {
        let key = key();
        assert!(state_refusal(&key, Some(&KeyState::Enabled)).is_none());
        for state in [
            KeyState::Disabled,
            KeyState::PendingDeletion,
            KeyState::PendingImport,
            KeyState::PendingReplicaDeletion,
            KeyState::Unavailable,
            KeyState::from("SomethingNew"),
        ] {
            assert!(
                matches!(
                    state_refusal(&key, Some(&state)),
                    Some(ProviderError::AccessDenied { .. })
                ),
                "{state:?}"
            );
        }
        assert!(matches!(
            state_refusal(&key, None),
            Some(ProviderError::AccessDenied { .. })
        ));
        assert!(matches!(
            state_refusal(&key, Some(&KeyState::Creating)),
            Some(ProviderError::Unavailable { .. })
        ));
    }
}
