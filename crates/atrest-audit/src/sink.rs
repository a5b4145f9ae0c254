//! Sending records to more than one place.
//!
//! # Failure policy
//!
//! An [`Auditor`] writes every record to its [`AuditLog`] first. If that
//! fails, the record is not sent anywhere and the caller gets the error: an
//! operation whose audit record cannot be made durable must not go ahead
//! (fail closed). Then it offers the record to each additional [`Sink`]:
//!
//! - a [`SinkPolicy::Required`] sink's failure is returned to the caller as
//!   [`Error::Sink`] (the record is already durable in the log);
//! - a [`SinkPolicy::BestEffort`] sink's failure is counted
//!   ([`Auditor::sink_failures`]) and does not fail the operation: the log
//!   remains the record of truth, and the sink can be replayed from it.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::log::{AuditLog, Receipt};
use crate::record::Record;
use crate::{Audit, Error, SinkError};

/// A destination for audit records besides the log (a service's logging
/// pipeline, a SIEM, a message queue).
pub trait Sink: Send + Sync {
    /// A short name for errors and metrics.
    fn name(&self) -> &str;

    /// Delivers one record, already durable in the log with `receipt`.
    ///
    /// # Errors
    /// Why the record could not be delivered, with its kind.
    fn deliver(&self, receipt: &Receipt, record: &Record) -> Result<(), SinkError>;
}

/// What a sink's failure means for the operation being audited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkPolicy {
    /// The caller gets an error.
    Required,
    /// Counted, not returned.
    BestEffort,
}

/// The log plus any number of sinks, with the policy in the [module
/// documentation](self).
///
/// Cloning is cheap: the clones share the log, the sinks and the failure
/// count.
#[derive(Clone)]
pub struct Auditor {
    log: Arc<AuditLog>,
    sinks: Arc<[(Arc<dyn Sink>, SinkPolicy)]>,
    failures: Arc<AtomicU64>,
}

impl Auditor {
    /// An auditor writing to `log` only.
    pub fn new(log: Arc<AuditLog>) -> Self {
        Self {
            log,
            sinks: Arc::new([]),
            failures: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Adds a sink.
    #[must_use]
    pub fn with_sink(mut self, sink: Box<dyn Sink>, policy: SinkPolicy) -> Self {
        let mut sinks = self.sinks.to_vec();
        sinks.push((Arc::from(sink), policy));
        self.sinks = sinks.into();
        self
    }

    /// The log.
    pub fn log(&self) -> &Arc<AuditLog> {
        &self.log
    }

    /// How many best-effort deliveries have failed.
    pub fn sink_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

impl Auditor {
    /// Offers `record`, durable with `receipt`, to every sink under the
    /// [failure policy](self); returns the first required sink's failure.
    fn deliver(&self, receipt: &Receipt, record: &Record) -> Option<Error> {
        let mut required_failure = None;
        for (sink, policy) in self.sinks.iter() {
            if let Err(source) = sink.deliver(receipt, record) {
                match policy {
                    SinkPolicy::Required => {
                        required_failure.get_or_insert(Error::Sink {
                            sink: sink.name().to_owned(),
                            source,
                        });
                    }
                    SinkPolicy::BestEffort => {
                        self.failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        required_failure
    }

    /// Commits `records` to the log in one batch (one sync), then offers
    /// each to the sinks with its own receipt.
    fn append_and_deliver(&self, records: &[Record]) -> Result<Option<Receipt>, Error> {
        let receipts = self.log.append_each(records)?;
        let mut required_failure = None;
        for (receipt, record) in receipts.iter().zip(records) {
            if let Some(error) = self.deliver(receipt, record) {
                required_failure.get_or_insert(error);
            }
        }
        match required_failure {
            Some(error) => Err(error),
            None => Ok(receipts.last().copied()),
        }
    }
}

/// Each call appends and delivers as a short blocking call
/// ([`atrest_core::blocking::run_short`]: the log's sync and the sinks'
/// own writes wait there, off the async workers unless such calls have
/// stayed short).
#[async_trait::async_trait]
impl Audit for Auditor {
    async fn record(&self, record: Record) -> Result<Receipt, Error> {
        let auditor = self.clone();
        atrest_core::blocking::run_short(move || {
            let receipt = auditor.log.append(&record)?;
            match auditor.deliver(&receipt, &record) {
                Some(error) => Err(error),
                None => Ok(receipt),
            }
        })
        .await
    }

    async fn record_all(&self, records: Vec<Record>) -> Result<Option<Receipt>, Error> {
        let auditor = self.clone();
        atrest_core::blocking::run_short(move || auditor.append_and_deliver(&records)).await
    }
}

/// A sink that keeps records in memory (for tests and examples).
#[derive(Default)]
pub struct MemorySink {
    records: Mutex<Vec<(Receipt, Record)>>,
}

impl MemorySink {
    /// The records delivered so far.
    pub fn records(&self) -> Vec<(Receipt, Record)> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Sink for MemorySink {
    fn name(&self) -> &str {
        "memory"
    }

    fn deliver(&self, receipt: &Receipt, record: &Record) -> Result<(), SinkError> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((*receipt, record.clone()));
        Ok(())
    }
}

impl Sink for Arc<MemorySink> {
    fn name(&self) -> &str {
        "memory"
    }

    fn deliver(&self, receipt: &Receipt, record: &Record) -> Result<(), SinkError> {
        self.as_ref().deliver(receipt, record)
    }
}

/// A sink that writes each record as a JSON line to a writer (for example
/// standard error, picked up by the service's log shipping).
pub struct JsonLinesSink<W> {
    name: String,
    writer: Mutex<W>,
}

impl<W: std::io::Write + Send> JsonLinesSink<W> {
    /// A sink named `name` writing to `writer`.
    pub fn new(name: impl Into<String>, writer: W) -> Self {
        Self {
            name: name.into(),
            writer: Mutex::new(writer),
        }
    }
}

impl<W: std::io::Write + Send> Sink for JsonLinesSink<W> {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&self, receipt: &Receipt, record: &Record) -> Result<(), SinkError> {
        let mut line =
            serde_json::to_vec(&serde_json::json!({ "seq": receipt.seq, "record": record }))
                .map_err(|e| SinkError::io(e.into()))?;
        line.push(b'\n');
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        writer.write_all(&line).map_err(SinkError::io)
    }
}
