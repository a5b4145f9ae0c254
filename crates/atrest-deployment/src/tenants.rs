//! Tenants and their keys: creating them (service-managed or with customer
//! keys in tokens or key services), what they look like, rotation,
//! revocation and purge; the service's own root keys.

use std::sync::Arc;

use atrest::TenantName;
use atrest::audit::{Audit as _, Event, Outcome, Record, Text};
use atrest::filekey::{KeyVersion, OsRng, TenantId};
use atrest::tenant::{
    FallbackPolicy, Pkcs11Keys, RewrapProgress, RewrapReport, RootKeyProvider, RootKeyRef,
    RootRollReport, TenantKind, TenantState,
};
use serde::Serialize;

use crate::config::{AwsKmsConfig, Config, KmsConfig, TokenConfig};
use crate::files::named;
use crate::{AVAILABILITY_KEY, Deployment, Error, ROOT_KEY, SERVICE_PROVIDER, keys};

/// How a new tenant's root keys are held.
#[derive(Clone, Debug)]
pub enum TenantKeys {
    /// By the service.
    ServiceManaged,
    /// By the customer: one key in each of two PKCS#11 tokens (plus the
    /// service's availability key). The tokens are added to the
    /// deployment's configuration.
    CustomerKey {
        /// The tokens, with the label of the key in each.
        keys: Box<[(TokenConfig, String); 2]>,
        /// Generate the keys in the tokens (sensitive, not extractable)
        /// rather than use existing ones.
        generate: bool,
    },
    /// By the customer: two keys at providers the program registered with
    /// [`crate::Options::provider`] (plus the service's availability key).
    CustomerKeyAt {
        /// The two keys.
        keys: [RootKeyRef; 2],
    },
}

/// A tenant's state, for display.
#[derive(Clone, Debug, Serialize)]
pub struct TenantSummary {
    /// The tenant's name.
    pub name: String,
    /// Its id.
    pub id: String,
    /// `service-managed` or `customer-key`.
    pub kind: String,
    /// `active`, `purged`, or (for a customer-key tenant) what the
    /// revocations of its customer keys leave: `active: 1 of 2 customer
    /// keys revoked, …` or `revoked: every customer key is revoked, …`.
    pub state: String,
    /// The customer keys recorded as revoked.
    pub revoked_keys: Vec<String>,
    /// The current TIK version.
    pub current_tik: u32,
    /// Its root keys, as `role provider:label@version`, with `(revoked)`
    /// marks.
    pub root_keys: Vec<String>,
    /// Every TIK version it still has, oldest first, with the number of
    /// file keys wrapped under each.
    pub tik_versions: Vec<TikVersionSummary>,
    /// Whether file keys are still wrapped under versions older than the
    /// current one: a rotation that has not finished (run it again).
    pub rotation_unfinished: bool,
    /// For a customer-key tenant, when user requests may use the
    /// availability key: `automatic`, `declared` or `never`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// The outage window declared under `declared`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outage: Option<OutageSummary>,
}

/// A declared outage window, as shown to the operator.
#[derive(Debug, Clone, Serialize)]
pub struct OutageSummary {
    /// When it begins, in seconds since the Unix epoch.
    pub start: u64,
    /// When it ends.
    pub end: u64,
    /// Why it was declared.
    pub reason: String,
    /// Whether it is open now.
    pub open: bool,
}

/// One TIK version of a tenant.
#[derive(Debug, Clone, Serialize)]
pub struct TikVersionSummary {
    /// The version.
    pub version: u32,
    /// Whether new file keys are wrapped under it.
    pub current: bool,
    /// File keys wrapped under it.
    pub file_keys: u64,
}

