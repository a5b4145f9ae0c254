//! `atrest meeting fetch`: a meeting participant's client of
//! `atrest-serve`. The item's key is delivered to the participant, its
//! ciphertext fetched, and both decrypted and authenticated here
//! ([`atrest::DeliveredKey::open`]); the service never sends plaintext.

use std::path::Path;
use std::time::{Duration, Instant};

use atrest::DeliveredKey;
use atrest_cli::client;
use atrest_cli::pipe::WriteBehind;
use futures_util::TryStreamExt as _;
use zeroize::Zeroizing;

use crate::cli::MeetingCommand;
use crate::exit::Error;
use crate::output::{Output, rate};
use crate::staging::Destination;

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
    let token =
        client::bearer_token(token_file.as_deref(), token_env.as_deref()).map_err(Error::usage)?;
    let base = client::service_url(&service, "--service").map_err(Error::usage)?;
    let client = client::http_client(ca_file.as_deref()).map_err(Error::usage)?;
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

/// The service could not be reached (or refused TLS).
fn unreachable(service: &str, error: &reqwest::Error) -> Error {
    let (kind, message) = client::no_answer(service, error);
    Error::Remote { kind, message }
}

/// `answer` if it succeeded; else the service's problem document as an
/// error of its kind.
async fn checked(answer: reqwest::Response, what: &str) -> Result<reqwest::Response, Error> {
    if answer.status().is_success() {
        return Ok(answer);
    }
    let (kind, message) = client::error_answer(answer, what).await;
    Err(Error::Remote { kind, message })
}
