//! Throughput report: for every compiled-in backend, on the same buffer in
//! one run, one-shot AES-256-GCM of the backend (the baseline) against
//! atrest-stream's single-core streaming and one-call paths and its parallel
//! paths, with the median of several runs and the ratios.
//!
//! ```text
//! cargo run --release -p atrest-benches --bin throughput -- [SIZE_MIB] [RUNS]
//! ```
//!
//! Defaults: 1024 MiB, 5 runs. Output buffers are allocated once and reused,
//! as the baseline encrypts in place.

// A measurement harness: slices are bounded by the sizes allocated above them.
#![allow(
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::{Read, Write};
use std::time::Instant;

use atrest_benches::one_shot_aes_256_gcm;
use atrest_filekey::FileKey;
use atrest_stream::{
    Backend, Decryptor, Encryptor, Options, decrypt_stream, decrypt_to, encrypt_stream, encrypt_to,
    stream_len,
};

fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args
        .next()
        .map_or(1024, |a| a.parse().expect("SIZE_MIB must be a number"));
    let runs: usize = args
        .next()
        .map_or(5, |a| a.parse().expect("RUNS must be a number"));
    let len = mib << 20;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let key = FileKey::from_secret_bytes(&[0x42; 32]);
    let ad = b"tenant/file/version";

    let plaintext: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31)).collect();
    let mut work = plaintext.clone();
    let options = Options::default();
    let mut stream = vec![0u8; stream_len(len as u64, options.segment_size).unwrap() as usize];
    let mut decrypted = vec![0u8; len];
    let gb = len as f64 / 1e9;

    println!(
        "atrest-stream throughput: {mib} MiB buffer, median of {runs} runs, {cores} cores, segment size {} KiB",
        options.segment_size.get() / 1024
    );
    println!(
        "{:<12} {:<34} {:>9} {:>14}",
        "backend", "measurement", "GB/s", "vs baseline"
    );
    for &backend in Backend::ALL {
        let options = options.backend(backend);
        // Warm everything up once.
        one_shot_aes_256_gcm(backend, &mut work);
        let n = encrypt_to(&key, ad, &plaintext, options, 1, &mut stream).unwrap();

        let baseline = gb / median_seconds(runs, || one_shot_aes_256_gcm(backend, &mut work));
        let row = |what: &str, rate: f64| {
            println!(
                "{:<12} {:<34} {:>9.2} {:>13.1}%",
                backend.name(),
                what,
                rate,
                100.0 * rate / baseline
            );
        };
        row("one-shot AES-256-GCM (baseline)", baseline);

        let encrypt_1 = gb
            / median_seconds(runs, || {
                encrypt_to(&key, ad, &plaintext, options, 1, &mut stream).unwrap();
            });
        row("encrypt, 1 thread (encrypt_to)", encrypt_1);
        let decrypt_1 = gb
            / median_seconds(runs, || {
                decrypt_to(&key, ad, &stream[..n], backend, 1, &mut decrypted).unwrap();
            });
        row("decrypt, 1 thread (decrypt_to)", decrypt_1);
        assert_eq!(decrypted, plaintext);

        let mut sink = Vec::with_capacity(stream.len());
        let streaming_encrypt = gb
            / median_seconds(runs, || {
                sink.clear();
                let mut encryptor = Encryptor::with_options(&mut sink, &key, ad, options).unwrap();
                for chunk in plaintext.chunks(1 << 20) {
                    encryptor.write_all(chunk).unwrap();
                }
                encryptor.finish().unwrap();
            });
        row("encrypt, streaming Write", streaming_encrypt);
        let streaming_decrypt = gb
            / median_seconds(runs, || {
                let mut decryptor = Decryptor::with_backend(&sink[..], &key, ad, backend).unwrap();
                decryptor.read_exact(&mut decrypted).unwrap();
            });
        row("decrypt, streaming Read", streaming_decrypt);

        let encrypt_n = gb
            / median_seconds(runs, || {
                encrypt_to(&key, ad, &plaintext, options, cores, &mut stream).unwrap();
            });
        row(&format!("encrypt, {cores} threads"), encrypt_n);
        let decrypt_n = gb
            / median_seconds(runs, || {
                decrypt_to(&key, ad, &stream[..n], backend, cores, &mut decrypted).unwrap();
            });
        row(&format!("decrypt, {cores} threads"), decrypt_n);
        assert_eq!(decrypted, plaintext);
        let mut pipe_out = Vec::with_capacity(stream.len());
        let pipeline_encrypt = gb
            / median_seconds(runs, || {
                pipe_out.clear();
                encrypt_stream(&plaintext[..], &mut pipe_out, &key, ad, options, cores).unwrap();
            });
        row(
            &format!("encrypt, Read->Write, {cores} workers"),
            pipeline_encrypt,
        );
        let mut pipe_back = Vec::with_capacity(len);
        let pipeline_decrypt = gb
            / median_seconds(runs, || {
                pipe_back.clear();
                decrypt_stream(&pipe_out[..], &mut pipe_back, &key, ad, backend, cores).unwrap();
            });
        row(
            &format!("decrypt, Read->Write, {cores} workers"),
            pipeline_decrypt,
        );
        assert_eq!(pipe_back, plaintext);
        println!(
            "{:<12} parallel scaling: encrypt {:.2}x, decrypt {:.2}x of one thread (target {:.1}x)",
            backend.name(),
            encrypt_n / encrypt_1,
            decrypt_n / decrypt_1,
            0.9 * cores as f64
        );
    }
}
