//! `atrest`: seal and open tenant files from the command line.
//!
//! A thin program over the `atrest` crate's deployment directory: argument
//! parsing and output only. `atrest --help` lists the commands; `atrest
//! demo` runs the whole model on the embedded defaults in a fresh
//! directory and prints a short report.

use std::fs;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest::deployment::{Deployment, TenantKeys, TokenConfig};
use atrest::tenant::fault::{Fault, FaultInjector};
use atrest::tenant::{
    Access, Decision, KeyHierarchy, MasterKey, ProviderError, RootKeyProvider, ServiceKeys,
    SqliteStore,
};
use atrest::{Error, Files};
use atrest_audit::{AuditLog, LogConfig};
use atrest_filekey::{FileContext, FileId, FileVersion, OsRng, TenantId};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

const EXIT_CODES: &str = "\
Exit status:
  0  done
  1  failed (an I/O or storage error)
  2  bad usage or configuration (including no deployment: run `atrest init`)
  3  not found (tenant, file, version, blob)
  4  refused: release policy, revoked or destroyed customer key, purged tenant
  5  integrity: a blob or record that does not authenticate, or an audit log that does not verify";

/// Encrypt tenant files at rest: per-file keys under tenant key
/// hierarchies, chunked AES-256-GCM, storage-opaque blobs, an audit trail.
#[derive(Parser)]
#[command(name = "atrest", version, after_help = EXIT_CODES)]
struct Cli {
    /// The deployment directory.
    #[arg(
        long,
        global = true,
        env = "ATREST_DATA",
        default_value = "atrest-data"
    )]
    data: PathBuf,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a deployment: master key file, key store, audit log, blob store.
    Init {
        /// Store blobs at this object_store URL (s3://, az://, gs://,
        /// file://) instead of DATA/blobs.
        #[arg(long)]
        blobs: Option<String>,
    },
    /// Create and inspect tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Seal a file (or stdin, `-`) as a new version of a tenant's file.
    Put {
        /// The tenant.
        tenant: String,
        /// The file to read, or `-` for stdin.
        file: PathBuf,
        /// The file's name in the tenant (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// Who is uploading, as user@tenant (default: cli@TENANT).
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// Open a tenant's file (or a byte range of it).
    Get {
        /// The tenant.
        tenant: String,
        /// The file's name.
        name: String,
        /// Write here (replaced only once the whole file verified) instead
        /// of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Only bytes START..END (END exclusive); K, M, G mean KiB, MiB,
        /// GiB: `--range 10M..20M`.
        #[arg(long)]
        range: Option<String>,
        /// The version (default: the latest).
        #[arg(long)]
        version: Option<u64>,
        /// Who is reading, as user@tenant (default: cli@TENANT).
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// List file versions (of one tenant, or all).
    Ls {
        /// The tenant.
        tenant: Option<String>,
    },
    /// Rotate keys: a tenant's TIK (re-wrapping its file keys), or a
    /// service root key.
    #[command(subcommand)]
    Rotate(RotateCommand),
    /// Record that the customer revoked one of a tenant's customer keys.
    Revoke {
        /// The tenant.
        tenant: String,
        /// The key, as provider:label.
        key: String,
    },
    /// Destroy all key material of a tenant: its files become unreadable,
    /// by anyone, for good.
    Purge {
        /// The tenant.
        tenant: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// Verify or show the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run the whole model on the embedded defaults in a fresh directory
    /// and print a short report.
    Demo {
        /// The directory (default: a new one under the temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Size of the demo file, in MiB.
        #[arg(long, default_value_t = 64)]
        size_mib: u64,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant: service-managed, or with customer keys in two
    /// PKCS#11 tokens (the token PIN is read from --pin-env).
    Create {
        /// The tenant's name.
        name: String,
        /// Root keys held by the customer in two PKCS#11 tokens.
        #[arg(long, requires_all = ["module", "token_a", "token_b", "key_a", "key_b"])]
        customer_key: bool,
        /// The PKCS#11 module (for example /usr/lib/softhsm/libsofthsm2.so).
        #[arg(long)]
        module: Option<PathBuf>,
        /// The label of the first token.
        #[arg(long)]
        token_a: Option<String>,
        /// The label of the second token.
        #[arg(long)]
        token_b: Option<String>,
        /// The key's label in the first token.
        #[arg(long)]
        key_a: Option<String>,
        /// The key's label in the second token.
        #[arg(long)]
        key_b: Option<String>,
        /// Provider name for the first token.
        #[arg(long, default_value = "hsm-a")]
        provider_a: String,
        /// Provider name for the second token.
        #[arg(long, default_value = "hsm-b")]
        provider_b: String,
        /// The environment variable holding the tokens' user PIN.
        #[arg(long, default_value = "ATREST_PKCS11_PIN")]
        pin_env: String,
        /// Generate the keys in the tokens (sensitive, not extractable).
        #[arg(long)]
        generate: bool,
    },
    /// List tenants.
    List,
    /// Show a tenant's keys and state.
    Show {
        /// The tenant.
        name: String,
    },
}

#[derive(Subcommand)]
enum RotateCommand {
    /// Roll a tenant's TIK and re-wrap its file keys under the new version.
    Tik {
        /// The tenant.
        tenant: String,
    },
    /// Roll the service root key (or the availability key).
    RootKey {
        /// Roll the availability key instead.
        #[arg(long)]
        availability: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain against every signed checkpoint.
    Verify,
    /// Print audit records.
    Show {
        /// Only this tenant's records.
        #[arg(long)]
        tenant: Option<String>,
        /// Only the last N records.
        #[arg(long)]
        last: Option<usize>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("atrest: {}", failure.message);
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "error": failure.message, "exit": failure.code })
                );
            }
            ExitCode::from(failure.code)
        }
    }
}

