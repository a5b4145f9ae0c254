//! Walking the hash chain through segment bytes: shared by crash recovery,
//! verification and reading.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::record::SCHEMA_VERSION;

/// The chain fields of a line; everything else is skipped, not parsed.
#[derive(Deserialize)]
struct Link<'a> {
    v: u32,
    seq: u64,
    #[serde(borrow)]
    prev: &'a str,
}

/// Where the chain stands after the lines read so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChainState {
    /// The sequence number the next line must have.
    pub(crate) next_seq: u64,
    /// SHA-256 of the last line (the genesis hash before the first).
    pub(crate) head: [u8; 32],
}

/// Why a line does not continue the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LinkError {
    /// The segment ends inside a line (no final newline).
    Torn,
    /// The line is not a record.
    Unparseable(String),
    /// The line has another schema version.
    Version(u32),
    /// The line has the wrong sequence number.
    Sequence { expected: u64, found: u64 },
    /// The line's `prev` is not the hash of the line before it.
    Prev,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Torn => f.write_str("the segment ends inside a record (torn write)"),
            Self::Unparseable(e) => write!(f, "not a record: {e}"),
            Self::Version(v) => write!(f, "schema version {v} is not supported"),
            Self::Sequence { expected, found } => {
                write!(
                    f,
                    "sequence number {found} where {expected} was expected (record deleted, inserted or reordered)"
                )
            }
            Self::Prev => f.write_str(
                "does not chain to the previous record (record or predecessor modified)",
            ),
        }
    }
}

/// A line that broke the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Break {
    /// Line number within the segment, from 1.
    pub(crate) line: u64,
    /// Byte offset of the line's start.
    pub(crate) offset: usize,
    pub(crate) error: LinkError,
}

pub(crate) fn hash_line(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

/// Checks one line (without its newline) against the chain and advances it.
pub(crate) fn link(state: &mut ChainState, line: &[u8]) -> Result<(), LinkError> {
    let link: Link<'_> =
        serde_json::from_slice(line).map_err(|e| LinkError::Unparseable(e.to_string()))?;
    if link.v != SCHEMA_VERSION {
        return Err(LinkError::Version(link.v));
    }
    if link.seq != state.next_seq {
        return Err(LinkError::Sequence {
            expected: state.next_seq,
            found: link.seq,
        });
    }
    let mut prev = [0u8; 32];
    if hex::decode_to_slice(link.prev, &mut prev).is_err()
        || prev != state.head
        || link.prev.bytes().any(|b| b.is_ascii_uppercase())
    {
        return Err(LinkError::Prev);
    }
    state.head = hash_line(line);
    state.next_seq += 1;
    Ok(())
}

/// Walks every line of a segment; `on_line` sees each line that links, with
/// the chain state after it. Returns the first break, if any.
pub(crate) fn walk(
    segment: &[u8],
    state: &mut ChainState,
    mut on_line: impl FnMut(&ChainState, &[u8]),
) -> Option<Break> {
    let mut offset = 0usize;
    let mut number = 0u64;
    while offset < segment.len() {
        number += 1;
        let rest = segment.get(offset..).unwrap_or_default();
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Some(Break {
                line: number,
                offset,
                error: LinkError::Torn,
            });
        };
        let line = rest.get(..end).unwrap_or_default();
        if let Err(error) = link(state, line) {
            return Some(Break {
                line: number,
                offset,
                error,
            });
        }
        on_line(state, line);
        offset += end + 1;
    }
    None
}

/// Whether any complete line after `offset` looks like a record: used to
/// tell a torn final write (nothing after it) from damage in the middle.
pub(crate) fn record_follows(segment: &[u8], offset: usize) -> bool {
    let rest = segment.get(offset..).unwrap_or_default();
    let mut lines = rest.split(|&b| b == b'\n');
    let _broken = lines.next();
    let complete: Vec<&[u8]> = lines.collect();
    // The piece after the last newline is not a complete line.
    let complete = complete
        .split_last()
        .map(|(_, init)| init)
        .unwrap_or_default();
    complete
        .iter()
        .any(|line| serde_json::from_slice::<Link<'_>>(line).is_ok())
}
