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

use atrest_stream::format::{Extent, Layout};
use atrest_stream::{Opener, Options, Parallelism, Sealer, SegmentSize};
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
            let stream = Sealer::new(&key, AD, Options::from(size(s)))
                .seal(&data)
                .unwrap();
            assert_eq!(
                stream.len() as u64,
                Layout::new(size(s))
                    .for_plaintext(len as u64)
                    .map(Extent::stream_len)
                    .unwrap(),
                "s={s} len={len}"
            );

            assert_eq!(
                Opener::new(&key, AD, Options::default())
                    .open(&stream)
                    .unwrap(),
                data,
                "one-call, s={s} len={len}"
            );
            for chunk in [1, 7, 4096, 1 << 20] {
                let (out, error) = stream_read(&key, AD, &stream, chunk);
                assert!(error.is_none(), "s={s} len={len} chunk={chunk}: {error:?}");
                assert_eq!(out, data, "streaming, s={s} len={len} chunk={chunk}");
            }
            let access = Opener::new(&key, AD, Options::default())
                .random_access(&stream[..])
                .unwrap();
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
                let mut encryptor = Sealer::new(&key, AD, Options::from(size(s)))
                    .writer(Vec::new())
                    .unwrap();
                for piece in data.chunks(chunk) {
                    encryptor.write_all(piece).unwrap();
                    // Flushing mid-stream writes whole segments only.
                    encryptor.flush().unwrap();
                }
                let stream = encryptor.finish().unwrap();
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
                    "s={s} len={len} chunk={chunk}"
                );
            }
        }
    }
}

#[test]
fn streams_are_randomized() {
    let key = key();
    let a = Sealer::new(&key, AD, Options::default())
        .seal(b"same plaintext")
        .unwrap();
    let b = Sealer::new(&key, AD, Options::default())
        .seal(b"same plaintext")
        .unwrap();
    assert_eq!(
        a[..atrest_stream::format::PREFIX_LEN],
        b[..atrest_stream::format::PREFIX_LEN],
        "the prefix is deterministic"
    );
    assert_ne!(
        a[atrest_stream::format::PREFIX_LEN..],
        b[atrest_stream::format::PREFIX_LEN..],
        "salt and nonce prefix are random"
    );
}

#[test]
fn the_associated_data_is_not_stored() {
    let key = key();
    let ad = b"tenant-0f8fad5b file-7c9e6679 name=report.pdf";
    let stream = Sealer::new(&key, ad, Options::default())
        .seal(&plaintext(10_000))
        .unwrap();
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
    let mut encryptor = Sealer::new(&key, AD, Options::default())
        .writer(std::io::BufWriter::new(file))
        .unwrap();
    encryptor.write_all(&data).unwrap();
    let writer = encryptor.finish().unwrap();
    writer.into_inner().unwrap().sync_all().unwrap();

    let mut out = Vec::new();
    Opener::new(&key, AD, Options::default())
        .reader(std::fs::File::open(&path).unwrap())
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, data);
    let access = Opener::new(&key, AD, Options::default())
        .random_access(std::fs::File::open(&path).unwrap())
        .unwrap();
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
        let mut encryptor = Sealer::new(&key, AD, Options::from(size(s))).writer(Vec::new()).unwrap();
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
    let options = Options::from(size(4096));
    let needed = Layout::new(size(4096))
        .for_plaintext(data.len() as u64)
        .map(Extent::stream_len)
        .unwrap() as usize;
    let mut out = vec![0u8; needed + 10];
    for parallelism in [
        Parallelism::One,
        Parallelism::threads(2),
        Parallelism::AllCores,
    ] {
        let n = Sealer::new(&key, AD, options.parallelism(parallelism))
            .seal_into(&data, &mut out)
            .unwrap();
        assert_eq!(n, needed);
        let mut back = vec![0u8; data.len()];
        let backend = atrest_stream::Backend::default();
        let m = Opener::new(
            &key,
            AD,
            Options::default().backend(backend).parallelism(parallelism),
        )
        .open_into(&out[..n], &mut back)
        .unwrap();
        assert_eq!((m, &back), (data.len(), &data));
        // Too small a buffer is a typed error, not a panic or a partial result.
        let short = Opener::new(
            &key,
            AD,
            Options::default().backend(backend).parallelism(parallelism),
        )
        .open_into(&out[..n], &mut back[..10]);
        assert!(
            matches!(short, Err(atrest_stream::Error::OutputTooSmall { needed }) if needed == data.len() as u64)
        );
        // A tampered stream leaves the output wiped.
        out[5000] ^= 1;
        assert!(
            Opener::new(
                &key,
                AD,
                Options::default().backend(backend).parallelism(parallelism)
            )
            .open_into(&out[..n], &mut back)
            .is_err()
        );
        assert!(back.iter().all(|&b| b == 0));
        out[5000] ^= 1;
    }
    let mut small = vec![0u8; 100];
    assert!(matches!(
        Sealer::new(&key, AD, options.parallelism(Parallelism::threads(1)))
            .seal_into(&data, &mut small),
        Err(atrest_stream::Error::OutputTooSmall { .. })
    ));
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "dropped without `finish`")]
fn an_unfinished_encryptor_does_not_go_unnoticed() {
    let key = key();
    let mut encryptor = Sealer::new(&key, AD, Options::default())
        .writer(Vec::new())
        .unwrap();
    encryptor.write_all(b"never finished").unwrap();
    drop(encryptor);
}

#[test]
fn an_encryptor_whose_writer_failed_may_be_dropped() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let key = key();
    let mut encryptor = Sealer::new(&key, AD, Options::from(size(256)))
        .writer(Broken)
        .unwrap();
    assert!(encryptor.write_all(&plaintext(10_000)).is_err());
    drop(encryptor);
}

#[test]
fn parallelism_counts_threads() {
    assert_eq!(Parallelism::threads(0), Parallelism::One);
    assert_eq!(Parallelism::threads(1), Parallelism::One);
    assert_eq!(Parallelism::threads(3).get(), 3);
    assert!(Parallelism::AllCores.get() >= 1);
    assert_eq!(Options::default().parallelism, Parallelism::One);
}
