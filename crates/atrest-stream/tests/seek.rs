//! Seeking and range reads return exactly the matching slice of the
//! plaintext, at every boundary and at random offsets, and read only the
//! segments that cover the range.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};

use atrest_stream::{Error, Opener, Options, ReadAt, Sealer};
use atrest_test_support::plaintext;
use common::{AD, capacities, key, size};
use proptest::prelude::*;

const S: u32 = 300;

fn fixture(len: usize) -> (Vec<u8>, Vec<u8>) {
    let data = plaintext(len);
    let stream = Sealer::new(&key(), AD, Options::from(size(S)))
        .seal(&data)
        .unwrap();
    (data, stream)
}

/// Offsets at and around every segment boundary of a plaintext of `len` bytes.
fn boundary_offsets(len: usize) -> Vec<u64> {
    let (p0, p) = capacities(S);
    let mut offsets = vec![
        0,
        1,
        len.saturating_sub(1) as u64,
        len as u64,
        len as u64 + 5,
    ];
    let mut boundary = p0;
    while boundary <= len + p {
        offsets.extend([boundary - 1, boundary, boundary + 1].map(|o| o as u64));
        boundary += p;
    }
    offsets
}

#[test]
fn seek_then_read_matches_the_plaintext_at_every_boundary() {
    let (data, stream) = fixture(5 * 284 + 17);
    let mut decryptor = Opener::new(&key(), AD, Options::default())
        .reader(Cursor::new(&stream))
        .unwrap();
    assert_eq!(decryptor.plaintext_len().unwrap(), data.len() as u64);
    for start in boundary_offsets(data.len()) {
        for len in [0usize, 1, 2, 283, 284, 285, 1000] {
            assert_eq!(decryptor.seek(SeekFrom::Start(start)).unwrap(), start);
            let mut out = Vec::new();
            decryptor
                .by_ref()
                .take(len as u64)
                .read_to_end(&mut out)
                .unwrap();
            let from = (start as usize).min(data.len());
            let to = (from + len).min(data.len());
            assert_eq!(out, &data[from..to], "start={start} len={len}");
        }
    }
}

#[test]
fn seek_relative_to_end_and_current() {
    let (data, stream) = fixture(2000);
    let mut decryptor = Opener::new(&key(), AD, Options::default())
        .reader(Cursor::new(&stream))
        .unwrap();
    let mut first = [0u8; 10];
    decryptor.read_exact(&mut first).unwrap();
    assert_eq!(first, data[..10]);
    assert_eq!(decryptor.seek(SeekFrom::Current(500)).unwrap(), 510);
    let mut buf = [0u8; 5];
    decryptor.read_exact(&mut buf).unwrap();
    assert_eq!(buf, data[510..515]);
    assert_eq!(decryptor.seek(SeekFrom::End(-3)).unwrap(), 1997);
    let mut tail = Vec::new();
    decryptor.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, data[1997..]);
    assert_eq!(decryptor.seek(SeekFrom::Current(-2000)).unwrap(), 0);
    let mut all = Vec::new();
    decryptor.read_to_end(&mut all).unwrap();
    assert_eq!(all, data);
    assert!(decryptor.seek(SeekFrom::Current(-1)).is_ok());
    assert_eq!(
        decryptor.seek(SeekFrom::End(-2001)).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
}

#[test]
fn seeking_relative_to_the_end_authenticates_the_final_segment() {
    let (_, stream) = fixture(2000);
    // Tamper with the final segment: the length cannot be trusted, so even
    // seeking (before any read) fails.
    let mut tampered = stream.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut decryptor = Opener::new(&key(), AD, Options::default())
        .reader(Cursor::new(&tampered))
        .unwrap();
    let error = decryptor.seek(SeekFrom::End(-10)).unwrap_err();
    assert!(matches!(Error::from_io(error), Error::AuthenticationFailed));

    // A stream cut at a segment boundary is reported as truncated.
    let (p0, p) = capacities(S);
    let (_, exact) = fixture(p0 + 3 * p);
    let cut = &exact[..exact.len() - S as usize];
    let mut decryptor = Opener::new(&key(), AD, Options::default())
        .reader(Cursor::new(cut))
        .unwrap();
    let error = decryptor.seek(SeekFrom::End(0)).unwrap_err();
    assert!(matches!(Error::from_io(error), Error::Truncated));
}

#[test]
fn a_stream_that_does_not_start_at_offset_zero_seeks_correctly() {
    let (data, stream) = fixture(3000);
    let mut container = b"unrelated leading bytes".to_vec();
    let offset = container.len() as u64;
    container.extend_from_slice(&stream);
    let mut cursor = Cursor::new(container);
    cursor.set_position(offset);
    let mut decryptor = Opener::new(&key(), AD, Options::default())
        .reader(cursor)
        .unwrap();
    let mut start = [0u8; 700];
    decryptor.read_exact(&mut start).unwrap();
    assert_eq!(start, data[..700]);
    decryptor.seek(SeekFrom::Start(2500)).unwrap();
    let mut rest = Vec::new();
    decryptor.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, data[2500..]);
}

