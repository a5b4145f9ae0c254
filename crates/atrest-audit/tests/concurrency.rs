//! Appends from many threads: the chain verifies, nothing is lost or doubled,
//! and each thread's records keep their order.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashSet;

use atrest_audit::{AuditLog, Error, Event, LogConfig, verify};
use atrest_test_support::TempDir;
use common::{caller_entries, record, signer};

#[test]
fn many_threads_append_without_loss_or_duplication() {
    let dir = TempDir::new("threads");
    let log = AuditLog::create(
        dir.path(),
        signer(),
        LogConfig {
            max_segment_bytes: 64 << 10,
            ..LogConfig::default()
        },
    )
    .unwrap();
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 300;
    let seqs: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = &log;
                scope.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| log.append(&record(t * 1000 + i)).unwrap().seq)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: HashSet<u64> = seqs.iter().flatten().copied().collect();
    assert_eq!(
        all.len() as u64,
        THREADS * PER_THREAD,
        "a sequence number was given twice"
    );
    for thread in &seqs {
        assert!(
            thread.windows(2).all(|w| w[0] < w[1]),
            "a thread's records were reordered"
        );
    }

    let checkpoint = log.latest_checkpoint().unwrap();
    let report = verify(dir.path(), &[checkpoint], &signer().verifying_key()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    assert_eq!(report.signed, Some(report.records - 1));

    // Every record is there exactly once, readable.
    let entries = caller_entries(dir.path());
    assert_eq!(entries.len() as u64, THREADS * PER_THREAD);
    let requests: HashSet<String> = entries
        .iter()
        .map(|e| e.request.as_ref().unwrap().as_str().to_owned())
        .collect();
    assert_eq!(requests.len() as u64, THREADS * PER_THREAD);
    assert!(
        entries
            .iter()
            .any(|e| matches!(e.event, Event::DataMove { .. }))
    );
}

#[test]
fn append_all_commits_a_batch_in_order() {
    let dir = TempDir::new("batch");
    let log = AuditLog::create(dir.path(), signer(), LogConfig::default()).unwrap();
    let batch: Vec<_> = (0..100).map(record).collect();
    let receipt = log.append_all(&batch).unwrap();
    // Line 0 is the log's first checkpoint; the batch ends with another.
    assert_eq!(receipt.seq, 100);
    assert_eq!(log.head().0, 102);
    assert_eq!(log.latest_checkpoint().unwrap().size, 101);
    let entries = caller_entries(dir.path());
    for (i, entry) in entries.into_iter().enumerate() {
        assert_eq!(entry.seq, i as u64 + 1);
        assert_eq!(entry.into_record(), batch[i]);
    }
}

#[test]
fn two_logs_on_one_directory_interleave_whole_batches() {
    // Two writers in one process behave as two processes do: each takes the
    // directory's lock, reads the other's batches, continues the chain.
    let dir = TempDir::new("two-writers");
    let first = AuditLog::create(dir.path(), signer(), LogConfig::default()).unwrap();
    let (second, _) = AuditLog::open(dir.path(), signer(), LogConfig::default()).unwrap();
    std::thread::scope(|scope| {
        for (w, log) in [&first, &second].into_iter().enumerate() {
            scope.spawn(move || {
                for i in 0..200u64 {
                    if i % 10 == 0 {
                        let batch: Vec<_> = (0..5)
                            .map(|j| record(w as u64 * 10_000 + i * 10 + j))
                            .collect();
                        log.append_all(&batch).unwrap();
                    } else {
                        log.append(&record(w as u64 * 10_000 + i * 10)).unwrap();
                    }
                }
            });
        }
    });
    let report = verify(dir.path(), &[], &signer().verifying_key()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    let entries = caller_entries(dir.path());
    assert_eq!(entries.len(), 2 * (180 + 20 * 5));
    let requests: HashSet<String> = entries
        .iter()
        .map(|e| e.request.as_ref().unwrap().as_str().to_owned())
        .collect();
    assert_eq!(requests.len(), entries.len(), "a record was written twice");
}

#[test]
fn a_writer_that_cannot_get_the_lock_fails_in_time_and_writes_nothing() {
    let dir = TempDir::new("busy");
    let log = AuditLog::create(
        dir.path(),
        signer(),
        LogConfig {
            lock_timeout: std::time::Duration::from_millis(200),
            ..LogConfig::default()
        },
    )
    .unwrap();
    let before = std::fs::read(dir.path().join("00000001.log")).unwrap();
    // Another holder of the lock (as another process would hold it).
    let holder = std::fs::File::open(dir.path().join("LOCK")).unwrap();
    holder.lock().unwrap();
    let started = std::time::Instant::now();
    let error = log.append(&record(1)).unwrap_err();
    assert!(matches!(error, Error::Busy { .. }), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        std::fs::read(dir.path().join("00000001.log")).unwrap(),
        before
    );
    holder.unlock().unwrap();
    // Not poisoned: the next append goes through.
    log.append(&record(2)).unwrap();
    let report = verify(dir.path(), &[], &signer().verifying_key()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
}

#[test]
fn the_log_and_its_witness_are_their_owners_only() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = TempDir::new("modes");
    let witness_dir = dir.path().join("witness");
    let log_dir = dir.path().join("log");
    let config = LogConfig {
        witness: Some(std::sync::Arc::new(atrest_audit::DirectoryWitness::new(
            &witness_dir,
        ))),
        ..LogConfig::default()
    };
    let log = AuditLog::create(&log_dir, signer(), config).unwrap();
    log.append(&record(1)).unwrap();
    for directory in [&log_dir, &witness_dir] {
        let mode = std::fs::metadata(directory).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", directory.display());
        for entry in std::fs::read_dir(directory).unwrap() {
            let path = entry.unwrap().path();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }
}
