//! The append-only audit log on the file system.
//!
//! # Layout
//!
//! ```text
//! DIR/LOG                 {"format":"atrest-audit","version":2,"log_id":"<32 hex digits>"}
//! DIR/LOCK                the writers' lock (empty)
//! DIR/00000001.log        segment 1: one line per record (JSON, see crate::record)
//! DIR/00000002.log        segment 2, ...
//! DIR/recovered/          bytes cut off after a crash, kept for inspection
//! ```
//!
//! Each line is the canonical JSON of an [`Entry`](crate::record::Entry): its
//! `prev` field is the SHA-256 of the previous line (of the genesis string
//! for the first), so the lines form a hash chain across segments. A segment
//! is closed when it reaches the configured size; the chain continues in the
//! next one.
//!
//! # Commit batches, each signed
//!
//! Records are written in *batches*. The last line of every batch is a
//! checkpoint line ([`Event::Checkpoint`](crate::Event::Checkpoint)): an Ed25519 signature, by the
//! log's [`Signer`], over the log's origin, the number of lines before it and
//! the hash of the line before it. The batch, checkpoint line included, is
//! written with one `write` and made durable with one `fdatasync`; then (if
//! configured) the checkpoint is published to a [`Witness`]; only then do
//! the appends of the batch return. So every acknowledged record is covered
//! by a signature: editing or deleting it, or any record before it, breaks
//! the chain or the signature, and [`crate::verify`] reports it. Deleting
//! whole batches from the end leaves a shorter log that is still signed; the
//! witness's checkpoints, kept elsewhere, catch that.
//!
//! # Many writers: threads and processes
//!
//! Any number of [`AuditLog`] values, in any number of processes, may append
//! to one directory at once. Within a process, appends are *group
//! committed*: while one thread commits a batch, the others queue their
//! records, and the next batch carries all of them with one sync. Between
//! processes, the committing thread holds an exclusive lock on `DIR/LOCK`
//! (`flock`, released by the kernel if the process dies) while it
//!
//! 1. reads what other writers appended since its last batch, walks their
//!    lines through the chain and checks the signature of their last
//!    checkpoint line (so it never signs over a tail it has not verified);
//! 2. gives its records the next sequence numbers, writes and syncs the
//!    batch, publishes the checkpoint.
//!
//! So the log is one chain, with no gaps, duplicates or interleaving, in
//! the order the batches took the lock. A writer waits at most
//! [`LogConfig::lock_timeout`] for the lock and then fails with
//! [`Error::Busy`]; nothing was written. Readers ([`crate::verify`],
//! [`crate::read_entries`]) take the lock shared, so they never see half a
//! batch.
//!
//! Throughput: one thread handing over many records at once with
//! [`AuditLog::append_all`] is bounded by the disk's sync rate times the
//! batch size, and by encoding and hashing (about 1 µs per record); single
//! appends from many threads are bounded by how fast the machine wakes
//! blocked threads. See `cargo bench -p atrest-benches --bench audit`.
//!
//! If a batch cannot be written whole (a full disk), what it wrote is cut
//! off at once and the log goes on with the next batch. If a sync fails
//! (or that cut does), this [`AuditLog`] stops accepting appends
//! ([`Error::Poisoned`], [`AuditLog::stopped`]): after a failed `fsync` the
//! state of the file is unknown. Reopening recovers it.
//!
//! # Crash recovery
//!
//! A writer killed in the middle of a batch leaves, at the end of the last
//! segment, lines that no checkpoint line follows, perhaps ending inside a
//! line. No append of that batch returned, so nothing in it was
//! acknowledged. The next writer to take the lock — [`AuditLog::open`], or a
//! running writer's next batch — moves those bytes to
//! `DIR/recovered/<segment>-<offset>.partial`, cuts them off, and records a
//! [`Event::LogRecovered`](crate::Event::LogRecovered) line in its own batch; `open` also returns it in
//! [`Recovery`]. A signed batch is never cut: if only its final newline is
//! missing (a batch written whole but not synced, or an edit), the newline
//! is restored and that is recorded the same way. Damage anywhere else — a
//! broken line followed by valid ones, a closed segment that ends unsigned,
//! a last checkpoint whose signature does not verify, a log that no longer
//! matches its witness — is not repaired ([`Error::Corrupt`]): it is
//! evidence, for [`crate::verify`] to report.

