//! Tampering with the log: every single-byte change, every deletion, swap and
//! insertion of records, truncation behind a checkpoint, and a consistent
//! rewrite are all detected; wrong keys and foreign checkpoints are refused.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;

use atrest_audit::{AuditLog, Checkpoint, LogConfig, Problem, SigningKey, verify, verify_segments};
use atrest_test_support::TempDir;
use common::{record, segment_file};

struct Fixture {
    _dir: TempDir,
    log_id: String,
    bytes: Vec<u8>,
    checkpoints: Vec<Checkpoint>,
    signer: SigningKey,
}

/// 24 records, with checkpoints after 10 and after 24.
fn fixture() -> Fixture {
    let dir = TempDir::new("tamper");
    let log = AuditLog::create(dir.path(), LogConfig::default()).unwrap();
    let (signer, _) = SigningKey::generate("test-signer").unwrap();
    let mut checkpoints = Vec::new();
    for i in 0..24 {
        log.append(&record(i)).unwrap();
        if i == 9 || i == 23 {
            checkpoints.push(log.checkpoint(&signer).unwrap());
        }
    }
    let report = verify(dir.path(), &checkpoints, &signer.verifying_key()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    assert_eq!((report.records, report.checkpoints_verified), (24, 2));
    let bytes = std::fs::read(segment_file(dir.path())).unwrap();
    Fixture {
        log_id: log.log_id().to_owned(),
        bytes,
        checkpoints,
        signer,
        _dir: dir,
    }
}

impl Fixture {
    fn check(&self, bytes: &[u8]) -> Option<Problem> {
        verify_segments(
            &self.log_id,
            [(Path::new("segment"), bytes)],
            &self.checkpoints,
            &self.signer.verifying_key(),
        )
        .problem
    }

    fn lines(&self) -> Vec<&[u8]> {
        self.bytes.split_inclusive(|&b| b == b'\n').collect()
    }
}

#[test]
fn every_single_byte_change_is_detected() {
    let f = fixture();
    for position in 0..f.bytes.len() {
        for replacement in [f.bytes[position] ^ 0x01, b' ', b'0'] {
            if replacement == f.bytes[position] {
                continue;
            }
            let mut tampered = f.bytes.clone();
            tampered[position] = replacement;
            assert!(
                f.check(&tampered).is_some(),
                "byte {position} changed to {replacement:#x} went unnoticed"
            );
        }
    }
}

#[test]
fn every_deletion_swap_and_insertion_is_detected() {
    let f = fixture();
    let lines = f.lines();
    for i in 0..lines.len() {
        let mut deleted = lines.clone();
        deleted.remove(i);
        assert!(f.check(&deleted.concat()).is_some(), "deleting record {i}");

        if i + 1 < lines.len() {
            let mut swapped = lines.clone();
            swapped.swap(i, i + 1);
            assert!(
                f.check(&swapped.concat()).is_some(),
                "swapping records {i} and {}",
                i + 1
            );
        }
        for duplicate in [0, i, lines.len() - 1] {
            let mut inserted = lines.clone();
            inserted.insert(i, lines[duplicate]);
            assert!(
                f.check(&inserted.concat()).is_some(),
                "inserting a copy of {duplicate} at {i}"
            );
        }
    }
}

#[test]
fn truncation_behind_a_checkpoint_is_detected() {
    let f = fixture();
    let lines = f.lines();
    for keep in 0..lines.len() {
        let cut = lines[..keep].concat();
        match f.check(&cut) {
            Some(Problem::TruncatedBehindCheckpoint { log_size, .. }) => {
                assert_eq!(log_size, keep as u64)
            }
            other => panic!("keeping {keep} records: {other:?}"),
        }
    }
    // Without the checkpoints, a cut log is still a valid chain: this is
    // exactly why checkpoints must be kept elsewhere.
    let report = verify_segments(
        &f.log_id,
        [(Path::new("s"), &lines[..5].concat()[..])],
        &[],
        &f.signer.verifying_key(),
    );
    assert!(report.is_ok());
}

#[test]
fn a_consistently_rewritten_log_fails_against_the_checkpoint() {
    let f = fixture();
    // Someone with write access rebuilds a whole valid chain with one record
    // changed, under the same log id (but cannot sign for it).
    let other = TempDir::new("rewrite");
    let log = AuditLog::create(other.path(), LogConfig::default()).unwrap();
    for i in 0..24 {
        log.append(&record(if i == 3 { 999 } else { i })).unwrap();
    }
    let forged_id = log.log_id().to_owned();
    let forged = std::fs::read(segment_file(other.path())).unwrap();
    // Re-chained under the original id's genesis it would need every hash
    // recomputed; either way the checkpoints do not match.
    let problem = verify_segments(
        &forged_id,
        [(Path::new("s"), &forged[..])],
        &f.checkpoints,
        &f.signer.verifying_key(),
    )
    .problem;
    assert!(
        matches!(problem, Some(Problem::WrongLog { .. })),
        "{problem:?}"
    );
    let problem = f.check(&forged);
    assert!(problem.is_some());
}

#[test]
fn checkpoints_need_the_right_key_and_log() {
    let f = fixture();
    let (other_signer, _) = SigningKey::generate("test-signer").unwrap();
    let report = verify_segments(
        &f.log_id,
        [(Path::new("s"), &f.bytes[..])],
        &f.checkpoints,
        &other_signer.verifying_key(),
    );
    assert!(matches!(report.problem, Some(Problem::BadSignature { .. })));

    // A checkpoint with a forged head, signed by the right key, still fails.
    let forged = f
        .signer
        .sign(&f.checkpoints[1].origin, 24, [7; 32])
        .unwrap();
    let report = verify_segments(
        &f.log_id,
        [(Path::new("s"), &f.bytes[..])],
        &[forged],
        &f.signer.verifying_key(),
    );
    assert!(
        matches!(report.problem, Some(Problem::HeadMismatch { size: 24 })),
        "{:?}",
        report.problem
    );

    // Tampering with the checkpoint text breaks its signature.
    let text = f.checkpoints[1].to_text().replace("\n24\n", "\n23\n");
    let altered = Checkpoint::parse(&text).unwrap();
    let report = verify_segments(
        &f.log_id,
        [(Path::new("s"), &f.bytes[..])],
        &[altered],
        &f.signer.verifying_key(),
    );
    assert!(matches!(
        report.problem,
        Some(Problem::BadSignature { size: 23 })
    ));
}

#[test]
fn checkpoint_text_round_trips_and_is_strict() {
    let f = fixture();
    let text = f.checkpoints[1].to_text();
    assert_eq!(Checkpoint::parse(&text).unwrap(), f.checkpoints[1]);
    assert!(text.starts_with(&format!("atrest-audit/{}\n24\n", f.log_id)));
    for bad in [
        text.replace("\n24\n", "\n024\n"),
        text.replace("\n24\n", "\n+24\n"),
        text.replace("\n\n", "\n"),
        text.replace('\u{2014}', "-"),
        text.trim_end().to_owned(),
        format!("{text}extra"),
        String::new(),
    ] {
        assert!(Checkpoint::parse(&bad).is_err(), "{bad:?}");
    }
    let key = f.signer.verifying_key();
    assert_eq!(
        atrest_audit::VerifyingKey::parse(&key.to_string()).unwrap(),
        key
    );
    // Keys whose base64 contains '+' parse too.
    for _ in 0..32 {
        let key = SigningKey::generate("k").unwrap().0.verifying_key();
        assert_eq!(
            atrest_audit::VerifyingKey::parse(&key.to_string()).unwrap(),
            key
        );
    }
    assert!(
        atrest_audit::VerifyingKey::parse(&key.to_string().replace("test-signer", "other"))
            .is_err()
    );
}
