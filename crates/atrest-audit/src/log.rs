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
//! checkpoint line ([`Event::Checkpoint`]): an Ed25519 signature, by the
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
//! If a write or sync fails, this [`AuditLog`] stops accepting appends
//! ([`Error::Poisoned`]): after a failed `fsync` the state of the file is
//! unknown. Reopening recovers it.
//!
//! # Crash recovery
//!
//! A writer killed in the middle of a batch leaves, at the end of the last
//! segment, lines that no checkpoint line follows, perhaps ending inside a
//! line. No append of that batch returned, so nothing in it was
//! acknowledged. The next writer to take the lock — [`AuditLog::open`], or a
//! running writer's next batch — moves those bytes to
//! `DIR/recovered/<segment>-<offset>.partial`, cuts them off, and records a
//! [`Event::LogRecovered`] line in its own batch; `open` also returns it in
//! [`Recovery`]. A signed batch is never cut: if only its final newline is
//! missing (a batch written whole but not synced, or an edit), the newline
//! is restored and that is recorded the same way. Damage anywhere else — a
//! broken line followed by valid ones, a closed segment that ends unsigned,
//! a last checkpoint whose signature does not verify, a log that no longer
//! matches its witness — is not repaired ([`Error::Corrupt`]): it is
//! evidence, for [`crate::verify`] to report.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::chain::{self, ChainState, LinkError};
use crate::checkpoint::{Checkpoint, Signer, VerifyingKey, genesis_hash};
use crate::record::{Event, Record, Text};
use crate::witness::Witness;
use crate::{Audit, Error};

const FORMAT: &str = "atrest-audit";
const FORMAT_VERSION: u32 = 2;
const META_FILE: &str = "LOG";
const LOCK_FILE: &str = "LOCK";
const RECOVERED_DIR: &str = "recovered";
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

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format: String,
    version: u32,
    log_id: String,
}

/// The committing thread's view of the end of the log.
struct Tail {
    file: File,
    index: u32,
    /// Bytes of the segment walked so far (every batch in them signed).
    len: u64,
    chain: ChainState,
    /// The newest checkpoint line walked or written.
    checkpoint: Option<Checkpoint>,
    /// A head the chain must pass through (from the witness), checked while
    /// walking at open.
    expect: Option<(u64, [u8; 32])>,
    /// When the witness last got a checkpoint.
    published: Option<Instant>,
}

/// Records queued for the next batch.
#[derive(Default)]
struct Queue {
    bodies: Vec<u8>,
    /// Where each record's body ends in `bodies`, and its schema version.
    ends: Vec<(usize, u32)>,
    /// (ticket, number of records) per append call, in order.
    calls: Vec<(u64, usize)>,
}

struct State {
    queue: Queue,
    next_ticket: u64,
    /// Per finished call: the receipt of each of its records, in order.
    results: HashMap<u64, Result<Vec<Receipt>, Error>>,
    committing: bool,
    tail: Option<Tail>,
    poisoned: Option<String>,
    head: (u64, [u8; 32]),
    checkpoint: Option<Checkpoint>,
}

