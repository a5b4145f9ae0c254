//! One function per command: call the deployment, print the result.

use std::path::Path;

use atrest_deployment::{Deployment, Options, Setup};

use crate::ACTOR;
use crate::exit::Error;
use crate::output::Output;

mod audit;
mod files;
mod keys;
mod meeting;

pub(crate) use audit::audit;
pub(crate) use files::{GetArgs, blobs, get, put};
pub(crate) use keys::{kms, purge, revoke, rotate, tenant};
pub(crate) use meeting::meeting;

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
