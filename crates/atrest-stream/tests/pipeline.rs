//! Reader-to-writer encryption and decryption on several threads: the same
//! streams as the other paths, every boundary, short reads, tampering, and
//! failing writers (which must stop the pipeline, not hang it).

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use std::io::{self, Read, Write};

use atrest_stream::format::{Extent, Layout};
use atrest_stream::{Backend, Error, Opener, Options, Parallelism, Sealer};
use atrest_test_support::{TempDir, plaintext};
use common::{AD, boundary_lengths, key, size};

/// A reader that returns at most `max` bytes per call.
struct Trickle<'a> {
    data: &'a [u8],
    max: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.max).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn round_trips_at_every_boundary_on_any_number_of_threads() {
    let key = key();
    for s in [256u32, 4096] {
        for len in boundary_lengths(s).into_iter().chain([300_000]) {
            let data = plaintext(len);
            for (threads, max_read) in [(1, usize::MAX), (2, 1000), (3, 7), (0, usize::MAX)] {
                let reader = Trickle {
                    data: &data,
                    max: max_read,
                };
                let (stream, n) = Sealer::new(
                    &key,
                    AD,
                    Options::from(size(s)).parallelism(Parallelism::threads(threads)),
                )
                .seal_stream(reader, Vec::new())
                .unwrap();
                assert_eq!(n, len as u64);
                assert_eq!(
                    stream.len() as u64,
                    Layout::new(size(s))
                        .for_plaintext(len as u64)
                        .map(Extent::stream_len)
                        .unwrap()
                );
                assert_eq!(
                    Opener::new(&key, AD, Options::default())
                        .open(&stream)
                        .unwrap(),
                    data,
                    "s={s} len={len} threads={threads}"
                );

                let reader = Trickle {
                    data: &stream,
                    max: max_read,
                };
                let (back, m) = Opener::new(
                    &key,
                    AD,
                    Options::default()
                        .backend(Backend::default())
                        .parallelism(Parallelism::threads(threads)),
                )
                .open_stream(reader, Vec::new())
                .unwrap();
                assert_eq!(
                    (m, back),
                    (len as u64, data.clone()),
                    "s={s} len={len} threads={threads}"
                );
            }
        }
    }
}

#[test]
fn tampering_and_truncation_are_rejected() {
    let key = key();
    let data = plaintext(20_000);
    let stream = Sealer::new(&key, AD, Options::from(size(256)))
        .seal(&data)
        .unwrap();
    let backend = Backend::default();
    for position in (0..stream.len()).step_by(97) {
        let mut tampered = stream.clone();
        tampered[position] ^= 0x10;
        let (result, _) = (
            Opener::new(
                &key,
                AD,
                Options::default()
                    .backend(backend)
                    .parallelism(Parallelism::threads(2)),
            )
            .open_stream(&tampered[..], Vec::new()),
            position,
        );
        assert!(result.is_err(), "flip at {position} accepted");
    }
    for cut in (0..stream.len()).step_by(61) {
        assert!(
            Opener::new(
                &key,
                AD,
                Options::default()
                    .backend(backend)
                    .parallelism(Parallelism::threads(2))
            )
            .open_stream(&stream[..cut], Vec::new())
            .is_err(),
            "cut at {cut}"
        );
    }
    // Cut at a segment boundary: reported as truncation.
    let cut = 82 + 216 + 10 * 256;
    let error = Opener::new(
        &key,
        AD,
        Options::default()
            .backend(backend)
            .parallelism(Parallelism::threads(3)),
    )
    .open_stream(&stream[..cut], Vec::new())
    .unwrap_err();
    assert!(matches!(error, Error::Truncated), "{error:?}");
    let mut longer = stream.clone();
    longer.extend([0u8; 17]);
    assert!(
        Opener::new(
            &key,
            AD,
            Options::default()
                .backend(backend)
                .parallelism(Parallelism::threads(2))
        )
        .open_stream(&longer[..], Vec::new())
        .is_err()
    );
}

/// A writer that fails after `budget` bytes.
struct Failing {
    budget: usize,
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_writer_or_reader_stops_the_pipeline() {
    let key = key();
    let data = plaintext(5 << 20);
    for threads in [1, 2, 4] {
        let error = Sealer::new(
            &key,
            AD,
            Options::default().parallelism(Parallelism::threads(threads)),
        )
        .seal_stream(&data[..], Failing { budget: 1 << 20 });
        assert!(matches!(error, Err(Error::Io(_))), "{:?}", error.err());
    }
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("unreadable"))
        }
    }
    assert!(matches!(
        Sealer::new(
            &key,
            AD,
            Options::default().parallelism(Parallelism::threads(2))
        )
        .seal_stream(Broken, Vec::new()),
        Err(Error::Io(_))
    ));
}

#[test]
fn file_to_file() {
    let key = key();
    let dir = TempDir::new("stream-pipeline");
    let data = plaintext(3_000_000);
    std::fs::write(dir.join("in"), &data).unwrap();
    let input = std::fs::File::open(dir.join("in")).unwrap();
    let output = std::fs::File::create(dir.join("blob")).unwrap();
    let (output, _) = Sealer::new(
        &key,
        AD,
        Options::default().parallelism(Parallelism::AllCores),
    )
    .seal_stream(input, output)
    .unwrap();
    output.sync_all().unwrap();
    let blob = std::fs::File::open(dir.join("blob")).unwrap();
    let out = std::fs::File::create(dir.join("out")).unwrap();
    let (out, n) = Opener::new(
        &key,
        AD,
        Options::default()
            .backend(Backend::default())
            .parallelism(Parallelism::AllCores),
    )
    .open_stream(blob, out)
    .unwrap();
    out.sync_all().unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(std::fs::read(dir.join("out")).unwrap(), data);
}

