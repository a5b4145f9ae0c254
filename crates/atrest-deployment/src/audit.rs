//! The deployment's audit trail: records the programs add, verification
//! against what the operator trusts, and reading it back by tenant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use atrest::audit::{
    Audit as _, DirectoryWitness, Entry, Event, LogConfig, Outcome, Record, Report, Text,
    VerifyingKey,
};
use atrest_core::blocking;

use crate::config::Config;
use crate::{AUDIT_DIR, Deployment, Error};

/// What the operator trusts for [`Deployment::verify_audit`], instead of
/// what the deployment directory says.
#[derive(Clone, Debug, Default)]
pub struct TrustedAudit {
    /// The checkpoint verifying key (text form, as `init` printed it).
    pub verifying_key: Option<String>,
    /// The witness directory.
    pub witness: Option<PathBuf>,
}

/// The result of [`Deployment::verify_audit`].
#[derive(Clone, Debug)]
pub struct AuditVerification {
    /// What verification found.
    pub report: Report,
    /// Whether the verifying key came from the operator (not the
    /// deployment directory).
    pub key_from_operator: bool,
    /// The witness directory checked against, if any.
    pub witness: Option<PathBuf>,
    /// The size of the witness's newest checkpoint, if it had one.
    pub witnessed_size: Option<u64>,
    /// If the log was begun anew after a damaged one was set aside
    /// ([`Deployment::recover_audit`]): when, and where that one is.
    pub restarted: Option<(String, String)>,
}

/// When and to where the log in `log_dir` set aside the log before it, if
/// it began so: its first record (after the opening checkpoint).
fn restarted(log_dir: &Path) -> Option<(String, String)> {
    use std::io::BufRead as _;
    let file = std::fs::File::open(log_dir.join("00000001.log")).ok()?;
    std::io::BufReader::new(file)
        .lines()
        .take(2)
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Entry>(&line).ok())
        .find_map(|entry| match entry.event {
            Event::LogRestarted { set_aside, .. } => {
                Some((entry.time.to_string(), set_aside.as_str().to_owned()))
            }
            _ => None,
        })
}

/// What [`Deployment::recover_audit`] did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AuditRecovery {
    /// Where the damaged log was set aside, whole (`None` if this only
    /// finished an interrupted recovery).
    pub set_aside: Option<PathBuf>,
    /// The id of the log set aside.
    pub previous_log: Option<String>,
    /// Its lines whose chain verified, from its start, before the damage.
    pub lines_verified: Option<u64>,
    /// The damage found.
    pub damage: Option<String>,
}

/// Audit records with the names of the tenants they are about.
#[derive(Clone, Debug)]
pub struct AuditEntries {
    /// The records, oldest first.
    pub entries: Vec<Entry>,
    /// Tenant names by tenant id.
    pub tenant_names: HashMap<String, String>,
}

/// The audit log's settings in a deployment: checkpoints published to the
/// witness directory after every batch.
pub(crate) fn config(witness: Option<&Path>) -> LogConfig {
    LogConfig {
        witness: witness
            .map(|dir| Arc::new(DirectoryWitness::new(dir)) as Arc<dyn atrest::audit::Witness>),
        ..LogConfig::default()
    }
}

impl Deployment {
    /// Records `event` in the audit trail, by this program, about tenant
    /// `tenant` (by name) and request `request`.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; audit errors.
    pub async fn record_event(
        &self,
        event: Event,
        tenant: Option<&str>,
        request: Option<&str>,
    ) -> Result<(), Error> {
        self.record_outcome(event, Outcome::Success, tenant, request)
            .await
    }

    /// [`Deployment::record_event`] with its outcome: a refusal
    /// ([`Outcome::Denied`]) or a failure the program decided itself.
    ///
    /// # Errors
    /// As for [`Deployment::record_event`].
    pub async fn record_outcome(
        &self,
        event: Event,
        outcome: Outcome,
        tenant: Option<&str>,
        request: Option<&str>,
    ) -> Result<(), Error> {
        let mut record = Record::new(Text::lossy(self.options.actor()), event).outcome(outcome);
        if let Some(tenant) = tenant {
            record = record.tenant(Text::lossy(self.tenant_id(tenant).await?.to_string()));
        }
        if let Some(request) = request {
            record = record.request(Text::lossy(request));
        }
        let _ = self.log.record(record).await?;
        Ok(())
    }

