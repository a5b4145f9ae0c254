//! Verifying a log against its checkpoints, and reading it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use std::time::Duration;

use crate::Error;
use crate::chain::{self, ChainState};
use crate::checkpoint::{Checkpoint, VerifyingKey, genesis_hash};
use crate::fs::{origin_of, read_meta, segments};
use crate::line::{checkpoint_of_line, is_checkpoint_line};
use crate::record::Entry;

/// How long a reader waits for writers to finish their batch.
const READ_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The first thing verification found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A record is missing, inserted, reordered, modified or unreadable.
    BadRecord {
        /// The segment file (or `segment N` for in-memory segments).
        segment: PathBuf,
        /// The line, from 1.
        line: u64,
        /// The sequence number the record should have.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The log does not end with a checkpoint line: its last `lines` lines
    /// are signed by nothing (the end of the log was cut off, or a batch was
    /// torn by a crash and the log not reopened since).
    Unsealed {
        /// Lines after the last checkpoint line (all of them if none).
        lines: u64,
    },
    /// A checkpoint (the log's last checkpoint line, or one given to
    /// [`verify`]) is not signed by the verifying key.
    BadSignature {
        /// The checkpoint's size.
        size: u64,
    },
    /// A checkpoint is for another log.
    WrongLog {
        /// The checkpoint's origin.
        origin: String,
    },
    /// The log has fewer records than a checkpoint vouches for: its tail was
    /// cut off.
    TruncatedBehindCheckpoint {
        /// Records the checkpoint vouches for.
        checkpoint_size: u64,
        /// Records in the log.
        log_size: u64,
    },
    /// The witness holds no checkpoint of this log: the log is not the one
    /// the witness has seen (replaced by another), or was never witnessed.
    NotWitnessed {
        /// The witness.
        witness: String,
    },
    /// The log's hash after `size` records differs from the checkpoint's: the
    /// log was rewritten.
    HeadMismatch {
        /// The checkpoint's size.
        size: u64,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadRecord {
                segment,
                line,
                seq,
                reason,
            } => {
                write!(
                    f,
                    "{} line {line} (record {seq}): {reason}",
                    segment.display()
                )
            }
            Self::Unsealed { lines } => write!(
                f,
                "the last {lines} lines are not followed by a signed checkpoint: the log was cut or a write torn"
            ),
            Self::BadSignature { size } => write!(
                f,
                "the checkpoint at size {size} is not signed by the verifying key"
            ),
            Self::WrongLog { origin } => write!(f, "a checkpoint is for another log ({origin})"),
            Self::NotWitnessed { witness } => write!(
                f,
                "the witness {witness} holds no checkpoint of this log: it was replaced, or never witnessed"
            ),
            Self::TruncatedBehindCheckpoint {
                checkpoint_size,
                log_size,
            } => write!(
                f,
                "the log has {log_size} records but a checkpoint vouches for {checkpoint_size}: records were removed from its end"
            ),
            Self::HeadMismatch { size } => {
                write!(
                    f,
                    "the first {size} records do not match the checkpoint: the log was rewritten"
                )
            }
        }
    }
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Lines whose chain verified (up to the first problem), checkpoint
    /// lines included.
    pub records: u64,
    /// The chain head after them.
    pub head: [u8; 32],
    /// The size of the log's last checkpoint line, if its signature
    /// verified: every line before it is signed.
    pub signed: Option<u64>,
    /// Checkpoints given to [`verify`] (from a witness) whose signature and
    /// head verified.
    pub checkpoints_verified: usize,
    /// The first problem found, if any.
    pub problem: Option<Problem>,
}

