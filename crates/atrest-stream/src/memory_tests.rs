//! Memory committed before the first tag check follows the bytes read, not
//! the segment size a prefix declares.
//!
//! The attack: take a genuine stream (so the key commitment verifies) and
//! raise the segment size in its prefix to the largest the format allows.
//! The prefix is bound into the stream key, so no segment will verify; the
//! question is what a reader allocates before it finds out.

use std::io::{Cursor, Read, Seek, SeekFrom};

use atrest_filekey::FileKey;

use crate::format::{HEADER_LEN, SegmentSize};
use crate::{Error, Opener, Options, Parallelism, Sealer};

const AD: &[u8] = b"memory";
/// The doubling buffers start at 16 KiB.
const INITIAL: usize = 16 * 1024;

fn key() -> FileKey {
    FileKey::from_secret_bytes(&[0x5a; 32])
}

/// A genuine stream whose prefix now declares 16 MiB segments, cut to
/// `body` bytes after the header.
fn claiming_huge_segments(body: usize) -> Vec<u8> {
    let plaintext = vec![0x11u8; body];
    let mut stream = Sealer::new(&key(), AD, Options::default())
        .seal(&plaintext)
        .unwrap();
    stream.truncate(HEADER_LEN + body);
    stream[6..10].copy_from_slice(&SegmentSize::MAX.get().to_be_bytes());
    stream
}

/// What the decoder may hold after reading `read` bytes of a segment: its
/// ciphertext buffer doubles as data arrives (at most twice what was read,
/// and never less than the first 16 KiB read), and the segment's plaintext
/// buffer is as long as the segment read.
fn bound(read: usize) -> usize {
    2 * read.max(INITIAL) + read
}

#[test]
fn sequential_reader() {
    for body in [20, 1000, 100_000, 300_000] {
        let stream = claiming_huge_segments(body);
        let key = key();
        let opener = Opener::new(&key, AD, Options::default());
        let mut reader = opener.reader(&stream[..]).unwrap();
        let error = reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(
            matches!(Error::from_io(error), Error::AuthenticationFailed),
            "body {body}"
        );
        let allocated = reader.allocated();
        assert!(
            allocated <= bound(body),
            "body {body}: {allocated} bytes allocated"
        );
        assert!(allocated < 1 << 20, "a 16 MiB segment was allocated");
    }
}

#[test]
fn sequential_reader_fed_a_few_bytes_at_a_time() {
    /// Hands out at most 7 bytes per read.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let stream = claiming_huge_segments(5000);
    let key = key();
    let opener = Opener::new(&key, AD, Options::default());
    let mut reader = opener.reader(Trickle(&stream)).unwrap();
    let mut out = [0u8; 100];
    let error = reader.read(&mut out).unwrap_err();
    assert!(matches!(Error::from_io(error), Error::AuthenticationFailed));
    assert!(reader.allocated() <= bound(5000));
}

#[test]
fn seekable_reader_is_bounded_by_the_source() {
    for body in [20, 100_000] {
        let stream = claiming_huge_segments(body);
        let key = key();
        let opener = Opener::new(&key, AD, Options::default());
        let mut reader = opener.reader(Cursor::new(&stream)).unwrap();
        let error = reader.seek(SeekFrom::Start(1)).unwrap_err();
        assert!(matches!(Error::from_io(error), Error::AuthenticationFailed));
        // A seek sizes the buffers from the source's length, which the
        // source holds in full.
        assert!(
            reader.allocated() <= 2 * stream.len(),
            "body {body}: {}",
            reader.allocated()
        );
    }
}

#[cfg(feature = "tokio")]
#[::tokio::test]
async fn async_reader() {
    use ::tokio::io::AsyncReadExt;
    for body in [20, 100_000] {
        let stream = claiming_huge_segments(body);
        let key = key();
        let opener = Opener::new(&key, AD, Options::default());
        let mut reader = opener.async_reader(&stream[..]).await.unwrap();
        let error = reader.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(matches!(Error::from_io(error), Error::AuthenticationFailed));
        assert!(reader.allocated() <= bound(body), "body {body}");
    }
}

/// The forms without an observable buffer refuse the stream with the same
/// typed error (their buffers are sized by the data: the pipeline's slots
/// grow as the chunker's test shows, the whole-buffer and random-access
/// forms by the stream's actual length).
#[test]
fn every_other_form_fails_typed() {
    let stream = claiming_huge_segments(1000);
    let key = key();
    for threads in [1, 4] {
        let opener = Opener::new(
            &key,
            AD,
            Options::default().parallelism(Parallelism::threads(threads)),
        );
        assert!(matches!(
            opener.open(&stream),
            Err(Error::AuthenticationFailed)
        ));
        assert!(matches!(
            opener.open_into(&stream, &mut [0u8; 2000]),
            Err(Error::AuthenticationFailed)
        ));
        assert!(matches!(
            opener.random_access(&stream[..]).err(),
            Some(Error::AuthenticationFailed)
        ));
        assert!(matches!(
            opener.open_stream(&stream[..], Vec::new()),
            Err(Error::AuthenticationFailed)
        ));
    }
}

/// With the segment size the caller expects, the stream is refused before
/// any segment buffer exists at all.
#[test]
fn an_expected_segment_size_refuses_it_before_any_buffer() {
    let stream = claiming_huge_segments(1000);
    let key = key();
    let opener =
        Opener::new(&key, AD, Options::default()).expect_segment_size(SegmentSize::DEFAULT);
    assert!(matches!(
        opener.reader(&stream[..]).err(),
        Some(Error::SegmentSizeMismatch {
            expected: 65536,
            found: 16_777_216
        })
    ));
}
