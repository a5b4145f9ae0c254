//! Audit log rates: durable appends with group commit (by number of
//! concurrent appenders, and in batches from one thread), and verification.
//! `cargo bench -p atrest-benches --bench audit`
//!
//! The log lives in the system temp directory (set `TMPDIR` to measure
//! another file system); every append is `fdatasync`ed before it returns.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::time::{Duration, Instant};

use atrest_audit::{
    AuditLog, Event, FileRef, KeyRef, LogConfig, Record, SigningKey, Text, verify_segments,
};
use atrest_test_support::TempDir;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn record(i: u64) -> Record {
    Record::new(
        Text::new("svc:upload").unwrap(),
        Event::FileKeyReleased {
            file: FileRef {
                file: Text::new(format!("7c9e6679-7425-40de-944b-{i:012x}")).unwrap(),
                version: 1,
            },
            kek: KeyRef {
                key: Text::new("0f8fad5b-d9cb-469f-a165-70867728950e").unwrap(),
                version: Some(3),
            },
            principal: Text::new("alice@contoso.example").unwrap(),
        },
    )
    .tenant(Text::new("0f8fad5b-d9cb-469f-a165-70867728950e").unwrap())
    .request(Text::new(format!("req-{i}")).unwrap())
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit/append_durable");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let records: Vec<Record> = (0..100_000).map(record).collect();
    let cases = [
        (1usize, 0u64),
        (16, 0),
        (64, 0),
        (256, 0),
        (64, 200),
        (256, 200),
        (256, 1000),
    ];
    for (threads, delay_us) in cases {
        let per_thread = if threads == 1 { 400 } else { 20_000 / threads };
        group.throughput(Throughput::Elements((threads * per_thread) as u64));
        let tmp = TempDir::new(&format!("bench-append-{threads}-{delay_us}"));
        let dir = tmp.join("log");
        let config = LogConfig {
            max_batch_delay: Duration::from_micros(delay_us),
            ..LogConfig::default()
        };
        let log = AuditLog::create(&dir, config).unwrap();
        let id = format!("{threads}/delay_{delay_us}us");
        group.bench_function(BenchmarkId::new("threads", id), |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let start = Instant::now();
                    std::thread::scope(|scope| {
                        for t in 0..threads {
                            let (log, records) = (&log, &records);
                            scope.spawn(move || {
                                for i in 0..per_thread {
                                    log.append(&records[(t * per_thread + i) % records.len()])
                                        .unwrap();
                                }
                            });
                        }
                    });
                    total += start.elapsed();
                }
                total
            });
        });
        drop(log);
    }
    // One thread committing batches of 1,000 (a service that buffers).
    group.throughput(Throughput::Elements(20_000));
    let tmp = TempDir::new("bench-append-batch");
    let dir = tmp.join("log");
    let log = AuditLog::create(&dir, LogConfig::default()).unwrap();
    group.bench_function("batches_of_1000", |b| {
        b.iter(|| {
            for chunk in records[..20_000].chunks(1000) {
                log.append_all(chunk).unwrap();
            }
        });
    });
    drop(log);
    group.finish();
}

fn verification(c: &mut Criterion) {
    const RECORDS: u64 = 200_000;
    let tmp = TempDir::new("bench-verify");
    let dir = tmp.join("log");
    let log = AuditLog::create(
        &dir,
        LogConfig {
            max_segment_bytes: u64::MAX,
            ..LogConfig::default()
        },
    )
    .unwrap();
    let records: Vec<Record> = (0..RECORDS).map(record).collect();
    for chunk in records.chunks(10_000) {
        log.append_all(chunk).unwrap();
    }
    let (signer, _) = SigningKey::generate("bench").unwrap();
    let checkpoint = log.checkpoint(&signer).unwrap();
    let key = signer.verifying_key();
    let segment = std::fs::read(dir.join("00000001.log")).unwrap();
    let log_id = log.log_id().to_owned();

    let mut group = c.benchmark_group("audit/verify");
    group.throughput(Throughput::Elements(RECORDS));
    group.sample_size(10);
    group.bench_function("in_memory", |b| {
        b.iter(|| {
            let report = verify_segments(
                &log_id,
                [(Path::new("segment"), &segment[..])],
                std::slice::from_ref(&checkpoint),
                &key,
            );
            assert!(report.is_ok());
        });
    });
    group.bench_function("from_disk", |b| {
        b.iter(|| {
            assert!(
                atrest_audit::verify(&dir, std::slice::from_ref(&checkpoint), &key)
                    .unwrap()
                    .is_ok()
            )
        });
    });
    group.finish();
    drop(log);
}

criterion_group!(benches, append, verification);
criterion_main!(benches);
