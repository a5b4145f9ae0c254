//! `atrest-serve`: the upload service — tenant files sealed inside the
//! HTTP upload request, before any byte reaches storage, and opened on the
//! way out — and the commands that manage its bearer tokens.
//!
//! A thin program over a deployment directory
//! ([`atrest_cli::deployment::Deployment`], made by `atrest init`): every
//! decision — names, the release policy, keys, the catalog, blobs, the
//! audit trail — is the library's. The service adds HTTP ([`service`]),
//! bearer tokens ([`tokens`]) and request ids. It keeps no state of its
//! own: instances that share a deployment's catalog, blobs and key
//! services (PostgreSQL, an object store, OpenBao or PKCS#11 tokens) serve
//! the same files.

#![forbid(unsafe_code)]

mod batch;
mod bridge;
mod range;
mod service;
mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::service::Service;
use crate::tokens::{TOKEN_FILE, TokenFile, Tokens};
use atrest_cli::deployment::{Deployment, Options};

/// Seals HTTP uploads in the request and opens downloads on the way out.
#[derive(Debug, Parser)]
#[command(name = "atrest-serve", version)]
struct Cli {
    /// The deployment directory (made by `atrest init`).
    #[arg(
        long,
        env = "ATREST_DATA",
        default_value = "atrest-data",
        global = true
    )]
    data: PathBuf,
    /// The token file (default: `DATA/service-tokens.json`).
    #[arg(long, global = true)]
    tokens: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves the HTTP API until SIGINT or SIGTERM (requests in flight
    /// finish first).
    Serve {
        /// Address to listen on (port 0: any free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Creates the deployment on the embedded defaults first if `DATA`
        /// holds none (an empty or missing directory).
        #[arg(long)]
        init: bool,
        /// This instance's name in the audit trail.
        #[arg(long, default_value = "atrest-serve")]
        actor: String,
        /// How long unwrapped keys stay cached: the bound on how long a
        /// customer key revocation takes to stop this instance.
        #[arg(long, value_parser = humantime::parse_duration)]
        cache_ttl: Option<Duration>,
    },
    /// Manages bearer tokens (stored as hashes only).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Makes a token for a principal `user@tenant` and prints it (once).
    Add {
        /// The principal.
        principal: String,
    },
    /// Lists tokens: id and principal.
    List,
    /// Revokes a token by id (every instance stops accepting it within a
    /// second).
    Revoke {
        /// The token's id.
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every file this program creates is its owner's only.
    let _ = rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let token_path = cli
        .tokens
        .clone()
        .unwrap_or_else(|| cli.data.join(TOKEN_FILE));
    let result = match cli.command {
        Command::Token(command) => token_command(&TokenFile::new(token_path), command),
        Command::Serve {
            listen,
            init,
            actor,
            cache_ttl,
        } => serve(&cli.data, &token_path, listen, init, &actor, cache_ttl),
    };
    match result {
        // Standard output was closed or failed (such as a new token that
        // was never shown).
        Ok(()) if atrest_cli::print::stdout_failed() => ExitCode::FAILURE,
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            atrest_cli::errln!("atrest-serve: {error}");
            ExitCode::FAILURE
        }
    }
}

type Failure = Box<dyn std::error::Error>;

fn token_command(file: &TokenFile, command: TokenCommand) -> Result<(), Failure> {
    match command {
        TokenCommand::Add { principal } => {
            let token = file.add(&principal)?;
            atrest_cli::errln!(
                "atrest-serve: token {} for {} (shown only now)",
                token.id,
                token.principal
            );
            atrest_cli::outln!("{}", token.expose_secret());
        }
        TokenCommand::List => {
            for entry in file.list()? {
                atrest_cli::outln!("{}\t{}", entry.id, entry.principal);
            }
        }
        TokenCommand::Revoke { id } => {
            let entry = file.revoke(&id)?;
            atrest_cli::errln!(
                "atrest-serve: revoked token {} of {}",
                entry.id,
                entry.principal
            );
        }
    }
    Ok(())
}

fn serve(
    dir: &std::path::Path,
    token_path: &std::path::Path,
    listen: SocketAddr,
    init: bool,
    actor: &str,
    cache_ttl: Option<Duration>,
) -> Result<(), Failure> {
    let mut options = Options::new(actor);
    if let Some(ttl) = cache_ttl {
        options = options.cache_ttl(ttl);
    }
    let deployment = match Deployment::open(dir, options.clone()) {
        Err(atrest_cli::deployment::Error::NoDeployment { .. }) if init => {
            Deployment::init(dir, None, None, options)?
        }
        other => other?,
    };
    let tokens = Tokens::load(token_path)?;
    let service = Arc::new(Service::new(deployment, tokens));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        // The first line of output, for scripts and tests.
        atrest_cli::outln!("atrest-serve: listening on http://{address}");
        axum::serve(listener, service.router())
            .with_graceful_shutdown(shutdown())
            .await?;
        Ok::<(), Failure>(())
    })
}

/// Resolves at SIGINT or SIGTERM.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without handlers, the default actions stop the process.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    atrest_cli::errln!("atrest-serve: stopping once requests in flight finish");
}
