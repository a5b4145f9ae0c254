//! File keys: made for a new file version under the tenant's current TIK,
//! and released for an existing one, each once the policy allows it and
//! each audited; for a batch, with its records committed together.

use std::sync::Arc;

use atrest_audit::{Audit, Event, Outcome, Record, Text};
use atrest_filekey::{FileContext, FileKey, Kek, KeyVersion, OsRng, TenantId, WrappedFileKey};

use super::{KeyHierarchy, TenantEntry};
use crate::store::TenantState;
use crate::{Access, Decision, Error};

impl KeyHierarchy {
    /// Generates the file key of a new file version and wraps it under the
    /// tenant's current TIK, once the policy allowed `access` to write it
    /// ([`ReleasePolicy::decide_write`]). The caller stores the wrapped key
    /// with the file's metadata and encrypts with the key, then drops it.
    ///
    /// Audited as `file_key_wrapped`, or `write_denied`.
    ///
    /// # Errors
    /// [`Error::Denied`] if the policy refuses the write;
    /// [`Error::UnknownTenant`]; [`Error::Purged`]; [`Error::Revoked`] or
    /// [`Error::RootKey`] if the TIK cannot be unwrapped (see [`Access`]);
    /// [`Error::Audit`] (then no key is returned).
    ///
    /// [`ReleasePolicy::decide_write`]: crate::ReleasePolicy::decide_write
    pub async fn new_file_key(
        &self,
        access: &Access<'_>,
        context: &FileContext,
    ) -> Result<(FileKey, WrappedFileKey), Error> {
        self.authorize_write(access, context).await?;
        let (entry, version, tik) = self.current_tik(context.tenant, access).await?;
        let result = tik.and_then(|tik| {
            tik.generate_wrapped(context, &mut OsRng)
                .map_err(Error::from)
        });
        let event = Event::FileKeyWrapped {
            file: Self::file_ref(context),
            kek: Self::tik_ref(&entry, version),
        };
        match result {
            Ok(pair) => {
                self.record(&entry, event, Outcome::Success).await?;
                Ok(pair)
            }
            Err(error) => {
                self.record(&entry, event, Self::failed(&error)).await?;
                Err(error)
            }
        }
    }

    /// The tenant's entry, its current TIK version and that version's KEK
    /// (or why it cannot be had). If the entry names a current version
    /// that no longer exists — another process rolled the TIK and retired
    /// the version since the entry was cached — the entry is read afresh
    /// and its current version used, once.
    pub(super) async fn current_tik(
        &self,
        tenant: TenantId,
        access: &Access<'_>,
    ) -> Result<(Arc<TenantEntry>, KeyVersion, Result<Arc<Kek>, Error>), Error> {
        let entry = self.tenant_entry(tenant).await?;
        let version = entry.record.current_tik;
        match self.tik(&entry, version, access).await {
            Err(Error::UnknownTikVersion { .. }) => {
                self.flush_tenant(tenant);
                let entry = self.tenant_entry(tenant).await?;
                let version = entry.record.current_tik;
                let tik = self.tik(&entry, version, access).await;
                Ok((entry, version, tik))
            }
            tik => Ok((entry, version, tik)),
        }
    }

    /// Asks the write decision for the file version `context` (as a seal
    /// does, for a change such as a deletion); a refusal is audited
    /// (`write_denied`) and returned. The tenant must be active.
    ///
    /// # Errors
    /// [`Error::Denied`]; [`Error::PolicyUnavailable`]; [`Error::Purged`];
    /// [`Error::UnknownTenant`]; [`Error::Audit`].
    pub async fn authorize_write(
        &self,
        access: &Access<'_>,
        context: &FileContext,
    ) -> Result<(), Error> {
        self.check_capability(access)?;
        let entry = self.tenant_entry(context.tenant).await?;
        let decision = self
            .policy
            .decide_write(access, context.tenant, context.file)
            .await;
        if let Some((outcome, error)) = Self::refusal(decision) {
            let event = Event::WriteDenied {
                file: Self::file_ref(context),
                principal: Text::lossy(access.principal()),
            };
            self.record(&entry, event, outcome).await?;
            return Err(error);
        }
        Ok(())
    }

