//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use atrest_filekey::FileKey;
use atrest_stream::format::{TAG_LEN, TINK_HEADER_LEN};
use atrest_stream::{Error, Opener, Options, SegmentSize};

pub const AD: &[u8] = b"tenant 1 / file 7 / version 3";

pub fn key() -> FileKey {
    FileKey::from_secret_bytes(&[0x42; 32])
}

pub fn size(s: u32) -> SegmentSize {
    SegmentSize::new(s).unwrap()
}

/// Plaintext bytes in the first segment and in each later one.
pub fn capacities(s: u32) -> (usize, usize) {
    (s as usize - TINK_HEADER_LEN - TAG_LEN, s as usize - TAG_LEN)
}

/// The lengths worth testing for a segment size: every segment boundary and
/// its neighbours, for the first few segments.
pub fn boundary_lengths(s: u32) -> Vec<usize> {
    let (p0, p) = capacities(s);
    let mut lengths = vec![0, 1, 2];
    for k in 0..4 {
        let boundary = p0 + k * p;
        lengths.extend([boundary - 1, boundary, boundary + 1]);
    }
    lengths.sort_unstable();
    lengths.dedup();
    lengths
}

/// Byte ranges `[start, end)` of each segment within a stream of `stream_len` bytes.
pub fn segment_ranges(s: u32, stream_len: usize) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut start = atrest_stream::format::HEADER_LEN;
    let mut len = s as usize - TINK_HEADER_LEN;
    while start < stream_len {
        let end = (start + len).min(stream_len);
        ranges.push((start, end));
        start = end;
        len = s as usize;
    }
    ranges
}

/// Reads a stream with the streaming decryptor in `chunk`-sized reads; returns
/// what was released and the error that stopped it, if any.
pub fn stream_read(
    key: &FileKey,
    ad: &[u8],
    stream: &[u8],
    chunk: usize,
) -> (Vec<u8>, Option<Error>) {
    use std::io::Read;
    let mut out = Vec::new();
    let mut decryptor = match Opener::new(key, ad, Options::default()).reader(stream) {
        Ok(d) => d,
        Err(e) => return (out, Some(e)),
    };
    let mut buf = vec![0u8; chunk];
    loop {
        match decryptor.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(Error::from_io(e))),
        }
    }
}
