//! Sealing and opening a run of segments at a time: every run size and
//! every way a source hands out its bytes give streams every reader opens,
//! runs open from any segment, and misuse is refused.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]
use atrest_filekey::FileKey;
use atrest_stream::format::HEADER_LEN;
use atrest_stream::{Error, Opener, Options, RunBuffer, Sealer, SegmentSize};

/// Segments per run: about 256 KiB of them, at least one.
fn segments_per_chunk(segment_size: usize) -> usize {
    ((256 << 10) / segment_size).max(1)
}

fn options(segment_size: u32) -> Options {
    Options::default().segment_size(SegmentSize::new(segment_size).unwrap())
}

/// Seals `plaintext` in runs, the source giving `piece` bytes at a time.
fn seal_in_runs(key: &FileKey, options: Options, plaintext: &[u8], piece: usize) -> Vec<u8> {
    let mut runs = Sealer::new(key, b"ctx", options).runs().unwrap();
    let mut stream = Vec::new();
    let mut pieces = plaintext.chunks(piece.max(1)).peekable();
    let mut pending: &[u8] = pieces.next().unwrap_or_default();
    loop {
        let mut run = runs.next_run();
        loop {
            let taken = run.fill(pending);
            pending = &pending[taken..];
            if pending.is_empty() {
                match pieces.next() {
                    Some(next) => pending = next,
                    None => break,
                }
            }
            if run.is_full() {
                break;
            }
        }
        let last = pending.is_empty();
        stream.extend_from_slice(run.seal(last).unwrap().as_slice());
        if last {
            return stream;
        }
    }
}

#[test]
fn runs_seal_what_every_reader_opens() {
    let key = FileKey::generate().unwrap();
    for segment_size in [256u32, 4096, 65536] {
        let options = options(segment_size);
        let s = segment_size as usize;
        let run = segments_per_chunk(s);
        for len in [
            0,
            1,
            s - 56,
            s - 55,
            s - 56 + (run - 1) * (s - 16),
            s - 56 + (run - 1) * (s - 16) + 1,
            3 * run * s + 17,
        ] {
            let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for piece in [1, 1000, 70_000, len.max(1)] {
                if piece == 1 && len > 10_000 {
                    continue;
                }
                let stream = seal_in_runs(&key, options, &plaintext, piece);
                let opened = Opener::new(&key, b"ctx", options).open(&stream).unwrap();
                assert_eq!(opened, plaintext, "s={s} len={len} piece={piece}");
                assert_eq!(
                    stream.len() as u64,
                    Sealer::new(&key, b"ctx", options)
                        .stream_len(len as u64)
                        .unwrap()
                );
            }
        }
    }
}

#[test]
fn runs_open_any_stream_from_any_segment() {
    let key = FileKey::generate().unwrap();
    let options = options(4096);
    let plaintext: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let stream = Sealer::new(&key, b"ctx", options).seal(&plaintext).unwrap();
    let header: &[u8; HEADER_LEN] = stream[..HEADER_LEN].try_into().unwrap();
    let runs = Opener::new(&key, b"ctx", options).runs(header).unwrap();
    let layout = runs.layout();
    let extent = layout.for_stream(stream.len() as u64).unwrap();
    // Sequentially, a run at a time.
    let mut opened = Vec::new();
    let mut segment = 0;
    while segment < extent.segments {
        let at = layout.ciphertext_start(segment) as usize;
        let end = (at + runs.run_len(segment)).min(stream.len());
        let last = end == stream.len();
        let chunk = runs
            .open(segment, stream[at..end].to_vec().into(), last)
            .unwrap();
        opened.extend_from_slice(&chunk);
        segment += runs.segments_per_run();
    }
    assert_eq!(opened, plaintext);
    // Segments 5..8, alone.
    let (from, to) = (
        layout.ciphertext_start(5) as usize,
        layout.ciphertext_start(8) as usize,
    );
    let chunk = runs
        .open(5, stream[from..to].to_vec().into(), false)
        .unwrap();
    let start = layout.plaintext_start(5) as usize;
    assert_eq!(&chunk[..], &plaintext[start..start + chunk.len()]);
    // The wrong index, or an inner run called the last, fails.
    assert!(matches!(
        runs.open(6, stream[from..to].to_vec().into(), false),
        Err(Error::AuthenticationFailed)
    ));
    assert!(
        runs.open(5, stream[from..to].to_vec().into(), true)
            .is_err()
    );
    // A run cut within a segment is the caller's mistake unless last.
    assert!(matches!(
        runs.open(5, stream[from..to - 1].to_vec().into(), false),
        Err(Error::Misuse(_))
    ));
    assert!(matches!(
        runs.open(extent.segments, RunBuffer::new(), true),
        Err(Error::Truncated)
    ));
    // The final segment, alone.
    let last = extent.segments - 1;
    let at = layout.ciphertext_start(last) as usize;
    let chunk = runs.open(last, stream[at..].to_vec().into(), true).unwrap();
    assert_eq!(
        &chunk[..],
        &plaintext[layout.plaintext_start(last) as usize..]
    );
    // The final segment followed by more bytes, read as an inner run.
    let mut longer = stream[at..].to_vec();
    longer.extend_from_slice(&[0; 4096]);
    assert!(runs.open(last, longer.into(), false).is_err());
}

#[test]
fn misuse_is_refused() {
    let key = FileKey::generate().unwrap();
    let mut runs = Sealer::new(&key, b"ctx", options(256)).runs().unwrap();
    let mut first = runs.next_run();
    assert_eq!(first.fill(&[1; 10]), 10);
    assert!(matches!(first.seal(false), Err(Error::Misuse(_))));
    let empty = runs.next_run();
    assert!(matches!(empty.seal(true), Err(Error::Misuse(_))));
    // Plaintext given after a full run's last segment makes it an inner
    // segment: the run cannot end the stream.
    let mut runs = Sealer::new(&key, b"ctx", Options::default())
        .runs()
        .unwrap();
    let mut run = runs.next_run();
    let more = vec![5u8; run.capacity() + 1];
    assert_eq!(run.fill(&more), run.capacity());
    assert!(run.is_full());
    assert!(matches!(run.seal(true), Err(Error::Misuse(_))));
    // The header is refused for another key or segment size.
    let stream = Sealer::new(&key, b"ctx", options(256)).seal(b"x").unwrap();
    let header: &[u8; HEADER_LEN] = stream[..HEADER_LEN].try_into().unwrap();
    let other = FileKey::generate().unwrap();
    assert!(matches!(
        Opener::new(&other, b"ctx", options(256)).runs(header),
        Err(Error::CommitmentMismatch)
    ));
    assert!(matches!(
        Opener::new(&key, b"ctx", Options::default())
            .expect_segment_size(SegmentSize::DEFAULT)
            .runs(header),
        Err(Error::SegmentSizeMismatch { .. })
    ));
}