struct Failure {
    message: String,
    code: u8,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        use atrest::tenant::Error as K;
        let code = match &error {
            Error::NotFound(_) => 3,
            Error::Config(_) | Error::InvalidRange { .. } => 2,
            Error::Stream(_)
            | Error::Record(_)
            | Error::Audit(
                atrest_audit::Error::Corrupt { .. } | atrest_audit::Error::BadSignature,
            ) => 5,
            Error::Keys(keys) => match keys {
                K::UnknownTenant(_) | K::UnknownTikVersion { .. } => 3,
                K::Denied { .. } | K::Purged(_) | K::Revoked(_) | K::WrongTenant(_) => 4,
                K::RootKey(
                    ProviderError::AccessDenied { .. }
                    | ProviderError::Destroyed { .. }
                    | ProviderError::NotFound { .. },
                ) => 4,
                K::FileKey(_) | K::RootKey(ProviderError::AuthenticationFailed { .. }) => 5,
                K::Config(_) | K::Misuse(_) | K::TenantExists(_) => 2,
                _ => 1,
            },
            _ => 1,
        };
        Self {
            message: error.to_string(),
            code,
        }
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Error::from(error).into()
    }
}

impl From<atrest::tenant::Error> for Failure {
    fn from(error: atrest::tenant::Error) -> Self {
        Error::from(error).into()
    }
}

impl From<atrest_audit::Error> for Failure {
    fn from(error: atrest_audit::Error) -> Self {
        Error::from(error).into()
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 2,
    }
}

/// Prints `value` as JSON, or `text` otherwise.
fn show<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(out) => println!("{out}"),
            Err(error) => eprintln!("atrest: cannot print JSON: {error}"),
        }
    } else {
        println!("{}", text());
    }
}

