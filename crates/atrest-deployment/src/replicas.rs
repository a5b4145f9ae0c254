//! A deployment's blob locations (the primary and its replicas), and the
//! scrub that checks and repairs their copies.

use std::path::Path;
use std::sync::Arc;

use atrest::Blobs;
use atrest::audit::Event;
use atrest::blobs::{BlobCheck, BlobStore, CopyState, RepairOutcome, ReplicatedBlobs};
use serde::Serialize;

use super::config::Config;
use super::{Deployment, Error};

/// The blob stores of a deployment: the primary, its replicas, and what
/// seals and opens go through (the primary alone when there is no replica,
/// exactly as without replication).
pub(super) struct Locations {
    pub(super) primary: Arc<BlobStore>,
    pub(super) replicas: Vec<Arc<BlobStore>>,
    pub(super) replicated: Arc<ReplicatedBlobs>,
    pub(super) stored: Arc<dyn Blobs>,
}

/// A blob store at `spec`: an `object_store` URL (`s3://`, `az://`, …) or
/// a local directory.
pub(super) fn store_at(spec: &str) -> Result<BlobStore, Error> {
    Ok(if spec.contains("://") {
        BlobStore::from_url(spec)?
    } else {
        BlobStore::local(Path::new(spec))?
    })
}

/// Whether `spec` names a local directory (not a URL).
pub(super) fn is_local(spec: &str) -> bool {
    !spec.contains("://")
}

/// `copies` checked against the number of locations; `None`: all.
pub(super) fn copies(copies: Option<usize>, replicas: usize) -> Result<usize, Error> {
    let locations = 1 + replicas;
    match copies {
        None => Ok(locations),
        Some(copies) if (1..=locations).contains(&copies) => Ok(copies),
        Some(copies) => Err(Error::InvalidCopies { copies, locations }),
    }
}

impl Locations {
    /// The locations the configuration of the deployment in `dir` names.
    pub(super) fn open(dir: &Path, config: &Config) -> Result<Self, Error> {
        let primary = Arc::new(match &config.blobs {
            Some(url) => BlobStore::from_url(url)?,
            None => BlobStore::local(&dir.join("blobs"))?,
        });
        // A replica that cannot be opened (a local directory on a disk
        // that is gone) does not stop the deployment: it stands as a
        // location that fails everything, which writes count against
        // `copies` and scrubs report as unreachable.
        let mut replicas = Vec::with_capacity(config.replicas.len());
        let mut locations: Vec<Arc<dyn Blobs>> = Vec::with_capacity(config.replicas.len());
        for spec in &config.replicas {
            match store_at(spec) {
                Ok(store) => {
                    let store = Arc::new(store);
                    locations.push(store.clone());
                    replicas.push(store);
                }
                Err(Error::Library(error)) if error.kind() != atrest::ErrorKind::Usage => {
                    locations.push(Arc::new(Unreachable {
                        place: spec.clone(),
                        error: error.to_string(),
                    }));
                }
                Err(error) => return Err(error),
            }
        }
        let copies = copies(config.copies, config.replicas.len())?;
        let replicated = Arc::new(ReplicatedBlobs::new(primary.clone(), locations, copies)?);
        let stored: Arc<dyn Blobs> = if config.replicas.is_empty() {
            primary.clone()
        } else {
            replicated.clone()
        };
        Ok(Self {
            primary,
            replicas,
            replicated,
            stored,
        })
    }

    /// Every location that could be opened, primary first.
    pub(super) fn all(&self) -> impl Iterator<Item = &Arc<BlobStore>> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }
}

/// A replica location that could not be opened: every operation fails
/// with [`atrest::ErrorKind::Unavailable`].
struct Unreachable {
    place: String,
    error: String,
}

impl Unreachable {
    fn fail<T>(&self) -> Result<T, atrest::Error> {
        Err(atrest::Error::Blob {
            kind: atrest::ErrorKind::Unavailable,
            source: format!("{} could not be opened: {}", self.place, self.error).into(),
        })
    }
}

#[async_trait::async_trait]
impl Blobs for Unreachable {
    async fn create(
        &self,
        _: &atrest::BlobName,
    ) -> Result<Box<dyn atrest::BlobUpload>, atrest::Error> {
        self.fail()
    }

