//! What interrupted uploads leave behind, found and removed.

use std::collections::{HashMap, HashSet};

use atrest::audit::Event;
use serde::Serialize;

use crate::{Deployment, Error};

/// What [`Deployment::collect_garbage`] removed (or, in a dry run, would
/// remove).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GarbageReport {
    /// Whether this was a dry run (nothing removed).
    pub dry_run: bool,
    /// Blobs no file record or upload in progress names.
    pub orphan_blobs: Vec<Garbage>,
    /// Staging files of uploads that never finished.
    pub partial_uploads: Vec<Garbage>,
    /// Uploads begun before the cut-off whose records were never written
    /// (their blobs, if any, go with them).
    pub abandoned_uploads: Vec<Garbage>,
}

/// One thing [`Deployment::collect_garbage`] found.
#[derive(Clone, Debug, Serialize)]
pub struct Garbage {
    /// The blob's name, or the staging file's path.
    pub name: String,
    /// Its size in bytes (0 if unknown).
    pub bytes: u64,
}

impl Deployment {
    /// Removes what interrupted uploads left behind: uploads begun more than
    /// `older_than` ago whose records were never written (a process that
    /// died; choose a cut-off longer than any upload), blobs that no file
    /// record or upload in progress names, and staging files of unfinished
    /// uploads to a local store. An upload in progress (begun within the
    /// cut-off) is never touched: its blob is named by the catalog before a
    /// byte of it is written, and the blobs are listed before the catalog
    /// is read. With `dry_run`, only reports. Audited (`garbage_collected`).
    ///
    /// # Errors
    /// Catalog, blob store and audit errors; what was removed before an
    /// error stays removed (running it again finishes the job).
    pub async fn collect_garbage(
        &self,
        older_than: std::time::Duration,
        dry_run: bool,
    ) -> Result<GarbageReport, Error> {
        // The store first, then the catalog: anything listed that an upload
        // in progress is writing was named in the catalog before it existed.
        let blobs = self.locations.stored.list().await?;
        let mut partial = Vec::new();
        for store in self.locations.all() {
            for upload in store.partial_uploads().await? {
                partial.push((store.clone(), upload));
            }
        }
        let cutoff = std::time::SystemTime::now()
            .checked_sub(older_than)
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |at| at.as_secs());
        let in_progress = self.catalog.seals_in_progress().await?;
        let abandoned: Vec<_> = in_progress
            .iter()
            .filter(|seal| seal.started_at < cutoff)
            .collect();
        let sizes: HashMap<_, _> = blobs.iter().cloned().collect();
        let mut report = GarbageReport {
            dry_run,
            abandoned_uploads: abandoned
                .iter()
                .map(|seal| Garbage {
                    name: seal.ticket.blob.to_string(),
                    bytes: sizes.get(&seal.ticket.blob).copied().unwrap_or(0),
                })
                .collect(),
            ..GarbageReport::default()
        };
        if !dry_run {
            let _ = self.files.collect_abandoned_seals(older_than).await?;
        }
        let named: HashSet<_> = self.catalog.blob_names().await?.into_iter().collect();
        let still_running: HashSet<_> = in_progress
            .iter()
            .filter(|seal| seal.started_at >= cutoff)
            .map(|seal| seal.ticket.blob.clone())
            .collect();
        let abandoned: HashSet<_> = abandoned
            .iter()
            .map(|seal| seal.ticket.blob.clone())
            .collect();
        for (blob, bytes) in blobs {
            if named.contains(&blob) || abandoned.contains(&blob) {
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
            if still_running.contains(&upload.blob) {
                continue;
            }
            if !dry_run {
                store.remove_partial_upload(&upload).await?;
            }
            report.partial_uploads.push(Garbage {
                name: upload.path.display().to_string(),
                bytes: upload.bytes,
            });
        }
        if !dry_run {
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
