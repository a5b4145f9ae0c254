//! `mailbox-move --to URL`: the move through the upload service.
//!
//! Each item is `PUT` to `atrest-serve` (as the tenant's service principal
//! whose bearer token is given), several at once (`--uploads`), with the
//! request id `MOVE:ITEM` ([`atrest_cli::moves`]). Small uploads of one
//! principal that arrive together are sealed by the service in batches.
//! The source keeps its journal (see [`atrest_cli::moves`]): each item's
//! answer (status, file, version) and the SHA-256 of the bytes sent, in
//! commits of a chunk of items.
//!
//! Exactly once, wherever either side is killed: an item is sent without a
//! precondition only on its first attempt in the first run of its move;
//! every other attempt (a retry after no answer, any attempt of a run that
//! resumes the move) is sent with `If-None-Match: *`, so that a version an
//! earlier attempt stored is found (`412`, then its version read with a
//! `HEAD`) instead of stored twice. A journal line lost with the process
//! only makes the next run ask again.
//!
//! The move is complete once a run ends with every item stored: the source
//! reports its statistics to the service (`POST …/moves/MOVE`, recorded in
//! the service's trail), then records them in its journal. An interruption
//! between the two reports them again on the next run (the checker counts
//! identical records as one).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use atrest_cli::client;
use atrest_cli::moves::{
    self, ItemLine, ItemOutcome, Journal, JournalMove, MoveStart, MoveStats, item_id,
};
use futures_util::{StreamExt as _, TryStreamExt as _};
use reqwest::header::{self, HeaderValue};
use reqwest::{StatusCode, Url};
use sha2::Digest as _;
use tokio::task::block_in_place;
use zeroize::Zeroizing;

use super::item::{CHANGED, READ_WHOLE, Seen, read_whole};
use super::walk::{self, RelPath, Walk};
use super::{Args, Error, Item, Report};

/// Items answered before their journal lines are committed together.
const CHUNK: usize = 256;

/// Attempts of one item before it counts as failed.
const ATTEMPTS: u32 = 4;

/// Items in a row that got no answer at all before the run stops sending:
/// the service is down, and the rest would only wait out their retries.
const NO_ANSWER_LIMIT: u32 = 32;

/// What a run needs to reach the service.
pub(super) struct Service {
    client: reqwest::Client,
    base: Url,
    token: Zeroizing<String>,
    tenant: String,
}

impl Service {
    /// The client for `--to`, `--token-file`/`--token-env` and `--ca-file`.
    pub(super) fn new(args: &Args, url: &str) -> Result<Self, Error> {
        let usage = |message: String| Error::Usage { message };
        Ok(Self {
            base: client::service_url(url, "--to").map_err(usage)?,
            token: client::bearer_token(args.token_file.as_deref(), args.token_env.as_deref())
                .map_err(usage)?,
            client: client::http_client(args.ca_file.as_deref()).map_err(usage)?,
            tenant: args.tenant.clone(),
        })
    }

    fn url(&self, segments: &[&str], name: Option<&str>) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["v1", "tenants", self.tenant.as_str()])
                .extend(segments);
            if let Some(name) = name {
                path.extend(name.split('/'));
            }
        }
        url
    }
}

/// What the run learnt of one item.
struct Sent {
    path: RelPath,
    line: ItemLine,
    reason: Option<String>,
    seen: Option<Seen>,
    /// Every attempt went unanswered.
    answerless: bool,
}

