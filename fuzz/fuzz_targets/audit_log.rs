//! Parses and verifies arbitrary audit log bytes and checkpoint text, and
//! opens a log directory holding them (crash recovery reads whatever a
//! writer of the directory left there).
//!
//! Input: a 2-byte little-endian length `n`, `n` bytes of checkpoint text,
//! then the bytes of one segment. Nothing may panic; a checkpoint that parses
//! must print back to the same text; verification must report a problem or
//! a chain whose record count matches the lines that parse as entries; a
//! log that opens (after recovery) must then verify.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use atrest_audit::record::Entry;
use atrest_audit::{
    AuditLog, Checkpoint, LogConfig, SigningKey, VerifyingKey, verify, verify_segments,
};
use libfuzzer_sys::fuzz_target;

const LOG_ID: &str = "0123456789abcdef0123456789abcdef";

fn pkcs8() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate("fuzz").unwrap().1.to_vec())
}

fn signer() -> SigningKey {
    SigningKey::from_pkcs8("fuzz", pkcs8()).unwrap()
}

fn key() -> &'static VerifyingKey {
    static KEY: OnceLock<VerifyingKey> = OnceLock::new();
    KEY.get_or_init(|| signer().verifying_key())
}

/// Opens a log directory whose only segment holds `segment`.
fn open_as_log(segment: &[u8]) {
    let dir = std::env::temp_dir().join(format!("atrest-fuzz-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("LOG"),
        format!("{{\"format\":\"atrest-audit\",\"version\":2,\"log_id\":\"{LOG_ID}\"}}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("00000001.log"), segment).unwrap();
    if let Ok((log, _)) = AuditLog::open(&dir, signer(), LogConfig::default()) {
        drop(log);
        let report = verify(&dir, &[], key()).unwrap();
        assert!(report.is_ok(), "{:?}", report.problem);
    }
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
    open_as_log(segment);
});
