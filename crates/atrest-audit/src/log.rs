//! The append-only audit log on the file system.
//!
//! # Layout
//!
//! ```text
//! DIR/LOG                 {"format":"atrest-audit","version":1,"log_id":"<32 hex digits>"}
//! DIR/00000001.log        segment 1: one record per line (JSON, see crate::record)
//! DIR/00000002.log        segment 2, ...
//! DIR/checkpoints/        signed checkpoints, one file each, named by size
//! ```
//!
//! Each line is the canonical JSON of an [`Entry`](crate::record::Entry): its `prev` field is the
//! SHA-256 of the previous line (of the genesis string for the first), so the
//! lines form a hash chain across segments. A segment is closed when it
//! reaches the configured size; the chain continues in the next one.
//!
//! # Durability contract
//!
//! When [`AuditLog::append`] returns `Ok`, the record and every record
//! before it have been written and `fdatasync`ed (and the directory entry of
//! a new segment `fsync`ed): they survive a crash or power loss. Appends from
//! many threads are *group committed*: while one thread writes and syncs a
//! batch, the others queue their records, and the next batch carries all of
//! them with one sync. [`LogConfig::max_batch_delay`] lets a batch wait a
//! little for more records.
//!
//! Throughput: each `append` blocks its thread until its batch is synced,
//! so the rate of single-record appends is bounded by how fast the machine
//! can wake blocked threads (on two cores about 45,000 per second, most of
//! it spent in the scheduler), not by the disk. A service that produces
//! many records should hand them over together with [`AuditLog::append_all`]
//! (one lock, one sync): about 300,000 durable records per second from one
//! thread on the same machine (`cargo bench -p atrest-benches --bench audit`).
//!
//! If a write or sync fails, the log stops accepting appends
//! ([`Error::Poisoned`]): after a failed `fsync` the state of the file is
//! unknown. Reopening recovers it.
//!
//! # Crash recovery
//!
//! [`AuditLog::open`] walks the chain. A final record that was only partly
//! written (a torn write) is cut off, reported in [`Recovery`], and the chain
//! continues from the last complete record. Damage anywhere else — a broken
//! record followed by valid ones, a broken closed segment — is not repaired
//! ([`Error::Corrupt`]): it is evidence, for [`crate::verify`] to report.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chain::{self, ChainState, LinkError};
use crate::checkpoint::{Checkpoint, SigningKey, genesis_hash};
use crate::record::Record;
use crate::{Audit, Error};

const FORMAT: &str = "atrest-audit";
const META_FILE: &str = "LOG";
const CHECKPOINT_DIR: &str = "checkpoints";

/// Settings of an [`AuditLog`].
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A segment is closed once it holds at least this many bytes (a batch
    /// is never split, so a segment can exceed it by one batch).
    pub max_segment_bytes: u64,
    /// How long the thread that commits a batch waits for more records
    /// before writing it. Zero (the default) commits at once; batches still
    /// form from the records that arrive during the previous sync.
    pub max_batch_delay: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_segment_bytes: 64 << 20,
            max_batch_delay: Duration::ZERO,
        }
    }
}

/// Proof that a record is durable: its sequence number and chain hash.
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
    /// Records in the log.
    pub records: u64,
    /// Bytes of a torn final write that were cut off (0 if none).
    pub torn_bytes_removed: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format: String,
    version: u32,
    log_id: String,
}

struct SegmentWriter {
    file: File,
    index: u32,
    len: u64,
}

struct State {
    /// Chain state after every queued record.
    chain: ChainState,
    /// Lines queued but not yet taken by a committing thread.
    queued: Vec<u8>,
    /// Records with `seq < durable` are on disk, and `durable_head` is the
    /// hash of record `durable - 1`.
    durable: u64,
    durable_head: [u8; 32],
    committing: bool,
    writer: Option<SegmentWriter>,
    poisoned: Option<String>,
}

/// An append-only, hash-chained, group-committed audit log in a directory.
/// See the [module documentation](self) for the layout and guarantees.
pub struct AuditLog {
    dir: PathBuf,
    log_id: String,
    config: LogConfig,
    state: Mutex<State>,
    committed: Condvar,
}

pub(crate) fn segment_path(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("{index:08}.log"))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn io<T>(path: &Path, result: std::io::Result<T>) -> Result<T, Error> {
    result.map_err(|e| Error::io(path, e))
}

