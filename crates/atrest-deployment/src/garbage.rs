//! What interrupted uploads leave behind, found and removed.

use std::collections::{HashMap, HashSet};

use atrest::BlobName;
use atrest::audit::Event;
use atrest_core::blocking;
use serde::Serialize;

use crate::error::io_at;
use crate::lease::{self, Holder};
use crate::{Deployment, Error};

/// What [`Deployment::collect_garbage`] removed (or, in a dry run, would
/// remove), and what it left alone.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GarbageReport {
    /// Whether this was a dry run (nothing removed).
    pub dry_run: bool,
    /// Blobs no file record or upload in progress names.
    pub orphan_blobs: Vec<Garbage>,
    /// Staging files of uploads that never finished.
    pub partial_uploads: Vec<Garbage>,
    /// Uploads whose process died before their records were written
    /// (their blobs, if any, go with them).
    pub abandoned_uploads: Vec<Garbage>,
    /// Purged tenants forgotten: their records and names removed (their
    /// blobs are among the orphans), their names free for new tenants.
    pub released_tenants: Vec<ReleasedTenant>,
    /// What was left alone, and why: uploads that a living process may
    /// still be writing.
    pub skipped: Vec<Skipped>,
    /// The other processes that have the deployment open on this machine.
    pub running: Vec<Holder>,
}

/// One thing [`Deployment::collect_garbage`] found.
#[derive(Clone, Debug, Serialize)]
pub struct Garbage {
    /// The blob's name, or the staging file's path.
    pub name: String,
    /// Its size in bytes (0 if unknown).
    pub bytes: u64,
}

/// A purged tenant [`Deployment::collect_garbage`] forgot.
#[derive(Clone, Debug, Serialize)]
pub struct ReleasedTenant {
    /// The name it had (now free).
    pub name: String,
    /// Its id (still in the audit trail).
    pub id: String,
    /// How many file versions it had in the catalog.
    pub file_versions: u64,
}

/// One thing [`Deployment::collect_garbage`] left alone.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    /// The blob's name, or the staging file's path.
    pub name: String,
    /// Its size in bytes (0 if unknown).
    pub bytes: u64,
    /// Why it was left alone.
    pub reason: String,
}

