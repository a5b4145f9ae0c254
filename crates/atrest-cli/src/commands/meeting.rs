//! `atrest meeting fetch`: a meeting participant's client of
//! `atrest-serve`. The item's key is delivered to the participant, its
//! ciphertext fetched, and both decrypted and authenticated here
//! ([`atrest::DeliveredKey::open`]); the service never sends plaintext.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use atrest::{DeliveredKey, ErrorKind};
use atrest_cli::pipe::WriteBehind;
use futures_util::TryStreamExt as _;
use reqwest::{StatusCode, Url};
use zeroize::Zeroizing;

use crate::cli::MeetingCommand;
use crate::exit::Error;
use crate::output::{Output, rate};
use crate::staging::Destination;

/// How long connecting to the service may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the key request may take.
const KEY_TIMEOUT: Duration = Duration::from_secs(30);

/// `atrest meeting …`.
pub(crate) async fn meeting(
    data: &Path,
    out: Output,
    command: MeetingCommand,
) -> Result<(), Error> {
    let MeetingCommand::Fetch {
        service,
        token_file,
        token_env,
        ca_file,
        tenant,
        meeting,
        item,
        output,
    } = command;
    let token = read_token(token_file.as_deref(), token_env.as_deref())?;
    let base = service_url(&service)?;
    let mut client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        // The bearer token is in a header of ours: never forward it.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca_file) = &ca_file {
        let pem = std::fs::read(ca_file).map_err(Error::at(ca_file))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::usage(format!("--ca-file {}: {e}", ca_file.display())))?;
        client = client.tls_certs_merge(certificates);
    }
    let client = client
        .build()
        .map_err(|e| Error::usage(format!("the HTTP client: {e}")))?;
    let url = |kind: &str, version: Option<u64>| {
        let mut url = base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend([
                "v1",
                "tenants",
                tenant.as_str(),
                "meetings",
                meeting.as_str(),
                kind,
            ]);
            segments.extend(item.split('/'));
        }
        if let Some(version) = version {
            url.query_pairs_mut()
                .append_pair("version", &version.to_string());
        }
        url
    };
    let started = Instant::now();

    // The key: held in memory that is wiped, never printed.
    let answer = client
        .get(url("keys", None))
        .bearer_auth(token.as_str())
        .timeout(KEY_TIMEOUT)
        .send()
        .await
        .map_err(|e| unreachable(&service, &e))?;
    let answer = checked(answer, "the item's key").await?;
    let wire = Zeroizing::new(answer.text().await.map_err(|e| unreachable(&service, &e))?);
    let key = DeliveredKey::from_wire(&wire)?;
    drop(wire);
    let version = key.context().version.get();

    // The ciphertext of exactly that version.
    let answer = client
        .get(url("items", Some(version)))
        .bearer_auth(token.as_str())
        .send()
        .await
        .map_err(|e| unreachable(&service, &e))?;
    let answer = checked(answer, "the item's ciphertext").await?;
    let body = answer
        .bytes_stream()
        .map_err(|e| std::io::Error::other(e.to_string()));
    let ciphertext = tokio_util::io::StreamReader::new(body);

    let destination = Destination::open(output.as_deref().unwrap_or(Path::new("-")), data)?;
    let to_stdout = destination.is_stdout();
    let mut sink = WriteBehind::new(destination);
    let opened = key.open(ciphertext, &mut sink).await;
    // The writer is joined whatever happened: on an error the staging file
    // goes now, and nothing unverified stays at the output's name.
    let written = sink.close().await;
    let bytes = opened?;
    written
        .map_err(|source| Error::Io {
            what: "the output".into(),
            source,
        })?
        .finish()?;
    let elapsed = started.elapsed();
    let info = serde_json::json!({
        "tenant": tenant,
        "meeting": meeting,
        "item": item,
        "version": version,
        "bytes": bytes,
        "output": output.as_ref().map(|p| p.to_string_lossy()),
        "seconds": elapsed.as_secs_f64(),
    });
    if to_stdout {
        if out.json {
            out.show_on_stderr(&info);
        }
    } else {
        out.show(&info, || {
            format!(
                "fetched {item} version {version} of meeting {meeting}: {bytes} bytes, decrypted here, in {elapsed:.2?} ({})",
                rate(bytes, elapsed)
            )
        });
    }
    Ok(())
}

/// The bearer token, from a private file or a variable.
fn read_token(file: Option<&Path>, variable: Option<&str>) -> Result<Zeroizing<String>, Error> {
    let raw = match (file, variable) {
        (Some(file), _) => {
            let mode = std::fs::metadata(file)
                .map_err(Error::at(file))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(Error::usage(format!(
                    "{}: permissions {:03o} let others read the token; chmod 600 it",
                    file.display(),
                    mode & 0o777
                )));
            }
            Zeroizing::new(std::fs::read_to_string(file).map_err(Error::at(file))?)
        }
        (None, Some(variable)) => Zeroizing::new(
            std::env::var(variable)
                .map_err(|_| Error::usage(format!("{variable} is not set in the environment")))?,
        ),
        (None, None) => return Err(Error::usage("give --token-file or --token-env")),
    };
    let token = raw.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::usage(
            "the token is empty or holds characters a token cannot have",
        ));
    }
    Ok(Zeroizing::new(token.to_owned()))
}

/// The service's base URL: `https`, or `http` to a loopback address only
/// (the token would cross the network in clear).
fn service_url(service: &str) -> Result<Url, Error> {
    let url =
        Url::parse(service).map_err(|e| Error::usage(format!("--service {service:?}: {e}")))?;
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
            return Err(Error::usage(format!(
                "--service {service:?}: plain http only to a loopback address; use https"
            )));
        }
        other => {
            return Err(Error::usage(format!(
                "--service: unsupported scheme {other}"
            )));
        }
    }
    if url.cannot_be_a_base() || url.query().is_some() || !url.username().is_empty() {
        return Err(Error::usage(format!(
            "--service {service:?}: only scheme, host, port and path"
        )));
    }
    Ok(url)
}

/// The service could not be reached (or refused TLS).
fn unreachable(service: &str, error: &reqwest::Error) -> Error {
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
    Error::Remote {
        kind,
        message: format!("{service}: {detail}"),
    }
}

/// `answer` if it succeeded; else the service's problem document as an
/// error of its kind.
async fn checked(answer: reqwest::Response, what: &str) -> Result<reqwest::Response, Error> {
    let status = answer.status();
    if status.is_success() {
        return Ok(answer);
    }
    let said = answer.bytes().await.unwrap_or_default();
    let document: serde_json::Value = serde_json::from_slice(&said).unwrap_or_default();
    let detail = document
        .get("detail")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"))
        .to_owned();
    let kind = match status {
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => ErrorKind::Refused,
        StatusCode::CONFLICT => ErrorKind::Conflict,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => ErrorKind::Unavailable,
        status if status.is_client_error() => ErrorKind::Usage,
        _ => ErrorKind::Io,
    };
    Err(Error::Remote {
        kind,
        message: format!("{what}: HTTP {}: {detail}", status.as_u16()),
    })
}