impl Deployment {
    /// The id of the tenant named `name`, once the name is authenticated
    /// (its tag under the tenant's metadata key; see
    /// [`Deployment::authentic`]).
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; [`atrest::CatalogError::NameTampered`]
    /// (audited) if the name fails; catalog and key errors.
    pub async fn tenant_id(&self, name: &str) -> Result<TenantId, Error> {
        if let Some(named) = self.names.by_name(name).await {
            return Ok(named.tenant);
        }
        let named = self
            .catalog
            .tenant_named(name)
            .await?
            .ok_or_else(|| Error::UnknownTenant {
                name: name.to_owned(),
            })?;
        // The name asked for is the one authenticated, whatever name the
        // row gives: a database that answers a lookup with another name's
        // row (a collation that makes two names equal, a rule) gets a
        // refusal, not that name's tenant.
        let asked = TenantName {
            name: name.to_owned(),
            ..named
        };
        self.authentic(&asked).await
    }

    /// The tenant a stored name maps to, if the name authenticates: its
    /// tag binds it to the tenant under the tenant's metadata key, which
    /// only the tenant key gives. The name of a tenant the tenant key store
    /// holds no key of (purged, its metadata perhaps restored from before
    /// the purge) cannot be checked and is taken as it is: nothing of that
    /// tenant can be read or written any more, and a purge of it destroys
    /// nothing. The key store decides that, not the database: a tenant
    /// whose record was edited so that its key is not found is refused
    /// like any other name that fails — else a name pointed at it would
    /// have `atrest purge` destroy the wrong tenant's keys. A name that
    /// fails is refused and audited (`metadata_rejected`, naming the
    /// tenant the row claims).
    ///
    /// # Errors
    /// [`atrest::CatalogError::NameTampered`]; key errors.
    pub async fn authentic(&self, named: &TenantName) -> Result<TenantId, Error> {
        match self.files.authenticate_name(named).await {
            Ok(()) => {
                self.names.authenticated(named);
                Ok(named.tenant)
            }
            Err(
                error @ atrest::Error::Keys(
                    atrest::tenant::Error::Purged(_) | atrest::tenant::Error::TenantKeyMissing(_),
                ),
            ) => {
                if self.files.keys().keys_gone(named.tenant).await? {
                    Ok(named.tenant)
                } else {
                    Err(error.into())
                }
            }
            Err(error) => {
                if matches!(
                    error,
                    atrest::Error::Catalog(atrest::CatalogError::NameTampered { .. })
                ) {
                    let outcome = Outcome::Failed {
                        error: Text::lossy(error.to_string()),
                    };
                    let record = Record::new(
                        Text::lossy(self.options.actor()),
                        Event::MetadataRejected {},
                    )
                    .tenant(Text::lossy(named.tenant.to_string()))
                    .outcome(outcome);
                    self.log.record(record).await?;
                }
                Err(error.into())
            }
        }
    }

    /// Tags the names made before names were tagged (a deployment made by
    /// an earlier version), each under its tenant's metadata key; returns
    /// the names tagged. Run it once after upgrading, on a database known
    /// to be untouched: it trusts each untagged name as it is. Names with
    /// a tag, and tenants whose key is gone, are left alone. Audited
    /// (`custom` event `tenant_names_tagged`).
    ///
    /// # Errors
    /// Catalog, key and audit errors.
    pub async fn tag_untagged_names(&self) -> Result<Vec<String>, Error> {
        let mut tagged = Vec::new();
        for named in self.catalog.tenant_names().await? {
            if named.tag.is_some() {
                continue;
            }
            let tag = match self.files.name_tag(named.tenant, &named.name).await {
                Ok(tag) => tag,
                Err(atrest::Error::Keys(
                    atrest::tenant::Error::Purged(_) | atrest::tenant::Error::TenantKeyMissing(_),
                )) => continue,
                Err(error) => return Err(error.into()),
            };
            if self
                .catalog
                .tag_tenant_name(&named.name, named.tenant, &tag)
                .await?
            {
                tagged.push(named.name);
            }
        }
        let mut fields = std::collections::BTreeMap::new();
        let _ = fields.insert(
            Text::lossy("names"),
            atrest::audit::Value::Count(tagged.len() as u64),
        );
        let record = Record::new(
            Text::lossy(self.options.actor()),
            Event::Custom {
                kind: Text::lossy("tenant_names_tagged"),
                fields,
            },
        );
        let _ = self.log.record(record).await?;
        Ok(tagged)
    }