    /// Releases the file key of a file version to `access`: checks the
    /// key-release policy, then unwraps under the TIK version the wrapped
    /// key names. Every release and every refusal is audited; if the record
    /// cannot be written, no key is released.
    ///
    /// # Errors
    /// [`Error::Denied`] if the policy refuses; [`Error::Purged`];
    /// [`Error::WrongTenant`] if the wrapped key is another tenant's;
    /// [`Error::Revoked`] or [`Error::RootKey`] if the TIK cannot be
    /// unwrapped; [`Error::FileKey`] if the wrapped key does not
    /// authenticate for `context`; [`Error::UnknownTenant`],
    /// [`Error::UnknownTikVersion`], [`Error::Store`], [`Error::Audit`].
    pub async fn release_file_key(
        &self,
        access: &Access<'_>,
        context: &FileContext,
        wrapped: &WrappedFileKey,
    ) -> Result<FileKey, Error> {
        self.check_capability(access)?;
        let principal = Text::lossy(access.principal());
        let entry = match self.tenant_entry(context.tenant).await {
            Ok(entry) => entry,
            Err(error) => {
                // No such tenant (or the store failed): refused, and recorded.
                let record = Record::new(
                    self.actor.clone(),
                    Event::ReleaseDenied {
                        file: Self::file_ref(context),
                        principal,
                    },
                )
                .tenant(Text::lossy(context.tenant.to_string()))
                .outcome(Self::failed(&error));
                let _ = self.audit.record(record).await?;
                return Err(error);
            }
        };
        let released = async |entry: &TenantEntry| {
            if entry.record.state == TenantState::Purged {
                return Err(Error::Purged(context.tenant));
            }
            let decision = self
                .policy
                .decide(access, context.tenant, context.file)
                .await;
            if let Some((_, error)) = Self::refusal(decision) {
                return Err(error);
            }
            if wrapped.kek_id() != entry.record.tik_id {
                return Err(Error::WrongTenant(context.tenant));
            }
            let tik = self.tik(entry, wrapped.kek_version(), access).await?;
            Ok(tik.unwrap(wrapped, context)?)
        };
        let result = released(&entry).await;
        let file = Self::file_ref(context);
        match result {
            Ok(key) => {
                let event = Event::FileKeyReleased {
                    file,
                    kek: Self::tik_ref(&entry, wrapped.kek_version()),
                    principal,
                };
                self.record(&entry, event, Outcome::Success).await?;
                Ok(key)
            }
            Err(Error::Denied { reason }) => {
                let event = Event::ReleaseDenied { file, principal };
                let outcome = Outcome::Denied {
                    reason: Text::lossy(reason.as_str()),
                };
                self.record(&entry, event, outcome).await?;
                Err(Error::Denied { reason })
            }
            Err(error) => {
                let event = Event::ReleaseDenied { file, principal };
                self.record(&entry, event, Self::failed(&error)).await?;
                Err(error)
            }
        }
    }

    /// [`KeyHierarchy::new_file_key`] for several files of one tenant at
    /// once, each under the tenant's current TIK, with their
    /// `file_key_wrapped` records committed to the audit trail together
    /// (one sync). Returns one result per context, in order.
    ///
    /// # Errors
    /// As for [`KeyHierarchy::new_file_key`], for the whole batch if the
    /// tenant's TIK cannot be used or the records cannot be written (then
    /// no key is returned).
    pub async fn new_file_keys(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        contexts: &[FileContext],
    ) -> Result<Vec<NewFileKey>, Error> {
        let (keys, records) = self
            .new_file_keys_records_pending(access, tenant, contexts)
            .await?;
        records.commit().await?;
        Ok(keys)
    }