/// An append-only, hash-chained, signed audit log in a directory, shared by
/// any number of threads and processes. See the [module
/// documentation](self) for the layout and guarantees.
pub struct AuditLog {
    dir: PathBuf,
    log_id: String,
    origin: String,
    config: LogConfig,
    signer: Box<dyn Signer>,
    verifying_key: VerifyingKey,
    lock: File,
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

/// Writes the canonical line of record `seq` after `prev`: the chain fields
/// (`version` being the schema version of the record's event), then the
/// fields of the record's own JSON object `body` (same order as
/// [`Entry`](crate::record::Entry), so the line is exactly its JSON).
fn write_line(out: &mut Vec<u8>, version: u32, seq: u64, prev: &[u8; 32], body: &[u8]) {
    out.extend_from_slice(br#"{"v":"#);
    out.extend_from_slice(version.to_string().as_bytes());
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
    if meta.format != FORMAT {
        return Err(Error::NotALog {
            path,
            reason: format!("format {:?}", meta.format),
        });
    }
    if meta.version != FORMAT_VERSION {
        return Err(Error::NotALog {
            path,
            reason: format!(
                "log format version {}; this build reads version {FORMAT_VERSION}",
                meta.version
            ),
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

/// The checkpoint origin of the log in `dir` (`atrest-audit/<log id>`),
/// read from its `LOG` file: what to ask a [`Witness`] for.
///
/// # Errors
/// [`Error::NotALog`]; [`Error::Io`].
pub fn read_origin(dir: impl AsRef<Path>) -> Result<String, Error> {
    Ok(origin_of(&read_meta(dir.as_ref())?))
}

/// Options to open or create a file of the log: created readable and
/// writable by its owner only (0600).
pub(crate) fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates `dir` and its missing parents, readable by their owner only
/// (0700).
pub(crate) fn private_dirs(dir: &Path) -> std::io::Result<()> {
    std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700).create(dir)
}

/// The origin of the log `log_id` in checkpoints.
pub(crate) fn origin_of(log_id: &str) -> String {
    format!("{FORMAT}/{log_id}")
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
    if indices.is_empty() {
        return Err(Error::NotALog {
            path: segment_path(dir, 1),
            reason: "no segment".into(),
        });
    }
    Ok(indices.into_iter().map(|i| segment_path(dir, i)).collect())
}

/// Takes `lock` exclusively (or shared), retrying until `timeout`: after
/// 200 µs, then pauses doubling up to 2 ms, since another process holds the
/// lock only for an append or a batch (a few milliseconds with its flush),
/// and a longer pause would leave it unused.
pub(crate) fn take_lock<'a>(
    lock: &'a File,
    path: &Path,
    shared: bool,
    timeout: Duration,
) -> Result<LockGuard<'a>, Error> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        let attempt = if shared {
            lock.try_lock_shared()
        } else {
            lock.try_lock()
        };
        match attempt {
            Ok(()) => return Ok(LockGuard(lock)),
            Err(fs::TryLockError::WouldBlock) => {
                let waited = start.elapsed();
                if waited >= timeout {
                    return Err(Error::Busy { waited });
                }
                std::thread::sleep(pause.min(timeout.saturating_sub(waited)));
                pause = (pause * 2).min(Duration::from_millis(2));
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
    }
}

/// Releases the lock when dropped.
pub(crate) struct LockGuard<'a>(&'a File);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Closing the file or ending the process releases it too.
        let _ = self.0.unlock();
    }
}

/// Opens (creating if needed) the lock file of the log in `dir`.
pub(crate) fn open_lock(dir: &Path) -> Result<File, Error> {
    let path = dir.join(LOCK_FILE);
    io(
        &path,
        private_file()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path),
    )
}

