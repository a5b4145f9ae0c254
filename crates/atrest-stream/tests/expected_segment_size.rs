//! `Opener::expect_segment_size`: every opening form refuses a stream sealed
//! with another segment size, with the same typed error and before any
//! plaintext; the matching size, or no expectation, opens as before.
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

use atrest_stream::{Error, Opener, Options, Parallelism, Sealer, SegmentSize};
use atrest_test_support::plaintext;
use common::{AD, key, size};

/// Sealed with 4 KiB segments; several segments long.
const SEALED: u32 = 4096;
/// What a caller's record wrongly says.
const OTHER: u32 = 65536;
const LEN: usize = 20_000;

fn stream() -> Vec<u8> {
    Sealer::new(&key(), AD, Options::from(size(SEALED)))
        .seal(&plaintext(LEN))
        .unwrap()
}

fn mismatch() -> Error {
    Error::SegmentSizeMismatch {
        expected: OTHER,
        found: SEALED,
    }
}

fn assert_mismatch(error: &Error, form: &str) {
    assert!(
        matches!(
            error,
            Error::SegmentSizeMismatch { expected, found }
                if *expected == OTHER && *found == SEALED
        ),
        "{form}: {error:?}"
    );
}

/// Every synchronous form, with `threads` threads where the form has any.
/// Returns, per form, what it released and the error it stopped with.
fn every_form(
    expected: Option<SegmentSize>,
    stream: &[u8],
    threads: usize,
) -> Vec<(&'static str, Vec<u8>, Option<Error>)> {
    let key = key();
    let options = Options::default().parallelism(Parallelism::threads(threads));
    let mut opener = Opener::new(&key, AD, options);
    if let Some(expected) = expected {
        opener = opener.expect_segment_size(expected);
    }
    let mut results = Vec::new();

    let open = opener.open(stream);
    results.push((
        "open",
        open.as_ref().cloned().unwrap_or_default(),
        open.err(),
    ));

    let mut out = vec![0u8; stream.len()];
    let open_into = opener.open_into(stream, &mut out);
    // Nothing may be released into the caller's buffer on failure.
    let released = match &open_into {
        Ok(n) => out[..*n].to_vec(),
        Err(_) => {
            assert!(out.iter().all(|&b| b == 0), "open_into released bytes");
            Vec::new()
        }
    };
    results.push(("open_into", released, open_into.err()));

    // Sequential reader.
    let mut released = Vec::new();
    let error = match opener.reader(stream) {
        Ok(mut reader) => reader.read_to_end(&mut released).err().map(Error::from_io),
        Err(error) => Some(error),
    };
    results.push(("reader", released, error));

    // Seekable reader: seek, then read; and a range copy.
    let mut released = Vec::new();
    let error = match opener.reader(Cursor::new(stream)) {
        Ok(mut reader) => reader
            .seek(SeekFrom::Start(0))
            .and_then(|_| reader.read_to_end(&mut released))
            .err()
            .map(Error::from_io),
        Err(error) => Some(error),
    };
    results.push(("reader+seek", released, error));

    let mut released = Vec::new();
    let error = match opener.reader(Cursor::new(stream)) {
        Ok(mut reader) => reader.copy_range(0..LEN as u64, &mut released).err(),
        Err(error) => Some(error),
    };
    results.push(("reader copy_range", released, error));

    // Random access: read_at and copy_range.
    let mut released = Vec::new();
    let error = match opener.random_access(stream) {
        Ok(file) => {
            let mut buf = vec![0u8; LEN];
            let n = file.read_at(&mut buf, 0).unwrap();
            released.extend_from_slice(&buf[..n]);
            let mut copied = Vec::new();
            file.copy_range(0..LEN as u64, &mut copied).unwrap();
            assert_eq!(copied, released);
            None
        }
        Err(error) => Some(error),
    };
    results.push(("random_access", released, error));

    // Reader-to-writer pipeline.
    let (released, error) = match opener.open_stream(stream, Vec::new()) {
        Ok((out, n)) => {
            assert_eq!(n, out.len() as u64);
            (out, None)
        }
        Err(error) => (Vec::new(), Some(error)),
    };
    results.push(("open_stream", released, error));

    results
}

