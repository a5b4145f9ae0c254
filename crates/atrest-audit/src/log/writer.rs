//! The writer of a log: opening and creating it, and the group commit that
//! turns the records of many appends into one signed, synced batch.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::recovery::Repair;
use super::{LOG_ACTOR, LogConfig, Receipt, Recovery};
use crate::Error;
use crate::chain::{self, ChainState};
use crate::checkpoint::{Checkpoint, Signer, VerifyingKey, genesis_hash};
use crate::fs::{
    FORMAT, FORMAT_VERSION, LOCK_FILE, META_FILE, Meta, io, open_lock, origin_of, private_dirs,
    private_file, read_meta, segment_path, sync_dir, take_lock,
};
use crate::line::write_line;
use crate::record::{Event, Record, Text};

/// The committing thread's view of the end of the log.
pub(super) struct Tail {
    pub(super) file: File,
    pub(super) index: u32,
    /// Bytes of the segment walked so far (every batch in them signed).
    pub(super) len: u64,
    pub(super) chain: ChainState,
    /// The newest checkpoint line walked or written.
    pub(super) checkpoint: Option<Checkpoint>,
    /// A head the chain must pass through (from the witness), checked while
    /// walking at open.
    pub(super) expect: Option<(u64, [u8; 32])>,
    /// When the witness last got a checkpoint.
    pub(super) published: Option<Instant>,
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

/// The writer of one log: what [`AuditLog`](super::AuditLog) handles share.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    log_id: String,
    pub(super) origin: String,
    config: LogConfig,
    signer: Box<dyn Signer>,
    pub(super) verifying_key: VerifyingKey,
    lock: File,
    state: Mutex<State>,
    committed: Condvar,
}

impl Writer {
    /// As [`AuditLog::create`](super::AuditLog::create).
    pub(super) fn create(
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

    /// As [`AuditLog::open`](super::AuditLog::open).
    pub(super) fn open(
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

    /// As [`AuditLog::log_id`](super::AuditLog::log_id).
    pub(super) fn log_id(&self) -> &str {
        &self.log_id
    }

    /// As [`AuditLog::origin`](super::AuditLog::origin).
    pub(super) fn origin(&self) -> &str {
        &self.origin
    }

    /// As [`AuditLog::dir`](super::AuditLog::dir).
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// As [`AuditLog::verifying_key`](super::AuditLog::verifying_key).
    pub(super) fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying_key
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated
        // (updates are single assignments), so a poisoned mutex is usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// As [`AuditLog::append_all`](super::AuditLog::append_all).
    pub(super) fn append_all(&self, records: &[Record]) -> Result<Receipt, Error> {
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

    /// As [`AuditLog::append_each`](super::AuditLog::append_each).
    pub(super) fn append_each(&self, records: &[Record]) -> Result<Vec<Receipt>, Error> {
        if records.iter().any(|record| {
            matches!(
                record.event,
                Event::Checkpoint { .. } | Event::LogRecovered { .. } | Event::LogRestarted { .. }
            )
        }) {
            return Err(Error::Reserved);
        }
        self.append_unchecked(records)
    }

    /// Appends a line only the log writes (not a checkpoint: every batch
    /// ends with one).
    pub(super) fn append_log_record(&self, record: &Record) -> Result<Receipt, Error> {
        let receipts = self.append_unchecked(std::slice::from_ref(record))?;
        receipts
            .last()
            .copied()
            .ok_or_else(|| Error::Poisoned("a batch gave no receipt".into()))
    }

    fn append_unchecked(&self, records: &[Record]) -> Result<Vec<Receipt>, Error> {
        // Encode outside the lock; only the chain fields depend on the order.
        let mut bodies = Vec::new();
        let mut ends = Vec::with_capacity(records.len());
        for record in records {
            serde_json::to_writer(&mut bodies, record)
                .map_err(|e| Error::Poisoned(format!("cannot encode a record: {e}")))?;
            ends.push((bodies.len(), record.schema_version()));
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
            push(batch, &mut chain, record.schema_version(), &body);
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
        push(batch, &mut chain, line.schema_version(), &body);

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
        if let Err(error) = tail.file.write_all(batch) {
            // Part of a batch no append acknowledged (the disk filled, say):
            // cut it off at once, which needs no room, so the log stays
            // whole for every reader and the next writer. Once cut, the log
            // is as it was before the batch, and the next batch may be
            // written (once there is room); if the cut fails too, what is
            // on disk is unknown and this log stops (the next writer's
            // recovery cuts it).
            let cut = tail
                .file
                .set_len(tail.len)
                .and_then(|()| tail.file.sync_data());
            return Err((Error::io(&path, error), cut.is_err()));
        }
        tail.file
            .sync_data()
            .map_err(|e| fatal(Error::io(&path, e)))?;
        tail.len += batch.len() as u64;
        tail.chain = chain;
        tail.checkpoint = Some(checkpoint);
        Ok(receipts)
    }

    /// As [`AuditLog::stopped`](super::AuditLog::stopped).
    pub(super) fn stopped(&self) -> Option<String> {
        self.lock_state().poisoned.clone()
    }

    /// As [`AuditLog::head`](super::AuditLog::head).
    pub(super) fn head(&self) -> (u64, [u8; 32]) {
        self.lock_state().head
    }

    /// As [`AuditLog::latest_checkpoint`](super::AuditLog::latest_checkpoint).
    pub(super) fn latest_checkpoint(&self) -> Option<Checkpoint> {
        self.lock_state().checkpoint.clone()
    }
}
