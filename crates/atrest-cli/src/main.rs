//! `atrest`: seal and open tenant files from the command line.
//!
//! A thin program over a deployment directory
//! ([`atrest_deployment`]): argument parsing and output only.
//! `atrest --help` lists the commands; `atrest demo` runs the whole model
//! on the embedded defaults in a fresh directory and prints a short report.

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod demo;
mod exit;
mod output;
mod staging;

use std::process::ExitCode;

use clap::Parser as _;

use atrest_deployment::{MetadataConfig, Setup};

use crate::cli::{Cli, Command};
use crate::commands::GetArgs;
use crate::exit::{Error, exit_code};
use crate::output::Output;

/// This program's name in the audit trail.
pub(crate) const ACTOR: &str = "atrest-cli";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    // Every file and directory this program creates (keys, databases, the
    // audit log, blobs, outputs) is its owner's only.
    let _ = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    staging::install_interrupt_cleanup();
    let json = cli.json;
    // Where a JSON error goes: never into plaintext on standard output.
    let data_on_stdout = matches!(
        &cli.command,
        Command::Get { output, .. }
            if output.as_ref().is_none_or(|o| o.as_os_str() == "-")
    );
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            what: "the async runtime".into(),
            source,
        })
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        // Standard output was closed or failed (a message said why).
        Ok(()) if atrest_cli::print::stdout_failed() => ExitCode::from(1),
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = exit_code(&error);
            atrest_cli::errln!("atrest: {error}");
            if json {
                let report = serde_json::json!({ "error": error.to_string(), "exit": code });
                if data_on_stdout {
                    atrest_cli::errln!("{report}");
                } else {
                    atrest_cli::outln!("{report}");
                }
            }
            ExitCode::from(code)
        }
    }
}

/// Reports a command line clap could not parse (help and version are not
/// errors), as JSON on standard output too when `--json` was given.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
    }
    let _ = error.print();
    if std::env::args_os().any(|arg| arg == "--json") {
        let message = error.render().to_string();
        let first = message.lines().next().unwrap_or_default();
        let first = first.strip_prefix("error: ").unwrap_or(first);
        atrest_cli::outln!("{}", serde_json::json!({ "error": first, "exit": 2 }));
    }
    ExitCode::from(2)
}

async fn run(cli: Cli) -> Result<(), Error> {
    let out = Output { json: cli.json };
    let data = cli.data.as_path();
    match cli.command {
        Command::Init {
            blobs,
            audit_witness,
            metadata,
            metadata_url_env,
            replicas,
            copies,
        } => {
            let metadata = match (metadata, metadata_url_env) {
                (None, None) => MetadataConfig::Sqlite,
                (url, url_env) => MetadataConfig::Postgres { url, url_env },
            };
            commands::init(
                data,
                out,
                Setup {
                    blobs,
                    audit_witness,
                    metadata,
                    replicas,
                    copies,
                },
            )
            .await
        }
        Command::Kms(command) => commands::kms(data, out, command).await,
        Command::Tenant(command) => commands::tenant(data, out, command).await,
        Command::Put {
            tenant,
            file,
            name,
            principal,
        } => commands::put(data, out, &tenant, &file, name, principal).await,
        Command::Get {
            tenant,
            name,
            output,
            range,
            version,
            principal,
        } => {
            commands::get(
                data,
                out,
                GetArgs {
                    tenant,
                    name,
                    output,
                    range,
                    version,
                    principal,
                },
            )
            .await
        }
        Command::Ls { tenant } => commands::ls(data, out, tenant.as_deref()).await,
        Command::Rotate(command) => commands::rotate(data, out, command).await,
        Command::Revoke { tenant, key } => commands::revoke(data, out, &tenant, &key).await,
        Command::Purge { tenant, yes } => commands::purge(data, out, &tenant, yes).await,
        Command::Gc {
            dry_run,
            older_than,
        } => commands::gc(data, out, dry_run, older_than.into()).await,
        Command::Blobs(command) => commands::blobs(data, out, command).await,
        Command::Audit(command) => commands::audit(data, out, command).await,
        Command::Demo { dir, size_mib } => demo::run(dir, size_mib, out).await,
    }
}
