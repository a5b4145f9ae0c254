//! Stream throughput by size, backend and direction, with one-shot
//! AES-256-GCM of the same backend in the same group as the baseline.
//! `cargo bench -p atrest-benches --bench stream`

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::panic,
    clippy::indexing_slicing
)]

use atrest_benches::one_shot_aes_256_gcm;
use atrest_filekey::FileKey;
use atrest_stream::{Backend, Options, decrypt_to, encrypt_to, stream_len};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn stream(c: &mut Criterion) {
    let key = FileKey::from_secret_bytes(&[7; 32]);
    for len in [64usize << 10, 1 << 20, 16 << 20] {
        let plaintext = vec![0x5au8; len];
        let mut work = plaintext.clone();
        let mut out =
            vec![0u8; stream_len(len as u64, Options::default().segment_size).unwrap() as usize];
        let mut back = vec![0u8; len];
        let mut group = c.benchmark_group(format!("stream/{}KiB", len >> 10));
        group.throughput(Throughput::Bytes(len as u64));
        for &backend in Backend::ALL {
            let options = Options::default().backend(backend);
            group.bench_function(BenchmarkId::new("baseline-one-shot", backend), |b| {
                b.iter(|| one_shot_aes_256_gcm(backend, &mut work))
            });
            group.bench_function(BenchmarkId::new("encrypt", backend), |b| {
                b.iter(|| encrypt_to(&key, b"ad", &plaintext, options, 1, &mut out).unwrap());
            });
            let n = encrypt_to(&key, b"ad", &plaintext, options, 1, &mut out).unwrap();
            group.bench_function(BenchmarkId::new("decrypt", backend), |b| {
                b.iter(|| decrypt_to(&key, b"ad", &out[..n], backend, 1, &mut back).unwrap());
            });
        }
        group.finish();
    }
}

criterion_group!(benches, stream);
criterion_main!(benches);
