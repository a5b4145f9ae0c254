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
use atrest_stream::format::{Extent, Layout};
use atrest_stream::{Backend, Opener, Options, Parallelism, Sealer};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn stream(c: &mut Criterion) {
    let key = FileKey::from_secret_bytes(&[7; 32]);
    for len in [64usize << 10, 1 << 20, 16 << 20] {
        let plaintext = vec![0x5au8; len];
        let mut work = plaintext.clone();
        let mut out = vec![
            0u8;
            Layout::new(Options::default().segment_size)
                .for_plaintext(len as u64)
                .map(Extent::stream_len)
                .unwrap() as usize
        ];
        let mut back = vec![0u8; len];
        let mut group = c.benchmark_group(format!("stream/{}KiB", len >> 10));
        group.throughput(Throughput::Bytes(len as u64));
        for &backend in Backend::ALL {
            let options = Options::default().backend(backend);
            group.bench_function(BenchmarkId::new("baseline-one-shot", backend), |b| {
                b.iter(|| one_shot_aes_256_gcm(backend, &mut work))
            });
            group.bench_function(BenchmarkId::new("encrypt", backend), |b| {
                b.iter(|| {
                    Sealer::new(&key, b"ad", options.parallelism(Parallelism::threads(1)))
                        .seal_into(&plaintext, &mut out)
                        .unwrap()
                });
            });
            let n = Sealer::new(&key, b"ad", options.parallelism(Parallelism::threads(1)))
                .seal_into(&plaintext, &mut out)
                .unwrap();
            group.bench_function(BenchmarkId::new("decrypt", backend), |b| {
                b.iter(|| {
                    Opener::new(
                        &key,
                        b"ad",
                        Options::default()
                            .backend(backend)
                            .parallelism(Parallelism::threads(1)),
                    )
                    .open_into(&out[..n], &mut back)
                    .unwrap()
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, stream);
criterion_main!(benches);
