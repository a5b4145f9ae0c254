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

use atrest_audit::{AuditLog, Event, LogConfig, SigningKey, read_entries, verify};
use atrest_test_support::TempDir;
use common::record;

#[test]
fn many_threads_append_without_loss_or_duplication() {
    let dir = TempDir::new("threads");
    let log = AuditLog::create(
        dir.path(),
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
    assert_eq!(all.iter().max().copied(), Some(THREADS * PER_THREAD - 1));
    for thread in &seqs {
        assert!(
            thread.windows(2).all(|w| w[0] < w[1]),
            "a thread's records were reordered"
        );
    }

    let (signer, _) = SigningKey::generate("s").unwrap();
    let checkpoint = log.checkpoint(&signer).unwrap();
    let report = verify(dir.path(), &[checkpoint], &signer.verifying_key()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    assert_eq!(report.records, THREADS * PER_THREAD);

    // Every record is there exactly once, readable.
    let entries = read_entries(dir.path()).unwrap();
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
    let log = AuditLog::create(dir.path(), LogConfig::default()).unwrap();
    let batch: Vec<_> = (0..100).map(record).collect();
    let receipt = log.append_all(&batch).unwrap();
    assert_eq!(receipt.seq, 99);
    assert_eq!(log.head(), (100, receipt.hash));
    let entries = read_entries(dir.path()).unwrap();
    for (i, entry) in entries.into_iter().enumerate() {
        assert_eq!(entry.seq, i as u64);
        assert_eq!(entry.into_record(), batch[i]);
    }
}
