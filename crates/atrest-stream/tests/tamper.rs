//! Tampering: every bit flip, every truncation, appended bytes, dropped,
//! reordered, duplicated and moved segments, moved bodies, wrong keys and
//! contexts. Each must fail with a typed error; the streaming reader must
//! release exactly the segments that verified before the failure, and the
//! one-call decryption nothing at all.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use atrest_filekey::FileKey;
use atrest_stream::format::{HEADER_LEN, PREFIX_LEN};
use atrest_stream::{Error, Opener, Options, Parallelism, Sealer};
use atrest_test_support::plaintext;
use common::{AD, capacities, key, segment_ranges, size, stream_read};

const S: u32 = 256;

/// A five-segment stream with S = 256.
fn fixture() -> (Vec<u8>, Vec<u8>) {
    let (p0, p) = capacities(S);
    let data = plaintext(p0 + 3 * p + 100);
    let stream = Sealer::new(&key(), AD, Options::from(size(S)))
        .seal(&data)
        .unwrap();
    assert_eq!(segment_ranges(S, stream.len()).len(), 5);
    (data, stream)
}

/// Plaintext released before segment `k`.
fn released_before(k: usize) -> usize {
    let (p0, p) = capacities(S);
    if k == 0 { 0 } else { p0 + (k - 1) * p }
}

/// Asserts that `stream` is rejected by every reader, and that the streaming
/// reader released exactly the plaintext of segments `..k`.
fn assert_rejected(stream: &[u8], data: &[u8], k: usize, what: &str) -> Error {
    let key = key();
    for threads in [2, 5] {
        let backend = atrest_stream::Backend::default();
        assert!(
            Opener::new(
                &key,
                AD,
                Options::default()
                    .backend(backend)
                    .parallelism(Parallelism::threads(threads))
            )
            .open(stream)
            .is_err(),
            "{what}: parallel decryption accepted it"
        );
    }
    assert!(
        Opener::new(&key, AD, Options::default())
            .open(stream)
            .is_err(),
        "{what}: one-call decryption accepted it"
    );
    assert!(
        Opener::new(&key, AD, Options::default())
            .random_access(stream)
            .and_then(|r| {
                let mut all = vec![0u8; r.plaintext_len() as usize];
                r.read_at(&mut all, 0)
            })
            .is_err(),
        "{what}: random access accepted it"
    );
    for chunk in [1usize, 100, 1 << 16] {
        let (out, error) = stream_read(&key, AD, stream, chunk);
        let error = error.unwrap_or_else(|| panic!("{what}: streaming read accepted it"));
        assert_eq!(
            out.len(),
            released_before(k),
            "{what}: released {} bytes (chunk {chunk})",
            out.len()
        );
        assert_eq!(
            out[..],
            data[..out.len()],
            "{what}: released wrong plaintext"
        );
        if chunk == 100 {
            return error;
        }
    }
    unreachable!()
}

/// Index of the segment holding stream byte `offset` (`None` in the header).
fn segment_of(stream_len: usize, offset: usize) -> Option<usize> {
    segment_ranges(S, stream_len)
        .iter()
        .position(|&(start, end)| (start..end).contains(&offset))
}

#[test]
fn every_single_bit_flip_fails() {
    let (data, stream) = fixture();
    for bit in 0..stream.len() * 8 {
        let mut tampered = stream.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        let k = segment_of(stream.len(), bit / 8).unwrap_or(0);
        let error = assert_rejected(&tampered, &data, k, &format!("bit {bit}"));
        if bit / 8 > PREFIX_LEN {
            assert!(
                matches!(error, Error::AuthenticationFailed),
                "bit {bit}: {error:?}"
            );
        }
    }
}

#[test]
fn every_truncation_fails() {
    let (data, stream) = fixture();
    let ranges = segment_ranges(S, stream.len());
    for len in 0..stream.len() {
        let k = segment_of(stream.len(), len).unwrap_or(0);
        let error = assert_rejected(&stream[..len], &data, k, &format!("truncated to {len}"));
        // At a segment boundary the cut is recognised as such.
        if ranges.iter().any(|&(start, _)| start == len) || len < HEADER_LEN + 16 {
            assert!(matches!(error, Error::Truncated), "cut at {len}: {error:?}");
            let io = std::io::Error::from(error);
            assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
        }
    }
}