mod recovery;
pub mod restart;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::{Checkpoint, Signer, VerifyingKey};
use crate::record::Record;
use crate::witness::Witness;
use crate::{Audit, Error};

pub use crate::fs::read_origin;

/// The actor of the lines the log writes itself.
pub const LOG_ACTOR: &str = "atrest-audit";

/// Settings of an [`AuditLog`].
#[derive(Clone)]
pub struct LogConfig {
    /// A segment is closed once it holds at least this many bytes (a batch
    /// is never split, so a segment can exceed it by one batch).
    pub max_segment_bytes: u64,
    /// How long the thread that commits a batch waits for more records
    /// before writing it. Zero (the default) commits at once; batches still
    /// form from the records that arrive during the previous sync.
    pub max_batch_delay: Duration,
    /// How long a writer waits for the lock that other processes hold
    /// before failing with [`Error::Busy`] (default 10 s).
    pub lock_timeout: Duration,
    /// Where checkpoints are published as they are made (none by default).
    /// A failed publication fails the appends of its batch with
    /// [`Error::Witness`] (their records are durable and signed in the log).
    pub witness: Option<Arc<dyn Witness>>,
    /// Publish to the witness at most this often (zero, the default: every
    /// batch). The checkpoint of the first batch after the interval is
    /// published; records in between are covered once it is.
    pub witness_interval: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_segment_bytes: 64 << 20,
            max_batch_delay: Duration::ZERO,
            lock_timeout: Duration::from_secs(10),
            witness: None,
            witness_interval: Duration::ZERO,
        }
    }
}

impl std::fmt::Debug for LogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogConfig")
            .field("max_segment_bytes", &self.max_segment_bytes)
            .field("max_batch_delay", &self.max_batch_delay)
            .field("lock_timeout", &self.lock_timeout)
            .field("witness", &self.witness.as_ref().map(|w| w.describe()))
            .field("witness_interval", &self.witness_interval)
            .finish()
    }
}

/// Proof that a record is durable and signed: its sequence number and
/// chain hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The record's sequence number.
    pub seq: u64,
    /// SHA-256 of the record's line: the head of the chain after it.
    pub hash: [u8; 32],
}

/// What [`AuditLog::open`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Lines in the log when it was opened (after any repair, before the
    /// line recording it).
    pub records: u64,
    /// Bytes of an unacknowledged batch that were cut off (0 if none).
    pub cut_bytes: u64,
    /// Complete lines among them.
    pub cut_lines: u64,
    /// Where the cut bytes were saved.
    pub saved_as: Option<PathBuf>,
    /// Whether a signed batch's missing final newline was restored.
    pub newline_restored: bool,
}

impl Recovery {
    /// Whether anything was cut or repaired.
    pub fn repaired(&self) -> bool {
        self.cut_bytes > 0 || self.newline_restored
    }
}

/// An append-only, hash-chained, signed audit log in a directory, shared by
/// any number of threads and processes. See the [module
/// documentation](self) for the layout and guarantees.
///
/// Cloning is cheap: the clones are handles on the same writer (its group
/// commit, its view of the log's end).
#[derive(Clone)]
pub struct AuditLog {
    writer: Arc<writer::Writer>,
}

