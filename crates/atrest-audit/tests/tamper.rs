//! Tampering with the log: every single-byte change, every deletion, swap and
//! insertion of lines, the last ones included, truncation behind a witnessed
//! checkpoint, and a consistent rewrite — even one signed with the log's own
//! key, replaced key and all — are detected; wrong keys and foreign
//! checkpoints are refused.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;

use std::sync::Arc;

use atrest_audit::{
    AuditLog, Checkpoint, DirectoryWitness, Error, LogConfig, Problem, SigningKey, Witness, verify,
    verify_segments,
};
use atrest_test_support::TempDir;
use common::{record, segment_file, signer};

struct Fixture {
    _dir: TempDir,
    log_id: String,
    bytes: Vec<u8>,
    checkpoints: Vec<Checkpoint>,
    signer: SigningKey,
}

/// 24 records appended one by one (49 lines: each record followed by its
/// batch's checkpoint line), with witnessed checkpoints after the 10th and
/// the 24th record.
fn fixture() -> Fixture {
    let dir = TempDir::new("tamper");
    let signer = signer();
    let log = AuditLog::create(dir.path(), common::signer(), LogConfig::default()).unwrap();
    let mut checkpoints = Vec::new();
    for i in 0..24 {
        log.append(&record(i)).unwrap();
        if i == 9 || i == 23 {
            checkpoints.push(log.latest_checkpoint().unwrap());
        }
    }
    let report = verify(dir.path(), &checkpoints, &signer.verifying_key()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    assert_eq!((report.records, report.checkpoints_verified), (49, 2));
    assert_eq!(report.signed, Some(48));
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

    /// Verification with the key only, no witnessed checkpoint.
    fn check_alone(&self, bytes: &[u8]) -> Option<Problem> {
        verify_segments(
            &self.log_id,
            [(Path::new("segment"), bytes)],
            &[],
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
                f.check_alone(&tampered).is_some(),
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
        assert!(f.check(&deleted.concat()).is_some(), "deleting line {i}");
        // Without any witnessed checkpoint too: the log's own signatures.
        assert!(
            f.check_alone(&deleted.concat()).is_some(),
            "deleting line {i}, no witness"
        );

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
fn truncation_is_detected_by_the_log_or_its_witness() {
    let f = fixture();
    let lines = f.lines();
    for keep in 0..lines.len() {
        let cut = lines[..keep].concat();
        match f.check(&cut) {
            Some(Problem::TruncatedBehindCheckpoint { log_size, .. }) => {
                assert_eq!(log_size, keep as u64);
                // Whole batches were removed: the log alone is still signed.
                assert!(f.check_alone(&cut).is_none(), "keeping {keep}");
            }
            // A batch was cut in two: its records are signed by nothing.
            Some(Problem::Unsealed { .. }) => assert!(keep % 2 == 0, "keeping {keep}"),
            other => panic!("keeping {keep} lines: {other:?}"),
        }
    }
    // Deleting the last record alone, or editing it, is detected without
    // any witness: its batch's signature no longer covers it.
    let n = lines.len();
    let without_last_record = [&lines[..n - 2], &lines[n - 1..]].concat().concat();
    assert!(f.check_alone(&without_last_record).is_some());
    let mut edited = lines[n - 2].to_vec();
    let at = edited.len() / 2;
    edited[at] ^= 0x01;
    let with_edited_last = [lines[..n - 2].concat(), edited, lines[n - 1].to_vec()].concat();
    assert!(f.check_alone(&with_edited_last).is_some());
    // Cutting the final newline is detected.
    assert!(f.check_alone(&f.bytes[..f.bytes.len() - 1]).is_some());
}

#[test]
fn a_consistently_rewritten_log_fails_against_the_checkpoint() {
    let f = fixture();
    // Someone with write access rebuilds a whole valid chain with one record
    // changed, under another log id.
    let other = TempDir::new("rewrite");
    let log = AuditLog::create(other.path(), signer(), LogConfig::default()).unwrap();
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
    // The log's own last checkpoint line too, without witnessed ones.
    let report = verify_segments(
        &f.log_id,
        [(Path::new("s"), &f.bytes[..])],
        &[],
        &other_signer.verifying_key(),
    );
    assert!(matches!(
        report.problem,
        Some(Problem::BadSignature { size: 48 })
    ));

    // A checkpoint with a forged head, signed by the right key, still fails.
    let forged = f
        .signer
        .sign(&f.checkpoints[1].origin, 48, [7; 32])
        .unwrap();
    let report = verify_segments(
        &f.log_id,
        [(Path::new("s"), &f.bytes[..])],
        &[forged],
        &f.signer.verifying_key(),
    );
    assert!(
        matches!(report.problem, Some(Problem::HeadMismatch { size: 48 })),
        "{:?}",
        report.problem
    );

    // Tampering with the checkpoint text breaks its signature.
    let text = f.checkpoints[1].to_text().replace("\n48\n", "\n47\n");
    let altered = Checkpoint::parse(&text).unwrap();
    let report = verify_segments(
        &f.log_id,
        [(Path::new("s"), &f.bytes[..])],
        &[altered],
        &f.signer.verifying_key(),
    );
    assert!(matches!(
        report.problem,
        Some(Problem::BadSignature { size: 47 })
    ));
}

#[test]
fn checkpoint_text_round_trips_and_is_strict() {
    let f = fixture();
    let text = f.checkpoints[1].to_text();
    assert_eq!(Checkpoint::parse(&text).unwrap(), f.checkpoints[1]);
    assert!(text.starts_with(&format!("atrest-audit/{}\n48\n", f.log_id)));
    let time = f.checkpoints[1].time.unwrap().to_string();
    assert!(text.contains(&format!("\ntime {time}\n\n")));
    for bad in [
        text.replace("\n48\n", "\n048\n"),
        text.replace("\n48\n", "\n+48\n"),
        text.replace(&time, &time.replace('Z', "+00:00")),
        text.replace("\ntime ", "\nTime "),
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

#[test]
fn a_rewrite_with_the_logs_own_key_is_caught_by_the_witness() {
    // The attacker holds the signing key (it sits in the data directory) and
    // rewrites the log under the same log id: one record changed, everything
    // re-chained and re-signed, a record appended so it is even longer.
    let dir = TempDir::new("witnessed");
    let witness_dir = TempDir::new("witness");
    let witness: Arc<dyn Witness> = Arc::new(DirectoryWitness::new(witness_dir.path()));
    let config = LogConfig {
        witness: Some(witness.clone()),
        ..LogConfig::default()
    };
    let log_dir = dir.path().join("log");
    let log = AuditLog::create(&log_dir, signer(), config.clone()).unwrap();
    for i in 0..10 {
        log.append(&record(i)).unwrap();
    }
    let origin = log.origin().to_owned();
    drop(log);
    let latest = witness.latest(&origin).unwrap().unwrap();
    assert_eq!(latest.size, 20);

    let forged = dir.path().join("forged");
    std::fs::create_dir_all(&forged).unwrap();
    std::fs::copy(log_dir.join("LOG"), forged.join("LOG")).unwrap();
    std::fs::write(forged.join("00000001.log"), b"").unwrap();
    let (rewriter, _) = AuditLog::open(&forged, signer(), LogConfig::default()).unwrap();
    for i in 0..11 {
        rewriter
            .append(&record(if i == 3 { 999 } else { i }))
            .unwrap();
    }
    drop(rewriter);
    std::fs::remove_dir_all(&log_dir).unwrap();
    std::fs::rename(&forged, &log_dir).unwrap();

    // The log alone verifies: it is consistently signed with the key.
    let alone = verify(&log_dir, &[], &signer().verifying_key()).unwrap();
    assert!(alone.is_ok(), "{:?}", alone.problem);
    // Against the witness it does not.
    let report = verify(
        &log_dir,
        std::slice::from_ref(&latest),
        &signer().verifying_key(),
    )
    .unwrap();
    assert!(
        matches!(report.problem, Some(Problem::HeadMismatch { size: 20 })),
        "{:?}",
        report.problem
    );
    // And a writer with the witness configured refuses to append to it.
    let refused = AuditLog::open(&log_dir, signer(), config.clone());
    assert!(matches!(refused, Err(Error::Corrupt { .. })), "{refused:?}");

    // Replacing the key too (a key of the attacker's, stored beside the
    // log): the operator's trusted key catches the signatures.
    let (attacker, _) = SigningKey::generate("test-signer").unwrap();
    let report = verify(&log_dir, &[], &attacker.verifying_key()).unwrap();
    assert!(matches!(report.problem, Some(Problem::BadSignature { .. })));
}

#[test]
fn whole_batches_cut_from_the_end_are_caught_by_the_witness() {
    let dir = TempDir::new("cut-batches");
    let witness_dir = TempDir::new("witness");
    let config = LogConfig {
        witness: Some(Arc::new(DirectoryWitness::new(witness_dir.path()))),
        ..LogConfig::default()
    };
    let log = AuditLog::create(dir.path(), signer(), config.clone()).unwrap();
    for i in 0..5 {
        log.append(&record(i)).unwrap();
    }
    drop(log);
    let path = segment_file(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    // Remove the last record and its checkpoint line: still a signed log.
    std::fs::write(&path, lines[..lines.len() - 2].concat()).unwrap();
    assert!(
        verify(dir.path(), &[], &signer().verifying_key())
            .unwrap()
            .is_ok()
    );
    let witness = DirectoryWitness::new(witness_dir.path());
    let origin = format!(
        "atrest-audit/{}",
        serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(dir.path().join("LOG")).unwrap()
        )
        .unwrap()["log_id"]
            .as_str()
            .unwrap()
    );
    let latest = witness.latest(&origin).unwrap().unwrap();
    let report = verify(dir.path(), &[latest], &signer().verifying_key()).unwrap();
    assert!(
        matches!(
            report.problem,
            Some(Problem::TruncatedBehindCheckpoint { .. })
        ),
        "{:?}",
        report.problem
    );
    let refused = AuditLog::open(dir.path(), signer(), config);
    assert!(matches!(refused, Err(Error::Corrupt { .. })), "{refused:?}");
}

#[test]
fn a_witnessed_batch_made_to_look_torn_is_refused_not_cut() {
    let dir = TempDir::new("witnessed-torn");
    let witness_dir = TempDir::new("witness");
    let config = LogConfig {
        witness: Some(Arc::new(DirectoryWitness::new(witness_dir.path()))),
        ..LogConfig::default()
    };
    let log = AuditLog::create(dir.path(), signer(), config.clone()).unwrap();
    for i in 0..3 {
        log.append(&record(i)).unwrap();
    }
    drop(log);
    // Cut into the last (acknowledged, witnessed) checkpoint line, as a
    // crash in the middle of writing it would have.
    let path = segment_file(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let shortened = &bytes[..bytes.len() - 30];
    std::fs::write(&path, shortened).unwrap();
    let refused = AuditLog::open(dir.path(), signer(), config);
    assert!(matches!(refused, Err(Error::Corrupt { .. })), "{refused:?}");
    assert_eq!(std::fs::read(&path).unwrap(), shortened, "bytes were cut");
    assert!(!dir.path().join("recovered").exists());
}
