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

use atrest_stream::{
    Backend, Decryptor, Error, RandomAccess, decrypt, decrypt_parallel, decrypt_stream, decrypt_to,
    encrypt_with,
};
use atrest_test_support::plaintext;
use common::{AD, capacities, key, size, stream_read};

const S: u32 = 256;

/// What every API says about `stream`, by API name.
fn every_api(stream: &[u8]) -> Vec<(&'static str, Error)> {
    let key = key();
    let backend = Backend::default();
    let mut errors = vec![
        ("decrypt", decrypt(&key, AD, stream).unwrap_err()),
        (
            "decrypt_parallel",
            decrypt_parallel(&key, AD, stream, backend, 3).unwrap_err(),
        ),
        (
            "decrypt_to",
            decrypt_to(&key, AD, stream, backend, 1, &mut vec![0; stream.len()]).unwrap_err(),
        ),
        (
            "RandomAccess",
            RandomAccess::new(stream, &key, AD).err().unwrap(),
        ),
        (
            "decrypt_stream",
            decrypt_stream(stream, Vec::new(), &key, AD, backend, 2).unwrap_err(),
        ),
        (
            "Decryptor seek",
            Decryptor::new(Cursor::new(stream), &key, AD)
                .and_then(|mut d| d.seek(SeekFrom::End(0)).map_err(Error::from_io))
                .unwrap_err(),
        ),
        (
            "Decryptor read_to_end",
            Decryptor::new(stream, &key, AD)
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
                    let mut d = atrest_stream::AsyncDecryptor::new(stream, &key, AD).await?;
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
        let stream = encrypt_with(&key(), AD, &data, size(S)).unwrap();
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
                decrypt(&key(), AD, &cut),
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
    let stream = encrypt_with(&key(), AD, &data, size(S)).unwrap();
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