    /// Every tenant name that authenticates ([`Deployment::authentic`]),
    /// by name, with its tenant; those that fail their authentication are
    /// left out (and audited).
    ///
    /// # Errors
    /// Catalog, key and audit errors (a key store that cannot be read is
    /// an error, not a shorter list).
    pub async fn tenant_names(&self) -> Result<Vec<(String, TenantId)>, Error> {
        let mut names = Vec::new();
        for named in self.catalog.tenant_names().await? {
            match self.authentic(&named).await {
                Ok(tenant) => names.push((named.name, tenant)),
                Err(error) if error.kind() == atrest::ErrorKind::Integrity => {}
                Err(error) => return Err(error),
            }
        }
        Ok(names)
    }

    /// Creates tenant `name`. The release policy knows it at once;
    /// the key hierarchy (and its TIK cache) is rebuilt only if the tenant
    /// brings a PKCS#11 token the deployment did not use yet.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a name that breaks [`TENANT_NAME_RULE`];
    /// [`Error::Library`] for a name that is taken (a conflict);
    /// [`Error::ProviderConflict`] if a token's provider name is in use for
    /// another token; [`Error::PinNotSet`]; key errors.
    pub async fn create_tenant(
        &mut self,
        name: &str,
        keys: &TenantKeys,
    ) -> Result<TenantSummary, Error> {
        check_tenant_name(name)?;
        if self.catalog.tenant_named(name).await?.is_some() {
            return Err(atrest::Error::from(atrest::CatalogError::TenantNameTaken {
                name: name.to_owned(),
            })
            .into());
        }
        let tenant = TenantId::random(&mut OsRng)?;
        // The keys first: the name's tag is made under the tenant's
        // metadata key. A name taken meanwhile by another process leaves
        // the keys of a tenant no name reaches, which the purge destroys.
        self.create_tenant_keys(tenant, keys).await?;
        let named = async {
            let tag = self.files.name_tag(tenant, name).await?;
            self.catalog.name_tenant(name, tenant, &tag).await
        }
        .await;
        if let Err(error) = named {
            let _ = self.files.keys().purge(tenant).await;
            return Err(error.into());
        }
        self.tenant_summary(name).await
    }

    async fn create_tenant_keys(
        &mut self,
        tenant: TenantId,
        keys: &TenantKeys,
    ) -> Result<(), Error> {
        let customer_keys = match keys {
            TenantKeys::ServiceManaged => {
                let _ = self.files.keys().create_service_tenant(tenant).await?;
                return Ok(());
            }
            TenantKeys::CustomerKeyAt { keys } => keys.clone(),
            TenantKeys::CustomerKey { keys, generate } => {
                self.configure_tokens(keys, *generate).await?
            }
        };
        let created = self
            .files
            .keys()
            .create_customer_key_tenant(tenant, customer_keys)
            .await;
        match created {
            Ok(_) => Ok(()),
            // A key the token does not hold: nothing to refuse yet, the
            // operator named a key that is not there.
            Err(atrest::tenant::Error::RootKey(atrest::tenant::ProviderError::NotFound {
                key,
            })) => Err(Error::NoSuchTokenKey {
                key: key.to_string(),
            }),
            Err(error) => Err(error.into()),
        }
    }