impl Report {
    /// Whether the log and every checkpoint verified.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Verifies the log in `dir` with the verifying key `key`, and against
/// `checkpoints` (fetched from a witness; may be empty).
///
/// Checks that every line chains to the one before it (sequence numbers
/// consecutive from 0, each `prev` the SHA-256 of the previous line), that
/// the log ends with a checkpoint line whose signature verifies under `key`
/// (so every line is signed), that every given checkpoint is signed by `key`
/// and is for this log, that the log is at least as long as every given
/// checkpoint, and that the chain's head after each one's size equals its
/// head. Reports the first problem. Pass the key and the checkpoints from a
/// source the log's writers cannot change: then rewriting the log, and
/// replacing the key stored beside it, is detected too.
///
/// Takes the log's lock shared while reading, so a batch being written is
/// never seen half-done.
///
/// # Errors
/// Only for a directory that is not a log or cannot be read; damage is
/// reported in [`Report::problem`].
pub fn verify(
    dir: impl AsRef<Path>,
    checkpoints: &[Checkpoint],
    key: &VerifyingKey,
) -> Result<Report, Error> {
    let dir = dir.as_ref();
    let (log_id, contents) = read_log(dir)?;
    Ok(verify_segments(
        &log_id,
        contents.iter().map(|(p, b)| (p.as_path(), b.as_slice())),
        checkpoints,
        key,
    ))
}

/// [`verify`] against the newest checkpoint of `witness`, which must hold
/// one for this log ([`Problem::NotWitnessed`] otherwise). Returns the
/// report and that checkpoint.
///
/// # Errors
/// As for [`verify`]; [`Error::Witness`] if the witness cannot be read.
pub fn verify_witnessed(
    dir: impl AsRef<Path>,
    key: &VerifyingKey,
    witness: &dyn crate::Witness,
) -> Result<(Report, Option<Checkpoint>), Error> {
    let dir = dir.as_ref();
    let latest = witness.latest(&crate::read_origin(dir)?)?;
    let mut report = verify(dir, latest.as_slice(), key)?;
    if latest.is_none() && report.problem.is_none() {
        report.problem = Some(Problem::NotWitnessed {
            witness: witness.describe(),
        });
    }
    Ok((report, latest))
}

/// [`verify`] over segments held in memory, in order.
pub fn verify_segments<'a>(
    log_id: &str,
    segments: impl IntoIterator<Item = (&'a Path, &'a [u8])>,
    checkpoints: &[Checkpoint],
    key: &VerifyingKey,
) -> Report {
    let origin = origin_of(log_id);
    let mut report = Report {
        records: 0,
        head: genesis_hash(log_id),
        signed: None,
        checkpoints_verified: 0,
        problem: None,
    };
    // Checkpoint heads to meet on the way, by size.
    let mut expected: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
    for checkpoint in checkpoints {
        if checkpoint.origin != origin {
            report.problem = Some(Problem::WrongLog {
                origin: checkpoint.origin.clone(),
            });
            return report;
        }
        if checkpoint.verify(key).is_err() {
            report.problem = Some(Problem::BadSignature {
                size: checkpoint.size,
            });
            return report;
        }
        if expected
            .insert(checkpoint.size, checkpoint.head)
            .is_some_and(|other| other != checkpoint.head)
        {
            report.problem = Some(Problem::HeadMismatch {
                size: checkpoint.size,
            });
            return report;
        }
    }
    let mut state = ChainState {
        next_seq: 0,
        head: report.head,
    };
    let mut mismatch = None;
    let mut met = 0usize;
    let check = |state: &ChainState, mismatch: &mut Option<u64>, met: &mut usize| {
        if let Some(head) = expected.get(&state.next_seq) {
            if *head == state.head {
                *met += 1;
            } else if mismatch.is_none() {
                *mismatch = Some(state.next_seq);
            }
        }
    };
    check(&state, &mut mismatch, &mut met);
    // The last checkpoint line and the number of lines after it.
    let mut last_checkpoint: Option<Vec<u8>> = None;
    let mut unsigned = 0u64;
    for (path, bytes) in segments {
        let broken = chain::walk(bytes, &mut state, |state, line| {
            check(state, &mut mismatch, &mut met);
            if is_checkpoint_line(line) {
                unsigned = 0;
                match &mut last_checkpoint {
                    Some(kept) => {
                        kept.clear();
                        kept.extend_from_slice(line);
                    }
                    None => last_checkpoint = Some(line.to_vec()),
                }
            } else {
                unsigned += 1;
            }
        });
        if let Some(size) = mismatch {
            report.problem = Some(Problem::HeadMismatch { size });
            break;
        }
        if let Some(broken) = broken {
            report.problem = Some(Problem::BadRecord {
                segment: path.to_path_buf(),
                line: broken.line,
                seq: state.next_seq,
                reason: broken.error.to_string(),
            });
            break;
        }
    }
    report.records = state.next_seq;
    report.head = state.head;
    report.checkpoints_verified = met;
    if report.problem.is_none() {
        match &last_checkpoint {
            Some(_) if unsigned > 0 => {
                report.problem = Some(Problem::Unsealed { lines: unsigned });
            }
            None => {
                report.problem = Some(Problem::Unsealed { lines: unsigned });
            }
            Some(line) => match checkpoint_of_line(&origin, line) {
                Ok(checkpoint) if checkpoint.verify(key).is_ok() => {
                    report.signed = Some(checkpoint.size);
                }
                Ok(checkpoint) => {
                    report.problem = Some(Problem::BadSignature {
                        size: checkpoint.size,
                    });
                }
                Err(reason) => {
                    report.problem = Some(Problem::BadRecord {
                        segment: PathBuf::from("(last checkpoint line)"),
                        line: 0,
                        seq: state.next_seq.saturating_sub(1),
                        reason,
                    });
                }
            },
        }
    }
    if report.problem.is_none()
        && let Some((&size, _)) = expected.range(state.next_seq + 1..).next()
    {
        report.problem = Some(Problem::TruncatedBehindCheckpoint {
            checkpoint_size: size,
            log_size: state.next_seq,
        });
    }
    report
}

/// Reads every record of the log in `dir`, in order, fully parsed (for
/// display). Does not verify the chain: use [`verify`] for that.
///
/// # Errors
/// [`Error::Corrupt`] for a line that is not a record; [`Error::Io`].
pub fn read_entries(dir: impl AsRef<Path>) -> Result<Vec<Entry>, Error> {
    let dir = dir.as_ref();
    let (_, contents) = read_log(dir)?;
    let mut entries = Vec::new();
    for (path, bytes) in contents {
        for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let corrupt = |reason: String| Error::Corrupt {
                path: path.clone(),
                line: index as u64 + 1,
                reason,
            };
            let entry: Entry = serde_json::from_slice(line).map_err(|e| corrupt(e.to_string()))?;
            if entry.v != entry.schema_version() {
                return Err(corrupt(format!(
                    "a line of schema version {} holds what version {} defines",
                    entry.v,
                    entry.schema_version()
                )));
            }
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// A segment file and its bytes.
type Segment = (PathBuf, Vec<u8>);

/// The log id and every segment's bytes, read under the log's lock taken
/// shared (without it if the log has no lock file, as in a copy).
fn read_log(dir: &Path) -> Result<(String, Vec<Segment>), Error> {
    let log_id = read_meta(dir)?;
    let lock_path = dir.join("LOCK");
    let lock = match fs::File::open(&lock_path) {
        Ok(lock) => Some(lock),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&lock_path, e)),
    };
    let _guard = lock
        .as_ref()
        .map(|lock| crate::fs::take_lock(lock, &lock_path, true, READ_LOCK_TIMEOUT))
        .transpose()?;
    let paths = segments(dir)?;
    let mut contents = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        contents.push((path, bytes));
    }
    Ok((log_id, contents))
}
