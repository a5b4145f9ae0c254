//! Making a deployment: every part built in a private directory beside the
//! target and renamed into place once it opens.

use std::fs;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use atrest::audit::{AuditLog, SigningKey};
use atrest::blobs::BlobStore;
use atrest::tenant::MasterKey;
use atrest_core::blocking;

use crate::config::{Config, MetadataConfig, write_private};
use crate::error::io_at;
use crate::{
    AUDIT_DIR, AVAILABILITY_KEY, CONFIG, DEFAULT_WITNESS, Deployment, Error, Options, ROOT_KEY,
    SIGNING_KEY, audit, metadata, replicas,
};

/// What a new deployment is made with ([`Deployment::init_with`]).
#[derive(Clone, Debug)]
pub struct Setup {
    /// A blob store URL; `None`: `DIR/blobs`.
    pub blobs: Option<String>,
    /// Where the audit log publishes its checkpoints; `None`:
    /// `DIR/audit-witness`.
    pub audit_witness: Option<PathBuf>,
    /// Where key metadata and the catalog are kept.
    pub metadata: MetadataConfig,
    /// Replica locations (`object_store` URLs or local directories): every
    /// blob is written to each of them too. None: blobs are kept at the
    /// primary only, as always.
    pub replicas: Vec<String>,
    /// How many locations must make a blob durable for a write to succeed
    /// (1 to 1 + replicas); `None`: all of them.
    pub copies: Option<usize>,
}

impl Deployment {
    /// Creates a deployment in `dir` (which must not hold one already): a
    /// new master key file, the service's root and availability keys, the
    /// key store and catalog, the audit log with a checkpoint signing key
    /// and its witness directory (`audit_witness`, or `DIR/audit-witness`),
    /// and the blob store (`blobs_url`, or `DIR/blobs`); then opens it with
    /// `options`.
    ///
    /// All or nothing: the deployment is built in a new directory beside
    /// `dir` and renamed into place only once every part was made and
    /// opened; after a failure (or an interruption) `dir` is as it was.
    /// `dir` must not exist or be empty.
    ///
    /// # Errors
    /// [`Error::AlreadyInitialized`] if `dir` holds a deployment;
    /// [`Error::NotEmpty`] if it holds anything else; [`Error::Io`] if it
    /// cannot be written; errors of the parts (a blob store URL that does
    /// not work, for example).
    pub async fn init(
        dir: &Path,
        blobs_url: Option<&str>,
        audit_witness: Option<&Path>,
        options: Options,
    ) -> Result<Self, Error> {
        let setup = Setup {
            blobs: blobs_url.map(str::to_owned),
            audit_witness: audit_witness.map(Path::to_path_buf),
            metadata: MetadataConfig::Sqlite,
            replicas: Vec::new(),
            copies: None,
        };
        Self::init_with(dir, &setup, options).await
    }