    /// Adds the tokens to the configuration (rebuilding the key hierarchy
    /// if one is new), generating the keys in them if asked; returns the
    /// keys' references.
    async fn configure_tokens(
        &mut self,
        keys: &[(TokenConfig, String); 2],
        generate: bool,
    ) -> Result<[RootKeyRef; 2], Error> {
        let mut config = self.config.clone();
        let mut refs = Vec::with_capacity(2);
        for (token, label) in keys {
            atrest::check_name("provider name", &token.name).map_err(atrest::Error::from)?;
            let taken = token.name == SERVICE_PROVIDER || self.options.has_provider(&token.name);
            match config.tokens.iter().find(|t| t.name == token.name) {
                Some(known) if known != token => {
                    return Err(Error::ProviderConflict {
                        provider: token.name.clone(),
                    });
                }
                Some(_) => {}
                None if taken => {
                    return Err(Error::ProviderConflict {
                        provider: token.name.clone(),
                    });
                }
                None => config.tokens.push(token.clone()),
            }
            if generate {
                let pin = std::env::var(&token.pin_env).map_err(|_| Error::PinNotSet {
                    variable: token.pin_env.clone(),
                })?;
                let opened =
                    Pkcs11Keys::open(&token.name, &token.module, &token.token, &pin).await?;
                refs.push(opened.generate_key(label).await?);
            } else {
                refs.push(RootKeyRef::new(token.name.clone(), label.clone(), 1)?);
            }
        }
        if config.tokens != self.config.tokens {
            self.reconfigure(config).await?;
        }
        let [a, b]: [RootKeyRef; 2] = refs
            .try_into()
            .unwrap_or_else(|_| unreachable!("one key per token, two tokens"));
        Ok([a, b])
    }

    /// Writes a configuration with a new provider and rebuilds the key
    /// hierarchy (its providers are fixed when it is built).
    async fn reconfigure(&mut self, config: Config) -> Result<(), Error> {
        {
            let (config, dir) = (config.clone(), self.dir.clone());
            atrest_core::blocking::run(move || config.write(&dir)).await?;
        }
        self.config = config;
        let parts = keys::Parts {
            config: &self.config,
            options: &self.options,
            service: &self.service,
            store: &self.store,
            tenant_keys: &self.tenant_keys,
            catalog: &self.catalog,
            blobs: &self.locations.stored,
            log: &self.log,
            fallbacks: &self.fallbacks,
        };
        let (files, administration) = parts.files(self.policy.clone()).await?;
        self.names.set(files.keys());
        self.files = files;
        // A deployment that gave its administration up keeps it given up.
        if self.administration.is_some() {
            self.administration = Some(administration);
        }
        Ok(())
    }

    /// Adds a key service (an OpenBao or Vault transit engine) whose keys
    /// tenants can then name as customer keys (`NAME:KEY@VERSION`). Its
    /// token must be readable now; the service itself is not asked.
    ///
    /// # Errors
    /// [`Error::ProviderConflict`] if the name is in use;
    /// [`Error::Library`] for an invalid name or address, or a token that
    /// cannot be read.
    pub async fn add_kms(&mut self, kms: KmsConfig) -> Result<(), Error> {
        self.check_new_provider(&kms.name)?;
        let _ = keys::transit_keys(&kms)?;
        let mut config = self.config.clone();
        config.kms.push(kms);
        self.reconfigure(config).await
    }

    /// Adds AWS KMS as a provider whose keys tenants can then name as
    /// customer keys (`NAME:KEY-ARN`). Its credentials must be readable
    /// now; KMS itself is not asked.
    ///
    /// # Errors
    /// [`Error::ProviderConflict`] if the name is in use;
    /// [`Error::Library`] for an invalid name or endpoint, or credentials
    /// that cannot be read.
    pub async fn add_aws_kms(&mut self, kms: AwsKmsConfig) -> Result<(), Error> {
        self.check_new_provider(&kms.name)?;
        let _ = keys::aws_kms_keys(&kms)?;
        let mut config = self.config.clone();
        config.aws_kms.push(kms);
        self.reconfigure(config).await
    }

