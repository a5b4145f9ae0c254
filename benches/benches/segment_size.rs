//! Streaming throughput by segment size, with one-shot AES-256-GCM of the same
//! buffer (ring) in the same group as the baseline. Used to choose the
//! default segment size: `cargo bench -p atrest-benches --bench segment_size`

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::hint::black_box;
use std::io::Read;

use atrest_filekey::FileKey;
use atrest_stream::{Opener, Options, Sealer, SegmentSize};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

const LEN: usize = 64 << 20;

fn segment_size(c: &mut Criterion) {
    let key = FileKey::from_secret_bytes(&[7; 32]);
    let plaintext = vec![0x5au8; LEN];
    let mut group = c.benchmark_group("segment_size");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.sample_size(10);

    let baseline = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).unwrap());
    let mut buffer = plaintext.clone();
    group.bench_function("baseline/one-shot-aes-256-gcm", |b| {
        b.iter(|| {
            baseline
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([0; 12]),
                    Aad::empty(),
                    &mut buffer,
                )
                .unwrap()
        });
    });

    for kib in [16u32, 64, 256, 1024, 4096] {
        let size = SegmentSize::new(kib << 10).unwrap();
        group.bench_with_input(
            BenchmarkId::new("encrypt", format!("{kib}KiB")),
            &size,
            |b, &size| {
                b.iter(|| {
                    Sealer::new(&key, b"ad", Options::from(size))
                        .seal(black_box(&plaintext))
                        .unwrap()
                });
            },
        );
        let stream = Sealer::new(&key, b"ad", Options::from(size))
            .seal(&plaintext)
            .unwrap();
        let mut out = vec![0u8; LEN];
        group.bench_with_input(
            BenchmarkId::new("decrypt", format!("{kib}KiB")),
            &stream,
            |b, stream| {
                b.iter(|| {
                    let mut decryptor = Opener::new(&key, b"ad", Options::default())
                        .reader(&stream[..])
                        .unwrap();
                    decryptor.read_exact(&mut out).unwrap();
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, segment_size);
criterion_main!(benches);