    /// As [`Deployment::init`], with every choice in `setup`: where blobs,
    /// the audit witness and the key metadata and catalog go.
    ///
    /// # Errors
    /// As for [`Deployment::init`]; [`Error::MetadataUrl`] for a
    /// PostgreSQL URL given with a password (give it through an
    /// environment variable), [`Error::Postgres`] if the database cannot be
    /// reached.
    pub async fn init_with(dir: &Path, setup: &Setup, options: Options) -> Result<Self, Error> {
        let blobs_url = setup.blobs.as_deref();
        let (dir_owned, staging_setup) = (dir.to_path_buf(), setup.clone());
        // The checks that need no files first; then a private directory to
        // build in.
        let plan = blocking::run(move || Plan::make(&dir_owned, &staging_setup)).await?;
        let metadata = match &setup.metadata {
            MetadataConfig::Sqlite => None,
            postgres @ MetadataConfig::Postgres { .. } => {
                // Reachable, and its tables made, before anything is written.
                match metadata::open_postgres(postgres, None).await {
                    Ok(opened) => drop(opened),
                    Err(error) => {
                        plan.abandon().await;
                        return Err(error);
                    }
                }
                Some(postgres.clone())
            }
        };
        let built = Self::build(&plan, blobs_url, metadata, options.clone()).await;
        let built = match built {
            Ok(()) => {
                let (staging, dir) = (plan.staging.clone(), dir.to_path_buf());
                blocking::run(move || {
                    // Renamed over `dir` if it is an empty directory.
                    fs::rename(&staging, &dir).map_err(io_at(&dir))?;
                    sync_parent(&dir)
                })
                .await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = built {
            plan.abandon().await;
            return Err(error);
        }
        Self::open(dir, options).await
    }

    /// Makes every part of a deployment in the plan's staging directory,
    /// and opens it once.
    async fn build(
        plan: &Plan,
        blobs_url: Option<&str>,
        metadata: Option<MetadataConfig>,
        options: Options,
    ) -> Result<(), Error> {
        let dir = plan.staging.as_path();
        let master = {
            let path = dir.join("master.key");
            blocking::run(move || MasterKey::create_file(&path)).await?
        };
        let service = metadata::service_keys(dir, master).await?;
        let _ = service.create_key(ROOT_KEY).await?;
        let _ = service.create_key(AVAILABILITY_KEY).await?;
        drop(service);
        let (replicas, copies) = match &plan.replication {
            Some((replicas, copies)) => (replicas.clone(), Some(*copies)),
            None => (Vec::new(), None),
        };
        let (staging, witness, blobs_url) = (
            dir.to_path_buf(),
            plan.witness.clone(),
            blobs_url.map(str::to_owned),
        );
        blocking::run(move || {
            let (signer, pkcs8) = SigningKey::generate("atrest-audit")?;
            write_private(&staging.join(SIGNING_KEY), &pkcs8)?;
            // The default witness is named relative to the deployment, so
            // it moves with it.
            let witness = witness.unwrap_or_else(|| PathBuf::from(DEFAULT_WITNESS));
            let audit_verifying_key = signer.verifying_key().to_string();
            let _ = AuditLog::create(
                staging.join(AUDIT_DIR),
                signer,
                audit::config(Some(&staging.join(&witness))),
            )?;
            let config = Config {
                version: 1,
                blobs: blobs_url,
                replicas,
                copies,
                tokens: Vec::new(),
                metadata,
                kms: Vec::new(),
                aws_kms: Vec::new(),
                audit_verifying_key,
                audit_witness: Some(witness),
            };
            config.write(&staging)
        })
        .await?;
        drop(Self::open(dir, options).await?);
        Ok(())
    }
}

/// The checked choices of a new deployment, and the private directory it
/// is built in.
struct Plan {
    staging: PathBuf,
    /// Replicas (local ones by absolute path) and copies, if any.
    replication: Option<(Vec<String>, usize)>,
    /// The witness directory named at `init`, absolute.
    witness: Option<PathBuf>,
    /// Replica directories this made (removed again on failure).
    made_dirs: Vec<PathBuf>,
}

impl Plan {
    /// Checks what needs no files, then makes the staging directory.
    /// Blocks.
    fn make(dir: &Path, setup: &Setup) -> Result<Self, Error> {
        if dir.join(CONFIG).exists() {
            return Err(Error::AlreadyInitialized {
                dir: dir.to_path_buf(),
            });
        }
        let empty = match fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(io_at(dir)(e)),
        };
        if !empty {
            return Err(Error::NotEmpty {
                dir: dir.to_path_buf(),
            });
        }
        if let Some(url) = &setup.blobs {
            let _ = BlobStore::from_url(url)?;
        }
        let copies = replicas::copies(setup.copies, setup.replicas.len())?;
        // Replicas in local directories are kept by absolute path; the
        // directories this makes are removed again if `init` fails.
        let mut replica_specs = Vec::with_capacity(setup.replicas.len());
        let mut made_dirs = Vec::new();
        for spec in &setup.replicas {
            if replicas::is_local(spec) {
                let path = std::path::absolute(spec).map_err(io_at(spec))?;
                if !path.exists() {
                    made_dirs.push(path.clone());
                }
                replica_specs.push(path.display().to_string());
            } else {
                let _ = BlobStore::from_url(spec)?;
                replica_specs.push(spec.clone());
            }
        }
        let witness = setup
            .audit_witness
            .as_deref()
            .map(|path| std::path::absolute(path).map_err(io_at(path)))
            .transpose()?;
        Ok(Self {
            staging: staging_dir(dir)?,
            replication: (!replica_specs.is_empty()).then_some((replica_specs, copies)),
            witness,
            made_dirs,
        })
    }

    /// Removes what a failed `init` made: the staging directory, and the
    /// replica directories it made if they are still empty (nothing of
    /// anyone else's is removed).
    async fn abandon(&self) {
        let (staging, made) = (self.staging.clone(), self.made_dirs.clone());
        blocking::run(move || {
            let _ = fs::remove_dir_all(&staging);
            for made in made.iter().rev() {
                let _ = fs::remove_dir(made);
            }
        })
        .await;
    }
}

/// A new, private directory beside `dir` to build a deployment in.
fn staging_dir(dir: &Path) -> Result<PathBuf, Error> {
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_at(&parent))?;
    let name = dir.file_name().ok_or_else(|| Error::NotEmpty {
        dir: dir.to_path_buf(),
    })?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut staging_name = std::ffi::OsString::from(".");
    staging_name.push(name);
    staging_name.push(format!(".atrest-init-{}-{nanos}", std::process::id()));
    let staging = parent.join(staging_name);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io_at(&staging))?;
    Ok(staging)
}

/// Makes a rename of `path` durable.
fn sync_parent(path: &Path) -> Result<(), Error> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_at(parent))
}
