//! Group commit for small uploads: uploads of one principal to one tenant
//! that arrive while a batch of theirs is being made durable wait, and go
//! together in the next batch ([`Deployment::put_batch`]: one catalog
//! transaction to begin them, one to attach their keys, one to commit
//! them, their blobs' names synced once, their audit records in one log
//! commit). A lone upload goes at once, in a batch of one; under load the
//! batches grow by themselves, with no timer. Each upload still answers
//! only once its own version is durable, and each keeps its request id in
//! the audit trail.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError};

use atrest::audit::RequestId;
use atrest::tenant::Access;
use atrest::{BatchItem, BlobName, ErrorKind, MediaType};
use atrest_deployment::{Deployment, PutReport};
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// Bodies up to this size (with a `Content-Length`) are read whole and
/// sealed in batches; larger ones stream.
pub(crate) const SMALL_UPLOAD: u64 = 256 * 1024;

/// Uploads per batch at most.
const MAX_BATCH: usize = 256;

/// Why an upload of a batch failed: its kind and what to say.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

impl Failed {
    fn of(error: &atrest_deployment::Error) -> Self {
        Self {
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

struct Pending {
    name: String,
    media_type: Option<MediaType>,
    body: Bytes,
    request: RequestId,
    reply: oneshot::Sender<Result<PutReport, Failed>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Pending>,
    /// Whether a batch of this queue is being made (its task takes the
    /// waiting uploads when it is done).
    running: bool,
}

/// The queues of waiting small uploads, by tenant and principal.
pub(crate) struct Batcher {
    deployment: Arc<Deployment>,
    metrics: Arc<Metrics>,
    queues: Mutex<HashMap<(String, String), Queue>>,
    /// Blobs written at once in a batch: see [`Batcher::writers`].
    writers: usize,
}

impl core::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl Batcher {
    pub(crate) fn new(deployment: Arc<Deployment>, metrics: Arc<Metrics>) -> Self {
        let writers = Self::writers(deployment.stored_blobs().deferred_writes_wait());
        Self {
            deployment,
            metrics,
            queues: Mutex::new(HashMap::new()),
            writers,
        }
    }

    /// How many blobs of a batch to write at once. The bodies are in
    /// memory, so when a blob's write waits on the store (an object
    /// store, replicas, a flush per blob), every blob of the batch is
    /// written at once; when it does not (a local directory flushed once
    /// per batch), one writer per core, since more only contend for the
    /// CPU and the directory.
    fn writers(writes_wait: bool) -> usize {
        if writes_wait {
            MAX_BATCH
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }

    /// Seals `body` as a new version of `name` (with its media type) of
    /// `tenant` for `principal`, in the next batch; resolves once it is
    /// durable (or failed). `None` if the batch's task went away.
    pub(crate) async fn put(
        self: &Arc<Self>,
        tenant: String,
        principal: String,
        (name, media_type): (String, Option<MediaType>),
        body: Bytes,
        request: RequestId,
    ) -> Option<Result<PutReport, Failed>> {
        let (reply, answer) = oneshot::channel();
        let key = (tenant, principal);
        let start = {
            let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            let queue = queues.entry(key.clone()).or_default();
            queue.waiting.push(Pending {
                name,
                media_type,
                body,
                request,
                reply,
            });
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            let batcher = self.clone();
            drop(tokio::spawn(async move { batcher.run(&key).await }));
        }
        answer.await.ok()
    }

    /// Makes batches of `key`'s queue until it is empty.
    async fn run(&self, key: &(String, String)) {
        /// Should a batch panic, its queue is dropped (its uploads answer
        /// with an error) rather than left waiting for a task that is
        /// gone.
        struct OnUnwind<'a>(&'a Batcher, &'a (String, String));
        impl Drop for OnUnwind<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    let mut queues = self.0.queues.lock().unwrap_or_else(PoisonError::into_inner);
                    queues.remove(self.1);
                }
            }
        }
        let _guard = OnUnwind(self, key);
        loop {
            let batch: Vec<Pending> = {
                let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(queue) = queues.get_mut(key) else {
                    return;
                };
                if queue.waiting.is_empty() {
                    queues.remove(key);
                    return;
                }
                let take = queue.waiting.len().min(MAX_BATCH);
                queue.waiting.drain(..take).collect()
            };
            self.seal(key, batch).await;
        }
    }

    async fn seal(&self, (tenant, principal): &(String, String), batch: Vec<Pending>) {
        let mut items = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for pending in batch {
            match BlobName::random() {
                Ok(blob) => {
                    items.push(BatchItem {
                        name: pending.name,
                        blob,
                        plaintext: Cursor::new(pending.body),
                        request: Some(pending.request),
                        media_type: pending.media_type,
                    });
                    replies.push(pending.reply);
                }
                Err(error) => {
                    let _ = pending.reply.send(Err(Failed {
                        kind: error.kind(),
                        message: error.to_string(),
                    }));
                }
            }
        }
        let access = Access::User {
            principal: principal.as_str(),
        };
        self.metrics.batch(items.len());
        let writers = self.writers.min(items.len()).max(1);
        match self
            .deployment
            .put_batch(&access, tenant, items, writers)
            .await
        {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result.map_err(|error| Failed::of(&error)));
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(Failed::of(&error)));
                }
            }
        }
    }
}
