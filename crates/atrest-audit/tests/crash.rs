//! Crash safety: a batch torn at any byte is cut, saved and recorded, and
//! never an acknowledged one; a signed batch missing only its final newline
//! keeps every record; damage elsewhere is refused rather than repaired; and
//! eight processes appending at once, some killed with SIGKILL, lose no
//! acknowledged record and write none twice.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use atrest_audit::{AuditLog, Error, Event, LogConfig, read_entries, verify};
use atrest_test_support::TempDir;
use common::{caller_entries, load_signer, record, save_signer, segment_file, signer};

/// A log whose last batch is three records and a checkpoint line; returns
/// the segment's bytes and where that batch starts.
fn log_with_a_final_batch(dir: &std::path::Path) -> (Vec<u8>, usize) {
    let log = AuditLog::create(dir, signer(), LogConfig::default()).unwrap();
    for i in 0..3 {
        log.append(&record(i)).unwrap();
    }
    let start = std::fs::read(segment_file(dir)).unwrap().len();
    log.append_all(&[record(10), record(11), record(12)])
        .unwrap();
    (std::fs::read(segment_file(dir)).unwrap(), start)
}

#[test]
fn a_batch_torn_at_any_byte_is_cut_saved_and_recorded() {
    let dir = TempDir::new("torn");
    let (full, batch_start) = log_with_a_final_batch(dir.path());
    let lines_before = full[..batch_start].iter().filter(|&&b| b == b'\n').count() as u64;
    let path = segment_file(dir.path());
    // Every cut inside the batch but its very last byte (the final newline:
    // see the next test).
    for cut in (batch_start + 1..full.len() - 1).step_by(7) {
        let _ = std::fs::remove_dir_all(dir.path().join("recovered"));
        std::fs::write(&path, &full[..cut]).unwrap();
        let (log, recovery) = AuditLog::open(dir.path(), signer(), LogConfig::default()).unwrap();
        assert_eq!(recovery.records, lines_before, "cut at {cut}");
        assert_eq!(recovery.cut_bytes, (cut - batch_start) as u64);
        assert!(!recovery.newline_restored);
        // The cut bytes are kept, not destroyed.
        let saved = recovery.saved_as.clone().unwrap();
        assert_eq!(std::fs::read(&saved).unwrap(), &full[batch_start..cut]);
        // The log says so itself, and the chain continues after it.
        let receipt = log.append(&record(100)).unwrap();
        let entries = read_entries(dir.path()).unwrap();
        let recovered = entries
            .iter()
            .find_map(|e| match &e.event {
                Event::LogRecovered { cut_bytes, .. } => Some((e.seq, *cut_bytes)),
                _ => None,
            })
            .unwrap();
        assert_eq!(recovered, (lines_before, (cut - batch_start) as u64));
        assert_eq!(receipt.seq, lines_before + 2);
        let report = verify(dir.path(), &[], &signer().verifying_key()).unwrap();
        assert!(report.is_ok(), "cut at {cut}: {:?}", report.problem);
    }
}

