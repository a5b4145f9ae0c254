//! Bytes appended after a stream's last segment: every API reports the same
//! typed error, whichever way it reads the stream.

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

use atrest_stream::{Backend, Error, Opener, Options, Parallelism, Sealer};
use atrest_test_support::plaintext;
use common::{AD, capacities, key, size, stream_read};

const S: u32 = 256;

/// What every API says about `stream`, by API name.
fn every_api(stream: &[u8]) -> Vec<(&'static str, Error)> {
    let key = key();
    let backend = Backend::default();
    let mut errors = vec![
        (
            "decrypt",
            Opener::new(&key, AD, Options::default())
                .open(stream)
                .unwrap_err(),
        ),
        (
            "decrypt_parallel",
            Opener::new(
                &key,
                AD,
                Options::default()
                    .backend(backend)
                    .parallelism(Parallelism::threads(3)),
            )
            .open(stream)
            .unwrap_err(),
        ),
        (
            "decrypt_to",
            Opener::new(
                &key,
                AD,
                Options::default()
                    .backend(backend)
                    .parallelism(Parallelism::threads(1)),
            )
            .open_into(stream, &mut vec![0; stream.len()])
            .unwrap_err(),
        ),
        (
            "RandomAccess",
            Opener::new(&key, AD, Options::default())
                .random_access(stream)
                .err()
                .unwrap(),
        ),
        (
            "decrypt_stream",
            Opener::new(
                &key,
                AD,
                Options::default()
                    .backend(backend)
                    .parallelism(Parallelism::threads(2)),
            )
            .open_stream(stream, Vec::new())
            .unwrap_err(),
        ),
        (
            "Decryptor seek",
            Opener::new(&key, AD, Options::default())
                .reader(Cursor::new(stream))
                .and_then(|mut d| d.seek(SeekFrom::End(0)).map_err(Error::from_io))
                .unwrap_err(),
        ),
        (
            "Decryptor read_to_end",
            Opener::new(&key, AD, Options::default())
                .reader(stream)
                .and_then(|mut d| d.read_to_end(&mut Vec::new()).map_err(Error::from_io))
                .unwrap_err(),
        ),
        #[cfg(feature = "tokio")]
        (
            "async",
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(async {
                    use tokio::io::AsyncReadExt;
                    let mut d = Opener::new(&key, AD, Options::default())
                        .async_reader(stream)
                        .await?;
                    d.read_to_end(&mut Vec::new()).await.map_err(Error::from_io)
                })
                .unwrap_err(),
        ),
    ];
    for chunk in [1usize, 100, 4096] {
        errors.push((
            "Decryptor read",
            stream_read(&key, AD, stream, chunk).1.unwrap(),
        ));
    }
    errors
}

#[test]
fn bytes_after_a_full_last_segment_are_trailing_data_everywhere() {
    let (p0, p) = capacities(S);
    // Plaintexts whose last segment is full: one, two and five segments.
    for len in [p0, p0 + p, p0 + 4 * p] {
        let data = plaintext(len);
        let stream = Sealer::new(&key(), AD, Options::from(size(S)))
            .seal(&data)
            .unwrap();
        for extra in [1usize, 15, 16, 17, 255, 256, 257, 3 * 256 + 5] {
            let mut longer = stream.clone();
            longer.extend(std::iter::repeat_n(0xa5, extra));
            for (api, error) in every_api(&longer) {
                assert!(
                    matches!(error, Error::TrailingData),
                    "len {len}, {extra} appended, {api}: {error:?}"
                );
            }
            // A cut stream stays a cut stream.
            let mut cut = stream[..stream.len() - 1].to_vec();
            cut.extend(std::iter::repeat_n(0xa5, extra.min(1)));
            assert!(!matches!(
                Opener::new(&key(), AD, Options::default()).open(&cut),
                Err(Error::TrailingData)
            ));
        }
    }
}

#[test]
fn bytes_after_a_short_last_segment_fail_authentication_everywhere() {
    // The appended bytes lengthen the last segment: indistinguishable from
    // tampering with it.
    let (p0, p) = capacities(S);
    let data = plaintext(p0 + 2 * p + 100);
    let stream = Sealer::new(&key(), AD, Options::from(size(S)))
        .seal(&data)
        .unwrap();
    for extra in [1usize, 16, 100, 140, 156, 157, 172, 173, 500] {
        let mut longer = stream.clone();
        longer.extend(std::iter::repeat_n(0x5a, extra));
        for (api, error) in every_api(&longer) {
            assert!(
                matches!(error, Error::AuthenticationFailed),
                "{extra} appended, {api}: {error:?}"
            );
        }
    }
}

#[test]
fn trailing_data_is_invalid_data_through_io() {
    let error = std::io::Error::from(Error::TrailingData);
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    assert!(matches!(Error::from_io(error), Error::TrailingData));
}
