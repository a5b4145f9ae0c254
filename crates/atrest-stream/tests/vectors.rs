//! The published vectors (`vectors/stream_v1.json`, made by an independent
//! implementation): valid streams decrypt to their plaintext through every
//! reader; invalid ones fail with the named error and release nothing that
//! did not verify.

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
use atrest_stream::{Error, Opener, Options};
use common::stream_read;

fn unhex(value: &serde_json::Value) -> Vec<u8> {
    hex::decode(value.as_str().unwrap()).unwrap()
}

fn error_name(error: &Error) -> &'static str {
    match error {
        Error::Truncated => "Truncated",
        Error::AuthenticationFailed => "AuthenticationFailed",
        Error::TrailingData => "TrailingData",
        Error::CommitmentMismatch => "CommitmentMismatch",
        Error::UnsupportedVersion(_) => "UnsupportedVersion",
        Error::UnsupportedSuite(_) => "UnsupportedSuite",
        Error::Malformed(_) => "Malformed",
        _ => "other",
    }
}

#[test]
fn published_vectors() {
    let file: serde_json::Value =
        serde_json::from_str(include_str!("../vectors/stream_v1.json")).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for v in file["vectors"].as_array().unwrap() {
        let key = FileKey::from_secret_bytes(&unhex(&v["key"]).try_into().unwrap());
        let (context, plaintext, stream) = (
            unhex(&v["context"]),
            unhex(&v["plaintext"]),
            unhex(&v["stream"]),
        );
        let comment = v["comment"].as_str().unwrap();
        if v["result"] == "valid" {
            assert_eq!(
                Opener::new(&key, &context, Options::default())
                    .open(&stream)
                    .unwrap(),
                plaintext,
                "{comment}"
            );
            let (out, error) = stream_read(&key, &context, &stream, 1000);
            assert!(error.is_none(), "{comment}: {error:?}");
            assert_eq!(out, plaintext, "{comment}");
            let access = Opener::new(&key, &context, Options::default())
                .random_access(&stream[..])
                .unwrap();
            assert_eq!(access.plaintext_len(), plaintext.len() as u64);
            valid += 1;
        } else {
            let expected = v["error"].as_str().unwrap();
            let error = Opener::new(&key, &context, Options::default())
                .open(&stream)
                .unwrap_err();
            assert_eq!(error_name(&error), expected, "{comment}: {error:?}");
            let (out, error) = stream_read(&key, &context, &stream, 1000);
            let error = error.unwrap_or_else(|| panic!("{comment}: streaming read accepted it"));
            assert!(plaintext.starts_with(&out), "{comment}");
            if expected != "AuthenticationFailed" {
                assert_eq!(
                    error_name(&error),
                    expected,
                    "{comment}: streaming {error:?}"
                );
            }
            invalid += 1;
        }
    }
    assert!(valid >= 7 && invalid >= 7);
}
