//! `mailbox-move`: moves a directory of mailbox items into a tenant's
//! encrypted store and records the move (items, bytes, failures, skipped,
//! duration) in the audit trail.
//!
//! ```text
//! mailbox-move [--data DIR] [--json] [--batch N] [--jobs N] [--threads N] TENANT SOURCE_DIR [--mailbox NAME]
//! mailbox-move --to https://SERVICE --token-file FILE [--ca-file PEM] [--journal DIR] [--uploads N] TENANT SOURCE_DIR
//! ```
//!
//! With `--to`, the items go through the upload service over HTTPS instead
//! of into a deployment directory on this machine, and the source keeps a
//! journal of its own; see [`remote`] and [`atrest_cli::moves`]. What follows
//! is the local mode, whose walk, item checks and report the remote mode
//! shares.
//!
//! Each regular file under `SOURCE_DIR` becomes the file
//! `mailbox/NAME/<path>` of `TENANT` in the deployment at `DIR` (see
//! `atrest init`): the prefix keeps mailboxes apart in one tenant, and the
//! report names it. Nothing outside `SOURCE_DIR` is read: symbolic links are
//! not followed (every directory and item is opened relative to its
//! parent, refusing links) but reported as skipped, as are other special
//! files, directories on another file system (mount points) and files
//! with other hard links (whose other names may be outside it). An item (or a subdirectory) that cannot be read, or whose name is
//! not UTF-8, is reported as failed, with its path, and the move goes on.
//!
//! Items are moved in batches (512 items, two batches at once, by
//! default): each batch's file keys, blobs and catalog records are made
//! together, its blobs are flushed to disk together, with one durable
//! catalog commit and one audit commit per batch; an item is reported
//! moved only once its version is durable.
//!
//! The move can be run again: items moved by an earlier run (even one that
//! was killed) are skipped, and each item is stored once; see
//! [`manifest`] for how.
//!
//! An item is read while it is sealed; its size, modification and change
//! times are taken before and checked after, and an item that changed in
//! between is not stored (a copy half of one version and half of another)
//! but reported as failed, to move again once it is still. A small item
//! read whole is read again, up to three times, before that.
//!
//! With `--remove-source`, each item whose version is durable, and that is
//! still what was read, is then removed from the source (directories stay):
//! a move rather than a copy.
//!
//! Exit status: 0 all items moved (or already moved), 1 some items failed;
//! a move that could not run exits as every program of the package does
//! ([`atrest_cli::outcome`]: 2 usage, 3 unknown tenant, 4 refused or purged
//! tenant, 6 unavailable, …), with a JSON report of the error with
//! `--json`.
//!
//! It lives in the `atrest-cli` package, next to `atrest`, because it is an
//! operator job on the same deployment directory, not an example of
//! composing the libraries: it runs on `atrest-deployment`, and its
//! directory walking stays out of the libraries. It enters its async
//! runtime once, in `main`; walking, opening items and its manifest are
//! blocking calls, made where the runtime allows them.

#![forbid(unsafe_code)]

mod item;
mod local;
mod manifest;
mod remote;
mod walk;

use std::process::ExitCode;

use atrest_cli::outcome::{self, Json};
use atrest_deployment as deployment;
use clap::Parser;
use serde::Serialize;

use self::walk::RelPath;

/// This program's name in the audit trail.
const ACTOR: &str = "mailbox-move";

