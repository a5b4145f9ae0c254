//! The tokio adapters produce and accept exactly what the blocking ones do.
#![cfg(feature = "tokio")]
#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use atrest_stream::{Error, Opener, Options, Sealer};
use atrest_test_support::plaintext;
use common::{AD, boundary_lengths, key, size};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn async_round_trips_interoperate_with_the_blocking_adapters() {
    let key = key();
    for s in [256u32, 4096] {
        for len in boundary_lengths(s) {
            let data = plaintext(len);
            let mut encryptor = Sealer::new(&key, AD, Options::from(size(s)))
                .async_writer(Vec::new())
                .unwrap();
            for piece in data.chunks(77) {
                encryptor.write_all(piece).await.unwrap();
            }
            let stream = encryptor.finish().await.unwrap();
            assert_eq!(
                Opener::new(&key, AD, Options::default())
                    .open(&stream)
                    .unwrap(),
                data,
                "async → blocking, s={s} len={len}"
            );

            let blocking = Sealer::new(&key, AD, Options::from(size(s)))
                .seal(&data)
                .unwrap();
            let mut decryptor = Opener::new(&key, AD, Options::default())
                .async_reader(&blocking[..])
                .await
                .unwrap();
            let mut out = Vec::new();
            decryptor.read_to_end(&mut out).await.unwrap();
            assert_eq!(out, data, "blocking → async, s={s} len={len}");
        }
    }
}

#[tokio::test]
async fn shutdown_finishes_the_stream() {
    let key = key();
    let (client, mut server) = tokio::io::duplex(1024);
    let data = plaintext(100_000);
    let writer = tokio::spawn({
        let data = data.clone();
        let key = common::key();
        async move {
            let mut encryptor = Sealer::new(&key, AD, Options::default())
                .async_writer(client)
                .unwrap();
            encryptor.write_all(&data).await.unwrap();
            encryptor.shutdown().await.unwrap();
        }
    });
    let mut stream = Vec::new();
    server.read_to_end(&mut stream).await.unwrap();
    writer.await.unwrap();
    assert_eq!(
        Opener::new(&key, AD, Options::default())
            .open(&stream)
            .unwrap(),
        data
    );
}

#[tokio::test]
async fn async_tampering_fails_with_typed_errors() {
    let key = key();
    let data = plaintext(5000);
    let stream = Sealer::new(&key, AD, Options::from(size(256)))
        .seal(&data)
        .unwrap();
    let mut tampered = stream.clone();
    tampered[1000] ^= 4;
    let mut decryptor = Opener::new(&key, AD, Options::default())
        .async_reader(&tampered[..])
        .await
        .unwrap();
    let error = decryptor.read_to_end(&mut Vec::new()).await.unwrap_err();
    assert!(matches!(Error::from_io(error), Error::AuthenticationFailed));

    let cut = &stream[..stream.len() - 1];
    let mut decryptor = Opener::new(&key, AD, Options::default())
        .async_reader(cut)
        .await
        .unwrap();
    assert!(decryptor.read_to_end(&mut Vec::new()).await.is_err());

    assert!(matches!(
        Opener::new(&key, AD, Options::default())
            .async_reader(&stream[..50])
            .await,
        Err(Error::Truncated)
    ));
}
