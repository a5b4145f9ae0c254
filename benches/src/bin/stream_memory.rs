//! Peak memory of streaming encryption and decryption of a large file.
//!
//! Encrypts `SIZE` GiB of generated plaintext to a file, decrypts it back,
//! checks the plaintext (by a running checksum), and prints the process's
//! peak resident set size (`VmHWM`) after each phase. Nothing is held in
//! memory but the streams' segment buffers.
//!
//! ```text
//! cargo run --release -p atrest-benches --bin stream_memory -- [SIZE_GIB] [DIR]
//! ```

// A measurement harness: slices are bounded by the counts `read` returned.
#![allow(clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use atrest_filekey::FileKey;
use atrest_stream::{Opener, Options, Sealer};

/// An endless deterministic plaintext source.
struct Pattern {
    position: u64,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        for byte in buf.iter_mut() {
            *byte = (self.position.wrapping_mul(0x9e37_79b9) >> 24) as u8;
            self.position += 1;
        }
        Ok(buf.len())
    }
}

fn checksum(data: &[u8], sum: &mut u64) {
    for chunk in data.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        *sum = sum.rotate_left(5) ^ u64::from_le_bytes(word);
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn run(gib: u64, dir: PathBuf) -> io::Result<()> {
    let key = FileKey::from_secret_bytes(&[0x11; 32]);
    let path = dir.join(format!("atrest-stream-memory-{}.bin", std::process::id()));
    let total = gib << 30;
    println!("start: peak RSS {} KiB", peak_rss_kib());

    let started = Instant::now();
    let mut source = Pattern { position: 0 }.take(total);
    let mut encryptor = Sealer::new(&key, b"memory test", Options::default())
        .writer(BufWriter::new(File::create(&path)?))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut expected = 0u64;
    loop {
        let n = source.read(&mut buf)?;
        if n == 0 {
            break;
        }
        checksum(&buf[..n], &mut expected);
        encryptor.write_all(&buf[..n])?;
    }
    encryptor
        .finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    println!(
        "encrypted {gib} GiB in {:.1} s: peak RSS {} KiB",
        started.elapsed().as_secs_f64(),
        peak_rss_kib()
    );

    let started = Instant::now();
    let mut decryptor = Opener::new(&key, b"memory test", Options::default())
        .reader(BufReader::new(File::open(&path)?))?;
    let mut actual = 0u64;
    let mut read = 0u64;
    loop {
        let n = decryptor.read(&mut buf)?;
        if n == 0 {
            break;
        }
        checksum(&buf[..n], &mut actual);
        read += n as u64;
    }
    std::fs::remove_file(&path)?;
    println!(
        "decrypted {gib} GiB in {:.1} s: peak RSS {} KiB",
        started.elapsed().as_secs_f64(),
        peak_rss_kib()
    );
    if read != total || actual != expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "decrypted plaintext differs",
        ));
    }
    println!("plaintext verified ({read} bytes)");
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let gib = args.next().map_or(Ok(4), |a| a.parse::<u64>());
    let dir = args.next().map_or_else(std::env::temp_dir, PathBuf::from);
    let Ok(gib) = gib else {
        eprintln!("usage: stream_memory [SIZE_GIB] [DIR]");
        return ExitCode::from(2);
    };
    match run(gib, dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stream_memory: {error}");
            ExitCode::FAILURE
        }
    }
}