/// Move a directory of mailbox items into a tenant's encrypted store.
///
/// Each item becomes the file `mailbox/MAILBOX/<its path>` of the tenant.
/// Symbolic links are never followed; items that fail (or change while
/// they are read) are reported with their paths and the move goes on. Run
/// it again to resume: items already moved (and durably stored) are
/// skipped, each item is stored once. The move manifest is
/// `mailbox-move.sqlite` in the deployment directory.
#[derive(Parser)]
#[command(name = "mailbox-move", version, after_help = outcome::EXIT_CODES)]
struct Args {
    /// The deployment directory.
    #[arg(long, env = "ATREST_DATA", default_value = "atrest-data")]
    data: std::path::PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Items per batch (one durable catalog commit each).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u16).range(1..))]
    batch: u16,
    /// Batches moved at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Items of a batch written at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// The destination tenant.
    tenant: String,
    /// The directory of mailbox items.
    source: std::path::PathBuf,
    /// The mailbox's name (default: the source directory's name): items
    /// are named `mailbox/MAILBOX/<path>` in the tenant.
    #[arg(long)]
    mailbox: Option<String>,
    /// Remove each item from the source once its version is durable (if it
    /// is still what was read): a move rather than a copy. Directories
    /// stay.
    #[arg(long)]
    remove_source: bool,
    /// Move through the upload service at this address (`https://HOST:PORT`,
    /// http:// to a loopback address only) instead of into a deployment
    /// directory: each item is uploaded as the principal of the bearer
    /// token given, and the source keeps its own journal (--journal).
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// With --to: a file holding the bearer token (mode 600) of a service
    /// principal of the tenant (`atrest-serve token add mailbox-move@TENANT`).
    #[arg(
        long,
        value_name = "FILE",
        requires = "to",
        conflicts_with = "token_env"
    )]
    token_file: Option<std::path::PathBuf>,
    /// With --to: the environment variable holding the bearer token.
    #[arg(long, value_name = "VAR", requires = "to")]
    token_env: Option<String>,
    /// With --to: a PEM file of the CA that issued the service's
    /// certificate (a private CA), trusted besides the system's.
    #[arg(long, value_name = "PEM", requires = "to")]
    ca_file: Option<std::path::PathBuf>,
    /// With --to: the source's journal of moves, a signed, hash-chained log
    /// of each item sent and each move's statistics (made on first use; it
    /// prints its verifying key then). Outside the source directory.
    #[arg(
        long,
        value_name = "DIR",
        requires = "to",
        default_value = "mailbox-move-journal"
    )]
    journal: std::path::PathBuf,
    /// With --to: uploads in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    uploads: u16,
}

/// An item that was not moved, and why.
#[derive(Debug, Serialize)]
struct Item {
    /// Its path under the source directory (bytes that are not UTF-8
    /// written `\xNN`).
    item: String,
    /// Why.
    reason: String,
}

/// What the move did (also, in numbers, in its audit record).
#[derive(Debug, Default, Serialize)]
struct Report {
    /// The destination tenant.
    tenant: String,
    /// What each item's name begins with in the tenant.
    prefix: String,
    /// Items moved.
    items: u64,
    /// Plaintext bytes moved.
    bytes: u64,
    /// Items (and subdirectories) that failed.
    failures: u64,
    /// Each failed item and why.
    failed: Vec<Item>,
    /// Items an earlier run already moved, skipped.
    already_moved: u64,
    /// Entries left alone: symbolic links and special files.
    skipped: Vec<Item>,
    /// Items an interrupted earlier run had left pending: found stored
    /// (and skipped), or not stored (and moved again).
    resumed: Resumed,
    /// Items removed from the source (`--remove-source`).
    removed: u64,
    /// How long it took, in milliseconds.
    duration_ms: u64,
    /// With --to: items not sent because the service stopped answering
    /// (counted among the failures; the next run sends them).
    #[serde(skip_serializing_if = "is_zero")]
    not_sent: u64,
    /// With --to: the move's id (the same in the service's trail).
    #[serde(skip_serializing_if = "Option::is_none")]
    move_id: Option<String>,
    /// With --to: the statistics of the move, once complete (recorded on
    /// both sides).
    #[serde(skip_serializing_if = "Option::is_none")]
    move_stats: Option<atrest_cli::moves::MoveStats>,
}

