//! Crash safety: a torn write at every byte offset of the last record
//! recovers to the previous record, damage elsewhere is refused rather than
//! repaired, and a process killed with SIGKILL while appending loses no
//! record that `append` had reported durable.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use atrest_audit::{AuditLog, Error, LogConfig, SigningKey, verify};
use atrest_test_support::TempDir;
use common::{record, segment_file};

#[test]
fn a_torn_final_write_at_any_offset_recovers_to_the_previous_record() {
    let dir = TempDir::new("torn");
    {
        let log = AuditLog::create(dir.path(), LogConfig::default()).unwrap();
        for i in 0..5 {
            log.append(&record(i)).unwrap();
        }
    }
    let path = segment_file(dir.path());
    let full = std::fs::read(&path).unwrap();
    let last_start = full[..full.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    for cut in last_start..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let (log, recovery) = AuditLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(recovery.records, 4, "cut at {cut}");
        assert_eq!(recovery.torn_bytes_removed, (cut - last_start) as u64);
        // The chain continues from the last complete record.
        let receipt = log.append(&record(100)).unwrap();
        assert_eq!(receipt.seq, 4);
        let (signer, _) = SigningKey::generate("s").unwrap();
        let checkpoint = log.checkpoint(&signer).unwrap();
        let report = verify(dir.path(), &[checkpoint], &signer.verifying_key()).unwrap();
        assert!(
            report.is_ok() && report.records == 5,
            "cut at {cut}: {:?}",
            report.problem
        );
    }
}

#[test]
fn a_zero_filled_tail_is_cut_but_damage_in_the_middle_is_refused() {
    let dir = TempDir::new("damage");
    {
        let log = AuditLog::create(dir.path(), LogConfig::default()).unwrap();
        for i in 0..5 {
            log.append(&record(i)).unwrap();
        }
    }
    let path = segment_file(dir.path());
    let full = std::fs::read(&path).unwrap();

    // Blocks of zeros after the last record (the file grew but the data never
    // reached the disk): cut.
    let mut zeros = full.clone();
    zeros.extend([0u8; 4096]);
    std::fs::write(&path, &zeros).unwrap();
    let (_, recovery) = AuditLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!((recovery.records, recovery.torn_bytes_removed), (5, 4096));

    // A broken record followed by valid ones is evidence, not a torn write.
    let mut damaged = full.clone();
    let second = full.iter().position(|&b| b == b'\n').unwrap() + 10;
    damaged[second] = b'#';
    std::fs::write(&path, &damaged).unwrap();
    assert!(matches!(
        AuditLog::open(dir.path(), LogConfig::default()),
        Err(Error::Corrupt { line: 2, .. })
    ));
}

#[test]
fn segments_roll_over_and_the_chain_spans_them() {
    let dir = TempDir::new("segments");
    let config = LogConfig {
        max_segment_bytes: 2000,
        ..LogConfig::default()
    };
    let (signer, _) = SigningKey::generate("s").unwrap();
    {
        let log = AuditLog::create(dir.path(), config.clone()).unwrap();
        for i in 0..40 {
            log.append(&record(i)).unwrap();
        }
    }
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .ends_with(".log")
        })
        .count();
    assert!(segments >= 4, "{segments} segments");
    let (log, recovery) = AuditLog::open(dir.path(), config).unwrap();
    assert_eq!(recovery.records, 40);
    log.append(&record(40)).unwrap();
    let checkpoint = log.checkpoint(&signer).unwrap();
    let report = verify(dir.path(), &[checkpoint], &signer.verifying_key()).unwrap();
    assert!(
        report.is_ok() && report.records == 41,
        "{:?}",
        report.problem
    );
    assert_eq!(atrest_audit::read_entries(dir.path()).unwrap().len(), 41);

    // A missing middle segment is reported.
    std::fs::remove_file(dir.path().join("00000002.log")).unwrap();
    assert!(verify(dir.path(), &[], &signer.verifying_key()).is_err());
}

const CHILD_ENV: &str = "ATREST_AUDIT_CRASH_CHILD_DIR";

/// Runs only inside the child process started by the SIGKILL test: appends
/// from four threads forever, printing each sequence number once `append`
/// has returned it as durable.
#[test]
fn sigkill_child_appender() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let log = AuditLog::create(&dir, LogConfig::default()).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let log = &log;
            scope.spawn(move || {
                for i in 0.. {
                    let receipt = log.append(&record(t * 1_000_000 + i)).unwrap();
                    println!("durable {}", receipt.seq);
                }
            });
        }
    });
}

#[test]
fn records_reported_durable_survive_sigkill() {
    for round in 0..3 {
        let dir = TempDir::new("sigkill");
        let log_dir = dir.path().join("log");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "sigkill_child_appender",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &log_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut durable = Vec::new();
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(seq) = line.strip_prefix("durable ") {
                durable.push(seq.parse::<u64>().unwrap());
            }
            if durable.len() >= 500 + round * 700 {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let (_, recovery) = AuditLog::open(&log_dir, LogConfig::default()).unwrap();
        let max = *durable.iter().max().unwrap();
        assert!(
            recovery.records > max,
            "round {round}: record {max} was reported durable but only {} survived",
            recovery.records
        );
        let report = verify(
            &log_dir,
            &[],
            &SigningKey::generate("s").unwrap().0.verifying_key(),
        )
        .unwrap();
        assert!(report.is_ok(), "{:?}", report.problem);
    }
}
