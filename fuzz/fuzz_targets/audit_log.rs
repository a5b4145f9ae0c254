//! Parses and verifies arbitrary audit log bytes and checkpoint text.
//!
//! Input: a 2-byte little-endian length `n`, `n` bytes of checkpoint text,
//! then the bytes of one segment. Nothing may panic; a checkpoint that parses
//! must print back to the same text; verification must report a problem or
//! a chain whose record count matches the lines that parse as entries.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use atrest_audit::record::Entry;
use atrest_audit::{Checkpoint, SigningKey, VerifyingKey, verify_segments};
use libfuzzer_sys::fuzz_target;

const LOG_ID: &str = "0123456789abcdef0123456789abcdef";

fn key() -> &'static VerifyingKey {
    static KEY: OnceLock<VerifyingKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate("fuzz").unwrap().0.verifying_key())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (len, rest) = data.split_at(2);
    let len = usize::from(u16::from_le_bytes([len[0], len[1]])).min(rest.len());
    let (checkpoint_bytes, segment) = rest.split_at(len);

    let mut checkpoints = Vec::new();
    if let Ok(text) = std::str::from_utf8(checkpoint_bytes) {
        if let Ok(checkpoint) = Checkpoint::parse(text) {
            assert_eq!(checkpoint.to_text(), text);
            checkpoints.push(checkpoint);
        }
    }

    let report = verify_segments(
        LOG_ID,
        [(Path::new("segment"), segment)],
        &checkpoints,
        key(),
    );
    if report.is_ok() {
        let lines = segment
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64;
        assert_eq!(report.records, lines);
    }
    for line in segment.split(|&b| b == b'\n') {
        if let Ok(entry) = serde_json::from_slice::<Entry>(line) {
            // A parsed entry re-encodes without panicking.
            let _ = serde_json::to_vec(&entry).unwrap();
        }
    }
});
