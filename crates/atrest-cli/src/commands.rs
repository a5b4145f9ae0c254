//! One function per command: call the deployment, print the result.

use std::fs;
use std::io::{self, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use atrest::tenant::{Access, RootKeyRef};
use atrest_cli::deployment::{
    Deployment, KmsConfig, Options, Setup, TenantKeys, TokenConfig, TrustedAudit,
};

use crate::ACTOR;
use crate::cli::{AuditCommand, BlobsCommand, KmsCommand, RotateCommand, TenantCommand};
use crate::exit::Error;
use crate::output::{Output, peak_memory_kib, rate};
use crate::staging::Destination;

/// Opens the deployment in `data` as this program.
fn open(data: &Path) -> Result<Deployment, Error> {
    let deployment = Deployment::open(data, Options::new(ACTOR))?;
    report_recovery(deployment.audit_recovery());
    Ok(deployment)
}

/// Tells the operator (on stderr) what opening the audit log repaired; the
/// log records it too.
fn report_recovery(recovery: &atrest::audit::Recovery) {
    if recovery.cut_bytes > 0 {
        atrest_cli::errln!(
            "atrest: warning: the audit log ended in a batch that was never acknowledged (a writer died in the middle of it): cut {} bytes ({} complete lines), saved to {}; recorded in the log",
            recovery.cut_bytes,
            recovery.cut_lines,
            recovery
                .saved_as
                .as_ref()
                .map_or_else(|| "(nowhere)".into(), |p| p.display().to_string())
        );
    }
    if recovery.newline_restored {
        atrest_cli::errln!(
            "atrest: warning: the audit log's last signed batch had lost its final newline; restored, nothing cut; recorded in the log"
        );
    }
}

/// Tells the operator (on stderr) about every use of the availability key
/// because customer keys were unavailable; returns them for a JSON report.
fn show_fallbacks(deployment: &Deployment) -> Vec<atrest_cli::deployment::Fallback> {
    let fallbacks = deployment.fallbacks();
    for fallback in &fallbacks {
        atrest_cli::errln!(
            "atrest: warning: the customer's keys were unavailable ({}); {} the availability key for {}",
            fallback.customer_keys.join(", "),
            if fallback.succeeded {
                "used"
            } else {
                "could not use"
            },
            fallback.operation
        );
    }
    fallbacks
}

/// The principal a command acts as: `--as`, or `cli@TENANT`.
fn principal(given: Option<String>, tenant: &str) -> String {
    given.unwrap_or_else(|| format!("cli@{tenant}"))
}

fn parse_size(text: &str) -> Result<u64, Error> {
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
            return Err(Error::usage(format!(
                "{text:?}: sizes are a number with an optional K, M or G"
            )));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| Error::usage(format!("{text:?} is not a size")))
}

/// A `--range` as written, before the file's length is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RangeSpec {
    /// `A..B`: bytes A up to (not including) B.
    Between(u64, u64),
    /// `A..`: from byte A to the end.
    From(u64),
    /// `..B`: the first B bytes.
    To(u64),
    /// `-N`: the last N bytes.
    Last(u64),
}

/// Parses `--range`: `A..B`, `A..`, `..B` or `-N` (sizes with an optional
/// K, M or G).
fn parse_range(text: &str) -> Result<RangeSpec, Error> {
    let bad = || {
        Error::usage(format!(
            "--range {text:?}: write START..END, START.., ..END or -LAST, for example 10M..20M"
        ))
    };
    if let Some(last) = text.strip_prefix('-') {
        return Ok(RangeSpec::Last(parse_size(last)?));
    }
    let (start, end) = text.split_once("..").ok_or_else(bad)?;
    match (start.trim().is_empty(), end.trim().is_empty()) {
        (true, true) => Err(bad()),
        (true, false) => Ok(RangeSpec::To(parse_size(end)?)),
        (false, true) => Ok(RangeSpec::From(parse_size(start)?)),
        (false, false) => {
            let (start, end) = (parse_size(start)?, parse_size(end)?);
            if start > end {
                return Err(Error::usage(format!(
                    "--range {text:?}: START is after END"
                )));
            }
            Ok(RangeSpec::Between(start, end))
        }
    }
}

