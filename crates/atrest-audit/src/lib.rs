#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod chain;
pub mod checkpoint;
mod error;
mod fs;
mod line;
pub mod log;
pub mod record;
pub mod sink;
mod verify;
pub mod witness;

pub use checkpoint::{Checkpoint, Signer, SigningKey, VerifyingKey};
pub use error::{Error, SinkError};
pub use log::{AuditLog, LOG_ACTOR, LogConfig, Receipt, Recovery, read_origin};
pub use record::{
    Entry, Event, FileRef, IdLike, KeyRef, MAX_TEXT_LEN, OLDEST_SCHEMA_VERSION, Outcome, Record,
    RequestId, SCHEMA_VERSION, Text, Timestamp, Value, in_request, in_requests,
};
pub use sink::{Auditor, JsonLinesSink, MemorySink, Sink, SinkPolicy};
pub use verify::{Problem, Report, read_entries, verify, verify_segments, verify_witnessed};
pub use witness::{DirectoryWitness, Witness};

/// Anything that records audit events durably: the [`AuditLog`] itself, or
/// an [`Auditor`] that also feeds other sinks.
///
/// Async, as the other traits in front of storage are: the log's write and
/// sync run on the async runtime's blocking pool, so an operation waiting
/// for its record holds a task, not a worker thread. Synchronous programs
/// append with [`AuditLog::append`].
#[async_trait::async_trait]
pub trait Audit: Send + Sync {
    /// Records `record`; returns once it is durable.
    ///
    /// # Errors
    /// If the record could not be made durable (the operation being audited
    /// should then not proceed), or a required sink failed.
    async fn record(&self, record: Record) -> Result<Receipt, Error>;

    /// Records `records` in order; returns once all are durable (the last
    /// one's receipt, `None` for none). A log commits them in one batch
    /// (one sync); this default records them one at a time.
    ///
    /// # Errors
    /// As for [`Audit::record`]; records before the failing one may be
    /// recorded.
    async fn record_all(&self, records: Vec<Record>) -> Result<Option<Receipt>, Error> {
        let mut last = None;
        for record in records {
            last = Some(self.record(record).await?);
        }
        Ok(last)
    }
}