    async fn open(
        &self,
        _: &atrest::BlobName,
    ) -> Result<Box<dyn atrest::BlobReader>, atrest::Error> {
        self.fail()
    }

    async fn read_range(
        &self,
        _: &atrest::BlobName,
        _: std::ops::Range<u64>,
    ) -> Result<Vec<u8>, atrest::Error> {
        self.fail()
    }

    async fn len(&self, _: &atrest::BlobName) -> Result<u64, atrest::Error> {
        self.fail()
    }

    async fn delete(&self, _: &atrest::BlobName) -> Result<(), atrest::Error> {
        self.fail()
    }

    async fn list(&self) -> Result<Vec<(atrest::BlobName, u64)>, atrest::Error> {
        self.fail()
    }

    fn location(&self) -> String {
        self.place.clone()
    }

    async fn make_durable(&self, _: &atrest::BlobName) -> Result<(), atrest::Error> {
        self.fail()
    }

    async fn make_names_durable(&self) -> Result<(), atrest::Error> {
        self.fail()
    }
}

/// What [`Deployment::scrub_blobs`] found (and, with repair, did).
#[derive(Clone, Debug, Serialize)]
pub struct ScrubReport {
    /// Whether bad copies were repaired.
    pub repair: bool,
    /// The locations, primary first.
    pub locations: Vec<String>,
    /// How many copies a write must make durable.
    pub copies: usize,
    /// How many file records were checked.
    pub records: u64,
    /// How many of them carry no blob digest (made without replicas, whose
    /// seals record none): their copies were checked by length only.
    pub records_without_digest: u64,
    /// The records with a bad copy, and every copy of their blobs.
    pub damaged: Vec<DamagedRecord>,
}

/// A file record with at least one bad copy.
#[derive(Clone, Debug, Serialize)]
pub struct DamagedRecord {
    /// The tenant's name.
    pub tenant: String,
    /// The file's name.
    pub file: String,
    /// The file version.
    pub version: u64,
    /// The copies of its blob.
    #[serde(flatten)]
    pub check: BlobCheck,
}

impl ScrubReport {
    /// The copies still bad: found bad and not repaired.
    pub fn unrepaired(&self) -> impl Iterator<Item = &atrest::blobs::CopyReport> {
        self.damaged.iter().flat_map(|record| {
            record.check.copies.iter().filter(|copy| {
                !copy.state.is_good()
                    && !matches!(copy.repair, Some(RepairOutcome::Repaired { .. }))
            })
        })
    }

    /// How many bad copies were found.
    pub fn bad_copies(&self) -> usize {
        self.damaged
            .iter()
            .map(|r| r.check.copies.iter().filter(|c| !c.state.is_good()).count())
            .sum()
    }

    /// How many bad copies were repaired.
    pub fn repaired_copies(&self) -> usize {
        self.bad_copies() - self.unrepaired().count()
    }

    /// `Ok` if no copy is left bad; otherwise the error whose kind says
    /// whether only unreachable locations are left.
    ///
    /// # Errors
    /// [`Error::BlobsDamaged`].
    pub fn result(&self) -> Result<(), Error> {
        let unrepaired = self.unrepaired().count();
        if unrepaired == 0 {
            return Ok(());
        }
        let unreachable_only = self
            .unrepaired()
            .all(|copy| matches!(copy.state, CopyState::Unreachable { .. }));
        Err(Error::BlobsDamaged {
            unrepaired,
            unreachable_only,
        })
    }
}