#[test]
fn appended_bytes_fail() {
    let (data, stream) = fixture();
    let last = segment_ranges(S, stream.len()).len() - 1;
    for extra in [1usize, 15, 16, 17, 255, 256, 1000] {
        let mut longer = stream.clone();
        longer.extend(std::iter::repeat_n(0xa5, extra));
        let error = assert_rejected(&longer, &data, last, &format!("{extra} bytes appended"));
        assert!(
            matches!(error, Error::AuthenticationFailed),
            "{extra} appended: {error:?}"
        );
        let io = std::io::Error::from(error);
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
    }
}

#[test]
fn a_tag_sized_tail_after_a_full_segment_is_rejected() {
    // A stream whose plaintext exactly fills two segments, plus 16 bytes that
    // look like an empty last segment. Every reader finds that the real last
    // segment verifies as the last one and is followed by bytes. (A genuinely
    // encrypted empty final segment is among the published negative vectors.)
    let (p0, p) = capacities(S);
    let data = plaintext(p0 + p);
    let mut stream = Sealer::new(&key(), AD, Options::from(size(S)))
        .seal(&data)
        .unwrap();
    stream.extend([0u8; 16]);
    assert!(matches!(
        Opener::new(&key(), AD, Options::default()).open(&stream),
        Err(Error::TrailingData)
    ));
    let (out, error) = stream_read(&key(), AD, &stream, 4096);
    assert_eq!(out.len(), p0);
    assert!(matches!(error, Some(Error::TrailingData)), "{error:?}");
}

fn reassemble(stream: &[u8], order: &[usize]) -> Vec<u8> {
    let ranges = segment_ranges(S, stream.len());
    let mut out = stream[..HEADER_LEN].to_vec();
    for &i in order {
        out.extend_from_slice(&stream[ranges[i].0..ranges[i].1]);
    }
    out
}

#[test]
fn dropped_reordered_and_duplicated_segments_fail() {
    let (data, stream) = fixture();
    let cases: &[(&[usize], usize)] = &[
        (&[1, 2, 3, 4], 0),    // first dropped
        (&[0, 2, 3, 4], 1),    // inner dropped
        (&[0, 1, 2, 4], 3),    // inner dropped before the last
        (&[0, 1, 2, 3], 4),    // last dropped: a cut at a boundary releases what verified
        (&[1, 0, 2, 3, 4], 0), // swapped
        (&[0, 1, 3, 2, 4], 2),
        (&[0, 1, 2, 4, 3], 3),    // last moved inward
        (&[0, 1, 1, 2, 3, 4], 2), // duplicated
        (&[0, 1, 2, 3, 4, 4], 4), // last duplicated
        (&[0, 0, 1, 2, 3, 4], 1),
    ];
    for (order, k) in cases {
        let tampered = reassemble(&stream, order);
        assert_rejected(&tampered, &data, *k, &format!("segments {order:?}"));
    }
}

#[test]
fn segments_and_bodies_from_other_streams_fail() {
    let (data, stream) = fixture();
    let ranges = segment_ranges(S, stream.len());
    let key = key();
    // Same key and context, another stream (another salt): every segment differs.
    let sibling = Sealer::new(&key, AD, Options::from(size(S)))
        .seal(&data)
        .unwrap();
    // Another context (another file or tenant), same key.
    let other_ctx = Sealer::new(&key, b"another tenant", Options::from(size(S)))
        .seal(&data)
        .unwrap();
    // Another file's key.
    let other_key = FileKey::from_secret_bytes(&[7; 32]);
    let other_file = Sealer::new(&other_key, AD, Options::from(size(S)))
        .seal(&data)
        .unwrap();

    for donor in [&sibling, &other_ctx, &other_file] {
        for (i, &(start, end)) in ranges.iter().enumerate() {
            let mut tampered = stream.clone();
            tampered[start..end].copy_from_slice(&donor[start..end]);
            assert_rejected(&tampered, &data, i, &format!("segment {i} moved"));
        }
        // The whole body (Tink header and segments) under this prefix.
        let mut moved = stream[..PREFIX_LEN].to_vec();
        moved.extend_from_slice(&donor[PREFIX_LEN..]);
        if donor != &sibling {
            assert_rejected(&moved, &data, 0, "body moved");
        }
    }
    // A whole blob read under another context fails at the first segment.
    let (out, error) = stream_read(&key, b"another tenant", &stream, 4096);
    assert!(out.is_empty());
    assert!(matches!(error, Some(Error::AuthenticationFailed)));
}

