//! `atrest audit`: verifying the audit log and reading it.

use std::io::{self, Write as _};
use std::path::Path;

use atrest_deployment::{Deployment, TrustedAudit};

use crate::cli::AuditCommand;
use crate::exit::Error;
use crate::output::Output;

/// `atrest audit …`: read-only, so it works on a damaged log too.
pub(crate) async fn audit(data: &Path, out: Output, command: AuditCommand) -> Result<(), Error> {
    match command {
        AuditCommand::Verify { key, witness } => {
            let trusted = TrustedAudit {
                verifying_key: key,
                witness,
            };
            let verification = Deployment::verify_audit(data, &trusted).await?;
            let report = &verification.report;
            let info = serde_json::json!({
                "records": report.records,
                "signed_through": report.signed,
                "key_from_operator": verification.key_from_operator,
                "witness": verification.witness,
                "witnessed_size": verification.witnessed_size,
                "witness_checkpoints_verified": report.checkpoints_verified,
                "problem": report.problem.as_ref().map(ToString::to_string),
                "restarted": verification.restarted.as_ref().map(|(at, set_aside)| {
                    serde_json::json!({ "at": at, "set_aside": set_aside })
                }),
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
                let restarted = match &verification.restarted {
                    Some((at, set_aside)) => format!(
                        "\nthis log was begun on {at} after a damaged one, set aside in {set_aside} (see `atrest audit recover`)"
                    ),
                    None => String::new(),
                };
                match &report.problem {
                    None => format!(
                        "audit log verified: {} lines, every one signed with {key}; {witness}{restarted}",
                        report.records
                    ),
                    Some(problem) => format!(
                        "audit log does NOT verify: {problem}{restarted}\n\
                         Keep it as evidence; `atrest audit recover --key KEY` sets it aside whole and begins a new one."
                    ),
                }
            });
            if report.problem.is_some() {
                return Err(Error::AuditDoesNotVerify);
            }
        }
        AuditCommand::Recover { key } => {
            let recovery = Deployment::recover_audit(data, &key).await?;
            out.show(&recovery, || match &recovery.set_aside {
                Some(set_aside) => format!(
                    "audit log recovered: the damaged log {} ({} lines verified before: {}) is set aside whole in {};\n\
                     a new log begins with a signed record of that. The deployment works again.",
                    recovery.previous_log.as_deref().unwrap_or("?"),
                    recovery.lines_verified.unwrap_or(0),
                    recovery.damage.as_deref().unwrap_or("damaged"),
                    set_aside.display()
                ),
                None => "audit log recovered: an interrupted recovery was finished; the deployment works again."
                    .into(),
            });
        }
        AuditCommand::CheckMove {
            journal,
            journal_key,
            key,
            move_id,
        } => check_move(data, out, &journal, journal_key.as_deref(), key, move_id).await?,
        AuditCommand::Show {
            checkpoints,
            tenant,
            last,
        } => {
            let audit = Deployment::audit_entries(data, tenant.as_deref()).await?;
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

/// `atrest audit check-move`: both trails verified, then compared.
async fn check_move(
    data: &Path,
    out: Output,
    journal: &Path,
    journal_key: Option<&str>,
    key: Option<String>,
    move_id: Option<String>,
) -> Result<(), Error> {
    use atrest_cli::moves::{self, Journal};
    let journal_error = |error: moves::JournalError| Error::Io {
        what: format!("the journal {}", journal.display()),
        source: io::Error::other(error.to_string()),
    };
    let (journal_report, key_from_journal) = {
        let (dir, key) = (journal.to_path_buf(), journal_key.map(str::to_owned));
        atrest_core::blocking::run(move || Journal::verify(&dir, key.as_deref()))
            .await
            .map_err(journal_error)?
    };
    if let Some(problem) = &journal_report.problem {
        atrest_cli::errln!("atrest: the journal does NOT verify: {problem}");
        return Err(Error::AuditDoesNotVerify);
    }
    let trusted = TrustedAudit {
        verifying_key: key,
        witness: None,
    };
    let verification = Deployment::verify_audit(data, &trusted).await?;
    if let Some(problem) = &verification.report.problem {
        atrest_cli::errln!("atrest: this deployment's audit log does NOT verify: {problem}");
        return Err(Error::AuditDoesNotVerify);
    }
    let entries = {
        let dir = journal.to_path_buf();
        atrest_core::blocking::run(move || Journal::entries(&dir))
            .await
            .map_err(journal_error)?
    };
    let all = moves::journal_moves(&entries);
    let chosen = match &move_id {
        Some(id) => all.iter().find(|(m, _)| m == id),
        None => all.iter().rev().find(|(_, m)| m.finished.is_some()),
    };
    let Some((move_id, journal_move)) = chosen else {
        return Err(Error::NotFound {
            message: match move_id {
                Some(id) => format!("the journal has no move {id}"),
                None => "the journal has no complete move".into(),
            },
        });
    };
    let tenant = journal_move
        .start
        .as_ref()
        .map(|s| s.tenant.clone())
        .unwrap_or_default();
    let service = Deployment::audit_entries(data, Some(&tenant)).await?;
    let mut report = moves::check(move_id, journal_move, &service.entries);
    // Versions whose seal record a crash lost: the catalog says whether
    // they are there (authenticated records only).
    let deployment = super::open(data).await?;
    for item in std::mem::take(&mut report.to_confirm) {
        let file = atrest_deployment::FileName {
            tenant: &tenant,
            name: &item.0,
            version: Some(item.2),
        };
        let found = match deployment.record(&file).await {
            Ok(record) => Some((record.file.to_string(), record.plaintext_len)),
            Err(error) if error.kind() == atrest::ErrorKind::NotFound => None,
            Err(error) => return Err(error.into()),
        };
        report.confirm(&item, found);
    }
    let info = serde_json::json!({
        "report": &report,
        "tenant": tenant,
        "journal_key_from_journal": key_from_journal,
        "service_key_from_operator": verification.key_from_operator,
    });
    out.show(&info, || {
        let mut text = if report.agrees() {
            format!(
                "move {move_id}: the journal and this deployment's trail agree: {} items, each sealed once for the move; statistics equal ({} items, {} bytes)",
                report.matched,
                report.journal_stats.map_or(0, |s| s.items),
                report.journal_stats.map_or(0, |s| s.bytes)
            )
        } else {
            format!(
                "move {move_id}: the trails DISAGREE ({} problems):\n  {}",
                report.problems.len(),
                report.problems.join("\n  ")
            )
        };
        if key_from_journal {
            text.push_str("\n(the journal was verified with the key kept beside it: pass --journal-key to trust your own copy)");
        }
        text
    });
    if report.agrees() {
        Ok(())
    } else {
        Err(Error::MoveTrailsDisagree)
    }
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
