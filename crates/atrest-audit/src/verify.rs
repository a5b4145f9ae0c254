//! Verifying a log against its checkpoints, and reading it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::chain::{self, ChainState};
use crate::checkpoint::{Checkpoint, VerifyingKey, genesis_hash};
use crate::log::{read_meta, segments};
use crate::record::Entry;

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
    /// A checkpoint is not signed by the verifying key.
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
            Self::BadSignature { size } => write!(
                f,
                "the checkpoint at size {size} is not signed by the verifying key"
            ),
            Self::WrongLog { origin } => write!(f, "a checkpoint is for another log ({origin})"),
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
    /// Records whose chain verified (up to the first problem).
    pub records: u64,
    /// The chain head after them.
    pub head: [u8; 32],
    /// Checkpoints whose signature and head verified.
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

/// Verifies the log in `dir` against `checkpoints` signed by `key`.
///
/// Checks that every record chains to the one before it (sequence numbers
/// consecutive from 0, each `prev` the SHA-256 of the previous line), that
/// every checkpoint is signed by `key` and is for this log, that the log is
/// at least as long as every checkpoint, and that the chain's head after each
/// checkpoint's size equals the checkpoint's head. Reports the first problem.
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
    let log_id = read_meta(dir)?;
    let paths = segments(dir)?;
    let mut contents = Vec::with_capacity(paths.len());
    for path in &paths {
        contents.push((
            path.clone(),
            fs::read(path).map_err(|e| Error::io(path, e))?,
        ));
    }
    Ok(verify_segments(
        &log_id,
        contents.iter().map(|(p, b)| (p.as_path(), b.as_slice())),
        checkpoints,
        key,
    ))
}

/// [`verify`] over segments held in memory, in order.
pub fn verify_segments<'a>(
    log_id: &str,
    segments: impl IntoIterator<Item = (&'a Path, &'a [u8])>,
    checkpoints: &[Checkpoint],
    key: &VerifyingKey,
) -> Report {
    let origin = format!("atrest-audit/{log_id}");
    let mut report = Report {
        records: 0,
        head: genesis_hash(log_id),
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
    for (path, bytes) in segments {
        let broken = chain::walk(bytes, &mut state, |state, _| {
            check(state, &mut mismatch, &mut met)
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
    read_meta(dir)?;
    let mut entries = Vec::new();
    for path in segments(dir)? {
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let entry: Entry = serde_json::from_slice(line).map_err(|e| Error::Corrupt {
                path: path.clone(),
                line: index as u64 + 1,
                reason: e.to_string(),
            })?;
            entries.push(entry);
        }
    }
    Ok(entries)
}