    /// Refuses a provider name that is invalid or already names one.
    fn check_new_provider(&self, name: &str) -> Result<(), Error> {
        atrest::check_name("provider name", name).map_err(atrest::Error::from)?;
        let taken = name == SERVICE_PROVIDER
            || self.options.has_provider(name)
            || self.config.tokens.iter().any(|t| t.name == name)
            || self.config.kms.iter().any(|k| k.name == name)
            || self.config.aws_kms.iter().any(|k| k.name == name);
        if taken {
            return Err(Error::ProviderConflict {
                provider: name.to_owned(),
            });
        }
        Ok(())
    }

    /// The configured key services (transit engines).
    pub fn kms(&self) -> &[KmsConfig] {
        &self.config.kms
    }

    /// The configured AWS KMS providers.
    pub fn aws_kms(&self) -> &[AwsKmsConfig] {
        &self.config.aws_kms
    }

    /// Creates key `label` (`aes256-gcm96`, not exportable) in configured
    /// key service `name`, for an operator who runs that service too.
    ///
    /// # Errors
    /// [`Error::UnknownKms`] if no key service has that name; the
    /// service's refusal.
    pub async fn create_kms_key(&self, name: &str, label: &str) -> Result<RootKeyRef, Error> {
        let kms = self
            .config
            .kms
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| {
                if self.config.aws_kms.iter().any(|k| k.name == name) {
                    Error::BadArgument {
                        what: "the key service",
                        detail: format!(
                            "{name} is AWS KMS: create the key there (aws kms create-key) and name it by its ARN"
                        ),
                    }
                } else {
                    Error::UnknownKms {
                        name: name.to_owned(),
                    }
                }
            })?;
        Ok(keys::transit_keys(kms)?.create_key(label).await?)
    }

    /// A tenant's state.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; key store errors.
    pub async fn tenant_summary(&self, name: &str) -> Result<TenantSummary, Error> {
        let id = self.tenant_id(name).await?;
        let record = self.files.keys().tenant(id).await?;
        let mut counts = std::collections::BTreeMap::<u32, u64>::new();
        for file in self.catalog.records(id).await? {
            *counts.entry(u32::from(file.tik_version())).or_default() += 1;
        }
        let current = u32::from(record.current_tik);
        let tik_versions: Vec<_> = self
            .files
            .keys()
            .tik_versions(id)
            .await?
            .into_iter()
            .map(|version| {
                let version = u32::from(version);
                TikVersionSummary {
                    version,
                    current: version == current,
                    file_keys: counts.get(&version).copied().unwrap_or(0),
                }
            })
            .collect();
        let rotation_unfinished = counts.range(..current).any(|(_, &n)| n > 0);
        let customer_key = record.kind == TenantKind::CustomerKey;
        let outage = match &record.fallback {
            FallbackPolicy::Declared(Some(window)) => Some(OutageSummary {
                start: window.start,
                end: window.end,
                reason: window.reason.clone(),
                open: window.contains(std::time::SystemTime::now()),
            }),
            _ => None,
        };
        Ok(TenantSummary {
            tik_versions,
            rotation_unfinished,
            fallback: customer_key.then(|| record.fallback.name().to_owned()),
            outage,
            name: name.to_owned(),
            id: record.tenant.to_string(),
            kind: match record.kind {
                TenantKind::ServiceManaged => "service-managed".into(),
                TenantKind::CustomerKey => "customer-key".into(),
            },
            state: match record.state {
                TenantState::Purged => "purged".into(),
                TenantState::Active => {
                    let customer: Vec<_> = record
                        .slots
                        .iter()
                        .filter(|slot| slot.role == atrest::tenant::SlotRole::Customer)
                        .collect();
                    let revoked = customer.iter().filter(|slot| slot.revoked).count();
                    if revoked == 0 {
                        "active".into()
                    } else if revoked == customer.len() {
                        "revoked: every customer key is revoked, the files are unreadable".into()
                    } else {
                        format!(
                            "active: {revoked} of {} customer keys revoked, the files stay \
                             readable through the others",
                            customer.len()
                        )
                    }
                }
            },
            revoked_keys: record
                .slots
                .iter()
                .filter(|slot| slot.revoked)
                .map(|slot| slot.key.to_string())
                .collect(),
            current_tik: u32::from(record.current_tik),
            root_keys: record
                .slots
                .iter()
                .map(|slot| {
                    let role = match slot.role {
                        atrest::tenant::SlotRole::Service => "service",
                        atrest::tenant::SlotRole::Customer => "customer",
                        atrest::tenant::SlotRole::Availability => "availability",
                    };
                    let revoked = if slot.revoked { " (revoked)" } else { "" };
                    format!("{role} {}{revoked}", slot.key)
                })
                .collect(),
        })
    }

    /// Every tenant's state.
    ///
    /// # Errors
    /// Catalog and key store errors.
    pub async fn tenants(&self) -> Result<Vec<TenantSummary>, Error> {
        let mut summaries = Vec::new();
        for (name, _) in self.tenant_names().await? {
            summaries.push(self.tenant_summary(&name).await?);
        }
        Ok(summaries)
    }

    /// Rolls the tenant's TIK and re-wraps every wrapped file key in the
    /// catalog under the new version, reporting progress after each batch;
    /// then retires the versions nothing (no record, no upload in flight)
    /// refers to any more. Returns the new version, the re-wrap report and
    /// the versions retired.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; key and catalog errors; a re-wrap that
    /// stopped can be run again.
    pub async fn rotate_tik(
        &self,
        tenant: &str,
        progress: &mut (dyn FnMut(RewrapProgress) + Send),
    ) -> Result<(KeyVersion, RewrapReport, Vec<KeyVersion>), Error> {
        let tenant_id = self.tenant_id(tenant).await?;
        let rotated = self.files.rotate_tik(tenant_id, 1000, progress).await;
        named(tenant, tenant_id, rotated)
    }

    /// Rolls one of the service's root keys (`root` or `availability`):
    /// a new version wraps every TIK version it protected, and the old
    /// version is destroyed.
    ///
    /// # Errors
    /// [`Error::UnknownServiceKey`] for another label; key and store
    /// errors.
    pub async fn rotate_service_key(
        &self,
        label: &str,
    ) -> Result<(RootKeyRef, RootRollReport), Error> {
        if label != ROOT_KEY && label != AVAILABILITY_KEY {
            return Err(Error::UnknownServiceKey {
                label: label.to_owned(),
            });
        }
        let service: &Arc<atrest::tenant::ServiceKeys> = &self.service;
        let version = RootKeyProvider::current_version(service.as_ref(), label).await?;
        let old = RootKeyRef::new(SERVICE_PROVIDER, label, version)?;
        let new = service.roll_key(label).await?;
        let report = self.files.keys().roll_root_key(&old, &new).await?;
        service.destroy_version(&old).await?;
        Ok((new, report))
    }

    /// Records that the customer revoked the service's use of `key` (a
    /// `provider:label` reference) for tenant `tenant`.
    ///
    /// # Errors
    /// [`Error::UnknownRootKey`] if it is not one of the tenant's root
    /// keys; key errors (it is not a customer key).
    pub async fn revoke(&self, tenant: &str, key: &str) -> Result<(), Error> {
        let tenant_id = self.tenant_id(tenant).await?;
        let record = self.files.keys().tenant(tenant_id).await?;
        let wanted: RootKeyRef = key.parse()?;
        let found = record
            .slots
            .iter()
            .map(|slot| &slot.key)
            .find(|k| k.provider() == wanted.provider() && k.label() == wanted.label())
            .ok_or_else(|| Error::UnknownRootKey {
                tenant: tenant.to_owned(),
                key: key.to_owned(),
            })?;
        let revoked = self
            .files
            .keys()
            .revoke_customer_key(tenant_id, found)
            .await;
        named(tenant, tenant_id, revoked)
    }

    /// Sets customer-key tenant `tenant`'s fallback policy
    /// ([`FallbackPolicy`]): when its users may be served through the
    /// availability key while its customer keys are unavailable. Under
    /// `declared`, the window (if any) is the outage the operator declares;
    /// `Declared(None)` ends one. Audited; running instances follow within
    /// two seconds.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; key errors (a service-managed tenant, a
    /// window that is not valid).
    pub async fn set_fallback_policy(
        &self,
        tenant: &str,
        policy: FallbackPolicy,
    ) -> Result<(), Error> {
        let tenant_id = self.tenant_id(tenant).await?;
        let set = self
            .files
            .keys()
            .set_fallback_policy(tenant_id, policy)
            .await;
        named(tenant, tenant_id, set)
    }

    /// Accepts the record of the tenant with id `tenant` as the key
    /// metadata database holds it, after a backup of that database was
    /// restored: the record of a tenant that changed since the backup is an
    /// older copy, refused as tampered with until accepted (see
    /// [`KeyHierarchy::accept_restored_record`](atrest::tenant::KeyHierarchy::accept_restored_record)).
    /// By id, which the refusal names: the tenant's name cannot be
    /// authenticated before (its tag is checked under the tenant's key,
    /// through the record), and a name the database maps to another tenant
    /// must not have the operator accept that one. Audited; returns the
    /// tenant as accepted, under its name once that authenticates.
    ///
    /// # Errors
    /// Key and store errors (an unknown or purged tenant); [`Error::UnknownTenant`]
    /// if no name authenticates as the tenant's.
    pub async fn accept_restored_record(&self, tenant: TenantId) -> Result<TenantSummary, Error> {
        let text = tenant.to_string();
        let accepted = self.files.keys().accept_restored_record(tenant).await;
        named(&text, tenant, accepted)?;
        let name = self
            .tenant_names()
            .await?
            .into_iter()
            .find(|(_, id)| *id == tenant)
            .map(|(name, _)| name)
            .ok_or(Error::UnknownTenant { name: text })?;
        self.tenant_summary(&name).await
    }

    /// Purges tenant `tenant`: destroys all its key material. Its blobs
    /// stay, unreadable by anyone. Returns the number of TIK versions
    /// destroyed.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`]; key and store errors.
    pub async fn purge(&self, tenant: &str) -> Result<u64, Error> {
        let tenant_id = self.tenant_id(tenant).await?;
        let purged = self.files.keys().purge(tenant_id).await;
        named(tenant, tenant_id, purged)
    }
}

