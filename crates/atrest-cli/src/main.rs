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

use atrest_cli::outcome::{self, Json};
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
            | Command::Meeting(cli::MeetingCommand::Fetch { output, .. })
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
        Ok(()) if atrest_cli::print::stdout_failed() => ExitCode::from(outcome::FAILED),
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = exit_code(&error);
            let to = match (json, data_on_stdout) {
                (false, _) => Json::Off,
                (true, false) => Json::Stdout,
                (true, true) => Json::Stderr,
            };
            outcome::report("atrest", &error.to_string(), code, to);
            ExitCode::from(code)
        }
    }
}

/// Reports a command line clap could not parse, as every failure is
/// reported.
fn usage_error(error: &clap::Error) -> ExitCode {
    ExitCode::from(outcome::report_usage("atrest", error))
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
        Command::Ls {
            tenant,
            name,
            prefix,
            versions,
        } => {
            let select = commands::Select {
                tenant: tenant.as_deref(),
                name: name.as_deref(),
                prefix: prefix.as_deref(),
                versions,
            };
            commands::ls(data, out, &select).await
        }
        Command::Rotate(command) => commands::rotate(data, out, command).await,
        Command::Revoke { tenant, key } => commands::revoke(data, out, &tenant, &key).await,
        Command::Purge { tenant, yes } => commands::purge(data, out, &tenant, yes).await,
        Command::Rm {
            tenant,
            name,
            version,
            principal,
            later,
        } => commands::rm(data, out, (&tenant, &name, version), principal, later).await,
        Command::Erase { tenant } => commands::erase(data, out, &tenant).await,
        Command::Gc {
            dry_run,
            older_than,
        } => commands::gc(data, out, dry_run, older_than.into()).await,
        Command::Blobs(command) => commands::blobs(data, out, command).await,
        Command::Meeting(command) => commands::meeting(data, out, command).await,
        Command::Audit(command) => commands::audit(data, out, command).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "atrest", &mut script);
            write_stdout(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut page)
                .map_err(Error::stdout)?;
            write_stdout(&page)
        }
        Command::Demo {
            dir,
            keep,
            size_mib,
        } => demo::run(dir, keep, size_mib, out).await,
    }
}

/// Writes `bytes` to standard output (a reader that went away ends it
/// quietly, as every other output does).
fn write_stdout(bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(Error::stdout),
    }
}