#[test]
fn random_access_and_copy_range_match_the_plaintext() {
    let (data, stream) = fixture(5 * 284 + 17);
    let access = Opener::new(&key(), AD, Options::default())
        .random_access(&stream[..])
        .unwrap();
    let mut decryptor = Opener::new(&key(), AD, Options::default())
        .reader(Cursor::new(&stream))
        .unwrap();
    for start in boundary_offsets(data.len()) {
        for len in [0usize, 1, 284, 285, 700] {
            let from = (start as usize).min(data.len());
            let to = (from + len).min(data.len());
            let mut buf = vec![0u8; len];
            let n = access.read_at(&mut buf, start).unwrap();
            assert_eq!(
                &buf[..n],
                &data[from..to],
                "read_at start={start} len={len}"
            );

            if start as usize + len <= data.len() {
                let range = start..start + len as u64;
                let mut out = Vec::new();
                assert_eq!(
                    access.copy_range(range.clone(), &mut out).unwrap(),
                    len as u64
                );
                assert_eq!(out, &data[from..to]);
                let mut out = Vec::new();
                assert_eq!(decryptor.copy_range(range, &mut out).unwrap(), len as u64);
                assert_eq!(out, &data[from..to]);
            }
        }
    }
    let len = data.len() as u64;
    #[allow(clippy::reversed_empty_ranges)] // a reversed range is the point
    let reversed = 5..4;
    assert!(matches!(
        access.copy_range(reversed, &mut Vec::new()),
        Err(Error::InvalidRange { .. })
    ));
    assert!(matches!(
        access.copy_range(0..len + 1, &mut Vec::new()),
        Err(Error::InvalidRange { .. })
    ));
    assert!(matches!(
        decryptor.copy_range(len..len + 1, &mut Vec::new()),
        Err(Error::InvalidRange { .. })
    ));
}

/// A source that counts the bytes read from it.
struct Counting<'a> {
    inner: &'a [u8],
    read: AtomicU64,
}

impl ReadAt for Counting<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let n = self.inner.read_at(buf, offset)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn size(&self) -> std::io::Result<u64> {
        self.inner.size()
    }
}

#[test]
fn range_reads_touch_only_the_covering_segments() {
    let (data, stream) = fixture(100 * 284);
    let source = Counting {
        inner: &stream,
        read: AtomicU64::new(0),
    };
    let access = Opener::new(&key(), AD, Options::default())
        .random_access(&source)
        .unwrap();
    let opened = source.read.swap(0, Ordering::Relaxed);
    // Opening reads the header and the final segment only.
    assert!(opened <= u64::from(82 + S), "opening read {opened} bytes");

    // 10 bytes straddling one boundary: two segments.
    let (p0, p) = capacities(S);
    let start = (p0 + 50 * p - 5) as u64;
    let mut out = [0u8; 10];
    access.read_at(&mut out, start).unwrap();
    assert_eq!(out, data[start as usize..start as usize + 10]);
    assert_eq!(source.read.load(Ordering::Relaxed), 2 * u64::from(S));
}

#[test]
fn random_access_is_shareable_across_threads() {
    let (data, stream) = fixture(50_000);
    let access = Opener::new(&key(), AD, Options::default())
        .random_access(std::sync::Arc::new(stream))
        .unwrap();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let (access, data) = (&access, &data);
            scope.spawn(move || {
                for i in 0..50 {
                    let start = (t * 7919 + i * 997) % 49_000;
                    let mut buf = [0u8; 333];
                    let n = access.read_at(&mut buf, start).unwrap();
                    assert_eq!(&buf[..n], &data[start as usize..start as usize + n]);
                }
            });
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_ranges(len in 0usize..4000, a in 0u64..4100, b in 0u64..4100) {
        let (data, stream) = fixture(len);
        let (start, end) = (a.min(b), a.max(b));
        let access = Opener::new(&key(), AD, Options::default()).random_access(&stream[..]).unwrap();
        let mut buf = vec![0u8; (end - start) as usize];
        let n = access.read_at(&mut buf, start).unwrap();
        let from = (start as usize).min(len);
        let to = (end as usize).min(len);
        prop_assert_eq!(&buf[..n], &data[from..to]);

        let mut decryptor = Opener::new(&key(), AD, Options::default()).reader(Cursor::new(&stream)).unwrap();
        decryptor.seek(SeekFrom::Start(start)).unwrap();
        let mut out = Vec::new();
        decryptor.by_ref().take(end - start).read_to_end(&mut out).unwrap();
        prop_assert_eq!(&out[..], &data[from..to]);
    }
}
