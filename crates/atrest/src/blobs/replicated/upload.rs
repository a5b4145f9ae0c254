//! Writes to every location at once: an upload that succeeds once enough
//! locations made the blob durable, and the failures of the others, kept
//! until they are taken.

use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use futures_util::future::join_all;

use super::{CopyFailure, ReplicatedBlobs, Shared};
use crate::blob::{BlobName, BlobUpload, Blobs};
use crate::{Error, ErrorKind};

/// The future an `async_trait` method returns.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How many write failures [`ReplicatedBlobs`] keeps for
/// [`ReplicatedBlobs::take_failures`]; older ones are dropped (a scrub
/// finds the copies they left bad all the same).
const KEPT_FAILURES: usize = 1024;

impl ReplicatedBlobs {
    /// Starts an upload at every location with `start`; succeeds if at
    /// least `copies` started.
    pub(super) async fn upload<'a, F>(
        &'a self,
        name: &BlobName,
        start: F,
    ) -> Result<Box<dyn BlobUpload>, Error>
    where
        F: Fn(&'a Arc<dyn Blobs>) -> BoxFuture<'a, Result<Box<dyn BlobUpload>, Error>>,
    {
        let started = join_all(self.shared.locations.iter().map(start)).await;
        let mut upload = ReplicatedUpload {
            shared: Arc::clone(&self.shared),
            name: name.clone(),
            live: Vec::with_capacity(started.len()),
            failed: Vec::new(),
        };
        for (location, result) in started.into_iter().enumerate() {
            match result {
                Ok(started) => upload.live.push((location, started)),
                Err(error) => upload.failed.push((location, error)),
            }
        }
        upload.check_enough()?;
        Ok(Box::new(upload))
    }

    /// Runs `step` at every location at once; succeeds if at least
    /// `copies` did, keeping the failures of the others (about `blob`, or
    /// a batch) for [`ReplicatedBlobs::take_failures`].
    pub(super) async fn at_enough<'a, F>(
        &'a self,
        what: &str,
        blob: Option<&BlobName>,
        step: F,
    ) -> Result<(), Error>
    where
        F: Fn(&'a Arc<dyn Blobs>) -> BoxFuture<'a, Result<(), Error>>,
    {
        let results = join_all(self.shared.locations.iter().map(step)).await;
        let mut done = 0;
        let mut failed = Vec::new();
        for (location, result) in results.into_iter().enumerate() {
            match result {
                Ok(()) => done += 1,
                Err(error) => failed.push((location, error)),
            }
        }
        if done >= self.shared.copies {
            self.shared.remember(blob, failed);
            Ok(())
        } else {
            Err(self.shared.too_few(what, done, &failed))
        }
    }
}

impl Shared {
    fn place(&self, location: usize) -> String {
        self.locations
            .get(location)
            .map_or_else(String::new, |l| l.location())
    }

    fn remember(&self, blob: Option<&BlobName>, failed: Vec<(usize, Error)>) {
        if failed.is_empty() {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        for (location, error) in failed {
            failures.push(CopyFailure {
                blob: blob.cloned(),
                location,
                place: self.place(location),
                error,
            });
        }
        let excess = failures.len().saturating_sub(KEPT_FAILURES);
        drop(failures.drain(..excess));
    }

    fn too_few(&self, what: &str, done: usize, failed: &[(usize, Error)]) -> Error {
        let kind = failed
            .first()
            .map_or(ErrorKind::Unavailable, |(_, error)| error.kind());
        let reasons: Vec<String> = failed
            .iter()
            .map(|(location, error)| format!("{}: {error}", self.place(*location)))
            .collect();
        Error::blob(
            kind,
            format!(
                "{what} at {done} of {} locations, {} required ({})",
                self.locations.len(),
                self.copies,
                reasons.join("; ")
            ),
        )
    }
}

/// One blob being written to every location.
struct ReplicatedUpload {
    shared: Arc<Shared>,
    name: BlobName,
    /// The locations still taking the blob.
    live: Vec<(usize, Box<dyn BlobUpload>)>,
    /// The locations that failed (their uploads dropped: aborted).
    failed: Vec<(usize, Error)>,
}

impl ReplicatedUpload {
    fn check_enough(&self) -> Result<(), Error> {
        if self.live.len() >= self.shared.copies {
            Ok(())
        } else {
            Err(self
                .shared
                .too_few("blob written", self.live.len(), &self.failed))
        }
    }
}

#[async_trait::async_trait]
impl BlobUpload for ReplicatedUpload {
    /// Writes `bytes` to every location still taking the blob, at once; a
    /// location that fails is dropped from the upload.
    async fn write(&mut self, bytes: Bytes) -> Result<(), Error> {
        let results = join_all(
            self.live
                .iter_mut()
                .map(|(_, upload)| upload.write(bytes.clone())),
        )
        .await;
        let live = std::mem::take(&mut self.live);
        for ((location, upload), result) in live.into_iter().zip(results) {
            match result {
                Ok(()) => self.live.push((location, upload)),
                Err(error) => self.failed.push((location, error)),
            }
        }
        self.check_enough()
    }

    async fn finish(self: Box<Self>) -> Result<u64, Error> {
        let Self {
            shared,
            name,
            live,
            mut failed,
        } = *self;
        let (locations, uploads): (Vec<usize>, Vec<_>) = live.into_iter().unzip();
        let finished = join_all(uploads.into_iter().map(BlobUpload::finish)).await;
        let mut done: Vec<(usize, u64)> = Vec::with_capacity(locations.len());
        for (location, result) in locations.into_iter().zip(finished) {
            match result {
                Ok(len) => done.push((location, len)),
                Err(error) => failed.push((location, error)),
            }
        }
        // Every location was given the same bytes; one that kept another
        // length failed.
        let len = done.first().map(|(_, len)| *len);
        done.retain(|(location, kept)| {
            let same = Some(*kept) == len;
            if !same {
                failed.push((
                    *location,
                    Error::blob(
                        ErrorKind::Integrity,
                        format!("the location kept {kept} bytes, not {len:?}"),
                    ),
                ));
            }
            same
        });
        match len {
            Some(len) if done.len() >= shared.copies => {
                shared.remember(Some(&name), failed);
                Ok(len)
            }
            _ => {
                // Too few copies: the write fails and leaves nothing.
                for (location, _) in &done {
                    if let Some(store) = shared.locations.get(*location) {
                        let _ = store.delete(&name).await;
                    }
                }
                Err(shared.too_few("blob written", done.len(), &failed))
            }
        }
    }
}