/// Runs the move through the service: returns the report.
pub(super) async fn run(
    args: &Args,
    service: &Service,
    prefix: &str,
    journal_dir: &Path,
) -> Result<Report, Error> {
    let started = Instant::now();
    let (journal, made) = block_in_place(|| Journal::open(journal_dir))?;
    if made {
        atrest_cli::errln!(
            "mailbox-move: a new journal in {}; its verifying key (keep it elsewhere): {}",
            journal_dir.display(),
            journal.verifying_key()
        );
    }
    let entries = block_in_place(|| Journal::entries(journal_dir))?;
    let moves = moves::journal_moves(&entries);
    let source_dir = std::path::absolute(&args.source).map_err(|source| Error::Source {
        path: args.source.clone(),
        source,
    })?;
    let service_text = service.base.as_str().trim_end_matches('/').to_owned();
    // The move this run continues: the last of this tenant and prefix
    // that is not complete; else a new one.
    let unfinished = moves.iter().rev().find(|(_, m)| {
        m.finished.is_none()
            && m.start
                .as_ref()
                .is_some_and(|s| s.tenant == args.tenant && s.prefix == prefix)
    });
    let (move_id, earlier, resumed) = match unfinished {
        Some((id, found)) => (id.clone(), found.clone(), true),
        None => {
            let id = moves::new_move_id().map_err(|source| Error::Source {
                path: journal_dir.to_path_buf(),
                source,
            })?;
            let start = MoveStart {
                move_id: id.clone(),
                source: source_dir.display().to_string(),
                service: service_text.clone(),
                tenant: args.tenant.clone(),
                prefix: prefix.to_owned(),
            };
            block_in_place(|| journal.append(&[start.record()]))?;
            let fresh = JournalMove {
                start: Some(start),
                started_at: Some(SystemTime::now()),
                ..JournalMove::default()
            };
            (id, fresh, false)
        }
    };
    // Items earlier moves of this tenant and prefix stored, unchanged since.
    let mut moved_before = std::collections::HashMap::new();
    for (_, m) in &moves {
        if m.start
            .as_ref()
            .is_some_and(|s| s.tenant == args.tenant && s.prefix == prefix)
        {
            for line in m.items.values().filter(|l| l.outcome.is_stored()) {
                moved_before.insert(line.name.clone(), (line.len, line.mtime_ns));
            }
        }
    }

    let found = block_in_place(|| walk::walk(&args.source)).map_err(|source| Error::Source {
        path: args.source.clone(),
        source,
    })?;
    let mut report = Report::of_walk(&args.tenant, prefix, &found);
    report.move_id = Some(move_id.clone());
    let bar = super::progress_bar(args, found.files.len());

    // What is left to send.
    let mut to_send = Vec::new();
    for path in &found.files {
        let Some(relative) = path.to_str() else {
            report.fail(path, "its name is not valid UTF-8 (file names are text)");
            bar.inc(1);
            continue;
        };
        let name = format!("{prefix}{relative}");
        let item = item_id(&name);
        if earlier
            .items
            .get(&item)
            .is_some_and(|l| l.outcome.is_stored())
        {
            report.resumed.stored += 1;
            bar.inc(1);
            continue;
        }
        // An item an earlier move stored is looked at (once) only to see
        // whether it changed since; every other is opened when it is sent.
        if let Some(before) = moved_before.get(&name) {
            match block_in_place(|| {
                walk::open_item(&found.root, path).and_then(|file| Seen::of(&file))
            }) {
                Ok(seen) if (seen.len, seen.mtime_ns) == *before => {
                    report.already_moved += 1;
                    bar.inc(1);
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    report.fail(path, error);
                    bar.inc(1);
                    continue;
                }
            }
        }
        to_send.push((path.clone(), name, item));
    }

    let uploads = usize::from(args.uploads);
    let silent = std::sync::atomic::AtomicU32::new(0);
    for chunk in to_send.chunks(CHUNK) {
        if silent.load(std::sync::atomic::Ordering::SeqCst) >= NO_ANSWER_LIMIT {
            report.not_sent += chunk.len() as u64;
            report.failures += chunk.len() as u64;
            bar.inc(chunk.len() as u64);
            continue;
        }
        let (silent, found, move_id) = (&silent, &found, move_id.as_str());
        let sent: Vec<Sent> = futures_util::stream::iter(chunk.iter().cloned())
            // In a move that resumes, an earlier run may have stored any
            // item not recorded as stored: each is asked first.
            .map(|(path, name, item)| async move {
                if silent.load(std::sync::atomic::Ordering::SeqCst) >= NO_ANSWER_LIMIT {
                    return None;
                }
                let sent = send(service, found, move_id, (path, name, item), resumed).await;
                if sent.line.http == 0
                    && sent.line.outcome == ItemOutcome::Failed
                    && sent.answerless
                {
                    silent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                } else {
                    silent.store(0, std::sync::atomic::Ordering::SeqCst);
                }
                Some(sent)
            })
            .buffer_unordered(uploads)
            .collect::<Vec<Option<Sent>>>()
            .await
            .into_iter()
            .filter_map(|sent| {
                if sent.is_none() {
                    report.not_sent += 1;
                    report.failures += 1;
                    bar.inc(1);
                }
                sent
            })
            .collect();
        let lines: Vec<_> = sent
            .iter()
            .map(|s| s.line.record(move_id, s.reason.as_deref()))
            .collect();
        block_in_place(|| journal.append(&lines))?;
        for item in sent {
            bar.inc(1);
            match item.line.outcome {
                ItemOutcome::Stored | ItemOutcome::AlreadyStored => {
                    report.items += 1;
                    report.bytes += item.line.bytes;
                    if args.remove_source
                        && let Some(seen) = item.seen
                    {
                        remove(&found.root, &item.path, seen, &mut report);
                    }
                }
                ItemOutcome::Failed => {
                    report.fail(&item.path, item.reason.unwrap_or_default());
                }
            }
        }
    }
    bar.finish_and_clear();
    report.failed.sort_by(|a, b| a.item.cmp(&b.item));
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

    if report.failures == 0 {
        // Complete: the statistics of the whole move, from its journal.
        let entries = block_in_place(|| Journal::entries(journal_dir))?;
        let this = moves::journal_moves(&entries)
            .into_iter()
            .find(|(id, _)| *id == move_id)
            .map(|(_, m)| m)
            .unwrap_or_default();
        let stored: Vec<&ItemLine> = this
            .items
            .values()
            .filter(|l| l.outcome.is_stored())
            .collect();
        let since = this.started_at.unwrap_or_else(SystemTime::now);
        let stats = MoveStats {
            items: stored.len() as u64,
            bytes: stored.iter().map(|l| l.bytes).sum(),
            failures: 0,
            skipped: report.already_moved + report.skipped.len() as u64,
            duration_ms: u64::try_from(since.elapsed().unwrap_or_default().as_millis())
                .unwrap_or(u64::MAX),
        };
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let body = serde_json::json!({
            "source": format!("{host}:{}", source_dir.display()),
            "items": stats.items,
            "bytes": stats.bytes,
            "failures": stats.failures,
            "skipped": stats.skipped,
            "duration_ms": stats.duration_ms,
        });
        let answer = service
            .client
            .post(service.url(&["moves", &move_id], None))
            .bearer_auth(service.token.as_str())
            .json(&body)
            .send()
            .await
            .map_err(|e| unreachable(&service_text, &e))?;
        if answer.status() != StatusCode::CREATED {
            return Err(answered(answer, "the move's record").await);
        }
        let record = atrest::audit::Record::new(
            atrest::audit::Text::lossy(moves::JOURNAL_ACTOR),
            stats.event(&move_id, "source", &service_text),
        );
        block_in_place(|| journal.append(&[record]))?;
        report.move_stats = Some(stats);
    }
    Ok(report)
}