/// What a tenant name may be. Tenant names appear in principals
/// (`user@tenant`), URLs and reports: one spelling per tenant, nothing
/// that needs quoting.
pub const TENANT_NAME_RULE: &str = "a tenant name is 1 to 63 characters of lower-case ASCII \
     letters, digits, '-', '_' and '.', beginning with a letter or digit";

/// Checks `name` against [`TENANT_NAME_RULE`].
///
/// # Errors
/// [`Error::InvalidName`], saying what is wrong.
pub fn check_tenant_name(name: &str) -> Result<(), Error> {
    let invalid = |rule: &'static str| Error::InvalidName {
        what: "tenant name",
        name: name.chars().take(64).collect(),
        rule,
    };
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.is_empty() || name.len() > 63 {
        return Err(invalid(TENANT_NAME_RULE));
    }
    if name.chars().any(char::is_uppercase) {
        return Err(invalid(
            "tenant names are lower case (one spelling per tenant): use the lower-case form",
        ));
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b);
    if !first_ok || !name.bytes().all(allowed) {
        return Err(invalid(TENANT_NAME_RULE));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_tenant_name;

    #[test]
    fn tenant_names_have_one_spelling_and_need_no_quoting() {
        for good in ["contoso", "a", "fabrikam-eu.2", "0day", "x_y"] {
            assert!(check_tenant_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(64);
        for bad in [
            "", "Contoso", "CONTOSO", "con toso", "con/toso", "bob@x", "-x", ".x", "_x", "café",
            &long,
        ] {
            assert!(check_tenant_name(bad).is_err(), "{bad:?}");
        }
    }
}