impl Deployment {
    /// Removes what interrupted uploads left behind, and nothing a living
    /// process is still writing:
    ///
    /// - **Uploads whose process died** (records never written), with
    ///   their blobs: every seal is marked with the lease of the process
    ///   that began it (see `DIR/leases`), and one whose lease is no longer
    ///   held is abandoned, whatever its age. A seal this directory's
    ///   leases cannot tell about — begun by an instance with its own
    ///   directory, sharing PostgreSQL metadata, or before leases — is
    ///   abandoned only once begun more than `older_than` ago (choose more
    ///   than the longest upload).
    /// - **Staging files** of unfinished uploads to a local store, unless
    ///   their writer still holds them (locked) or their upload is left
    ///   alone as above.
    /// - **Purged tenants**: a tenant whose keys a purge destroyed can
    ///   never be read again; its records and seals in progress are
    ///   removed from the catalog with its name (free for a new tenant),
    ///   which leaves its blobs to the next step.
    /// - **Blobs no file record or seal in progress names.** The blobs are
    ///   listed before the catalog is read, and an upload names its blob in
    ///   the catalog before a byte of it is written.
    ///
    /// What is left alone is reported, with the reason. With `dry_run`,
    /// only reports. Audited (`garbage_collected`).
    ///
    /// # Errors
    /// Catalog, blob store and audit errors; what was removed before an
    /// error stays removed (running it again finishes the job).
    pub async fn collect_garbage(
        &self,
        older_than: std::time::Duration,
        dry_run: bool,
    ) -> Result<GarbageReport, Error> {
        let mut released = Vec::new();
        // By the stored names as they are: what decides is each tenant's
        // id, checked in the key store, never the name.
        for named in self.catalog.tenant_names().await? {
            let (name, id) = (named.name, named.tenant);
            // Purged by its record and by its keys: a row edited to say
            // "purged" loses nothing.
            if !self.files.keys().purged_for_good(id).await? {
                continue;
            }
            let file_versions = if dry_run {
                self.catalog.records(id).await?.len() as u64
            } else {
                self.catalog.forget_tenant(id).await?
            };
            released.push(ReleasedTenant {
                name,
                id: id.to_string(),
                file_versions,
            });
        }
        // The store first, then the catalog: anything listed that an upload
        // in progress is writing was named in the catalog before it existed.
        let blobs = self.locations.stored.list().await?;
        let mut partial = Vec::new();
        for store in self.locations.all() {
            for upload in store.partial_uploads().await? {
                partial.push((store.clone(), upload));
            }
        }
        let leases = {
            let dir = self.dir.clone();
            let own = self.lease.as_ref().map(|lease| lease.path().to_path_buf());
            blocking::run(move || lease::scan(&dir, own.as_deref()))
                .await
                .map_err(io_at(self.dir.join(lease::LEASES)))?
        };
        let cutoff = std::time::SystemTime::now()
            .checked_sub(older_than)
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |at| at.as_secs());
        let in_progress = self.catalog.seals_in_progress().await?;
        let sizes: HashMap<_, _> = blobs.iter().cloned().collect();
        let size = |blob: &BlobName| sizes.get(blob).copied().unwrap_or(0);
        let mut report = GarbageReport {
            dry_run,
            released_tenants: released,
            running: leases.living.iter().map(|(_, h)| h.clone()).collect(),
            ..GarbageReport::default()
        };
        let mut abandoned = Vec::new();
        let mut alive = HashSet::new();
        for seal in in_progress {
            let blob = seal.ticket.blob.clone();
            let reason = match leases.holder_of(seal.owner.as_deref()) {
                // Begun by a process of this directory: running if and
                // only if it holds its lease.
                Some(Some(holder)) => Some(format!(
                    "an upload {} (pid {}) is running",
                    holder.program, holder.pid
                )),
                Some(None) => None,
                // Begun elsewhere (or before leases): only its age tells.
                None if seal.started_at >= cutoff => Some(format!(
                    "an upload begun within the last {} s (--older-than) by a process \
                     this machine cannot ask (another instance's, with shared metadata)",
                    older_than.as_secs()
                )),
                None => None,
            };
            match reason {
                Some(reason) => {
                    report.skipped.push(Skipped {
                        name: blob.to_string(),
                        bytes: size(&blob),
                        reason,
                    });
                    alive.insert(blob);
                }
                None => {
                    report.abandoned_uploads.push(Garbage {
                        name: blob.to_string(),
                        bytes: size(&blob),
                    });
                    abandoned.push(seal);
                }
            }
        }
        let abandoned_blobs: HashSet<_> = abandoned
            .iter()
            .map(|seal| seal.ticket.blob.clone())
            .collect();
        if !dry_run {
            let _ = self.files.abandon_seals(abandoned).await?;
        }
        let named: HashSet<_> = self.catalog.blob_names().await?.into_iter().collect();
        for (blob, bytes) in blobs {
            if named.contains(&blob) || abandoned_blobs.contains(&blob) {
                continue;
            }
            if !dry_run {
                self.locations.stored.delete(&blob).await?;
            }
            report.orphan_blobs.push(Garbage {
                name: blob.to_string(),
                bytes,
            });
        }
        for (store, upload) in partial {
            let name = upload.path.display().to_string();
            if upload.in_use || alive.contains(&upload.blob) {
                report.skipped.push(Skipped {
                    name,
                    bytes: upload.bytes,
                    reason: if upload.in_use {
                        "a staging file its writer still holds (locked)".into()
                    } else {
                        "the staging file of an upload left alone".into()
                    },
                });
                continue;
            }
            if !dry_run {
                store.remove_partial_upload(&upload).await?;
            }
            report.partial_uploads.push(Garbage {
                name,
                bytes: upload.bytes,
            });
        }
        if !dry_run {
            // The leases of processes that died say nothing any more.
            let dead = leases.dead;
            blocking::run(move || {
                for path in dead {
                    let _ = std::fs::remove_file(path);
                }
            })
            .await;
            let count = |items: &[Garbage]| items.len() as u64;
            let bytes = |items: &[Garbage]| items.iter().map(|g| g.bytes).sum::<u64>();
            let event = Event::GarbageCollected {
                orphan_blobs: count(&report.orphan_blobs),
                orphan_bytes: bytes(&report.orphan_blobs),
                partial_uploads: count(&report.partial_uploads),
                partial_bytes: bytes(&report.partial_uploads),
                abandoned_uploads: count(&report.abandoned_uploads),
            };
            self.record_event(event, None, None).await?;
        }
        Ok(report)
    }
}