/// Removes an item from the source once it is stored, if it is still what
/// was read (`--remove-source`). Blocks.
fn remove(root: &OwnedFd, path: &RelPath, seen: Seen, report: &mut Report) {
    match block_in_place(|| walk::remove_item(root, path, |stat| seen.matches(stat))) {
        Ok(true) => report.removed += 1,
        Ok(false) => report.skipped.push(Item {
            item: path.display(),
            reason: "moved, but left in the source: it changed since it was moved".into(),
        }),
        Err(error) => report.skipped.push(Item {
            item: path.display(),
            reason: format!("moved, but left in the source: it cannot be removed: {error}"),
        }),
    }
}

/// An item's bytes for one attempt: in memory, or its file read as it is
/// sent, hashed on the way, failing at its end if it changed.
enum Body {
    Whole(bytes::Bytes),
    Streamed(std::fs::File),
}

/// Sends one item (retrying what may be transient), and says what came of
/// it.
async fn send(
    service: &Service,
    found: &Walk,
    move_id: &str,
    (path, name, item): (RelPath, String, String),
    mut conditional: bool,
) -> Sent {
    let failed = |line: ItemLine, reason: String| Sent {
        path: path.clone(),
        line: ItemLine {
            outcome: ItemOutcome::Failed,
            ..line
        },
        reason: Some(reason),
        seen: None,
        answerless: false,
    };
    let mut line = ItemLine {
        item: item.clone(),
        name: name.clone(),
        len: 0,
        mtime_ns: 0,
        sha256: String::new(),
        outcome: ItemOutcome::Failed,
        http: 0,
        file: String::new(),
        version: 0,
        bytes: 0,
    };
    let url = service.url(&["files"], Some(&name));
    let request_id = moves::request_id(move_id, &item);
    let mut last = String::new();
    let mut answered_once = false;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        // Opened (and a small item read) again for every attempt.
        let opened = block_in_place(|| -> Result<(Body, Seen), String> {
            let file = walk::open_item(&found.root, &path).map_err(|e| e.to_string())?;
            let seen = Seen::of(&file).map_err(|e| e.to_string())?;
            if seen.len <= READ_WHOLE {
                let (bytes, seen) = read_whole(&file, seen)?;
                Ok((Body::Whole(bytes.into()), seen))
            } else {
                Ok((Body::Streamed(file), seen))
            }
        });
        let (body, seen) = match opened {
            Ok(opened) => opened,
            Err(reason) => return failed(line, reason),
        };
        line.len = seen.len;
        line.mtime_ns = seen.mtime_ns;
        let hasher = Arc::new(Mutex::new(sha2::Sha256::new()));
        let changed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let body = match body {
            Body::Whole(bytes) => {
                hasher
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .update(&bytes);
                reqwest::Body::from(bytes)
            }
            Body::Streamed(file) => {
                let (hasher, changed) = (hasher.clone(), changed.clone());
                let stream = streamed(file, seen)
                    .inspect_ok(move |chunk| {
                        hasher
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .update(chunk);
                    })
                    .inspect_err(move |error| {
                        if error.to_string() == CHANGED {
                            changed.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                    });
                reqwest::Body::wrap_stream(stream)
            }
        };
        let mut request = service
            .client
            .put(url.clone())
            .bearer_auth(service.token.as_str())
            .header("x-request-id", request_id.as_str())
            .header(header::CONTENT_LENGTH, seen.len)
            .body(body);
        if conditional {
            request = request.header(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        }
        let answer = request.send().await;
        if changed.load(std::sync::atomic::Ordering::SeqCst) {
            // The body stopped short: the service stored nothing.
            return failed(line, CHANGED.to_owned());
        }
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                // No answer: it may have been stored. Every later attempt
                // asks first.
                conditional = true;
                last = format!("the service did not answer: {error}");
                continue;
            }
        };
        answered_once = true;
        let status = answer.status();
        line.http = u64::from(status.as_u16());
        line.sha256 = hex::encode(
            hasher
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .finalize(),
        );
        match status {
            StatusCode::CREATED => {
                let tag = entity(answer.headers());
                let stored: serde_json::Value = answer.json().await.unwrap_or_default();
                let Some((file, version)) = tag else {
                    return failed(line, "the answer has no entity tag".into());
                };
                let bytes = stored
                    .get("bytes")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(seen.len);
                return held(
                    path,
                    line,
                    ItemOutcome::Stored,
                    (file, version, bytes),
                    seen,
                );
            }
            StatusCode::PRECONDITION_FAILED => {
                // Stored already, by an earlier attempt: which version?
                let head = service
                    .client
                    .head(url.clone())
                    .bearer_auth(service.token.as_str())
                    .send()
                    .await;
                let head = match head {
                    Ok(head) if head.status() == StatusCode::OK => head,
                    Ok(head) => {
                        last = format!("HEAD after 412: HTTP {}", head.status().as_u16());
                        continue;
                    }
                    Err(error) => {
                        last = format!("the service did not answer: {error}");
                        continue;
                    }
                };
                let Some((file, version)) = entity(head.headers()) else {
                    return failed(line, "the answer has no entity tag".into());
                };
                let bytes = head
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                if bytes != seen.len {
                    return failed(
                        line,
                        format!(
                            "the service holds another file under this name ({bytes} bytes, not {})",
                            seen.len
                        ),
                    );
                }
                return held(
                    path,
                    line,
                    ItemOutcome::AlreadyStored,
                    (file, version, bytes),
                    seen,
                );
            }
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::BAD_GATEWAY
            | StatusCode::GATEWAY_TIMEOUT => {
                last = format!("HTTP {}", status.as_u16());
            }
            _ => {
                let said = answered(answer, &name).await;
                return failed(line, said.to_string());
            }
        }
    }
    Sent {
        answerless: !answered_once,
        ..failed(line, last)
    }
}