#[test]
fn a_signed_batch_missing_its_final_newline_keeps_every_record() {
    let dir = TempDir::new("newline");
    let (full, _) = log_with_a_final_batch(dir.path());
    let path = segment_file(dir.path());
    std::fs::write(&path, &full[..full.len() - 1]).unwrap();
    // Verification (which changes nothing) reports it.
    let report = verify(dir.path(), &[], &signer().verifying_key()).unwrap();
    assert!(report.problem.is_some());
    // Opening restores the newline, cuts nothing and records the repair.
    let (log, recovery) = AuditLog::open(dir.path(), signer(), LogConfig::default()).unwrap();
    assert!(recovery.newline_restored);
    assert_eq!(recovery.cut_bytes, 0);
    drop(log);
    let entries = caller_entries(dir.path());
    assert_eq!(entries.len(), 6, "an acknowledged record was cut");
    assert!(read_entries(dir.path()).unwrap().iter().any(|e| matches!(
        e.event,
        Event::LogRecovered {
            newline_restored: true,
            cut_bytes: 0,
            ..
        }
    )));
    let report = verify(dir.path(), &[], &signer().verifying_key()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
}

#[test]
fn a_zero_filled_tail_is_cut_but_damage_in_the_middle_is_refused() {
    let dir = TempDir::new("damage");
    let (full, _) = log_with_a_final_batch(dir.path());
    let lines = full.iter().filter(|&&b| b == b'\n').count() as u64;
    let path = segment_file(dir.path());

    // Blocks of zeros after the last batch (the file grew but the data never
    // reached the disk): cut.
    let mut zeros = full.clone();
    zeros.extend([0u8; 4096]);
    std::fs::write(&path, &zeros).unwrap();
    let (_, recovery) = AuditLog::open(dir.path(), signer(), LogConfig::default()).unwrap();
    assert_eq!((recovery.records, recovery.cut_bytes), (lines, 4096));

    // A broken record followed by valid ones is evidence, not a torn write.
    let mut damaged = full.clone();
    let second = full.iter().position(|&b| b == b'\n').unwrap() + 10;
    damaged[second] = b'#';
    std::fs::write(&path, &damaged).unwrap();
    assert!(matches!(
        AuditLog::open(dir.path(), signer(), LogConfig::default()),
        Err(Error::Corrupt { line: 2, .. })
    ));

    // An edited last record under a valid-looking checkpoint line: refused,
    // never signed over by a new batch.
    let mut edited = full.clone();
    let at = full.len() - 400;
    edited[at] ^= 1;
    std::fs::write(&path, &edited).unwrap();
    assert!(matches!(
        AuditLog::open(dir.path(), signer(), LogConfig::default()),
        Err(Error::Corrupt { .. })
    ));

    // Opening with another signing key than the log's: refused.
    std::fs::write(&path, &full).unwrap();
    let other = atrest_audit::SigningKey::generate("test-signer").unwrap().0;
    let refused = AuditLog::open(dir.path(), other, LogConfig::default());
    assert!(matches!(refused, Err(Error::Corrupt { .. })), "{refused:?}");
}

#[test]
fn segments_roll_over_and_the_chain_spans_them() {
    let dir = TempDir::new("segments");
    let config = LogConfig {
        max_segment_bytes: 2000,
        ..LogConfig::default()
    };
    {
        let log = AuditLog::create(dir.path(), signer(), config.clone()).unwrap();
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
    let (log, recovery) = AuditLog::open(dir.path(), signer(), config).unwrap();
    assert_eq!(recovery.records, 81);
    log.append(&record(40)).unwrap();
    let report = verify(dir.path(), &[], &signer().verifying_key()).unwrap();
    assert!(
        report.is_ok() && report.records == 83,
        "{:?}",
        report.problem
    );
    assert_eq!(caller_entries(dir.path()).len(), 41);

    // A missing middle segment is reported.
    std::fs::remove_file(dir.path().join("00000002.log")).unwrap();
    assert!(verify(dir.path(), &[], &signer().verifying_key()).is_err());
}

const CHILD_ENV: &str = "ATREST_AUDIT_CRASH_CHILD_DIR";

/// Runs only inside the child processes started by the SIGKILL test:
/// appends from two threads until killed, printing each record's request id
/// once `append` has returned (acknowledged). Every tenth append is a batch
/// of three.
#[test]
fn sigkill_child_appender() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let name = std::env::var("ATREST_AUDIT_CHILD_NAME").unwrap();
    let signer = load_signer(&dir.join("signer.pk8"));
    let config = LogConfig {
        max_segment_bytes: 256 << 10,
        ..LogConfig::default()
    };
    let (log, _) = AuditLog::open(dir.join("log"), signer, config).unwrap();
    std::thread::scope(|scope| {
        for t in 0..2u64 {
            let (log, name) = (&log, &name);
            scope.spawn(move || {
                for i in 0u64.. {
                    let ids: Vec<String> = (0..if i % 10 == 9 { 3 } else { 1 })
                        .map(|j| format!("{name}-{t}-{i}-{j}"))
                        .collect();
                    let batch: Vec<_> = ids
                        .iter()
                        .map(|id| record(i).request(common::text(id)))
                        .collect();
                    log.append_all(&batch).unwrap();
                    for id in ids {
                        println!("acked {id}");
                    }
                }
            });
        }
    });
}

#[test]
fn eight_processes_with_sigkills_lose_no_acknowledged_record() {
    let dir = TempDir::new("processes");
    let key = save_signer(&dir.path().join("signer.pk8"));
    drop(AuditLog::create(dir.path().join("log"), key, LogConfig::default()).unwrap());
    let (acks, received) = mpsc::channel::<String>();
    let spawn = |name: String| {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "sigkill_child_appender",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("ATREST_AUDIT_CHILD_NAME", &name)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let acks = acks.clone();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if let Some(id) = line.strip_prefix("acked ") {
                    let _ = acks.send(id.to_owned());
                }
            }
        });
        child
    };
    let mut children: Vec<_> = (0..8).map(|p| spawn(format!("p{p}"))).collect();
    let mut acknowledged = Vec::new();
    let wait_for = |count: usize, acknowledged: &mut Vec<String>| {
        while acknowledged.len() < count {
            acknowledged.push(
                received
                    .recv_timeout(Duration::from_secs(60))
                    .expect("the writers stopped acknowledging"),
            );
        }
    };
    // Kill the processes one by one while the others keep appending (each
    // kill may leave a torn batch that the next writer must recover), and
    // start a replacement for every second one.
    let mut next = 8;
    for round in 0..8usize {
        wait_for(400 * (round + 1), &mut acknowledged);
        let mut victim = children.remove(0);
        victim.kill().unwrap(); // SIGKILL
        victim.wait().unwrap();
        if round % 2 == 0 {
            children.push(spawn(format!("p{next}")));
            next += 1;
        }
    }
    for mut child in children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // Whatever the pipes still held was acknowledged too.
    while let Ok(id) = received.recv_timeout(Duration::from_millis(500)) {
        acknowledged.push(id);
    }

    let log_dir = dir.path().join("log");
    let (_, _recovery) = AuditLog::open(
        &log_dir,
        load_signer(&dir.path().join("signer.pk8")),
        LogConfig::default(),
    )
    .unwrap();
    let report = verify(
        &log_dir,
        &[],
        &load_signer(&dir.path().join("signer.pk8")).verifying_key(),
    )
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    let mut present: HashMap<String, usize> = HashMap::new();
    for entry in caller_entries(&log_dir) {
        *present
            .entry(entry.request.unwrap().as_str().to_owned())
            .or_default() += 1;
    }
    assert!(
        present.values().all(|&n| n == 1),
        "a record was written twice"
    );
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !present.contains_key(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records are missing, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        lost.first()
    );
}
