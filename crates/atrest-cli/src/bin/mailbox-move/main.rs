//! `mailbox-move`: moves a directory of mailbox items into a tenant's
//! encrypted store, streaming each item, and records the move (items,
//! bytes, failures, duration) in the audit trail.
//!
//! ```text
//! mailbox-move [--data DIR] [--json] TENANT SOURCE_DIR [--mailbox NAME]
//! ```
//!
//! Each regular file under `SOURCE_DIR` becomes the file
//! `mailbox/NAME/<path>` of `TENANT` in the deployment at `DIR` (see
//! `atrest init`). Symbolic links are not followed: they are reported as
//! skipped, as are other special files. An item (or a subdirectory) that
//! cannot be read is reported as failed and the move goes on. Exit status:
//! 0 all items moved, 1 some items failed, 2 the move could not run.
//!
//! It lives in the `atrest-cli` package, next to `atrest`, because it is an
//! operator job on the same deployment directory, not an example of
//! composing the libraries: it shares the deployment module, and its
//! directory walking stays out of the libraries.

#![forbid(unsafe_code)]

mod walk;

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use atrest::audit::{Event, Text};
use atrest::tenant::Access;
use atrest_cli::deployment::{self, Deployment, Options};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// This program's name in the audit trail.
const ACTOR: &str = "mailbox-move";

/// Move a directory of mailbox items into a tenant's encrypted store.
#[derive(Parser)]
#[command(name = "mailbox-move", version)]
struct Args {
    /// The deployment directory.
    #[arg(long, env = "ATREST_DATA", default_value = "atrest-data")]
    data: std::path::PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The destination tenant.
    tenant: String,
    /// The directory of mailbox items.
    source: std::path::PathBuf,
    /// The mailbox's name (default: the source directory's name).
    #[arg(long)]
    mailbox: Option<String>,
}

/// An item that was not moved, and why.
#[derive(Debug, Serialize)]
struct Item {
    /// Its path under the source directory.
    item: String,
    /// Why.
    reason: String,
}

/// What the move did (also, in numbers, in its audit record).
#[derive(Debug, Default, Serialize)]
struct Report {
    /// Items moved.
    items: u64,
    /// Plaintext bytes moved.
    bytes: u64,
    /// Items (and subdirectories) that failed.
    failures: u64,
    /// Each failed item and why.
    failed: Vec<Item>,
    /// Entries left alone: symbolic links and special files.
    skipped: Vec<Item>,
    /// How long it took, in milliseconds.
    duration_ms: u64,
}

/// Why the move could not run.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{}: {source}", path.display())]
    Source {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Deployment(#[from] deployment::Error),
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            print(&args, &report);
            if report.failures == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("mailbox-move: {error}");
            ExitCode::from(2)
        }
    }
}

/// The path of `path` under `source`, for names and reports.
fn relative(source: &Path, path: &Path) -> String {
    path.strip_prefix(source)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Opens a regular file the walk found, refusing it if it has been
/// replaced (by a symbolic link, say) since.
fn open_item(path: &Path) -> std::io::Result<fs::File> {
    let seen = fs::symlink_metadata(path)?;
    if !seen.file_type().is_file() {
        return Err(std::io::Error::other("no longer a regular file"));
    }
    let file = fs::File::open(path)?;
    let opened = file.metadata()?;
    if (opened.dev(), opened.ino()) != (seen.dev(), seen.ino()) {
        return Err(std::io::Error::other("replaced while being opened"));
    }
    Ok(file)
}

fn run(args: &Args) -> Result<Report, Error> {
    let mailbox = args
        .mailbox
        .clone()
        .or_else(|| {
            args.source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "mailbox".into());
    let prefix = format!("mailbox/{mailbox}/");
    let deployment = Deployment::open(&args.data, Options::new(ACTOR))?;
    // An unknown tenant stops the move before anything is read.
    let _ = deployment.tenant_id(&args.tenant)?;
    let principal = format!("{ACTOR}@{}", args.tenant);
    let access = Access::User {
        principal: &principal,
    };

    let started = Instant::now();
    let found = walk::walk(&args.source).map_err(|source| Error::Source {
        path: args.source.clone(),
        source,
    })?;
    let mut report = Report::default();
    for (path, error) in &found.unreadable {
        report.failures += 1;
        report.failed.push(Item {
            item: relative(&args.source, path),
            reason: error.to_string(),
        });
    }
    for (path, why) in &found.skipped {
        report.skipped.push(Item {
            item: relative(&args.source, path),
            reason: (*why).to_owned(),
        });
    }

    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(found.files.len() as u64)
    };
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {wide_msg}") {
        bar.set_style(style);
    }
    for path in &found.files {
        let item = relative(&args.source, path);
        bar.set_message(item.clone());
        let name = format!("{prefix}{item}");
        let moved = open_item(path).map_err(|e| e.to_string()).and_then(|file| {
            deployment
                .put(&args.tenant, &name, &access, file)
                .map_err(|e| e.to_string())
        });
        match moved {
            Ok(put) => {
                report.items += 1;
                report.bytes += put.record.plaintext_len;
            }
            Err(reason) => {
                report.failures += 1;
                report.failed.push(Item { item, reason });
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

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
        duration_ms: report.duration_ms,
    };
    deployment.record_event(event, Some(&args.tenant), Some(&principal))?;
    Ok(report)
}

fn print(args: &Args, report: &Report) {
    if args.json {
        match serde_json::to_string_pretty(report) {
            Ok(json) => println!("{json}"),
            Err(error) => eprintln!("mailbox-move: {error}"),
        }
        return;
    }
    println!(
        "moved {} items ({} bytes) into {} in {} ms; {} failed, {} skipped",
        report.items,
        report.bytes,
        args.tenant,
        report.duration_ms,
        report.failures,
        report.skipped.len()
    );
    for failed in &report.failed {
        println!("  failed: {}: {}", failed.item, failed.reason);
    }
    for skipped in &report.skipped {
        println!("  skipped: {}: {}", skipped.item, skipped.reason);
    }
}
