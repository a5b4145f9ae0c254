//! Audit log rates: durable, signed appends with group commit (by number of
//! concurrent appenders in one process, from 8 processes at once, and in
//! batches from one thread), verification, and what one batch costs: its
//! Ed25519 signature next to its `fdatasync`.
//! `cargo bench -p atrest-benches --bench audit`
//!
//! The log lives in the system temp directory (set `TMPDIR` to measure
//! another file system); every append is `fdatasync`ed and signed before it
//! returns.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::indexing_slicing
)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atrest_audit::{
    AuditLog, Checkpoint, Event, FileRef, KeyRef, LogConfig, Record, SigningKey, Text,
    verify_segments,
};
use atrest_test_support::TempDir;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};

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

/// The bench's signing key, the same in the child processes.
fn signer() -> SigningKey {
    static PKCS8: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let pkcs8 = match std::env::var_os(CHILD_KEY) {
        Some(path) => std::fs::read(path).unwrap(),
        None => PKCS8
            .get_or_init(|| SigningKey::generate("bench").unwrap().1.to_vec())
            .clone(),
    };
    SigningKey::from_pkcs8("bench", &pkcs8).unwrap()
}

const CHILD_DIR: &str = "ATREST_BENCH_AUDIT_CHILD_DIR";
const CHILD_KEY: &str = "ATREST_BENCH_AUDIT_CHILD_KEY";
const CHILD_APPENDS: usize = 500;

/// In a child process: open the log, say "ready", wait for a line on stdin,
/// append `CHILD_APPENDS` records one by one, exit.
fn child(dir: &std::ffi::OsStr) {
    let (log, _) = AuditLog::open(dir, signer(), LogConfig::default()).unwrap();
    println!("ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    for i in 0..CHILD_APPENDS {
        log.append(&record(i as u64)).unwrap();
    }
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit/append_durable");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let records: Vec<Record> = (0..100_000).map(record).collect();
    let cases = [(1usize, 0u64), (8, 0), (64, 0), (256, 0), (256, 200)];
    for (threads, delay_us) in cases {
        let per_thread = if threads == 1 { 400 } else { 20_000 / threads };
        group.throughput(Throughput::Elements((threads * per_thread) as u64));
        let tmp = TempDir::new(&format!("bench-append-{threads}-{delay_us}"));
        let dir = tmp.join("log");
        let config = LogConfig {
            max_batch_delay: Duration::from_micros(delay_us),
            ..LogConfig::default()
        };
        let log = AuditLog::create(&dir, signer(), config).unwrap();
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
    let log = AuditLog::create(&dir, signer(), LogConfig::default()).unwrap();
    group.bench_function("batches_of_1000", |b| {
        b.iter(|| {
            for chunk in records[..20_000].chunks(1000) {
                log.append_all(chunk).unwrap();
            }
        });
    });
    drop(log);

    // Eight processes, each appending single records: batches form across
    // processes only through the directory's lock.
    const PROCESSES: usize = 8;
    group.throughput(Throughput::Elements((PROCESSES * CHILD_APPENDS) as u64));
    let tmp = TempDir::new("bench-append-processes");
    let dir = tmp.join("log");
    let key_file = tmp.join("signer.pk8");
    let (key, pkcs8) = SigningKey::generate("bench").unwrap();
    std::fs::write(&key_file, &pkcs8[..]).unwrap();
    drop(AuditLog::create(&dir, key, LogConfig::default()).unwrap());
    group.bench_function("processes/8", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let mut children: Vec<_> = (0..PROCESSES)
                    .map(|_| {
                        Command::new(std::env::current_exe().unwrap())
                            .env(CHILD_DIR, &dir)
                            .env(CHILD_KEY, &key_file)
                            .stdin(Stdio::piped())
                            .stdout(Stdio::piped())
                            .spawn()
                            .unwrap()
                    })
                    .collect();
                for child in &mut children {
                    let mut ready = String::new();
                    BufReader::new(child.stdout.as_mut().unwrap())
                        .read_line(&mut ready)
                        .unwrap();
                    assert_eq!(ready.trim(), "ready");
                }
                let start = Instant::now();
                for child in &mut children {
                    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
                }
                for mut child in children {
                    assert!(child.wait().unwrap().success());
                }
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
}

/// What one commit batch pays besides encoding: the checkpoint's Ed25519
/// signature, and the `fdatasync` of a small append on the log's file
/// system.
fn batch_costs(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit/batch_cost");
    let key = signer();
    group.bench_function("ed25519_checkpoint_signature", |b| {
        b.iter(|| Checkpoint::signed(&key, "atrest-audit/00", 1000, [7; 32], None).unwrap());
    });
    let tmp = TempDir::new("bench-fdatasync");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(tmp.join("sync"))
        .unwrap();
    group.sample_size(20);
    group.bench_function("fdatasync_of_one_line", |b| {
        b.iter(|| {
            file.write_all(&[b'x'; 300]).unwrap();
            file.sync_data().unwrap();
        });
    });
    group.finish();
}

fn verification(c: &mut Criterion) {
    const RECORDS: u64 = 200_000;
    let tmp = TempDir::new("bench-verify");
    let dir = tmp.join("log");
    let log = AuditLog::create(
        &dir,
        signer(),
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
    let checkpoint = log.latest_checkpoint().unwrap();
    let key = signer().verifying_key();
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

criterion_group!(benches, append, batch_costs, verification);

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        child(&dir);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