#[test]
fn the_wrong_key_is_caught_by_the_commitment() {
    let (_, stream) = fixture();
    let other = FileKey::from_secret_bytes(&[9; 32]);
    assert!(matches!(
        Opener::new(&other, AD, Options::default()).open(&stream),
        Err(Error::CommitmentMismatch)
    ));
    let (out, error) = stream_read(&other, AD, &stream, 4096);
    assert!(out.is_empty());
    assert!(matches!(error, Some(Error::CommitmentMismatch)));

    // A commitment that does not match the real key: also refused up front.
    let mut tampered = stream.clone();
    tampered[PREFIX_LEN - 1] ^= 1;
    assert!(matches!(
        Opener::new(&key(), AD, Options::default()).open(&tampered),
        Err(Error::CommitmentMismatch)
    ));
}

#[test]
fn prefix_fields_are_checked() {
    let (_, stream) = fixture();
    let mut bad = stream.clone();
    bad[0] = b'X';
    assert!(matches!(
        Opener::new(&key(), AD, Options::default()).open(&bad),
        Err(Error::Malformed(_))
    ));
    let mut bad = stream.clone();
    bad[4] = 2;
    assert!(matches!(
        Opener::new(&key(), AD, Options::default()).open(&bad),
        Err(Error::UnsupportedVersion(2))
    ));
    let mut bad = stream.clone();
    bad[5] = 9;
    assert!(matches!(
        Opener::new(&key(), AD, Options::default()).open(&bad),
        Err(Error::UnsupportedSuite(9))
    ));
    let mut bad = stream.clone();
    bad[6..10].copy_from_slice(&100u32.to_be_bytes());
    assert!(matches!(
        Opener::new(&key(), AD, Options::default()).open(&bad),
        Err(Error::Malformed(_))
    ));
    // A valid but different segment size changes the stream key.
    let mut bad = stream.clone();
    bad[6..10].copy_from_slice(&512u32.to_be_bytes());
    assert!(
        Opener::new(&key(), AD, Options::default())
            .open(&bad)
            .is_err()
    );
    let mut bad = stream.clone();
    bad[PREFIX_LEN] = 24;
    assert!(matches!(
        Opener::new(&key(), AD, Options::default()).open(&bad),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn errors_are_sticky_and_downcastable() {
    use std::io::Read;
    let (_, stream) = fixture();
    let mut tampered = stream.clone();
    tampered[HEADER_LEN + 300] ^= 1; // in segment 1
    let mut decryptor = Opener::new(&key(), AD, Options::default())
        .reader(&tampered[..])
        .unwrap();
    let mut out = Vec::new();
    let error = decryptor.read_to_end(&mut out).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    assert!(matches!(
        error.get_ref().and_then(|e| e.downcast_ref::<Error>()),
        Some(Error::AuthenticationFailed)
    ));
    // Later reads fail the same way instead of skipping ahead.
    let again = decryptor.read(&mut [0u8; 16]).unwrap_err();
    assert!(matches!(Error::from_io(again), Error::AuthenticationFailed));
}

/// The loop that reads fixed-size records until `UnexpectedEof` and takes
/// what it read as the whole file: over a cut stream it must fail, not stop
/// quietly at the cut.
#[test]
fn read_exact_until_eof_over_a_cut_stream_errors() {
    use std::io::Read as _;
    let (data, stream) = fixture();
    let ranges = segment_ranges(S, stream.len());
    // Cut at a segment boundary: every segment before it is authentic.
    let cut = ranges[ranges.len() - 1].0;
    let mut reader = Opener::new(&key(), AD, Options::default())
        .reader(&stream[..cut])
        .unwrap();
    let mut record = [0u8; 100];
    let mut read = Vec::new();
    let outcome = loop {
        match reader.read_exact(&mut record) {
            Ok(()) => read.extend_from_slice(&record),
            Err(error) => break error,
        }
    };
    assert_ne!(
        outcome.kind(),
        std::io::ErrorKind::UnexpectedEof,
        "{outcome}"
    );
    assert_eq!(outcome.kind(), std::io::ErrorKind::InvalidData);
    assert!(matches!(Error::from_io(outcome), Error::Truncated));
    assert!(data.starts_with(&read) && read.len() < data.len());
}