/// Whether a (complete, linked) line is a checkpoint line. Only the event
/// of a checkpoint line can contain these bytes: quotes inside text values
/// are escaped.
pub(crate) fn is_checkpoint_line(line: &[u8]) -> bool {
    static FINDER: std::sync::LazyLock<memchr::memmem::FinderRev<'static>> =
        std::sync::LazyLock::new(|| {
            memchr::memmem::FinderRev::new(br#","event":{"type":"checkpoint","#)
        });
    // The event is the last field; in a checkpoint line only the key name
    // (at most 128 bytes) and the signature (92) follow the marker.
    let tail = line.get(line.len().saturating_sub(320)..).unwrap_or(line);
    FINDER.rfind(tail).is_some()
}

/// The checkpoint a checkpoint line states, with its signature (not yet
/// verified). Every byte of the line is fixed by the checkpoint: its
/// signed fields (size, head, time) and signature are the line's `seq`,
/// `prev`, `time` and event, and the rest must be exactly what the log
/// writes.
pub(crate) fn checkpoint_of_line(origin: &str, line: &[u8]) -> Result<Checkpoint, String> {
    let entry: crate::record::Entry =
        serde_json::from_slice(line).map_err(|e| format!("not a record: {e}"))?;
    let Event::Checkpoint { key, signature } = &entry.event else {
        return Err("not a checkpoint line".into());
    };
    let fixed = entry.actor.as_str() == LOG_ACTOR
        && entry.v == entry.event.schema_version()
        && entry.tenant.is_none()
        && entry.request.is_none()
        && entry.outcome == crate::record::Outcome::Success;
    let canonical = serde_json::to_vec(&entry).is_ok_and(|again| again == line);
    if !fixed || !canonical {
        return Err("not a checkpoint line as the log writes it".into());
    }
    let mut head = [0u8; 32];
    hex::decode_to_slice(&entry.prev, &mut head).map_err(|e| e.to_string())?;
    Checkpoint::from_signature(
        origin,
        entry.seq,
        head,
        entry.time,
        key.as_str(),
        signature.as_str(),
    )
    .map_err(|e| e.to_string())
}

/// What happened to the end of the last segment while reading it.
#[derive(Default)]
struct Repair {
    cut_bytes: u64,
    cut_lines: u64,
    saved_as: Option<PathBuf>,
    newline_restored: bool,
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
        let dir = dir.as_ref().to_path_buf();
        io(&dir, private_dirs(&dir))?;
        let meta_path = dir.join(META_FILE);
        let mut id = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| Error::Rng)?;
        let log_id = hex::encode(id);
        let meta = Meta {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            log_id: log_id.clone(),
        };
        let mut text = serde_json::to_vec(&meta).map_err(|e| Error::NotALog {
            path: meta_path.clone(),
            reason: e.to_string(),
        })?;
        text.push(b'\n');
        // The lock and the first segment exist before the meta file names a
        // log, so a concurrent `open` sees either no log or a whole one.
        let lock = open_lock(&dir)?;
        let segment = segment_path(&dir, 1);
        match private_file().append(true).create_new(true).open(&segment) {
            Ok(file) => drop(file),
            // Left empty by a `create` that stopped before the meta file.
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists
                    && !meta_path.exists()
                    && fs::metadata(&segment).is_ok_and(|m| m.len() == 0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::NotALog {
                    path: segment,
                    reason: "a log already exists here".into(),
                });
            }
            Err(e) => return Err(Error::io(&segment, e)),
        }
        let mut file = match private_file().write(true).create_new(true).open(&meta_path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::NotALog {
                    path: meta_path,
                    reason: "a log already exists here".into(),
                });
            }
            Err(e) => return Err(Error::io(&meta_path, e)),
        };
        io(
            &meta_path,
            file.write_all(&text).and_then(|()| file.sync_all()),
        )?;
        sync_dir(&dir)?;
        drop(lock);
        let (log, _) = Self::open(dir, signer, config)?;
        Ok(log)
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
        let dir = dir.as_ref().to_path_buf();
        let log_id = read_meta(&dir)?;
        let origin = origin_of(&log_id);
        let lock = open_lock(&dir)?;
        let first = segment_path(&dir, 1);
        let file = io(&first, private_file().read(true).append(true).open(&first))?;
        let genesis = genesis_hash(&log_id);
        let expect = match &config.witness {
            Some(witness) => witness.latest(&origin)?.map(|c| (c.size, c.head)),
            None => None,
        };
        // A checkpoint of the empty chain holds whatever the log holds.
        let expect = expect.filter(|&(size, head)| size > 0 || head != genesis);
        let verifying_key = signer.verifying_key();
        let tail = Tail {
            file,
            index: 1,
            len: 0,
            chain: ChainState {
                next_seq: 0,
                head: genesis,
            },
            checkpoint: None,
            expect,
            published: None,
        };
        let log = Self {
            dir,
            log_id,
            origin,
            config,
            signer: Box::new(signer),
            verifying_key,
            lock,
            state: Mutex::new(State {
                queue: Queue::default(),
                next_ticket: 0,
                results: HashMap::new(),
                committing: false,
                tail: None,
                poisoned: None,
                head: (0, genesis),
                checkpoint: None,
            }),
            committed: Condvar::new(),
        };
        // Walk the whole log under the lock, repair its end, seal it.
        let mut tail = tail;
        let recovery = {
            let _guard = take_lock(
                &log.lock,
                &log.dir.join(LOCK_FILE),
                false,
                log.config.lock_timeout,
            )?;
            let repair = log.catch_up(&mut tail)?;
            if let Some((size, _)) = tail.expect.take() {
                return Err(Error::Corrupt {
                    path: log.dir.clone(),
                    line: 0,
                    reason: format!(
                        "the log has {} lines but its witness vouches for {size}: lines were removed from its end",
                        tail.chain.next_seq
                    ),
                });
            }
            let recovery = Recovery {
                records: tail.chain.next_seq,
                cut_bytes: repair.cut_bytes,
                cut_lines: repair.cut_lines,
                saved_as: repair.saved_as.clone(),
                newline_restored: repair.newline_restored,
            };
            if recovery.repaired() || tail.checkpoint.is_none() {
                let mut batch = Vec::new();
                log.write_batch(
                    &mut tail,
                    &mut batch,
                    &Queue::default(),
                    recovery.repaired().then_some(&repair),
                )
                .map_err(|(error, _)| error)?;
                log.publish(&mut tail)?;
            }
            recovery
        };
        {
            let mut state = log.lock_state();
            state.head = (tail.chain.next_seq, tail.chain.head);
            state.checkpoint = tail.checkpoint.clone();
            state.tail = Some(tail);
        }
        Ok((log, recovery))
    }

    /// The log's random id (32 hex digits).
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    /// The checkpoint origin of this log: `atrest-audit/<log id>`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key that verifies this log's checkpoints.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying_key
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated
        // (updates are single assignments), so a poisoned mutex is usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `record` and returns once it is durable and signed (see the
    /// module documentation for the contract).
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
        self.append_all(std::slice::from_ref(record))
    }

    /// Appends `records` in order, committed in one batch; returns the last
    /// one's receipt once all are durable and signed (for an empty slice,
    /// the receipt of the newest line this log has seen).
    ///
    /// # Errors
    /// As for [`AuditLog::append`].
    pub fn append_all(&self, records: &[Record]) -> Result<Receipt, Error> {
        // `append_each` checks the records and the log's state first, for
        // an empty slice too.
        if let Some(last) = self.append_each(records)?.last() {
            return Ok(*last);
        }
        let (size, hash) = self.lock_state().head;
        Ok(Receipt {
            seq: size.saturating_sub(1),
            hash,
        })
    }

    /// Appends `records` in order, committed in one batch (one sync, shared
    /// with any other writers' records waiting at the time); returns each
    /// record's receipt, in order, once all are durable and signed.
    ///
    /// # Errors
    /// As for [`AuditLog::append`].
    pub fn append_each(&self, records: &[Record]) -> Result<Vec<Receipt>, Error> {
        // Encode outside the lock; only the chain fields depend on the order.
        let mut bodies = Vec::new();
        let mut ends = Vec::with_capacity(records.len());
        for record in records {
            if matches!(
                record.event,
                Event::Checkpoint { .. } | Event::LogRecovered { .. }
            ) {
                return Err(Error::Reserved);
            }
            serde_json::to_writer(&mut bodies, record)
                .map_err(|e| Error::Poisoned(format!("cannot encode a record: {e}")))?;
            ends.push((bodies.len(), record.event.schema_version()));
        }
        let mut state = self.lock_state();
        if let Some(reason) = &state.poisoned {
            return Err(Error::Poisoned(reason.clone()));
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        let base = state.queue.bodies.len();
        state.queue.bodies.extend_from_slice(&bodies);
        state
            .queue
            .ends
            .extend(ends.iter().map(|&(end, version)| (base + end, version)));
        state.queue.calls.push((ticket, records.len()));
        loop {
            if let Some(result) = state.results.remove(&ticket) {
                return result;
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
                state = self.lock_state();
            }
            let queue = std::mem::take(&mut state.queue);
            let tail = state.tail.take();
            drop(state);
            let (tail, outcome) = self.commit(tail, &queue);
            state = self.lock_state();
            if let Some(tail) = &tail {
                state.head = (tail.chain.next_seq, tail.chain.head);
                state.checkpoint.clone_from(&tail.checkpoint);
            }
            state.tail = tail;
            state.committing = false;
            match outcome {
                Ok(receipts) => {
                    for (&(call, _), receipt) in queue.calls.iter().zip(receipts) {
                        state.results.insert(call, receipt);
                    }
                }
                Err((error, poisons)) => {
                    if poisons {
                        state.poisoned = Some(error.to_string());
                    }
                    for &(call, _) in &queue.calls {
                        state.results.insert(call, Err(error.clone()));
                    }
                }
            }
            // Give the queue's allocations back for the next batch.
            if state.queue.calls.is_empty() {
                let mut reuse = queue;
                reuse.bodies.clear();
                reuse.ends.clear();
                reuse.calls.clear();
                state.queue = reuse;
            }
            self.committed.notify_all();
        }
    }

    /// Takes the writers' lock, catches up with other writers and writes
    /// `queue` as one batch. On success, one result per call of the queue
    /// (a witness failure is reported per call, the batch being durable).
    #[allow(clippy::type_complexity)]
    fn commit(
        &self,
        tail: Option<Tail>,
        queue: &Queue,
    ) -> (
        Option<Tail>,
        Result<Vec<Result<Vec<Receipt>, Error>>, (Error, bool)>,
    ) {
        let Some(mut tail) = tail else {
            return (None, Err((Error::Poisoned("no segment open".into()), true)));
        };
        let guard = match take_lock(
            &self.lock,
            &self.dir.join(LOCK_FILE),
            false,
            self.config.lock_timeout,
        ) {
            Ok(guard) => guard,
            Err(error) => return (Some(tail), Err((error, false))),
        };
        let repair = match self.catch_up(&mut tail) {
            Ok(repair) => repair,
            Err(error) => return (Some(tail), Err((error, false))),
        };
        let repaired = repair.cut_bytes > 0 || repair.newline_restored;
        let mut batch = Vec::new();
        let result = self
            .write_batch(&mut tail, &mut batch, queue, repaired.then_some(&repair))
            .map(|receipts| match self.publish(&mut tail) {
                Ok(()) => receipts.into_iter().map(Ok).collect(),
                // The records are durable and signed, but not witnessed.
                Err(error) => receipts.iter().map(|_| Err(error.clone())).collect(),
            });
        drop(guard);
        (Some(tail), result)
    }

    /// Publishes the newest checkpoint to the witness, if one is configured
    /// and it is due. The lock must be held.
    fn publish(&self, tail: &mut Tail) -> Result<(), Error> {
        let (Some(witness), Some(checkpoint)) = (&self.config.witness, &tail.checkpoint) else {
            return Ok(());
        };
        let due = tail
            .published
            .is_none_or(|at| at.elapsed() >= self.config.witness_interval);
        if due {
            witness.publish(checkpoint)?;
            tail.published = Some(Instant::now());
        }
        Ok(())
    }

    /// Composes, writes, syncs and publishes one batch: a line recording
    /// `repair` if given, the queued records, a checkpoint line. The lock
    /// must be held and `tail` caught up.
    #[allow(clippy::type_complexity)]
    fn write_batch(
        &self,
        tail: &mut Tail,
        batch: &mut Vec<u8>,
        queue: &Queue,
        repair: Option<&Repair>,
    ) -> Result<Vec<Vec<Receipt>>, (Error, bool)> {
        let fatal = |error: Error| (error, true);
        let mut chain = tail.chain;
        let push = |batch: &mut Vec<u8>, chain: &mut ChainState, version: u32, body: &[u8]| {
            let from = batch.len();
            write_line(batch, version, chain.next_seq, &chain.head, body);
            chain.head = chain::hash_line(batch.get(from..).unwrap_or_default());
            chain.next_seq += 1;
            batch.push(b'\n');
        };
        if let Some(repair) = repair {
            let record = Record::of_log(
                Text::lossy(LOG_ACTOR),
                Event::LogRecovered {
                    cut_bytes: repair.cut_bytes,
                    cut_lines: repair.cut_lines,
                    saved_as: repair
                        .saved_as
                        .as_ref()
                        .and_then(|p| p.strip_prefix(&self.dir).ok())
                        .map(|p| Text::lossy(p.display().to_string())),
                    newline_restored: repair.newline_restored,
                },
            );
            let body = serde_json::to_vec(&record)
                .map_err(|e| fatal(Error::Poisoned(format!("cannot encode a record: {e}"))))?;
            push(batch, &mut chain, record.event.schema_version(), &body);
        }
        let mut receipts = Vec::with_capacity(queue.calls.len());
        let mut from = 0;
        let mut record = 0;
        for &(_, count) in &queue.calls {
            let mut call = Vec::with_capacity(count);
            for _ in 0..count {
                let (end, version) = queue.ends.get(record).copied().unwrap_or((from, 0));
                push(
                    batch,
                    &mut chain,
                    version,
                    queue.bodies.get(from..end).unwrap_or_default(),
                );
                from = end;
                record += 1;
                call.push(Receipt {
                    seq: chain.next_seq.saturating_sub(1),
                    hash: chain.head,
                });
            }
            receipts.push(call);
        }
        let mut line = Record::of_log(
            Text::lossy(LOG_ACTOR),
            Event::Checkpoint {
                key: Text::lossy(""),
                signature: Text::lossy(""),
            },
        );
        let checkpoint = Checkpoint::signed(
            self.signer.as_ref(),
            &self.origin,
            chain.next_seq,
            chain.head,
            Some(line.time),
        )
        .map_err(|e| (e, false))?;
        let Some((name, signature)) = checkpoint.first_signature() else {
            return Err((Error::BadSignature, false));
        };
        line.event = Event::Checkpoint {
            key: Text::lossy(name),
            signature: Text::lossy(signature),
        };
        let body = serde_json::to_vec(&line)
            .map_err(|e| fatal(Error::Poisoned(format!("cannot encode a record: {e}"))))?;
        push(batch, &mut chain, line.event.schema_version(), &body);

        // Roll over to a new segment first if the current one is full.
        if tail.len >= self.config.max_segment_bytes && tail.len > 0 {
            let index = tail.index + 1;
            let path = segment_path(&self.dir, index);
            let file = private_file()
                .read(true)
                .append(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| fatal(Error::io(&path, e)))?;
            sync_dir(&self.dir).map_err(fatal)?;
            tail.file = file;
            tail.index = index;
            tail.len = 0;
        }
        let path = segment_path(&self.dir, tail.index);
        tail.file
            .write_all(batch)
            .and_then(|()| tail.file.sync_data())
            .map_err(|e| fatal(Error::io(&path, e)))?;
        tail.len += batch.len() as u64;
        tail.chain = chain;
        tail.checkpoint = Some(checkpoint);
        Ok(receipts)
    }

    /// Reads what other writers appended since `tail`, checks it, and
    /// repairs an unacknowledged batch at the end. The lock must be held.
    fn catch_up(&self, tail: &mut Tail) -> Result<Repair, Error> {
        let mut repair = Repair::default();
        loop {
            let path = segment_path(&self.dir, tail.index);
            let len = io(&path, tail.file.metadata())?.len();
            let next = segment_path(&self.dir, tail.index + 1);
            let has_next = next.exists();
            if len < tail.len {
                return Err(Error::Corrupt {
                    path,
                    line: 0,
                    reason: format!(
                        "the segment shrank from {} to {len} bytes under a running writer",
                        tail.len
                    ),
                });
            }
            if len > tail.len {
                let mut bytes = Vec::new();
                io(
                    &path,
                    tail.file
                        .seek(SeekFrom::Start(tail.len))
                        .and_then(|_| tail.file.read_to_end(&mut bytes)),
                )?;
                self.absorb(tail, &path, &bytes, has_next, &mut repair)?;
            }
            if !has_next {
                break;
            }
            tail.file = io(&next, private_file().read(true).append(true).open(&next))?;
            tail.index += 1;
            tail.len = 0;
        }
        Ok(repair)
    }

    /// Walks `bytes`, the segment `path` from `tail.len` on, and advances
    /// `tail` over every signed batch; cuts an unacknowledged batch at the
    /// end of the last segment.
    fn absorb(
        &self,
        tail: &mut Tail,
        path: &Path,
        bytes: &[u8],
        has_next: bool,
        repair: &mut Repair,
    ) -> Result<(), Error> {
        let mut state = tail.chain;
        let witnessed = tail.expect.map(|(size, _)| size);
        // End of the last checkpoint line walked, and the chain after it.
        let mut sealed: Option<(usize, ChainState, (usize, usize))> = None;
        let mut offset = 0usize;
        let mut expect = tail.expect;
        let broken = chain::walk(bytes, &mut state, |after, line| {
            let start = offset;
            offset += line.len() + 1;
            if let Some((size, head)) = expect
                && after.next_seq == size
            {
                expect = None;
                if after.head != head {
                    // Reported below, as a mismatch with the witness.
                    expect = Some((u64::MAX, head));
                }
            }
            if is_checkpoint_line(line) {
                sealed = Some((offset, *after, (start, line.len())));
            }
        });
        let corrupt = |line: u64, reason: String| Error::Corrupt {
            path: path.to_path_buf(),
            line,
            reason,
        };
        if let Some((u64::MAX, _)) = expect {
            return Err(corrupt(
                0,
                "the log does not match its witness's checkpoint: it was rewritten".into(),
            ));
        }
        tail.expect = expect;
        let adopt = |tail: &mut Tail,
                     end: usize,
                     after: ChainState,
                     (start, len): (usize, usize)|
         -> Result<(), Error> {
            let line = bytes.get(start..start + len).unwrap_or_default();
            let checkpoint =
                checkpoint_of_line(&self.origin, line).map_err(|reason| Error::Corrupt {
                    path: path.to_path_buf(),
                    line: 0,
                    reason: format!("the checkpoint line {}: {reason}", after.next_seq - 1),
                })?;
            // Never sign over lines whose signature has not been checked.
            if checkpoint.verify(&self.verifying_key).is_err() {
                return Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    line: 0,
                    reason: format!(
                        "the checkpoint line {} is not signed by this log's key ({})",
                        after.next_seq - 1,
                        self.verifying_key.name()
                    ),
                });
            }
            tail.checkpoint = Some(checkpoint);
            tail.len += end as u64;
            tail.chain = after;
            Ok(())
        };
        let sealed_end = sealed.map_or(0, |(end, _, _)| end);
        match broken {
            None if sealed_end == bytes.len() => {
                if let Some((end, after, line)) = sealed {
                    adopt(tail, end, after, line)?;
                }
                return Ok(());
            }
            Some(broken) if broken.error != LinkError::Torn => {
                // A crash leaves a prefix of the batch, perhaps followed by
                // zeros: lines that do not parse, and nothing after them.
                // A well-formed line that does not link, a complete line
                // without zeros that does not parse, or records after the
                // break, are edits: evidence, never cut.
                let rest = bytes.get(broken.offset..).unwrap_or_default();
                let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
                let complete_without_zeros = line.len() < rest.len() && !line.contains(&0);
                let edited = !matches!(broken.error, LinkError::Unparseable(_))
                    || complete_without_zeros
                    || chain::record_follows(bytes, broken.offset);
                if edited || has_next {
                    return Err(corrupt(broken.line, broken.error.to_string()));
                }
            }
            Some(broken) => {
                // The segment ends inside a line. If that line is a whole,
                // correctly chained checkpoint line and every line before it
                // links, the batch was written in full: restore its newline.
                let last = bytes.get(broken.offset..).unwrap_or_default();
                let mut probe = state;
                let whole = chain::link(&mut probe, last).is_ok()
                    && is_checkpoint_line(last)
                    && checkpoint_of_line(&self.origin, last)
                        .is_ok_and(|c| c.verify(&self.verifying_key).is_ok());
                if whole && !has_next {
                    io(
                        path,
                        tail.file
                            .write_all(b"\n")
                            .and_then(|()| tail.file.sync_data()),
                    )?;
                    repair.newline_restored = true;
                    let end = bytes.len() + 1;
                    return adopt(tail, end, probe, (broken.offset, last.len()));
                }
            }
            None => {}
        }
        if has_next {
            return Err(corrupt(
                0,
                "a closed segment ends with lines no checkpoint signs".into(),
            ));
        }
        // A batch the witness has a checkpoint of was acknowledged: its
        // damage is evidence, never cut.
        let kept = sealed.map_or(tail.chain.next_seq, |(_, after, _)| after.next_seq);
        if let Some(size) = witnessed
            && size >= kept
        {
            return Err(corrupt(
                0,
                format!(
                    "the log is damaged after line {kept}, but its witness has a checkpoint of {size} lines: not cut"
                ),
            ));
        }
        // An unacknowledged batch: keep its bytes aside, cut them off.
        let cut = bytes.get(sealed_end..).unwrap_or_default();
        let at = tail.len + sealed_end as u64;
        let saved = self.save_cut(tail.index, at, cut)?;
        io(
            path,
            tail.file.set_len(at).and_then(|()| tail.file.sync_all()),
        )?;
        repair.cut_bytes += cut.len() as u64;
        repair.cut_lines += cut.iter().filter(|&&b| b == b'\n').count() as u64;
        repair.saved_as = Some(saved);
        if let Some((end, after, line)) = sealed {
            adopt(tail, end, after, line)?;
        }
        Ok(())
    }

    /// Saves bytes about to be cut off to `recovered/`.
    fn save_cut(&self, index: u32, offset: u64, bytes: &[u8]) -> Result<PathBuf, Error> {
        let dir = self.dir.join(RECOVERED_DIR);
        io(&dir, private_dirs(&dir))?;
        let mut path = dir.join(format!("{index:08}-{offset}.partial"));
        let mut attempt = 1;
        let mut file = loop {
            match private_file().write(true).create_new(true).open(&path) {
                Ok(file) => break file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    attempt += 1;
                    path = dir.join(format!("{index:08}-{offset}.{attempt}.partial"));
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        };
        io(&path, file.write_all(bytes).and_then(|()| file.sync_all()))?;
        sync_dir(&dir)?;
        Ok(path)
    }

    /// The number of lines in the log and the chain head after them, as of
    /// this log's latest batch (other writers' later batches not counted).
    pub fn head(&self) -> (u64, [u8; 32]) {
        self.lock_state().head
    }

    /// The checkpoint of this log's latest batch (or of the newest batch it
    /// read from other writers): keep a copy elsewhere, or configure a
    /// [`Witness`].
    pub fn latest_checkpoint(&self) -> Option<Checkpoint> {
        self.lock_state().checkpoint.clone()
    }
}

impl Audit for AuditLog {
    fn record(&self, record: Record) -> Result<Receipt, Error> {
        self.append(&record)
    }

    fn record_all(&self, records: Vec<Record>) -> Result<Option<Receipt>, Error> {
        if records.is_empty() {
            return Ok(None);
        }
        self.append_all(&records).map(Some)
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
            record.event.schema_version(),
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

    #[test]
    fn only_checkpoint_events_look_like_checkpoint_lines() {
        let custom = Record::new(
            Text::new("svc").unwrap(),
            Event::Custom {
                kind: Text::new(r#","event":{"type":"checkpoint","#).unwrap(),
                fields: Default::default(),
            },
        );
        let line = serde_json::to_vec(&Entry::new(1, &[0; 32], &custom)).unwrap();
        assert!(!is_checkpoint_line(&line));
        let checkpoint = Record::new(
            Text::new("svc").unwrap(),
            Event::Checkpoint {
                key: Text::new("k").unwrap(),
                signature: Text::new("AAAA").unwrap(),
            },
        );
        let line = serde_json::to_vec(&Entry::new(1, &[0; 32], &checkpoint)).unwrap();
        assert!(is_checkpoint_line(&line));
    }
}