fn progress_bar(len: u64, json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn parse_size(text: &str) -> Result<u64, Failure> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let shift = match unit {
        "" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => {
            return Err(usage(format!(
                "{text:?}: sizes are a number with an optional K, M or G"
            )));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| usage(format!("{text:?} is not a size")))
}

fn parse_range(text: &str) -> Result<Range<u64>, Failure> {
    let (start, end) = text.split_once("..").ok_or_else(|| {
        usage(format!(
            "--range {text:?}: write START..END, for example 10M..20M"
        ))
    })?;
    let range = parse_size(start)?..parse_size(end)?;
    if range.start > range.end {
        return Err(usage(format!("--range {text:?}: START is after END")));
    }
    Ok(range)
}

fn run(cli: Cli) -> Result<(), Failure> {
    let json = cli.json;
    let data = cli.data;
    match cli.command {
        Command::Init { blobs } => {
            let deployment = Deployment::init(&data, blobs.as_deref())?;
            let info = serde_json::json!({
                "data": data,
                "blobs": deployment.blobs().location(),
                "audit_verifying_key": deployment.audit_verifying_key(),
            });
            show(json, &info, || {
                format!(
                    "created deployment in {}\n  master key  {}/master.key (mode 600)\n  blobs       {}\n  audit key   {}",
                    data.display(),
                    data.display(),
                    deployment.blobs().location(),
                    deployment.audit_verifying_key()
                )
            });
        }
        Command::Tenant(command) => tenant(&data, json, command)?,
        Command::Put {
            tenant,
            file,
            name,
            principal,
        } => {
            let deployment = Deployment::open(&data)?;
            let name = match name {
                Some(name) => name,
                None if file.as_os_str() == "-" => {
                    return Err(usage("give --name when reading stdin"));
                }
                None => file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| {
                        usage(format!("{} has no file name; give --name", file.display()))
                    })?,
            };
            let principal = principal.unwrap_or_else(|| format!("cli@{tenant}"));
            let started = Instant::now();
            let report = if file.as_os_str() == "-" {
                deployment.put(&tenant, &name, &principal, io::stdin())?
            } else {
                let input =
                    fs::File::open(&file).map_err(|e| usage(format!("{}: {e}", file.display())))?;
                let bar = progress_bar(input.metadata()?.len(), json);
                let report = deployment.put(&tenant, &name, &principal, bar.wrap_read(input))?;
                bar.finish_and_clear();
                report
            };
            let elapsed = started.elapsed();
            let peak = peak_memory_kib();
            let info = serde_json::json!({
                "tenant": report.tenant,
                "name": report.name,
                "version": report.version,
                "record": report.record,
                "blob": report.blob,
                "seconds": elapsed.as_secs_f64(),
                "peak_memory_kib": peak,
            });
            show(json, &info, || {
                format!(
                    "sealed {}/{} version {}: {} bytes in {:.2?} ({}), blob {}",
                    report.tenant,
                    report.name,
                    report.version,
                    report.record.plaintext_len,
                    elapsed,
                    rate(report.record.plaintext_len, elapsed),
                    report.blob
                )
            });
        }
        Command::Get {
            tenant,
            name,
            output,
            range,
            version,
            principal,
        } => {
            let deployment = Deployment::open(&data)?;
            let range = range.as_deref().map(parse_range).transpose()?;
            let principal = principal.unwrap_or_else(|| format!("cli@{tenant}"));
            let started = Instant::now();
            let bytes = match &output {
                Some(path) => get_to_file(
                    &deployment,
                    &tenant,
                    &name,
                    version,
                    &principal,
                    range,
                    path,
                    json,
                )?,
                None => {
                    let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout());
                    let bytes =
                        deployment.get(&tenant, &name, version, &principal, range, &mut out)?;
                    out.flush()?;
                    bytes
                }
            };
            if output.is_some() || json {
                let elapsed = started.elapsed();
                let info = serde_json::json!({
                    "tenant": tenant,
                    "name": name,
                    "bytes": bytes,
                    "output": output,
                    "seconds": elapsed.as_secs_f64(),
                    "peak_memory_kib": peak_memory_kib(),
                });
                show(json, &info, || {
                    format!(
                        "opened {tenant}/{name}: {bytes} bytes in {elapsed:.2?} ({})",
                        rate(bytes, elapsed)
                    )
                });
            }
        }
        Command::Ls { tenant } => {
            let deployment = Deployment::open(&data)?;
            let listings = deployment.list(tenant.as_deref())?;
            show(json, &listings, || {
                let mut out = format!(
                    "{:<16} {:<32} {:>4} {:>14} {:>4}  {}",
                    "TENANT", "NAME", "VER", "BYTES", "TIK", "SEALED"
                );
                for l in &listings {
                    out.push_str(&format!(
                        "\n{:<16} {:<32} {:>4} {:>14} {:>4}  {}",
                        l.tenant, l.name, l.version, l.bytes, l.tik_version, l.sealed
                    ));
                }
                out
            });
        }
        Command::Rotate(RotateCommand::Tik { tenant }) => {
            let deployment = Deployment::open(&data)?;
            let bar = progress_bar(0, json);
            let (version, report) = deployment.rotate_tik(&tenant, &mut |progress| {
                bar.set_length(progress.total);
                bar.set_position(progress.done);
            })?;
            bar.finish_and_clear();
            let info = serde_json::json!({ "tenant": tenant, "tik_version": u32::from(version), "rewrapped": report.rewrapped, "batches": report.batches });
            show(json, &info, || {
                format!(
                    "{tenant}: TIK version {version} is current; {} file keys re-wrapped in {} batches; older versions retired",
                    report.rewrapped, report.batches
                )
            });
        }
        Command::Rotate(RotateCommand::RootKey { availability }) => {
            let deployment = Deployment::open(&data)?;
            let label = if availability { "availability" } else { "root" };
            let (key, report) = deployment.rotate_service_key(label)?;
            let info = serde_json::json!({ "root_key": key.to_string(), "tenants": report.tenants, "tik_versions": report.tik_versions });
            show(json, &info, || {
                format!(
                    "rolled to {key}: {} TIK versions of {} tenants re-wrapped; the old version is destroyed",
                    report.tik_versions, report.tenants
                )
            });
        }
        Command::Revoke { tenant, key } => {
            let deployment = Deployment::open(&data)?;
            deployment.revoke(&tenant, &key)?;
            let info = serde_json::json!({ "tenant": tenant, "revoked": key });
            show(json, &info, || {
                format!("{tenant}: {key} recorded as revoked; cached keys dropped")
            });
        }
        Command::Purge { tenant, yes } => {
            if !yes {
                return Err(usage(format!(
                    "purging destroys every key of {tenant:?} and cannot be undone: add --yes"
                )));
            }
            let deployment = Deployment::open(&data)?;
            let destroyed = deployment.purge(&tenant)?;
            let info = serde_json::json!({ "tenant": tenant, "tik_versions_destroyed": destroyed });
            show(json, &info, || {
                format!(
                    "{tenant}: purged; {destroyed} TIK versions destroyed, every file of the tenant is unreadable"
                )
            });
        }
        Command::Audit(AuditCommand::Verify) => {
            let deployment = Deployment::open(&data)?;
            let (report, checkpoints) = deployment.verify_audit()?;
            let info = serde_json::json!({
                "records": report.records,
                "checkpoints": checkpoints,
                "checkpoints_verified": report.checkpoints_verified,
                "problem": report.problem.as_ref().map(|p| format!("{p:?}")),
            });
            show(json, &info, || match &report.problem {
                None => format!(
                    "audit log verified: {} records, {} of {checkpoints} checkpoints",
                    report.records, report.checkpoints_verified
                ),
                Some(problem) => format!("audit log does NOT verify: {problem:?}"),
            });
            if report.problem.is_some() {
                return Err(Failure {
                    message: "the audit log does not verify".into(),
                    code: 5,
                });
            }
        }
        Command::Audit(AuditCommand::Show { tenant, last }) => {
            let deployment = Deployment::open(&data)?;
            let mut entries = deployment.audit_entries(tenant.as_deref())?;
            if let Some(last) = last {
                entries = entries.split_off(entries.len().saturating_sub(last));
            }
            if json {
                show(json, &entries, String::new);
            } else {
                for entry in &entries {
                    println!("{}", serde_json::to_string(entry).unwrap_or_default());
                }
            }
        }
        Command::Demo { dir, size_mib } => demo(dir, size_mib, json)?,
    }
    Ok(())
}

