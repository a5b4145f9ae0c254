//! The local mode: items sealed into the deployment directory on this
//! machine, in batches, with the move manifest (see [`super::manifest`]).

use std::os::unix::ffi::OsStrExt as _;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use atrest::audit::{Event, Text};
use atrest::tenant::Access;
use atrest::{BatchItem, BlobName};
use atrest_deployment::{self as deployment, Deployment, Options};
use tokio::io::AsyncBufRead;
use tokio::task::block_in_place;

use super::item::{READ_WHOLE, Seen, Unchanged, read_whole};
use super::manifest::{Manifest, Origin, Pending};
use super::walk::{self, RelPath};
use super::{ACTOR, Args, Error, Item, Report, Resumed};

/// An item's plaintext: in memory, or its file read as it is sealed.
type Plaintext = Box<dyn AsyncBufRead + Send + Unpin>;

/// An item ready to move: its destination name, origin and plaintext.
struct Ready {
    path: RelPath,
    name: String,
    origin: Origin,
    /// What the item was when it was read.
    seen: Seen,
    plaintext: Plaintext,
}

/// The local mode: the move into the deployment directory `--data`.
pub(super) async fn run(args: &Args, prefix: String) -> Result<Report, Error> {
    let deployment = Deployment::open(&args.data, Options::new(ACTOR)).await?;
    // An unknown tenant stops the move before anything is read.
    let tenant_id = deployment.tenant_id(&args.tenant).await?;
    let principal = format!("{ACTOR}@{}", args.tenant);
    let access = Access::User {
        principal: &principal,
    };
    let source_dir = std::path::absolute(&args.source).map_err(|source| Error::Source {
        path: args.source.clone(),
        source,
    })?;

    let started = Instant::now();
    let found = block_in_place(|| walk::walk(&args.source)).map_err(|source| Error::Source {
        path: args.source.clone(),
        source,
    })?;
    let (manifest, settled) = Manifest::open(&args.data, tenant_id, deployment.files()).await?;
    let mut report = Report::of_walk(&args.tenant, &prefix, &found);
    report.resumed = Resumed {
        stored: settled.stored,
        not_stored: settled.not_stored,
    };
    let bar = super::progress_bar(args, found.files.len());

    // Items are opened in order and handed out in batches, `jobs` batches
    // moved at once.
    let items = Mutex::new(found.files.iter());
    let report = Mutex::new(report);
    let next_batch = || -> Vec<Ready> {
        let mut batch = Vec::with_capacity(usize::from(args.batch));
        let mut items = items.lock().unwrap_or_else(PoisonError::into_inner);
        while batch.len() < usize::from(args.batch) {
            let Some(path) = items.next() else { break };
            let prepared = prepare(&found.root, &source_dir, &prefix, path, &manifest);
            let mut report = report.lock().unwrap_or_else(PoisonError::into_inner);
            match prepared {
                Ok(Some(ready)) => batch.push(ready),
                Ok(None) => {
                    report.already_moved += 1;
                    bar.inc(1);
                }
                Err(reason) => {
                    report.fail(path, reason);
                    bar.inc(1);
                }
            }
        }
        batch
    };
    let move_batches = async || -> Result<(), Error> {
        loop {
            // Opening and reading items are file calls.
            let batch = block_in_place(next_batch);
            if batch.is_empty() {
                return Ok(());
            }
            let done = batch.len() as u64;
            move_batch(
                &deployment,
                &manifest,
                &found.root,
                &access,
                args,
                batch,
                &report,
            )
            .await?;
            bar.inc(done);
        }
    };
    let outcomes = futures_util::future::join_all((0..args.jobs).map(|_| move_batches())).await;
    let outcome = outcomes.into_iter().collect::<Result<(), Error>>();
    bar.finish_and_clear();
    let mut report = report.into_inner().unwrap_or_else(PoisonError::into_inner);
    report.failed.sort_by(|a, b| a.item.cmp(&b.item));
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

    let skipped = report.already_moved + report.skipped.len() as u64;
    let event = Event::DataMove {
        source: Text::lossy(format!("directory {}", args.source.display())),
        destination: Text::lossy(format!(
            "tenant {}, blob store {}",
            args.tenant,
            deployment.blobs().location()
        )),
        items: report.items,
        bytes: report.bytes,
        failures: report.failures,
        skipped,
        duration_ms: report.duration_ms,
    };
    // The record of what was done is written even if a batch failed as a
    // whole; then the run fails.
    deployment
        .record_event(event, Some(&args.tenant), Some(&principal))
        .await?;
    outcome?;
    Ok(report)
}

