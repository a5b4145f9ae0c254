//! `atrest-serve`: the upload service — tenant files sealed inside the
//! HTTP upload request, before any byte reaches storage, and opened on the
//! way out — and the commands that manage its bearer tokens.
//!
//! A thin program over a deployment directory
//! ([`atrest_deployment::Deployment`], made by `atrest init`): every
//! decision — names, the release policy, keys, the catalog, blobs, the
//! audit trail — is the library's. The service adds HTTP ([`service`]),
//! bearer tokens ([`tokens`]) and request ids. It keeps no state of its
//! own: instances that share a deployment's catalog, blobs and key
//! services (PostgreSQL, an object store, OpenBao or PKCS#11 tokens) serve
//! the same files.
//!
//! It speaks HTTPS (TLS 1.3 and 1.2, HTTP/2 and HTTP/1.1; [`listen`]) with
//! the certificate given, read again on SIGHUP, or plain HTTP only when
//! asked for (`--plain-http`), and bounds what a client may hold: the time
//! to send headers and body, to read a download, the size of an upload,
//! the connections served at once. Besides its own tokens it accepts the
//! access tokens of an OpenID Connect provider (`--oidc-issuer`; [`oidc`]).
//!
//! It enters its async runtime once, in `main`. SIGINT or SIGTERM stops
//! it: it stops accepting connections, lets the requests in flight finish
//! for up to `--shutdown-timeout` (default 10 s), cuts the rest, and exits
//! with 0. An address it cannot listen on is an error at once (exit 1),
//! before the deployment is opened. Its exit codes and `--json` error
//! reports are those of every program of the package
//! ([`atrest_cli::outcome`]).

#![forbid(unsafe_code)]

mod batch;
mod bridge;
mod conditional;
mod eraser;
mod listen;
mod logging;
mod metrics;
mod oidc;
mod range;
mod service;
mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use atrest_cli::outcome::{self, Json};
use clap::{Parser, Subcommand};

use crate::service::Service;
use crate::tokens::{TOKEN_FILE, TokenFile, Tokens};
use atrest_deployment::{Deployment, Options};
use tokio::net::TcpListener;

/// Seals HTTP uploads in the request and opens downloads on the way out.
#[derive(Debug, Parser)]
#[command(name = "atrest-serve", version, after_help = outcome::EXIT_CODES)]
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
    /// Print one JSON document on stdout instead of text (the token
    /// commands, and the error report of any command).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the `serve` variant does not matter.