fn tenant(data: &Path, json: bool, command: TenantCommand) -> Result<(), Failure> {
    let mut deployment = Deployment::open(data)?;
    match command {
        TenantCommand::Create {
            name,
            customer_key,
            module,
            token_a,
            token_b,
            key_a,
            key_b,
            provider_a,
            provider_b,
            pin_env,
            generate,
        } => {
            let keys = if customer_key {
                let (Some(module), Some(token_a), Some(token_b), Some(key_a), Some(key_b)) =
                    (module, token_a, token_b, key_a, key_b)
                else {
                    return Err(usage(
                        "--customer-key needs --module, --token-a, --token-b, --key-a and --key-b",
                    ));
                };
                let token = |name: String, token: String| TokenConfig {
                    name,
                    module: module.clone(),
                    token,
                    pin_env: pin_env.clone(),
                };
                TenantKeys::CustomerKey {
                    keys: Box::new([
                        (token(provider_a, token_a), key_a),
                        (token(provider_b, token_b), key_b),
                    ]),
                    generate,
                }
            } else {
                TenantKeys::ServiceManaged
            };
            let summary = deployment.create_tenant(&name, &keys)?;
            show(json, &summary, || {
                format!(
                    "created tenant {} ({}), root keys: {}",
                    summary.name,
                    summary.kind,
                    summary.root_keys.join(", ")
                )
            });
        }
        TenantCommand::List => {
            let tenants = deployment.tenants()?;
            show(json, &tenants, || {
                tenants
                    .iter()
                    .map(|t| {
                        format!(
                            "{:<16} {:<16} {:<7} TIK {}",
                            t.name, t.kind, t.state, t.current_tik
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        TenantCommand::Show { name } => {
            let summary = deployment.tenant_summary(&name)?;
            show(json, &summary, || {
                format!(
                    "tenant {}\n  id           {}\n  kind         {}\n  state        {}\n  current TIK  {}\n  root keys    {}",
                    summary.name,
                    summary.id,
                    summary.kind,
                    summary.state,
                    summary.current_tik,
                    summary.root_keys.join("\n               ")
                )
            });
        }
    }
    Ok(())
}

/// Opens into `path` through a temporary file, renamed into place only
/// once the whole file (or range) verified.
#[allow(clippy::too_many_arguments)]
fn get_to_file(
    deployment: &Deployment,
    tenant: &str,
    name: &str,
    version: Option<u64>,
    principal: &str,
    range: Option<Range<u64>>,
    path: &Path,
    json: bool,
) -> Result<u64, Failure> {
    let partial = path.with_extension("atrest-partial");
    let file =
        fs::File::create(&partial).map_err(|e| usage(format!("{}: {e}", partial.display())))?;
    let (record, _) = deployment.record(tenant, name, version)?;
    let bar = progress_bar(
        range
            .as_ref()
            .map_or(record.plaintext_len, |r| r.end - r.start),
        json,
    );
    let synced = file.try_clone()?;
    // Plaintext comes out in chunks of many segments: no buffer needed.
    let mut out = bar.wrap_write(file);
    let result = deployment
        .get(tenant, name, version, principal, range, &mut out)
        .and_then(|bytes| {
            synced.sync_all()?;
            Ok(bytes)
        });
    bar.finish_and_clear();
    match result {
        Ok(bytes) => {
            fs::rename(&partial, path)?;
            Ok(bytes)
        }
        Err(error) => {
            let _ = fs::remove_file(&partial);
            Err(error.into())
        }
    }
}

/// This process's peak resident memory (Linux), in KiB.
fn peak_memory_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rate(bytes: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    #[allow(clippy::cast_precision_loss)]
    let per_second = bytes as f64 / seconds;
    format!("{:.2} GB/s", per_second / 1e9)
}

/// A deterministic, incompressible-looking test file.
fn demo_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn demo(dir: Option<PathBuf>, size_mib: u64, json: bool) -> Result<(), Failure> {
    let dir = match dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!(
            "atrest-demo-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        )),
    };
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut say = |what: &str, detail: String| {
        if !json {
            println!("  {what:<14} {detail}");
        }
        lines.push((what.to_owned(), detail));
    };
    if !json {
        println!("atrest demo in {}", dir.display());
    }

    let mut deployment = Deployment::init(&dir, None)?;
    say(
        "deployment",
        "master key file (mode 600), SQLite key store and catalog, audit log, local blob store"
            .into(),
    );
    deployment.create_tenant("contoso", &TenantKeys::ServiceManaged)?;
    deployment.create_tenant("fabrikam", &TenantKeys::ServiceManaged)?;
    say(
        "tenants",
        "contoso and fabrikam, service-managed: one TIK each under the service root key".into(),
    );

    let len = usize::try_from(size_mib << 20).map_err(|_| usage("--size-mib is too large"))?;
    let data = demo_bytes(len);
    let started = Instant::now();
    let put = deployment.put("contoso", "report.bin", "alice@contoso", data.as_slice())?;
    let put_time = started.elapsed();
    deployment.put(
        "contoso",
        "notes.txt",
        "alice@contoso",
        &b"meeting notes: nothing secret here"[..],
    )?;
    deployment.put(
        "fabrikam",
        "plans.txt",
        "bob@fabrikam",
        &b"fabrikam's plans"[..],
    )?;
    say(
        "put",
        format!(
            "{size_mib} MiB sealed for contoso in {put_time:.2?} ({}); blob {} ({} bytes, {} segments)",
            rate(put.record.plaintext_len, put_time),
            put.blob,
            put.record.blob_len,
            put.record.segments()
        ),
    );

    // The storage layer cannot identify what it holds.
    let tenant_ids: Vec<String> = deployment.tenants()?.into_iter().map(|t| t.id).collect();
    let mut needles: Vec<Vec<u8>> = vec![
        b"contoso".to_vec(),
        b"report.bin".to_vec(),
        b"fabrikam".to_vec(),
    ];
    for listing in deployment.list(None)? {
        let (record, _) =
            deployment.record(&listing.tenant, &listing.name, Some(listing.version))?;
        needles.push(record.file.as_bytes().to_vec());
        needles.push(record.file.to_string().into_bytes());
        needles.push(record.tenant.as_bytes().to_vec());
    }
    needles.extend(tenant_ids.iter().map(|id| id.clone().into_bytes()));
    let blobs = deployment.blobs().list()?;
    for (blob, _) in &blobs {
        let mut bytes = Vec::new();
        deployment.blobs().open(blob)?.read_to_end(&mut bytes)?;
        if needles
            .iter()
            .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
        {
            return Err(Failure {
                message: format!("blob {blob} holds an identifier"),
                code: 5,
            });
        }
    }
    say(
        "storage",
        format!(
            "{} blobs with random names; none holds a tenant id, file id or file name",
            blobs.len()
        ),
    );

    let started = Instant::now();
    let mut back = Vec::with_capacity(len);
    deployment.get(
        "contoso",
        "report.bin",
        None,
        "alice@contoso",
        None,
        &mut back,
    )?;
    let get_time = started.elapsed();
    if back != data {
        return Err(Failure {
            message: "the file came back different".into(),
            code: 5,
        });
    }
    say(
        "get",
        format!(
            "{size_mib} MiB back, identical, in {get_time:.2?} ({})",
            rate(back.len() as u64, get_time)
        ),
    );

    let range = (len as u64 / 4)..(len as u64 / 2);
    let mut part = Vec::new();
    deployment.get(
        "contoso",
        "report.bin",
        None,
        "alice@contoso",
        Some(range.clone()),
        &mut part,
    )?;
    let expected = data.get(len / 4..len / 2).unwrap_or_default();
    say(
        "range",
        format!(
            "bytes {}..{}: identical ({} of {} segments decrypted)",
            range.start,
            range.end,
            put.record.segments() / 4 + 1,
            put.record.segments()
        ),
    );
    if part != expected {
        return Err(Failure {
            message: "the range came back different".into(),
            code: 5,
        });
    }

    let refused = deployment.get(
        "contoso",
        "report.bin",
        None,
        "bob@fabrikam",
        None,
        &mut io::sink(),
    );
    say(
        "cross-tenant",
        format!("bob@fabrikam reading contoso's file: {}", outcome(&refused)),
    );

    // One flipped bit in the stored blob.
    let blob_path = dir.join("blobs").join(&put.blob);
    let mut stored = fs::read(&blob_path)?;
    let middle = stored.len() / 2;
    if let Some(byte) = stored.get_mut(middle) {
        *byte ^= 1;
    }
    fs::write(&blob_path, &stored)?;
    let tampered = deployment.get(
        "contoso",
        "report.bin",
        None,
        "alice@contoso",
        None,
        &mut io::sink(),
    );
    say(
        "tamper",
        format!("one flipped bit in the blob: {}", outcome(&tampered)),
    );
    if let Some(byte) = stored.get_mut(middle) {
        *byte ^= 1;
    }
    fs::write(&blob_path, &stored)?;

    let (version, report) = deployment.rotate_tik("contoso", &mut |_| {})?;
    let (root, roll) = deployment.rotate_service_key("root")?;
    let mut again = Vec::new();
    deployment.get(
        "contoso",
        "notes.txt",
        None,
        "alice@contoso",
        None,
        &mut again,
    )?;
    say(
        "rotation",
        format!(
            "contoso TIK now version {version}, {} file keys re-wrapped, old TIK retired; service root key rolled to {root} ({} TIK versions re-wrapped); no data re-encrypted, files still open",
            report.rewrapped, roll.tik_versions
        ),
    );

    for (what, detail) in customer_key_demo(&dir.join("customer-key"))? {
        say(what, detail);
    }

    deployment.purge("fabrikam")?;
    let purged = deployment.get(
        "fabrikam",
        "plans.txt",
        None,
        "bob@fabrikam",
        None,
        &mut io::sink(),
    );
    let mut still = Vec::new();
    deployment.get(
        "contoso",
        "notes.txt",
        None,
        "alice@contoso",
        None,
        &mut still,
    )?;
    say(
        "purge",
        format!(
            "fabrikam purged: its file {}; contoso unaffected",
            outcome(&purged)
        ),
    );

    let (audit, checkpoints) = deployment.verify_audit()?;
    say(
        "audit",
        format!(
            "{} records; hash chain and {} of {checkpoints} signed checkpoints verified{}",
            audit.records,
            audit.checkpoints_verified,
            if audit.is_ok() { "" } else { " — PROBLEM" }
        ),
    );
    if json {
        let report: serde_json::Map<String, serde_json::Value> = lines
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        show(true, &report, String::new);
    }
    Ok(())
}

fn outcome(result: &Result<u64, Error>) -> String {
    match result {
        Ok(_) => "ALLOWED".into(),
        Err(error) => format!("refused ({error})"),
    }
}

/// The customer-key rules, with two stand-in customer key stores whose
/// availability can be switched (real tenants use PKCS#11 tokens:
/// `atrest tenant create --customer-key`).
fn customer_key_demo(dir: &Path) -> Result<Vec<(&'static str, String)>, Failure> {
    fs::create_dir_all(dir)?;
    let keys = |name: &str, label: &str| -> Result<Arc<ServiceKeys>, Error> {
        let master = MasterKey::create_file(&dir.join(format!("{name}.key")))?;
        let keys = Arc::new(ServiceKeys::open(
            name,
            &dir.join(format!("{name}.sqlite")),
            master,
        )?);
        keys.create_key(label)?;
        Ok(keys)
    };
    let service = keys("service", "availability")?;
    let hsm_a = Arc::new(FaultInjector::new(keys("hsm-a", "northwind-1")?));
    let hsm_b = Arc::new(FaultInjector::new(keys("hsm-b", "northwind-1")?));
    let log = Arc::new(AuditLog::create(dir.join("audit"), LogConfig::default())?);
    let hierarchy = KeyHierarchy::builder(
        Arc::new(SqliteStore::open(&dir.join("tenants.sqlite"))?),
        log.clone(),
    )
    .provider(service as Arc<dyn RootKeyProvider>)
    .provider(hsm_a.clone() as Arc<dyn RootKeyProvider>)
    .provider(hsm_b.clone() as Arc<dyn RootKeyProvider>)
    .availability_key("service", "availability")
    .policy(Arc::new(|_: &Access<'_>, _: TenantId, _: FileId| {
        Decision::Allow
    }))
    .cache_ttl(Duration::from_millis(200))
    .build()
    .map_err(Error::from)?;
    let files = Files::new(Arc::new(hierarchy), log);
    let keys = files.keys();
    let northwind = TenantId::random(&mut OsRng)
        .map_err(atrest::tenant::Error::from)
        .map_err(Error::from)?;
    let customer_keys = ["hsm-a:northwind-1".parse(), "hsm-b:northwind-1".parse()];
    let [Ok(a), Ok(b)] = customer_keys else {
        return Err(usage("bad demo key reference"));
    };
    keys.create_customer_key_tenant(northwind, [a, b.clone()])
        .map_err(Error::from)?;
    let user = Access::User {
        principal: "carol@northwind",
    };
    let system = Access::System {
        operation: "malware scan",
    };
    let context = FileContext::new(
        northwind,
        FileId::random(&mut OsRng)
            .map_err(atrest::tenant::Error::from)
            .map_err(Error::from)?,
        FileVersion::FIRST,
    );
    let (record, blob) = files.seal(&user, &context, &b"northwind's data"[..], Vec::new())?;
    let open = |access: &Access<'_>| -> Result<u64, Error> {
        files
            .open(access, &record, blob.as_slice(), io::sink())
            .map(|(_, n)| n)
    };
    let mut lines = vec![(
        "customer key",
        "northwind: TIK wrapped under HSM A, HSM B and the availability key".to_owned(),
    )];
    keys.flush_cache();
    hsm_a.set(Fault::Unavailable);
    hsm_b.set(Fault::Unavailable);
    lines.push((
        "",
        format!(
            "both HSMs unavailable → availability key used, audited: {}",
            outcome(&open(&user))
        ),
    ));
    keys.flush_cache();
    hsm_a.set(Fault::AccessDenied);
    lines.push((
        "",
        format!(
            "HSM A refuses, HSM B down → user request {}",
            outcome(&open(&user))
        ),
    ));
    lines.push((
        "",
        format!(
            "  … a marked system operation: {} (audited)",
            outcome(&open(&system))
        ),
    ));
    hsm_a.set(Fault::None);
    hsm_b.set(Fault::None);
    open(&user)?;
    hsm_a.set(Fault::AccessDenied);
    hsm_b.set(Fault::AccessDenied);
    let cached = open(&user);
    std::thread::sleep(Duration::from_millis(250));
    let expired = open(&user);
    lines.push((
        "revocation",
        format!(
            "customer removes access: within the cache TTL (200 ms here) {}; after it {}",
            if cached.is_ok() {
                "still readable"
            } else {
                "refused"
            },
            outcome(&expired)
        ),
    ));
    Ok(lines)
}