    /// As [`KeyHierarchy::new_file_keys`], but the keys' records (made
    /// here, each with its request id) are committed to the audit trail by
    /// the caller, with [`PendingKeyRecords::commit`]: so a batch can
    /// commit them while it writes what the keys protect, rather than
    /// before. Denials and a TIK that cannot be used are recorded here, as
    /// by `new_file_keys`.
    ///
    /// The caller must commit the records, and see the commit succeed,
    /// before it publishes anything the keys protect (a file record, say);
    /// if the commit fails it must publish nothing. `atrest`'s `Files`
    /// does so for its batches.
    ///
    /// # Errors
    /// As for [`KeyHierarchy::new_file_keys`].
    pub async fn new_file_keys_records_pending(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        contexts: &[FileContext],
    ) -> Result<(Vec<NewFileKey>, PendingKeyRecords), Error> {
        {
            self.check_capability(access)?;
            let entry = self.tenant_entry(tenant).await?;
            // The write decision first, as for one file: writes refused
            // never get the TIK unwrapped for them.
            let files: Vec<_> = contexts.iter().map(|context| context.file).collect();
            let mut decisions = self
                .policy
                .decide_writes(access, tenant, &files)
                .await
                .into_iter();
            let refusals: Vec<Option<(Outcome, Error)>> = contexts
                .iter()
                .map(|_| {
                    Self::refusal(decisions.next().unwrap_or_else(|| {
                        Decision::Deny("the policy gave fewer decisions than files".into())
                    }))
                })
                .collect();
            // The TIK, if any write is allowed (the entry as it was used).
            let (entry, version, tik) = if refusals.iter().any(Option::is_none) {
                let (entry, version, tik) = self.current_tik(tenant, access).await?;
                (entry, version, Some(tik))
            } else {
                let version = entry.record.current_tik;
                (entry, version, None)
            };
            let denied = |context: &FileContext, outcome: Outcome| {
                Record::new(
                    self.actor.clone(),
                    Event::WriteDenied {
                        file: Self::file_ref(context),
                        principal: Text::lossy(access.principal()),
                    },
                )
                .tenant(entry.tenant_text.clone())
                .outcome(outcome)
            };
            let wrapped = |context: &FileContext, outcome: Outcome| {
                Record::new(
                    self.actor.clone(),
                    Event::FileKeyWrapped {
                        file: Self::file_ref(context),
                        kek: Self::tik_ref(&entry, version),
                    },
                )
                .tenant(entry.tenant_text.clone())
                .outcome(outcome)
            };
            let tik = match tik {
                None => None,
                Some(Ok(tik)) => Some(tik),
                Some(Err(error)) => {
                    let records = contexts
                        .iter()
                        .zip(refusals)
                        .map(|(context, refusal)| match refusal {
                            Some((outcome, _)) => denied(context, outcome),
                            None => wrapped(context, Self::failed(&error)),
                        })
                        .collect();
                    let _ = self.audit.record_all(records).await?;
                    return Err(error);
                }
            };
            // The keys of the writes allowed, made together: one request to
            // the generator for many keys.
            let allowed: Vec<FileContext> = contexts
                .iter()
                .zip(&refusals)
                .filter(|(context, refusal)| refusal.is_none() && context.tenant == tenant)
                .map(|(context, _)| *context)
                .collect();
            let mut made_keys = match &tik {
                Some(tik) => tik.generate_wrapped_many(&allowed, &mut OsRng),
                None => Ok(Vec::new()),
            }
            .map(Vec::into_iter);
            let mut records = Vec::with_capacity(contexts.len());
            let mut keys = Vec::with_capacity(contexts.len());
            for (context, refusal) in contexts.iter().zip(refusals) {
                if let Some((outcome, error)) = refusal {
                    records.push(denied(context, outcome));
                    keys.push(Err(error));
                    continue;
                }
                let made = match &mut made_keys {
                    _ if context.tenant != tenant => Err(Error::WrongTenant(context.tenant)),
                    Ok(made) => made.next().ok_or(Error::Misuse(
                        "generate_wrapped_many gave fewer keys than contexts",
                    )),
                    Err(error) => Err(Error::from(error.clone())),
                };
                let outcome = match &made {
                    Ok(_) => Outcome::Success,
                    Err(error) => Self::failed(error),
                };
                records.push(wrapped(context, outcome));
                keys.push(made);
            }
            Ok((
                keys,
                PendingKeyRecords {
                    audit: Arc::clone(&self.audit),
                    records,
                },
            ))
        }
    }
}

/// One result of [`KeyHierarchy::new_file_keys`]: a new file key and its
/// wrap, or why it could not be made.
pub type NewFileKey = Result<(FileKey, WrappedFileKey), Error>;

/// The `file_key_wrapped` records of keys made by
/// [`KeyHierarchy::new_file_keys_records_pending`], not yet in the audit
/// trail. Dropping them uncommitted loses them: commit them before
/// publishing anything the keys protect.
#[must_use = "the keys' records must be committed before anything the keys protect is published"]
pub struct PendingKeyRecords {
    audit: Arc<dyn Audit>,
    records: Vec<Record>,
}

impl PendingKeyRecords {
    /// Commits the records to the audit trail (one sync).
    ///
    /// # Errors
    /// [`Error::Audit`] if they could not be committed.
    pub async fn commit(self) -> Result<(), Error> {
        let _ = self.audit.record_all(self.records).await?;
        Ok(())
    }
}

impl core::fmt::Debug for PendingKeyRecords {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PendingKeyRecords")
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}
