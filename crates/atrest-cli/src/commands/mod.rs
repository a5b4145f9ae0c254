//! One function per command: call the deployment, print the result.

use std::path::Path;

use atrest::tenant::{FallbackPolicy, OutageWindow, RootKeyRef};
use atrest_deployment::{Deployment, KmsConfig, Options, Setup, TenantKeys, TokenConfig};

use crate::ACTOR;
use crate::cli::{FallbackArg, KmsCommand, RotateCommand, TenantCommand};
use crate::exit::Error;
use crate::output::Output;

mod audit;
mod files;

pub(crate) use audit::audit;
pub(crate) use files::{GetArgs, blobs, get, put};

/// Opens the deployment in `data` as this program.
pub(super) async fn open(data: &Path) -> Result<Deployment, Error> {
    let deployment = match Deployment::open(data, Options::new(ACTOR)).await {
        Ok(deployment) => deployment,
        // A damaged log stops the deployment (it fails closed): say what
        // the way out is.
        Err(
            error @ atrest_deployment::Error::Library(atrest::Error::Audit(
                atrest::audit::Error::Corrupt { .. },
            )),
        ) => {
            return Err(Error::Hinted {
                source: error,
                hint: "`atrest audit verify` shows the damage; `atrest audit recover --key KEY` \
                       sets the log aside whole and begins a new one",
            });
        }
        Err(error) => return Err(error.into()),
    };
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
pub(super) fn show_fallbacks(deployment: &Deployment) -> Vec<atrest_deployment::Fallback> {
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
pub(super) fn principal(given: Option<String>, tenant: &str) -> String {
    given.unwrap_or_else(|| format!("cli@{tenant}"))
}

/// `atrest kms`.
pub(crate) async fn kms(data: &Path, out: Output, command: KmsCommand) -> Result<(), Error> {
    let mut deployment = open(data).await?;
    match command {
        KmsCommand::Add {
            name,
            address,
            mount,
            token_env,
            token_file,
            ca_file,
            timeout,
        } => {
            let timeout_ms =
                timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
            let ca_file = ca_file
                .map(|file| std::path::absolute(&file))
                .transpose()
                .map_err(|e| Error::usage(format!("--ca-file: {e}")))?;
            let kms = KmsConfig {
                name,
                address,
                mount,
                token_env,
                token_file,
                ca_file,
                timeout_ms,
            };
            deployment.add_kms(kms.clone()).await?;
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
            let created = deployment.create_kms_key(&name, &key).await?;
            let text = created.to_string();
            out.show(&serde_json::json!({ "key": text }), || {
                format!("created {text}")
            });
        }
    }
    Ok(())
}

/// `atrest init`.
pub(crate) async fn init(data: &Path, out: Output, setup: Setup) -> Result<(), Error> {
    let deployment = Deployment::init_with(data, &setup, Options::new(ACTOR)).await?;
    let witness = deployment
        .audit_witness()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let replicas: Vec<&str> = deployment.replicas().iter().map(|r| r.location()).collect();
    let warning = deployment.audit_witness_warning();
    if let Some(warning) = &warning {
        atrest_cli::errln!("atrest: warning: {warning}");
    }
    let info = serde_json::json!({
        "data": data,
        "blobs": deployment.blobs().location(),
        "replicas": replicas,
        "audit_verifying_key": deployment.audit_verifying_key(),
        "audit_witness": witness,
        "warnings": warning.into_iter().collect::<Vec<_>>(),
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
pub(crate) async fn tenant(data: &Path, out: Output, command: TenantCommand) -> Result<(), Error> {
    let mut deployment = open(data).await?;
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
            let summary = deployment.create_tenant(&name, &keys).await?;
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
            let tenants = deployment.tenants().await?;
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
        TenantCommand::TagNames => {
            let tagged = deployment.tag_untagged_names().await?;
            let info = serde_json::json!({ "tagged": tagged });
            out.show(&info, || {
                if tagged.is_empty() {
                    "every tenant name has its tag".to_owned()
                } else {
                    format!(
                        "tagged {} tenant names: {}",
                        tagged.len(),
                        tagged.join(", ")
                    )
                }
            });
        }
        TenantCommand::Fallback { name, policy } => {
            let policy = match policy {
                FallbackArg::Automatic => FallbackPolicy::Automatic,
                FallbackArg::Declared => FallbackPolicy::Declared(None),
                FallbackArg::Never => FallbackPolicy::Never,
            };
            deployment
                .set_fallback_policy(&name, policy.clone())
                .await?;
            let info = serde_json::json!({ "tenant": name, "fallback": policy.name() });
            out.show(&info, || {
                format!(
                    "{name}: fallback policy {}.\n{}",
                    policy.name(),
                    running_instances_note()
                )
            });
        }
        TenantCommand::Outage {
            name,
            duration,
            from,
            reason,
            end,
        } => {
            let summary = deployment.tenant_summary(&name).await?;
            if summary.fallback.as_deref() != Some("declared") {
                return Err(Error::usage(format!(
                    "{name}'s fallback policy is {}: outage windows are for the `declared` \
                     policy (atrest tenant fallback {name} declared)",
                    summary
                        .fallback
                        .as_deref()
                        .unwrap_or("none (service-managed)")
                )));
            }
            let window = match (end, duration, reason) {
                (true, _, _) => None,
                (false, Some(duration), Some(reason)) => {
                    let start = from.unwrap_or_else(std::time::SystemTime::now);
                    let seconds = |time: std::time::SystemTime| {
                        time.duration_since(std::time::UNIX_EPOCH)
                            .map(|since| since.as_secs())
                            .map_err(|_| Error::usage("the window begins before 1970"))
                    };
                    let start = seconds(start)?;
                    Some(OutageWindow {
                        start,
                        end: start.saturating_add(duration.as_secs().max(1)),
                        reason,
                    })
                }
                _ => return Err(Error::usage("give --for and --reason, or --end")),
            };
            deployment
                .set_fallback_policy(&name, FallbackPolicy::Declared(window.clone()))
                .await?;
            let info = serde_json::json!({
                "tenant": name,
                "outage": window.as_ref().map(|w| serde_json::json!({
                    "start": w.start, "end": w.end, "reason": w.reason,
                })),
            });
            out.show(&info, || match &window {
                Some(w) => format!(
                    "{name}: outage declared from {} to {} ({}); its users are served \
                     through the availability key meanwhile, while its customer keys are \
                     unavailable.\n{}",
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(w.start)
                    ),
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(w.end)
                    ),
                    w.reason,
                    running_instances_note()
                ),
                None => format!("{name}: outage window ended.\n{}", running_instances_note()),
            });
        }
        TenantCommand::Show { name } => {
            let summary = deployment.tenant_summary(&name).await?;
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
                if let Some(fallback) = &summary.fallback {
                    text.push_str(&format!("\n  fallback     {fallback}"));
                    if let Some(outage) = &summary.outage {
                        text.push_str(&format!(
                            " (outage {} to {}, {}: {})",
                            humantime::format_rfc3339_seconds(
                                std::time::UNIX_EPOCH + std::time::Duration::from_secs(outage.start)
                            ),
                            humantime::format_rfc3339_seconds(
                                std::time::UNIX_EPOCH + std::time::Duration::from_secs(outage.end)
                            ),
                            if outage.open { "open now" } else { "not open now" },
                            outage.reason
                        ));
                    }
                }
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

/// `atrest ls`.
/// What `atrest ls` lists.
pub(crate) struct Select<'a> {
    pub(crate) tenant: Option<&'a str>,
    /// One file: every version of it.
    pub(crate) name: Option<&'a str>,
    pub(crate) prefix: Option<&'a str>,
    /// Every version of every file listed.
    pub(crate) versions: bool,
}

/// `atrest ls`.
pub(crate) async fn ls(data: &Path, out: Output, select: &Select<'_>) -> Result<(), Error> {
    let mut listings = open(data).await?.list(select.tenant).await?;
    // Names are kept composed (NFC): so is what they are compared with.
    let name = select.name.map(atrest::normalize_name);
    let prefix = select.prefix.map(atrest::normalize_name);
    listings.retain(|l| {
        name.as_deref().is_none_or(|name| l.name == name)
            && prefix
                .as_deref()
                .is_none_or(|prefix| l.name.starts_with(prefix))
    });
    if let (Some(name), Some(tenant), true) = (&name, select.tenant, listings.is_empty()) {
        return Err(Error::NotFound {
            message: format!("tenant {tenant:?} has no file named {name:?}"),
        });
    }
    if !select.versions && name.is_none() {
        listings = atrest_deployment::newest_of_each(listings);
    }
    out.show(&listings, || ls_table(&listings));
    Ok(())
}

/// `listings` as a table whose columns line up however wide the names'
/// characters are.
fn ls_table(listings: &[atrest_deployment::Listing]) -> String {
    use unicode_width::UnicodeWidthStr as _;
    let pad = |text: &str, width: usize| {
        let mut cell = text.to_owned();
        cell.push_str(&" ".repeat(width.saturating_sub(text.width())));
        cell
    };
    let tenant_width = listings
        .iter()
        .map(|l| l.tenant.width())
        .chain([6])
        .max()
        .unwrap_or(6);
    let name_width = listings
        .iter()
        .map(|l| l.name.width())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut text = format!(
        "{} {} {:>4} {:>14} {:>4}  SEALED",
        pad("TENANT", tenant_width),
        pad("NAME", name_width),
        "VER",
        "BYTES",
        "TIK"
    );
    for l in listings {
        text.push_str(&format!(
            "\n{} {} {:>4} {:>14} {:>4}  {}{}",
            pad(&l.tenant, tenant_width),
            pad(&l.name, name_width),
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
}

/// `atrest rotate …`.
pub(crate) async fn rotate(data: &Path, out: Output, command: RotateCommand) -> Result<(), Error> {
    let deployment = open(data).await?;
    match command {
        RotateCommand::Tik { tenant } => {
            let bar = out.count_bar(0, "file keys re-wrapped");
            let rotated = deployment
                .rotate_tik(&tenant, &mut |progress| {
                    bar.set_length(progress.total);
                    bar.set_position(progress.done);
                })
                .await;
            bar.finish_and_clear();
            let (version, report, retired) = rotated?;
            let retired: Vec<u32> = retired.into_iter().map(u32::from).collect();
            let info = serde_json::json!({
                "tenant": tenant,
                "tik_version": u32::from(version),
                "rewrapped": report.rewrapped,
                "batches": report.batches,
                "retired": retired,
                "running_instances_follow_within_s": CHANGE_NOTE_SECS,
            });
            out.show(&info, || {
                format!(
                    "{tenant}: TIK version {version} is current; {} file keys re-wrapped in {} batches; versions {retired:?} retired.\n{}",
                    report.rewrapped,
                    report.batches,
                    running_instances_note()
                )
            });
        }
        RotateCommand::RootKey { availability } => {
            let label = if availability { "availability" } else { "root" };
            let (key, report) = deployment.rotate_service_key(label).await?;
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
pub(crate) async fn revoke(data: &Path, out: Output, tenant: &str, key: &str) -> Result<(), Error> {
    let deployment = open(data).await?;
    deployment.revoke(tenant, key).await?;
    let summary = deployment.tenant_summary(tenant).await?;
    let info = serde_json::json!({
        "tenant": tenant,
        "revoked": key,
        "state": summary.state,
        "revoked_keys": summary.revoked_keys,
        "running_instances_stop_within_s": CHANGE_NOTE_SECS,
    });
    out.show(&info, || {
        format!(
            "{tenant}: {key} recorded as revoked; the tenant is now {}.\n{}",
            summary.state,
            running_instances_note()
        )
    });
    Ok(())
}

/// How long a running instance (`atrest-serve`) takes to see a key change
/// made here, at most: the interval between its looks at the store's
/// change log (one second), and the look's own time, well below another.
const CHANGE_NOTE_SECS: u64 = 2 * atrest::tenant::DEFAULT_CHANGE_POLL.as_secs();

/// What a key change made here means for instances already running.
fn running_instances_note() -> String {
    format!(
        "Running instances (atrest-serve) follow this change within {CHANGE_NOTE_SECS} s \
         (they look at the key metadata's change log every second)."
    )
}

/// `atrest purge`.
pub(crate) async fn purge(data: &Path, out: Output, tenant: &str, yes: bool) -> Result<(), Error> {
    if !yes {
        return Err(Error::usage(format!(
            "purging destroys every key of {tenant:?} and cannot be undone: add --yes"
        )));
    }
    let destroyed = open(data).await?.purge(tenant).await?;
    let info = serde_json::json!({ "tenant": tenant, "tik_versions_destroyed": destroyed });
    out.show(&info, || {
        format!(
            "{tenant}: purged; {destroyed} TIK versions destroyed, every file of the tenant is unreadable"
        )
    });
    Ok(())
}

/// `atrest rm`.
pub(crate) async fn rm(
    data: &Path,
    out: Output,
    (tenant, name, version): (&str, &str, Option<u64>),
    principal: Option<String>,
    later: bool,
) -> Result<(), Error> {
    let deployment = open(data).await?;
    let principal = self::principal(principal, tenant);
    let access = atrest::tenant::Access::User {
        principal: &principal,
    };
    let file = atrest_deployment::FileName {
        tenant,
        name,
        version,
    };
    let deleted = deployment.delete(&access, &file).await?;
    let versions: Vec<u64> = deleted.iter().map(|r| u64::from(r.version)).collect();
    let erased = if later {
        None
    } else {
        Some(erase_with_progress(&deployment, &out, tenant).await?)
    };
    let info = serde_json::json!({
        "tenant": tenant,
        "name": name,
        "deleted_versions": versions,
        "erasure": erased.as_ref().map(erase_info),
    });
    out.show(&info, || {
        let listed: Vec<String> = versions.iter().map(u64::to_string).collect();
        let mut text = format!("{tenant}: deleted {name:?} (version {})", listed.join(", "));
        match &erased {
            None => text.push_str(
                "; its key is erased once `atrest erase` runs (until then a database \
                 backup still holds it)",
            ),
            Some(report) => text.push_str(&format!("; {}", erase_text(report))),
        }
        text
    });
    Ok(())
}

/// `atrest erase`.
pub(crate) async fn erase(data: &Path, out: Output, tenant: &str) -> Result<(), Error> {
    let deployment = open(data).await?;
    let report = erase_with_progress(&deployment, &out, tenant).await?;
    let mut info = erase_info(&report);
    if let Some(fields) = info.as_object_mut() {
        let _ = fields.insert("tenant".to_owned(), serde_json::json!(tenant));
    }
    out.show(&info, || format!("{tenant}: {}", erase_text(&report)));
    Ok(())
}

async fn erase_with_progress(
    deployment: &Deployment,
    out: &Output,
    tenant: &str,
) -> Result<atrest::EraseReport, Error> {
    let bar = out.count_bar(0, "file keys re-wrapped");
    let mut progress = |p: atrest::tenant::RewrapProgress| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    };
    let report = deployment.erase_deleted(tenant, &mut progress).await;
    bar.finish_and_clear();
    Ok(report?)
}

fn erase_info(report: &atrest::EraseReport) -> serde_json::Value {
    serde_json::json!({
        "tik_version": u32::from(report.version),
        "rewrapped_file_keys": report.rewrap.rewrapped,
        "retired_tik_versions": report.retired.iter().map(|v| u32::from(*v)).collect::<Vec<_>>(),
        "pending_tik_versions": report.pending.iter().map(|v| u32::from(*v)).collect::<Vec<_>>(),
        "complete": report.pending.is_empty(),
    })
}

fn erase_text(report: &atrest::EraseReport) -> String {
    let retired: Vec<String> = report.retired.iter().map(|v| v.to_string()).collect();
    let mut text = format!(
        "erased: {} file keys re-wrapped under TIK version {}, versions [{}] retired with their keys",
        report.rewrap.rewrapped,
        report.version,
        retired.join(", ")
    );
    if !report.pending.is_empty() {
        let pending: Vec<String> = report.pending.iter().map(|v| v.to_string()).collect();
        text.push_str(&format!(
            "; versions [{}] are still used by uploads in flight: run `atrest erase` again once they are done",
            pending.join(", ")
        ));
    }
    text
}

/// `atrest gc`.
pub(crate) async fn gc(
    data: &Path,
    out: Output,
    dry_run: bool,
    older_than: std::time::Duration,
) -> Result<(), Error> {
    let deployment = open(data).await?;
    let report = deployment.collect_garbage(older_than, dry_run).await?;
    let outputs = data.to_path_buf();
    let partial_outputs =
        tokio::task::block_in_place(|| crate::staging::collect_partial_outputs(&outputs, dry_run))
            .map_err(|source| Error::Io {
                what: format!("{}", outputs.join(crate::staging::OUTPUTS).display()),
                source,
            })?;
    #[derive(serde::Serialize)]
    struct Collected<'a> {
        #[serde(flatten)]
        report: &'a atrest_deployment::GarbageReport,
        /// Staging files of `get -o` runs that were killed.
        partial_outputs: &'a [crate::staging::PartialOutput],
    }
    let collected = Collected {
        report: &report,
        partial_outputs: &partial_outputs,
    };
    out.show(&collected, || {
        let verb = if dry_run { "would remove" } else { "removed" };
        let sum = |items: &[atrest_deployment::Garbage]| items.iter().map(|g| g.bytes).sum::<u64>();
        let mut text = format!(
            "{verb}: {} blobs no record names ({} bytes), {} staging files of unfinished uploads ({} bytes), {} uploads whose process died ({} bytes); left alone: {}",
            report.orphan_blobs.len(),
            sum(&report.orphan_blobs),
            report.partial_uploads.len(),
            sum(&report.partial_uploads),
            report.abandoned_uploads.len(),
            sum(&report.abandoned_uploads),
            report.skipped.len() + partial_outputs.iter().filter(|p| p.in_use).count(),
        );
        let removed_outputs: Vec<_> = partial_outputs.iter().filter(|p| !p.in_use).collect();
        if !removed_outputs.is_empty() {
            text.push_str(&format!(
                "\n{verb} {} partial outputs of gets that were killed ({} bytes)",
                removed_outputs.len(),
                removed_outputs.iter().map(|p| p.bytes).sum::<u64>()
            ));
        }
        for output in &partial_outputs {
            if output.in_use {
                text.push_str(&format!(
                    "\n  left     {} ({} bytes): the output of a get still running",
                    output.path.display(),
                    output.bytes
                ));
            } else {
                text.push_str(&format!(
                    "\n  output   {} ({} bytes)",
                    output.path.display(),
                    output.bytes
                ));
            }
        }
        for tenant in &report.released_tenants {
            let blobs = if dry_run {
                "its blobs then go too"
            } else {
                "its blobs are among those removed"
            };
            text.push_str(&format!(
                "\n  tenant   {} ({}, purged): {} file versions forgotten, the name free again; {blobs}",
                tenant.name, tenant.id, tenant.file_versions
            ));
        }
        for blob in &report.orphan_blobs {
            text.push_str(&format!("\n  blob     {} ({} bytes)", blob.name, blob.bytes));
        }
        for upload in &report.partial_uploads {
            text.push_str(&format!("\n  staging  {} ({} bytes)", upload.name, upload.bytes));
        }
        for upload in &report.abandoned_uploads {
            text.push_str(&format!("\n  upload   {} ({} bytes)", upload.name, upload.bytes));
        }
        for skipped in &report.skipped {
            text.push_str(&format!(
                "\n  left     {} ({} bytes): {}",
                skipped.name, skipped.bytes, skipped.reason
            ));
        }
        if !report.running.is_empty() {
            let running: Vec<String> = report
                .running
                .iter()
                .map(|holder| format!("{} (pid {})", holder.program, holder.pid))
                .collect();
            text.push_str(&format!(
                "\nrunning on this deployment: {}",
                running.join(", ")
            ));
        }
        text
    });
    Ok(())
}