/// Writes the canonical line of record `seq` after `prev`: the chain fields,
/// then the fields of the record's own JSON object `body` (same order as
/// [`Entry`](crate::record::Entry), so the line is exactly its JSON).
fn write_line(out: &mut Vec<u8>, seq: u64, prev: &[u8; 32], body: &[u8]) {
    out.extend_from_slice(br#"{"v":"#);
    out.extend_from_slice(crate::record::SCHEMA_VERSION.to_string().as_bytes());
    out.extend_from_slice(br#","seq":"#);
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(br#","prev":""#);
    out.extend_from_slice(hex::encode(prev).as_bytes());
    out.extend_from_slice(br#"","#);
    out.extend_from_slice(body.strip_prefix(b"{").unwrap_or(body));
}

/// The log id of the log in `dir`.
pub(crate) fn read_meta(dir: &Path) -> Result<String, Error> {
    let path = dir.join(META_FILE);
    let text = io(&path, fs::read_to_string(&path))?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| Error::NotALog {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if meta.format != FORMAT || meta.version != 1 {
        return Err(Error::NotALog {
            path,
            reason: format!("format {} version {}", meta.format, meta.version),
        });
    }
    if meta.log_id.len() != 32 || !meta.log_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::NotALog {
            path,
            reason: "malformed log id".into(),
        });
    }
    Ok(meta.log_id)
}

/// The segment files of the log in `dir`, in order; they must be numbered
/// consecutively from 1.
pub(crate) fn segments(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut indices = Vec::new();
    for entry in io(dir, fs::read_dir(dir))? {
        let entry = io(dir, entry)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(index) = name
            .strip_suffix(".log")
            .filter(|n| n.len() == 8)
            .and_then(|n| n.parse::<u32>().ok())
        {
            indices.push(index);
        }
    }
    indices.sort_unstable();
    for (position, &index) in indices.iter().enumerate() {
        if u64::from(index) != position as u64 + 1 {
            return Err(Error::Corrupt {
                path: segment_path(dir, index),
                line: 0,
                reason: format!("segment {} is missing", position + 1),
            });
        }
    }
    Ok(indices.into_iter().map(|i| segment_path(dir, i)).collect())
}

impl AuditLog {
    /// Creates a new, empty log in `dir` (created if missing; it must not
    /// already hold a log).
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::NotALog`] if `dir` already holds a log.
    pub fn create(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self, Error> {
        let dir = dir.as_ref().to_path_buf();
        io(&dir, fs::create_dir_all(&dir))?;
        let meta_path = dir.join(META_FILE);
        if meta_path.exists() {
            return Err(Error::NotALog {
                path: meta_path,
                reason: "a log already exists here".into(),
            });
        }
        let mut id = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| Error::Rng)?;
        let log_id = hex::encode(id);
        let meta = Meta {
            format: FORMAT.into(),
            version: 1,
            log_id: log_id.clone(),
        };
        let mut text = serde_json::to_vec(&meta).map_err(|e| Error::NotALog {
            path: meta_path.clone(),
            reason: e.to_string(),
        })?;
        text.push(b'\n');
        let mut file = io(
            &meta_path,
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&meta_path),
        )?;
        io(
            &meta_path,
            file.write_all(&text).and_then(|()| file.sync_all()),
        )?;
        io(&dir, fs::create_dir_all(dir.join(CHECKPOINT_DIR)))?;
        let segment = segment_path(&dir, 1);
        let file = io(
            &segment,
            OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(&segment),
        )?;
        sync_dir(&dir)?;
        let head = genesis_hash(&log_id);
        Ok(Self::with_state(
            dir,
            log_id,
            config,
            ChainState { next_seq: 0, head },
            SegmentWriter {
                file,
                index: 1,
                len: 0,
            },
        ))
    }

    /// Opens the log in `dir`, recovering from a torn final write.
    ///
    /// # Errors
    /// [`Error::NotALog`], [`Error::Corrupt`] for damage that is not a torn
    /// final write, or [`Error::Io`].
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<(Self, Recovery), Error> {
        let dir = dir.as_ref().to_path_buf();
        let log_id = read_meta(&dir)?;
        let paths = segments(&dir)?;
        let mut chain = ChainState {
            next_seq: 0,
            head: genesis_hash(&log_id),
        };
        let mut recovery = Recovery::default();
        let (last_path, last_len) = match paths.split_last() {
            None => {
                return Err(Error::NotALog {
                    path: segment_path(&dir, 1),
                    reason: "no segment".into(),
                });
            }
            Some((last, closed)) => {
                for path in closed {
                    let bytes = io(path, fs::read(path))?;
                    if let Some(broken) = chain::walk(&bytes, &mut chain, |_, _| {}) {
                        return Err(Error::Corrupt {
                            path: path.clone(),
                            line: broken.line,
                            reason: broken.error.to_string(),
                        });
                    }
                }
                let bytes = io(last, fs::read(last))?;
                let mut valid = bytes.len();
                if let Some(broken) = chain::walk(&bytes, &mut chain, |_, _| {}) {
                    let torn = broken.error == LinkError::Torn
                        || !chain::record_follows(&bytes, broken.offset);
                    if !torn {
                        return Err(Error::Corrupt {
                            path: last.clone(),
                            line: broken.line,
                            reason: broken.error.to_string(),
                        });
                    }
                    valid = broken.offset;
                    recovery.torn_bytes_removed = (bytes.len() - valid) as u64;
                }
                (last.clone(), valid as u64)
            }
        };
        let file = io(&last_path, OpenOptions::new().append(true).open(&last_path))?;
        if recovery.torn_bytes_removed > 0 {
            io(
                &last_path,
                file.set_len(last_len).and_then(|()| file.sync_all()),
            )?;
        }
        recovery.records = chain.next_seq;
        let index = u32::try_from(paths.len()).unwrap_or(u32::MAX);
        let writer = SegmentWriter {
            file,
            index,
            len: last_len,
        };
        Ok((
            Self::with_state(dir, log_id, config, chain, writer),
            recovery,
        ))
    }

    fn with_state(
        dir: PathBuf,
        log_id: String,
        config: LogConfig,
        chain: ChainState,
        writer: SegmentWriter,
    ) -> Self {
        let state = State {
            chain,
            queued: Vec::new(),
            durable: chain.next_seq,
            durable_head: chain.head,
            committing: false,
            writer: Some(writer),
            poisoned: None,
        };
        Self {
            dir,
            log_id,
            config,
            state: Mutex::new(state),
            committed: Condvar::new(),
        }
    }

    /// The log's random id (32 hex digits).
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    /// The checkpoint origin of this log: `atrest-audit/<log id>`.
    pub fn origin(&self) -> String {
        format!("{FORMAT}/{}", self.log_id)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the chain half-updated
        // (updates are single assignments), so a poisoned mutex is usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `record` and returns once it is durable (see the module
    /// documentation for the contract).
    ///
    /// # Errors
    /// [`Error::Poisoned`] after an earlier failed write; [`Error::Io`] if
    /// this record's batch could not be written.
    pub fn append(&self, record: &Record) -> Result<Receipt, Error> {
        self.append_all(std::slice::from_ref(record))
    }

    /// Appends `records` in order, committed together; returns the last one's
    /// receipt once all are durable (for an empty slice, the current head).
    ///
    /// # Errors
    /// As for [`AuditLog::append`].
    pub fn append_all(&self, records: &[Record]) -> Result<Receipt, Error> {
        // Encode outside the lock; only the chain fields depend on the order.
        let bodies = records
            .iter()
            .map(|record| {
                serde_json::to_vec(record)
                    .map_err(|e| Error::Poisoned(format!("cannot encode a record: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut state = self.lock();
        if let Some(reason) = &state.poisoned {
            return Err(Error::Poisoned(reason.clone()));
        }
        for body in &bodies {
            let start = state.queued.len();
            let ChainState { next_seq, head } = state.chain;
            write_line(&mut state.queued, next_seq, &head, body);
            let line = state.queued.get(start..).unwrap_or_default();
            state.chain.head = chain::hash_line(line);
            state.chain.next_seq += 1;
            state.queued.push(b'\n');
        }
        let target = state.chain.next_seq;
        let receipt = Receipt {
            seq: target.saturating_sub(1),
            hash: state.chain.head,
        };
        loop {
            if state.durable >= target {
                return Ok(receipt);
            }
            if let Some(reason) = &state.poisoned {
                return Err(Error::Poisoned(reason.clone()));
            }
            if state.committing {
                state = self
                    .committed
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            state.committing = true;
            if !self.config.max_batch_delay.is_zero() {
                drop(state);
                std::thread::sleep(self.config.max_batch_delay);
                state = self.lock();
            }
            let batch = std::mem::take(&mut state.queued);
            let (upto, head) = (state.chain.next_seq, state.chain.head);
            let writer = state.writer.take();
            drop(state);
            let (writer, result) = self.commit(writer, &batch);
            state = self.lock();
            state.writer = writer;
            state.committing = false;
            match result {
                Ok(()) => {
                    state.durable = upto;
                    state.durable_head = head;
                }
                Err(error) => state.poisoned = Some(error.to_string()),
            }
            // Give the batch buffer's allocation back for the next batch.
            if state.queued.is_empty() {
                let mut reuse = batch;
                reuse.clear();
                state.queued = reuse;
            }
            self.committed.notify_all();
        }
    }

    /// Writes and syncs one batch, rolling over to a new segment first if
    /// the current one is full.
    fn commit(
        &self,
        writer: Option<SegmentWriter>,
        batch: &[u8],
    ) -> (Option<SegmentWriter>, Result<(), Error>) {
        let Some(mut writer) = writer else {
            return (None, Err(Error::Poisoned("no segment open".into())));
        };
        if writer.len >= self.config.max_segment_bytes && writer.len > 0 {
            let index = writer.index + 1;
            let path = segment_path(&self.dir, index);
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(file) => {
                    if let Err(error) = sync_dir(&self.dir) {
                        return (Some(writer), Err(error));
                    }
                    writer = SegmentWriter {
                        file,
                        index,
                        len: 0,
                    };
                }
                Err(error) => return (Some(writer), Err(Error::io(&path, error))),
            }
        }
        let path = segment_path(&self.dir, writer.index);
        let result = writer
            .file
            .write_all(batch)
            .and_then(|()| writer.file.sync_data());
        match result {
            Ok(()) => {
                writer.len += batch.len() as u64;
                (Some(writer), Ok(()))
            }
            Err(error) => (Some(writer), Err(Error::io(path, error))),
        }
    }

    /// The number of durable records and the chain head after them.
    pub fn head(&self) -> (u64, [u8; 32]) {
        let state = self.lock();
        (state.durable, state.durable_head)
    }

    /// Signs a checkpoint of the durable head with `key`, stores it under
    /// `checkpoints/` (atomically) and returns it. Keep a copy elsewhere.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be stored.
    pub fn checkpoint(&self, key: &SigningKey) -> Result<Checkpoint, Error> {
        let (size, head) = self.head();
        let checkpoint = key.sign(&self.origin(), size, head)?;
        let dir = self.dir.join(CHECKPOINT_DIR);
        io(&dir, fs::create_dir_all(&dir))?;
        let path = dir.join(format!("{size:020}.txt"));
        let temporary = dir.join(format!(".{size:020}.tmp"));
        let mut file = io(&temporary, File::create(&temporary))?;
        io(
            &temporary,
            file.write_all(checkpoint.to_text().as_bytes())
                .and_then(|()| file.sync_all()),
        )?;
        io(&path, fs::rename(&temporary, &path))?;
        sync_dir(&dir)?;
        Ok(checkpoint)
    }
}

/// The checkpoints stored in a log's `checkpoints/` directory, oldest first.
///
/// # Errors
/// [`Error::Io`], or [`Error::Malformed`] for a checkpoint file that does
/// not parse.
pub fn stored_checkpoints(dir: impl AsRef<Path>) -> Result<Vec<Checkpoint>, Error> {
    let dir = dir.as_ref().join(CHECKPOINT_DIR);
    let mut names = Vec::new();
    if dir.exists() {
        for entry in io(&dir, fs::read_dir(&dir))? {
            let entry = io(&dir, entry)?;
            if let Some(name) = entry.file_name().to_str().filter(|n| n.ends_with(".txt")) {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    names
        .iter()
        .map(|name| {
            let path = dir.join(name);
            Checkpoint::parse(&io(&path, fs::read_to_string(&path))?)
        })
        .collect()
}

impl Audit for AuditLog {
    fn record(&self, record: Record) -> Result<Receipt, Error> {
        self.append(&record)
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("log_id", &self.log_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Entry, Event, Outcome, Text};

    #[test]
    fn composed_lines_are_exactly_the_entry_encoding() {
        let record = Record::new(
            Text::new("svc").unwrap(),
            Event::TenantPurged { tik_versions: 3 },
        )
        .tenant(Text::new("t").unwrap())
        .outcome(Outcome::Denied {
            reason: Text::new("no \"quotes\" \\ here").unwrap(),
        });
        let prev = [0xab; 32];
        let mut line = Vec::new();
        write_line(
            &mut line,
            12_345,
            &prev,
            &serde_json::to_vec(&record).unwrap(),
        );
        let entry = Entry::new(12_345, &prev, &record);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            serde_json::to_string(&entry).unwrap()
        );
    }
}
