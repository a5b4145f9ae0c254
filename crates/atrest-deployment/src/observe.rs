//! What a program may watch of a deployment at work, for its metrics:
//! every audit record once durable (key releases and refusals, fallbacks
//! to the availability key, seals and opens, by outcome), how long audit
//! commits and blob store operations take, and the TIK cache's hits
//! ([`crate::Deployment::tik_cache_counts`]). No key, name or principal
//! is passed: only kinds, outcomes and times.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest::audit::{Audit, Receipt, Record, Sink, SinkError};
use atrest::{BlobName, BlobReader, BlobUpload, Blobs, Error};
use bytes::Bytes;

/// A blob store operation, as an [`Observer`] is told of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlobOperation {
    /// An upload made durable (its `finish`).
    Write,
    /// A batch of blobs written together.
    WriteBatch,
    /// The names of a batch's blobs made durable (one flush).
    Flush,
    /// A blob opened for reading.
    Open,
    /// A byte range read.
    ReadRange,
    /// A blob removed.
    Delete,
}

impl BlobOperation {
    /// Its name, for metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::WriteBatch => "write_batch",
            Self::Flush => "flush",
            Self::Open => "open",
            Self::ReadRange => "read_range",
            Self::Delete => "delete",
        }
    }
}

/// Told of a deployment's work as it happens (see the module docs). Its
/// methods are called on the request's path: they must be quick and must
/// not block.
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// An audit record of `event` (its type, as the log writes it) with
    /// `outcome` (`success`, `denied`, `failed`) was made durable.
    fn audited(&self, event: &'static str, outcome: &'static str);

    /// An audit commit of `records` records took `elapsed` (`ok`: it
    /// was made durable).
    fn audit_commit(&self, records: usize, elapsed: Duration, ok: bool);

    /// A blob store operation took `elapsed`.
    fn blob_operation(&self, operation: BlobOperation, elapsed: Duration, ok: bool);
}

/// Tells the observer of each record the log made durable.
#[derive(Debug)]
pub(crate) struct AuditedSink(pub(crate) Arc<dyn Observer>);

impl Sink for AuditedSink {
    fn name(&self) -> &str {
        "observer"
    }

    fn deliver(&self, _: &Receipt, record: &Record) -> Result<(), SinkError> {
        self.0
            .audited(record.event.type_name(), record.outcome.name());
        Ok(())
    }
}

/// The audit trail, its commits timed.
pub(crate) struct TimedAudit {
    pub(crate) inner: Arc<dyn Audit>,
    pub(crate) observer: Arc<dyn Observer>,
}

#[async_trait::async_trait]
impl Audit for TimedAudit {
    async fn record(&self, record: Record) -> Result<Receipt, atrest::audit::Error> {
        let started = Instant::now();
        let result = self.inner.record(record).await;
        self.observer
            .audit_commit(1, started.elapsed(), result.is_ok());
        result
    }

    async fn record_all(
        &self,
        records: Vec<Record>,
    ) -> Result<Option<Receipt>, atrest::audit::Error> {
        let (count, started) = (records.len(), Instant::now());
        let result = self.inner.record_all(records).await;
        self.observer
            .audit_commit(count, started.elapsed(), result.is_ok());
        result
    }
}

/// A blob store, its operations timed.
pub(crate) struct TimedBlobs {
    pub(crate) inner: Arc<dyn Blobs>,
    pub(crate) observer: Arc<dyn Observer>,
}

impl TimedBlobs {
    async fn timed<T>(
        &self,
        operation: BlobOperation,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let result = work.await;
        self.observer
            .blob_operation(operation, started.elapsed(), result.is_ok());
        result
    }
}

/// An upload whose `finish` (the blob made durable) is timed.
struct TimedUpload {
    inner: Box<dyn BlobUpload>,
    observer: Arc<dyn Observer>,
}

#[async_trait::async_trait]
impl BlobUpload for TimedUpload {
    async fn write(&mut self, bytes: Bytes) -> Result<(), Error> {
        self.inner.write(bytes).await
    }

    async fn finish(self: Box<Self>) -> Result<u64, Error> {
        let started = Instant::now();
        let result = self.inner.finish().await;
        self.observer
            .blob_operation(BlobOperation::Write, started.elapsed(), result.is_ok());
        result
    }
}

#[async_trait::async_trait]
impl Blobs for TimedBlobs {
    async fn create(&self, name: &BlobName) -> Result<Box<dyn BlobUpload>, Error> {
        let inner = self.inner.create(name).await?;
        Ok(Box::new(TimedUpload {
            inner,
            observer: self.observer.clone(),
        }))
    }

    async fn open(&self, name: &BlobName) -> Result<Box<dyn BlobReader>, Error> {
        self.timed(BlobOperation::Open, self.inner.open(name)).await
    }

    async fn read_range(&self, name: &BlobName, range: Range<u64>) -> Result<Vec<u8>, Error> {
        self.timed(BlobOperation::ReadRange, self.inner.read_range(name, range))
            .await
    }

    async fn len(&self, name: &BlobName) -> Result<u64, Error> {
        self.inner.len(name).await
    }

    async fn delete(&self, name: &BlobName) -> Result<(), Error> {
        self.timed(BlobOperation::Delete, self.inner.delete(name))
            .await
    }

    async fn list(&self) -> Result<Vec<(BlobName, u64)>, Error> {
        self.inner.list().await
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    async fn create_deferred(&self, name: &BlobName) -> Result<Box<dyn BlobUpload>, Error> {
        let inner = self.inner.create_deferred(name).await?;
        Ok(Box::new(TimedUpload {
            inner,
            observer: self.observer.clone(),
        }))
    }

    async fn write_deferred(
        &self,
        blobs: Vec<(BlobName, Vec<Bytes>)>,
        concurrency: usize,
    ) -> Vec<Result<u64, Error>> {
        let started = Instant::now();
        let results = self.inner.write_deferred(blobs, concurrency).await;
        self.observer.blob_operation(
            BlobOperation::WriteBatch,
            started.elapsed(),
            results.iter().all(Result::is_ok),
        );
        results
    }

    async fn make_durable(&self, name: &BlobName) -> Result<(), Error> {
        self.timed(BlobOperation::Flush, self.inner.make_durable(name))
            .await
    }

    async fn make_names_durable(&self) -> Result<(), Error> {
        self.timed(BlobOperation::Flush, self.inner.make_names_durable())
            .await
    }

    fn locations(&self) -> usize {
        self.inner.locations()
    }

    async fn open_at(
        &self,
        name: &BlobName,
        location: usize,
    ) -> Result<Box<dyn BlobReader>, Error> {
        self.timed(BlobOperation::Open, self.inner.open_at(name, location))
            .await
    }

    async fn read_range_at(
        &self,
        name: &BlobName,
        location: usize,
        range: Range<u64>,
    ) -> Result<Vec<u8>, Error> {
        self.timed(
            BlobOperation::ReadRange,
            self.inner.read_range_at(name, location, range),
        )
        .await
    }

    async fn len_at(&self, name: &BlobName, location: usize) -> Result<u64, Error> {
        self.inner.len_at(name, location).await
    }

    fn deferred_writes_wait(&self) -> bool {
        self.inner.deferred_writes_wait()
    }
}