/// What settling an interrupted run found.
#[derive(Debug, Default, Serialize)]
struct Resumed {
    /// Pending items the catalog had stored.
    stored: u64,
    /// Pending items it had not.
    not_stored: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Report {
    /// The report of a move of `found` into `tenant` under `prefix`, with
    /// what the walk could not read (failed) or left alone (skipped).
    fn of_walk(tenant: &str, prefix: &str, found: &walk::Walk) -> Self {
        let mut report = Self {
            tenant: tenant.to_owned(),
            prefix: prefix.to_owned(),
            ..Self::default()
        };
        for (path, error) in &found.unreadable {
            report.fail(path, error);
        }
        for (path, why) in &found.skipped {
            report.skipped.push(Item {
                item: path.display(),
                reason: (*why).to_owned(),
            });
        }
        report
    }

    fn fail(&mut self, item: &RelPath, reason: impl ToString) {
        self.failures += 1;
        self.failed.push(Item {
            item: item.display(),
            reason: reason.to_string(),
        });
    }
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
    #[error(
        "{}: the directory's name is not UTF-8; name the mailbox with --mailbox",
        path.display()
    )]
    MailboxName { path: std::path::PathBuf },
    #[error(transparent)]
    Deployment(#[from] deployment::Error),
    #[error(transparent)]
    Manifest(#[from] manifest::Error),
    #[error("{message}")]
    Usage { message: String },
    #[error(transparent)]
    Journal(#[from] atrest_cli::moves::JournalError),
    #[error("{message}")]
    Service {
        kind: atrest::ErrorKind,
        message: String,
    },
}

impl Error {
    /// Its exit code, by the convention of every program of the package.
    fn exit_code(&self) -> u8 {
        match self {
            Self::Source { .. } => outcome::FAILED,
            Self::MailboxName { .. } => outcome::USAGE,
            Self::Deployment(error) => outcome::kind_code(error.kind()),
            Self::Manifest(error) => error.exit_code(),
            Self::Usage { .. } => outcome::USAGE,
            Self::Journal(_) => outcome::FAILED,
            Self::Service { kind, .. } => outcome::kind_code(*kind),
        }
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => return ExitCode::from(outcome::report_usage("mailbox-move", &error)),
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Source {
            path: "(the async runtime)".into(),
            source,
        })
        .and_then(|runtime| runtime.block_on(run(&args)));
    match result {
        Ok(report) => {
            print(&args, &report);
            if report.failures == 0 && !atrest_cli::print::stdout_failed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            let code = error.exit_code();
            let json = if args.json { Json::Stdout } else { Json::Off };
            outcome::report("mailbox-move", &error.to_string(), code, json);
            ExitCode::from(code)
        }
    }
}

async fn run(args: &Args) -> Result<Report, Error> {
    let mailbox = match (&args.mailbox, args.source.file_name()) {
        (Some(name), _) => name.clone(),
        (None, Some(name)) => name
            .to_str()
            .ok_or_else(|| Error::MailboxName {
                path: args.source.clone(),
            })?
            .to_owned(),
        (None, None) => "mailbox".into(),
    };
    let prefix = format!("mailbox/{mailbox}/");
    if let Some(url) = &args.to {
        let journal = std::path::absolute(&args.journal).map_err(|source| Error::Source {
            path: args.journal.clone(),
            source,
        })?;
        let source = std::path::absolute(&args.source).map_err(|source| Error::Source {
            path: args.source.clone(),
            source,
        })?;
        if journal.starts_with(&source) {
            return Err(Error::Usage {
                message: format!(
                    "the journal {} is inside the source directory: give --journal elsewhere",
                    journal.display()
                ),
            });
        }
        let service = remote::Service::new(args, url)?;
        return remote::run(args, &service, &prefix, &journal).await;
    }
    local::run(args, prefix).await
}

/// The progress bar of `items` items (hidden with `--json`).
fn progress_bar(args: &Args, items: usize) -> indicatif::ProgressBar {
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(items as u64)
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} items {per_sec} {eta} {wide_msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn print(args: &Args, report: &Report) {
    if args.json {
        match serde_json::to_string_pretty(report) {
            Ok(json) => atrest_cli::outln!("{json}"),
            Err(error) => atrest_cli::errln!("mailbox-move: {error}"),
        }
        return;
    }
    atrest_cli::outln!(
        "moved {} items ({} bytes) into tenant {}, named {}<path>, in {} ms; {} failed, {} already moved, {} skipped",
        report.items,
        report.bytes,
        report.tenant,
        report.prefix,
        report.duration_ms,
        report.failures,
        report.already_moved,
        report.skipped.len()
    );
    if args.remove_source {
        atrest_cli::outln!("  removed {} items from the source", report.removed);
    }
    if report.resumed.stored + report.resumed.not_stored > 0 {
        atrest_cli::outln!(
            "  resumed an interrupted move: {} of its pending items were stored, {} moved again",
            report.resumed.stored,
            report.resumed.not_stored
        );
    }
    for failed in &report.failed {
        atrest_cli::outln!("  failed: {}: {}", failed.item, failed.reason);
    }
    for skipped in &report.skipped {
        atrest_cli::outln!("  skipped: {}: {}", skipped.item, skipped.reason);
    }
    if report.not_sent > 0 {
        atrest_cli::outln!(
            "  {} items not sent: the service stopped answering (run the same command again to resume)",
            report.not_sent
        );
    }
    if let Some(id) = &report.move_id {
        match &report.move_stats {
            Some(stats) => atrest_cli::outln!(
                "  move {id} complete: {} items, {} bytes in {} ms ({} bytes/s), recorded in the journal and by the service",
                stats.items,
                stats.bytes,
                stats.duration_ms,
                stats.bytes_per_second()
            ),
            None => atrest_cli::outln!(
                "  move {id} not complete: run the same command again to resume it"
            ),
        }
    }
}
