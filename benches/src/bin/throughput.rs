//! Throughput report: for every compiled-in backend, on the same buffer in
//! one run, one-shot AES-256-GCM of the backend (the baseline) against
//! atrest-stream's single-core streaming and one-call paths and its parallel
//! paths. Each row is timed alternately with the baseline, run for run, and
//! its ratio is the median of the per-pair ratios, so load that drifts on a
//! shared machine hits both sides alike; the GB/s column is the row's median.
//!
//! ```text
//! cargo run --release -p atrest-benches --bin throughput -- [SIZE_MIB] [RUNS]
//! ```
//!
//! Defaults: 1024 MiB, 5 runs. Output buffers are allocated once and reused,
//! as the baseline encrypts in place.
//!
//! The baseline seals one buffer in place: it reads and writes each byte's
//! cache line once. Every other row leaves its input as it is and writes
//! into another buffer, which costs one more transfer per line (the output
//! line is read before it is written), so on a buffer larger than the
//! caches, where the cipher runs at the speed of memory, no such row can
//! match the baseline. The report therefore also times one-shot
//! AES-256-GCM out of place (the least such a call can do with the
//! backend's own API) and gives each row's ratio to it in a second column.
//! The report names the backend `Backend::default()` picks on this
//! machine.

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

use atrest_benches::{median, one_shot_aes_256_gcm, one_shot_aes_256_gcm_to};
use atrest_filekey::FileKey;
use atrest_stream::format::Layout;
use atrest_stream::{Backend, Opener, Options, Parallelism, Sealer};

fn seconds(f: &mut impl FnMut()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

/// Times `f` and the baseline alternately, `runs` times each, so both see
/// the same machine (the machines are shared and their load drifts).
/// Returns the median time of `f` and the median of the per-pair ratios
/// `baseline time / f time`.
fn paired(runs: usize, baseline: &mut impl FnMut(), mut f: impl FnMut()) -> (f64, f64) {
    let (mut times, mut ratios) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        let base = seconds(baseline);
        let time = seconds(&mut f);
        times.push(time);
        ratios.push(base / time);
    }
    (median(times), median(ratios))
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
    let extent = Layout::new(options.segment_size)
        .for_plaintext(len as u64)
        .unwrap();
    let mut stream = vec![0u8; extent.stream_len() as usize];
    let mut decrypted = vec![0u8; len];
    let gb = len as f64 / 1e9;

    println!(
        "atrest-stream throughput: {mib} MiB buffer, median of {runs} runs, {cores} cores, segment size {} KiB",
        options.segment_size.get() / 1024
    );
    println!(
        "{:<12} {:<34} {:>9} {:>14} {:>13}",
        "backend", "measurement", "GB/s", "vs baseline", "vs reference"
    );
    println!("default backend on this machine: {}", Backend::default());
    // For reference: what one more pass over the bytes costs. The baseline
    // seals one buffer in place; a row that writes into another buffer
    // (every row but the baseline) with a backend that seals and opens in
    // place only (ring) copies each byte once more first, and the `Write`
    // and `Read` adapters copy once more through the I/O traits, whatever
    // the backend. Such a row is bounded by 1 / (1 + baseline / copy).
    // Segment by segment, as the rows copy.
    let segment = options.segment_size.get() as usize;
    let mut copy = || {
        for (to, from) in decrypted.chunks_mut(segment).zip(plaintext.chunks(segment)) {
            to.copy_from_slice(from);
        }
    };
    copy();
    let copy_rate = gb / median((0..runs).map(|_| seconds(&mut copy)).collect());
    println!(
        "{:<12} {:<34} {:>9.2} {:>14}",
        "-", "copy, segment by segment (memcpy)", copy_rate, "reference"
    );
    for &backend in Backend::ALL {
        let one = options.backend(backend);
        let all = one.parallelism(Parallelism::threads(cores));
        let (sealer, opener) = (Sealer::new(&key, ad, one), Opener::new(&key, ad, one));
        let (sealer_n, opener_n) = (Sealer::new(&key, ad, all), Opener::new(&key, ad, all));
        // Warm everything up once.
        one_shot_aes_256_gcm(backend, &mut work);
        let n = sealer.seal_into(&plaintext, &mut stream).unwrap();

        let mut base = || one_shot_aes_256_gcm(backend, &mut work);
        let baseline = gb / median((0..runs).map(|_| seconds(&mut base)).collect());
        println!(
            "{:<12} {:<34} {:>9.2} {:>13.1}%",
            backend.name(),
            "one-shot AES-256-GCM (baseline)",
            baseline,
            100.0
        );

        let (time, out_of_place) = paired(runs, &mut base, || {
            one_shot_aes_256_gcm_to(backend, &plaintext, &mut decrypted);
        });
        println!(
            "{:<12} {:<34} {:>9.2} {:>13.1}% {:>13}",
            backend.name(),
            "one-shot, out of place (reference)",
            gb / time,
            100.0 * out_of_place,
            "100.0%"
        );
        let mut row = |what: &str, f: &mut dyn FnMut()| {
            let (time, ratio) = paired(runs, &mut base, f);
            println!(
                "{:<12} {:<34} {:>9.2} {:>13.1}% {:>12.1}%",
                backend.name(),
                what,
                gb / time,
                100.0 * ratio,
                100.0 * ratio / out_of_place
            );
            ratio
        };

        let encrypt_1 = row("encrypt, 1 thread (seal_into)", &mut || {
            sealer.seal_into(&plaintext, &mut stream).unwrap();
        });
        let decrypt_1 = row("decrypt, 1 thread (open_into)", &mut || {
            opener.open_into(&stream[..n], &mut decrypted).unwrap();
        });
        assert_eq!(decrypted, plaintext);

        let mut sink = Vec::with_capacity(stream.len());
        row("encrypt, streaming Write", &mut || {
            sink.clear();
            let mut encryptor = sealer.writer(&mut sink).unwrap();
            for chunk in plaintext.chunks(1 << 20) {
                encryptor.write_all(chunk).unwrap();
            }
            encryptor.finish().unwrap();
        });
        row("decrypt, streaming Read", &mut || {
            let mut decryptor = opener.reader(&sink[..]).unwrap();
            decryptor.read_exact(&mut decrypted).unwrap();
        });

        let encrypt_n = row(&format!("encrypt, {cores} threads"), &mut || {
            sealer_n.seal_into(&plaintext, &mut stream).unwrap();
        });
        let decrypt_n = row(&format!("decrypt, {cores} threads"), &mut || {
            opener_n.open_into(&stream[..n], &mut decrypted).unwrap();
        });
        assert_eq!(decrypted, plaintext);
        let mut pipe_out = Vec::with_capacity(stream.len());
        row(
            &format!("encrypt, Read->Write, {cores} workers"),
            &mut || {
                pipe_out.clear();
                sealer_n.seal_stream(&plaintext[..], &mut pipe_out).unwrap();
            },
        );
        let mut pipe_back = Vec::with_capacity(len);
        row(
            &format!("decrypt, Read->Write, {cores} workers"),
            &mut || {
                pipe_back.clear();
                opener_n.open_stream(&pipe_out[..], &mut pipe_back).unwrap();
            },
        );
        assert_eq!(pipe_back, plaintext);
        // From the ratios to the baseline, each measured alongside it, so the
        // scaling holds up when the machine's load drifts between rows.
        println!(
            "{:<12} parallel scaling: encrypt {:.2}x, decrypt {:.2}x of one thread (target {:.1}x)",
            backend.name(),
            encrypt_n / encrypt_1,
            decrypt_n / decrypt_1,
            0.9 * cores as f64
        );
    }
}