/// Opens an item and decides whether it needs moving (`None`: an earlier
/// run moved it, unchanged); an item that does is read whole if it is
/// small. Blocks.
fn prepare(
    root: &std::os::fd::OwnedFd,
    source_dir: &std::path::Path,
    prefix: &str,
    path: &RelPath,
    manifest: &Manifest,
) -> Result<Option<Ready>, String> {
    let relative = path
        .to_str()
        .ok_or("its name is not valid UTF-8 (file names are text)")?;
    let name = format!("{prefix}{relative}");
    let file = walk::open_item(root, path).map_err(|e| e.to_string())?;
    let mut seen = Seen::of(&file).map_err(|e| e.to_string())?;
    let mut source = source_dir.as_os_str().as_bytes().to_vec();
    source.push(b'/');
    source.extend_from_slice(&path.to_bytes());
    let origin = Origin {
        source,
        len: seen.len,
        mtime_ns: seen.mtime_ns,
    };
    if manifest.already_moved(&name, &origin) {
        return Ok(None);
    }
    let plaintext: Plaintext = if origin.len <= READ_WHOLE {
        let (bytes, now) = read_whole(&file, seen)?;
        seen = now;
        Box::new(std::io::Cursor::new(bytes))
    } else {
        Box::new(tokio::io::BufReader::with_capacity(
            1 << 20,
            Unchanged::new(file, seen).map_err(|e| e.to_string())?,
        ))
    };
    let origin = Origin {
        len: seen.len,
        mtime_ns: seen.mtime_ns,
        ..origin
    };
    Ok(Some(Ready {
        path: path.clone(),
        name,
        origin,
        seen,
        plaintext,
    }))
}

/// Moves one batch: pending in the manifest (durably), sealed, then marked.
async fn move_batch(
    deployment: &Deployment,
    manifest: &Manifest,
    root: &std::os::fd::OwnedFd,
    access: &Access<'_>,
    args: &Args,
    batch: Vec<Ready>,
    report: &Mutex<Report>,
) -> Result<(), Error> {
    let mut blobs = Vec::with_capacity(batch.len());
    for _ in &batch {
        blobs.push(BlobName::random().map_err(deployment::Error::from)?);
    }
    let pending: Vec<Pending<'_>> = batch
        .iter()
        .zip(&blobs)
        .map(|(ready, blob)| Pending {
            name: &ready.name,
            origin: &ready.origin,
            blob,
        })
        .collect();
    block_in_place(|| manifest.begin(&pending))?;
    drop(pending);
    let mut paths = Vec::with_capacity(batch.len());
    let mut names = Vec::with_capacity(batch.len());
    let mut items = Vec::with_capacity(batch.len());
    for (ready, blob) in batch.into_iter().zip(blobs) {
        paths.push((ready.path, ready.seen));
        names.push(ready.name.clone());
        items.push(BatchItem {
            name: ready.name,
            blob,
            plaintext: ready.plaintext,
            request: None,
            media_type: None,
        });
    }
    let results = deployment
        .put_batch(access, &args.tenant, items, usize::from(args.threads))
        .await?;
    let mut stored = Vec::new();
    let mut stored_paths = Vec::new();
    let mut failed = Vec::new();
    let mut tally = report.lock().unwrap_or_else(PoisonError::into_inner);
    for (((path, seen), name), result) in paths.iter().zip(&names).zip(results) {
        match result {
            Ok(put) => {
                tally.items += 1;
                tally.bytes += put.record.plaintext_len;
                stored.push(name.as_str());
                stored_paths.push((path, seen));
            }
            Err(error) => {
                tally.fail(path, error);
                failed.push(name.as_str());
            }
        }
    }
    drop(tally);
    block_in_place(|| manifest.finish(&stored, &failed))?;
    if args.remove_source {
        // Durable and recorded: the source copy can go, if it is still
        // what was read.
        let removed = block_in_place(|| {
            let mut removed = 0;
            let mut kept = Vec::new();
            for (path, seen) in stored_paths {
                match walk::remove_item(root, path, |stat| seen.matches(stat)) {
                    Ok(true) => removed += 1,
                    Ok(false) => kept.push((path, "changed since it was moved: kept".to_owned())),
                    Err(error) => kept.push((path, format!("cannot be removed: {error}"))),
                }
            }
            (removed, kept)
        });
        let mut report = report.lock().unwrap_or_else(PoisonError::into_inner);
        report.removed += removed.0;
        for (path, why) in removed.1 {
            report.skipped.push(Item {
                item: path.display(),
                reason: format!("moved, but left in the source: it {why}"),
            });
        }
    }
    Ok(())
}