#[allow(clippy::large_enum_variant)]
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
        /// At SIGINT or SIGTERM, how long requests in flight may take to
        /// finish before they are cut.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        shutdown_timeout: Duration,
        /// Serve HTTPS with this certificate chain (PEM, leaf first); read
        /// again with the key on SIGHUP.
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Serve plain HTTP instead: only on loopback, or behind a proxy
        /// that terminates TLS (tokens would cross the network in clear).
        #[arg(long, conflicts_with = "tls_cert")]
        plain_http: bool,
        /// How long a client may take for its TLS handshake, and for each
        /// request's headers (or to send the next request on a kept-alive
        /// connection) before it is disconnected.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        header_timeout: Duration,
        /// Connections served at once (more wait to be accepted).
        #[arg(long, default_value_t = 10_000)]
        max_connections: usize,
        /// Connections served at once from one client address (an IPv6
        /// /64 counts as one); more are closed at once. Behind a proxy,
        /// whose connections all come from its address, raise it to
        /// --max-connections.
        #[arg(long, default_value = "1000")]
        max_connections_per_address: std::num::NonZeroUsize,
        /// How long a connection may go without a request in flight (an
        /// HTTP/2 client that only answers pings, say) before it is closed;
        /// and how long one none of whose requests carried valid
        /// credentials may stay open, however busy.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
        idle_timeout: Duration,
        /// How long an upload's body may pause before the upload is
        /// refused (408) and nothing of it is kept.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        body_timeout: Duration,
        /// How long a download's client may read nothing before it is
        /// disconnected.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        write_timeout: Duration,
        /// The largest upload, in bytes (413 beyond it; K, M, G, T allowed:
        /// `10G`).
        #[arg(long, value_parser = parse_size, default_value = "1T")]
        max_upload: u64,
        /// Requests of one principal in flight at once (more get 429 with
        /// Retry-After), so that one cannot take what the others need.
        #[arg(long, default_value_t = 64)]
        max_requests_per_principal: usize,
        /// Requests in flight at once in all (more get 429).
        #[arg(long, default_value_t = 4096)]
        max_requests: usize,
        #[command(flatten)]
        oidc: oidc::Args,
        /// The log's format on standard error: `text`, or `json` (one
        /// object per line, for a log pipeline).
        #[arg(long, value_enum, default_value = "text")]
        log_format: logging::LogFormat,
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return ExitCode::from(outcome::report_usage("atrest-serve", &error)),
    };
    // Every file this program creates is its owner's only.
    let _ = rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let token_path = cli
        .tokens
        .clone()
        .unwrap_or_else(|| cli.data.join(TOKEN_FILE));
    let json = cli.json;
    let result = match cli.command {
        Command::Token(command) => {
            token_command(&cli.data, &TokenFile::new(token_path), command, json)
        }
        Command::Serve {
            listen,
            init,
            actor,
            cache_ttl,
            shutdown_timeout,
            tls_cert,
            tls_key,
            plain_http,
            header_timeout,
            max_connections,
            max_connections_per_address,
            idle_timeout,
            body_timeout,
            write_timeout,
            max_upload,
            max_requests_per_principal,
            max_requests,
            oidc,
            log_format,
        } => {
            logging::init(log_format);
            let tls = match (tls_cert, tls_key, plain_http) {
                (Some(cert), Some(key), false) => Some((cert, key)),
                (None, None, true) => None,
                _ => {
                    return ExitCode::from(outcome::report_usage(
                        "atrest-serve",
                        &clap::Error::raw(
                            clap::error::ErrorKind::MissingRequiredArgument,
                            "give --tls-cert and --tls-key to serve HTTPS, or --plain-http to serve \
                             plain HTTP (on loopback, or behind a proxy that terminates TLS)\n",
                        ),
                    ));
                }
            };
            let settings = Settings {
                dir: cli.data,
                token_path,
                listen,
                init,
                actor,
                cache_ttl,
                shutdown_timeout,
                tls,
                limits: listen::Limits {
                    header_timeout,
                    max_connections,
                    max_connections_per_address,
                    idle_timeout,
                },
                requests: service::Limits {
                    body: bridge::BodyLimits {
                        idle: body_timeout,
                        max_bytes: max_upload,
                    },
                    write_timeout,
                    requests_per_principal: max_requests_per_principal,
                    requests: max_requests,
                },
                oidc: oidc.settings(),
            };
            serve(settings)
        }
    };
    match result {
        // Standard output was closed or failed (such as a new token that
        // was never shown).
        Ok(()) if atrest_cli::print::stdout_failed() => ExitCode::from(outcome::FAILED),
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = error.exit_code();
            let to = if json { Json::Stdout } else { Json::Off };
            outcome::report("atrest-serve", &error.to_string(), code, to);
            ExitCode::from(code)
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The address cannot be listened on.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The runtime or a socket failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tokens(#[from] tokens::TokenError),
    #[error(transparent)]
    Tls(#[from] listen::TlsError),
    #[error(transparent)]
    Provider(#[from] oidc::ProviderError),
    #[error(transparent)]
    Deployment(#[from] atrest_deployment::Error),
}

impl Failure {
    /// Its exit code, by the convention of every program of the package.
    fn exit_code(&self) -> u8 {
        use tokens::TokenError;
        match self {
            Self::Listen { .. } | Self::Io { .. } => outcome::FAILED,
            Self::Tls(listen::TlsError::File { .. }) => outcome::USAGE,
            Self::Tls(listen::TlsError::Rustls(_)) => outcome::USAGE,
            Self::Provider(oidc::ProviderError::Settings(_)) => outcome::USAGE,
            Self::Provider(oidc::ProviderError::Unreachable { .. }) => outcome::UNAVAILABLE,
            Self::Tokens(error) => match error {
                TokenError::Io { .. } | TokenError::Random(_) => outcome::FAILED,
                TokenError::BadPrincipal(_) => outcome::USAGE,
                TokenError::UnknownId(_) => outcome::NOT_FOUND,
                TokenError::Malformed { .. } => outcome::INTEGRITY,
            },
            Self::Deployment(error) => outcome::kind_code(error.kind()),
        }
    }
}

fn token_command(
    data: &std::path::Path,
    file: &TokenFile,
    command: TokenCommand,
    json: bool,
) -> Result<(), Failure> {
    match command {
        TokenCommand::Add { principal } => {
            // A token stands for a member of a tenant that exists.
            let parsed = atrest_deployment::Principal::parse(&principal)
                .ok_or_else(|| tokens::TokenError::BadPrincipal(principal.clone()))?;
            // Bound to the tenant the name names now (authenticated).
            let tenant = tenant_exists(data, parsed.tenant)?;
            let token = file.add(&principal, tenant)?;
            if json {
                let document = serde_json::json!({
                    "id": token.id,
                    "principal": token.principal,
                    "token": token.expose_secret(),
                });
                atrest_cli::outln!("{document}");
            } else {
                atrest_cli::errln!(
                    "atrest-serve: token {} for {} (shown only now)",
                    token.id,
                    token.principal
                );
                atrest_cli::outln!("{}", token.expose_secret());
            }
        }
        TokenCommand::List => {
            let entries = file.list()?;
            if json {
                let list: Vec<_> = entries
                    .iter()
                    .map(|entry| {
                        serde_json::json!({
                            "id": entry.id,
                            "principal": entry.principal,
                            "created": entry.created,
                        })
                    })
                    .collect();
                atrest_cli::outln!("{}", serde_json::Value::Array(list));
            } else {
                for entry in entries {
                    atrest_cli::outln!("{}\t{}", entry.id, entry.principal);
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let entry = file.revoke(&id)?;
            if json {
                let document = serde_json::json!({
                    "revoked": entry.id,
                    "principal": entry.principal,
                });
                atrest_cli::outln!("{document}");
            } else {
                atrest_cli::errln!(
                    "atrest-serve: revoked token {} of {}",
                    entry.id,
                    entry.principal
                );
            }
        }
    }
    Ok(())
}

/// The id of the tenant named `tenant` of the deployment in `data`, its
/// name authentic; fails if there is none.
fn tenant_exists(
    data: &std::path::Path,
    tenant: &str,
) -> Result<atrest::filekey::TenantId, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Failure::Io {
            what: "the async runtime",
            source,
        })?;
    runtime.block_on(async {
        // The name is authenticated, which takes the deployment's keys.
        let deployment = Deployment::open(data, Options::new("atrest-serve")).await?;
        Ok(deployment.tenant_id(tenant).await?)
    })
}

/// What `serve` runs with.
struct Settings {
    dir: PathBuf,
    token_path: PathBuf,
    listen: SocketAddr,
    init: bool,
    actor: String,
    cache_ttl: Option<Duration>,
    shutdown_timeout: Duration,
    /// The certificate chain and key (PEM files); `None`: plain HTTP.
    tls: Option<(PathBuf, PathBuf)>,
    limits: listen::Limits,
    requests: service::Limits,
    /// The OpenID provider whose access tokens are accepted.
    oidc: Option<oidc::Settings>,
}

/// A size in bytes: digits, optionally followed by K, M, G or T (powers of
/// 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, shift) = match text.trim().as_bytes().last() {
        Some(b'K' | b'k') => (&text.trim()[..text.trim().len() - 1], 10),
        Some(b'M' | b'm') => (&text.trim()[..text.trim().len() - 1], 20),
        Some(b'G' | b'g') => (&text.trim()[..text.trim().len() - 1], 30),
        Some(b'T' | b't') => (&text.trim()[..text.trim().len() - 1], 40),
        _ => (text.trim(), 0),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (bytes, or with K, M, G or T)"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Runs the service on a runtime of its own until SIGINT or SIGTERM.
fn serve(settings: Settings) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Failure::Io {
            what: "the async runtime",
            source,
        })?;
    let served = runtime.block_on(run(settings));
    // Whatever was cut at the deadline is not waited for either.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served
}

async fn run(settings: Settings) -> Result<(), Failure> {
    let signals = Signals::watch();
    raise_open_files_limit();
    // The address first: one that is taken fails at once, before anything
    // of the deployment is touched.
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| Failure::Listen {
            address: settings.listen,
            source,
        })?;
    // The certificates next: a bad file fails at once too.
    let certificates = settings
        .tls
        .as_ref()
        .map(|(cert, key)| listen::Certificates::load(cert, key).map(Arc::new))
        .transpose()?;
    let acceptor = certificates
        .as_ref()
        .map(|certificates| certificates.server_config().map(Arc::new))
        .transpose()?
        .map(tokio_rustls::TlsAcceptor::from);
    // On a full disk the deployment's databases open read-only, for
    // commands that only read; a service that writes waits for room.
    if atrest_deployment::room_left(&settings.dir)
        .is_ok_and(|room| room < atrest_deployment::MIN_ROOM)
    {
        return Err(Failure::Io {
            what: "the deployment directory",
            source: std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "out of space: the disk holding {} is full; free some before starting the service",
                    settings.dir.display()
                ),
            ),
        });
    }
    let metrics = Arc::new(metrics::Metrics::new());
    let mut options = Options::new(&settings.actor).observer(metrics.clone());
    if let Some(ttl) = settings.cache_ttl {
        options = options.cache_ttl(ttl);
    }
    let deployment = match Deployment::open(&settings.dir, options.clone()).await {
        Err(atrest_deployment::Error::NoDeployment { .. }) if settings.init => {
            let deployment = Deployment::init(&settings.dir, None, None, options).await?;
            // As `atrest init` says it: the key to keep elsewhere.
            tracing::warn!(
                "created a deployment in {}; its audit verifying key is {}: \
                 keep the key where the deployment's writers cannot change it; \
                 `atrest audit verify --key KEY` checks the log against it",
                settings.dir.display(),
                deployment.audit_verifying_key()
            );
            if let Some(warning) = deployment.audit_witness_warning() {
                tracing::warn!("{warning}");
            }
            deployment
        }
        other => other?,
    };
    let tokens = Tokens::load(&settings.token_path)?;
    let provider = match &settings.oidc {
        Some(oidc) => {
            let provider = oidc::Provider::connect(oidc).await?;
            tracing::info!(
                "accepting access tokens of {} for {} ({} signing keys)",
                oidc.issuer,
                oidc.audience,
                provider.key_count().await
            );
            Some(provider)
        }
        None => None,
    };
    let service = Arc::new(Service::new(
        deployment,
        (tokens, provider),
        metrics,
        settings.requests,
    ));
    let address = listener.local_addr().map_err(|source| Failure::Io {
        what: "the listening socket",
        source,
    })?;
    // The first line of output, for scripts and tests.
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    atrest_cli::outln!("atrest-serve: listening on {scheme}://{address}");
    if let Some(certificates) = certificates {
        reload_on_sighup(certificates);
    }
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let server = listen::serve(
        listener,
        Arc::clone(&service).router(),
        acceptor,
        settings.limits,
        async move {
            signals.received().await;
            let _ = stopping.send(true);
        },
    );
    let deadline = async move {
        let mut stop = stop;
        let _ = stop.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(settings.shutdown_timeout).await;
    };
    tokio::select! {
        served = server => served.map_err(|source| Failure::Io { what: "serving", source })?,
        () = deadline => tracing::warn!(
            "requests still in flight after {}: cut",
            humantime::format_duration(settings.shutdown_timeout)
        ),
    }
    for tenant in service.erasures_pending() {
        tracing::warn!(
            "the deletions of tenant {tenant} are not erased yet: run `atrest erase {tenant}`"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Reads the certificate chain and key again at each SIGHUP; a reload that
/// fails keeps the old ones and says why.
fn reload_on_sighup(certificates: Arc<listen::Certificates>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch for SIGHUP; certificates are not reloaded");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match certificates.reload() {
                Ok(()) => tracing::info!("certificates reloaded"),
                Err(error) => {
                    tracing::error!("certificates not reloaded (the old ones stay): {error}");
                }
            }
        }
    });
}

/// Raises the soft limit on open files to the hard one: every client
/// holds a socket, and a few hundred slow clients must not exhaust the
/// default soft limit (often 1024) while the system allows more.
fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        // Left as it is if the system refuses (an unlimited maximum).
        let _ = setrlimit(Resource::Nofile, raised);
    }
}

/// SIGINT and SIGTERM, watched from when the service starts (so one that
/// arrives while the deployment opens stops it too, cleanly).
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn watch() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Resolves at SIGINT or SIGTERM.
    async fn received(mut self) {
        let (Some(interrupt), Some(terminate)) = (&mut self.interrupt, &mut self.terminate) else {
            // Without handlers, the default actions stop the process.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("stopping once requests in flight finish");
    }
}