    /// Recovers the deployment in `dir` from a damaged audit log, which
    /// stops every command that writes to it: sets the log aside whole,
    /// as evidence (`DIR/audit.set-aside/<time>-<log id>`), and begins a
    /// new log whose first record, signed and published to the witness,
    /// says where the old one went, how much of it verified and what was
    /// wrong (see [`atrest::audit::log::restart`]). `verifying_key` is the
    /// operator's copy of the audit verifying key, as `init` printed it: it
    /// must be the deployment's. No other process may have the deployment
    /// open (they would go on writing to the log set aside). Running it
    /// again after an interruption finishes the job.
    ///
    /// # Errors
    /// [`Error::BadArgument`] for a key that does not parse or is not the
    /// deployment's; [`Error::InUse`] while other processes have the
    /// deployment open; [`Error::Library`] with a usage kind if the log
    /// verifies (nothing to recover); configuration and I/O errors.
    pub async fn recover_audit(dir: &Path, verifying_key: &str) -> Result<AuditRecovery, Error> {
        let (dir, verifying_key) = (dir.to_path_buf(), verifying_key.to_owned());
        blocking::run(move || {
            let config = Config::read(&dir)?;
            let key = VerifyingKey::parse(&verifying_key).map_err(|error| Error::BadArgument {
                what: "the verifying key given",
                detail: format!("{error}; give the key `atrest init` printed"),
            })?;
            if key != VerifyingKey::parse(&config.audit_verifying_key)? {
                return Err(Error::BadArgument {
                    what: "the verifying key given",
                    detail: "it is not this deployment's audit key".into(),
                });
            }
            let running = crate::lease::scan(&dir, None)
                .map_err(crate::error::io_at(dir.join(crate::lease::LEASES)))?
                .living;
            if !running.is_empty() {
                return Err(Error::InUse {
                    holders: running
                        .iter()
                        .map(|(_, holder)| format!("{} (pid {})", holder.program, holder.pid))
                        .collect(),
                });
            }
            let signer = crate::read_signing_key(&dir, &config)?;
            let log_config = self::config(config.audit_witness(&dir).as_deref());
            let restarted = atrest::audit::log::restart::restart(
                dir.join(AUDIT_DIR),
                signer,
                log_config,
                &key,
            )?;
            Ok(AuditRecovery {
                set_aside: restarted.set_aside,
                previous_log: restarted.previous_log,
                lines_verified: restarted.report.as_ref().map(|r| r.records),
                damage: restarted
                    .report
                    .as_ref()
                    .and_then(|r| r.problem.as_ref())
                    .map(ToString::to_string),
            })
        })
        .await
    }

    /// Verifies the audit log of the deployment in `dir` without opening
    /// it for writing (so it works on a damaged log too): the chain, the
    /// signature of its last checkpoint line, and the newest checkpoint of
    /// its witness. The verifying key and the witness directory are taken
    /// from `trusted` where given — pass them from a source the
    /// deployment's writers cannot change — and otherwise from the
    /// deployment's configuration. The log is read on the blocking pool.
    ///
    /// # Errors
    /// [`Error::NoDeployment`], configuration and audit errors (a problem in
    /// the log is in the report, not an error).
    pub async fn verify_audit(
        dir: &Path,
        trusted: &TrustedAudit,
    ) -> Result<AuditVerification, Error> {
        let (dir, trusted) = (dir.to_path_buf(), trusted.clone());
        blocking::run(move || {
            let config = Config::read(&dir)?;
            // What the operator gives is checked as an argument: a key that
            // does not parse, or a witness that is not there, is a mistake
            // in the command, not evidence about the log.
            let key = match &trusted.verifying_key {
                Some(text) => VerifyingKey::parse(text).map_err(|error| Error::BadArgument {
                    what: "the verifying key given",
                    detail: format!("{error}; give the key `atrest init` printed"),
                })?,
                None => VerifyingKey::parse(&config.audit_verifying_key)?,
            };
            if let Some(witness) = &trusted.witness
                && !witness.is_dir()
            {
                return Err(Error::BadArgument {
                    what: "the witness given",
                    detail: format!("{} is not a directory", witness.display()),
                });
            }
            let witness = trusted
                .witness
                .clone()
                .or_else(|| config.audit_witness(&dir));
            let log_dir = dir.join(AUDIT_DIR);
            let (report, witnessed) = match &witness {
                Some(witness) => atrest::audit::verify_witnessed(
                    &log_dir,
                    &key,
                    &DirectoryWitness::new(witness),
                )?,
                None => (atrest::audit::verify(&log_dir, &[], &key)?, None),
            };
            Ok(AuditVerification {
                restarted: restarted(&log_dir),
                report,
                key_from_operator: trusted.verifying_key.is_some(),
                witness,
                witnessed_size: witnessed.map(|c| c.size),
            })
        })
        .await
    }

    /// The audit log's records in the deployment in `dir`, optionally only
    /// those about tenant `tenant`, with the names of the tenants they name:
    /// only names that authenticate, which takes the deployment's keys (a
    /// name that fails is audited and left out; if the deployment cannot
    /// be opened here, tenants are shown by id alone).
    ///
    /// # Errors
    /// Audit and catalog errors; [`Error::NoDeployment`];
    /// [`Error::UnknownTenant`].
    pub async fn audit_entries(dir: &Path, tenant: Option<&str>) -> Result<AuditEntries, Error> {
        let names: HashMap<String, String> =
            match Deployment::open(dir, crate::Options::new("atrest")).await {
                Ok(deployment) => deployment
                    .tenant_names()
                    .await?
                    .into_iter()
                    .map(|(name, id)| (id.to_string(), name))
                    .collect(),
                Err(error @ Error::NoDeployment { .. }) => return Err(error),
                Err(_) => HashMap::new(),
            };
        let wanted = match tenant {
            None => None,
            Some(name) => Some(
                names
                    .iter()
                    .find(|(_, n)| n.as_str() == name)
                    .map(|(id, _)| id.clone())
                    .ok_or_else(|| Error::UnknownTenant {
                        name: name.to_owned(),
                    })?,
            ),
        };
        let log_dir = dir.join(AUDIT_DIR);
        let entries = blocking::run(move || atrest::audit::read_entries(log_dir)).await?;
        let entries = entries
            .into_iter()
            .filter(|e| {
                wanted
                    .as_ref()
                    .is_none_or(|w| e.tenant.as_ref().is_some_and(|t| t.as_str() == w))
            })
            .collect();
        Ok(AuditEntries {
            entries,
            tenant_names: names,
        })
    }
}
