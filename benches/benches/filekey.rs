//! Per-file key rates with the operating system's generator: generation,
//! generate + wrap (one key at a time, and in a batch that draws the bytes
//! of 64 keys in one request, as a batch of files does), and unwrap.
//! `cargo bench -p atrest-benches --bench filekey`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use atrest_filekey::{
    FileContext, FileId, FileKey, FileVersion, Kek, KeyId, KeyVersion, OsRng, TenantId,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn filekey(c: &mut Criterion) {
    let mut rng = OsRng;
    let kek = Kek::generate(
        KeyId::random(&mut rng).unwrap(),
        KeyVersion::FIRST,
        &mut rng,
    )
    .unwrap();
    let context = FileContext::new(
        TenantId::random(&mut rng).unwrap(),
        FileId::random(&mut rng).unwrap(),
        FileVersion::FIRST,
    );

    let mut group = c.benchmark_group("filekey");
    group.throughput(Throughput::Elements(1));
    group.bench_function("generate", |b| {
        b.iter(|| FileKey::generate_with(&mut rng).unwrap());
    });
    group.bench_function("generate+wrap", |b| {
        b.iter(|| {
            let key = FileKey::generate_with(&mut rng).unwrap();
            kek.wrap(&key, black_box(&context), &mut rng).unwrap()
        });
    });
    group.bench_function("generate_wrapped", |b| {
        b.iter(|| kek.generate_wrapped(black_box(&context), &mut rng).unwrap());
    });
    let batch: Vec<FileContext> = (0..Kek::KEYS_PER_DRAW)
        .map(|_| {
            FileContext::new(
                context.tenant,
                FileId::random(&mut rng).unwrap(),
                FileVersion::FIRST,
            )
        })
        .collect();
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("generate_wrapped_many (per key)", |b| {
        b.iter(|| {
            kek.generate_wrapped_many(black_box(&batch), &mut rng)
                .unwrap()
        });
    });
    group.throughput(Throughput::Elements(1));
    let key = FileKey::generate_with(&mut rng).unwrap();
    let wrapped = kek.wrap(&key, &context, &mut rng).unwrap();
    group.bench_function("unwrap", |b| {
        b.iter(|| {
            kek.unwrap(black_box(&wrapped), black_box(&context))
                .unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, filekey);
criterion_main!(benches);
