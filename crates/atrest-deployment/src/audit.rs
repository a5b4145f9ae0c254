//! The deployment's audit trail: records the programs add, verification
//! against what the operator trusts, and reading it back by tenant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use atrest::audit::{
    Audit as _, DirectoryWitness, Entry, Event, LogConfig, Record, Report, Text, VerifyingKey,
};
use atrest_core::blocking;

use crate::config::Config;
use crate::{AUDIT_DIR, Deployment, Error, metadata};

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
        let mut record = Record::new(Text::lossy(self.options.actor()), event);
        if let Some(tenant) = tenant {
            record = record.tenant(Text::lossy(self.tenant_id(tenant).await?.to_string()));
        }
        if let Some(request) = request {
            record = record.request(Text::lossy(request));
        }
        let _ = self.log.record(record).await?;
        Ok(())
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
            let key_text = trusted
                .verifying_key
                .as_deref()
                .unwrap_or(&config.audit_verifying_key);
            let key = VerifyingKey::parse(key_text)?;
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
                report,
                key_from_operator: trusted.verifying_key.is_some(),
                witness,
                witnessed_size: witnessed.map(|c| c.size),
            })
        })
        .await
    }

    /// The audit log's records in the deployment in `dir` (read without
    /// opening the deployment for writing), optionally only those about
    /// tenant `tenant`, with the names of the tenants they name.
    ///
    /// # Errors
    /// Audit and catalog errors; [`Error::UnknownTenant`].
    pub async fn audit_entries(dir: &Path, tenant: Option<&str>) -> Result<AuditEntries, Error> {
        let config = {
            let dir = dir.to_path_buf();
            blocking::run(move || Config::read(&dir)).await?
        };
        let (_, catalog) = metadata::open(dir, &config, None).await?;
        let names: HashMap<String, String> = catalog
            .tenant_names()
            .await?
            .into_iter()
            .map(|(name, id)| (id.to_string(), name))
            .collect();
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