impl AuditLog {
    /// Creates a new log in `dir` (created if missing; it must not already
    /// hold a log), signed by `signer`. Its first line is a checkpoint.
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::NotALog`] if `dir` already holds a log.
    pub fn create(
        dir: impl AsRef<Path>,
        signer: impl Signer + 'static,
        config: LogConfig,
    ) -> Result<Self, Error> {
        let writer = writer::Writer::create(dir, signer, config)?;
        Ok(Self {
            writer: Arc::new(writer),
        })
    }

    /// Opens the log in `dir` to append records signed by `signer`: reads
    /// and checks every line, recovers from a crash in the middle of a batch
    /// (see the [module documentation](self)), checks the log against the
    /// witness's latest checkpoint if one is configured, and seals the log
    /// with a checkpoint line if it does not end with one.
    ///
    /// # Errors
    /// [`Error::NotALog`]; [`Error::Corrupt`] for damage that is not an
    /// unacknowledged batch at the end, for a last checkpoint not signed by
    /// `signer`'s key, or for a log that does not match its witness;
    /// [`Error::Busy`] if other writers hold the lock too long;
    /// [`Error::Witness`]; [`Error::Io`].
    pub fn open(
        dir: impl AsRef<Path>,
        signer: impl Signer + 'static,
        config: LogConfig,
    ) -> Result<(Self, Recovery), Error> {
        let (writer, recovery) = writer::Writer::open(dir, signer, config)?;
        Ok((
            Self {
                writer: Arc::new(writer),
            },
            recovery,
        ))
    }

    /// The log's random id (32 hex digits).
    pub fn log_id(&self) -> &str {
        self.writer.log_id()
    }

    /// The checkpoint origin of this log: `atrest-audit/<log id>`.
    pub fn origin(&self) -> &str {
        self.writer.origin()
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        self.writer.dir()
    }

    /// The key that verifies this log's checkpoints.
    pub fn verifying_key(&self) -> &VerifyingKey {
        self.writer.verifying_key()
    }

    /// Appends `record` and returns once it is durable and signed (see the
    /// module documentation for the contract). Blocks the calling thread
    /// for the batch's write and sync: from async code, use the [`Audit`]
    /// implementation.
    ///
    /// # Errors
    /// [`Error::Reserved`] for an event only the log writes;
    /// [`Error::Busy`] if other writers held the lock for longer than
    /// [`LogConfig::lock_timeout`] (nothing was written); [`Error::Corrupt`]
    /// if what other writers appended does not verify; [`Error::Poisoned`]
    /// after an earlier failed write; [`Error::Io`] if this record's batch
    /// could not be written; [`Error::Witness`] if it was written but not
    /// published.
    pub fn append(&self, record: &Record) -> Result<Receipt, Error> {
        self.writer.append_all(std::slice::from_ref(record))
    }

    /// Appends `records` in order, committed in one batch; returns the last
    /// one's receipt once all are durable and signed (for an empty slice,
    /// the receipt of the newest line this log has seen).
    ///
    /// # Errors
    /// As for [`AuditLog::append`].
    pub fn append_all(&self, records: &[Record]) -> Result<Receipt, Error> {
        self.writer.append_all(records)
    }

    /// Appends `records` in order, committed in one batch (one sync, shared
    /// with any other writers' records waiting at the time); returns each
    /// record's receipt, in order, once all are durable and signed.
    ///
    /// # Errors
    /// As for [`AuditLog::append`].
    pub fn append_each(&self, records: &[Record]) -> Result<Vec<Receipt>, Error> {
        self.writer.append_each(records)
    }

    /// Why this log accepts no more appends, if it stopped: a write whose
    /// effect on disk is unknown (a failed sync). Reopening recovers it.
    pub fn stopped(&self) -> Option<String> {
        self.writer.stopped()
    }

    /// The number of lines in the log and the chain head after them, as of
    /// this log's latest batch (other writers' later batches not counted).
    pub fn head(&self) -> (u64, [u8; 32]) {
        self.writer.head()
    }

    /// The checkpoint of this log's latest batch (or of the newest batch it
    /// read from other writers): keep a copy elsewhere, or configure a
    /// [`Witness`].
    pub fn latest_checkpoint(&self) -> Option<Checkpoint> {
        self.writer.latest_checkpoint()
    }
}

/// Each call runs its append as a short blocking call
/// ([`atrest_core::blocking::run_short`]: in place while appends stay
/// short, as on a fast disk, off the async workers otherwise), where it
/// waits for its batch's write and sync; the records of concurrent calls
/// share batches.
#[async_trait::async_trait]
impl Audit for AuditLog {
    async fn record(&self, record: Record) -> Result<Receipt, Error> {
        let log = self.clone();
        atrest_core::blocking::run_short(move || log.append(&record)).await
    }

    async fn record_all(&self, records: Vec<Record>) -> Result<Option<Receipt>, Error> {
        if records.is_empty() {
            return Ok(None);
        }
        let log = self.clone();
        atrest_core::blocking::run_short(move || log.append_all(&records).map(Some)).await
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir())
            .field("log_id", &self.log_id())
            .finish_non_exhaustive()
    }
}
