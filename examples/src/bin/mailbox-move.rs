//! `mailbox-move`: moves a directory of mailbox items into a tenant's
//! encrypted store, streaming each item, and records the move (items,
//! bytes, failures, duration) in the audit trail.
//!
//! ```text
//! mailbox-move [--data DIR] [--json] TENANT SOURCE_DIR [--mailbox NAME]
//! ```
//!
//! Each file under `SOURCE_DIR` becomes the file `mailbox/NAME/<path>` of
//! `TENANT` in the deployment at `DIR` (see `atrest init`). Exit status: 0
//! all items moved, 1 some items failed, 2 the move could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use atrest::deployment::Deployment;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

/// Move a directory of mailbox items into a tenant's encrypted store.
#[derive(Parser)]
#[command(name = "mailbox-move", version)]
struct Args {
    /// The deployment directory.
    #[arg(long, env = "ATREST_DATA", default_value = "atrest-data")]
    data: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The destination tenant.
    tenant: String,
    /// The directory of mailbox items.
    source: PathBuf,
    /// The mailbox's name (default: the source directory's name).
    #[arg(long)]
    mailbox: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mailbox = args
        .mailbox
        .clone()
        .or_else(|| {
            args.source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "mailbox".into());
    let deployment = match Deployment::open(&args.data) {
        Ok(deployment) => deployment,
        Err(error) => {
            eprintln!("mailbox-move: {error}");
            return ExitCode::from(2);
        }
    };
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {wide_msg}") {
        bar.set_style(style);
    }
    let principal = format!("mailbox-move@{}", args.tenant);
    let prefix = format!("mailbox/{mailbox}/");
    let result = deployment.import_directory(
        &args.tenant,
        &args.source,
        &prefix,
        &principal,
        &mut |progress| {
            bar.set_length(progress.total);
            bar.set_position(progress.done);
            bar.set_message(progress.current.clone());
        },
    );
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            eprintln!("mailbox-move: {error}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => eprintln!("mailbox-move: {error}"),
        }
    } else {
        println!(
            "moved {} items ({} bytes) into {}/{prefix} in {} ms; {} failed",
            report.items, report.bytes, args.tenant, report.duration_ms, report.failures
        );
        for (item, error) in &report.failed {
            println!("  failed: {item}: {error}");
        }
    }
    if report.failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