/// An item the service holds: `outcome`, as `(file, version, bytes)`.
fn held(
    path: RelPath,
    line: ItemLine,
    outcome: ItemOutcome,
    (file, version, bytes): (String, u64, u64),
    seen: Seen,
) -> Sent {
    Sent {
        path,
        line: ItemLine {
            outcome,
            file,
            version,
            bytes,
            ..line
        },
        reason: None,
        seen: Some(seen),
        answerless: false,
    }
}

/// Bytes of a streamed item read at a time.
const STREAM_CHUNK: u64 = 256 << 10;

/// A large item's bytes, exactly the length `seen` declares, checked
/// before the last of them is handed on: an item that changed (grew,
/// shrank, was written to) ends the body with an error instead, so the
/// upload never completes and the service stores nothing. (The client
/// stops reading a body once its declared length is sent: a check after
/// it would never run.)
fn streamed(
    file: std::fs::File,
    seen: Seen,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    let probe = file.try_clone();
    let file = tokio::fs::File::from_std(file);
    futures_util::stream::try_unfold(
        (file, probe, 0_u64),
        move |(mut file, probe, sent)| async move {
            let probe = probe?;
            if sent >= seen.len {
                return Ok(None);
            }
            let want = usize::try_from((seen.len - sent).min(STREAM_CHUNK)).unwrap_or(1 << 18);
            let mut buffer = vec![0_u8; want];
            let mut filled = 0;
            while filled < want {
                let rest = buffer.get_mut(filled..).unwrap_or_default();
                let read = tokio::io::AsyncReadExt::read(&mut file, rest).await?;
                if read == 0 {
                    // Shorter than it was.
                    return Err(std::io::Error::other(CHANGED));
                }
                filled += read;
            }
            let sent = sent + want as u64;
            if sent == seen.len && Seen::of(&probe)? != seen {
                return Err(std::io::Error::other(CHANGED));
            }
            Ok(Some((bytes::Bytes::from(buffer), (file, Ok(probe), sent))))
        },
    )
}

/// The file id and version an entity tag names (`"FILE.VERSION"`).
fn entity(headers: &header::HeaderMap) -> Option<(String, u64)> {
    let tag = headers.get(header::ETAG)?.to_str().ok()?;
    let (file, version) = tag.strip_prefix('"')?.strip_suffix('"')?.rsplit_once('.')?;
    Some((file.to_owned(), version.parse().ok()?))
}

/// The service could not be reached.
fn unreachable(service: &str, error: &reqwest::Error) -> Error {
    let (kind, message) = client::no_answer(service, error);
    Error::Service { kind, message }
}

/// The service's error answer about `what`, as an error of its kind.
async fn answered(answer: reqwest::Response, what: &str) -> Error {
    let (kind, message) = client::error_answer(answer, what).await;
    Error::Service { kind, message }
}