#[test]
fn a_stream_of_another_segment_size_is_refused_by_every_form() {
    let stream = stream();
    for threads in [1, 3] {
        for (form, released, error) in every_form(Some(size(OTHER)), &stream, threads) {
            assert!(
                released.is_empty(),
                "{form} ({threads} threads) released plaintext"
            );
            assert_mismatch(&error.unwrap_or_else(|| panic!("{form} opened it")), form);
        }
    }
}

#[test]
fn the_expected_segment_size_opens_through_every_form() {
    let stream = stream();
    for threads in [1, 3] {
        for (form, released, error) in every_form(Some(size(SEALED)), &stream, threads) {
            assert!(error.is_none(), "{form} ({threads} threads): {error:?}");
            assert_eq!(released, plaintext(LEN), "{form} ({threads} threads)");
        }
    }
}

#[test]
fn without_an_expectation_the_prefix_decides() {
    let stream = stream();
    for (form, released, error) in every_form(None, &stream, 1) {
        assert!(error.is_none(), "{form}: {error:?}");
        assert_eq!(released, plaintext(LEN), "{form}");
    }
    let key = key();
    let opener = Opener::new(&key, AD, Options::default());
    assert_eq!(opener.expected_segment_size(), None);
    assert_eq!(
        opener
            .expect_segment_size(size(SEALED))
            .expected_segment_size(),
        Some(size(SEALED))
    );
}

/// The check reads nothing past the prefix and header: a stream cut right
/// after them, or with garbage after them, gets the same error.
#[test]
fn the_mismatch_is_found_from_the_header_alone() {
    let stream = stream();
    let key = key();
    let opener = Opener::new(&key, AD, Options::default()).expect_segment_size(size(OTHER));
    let header = &stream[..atrest_stream::format::HEADER_LEN];
    assert_mismatch(&opener.reader(header).err().unwrap(), "reader, header only");
    assert_mismatch(&opener.open(header).unwrap_err(), "open, header only");
    let mut garbage = header.to_vec();
    garbage.extend_from_slice(&[0xa5; 1000]);
    assert_mismatch(
        &opener.reader(&garbage[..]).err().unwrap(),
        "reader, garbage",
    );
    assert_mismatch(
        &opener.open_stream(&garbage[..], Vec::new()).unwrap_err(),
        "open_stream, garbage",
    );
}

/// The mismatch is reported ahead of a wrong key: the record and the stream
/// disagree before any key is involved.
#[test]
fn the_mismatch_is_reported_before_the_key_commitment() {
    let stream = stream();
    let other_key = atrest_filekey::FileKey::from_secret_bytes(&[7; 32]);
    let opener = Opener::new(&other_key, AD, Options::default());
    assert!(matches!(
        opener.open(&stream),
        Err(Error::CommitmentMismatch)
    ));
    assert_mismatch(
        &opener
            .expect_segment_size(size(OTHER))
            .open(&stream)
            .unwrap_err(),
        "open, wrong key",
    );
}

#[test]
fn through_io_error_it_is_invalid_data_and_typed() {
    let error = std::io::Error::from(mismatch());
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    assert_mismatch(&Error::from_io(error), "io round trip");
    assert_eq!(
        mismatch().to_string(),
        "the stream's segment size is 4096 bytes, not the expected 65536 bytes"
    );
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn the_async_reader_refuses_it_too() {
    use tokio::io::AsyncReadExt;
    let stream = stream();
    let key = key();
    let opener = Opener::new(&key, AD, Options::default());
    let error = opener
        .expect_segment_size(size(OTHER))
        .async_reader(&stream[..])
        .await
        .err()
        .unwrap();
    assert_mismatch(&error, "async_reader");

    let mut released = Vec::new();
    opener
        .expect_segment_size(size(SEALED))
        .async_reader(&stream[..])
        .await
        .unwrap()
        .read_to_end(&mut released)
        .await
        .unwrap();
    assert_eq!(released, plaintext(LEN));
}
