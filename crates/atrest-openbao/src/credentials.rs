//! Where the provider's OpenBao token comes from.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use atrest_tenant::ProviderError;
use bytes::Bytes;
use reqwest::header::HeaderValue;
use zeroize::Zeroizing;

/// Where to read the token the provider authenticates to OpenBao with.
///
/// A configuration names a source, never the token itself. The token is
/// read when the provider is built (and again by
/// [`TransitKeys::reload_credentials`](crate::TransitKeys::reload_credentials)),
/// kept in memory that is zeroized when dropped, sent only in the
/// `X-Vault-Token` header (marked sensitive), and never printed: not by
/// `Debug`, not in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// The value of this environment variable (for example `VAULT_TOKEN`).
    FromEnv(String),
    /// The content of this file, surrounding whitespace ignored. The file
    /// must not be readable or writable by group or others (mode 0600 or
    /// 0400), as for the master key file; otherwise it is refused.
    FromFile(PathBuf),
}

impl Credentials {
    /// Reads the token: a header value that zeroizes its bytes when the
    /// last copy is dropped.
    pub(crate) fn load(&self, provider: &str) -> Result<HeaderValue, ProviderError> {
        let misconfigured = |detail: String| ProviderError::Misconfigured {
            provider: provider.to_owned(),
            detail,
        };
        let raw: Zeroizing<Vec<u8>> = match self {
            Self::FromEnv(variable) => {
                let value = std::env::var_os(variable).ok_or_else(|| {
                    misconfigured(format!(
                        "the token variable {variable} is not set in the environment"
                    ))
                })?;
                Zeroizing::new(value.into_encoded_bytes())
            }
            Self::FromFile(path) => {
                let mode = std::fs::metadata(path)
                    .map_err(|e| misconfigured(format!("token file {}: {e}", path.display())))?
                    .permissions()
                    .mode()
                    & 0o777;
                if mode & 0o077 != 0 {
                    return Err(misconfigured(format!(
                        "token file {}: permissions {mode:03o} let others read it; it must be 600 (chmod 600)",
                        path.display()
                    )));
                }
                Zeroizing::new(
                    std::fs::read(path).map_err(|e| {
                        misconfigured(format!("token file {}: {e}", path.display()))
                    })?,
                )
            }
        };
        token_header(&raw).ok_or_else(|| {
            misconfigured(format!(
                "the token from {} is empty or holds characters a token cannot have",
                self.source()
            ))
        })
    }

    fn source(&self) -> String {
        match self {
            Self::FromEnv(variable) => format!("environment variable {variable}"),
            Self::FromFile(path) => format!("file {}", path.display()),
        }
    }
}

/// The token, trimmed, as a sensitive header value whose buffer is
/// zeroized when its last copy is dropped; `None` unless it is non-empty
/// visible ASCII.
fn token_header(raw: &[u8]) -> Option<HeaderValue> {
    let trimmed = raw.trim_ascii();
    if trimmed.is_empty() || !trimmed.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    let mut token = Zeroizing::new(Vec::with_capacity(trimmed.len()));
    token.extend_from_slice(trimmed);
    let mut header = HeaderValue::from_maybe_shared(Bytes::from_owner(token)).ok()?;
    header.set_sensitive(true);
    Some(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_and_checked() {
        let header = token_header(b"  s.abcDEF123\n").unwrap();
        assert_eq!(header.as_bytes(), b"s.abcDEF123");
        assert!(header.is_sensitive());
        assert!(format!("{header:?}").contains("Sensitive"));
        for bad in [&b""[..], b" \n", b"two words", b"tab\there", b"\xc3\xa9"] {
            assert!(token_header(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_variable_is_named_without_a_value() {
        let error = Credentials::FromEnv("ATREST_OPENBAO_NO_SUCH_VARIABLE".into())
            .load("kms")
            .unwrap_err();
        assert!(
            matches!(&error, ProviderError::Misconfigured { detail, .. }
                if detail.contains("ATREST_OPENBAO_NO_SUCH_VARIABLE")),
            "{error:?}"
        );
    }
}