#[test]
fn large_segments_grow_their_slots_with_the_data() {
    let key = key();
    let options = Options::from(size(1 << 20));
    for len in [0usize, 5, (1 << 20) - 56, (3 << 20) + 5] {
        let data = plaintext(len);
        let reader = Trickle {
            data: &data,
            max: 3000,
        };
        let (stream, _) = Sealer::new(&key, AD, options.parallelism(Parallelism::threads(2)))
            .seal_stream(reader, Vec::new())
            .unwrap();
        assert_eq!(
            Opener::new(&key, AD, Options::default())
                .open(&stream)
                .unwrap(),
            data,
            "len={len}"
        );
        let reader = Trickle {
            data: &stream,
            max: 5000,
        };
        let (back, _) = Opener::new(
            &key,
            AD,
            Options::default()
                .backend(Backend::default())
                .parallelism(Parallelism::threads(2)),
        )
        .open_stream(reader, Vec::new())
        .unwrap();
        assert_eq!(back, data, "len={len}");
    }
}

/// Collects what a decryption hands over as chunks, keeping the last few
/// (as a sink that passes them on does) before copying them out.
struct KeepingSink {
    kept: std::collections::VecDeque<atrest_stream::PlaintextChunk>,
    keep: usize,
    out: Vec<u8>,
    chunks: usize,
    fail_at: Option<usize>,
}

impl KeepingSink {
    fn new(keep: usize) -> Self {
        Self {
            kept: std::collections::VecDeque::new(),
            keep,
            out: Vec::new(),
            chunks: 0,
            fail_at: None,
        }
    }

    fn drain(&mut self) -> Vec<u8> {
        while let Some(chunk) = self.kept.pop_front() {
            self.out.extend_from_slice(&chunk);
        }
        std::mem::take(&mut self.out)
    }
}

impl atrest_stream::PlaintextSink for KeepingSink {
    fn write_plaintext(&mut self, plaintext: &[u8]) -> io::Result<()> {
        while let Some(chunk) = self.kept.pop_front() {
            self.out.extend_from_slice(&chunk);
        }
        self.out.extend_from_slice(plaintext);
        Ok(())
    }

    fn take_chunk(&mut self, chunk: atrest_stream::PlaintextChunk) -> io::Result<()> {
        self.chunks += 1;
        if self.fail_at == Some(self.chunks) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"));
        }
        assert!(!chunk.is_empty() || self.chunks == 1);
        self.kept.push_back(chunk);
        while self.kept.len() > self.keep {
            let oldest = self.kept.pop_front().unwrap();
            self.out.extend_from_slice(&oldest);
        }
        Ok(())
    }
}

/// Every backend hands over the same plaintext in buffers of its own
/// (each run of segments moved together), to a sink that keeps some while
/// the stream goes on; one that fails stops the stream without hanging it.
#[test]
fn every_backend_hands_plaintext_over_in_chunks() {
    let key = key();
    for &backend in Backend::ALL {
        for (s, len) in [
            (4096u32, 0usize),
            (4096, 5000),
            (4096, 3_000_000),
            (256, 1_100_000),
        ] {
            let data = plaintext(len);
            let options = Options::from(size(s))
                .backend(backend)
                .parallelism(Parallelism::threads(2));
            let (stream, _) = Sealer::new(&key, AD, options)
                .seal_stream(&data[..], Vec::new())
                .unwrap();
            for keep in [0, 2] {
                let mut sink = KeepingSink::new(keep);
                let n = Opener::new(&key, AD, options)
                    .open_stream_into(&stream[..], &mut sink)
                    .unwrap();
                assert_eq!(n, len as u64, "{backend} {s} {len}");
                let chunks = sink.chunks;
                // Chunks kept past the call are still whole.
                assert!(sink.drain() == data, "{backend} {s} {len} keep {keep}");
                assert!(chunks >= len / (2 << 20), "{chunks} chunks for {len} bytes");
            }
            // A sink that fails on its second chunk stops the stream.
            if len > (2 << 20) {
                let mut sink = KeepingSink::new(1);
                sink.fail_at = Some(2);
                let error = Opener::new(&key, AD, options)
                    .open_stream_into(&stream[..], &mut sink)
                    .unwrap_err();
                assert!(matches!(error, Error::Io(_)), "{error:?}");
            }
            // Tampering is caught the same way, whichever backend.
            if len > 10_000 {
                let mut bad = stream.clone();
                let at = bad.len() / 2;
                bad[at] ^= 1;
                let mut sink = KeepingSink::new(2);
                let error = Opener::new(&key, AD, options)
                    .open_stream_into(&bad[..], &mut sink)
                    .unwrap_err();
                assert!(
                    matches!(error, Error::AuthenticationFailed),
                    "{backend}: {error:?}"
                );
            }
        }
    }
}

/// The sinks' `Debug` never shows plaintext.
#[test]
fn sinks_do_not_show_plaintext_in_debug() {
    let sink = atrest_stream::WriteSink(b"secret plaintext".to_vec());
    let shown = format!("{sink:?}");
    assert!(!shown.contains("115"), "{shown}"); // b's' as a number
    assert!(!shown.contains("secret"), "{shown}");
    let key = key();
    let options = Options::from(size(4096));
    let (stream, _) = Sealer::new(&key, AD, options)
        .seal_stream(&b"secret plaintext"[..], Vec::new())
        .unwrap();
    let mut kept = KeepingSink::new(1);
    Opener::new(&key, AD, options)
        .open_stream_into(&stream[..], &mut kept)
        .unwrap();
    let chunk = kept.kept.pop_front().unwrap();
    let shown = format!("{chunk:?}");
    assert_eq!(shown, "PlaintextChunk { len: 16, .. }");
}