impl Deployment {
    /// Checks every copy of every file's blob, at the primary and every
    /// replica, against the length in its record and the SHA-256 digest
    /// when the record has one (seals record digests when there are
    /// replicas). The check needs no key: records are read, not
    /// authenticated (a record edited to name another digest can make a
    /// copy look bad, never make a bad copy readable: opens authenticate
    /// every segment).
    ///
    /// With `repair`, each damaged record is authenticated first (its tag
    /// under its tenant's metadata key), and a copy that looks good is
    /// then authenticated whole (its file key released to the system
    /// operation `blobs repair`, audited; header, key commitment and every
    /// segment decrypted) before it is written over each bad one, through
    /// the location's ordinary upload (complete and durable before it
    /// replaces anything); each copy written is authenticated again. A
    /// record that fails, or no copy that authenticates, writes nothing.
    /// Audited (`blobs_scrubbed`).
    ///
    /// # Errors
    /// Catalog and audit errors. Bad copies are not errors: they are in
    /// the report ([`ScrubReport::result`]).
    pub async fn scrub_blobs(&self, repair: bool) -> Result<ScrubReport, Error> {
        let replicated = &self.locations.replicated;
        let mut report = ScrubReport {
            repair,
            locations: replicated.places(),
            copies: replicated.copies(),
            records: 0,
            records_without_digest: 0,
            damaged: Vec::new(),
        };
        // Every tenant's records are checked; a tenant is shown by its
        // name only if the name authenticates.
        for named in self.catalog.tenant_names().await? {
            let id = named.tenant;
            let tenant = match self.authentic(&named).await {
                Ok(_) => named.name,
                Err(_) => format!("tenant {id}"),
            };
            for record in self.catalog.records(id).await? {
                report.records += 1;
                if record.blob_sha256.is_none() {
                    report.records_without_digest += 1;
                }
                let mut check = replicated
                    .check(&record.blob, record.blob_len, record.blob_sha256)
                    .await;
                if check.is_clean() {
                    continue;
                }
                if repair {
                    self.repair_copies(&record, &mut check).await;
                }
                report.damaged.push(DamagedRecord {
                    tenant: tenant.clone(),
                    file: record.name.clone(),
                    version: u64::from(record.version),
                    check,
                });
            }
        }
        let event = Event::BlobsScrubbed {
            records: report.records,
            bad_copies: report.bad_copies() as u64,
            repaired_copies: report.repaired_copies() as u64,
        };
        self.record_event(event, None, None).await?;
        Ok(report)
    }

    /// Repairs the bad copies of `record`'s blob from a copy that
    /// authenticates (see [`Deployment::scrub_blobs`]); records in `check`
    /// what was done.
    async fn repair_copies(&self, record: &atrest::FileRecord, check: &mut BlobCheck) {
        let capability = match self.system_capability("blobs repair") {
            Ok(capability) => capability,
            Err(error) => {
                for copy in check.copies.iter_mut().filter(|c| !c.state.is_good()) {
                    copy.repair = Some(RepairOutcome::Failed {
                        error: error.to_string(),
                    });
                }
                return;
            }
        };
        let access = atrest::tenant::Access::System(&capability);
        let candidates: Vec<usize> = check
            .copies
            .iter()
            .filter(|copy| copy.state.is_good())
            .map(|copy| copy.location)
            .collect();
        let mut source = None;
        let mut why = "no copy has the record's length and digest".to_owned();
        for location in candidates {
            match self.files.verify_copy(&access, record, location).await {
                Ok(()) => {
                    source = Some(location);
                    break;
                }
                Err(error @ atrest::Error::Catalog(_)) => {
                    why =
                        format!("the record does not authenticate ({error}); nothing was written");
                    break;
                }
                Err(error) => {
                    why = format!("copy {location} does not authenticate: {error}");
                }
            }
        }
        let Some(from) = source else {
            for copy in check.copies.iter_mut().filter(|c| !c.state.is_good()) {
                copy.repair = Some(RepairOutcome::Failed { error: why.clone() });
            }
            return;
        };
        self.locations.replicated.repair_from(check, from).await;
        for copy in &mut check.copies {
            if matches!(copy.repair, Some(RepairOutcome::Repaired { .. }))
                && let Err(error) = self.files.verify_copy(&access, record, copy.location).await
            {
                copy.repair = Some(RepairOutcome::Failed {
                    error: format!("the copy written does not authenticate: {error}"),
                });
            }
        }
    }

    /// The locations that failed to keep a copy of a blob this deployment
    /// wrote since the last call (enough others kept it): `(blob, location,
    /// error)`. A scrub with repair makes the copies they lack.
    pub fn copy_failures(&self) -> Vec<(String, String, String)> {
        self.locations
            .replicated
            .take_failures()
            .into_iter()
            .map(|f| {
                let blob = f
                    .blob
                    .map_or_else(|| "(a batch's flush)".to_owned(), |blob| blob.to_string());
                (blob, f.place, f.error.to_string())
            })
            .collect()
    }
}
