//! Round trips at every boundary length, for several segment sizes, through
//! every adapter, with writes and reads of arbitrary sizes.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use std::io::{Read, Write};

use atrest_stream::{
    Decryptor, Encryptor, RandomAccess, SegmentSize, decrypt, encrypt, encrypt_with, stream_len,
};
use atrest_test_support::{TempDir, plaintext};
use common::{AD, boundary_lengths, key, size, stream_read};
use proptest::prelude::*;

const SIZES: [u32; 4] = [256, 333, 4096, 65536];

#[test]
fn every_boundary_length_round_trips_through_every_adapter() {
    let key = key();
    for s in SIZES {
        for len in boundary_lengths(s) {
            let data = plaintext(len);
            let stream = encrypt_with(&key, AD, &data, size(s)).unwrap();
            assert_eq!(
                stream.len() as u64,
                stream_len(len as u64, size(s)).unwrap(),
                "s={s} len={len}"
            );

            assert_eq!(
                decrypt(&key, AD, &stream).unwrap(),
                data,
                "one-call, s={s} len={len}"
            );
            for chunk in [1, 7, 4096, 1 << 20] {
                let (out, error) = stream_read(&key, AD, &stream, chunk);
                assert!(error.is_none(), "s={s} len={len} chunk={chunk}: {error:?}");
                assert_eq!(out, data, "streaming, s={s} len={len} chunk={chunk}");
            }
            let access = RandomAccess::new(&stream[..], &key, AD).unwrap();
            assert_eq!(access.plaintext_len(), len as u64);
            let mut out = vec![0u8; len];
            assert_eq!(access.read_at(&mut out, 0).unwrap(), len);
            assert_eq!(out, data);
        }
    }
}

#[test]
fn writes_of_any_size_give_a_valid_stream() {
    let key = key();
    for s in [256, 4096] {
        for len in boundary_lengths(s) {
            let data = plaintext(len);
            for chunk in [1, 13, 255, 4096] {
                let mut encryptor = Encryptor::with_options(Vec::new(), &key, AD, size(s)).unwrap();
                for piece in data.chunks(chunk) {
                    encryptor.write_all(piece).unwrap();
                    // Flushing mid-stream writes whole segments only.
                    encryptor.flush().unwrap();
                }
                let stream = encryptor.finish().unwrap();
                assert_eq!(
                    stream.len() as u64,
                    stream_len(len as u64, size(s)).unwrap()
                );
                assert_eq!(
                    decrypt(&key, AD, &stream).unwrap(),
                    data,
                    "s={s} len={len} chunk={chunk}"
                );
            }
        }
    }
}

#[test]
fn streams_are_randomized() {
    let key = key();
    let a = encrypt(&key, AD, b"same plaintext").unwrap();
    let b = encrypt(&key, AD, b"same plaintext").unwrap();
    assert_eq!(
        a[..atrest_stream::PREFIX_LEN],
        b[..atrest_stream::PREFIX_LEN],
        "the prefix is deterministic"
    );
    assert_ne!(
        a[atrest_stream::PREFIX_LEN..],
        b[atrest_stream::PREFIX_LEN..],
        "salt and nonce prefix are random"
    );
}

#[test]
fn the_associated_data_is_not_stored() {
    let key = key();
    let ad = b"tenant-0f8fad5b file-7c9e6679 name=report.pdf";
    let stream = encrypt(&key, ad, &plaintext(10_000)).unwrap();
    for window in [&ad[..8], &ad[ad.len() - 8..], &b"report"[..]] {
        assert!(!stream.windows(window.len()).any(|w| w == window));
    }
}

#[test]
fn segment_size_limits() {
    assert!(SegmentSize::new(255).is_err());
    assert!(SegmentSize::new(256).is_ok());
    assert!(SegmentSize::new(16 << 20).is_ok());
    assert!(SegmentSize::new((16 << 20) + 1).is_err());
    assert_eq!(SegmentSize::default(), SegmentSize::DEFAULT);
}

#[test]
fn a_decryptor_over_a_file_streams() {
    let key = key();
    let dir = TempDir::new("stream-roundtrip");
    let path = dir.join("blob");
    let data = plaintext(300_000);
    let file = std::fs::File::create(&path).unwrap();
    let mut encryptor = Encryptor::new(std::io::BufWriter::new(file), &key, AD).unwrap();
    encryptor.write_all(&data).unwrap();
    let writer = encryptor.finish().unwrap();
    writer.into_inner().unwrap().sync_all().unwrap();

    let mut out = Vec::new();
    Decryptor::new(std::fs::File::open(&path).unwrap(), &key, AD)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, data);
    let access = RandomAccess::new(std::fs::File::open(&path).unwrap(), &key, AD).unwrap();
    assert_eq!(access.plaintext_len(), 300_000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_lengths_and_chunkings(
        len in 0usize..3000,
        s in prop::sample::select(vec![256u32, 300, 512, 1000]),
        write_chunk in 1usize..600,
        read_chunk in 1usize..600,
    ) {
        let key = key();
        let data = plaintext(len);
        let mut encryptor = Encryptor::with_options(Vec::new(), &key, AD, size(s)).unwrap();
        for piece in data.chunks(write_chunk) {
            encryptor.write_all(piece).unwrap();
        }
        let stream = encryptor.finish().unwrap();
        let (out, error) = stream_read(&key, AD, &stream, read_chunk);
        prop_assert!(error.is_none());
        prop_assert_eq!(out, data);
    }
}

#[test]
fn encrypting_and_decrypting_into_caller_buffers() {
    let key = key();
    let data = plaintext(300_000);
    let options = atrest_stream::Options::from(size(4096));
    let needed = stream_len(data.len() as u64, size(4096)).unwrap() as usize;
    let mut out = vec![0u8; needed + 10];
    for threads in [1, 2, 0] {
        let n = atrest_stream::encrypt_to(&key, AD, &data, options, threads, &mut out).unwrap();
        assert_eq!(n, needed);
        let mut back = vec![0u8; data.len()];
        let backend = atrest_stream::Backend::default();
        let m =
            atrest_stream::decrypt_to(&key, AD, &out[..n], backend, threads, &mut back).unwrap();
        assert_eq!((m, &back), (data.len(), &data));
        // Too small a buffer is a typed error, not a panic or a partial result.
        let short =
            atrest_stream::decrypt_to(&key, AD, &out[..n], backend, threads, &mut back[..10]);
        assert!(
            matches!(short, Err(atrest_stream::Error::OutputTooSmall { needed }) if needed == data.len() as u64)
        );
        // A tampered stream leaves the output wiped.
        out[5000] ^= 1;
        assert!(
            atrest_stream::decrypt_to(&key, AD, &out[..n], backend, threads, &mut back).is_err()
        );
        assert!(back.iter().all(|&b| b == 0));
        out[5000] ^= 1;
    }
    let mut small = vec![0u8; 100];
    assert!(matches!(
        atrest_stream::encrypt_to(&key, AD, &data, options, 1, &mut small),
        Err(atrest_stream::Error::OutputTooSmall { .. })
    ));
}