impl RangeSpec {
    /// The bytes it selects in a file of `len` bytes, as HTTP byte ranges
    /// do: an end past the end of the file stops at it; a range that starts
    /// at or past the end (or asks for the last 0 bytes) selects nothing and
    /// is refused.
    fn resolve(self, len: u64) -> Result<Range<u64>, Error> {
        let range = match self {
            Self::Between(start, end) => start..end.min(len),
            Self::From(start) => start..len,
            Self::To(end) => 0..end.min(len),
            Self::Last(n) => len.saturating_sub(n)..len,
        };
        let satisfiable = match self {
            Self::Last(n) => n > 0 && len > 0,
            Self::To(end) => end > 0 && len > 0,
            Self::Between(start, end) => start < len && start < end,
            Self::From(start) => start < len,
        };
        if !satisfiable {
            return Err(Error::usage(format!(
                "--range selects no bytes of a file of {len} bytes"
            )));
        }
        Ok(range)
    }
}

/// `atrest kms`.
pub(crate) fn kms(data: &Path, out: Output, command: KmsCommand) -> Result<(), Error> {
    let mut deployment = open(data)?;
    match command {
        KmsCommand::Add {
            name,
            address,
            mount,
            token_env,
            token_file,
        } => {
            let kms = KmsConfig {
                name,
                address,
                mount,
                token_env,
                token_file,
            };
            deployment.add_kms(kms.clone())?;
            out.show(&kms, || {
                format!(
                    "added key service {} ({}, mount {}); name its keys as {}:KEY@VERSION",
                    kms.name, kms.address, kms.mount, kms.name
                )
            });
        }
        KmsCommand::List => {
            let all = deployment.kms().to_vec();
            out.show(&all, || {
                all.iter()
                    .map(|k| format!("{}\t{}\t{}", k.name, k.address, k.mount))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        KmsCommand::CreateKey { name, key } => {
            let created = deployment.create_kms_key(&name, &key)?;
            let text = created.to_string();
            out.show(&serde_json::json!({ "key": text }), || {
                format!("created {text}")
            });
        }
    }
    Ok(())
}

/// `atrest init`.
pub(crate) fn init(data: &Path, out: Output, setup: Setup) -> Result<(), Error> {
    let deployment = Deployment::init_with(data, &setup, Options::new(ACTOR))?;
    let witness = deployment
        .audit_witness()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let replicas: Vec<&str> = deployment.replicas().iter().map(|r| r.location()).collect();
    let info = serde_json::json!({
        "data": data,
        "blobs": deployment.blobs().location(),
        "replicas": replicas,
        "audit_verifying_key": deployment.audit_verifying_key(),
        "audit_witness": witness,
    });
    out.show(&info, || {
        let mut blobs = deployment.blobs().location().to_owned();
        for replica in &replicas {
            blobs.push_str(&format!("\n  replica        {replica}"));
        }
        format!(
            "created deployment in {}\n  master key     {}/master.key (mode 600)\n  blobs          {}\n  audit key      {}\n  audit witness  {}\nKeep the audit key and the witness directory where the deployment's writers cannot change them;\n`atrest audit verify --key KEY --witness DIR` checks the log against them.",
            data.display(),
            data.display(),
            blobs,
            deployment.audit_verifying_key(),
            witness,
        )
    });
    Ok(())
}

/// `atrest tenant …`.
pub(crate) fn tenant(data: &Path, out: Output, command: TenantCommand) -> Result<(), Error> {
    let mut deployment = open(data)?;
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
            customer_keys,
        } => {
            if !matches!(customer_keys.len(), 0 | 2) {
                return Err(Error::usage(
                    "--customer-keys takes two root-key references, PROVIDER:KEY@VERSION, comma-separated",
                ));
            }
            let keys = if let [a, b] = customer_keys.as_slice() {
                let parse = |text: &String| {
                    text.parse::<RootKeyRef>()
                        .map_err(|e| Error::usage(format!("--customer-keys: {e}")))
                };
                TenantKeys::CustomerKeyAt {
                    keys: [parse(a)?, parse(b)?],
                }
            } else if customer_key {
                let (Some(module), Some(token_a), Some(token_b), Some(key_a), Some(key_b)) =
                    (module, token_a, token_b, key_a, key_b)
                else {
                    return Err(Error::usage(
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
            out.show(&summary, || {
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
            out.show(&tenants, || {
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
            out.show(&summary, || {
                let versions: Vec<String> = summary
                    .tik_versions
                    .iter()
                    .map(|v| {
                        format!(
                            "{}{}: {} file keys",
                            v.version,
                            if v.current { " (current)" } else { " (kept)" },
                            v.file_keys
                        )
                    })
                    .collect();
                let mut text = format!(
                    "tenant {}\n  id           {}\n  kind         {}\n  state        {}\n  current TIK  {}\n  TIK versions {}\n  root keys    {}",
                    summary.name,
                    summary.id,
                    summary.kind,
                    summary.state,
                    summary.current_tik,
                    versions.join("\n               "),
                    summary.root_keys.join("\n               ")
                );
                if summary.rotation_unfinished {
                    text.push_str(&format!(
                        "\n  a rotation has not finished: file keys are still wrapped under older versions; run `atrest rotate tik {}` again",
                        summary.name
                    ));
                }
                text
            });
        }
    }
    Ok(())
}

/// `atrest put`.
pub(crate) fn put(
    data: &Path,
    out: Output,
    tenant: &str,
    file: &Path,
    name: Option<String>,
    principal: Option<String>,
) -> Result<(), Error> {
    let stdin = file.as_os_str() == "-";
    let name = match name {
        Some(name) => name,
        None if stdin => return Err(Error::usage("give --name when reading stdin")),
        None => match file.file_name().map(|n| n.to_str()) {
            Some(Some(name)) => name.to_owned(),
            Some(None) => {
                return Err(Error::usage(format!(
                    "{}: the file name is not UTF-8; give --name",
                    file.display()
                )));
            }
            None => {
                return Err(Error::usage(format!(
                    "{} has no file name; give --name",
                    file.display()
                )));
            }
        },
    };
    let deployment = open(data)?;
    let principal = self::principal(principal, tenant);
    let access = Access::User {
        principal: &principal,
    };
    let started = Instant::now();
    let report = if stdin {
        deployment.put(tenant, &name, &access, io::stdin())
    } else {
        let input = fs::File::open(file).map_err(Error::at(file))?;
        let metadata = input.metadata().map_err(Error::at(file))?;
        if metadata.is_dir() {
            return Err(Error::at(file)(io::ErrorKind::IsADirectory.into()));
        }
        let len = metadata.len();
        let bar = out.bytes_bar(len);
        let report = deployment.put(tenant, &name, &access, bar.wrap_read(input));
        bar.finish_and_clear();
        report
    };
    let fallbacks = show_fallbacks(&deployment);
    let copy_failures = show_copy_failures(&deployment);
    let report = report?;
    let elapsed = started.elapsed();
    let info = serde_json::json!({
        "fallbacks": fallbacks,
        "copy_failures": copy_failures,
        "tenant": report.tenant,
        "name": report.name,
        "version": report.version,
        "record": report.record,
        "blob": report.blob,
        "seconds": elapsed.as_secs_f64(),
        "peak_memory_kib": peak_memory_kib(),
    });
    out.show(&info, || {
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
    Ok(())
}

/// Tells the operator (on stderr) about replica locations that did not
/// keep a copy of what was just written; returns them for JSON output.
fn show_copy_failures(deployment: &Deployment) -> Vec<serde_json::Value> {
    deployment
        .copy_failures()
        .into_iter()
        .map(|(blob, location, error)| {
            atrest_cli::errln!(
                "warning: {location} did not keep a copy of blob {blob} ({error}); `atrest blobs scrub --repair` makes it"
            );
            serde_json::json!({ "blob": blob, "location": location, "error": error })
        })
        .collect()
}

/// `atrest blobs …`.
pub(crate) fn blobs(data: &Path, out: Output, command: BlobsCommand) -> Result<(), Error> {
    let BlobsCommand::Scrub { repair } = command;
    let deployment = open(data)?;
    let report = deployment.scrub_blobs(repair)?;
    out.show(&report, || scrub_text(&report));
    report.result()?;
    Ok(())
}

/// A scrub report for people: one line per bad copy.
fn scrub_text(report: &atrest_cli::deployment::ScrubReport) -> String {
    use atrest::blobs::{CopyState, RepairOutcome};
    let mut text = format!(
        "checked {} file versions at {} locations ({}): {} bad copies",
        report.records,
        report.locations.len(),
        report.locations.join(", "),
        report.bad_copies(),
    );
    if report.repair {
        text.push_str(&format!(", {} repaired", report.repaired_copies()));
    }
    for record in &report.damaged {
        for copy in record.check.copies.iter().filter(|c| !c.state.is_good()) {
            let state = match &copy.state {
                CopyState::Missing => "missing".to_owned(),
                CopyState::WrongLength { len } => {
                    format!("wrong length ({len} bytes, not {})", record.check.len)
                }
                CopyState::WrongDigest { .. } => "wrong digest".to_owned(),
                CopyState::Unreachable { error } => format!("unreachable ({error})"),
                other => format!("{other:?}"),
            };
            let repair = match &copy.repair {
                None => String::new(),
                Some(RepairOutcome::Repaired { from }) => format!(
                    ": repaired from {}",
                    report.locations.get(*from).map_or("?", String::as_str)
                ),
                Some(RepairOutcome::Failed { error }) => format!(": NOT repaired ({error})"),
                Some(other) => format!(": {other:?}"),
            };
            text.push_str(&format!(
                "\n  {}/{} v{} blob {} at {}: {state}{repair}",
                record.tenant, record.file, record.version, record.check.blob, copy.place
            ));
        }
    }
    text
}

/// What `atrest get` reads.
pub(crate) struct GetArgs {
    pub(crate) tenant: String,
    pub(crate) name: String,
    pub(crate) output: Option<PathBuf>,
    pub(crate) range: Option<String>,
    pub(crate) version: Option<u64>,
    pub(crate) principal: Option<String>,
}

/// `atrest get`: plaintext to `-o FILE` (staged and renamed into place once
/// every byte verified; written through for a FIFO or device) or to
/// standard output; the report never shares a stream with the data.
pub(crate) fn get(data: &Path, out: Output, args: GetArgs) -> Result<(), Error> {
    let GetArgs {
        tenant,
        name,
        output,
        range,
        version,
        principal,
    } = args;
    let range = range.as_deref().map(parse_range).transpose()?;
    let deployment = open(data)?;
    let principal = self::principal(principal, &tenant);
    let access = Access::User {
        principal: &principal,
    };
    // One version throughout, even if another is sealed meanwhile. The
    // open authenticates the record.
    let record = deployment.record_to_open(&tenant, &name, version)?;
    let version = Some(u64::from(record.version));
    let range = range
        .map(|spec| spec.resolve(record.plaintext_len))
        .transpose()?;
    let started = Instant::now();
    let mut destination = Destination::open(output.as_deref().unwrap_or(Path::new("-")))?;
    let to_stdout = destination.is_stdout();
    let expected = range
        .as_ref()
        .map_or(record.plaintext_len, |r| r.end - r.start);
    let bar = if to_stdout {
        indicatif::ProgressBar::hidden()
    } else {
        out.bytes_bar(expected)
    };
    let result = {
        let mut writer = bar.wrap_write(&mut destination);
        deployment.get(&tenant, &name, version, &access, range.clone(), &mut writer)
    };
    bar.finish_and_clear();
    let fallbacks = show_fallbacks(&deployment);
    // On an error the staging file goes with `destination`.
    let bytes = result?;
    destination.finish()?;
    let elapsed = started.elapsed();
    let info = serde_json::json!({
        "fallbacks": fallbacks,
        "tenant": tenant,
        "name": name,
        "version": record.version,
        "range": range.as_ref().map(|r| [r.start, r.end]),
        "bytes": bytes,
        "output": output.as_ref().map(|p| p.to_string_lossy()),
        "seconds": elapsed.as_secs_f64(),
        "peak_memory_kib": peak_memory_kib(),
    });
    let text = || {
        format!(
            "opened {tenant}/{name} version {}: {bytes} bytes in {elapsed:.2?} ({})",
            record.version,
            rate(bytes, elapsed)
        )
    };
    if to_stdout {
        // The data is on standard output: the report goes to standard
        // error, with --json only.
        if out.json {
            out.show_on_stderr(&info);
        }
    } else {
        out.show(&info, text);
    }
    Ok(())
}

/// `atrest ls`.
pub(crate) fn ls(data: &Path, out: Output, tenant: Option<&str>) -> Result<(), Error> {
    let listings = open(data)?.list(tenant)?;
    out.show(&listings, || {
        let mut text = format!(
            "{:<16} {:<32} {:>4} {:>14} {:>4}  {}",
            "TENANT", "NAME", "VER", "BYTES", "TIK", "SEALED"
        );
        for l in &listings {
            text.push_str(&format!(
                "\n{:<16} {:<32} {:>4} {:>14} {:>4}  {}{}",
                l.tenant,
                l.name,
                l.version,
                l.bytes,
                l.tik_version,
                l.sealed,
                if l.readable {
                    ""
                } else {
                    "  (purged: unreadable)"
                }
            ));
        }
        text
    });
    Ok(())
}

/// `atrest rotate …`.
pub(crate) fn rotate(data: &Path, out: Output, command: RotateCommand) -> Result<(), Error> {
    let deployment = open(data)?;
    match command {
        RotateCommand::Tik { tenant } => {
            let bar = out.bytes_bar(0);
            let rotated = deployment.rotate_tik(&tenant, &mut |progress| {
                bar.set_length(progress.total);
                bar.set_position(progress.done);
            });
            bar.finish_and_clear();
            let (version, report, retired) = rotated?;
            let retired: Vec<u32> = retired.into_iter().map(u32::from).collect();
            let info = serde_json::json!({
                "tenant": tenant,
                "tik_version": u32::from(version),
                "rewrapped": report.rewrapped,
                "batches": report.batches,
                "retired": retired,
            });
            out.show(&info, || {
                format!(
                    "{tenant}: TIK version {version} is current; {} file keys re-wrapped in {} batches; versions {retired:?} retired",
                    report.rewrapped, report.batches
                )
            });
        }
        RotateCommand::RootKey { availability } => {
            let label = if availability { "availability" } else { "root" };
            let (key, report) = deployment.rotate_service_key(label)?;
            let info = serde_json::json!({
                "root_key": key.to_string(),
                "tenants": report.tenants,
                "tik_versions": report.tik_versions,
            });
            out.show(&info, || {
                format!(
                    "rolled to {key}: {} TIK versions of {} tenants re-wrapped; the old version is destroyed",
                    report.tik_versions, report.tenants
                )
            });
        }
    }
    Ok(())
}

/// `atrest revoke`.
pub(crate) fn revoke(data: &Path, out: Output, tenant: &str, key: &str) -> Result<(), Error> {
    open(data)?.revoke(tenant, key)?;
    let info = serde_json::json!({ "tenant": tenant, "revoked": key });
    out.show(&info, || {
        format!("{tenant}: {key} recorded as revoked; cached keys dropped")
    });
    Ok(())
}

/// `atrest purge`.
pub(crate) fn purge(data: &Path, out: Output, tenant: &str, yes: bool) -> Result<(), Error> {
    if !yes {
        return Err(Error::usage(format!(
            "purging destroys every key of {tenant:?} and cannot be undone: add --yes"
        )));
    }
    let destroyed = open(data)?.purge(tenant)?;
    let info = serde_json::json!({ "tenant": tenant, "tik_versions_destroyed": destroyed });
    out.show(&info, || {
        format!(
            "{tenant}: purged; {destroyed} TIK versions destroyed, every file of the tenant is unreadable"
        )
    });
    Ok(())
}

/// `atrest gc`.
pub(crate) fn gc(
    data: &Path,
    out: Output,
    dry_run: bool,
    older_than: std::time::Duration,
) -> Result<(), Error> {
    let deployment = open(data)?;
    let report = deployment.collect_garbage(older_than, dry_run)?;
    out.show(&report, || {
        let verb = if dry_run { "would remove" } else { "removed" };
        let mut text = format!(
            "{verb}: {} blobs no record names ({} bytes), {} staging files of unfinished uploads ({} bytes), {} uploads begun more than {} ago",
            report.orphan_blobs.len(),
            report.orphan_blobs.iter().map(|b| b.bytes).sum::<u64>(),
            report.partial_uploads.len(),
            report.partial_uploads.iter().map(|b| b.bytes).sum::<u64>(),
            report.abandoned_uploads.len(),
            humantime::format_duration(older_than),
        );
        for blob in &report.orphan_blobs {
            text.push_str(&format!("\n  blob     {} ({} bytes)", blob.name, blob.bytes));
        }
        for upload in &report.partial_uploads {
            text.push_str(&format!("\n  staging  {} ({} bytes)", upload.name, upload.bytes));
        }
        for upload in &report.abandoned_uploads {
            text.push_str(&format!("\n  upload   {} ({} bytes)", upload.name, upload.bytes));
        }
        text
    });
    Ok(())
}

/// `atrest audit …`: read-only, so it works on a damaged log too.
pub(crate) fn audit(data: &Path, out: Output, command: AuditCommand) -> Result<(), Error> {
    match command {
        AuditCommand::Verify { key, witness } => {
            let trusted = TrustedAudit {
                verifying_key: key,
                witness,
            };
            let verification = Deployment::verify_audit(data, &trusted)?;
            let report = &verification.report;
            let info = serde_json::json!({
                "records": report.records,
                "signed_through": report.signed,
                "key_from_operator": verification.key_from_operator,
                "witness": verification.witness,
                "witnessed_size": verification.witnessed_size,
                "witness_checkpoints_verified": report.checkpoints_verified,
                "problem": report.problem.as_ref().map(ToString::to_string),
            });
            out.show(&info, || {
                let key = if verification.key_from_operator {
                    "the key given"
                } else {
                    "the key in the deployment's configuration (pass --key to trust your own copy)"
                };
                let witness = match (&verification.witness, verification.witnessed_size) {
                    (None, _) => "no witness configured".to_owned(),
                    (Some(dir), None) => format!("witness {} has no checkpoint yet", dir.display()),
                    (Some(dir), Some(size)) => format!(
                        "matches the witness {} (its newest checkpoint covers {size} lines)",
                        dir.display()
                    ),
                };
                match &report.problem {
                    None => format!(
                        "audit log verified: {} lines, every one signed with {key}; {witness}",
                        report.records
                    ),
                    Some(problem) => format!("audit log does NOT verify: {problem}"),
                }
            });
            if report.problem.is_some() {
                return Err(Error::AuditDoesNotVerify);
            }
        }
        AuditCommand::Show {
            checkpoints,
            tenant,
            last,
        } => {
            let audit = Deployment::audit_entries(data, tenant.as_deref())?;
            let mut entries = audit.entries;
            if !checkpoints {
                entries.retain(|e| !matches!(e.event, atrest::audit::Event::Checkpoint { .. }));
            }
            if let Some(last) = last {
                entries = entries.split_off(entries.len().saturating_sub(last));
            }
            if out.json {
                out.show(&entries, String::new);
            } else {
                let table = audit_table(&entries, &audit.tenant_names);
                io::stdout()
                    .lock()
                    .write_all(table.as_bytes())
                    .map_err(Error::stdout)?;
            }
        }
    }
    Ok(())
}

/// The audit records as a table for people: time, actor, principal, tenant
/// name, event (its type and objects), outcome, request id.
fn audit_table(
    entries: &[atrest::audit::Entry],
    tenant_names: &std::collections::HashMap<String, String>,
) -> String {
    use atrest::audit::Outcome;
    const HEADER: [&str; 7] = [
        "TIME",
        "ACTOR",
        "PRINCIPAL",
        "TENANT",
        "OUTCOME",
        "REQUEST",
        "EVENT",
    ];
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|entry| {
            let event = serde_json::to_value(&entry.event).unwrap_or_default();
            let principal = event
                .get("principal")
                .or_else(|| event.get("fields").and_then(|f| f.get("principal")))
                .and_then(|p| p.as_str())
                .unwrap_or("-")
                .to_owned();
            let tenant = entry.tenant.as_ref().map_or_else(
                || "-".to_owned(),
                |id| {
                    tenant_names
                        .get(id.as_str())
                        .cloned()
                        .unwrap_or_else(|| format!("({})", id.as_str()))
                },
            );
            let outcome = match &entry.outcome {
                Outcome::Success => "success".to_owned(),
                Outcome::Denied { reason } => format!("denied: {reason}"),
                Outcome::Failed { error } => format!("failed: {error}"),
            };
            let time = entry.time.to_string();
            let time = time.get(..19).map_or(time.clone(), |t| format!("{t}Z"));
            [
                time,
                entry.actor.to_string(),
                principal,
                tenant,
                outcome,
                entry
                    .request
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
                describe_event(&event),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    let mut line = |cells: [&str; 7]| {
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                table.push_str(cell);
            } else {
                table.push_str(&format!("{cell:<width$}  "));
            }
        }
        table.push('\n');
    };
    line(HEADER);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
    table
}

/// An event in one line: its type, then its fields (a file or key
/// reference as `id v2`), the principal left out (it has its own column).
fn describe_event(event: &serde_json::Value) -> String {
    fn value(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(map) => {
                let id = map.get("file").or_else(|| map.get("key"));
                match (id.and_then(|i| i.as_str()), map.get("version")) {
                    (Some(id), Some(serde_json::Value::Number(n))) => format!("{id} v{n}"),
                    (Some(id), _) => id.to_owned(),
                    _ => v.to_string(),
                }
            }
            serde_json::Value::Array(items) => {
                items.iter().map(value).collect::<Vec<_>>().join(",")
            }
            other => other.to_string(),
        }
    }
    let Some(map) = event.as_object() else {
        return event.to_string();
    };
    let mut text = map
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("?")
        .to_owned();
    for (key, field) in map {
        if key == "type" || key == "principal" || field.is_null() {
            continue;
        }
        if key == "fields"
            && let Some(fields) = field.as_object()
        {
            for (k, v) in fields.iter().filter(|(k, _)| *k != "principal") {
                text.push_str(&format!(" {k}={}", value(v)));
            }
            continue;
        }
        text.push_str(&format!(" {key}={}", value(field)));
    }
    text
}
