//! What the programs that talk to `atrest-serve` as its clients share
//! (`atrest meeting fetch`, `mailbox-move --to`): the service's address,
//! the bearer token, the HTTP client, and an error answer read as the kind
//! of failure it reports.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use atrest::ErrorKind;
use reqwest::{StatusCode, Url};
use zeroize::Zeroizing;

/// How long connecting to the service may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The service's base address from `text` (given as `flag`): `https`, or
/// `http` to a loopback address only (the bearer token would cross the
/// network in clear); scheme, host, port and path only.
///
/// # Errors
/// Why it is not one, as a sentence.
pub fn service_url(text: &str, flag: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{flag} {text:?}: {e}"))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "{flag} {text:?}: plain http only to a loopback address; use https"
            ));
        }
        other => return Err(format!("{flag} {text:?}: unsupported scheme {other}")),
    }
    if url.cannot_be_a_base()
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(format!("{flag} {text:?}: only scheme, host, port and path"));
    }
    Ok(url)
}

/// The bearer token from `file` (which group and others may not read) or
/// the environment variable `variable`, trimmed; held in memory that is
/// wiped when dropped.
///
/// # Errors
/// Why it cannot be had, as a sentence that never holds the token.
pub fn bearer_token(
    file: Option<&Path>,
    variable: Option<&str>,
) -> Result<Zeroizing<String>, String> {
    let raw = match (file, variable) {
        (Some(file), _) => {
            let meta = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{}: permissions {mode:03o} let others read the token; chmod 600 it",
                    file.display()
                ));
            }
            Zeroizing::new(
                std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?,
            )
        }
        (None, Some(variable)) => Zeroizing::new(
            std::env::var(variable)
                .map_err(|_| format!("{variable} is not set in the environment"))?,
        ),
        (None, None) => return Err("give a token file or a token variable".into()),
    };
    let token = raw.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token is empty or holds characters a token cannot have".into());
    }
    Ok(Zeroizing::new(token.to_owned()))
}

/// The HTTP client: rustls with the system's trust store and the CA
/// certificates in PEM file `ca_file`, no redirects (the bearer token is
/// in a header of ours: never forward it).
///
/// # Errors
/// Why the client cannot be made, as a sentence.
pub fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-file {}: {e}", ca.display()))?;
        client = client.tls_certs_merge(certificates);
    }
    client.build().map_err(|e| format!("the HTTP client: {e}"))
}

/// The kind of failure an error answer of `status` reports.
pub fn status_kind(status: StatusCode) -> ErrorKind {
    match status {
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => ErrorKind::Refused,
        StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => ErrorKind::Conflict,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => ErrorKind::Unavailable,
        status if status.is_client_error() => ErrorKind::Usage,
        _ => ErrorKind::Io,
    }
}

/// An error answer about `what`, read whole: its kind and a sentence with
/// the status and the service's `detail`.
pub async fn error_answer(answer: reqwest::Response, what: &str) -> (ErrorKind, String) {
    let status = answer.status();
    let said = answer.bytes().await.unwrap_or_default();
    let document: serde_json::Value = serde_json::from_slice(&said).unwrap_or_default();
    let detail = document
        .get("detail")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"))
        .to_owned();
    (
        status_kind(status),
        format!("{what}: HTTP {}: {detail}", status.as_u16()),
    )
}

/// A request that got no answer: a TLS refusal (a certificate or host
/// name that does not verify) is `Refused`, anything else `Unavailable`;
/// with the whole chain of causes.
pub fn no_answer(service: &str, error: &reqwest::Error) -> (ErrorKind, String) {
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail = format!("{detail}: {cause}");
        source = cause.source();
    }
    let kind = match atrest_core::tls::refusal(error) {
        Some(_) => ErrorKind::Refused,
        None => ErrorKind::Unavailable,
    };
    (kind, format!("{service}: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_https_or_loopback_http() {
        for good in [
            "https://files.example.com",
            "https://files.example.com:8443/prefix",
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            assert!(service_url(good, "--to").is_ok(), "{good}");
        }
        for bad in [
            "http://10.0.0.1:8080",
            "http://files.example.com",
            "ftp://127.0.0.1",
            "https://user:pass@files.example.com",
            "https://files.example.com/?x=1",
            "files.example.com",
        ] {
            assert!(service_url(bad, "--to").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_others_can_read_is_refused_and_never_shown() {
        let dir = std::env::temp_dir().join(format!("atrest-client-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  s3cret-token\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = bearer_token(Some(&file), None).unwrap_err();
        assert!(
            error.contains("chmod 600") && !error.contains("s3cret"),
            "{error}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            bearer_token(Some(&file), None).unwrap().as_str(),
            "s3cret-token"
        );
        std::fs::write(&file, "two words").unwrap();
        assert!(bearer_token(Some(&file), None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
