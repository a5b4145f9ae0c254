//! Walking the hash chain through segment bytes: shared by crash recovery,
//! verification and reading.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::record::{OLDEST_SCHEMA_VERSION, SCHEMA_VERSION};

/// The chain fields of a line; everything else is skipped, not parsed.
#[derive(Deserialize)]
#[allow(dead_code)] // parsed for error messages and to recognise records
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

/// Reads the chain fields from the canonical start of a line,
/// `{"v":<n>,"seq":<n>,"prev":"<64 lowercase hex>",`, without parsing the
/// rest (the hash covers every byte of it anyway).
fn canonical_link(line: &[u8]) -> Option<(u32, u64, [u8; 32])> {
    fn number(rest: &[u8]) -> Option<(u64, &[u8])> {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let (text, rest) = rest.split_at(digits);
        // Canonical decimal: no leading zeros, at most 20 digits.
        if digits == 0 || digits > 20 || (digits > 1 && text.first() == Some(&b'0')) {
            return None;
        }
        let value = std::str::from_utf8(text).ok()?.parse().ok()?;
        Some((value, rest))
    }
    let rest = line.strip_prefix(br#"{"v":"#)?;
    let (v, rest) = number(rest)?;
    let rest = rest.strip_prefix(br#","seq":"#)?;
    let (seq, rest) = number(rest)?;
    let rest = rest.strip_prefix(br#","prev":""#)?;
    let (hex_digits, rest) = rest.split_at_checked(64)?;
    rest.strip_prefix(br#"","#)?;
    if hex_digits.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    let mut prev = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut prev).ok()?;
    Some((u32::try_from(v).ok()?, seq, prev))
}

/// Checks one line (without its newline) against the chain and advances it.
pub(crate) fn link(state: &mut ChainState, line: &[u8]) -> Result<(), LinkError> {
    let Some((v, seq, prev)) = canonical_link(line) else {
        // Say why, as precisely as the JSON parser can.
        return Err(LinkError::Unparseable(
            match serde_json::from_slice::<Link<'_>>(line) {
                Err(e) => e.to_string(),
                Ok(_) => "the record is not in canonical form".to_owned(),
            },
        ));
    };
    if !(OLDEST_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&v) {
        return Err(LinkError::Version(v));
    }
    if seq != state.next_seq {
        return Err(LinkError::Sequence {
            expected: state.next_seq,
            found: seq,
        });
    }
    if prev != state.head {
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
        let Some(end) = memchr::memchr(b'\n', rest) else {
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
