//! Interoperability with Google Tink's AES-GCM-HKDF streaming AEAD, through
//! Tink's Python package (installed by `scripts/test` into
//! `target/tink-venv`, or named by `ATREST_TINK_PYTHON`).
//!
//! Both directions, across segment sizes and lengths: an atrest body decrypts
//! with Tink given the file key and `prefix || context` as associated data,
//! and a Tink ciphertext made that way decrypts with atrest once the prefix is
//! put in front.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use atrest_filekey::FileKey;
use atrest_stream::format::{Extent, Layout, PREFIX_LEN};
use atrest_stream::{Opener, Options, Sealer};
use atrest_test_support::{TempDir, plaintext};
use common::{boundary_lengths, size};

fn tink_python() -> PathBuf {
    if let Some(path) = std::env::var_os("ATREST_TINK_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/tink-venv/bin/python");
    assert!(
        venv.exists(),
        "Tink's Python package is needed for this test: run scripts/test (which installs it into \
         target/tink-venv), or set ATREST_TINK_PYTHON to a Python that has `tink` installed"
    );
    venv
}

#[test]
fn atrest_and_tink_read_each_others_streams() {
    let dir = TempDir::new("stream-tink-interop");
    let mut cases = Vec::new();
    let mut expected = Vec::new();
    for (i, s) in [256u32, 1000, 4096, 65536].into_iter().enumerate() {
        let mut lengths = boundary_lengths(s);
        lengths.push(1 << 20);
        for (j, len) in lengths.into_iter().enumerate() {
            let name = format!("s{s}_n{len}");
            let key = FileKey::from_secret_bytes(&[(i * 16 + j) as u8 + 1; 32]);
            let context = format!("tenant {i} / file {j} / version 1").into_bytes();
            let data = plaintext(len);
            let stream = Sealer::new(&key, &context, Options::from(size(s)))
                .seal(&data)
                .unwrap();
            let mut tink_ad = Sealer::new(&key, b"", Options::from(size(s)))
                .envelope_prefix()
                .to_vec();
            assert_eq!(tink_ad[..], stream[..PREFIX_LEN]);
            tink_ad.extend_from_slice(&context);

            let write = |suffix: &str, bytes: &[u8]| {
                std::fs::write(dir.join(format!("{name}.{suffix}")), bytes).unwrap()
            };
            write("key", key.expose_secret());
            write("plaintext", &data);
            write("ad", &tink_ad);
            write("atrest_body", &stream[PREFIX_LEN..]);
            cases.push(serde_json::json!({ "name": name, "segment_size": s }));
            expected.push((name, key, context, data, s));
        }
    }
    std::fs::write(
        dir.join("job.json"),
        serde_json::json!({ "cases": cases }).to_string(),
    )
    .unwrap();

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tink_interop.py");
    let output = Command::new(tink_python())
        .arg(&script)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "Tink failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    for (name, key, context, data, s) in &expected {
        let read = |suffix: &str| std::fs::read(dir.join(format!("{name}.{suffix}"))).unwrap();
        assert_eq!(
            &read("tink_plaintext"),
            data,
            "{name}: Tink's decryption of the atrest body"
        );

        let tink_body = read("tink_body");
        let mut stream = Sealer::new(key, b"", Options::from(size(*s)))
            .envelope_prefix()
            .to_vec();
        stream.extend_from_slice(&tink_body);
        assert_eq!(
            &Opener::new(key, context, Options::default())
                .open(&stream)
                .unwrap(),
            data,
            "{name}: atrest's decryption of Tink's stream"
        );
        assert_eq!(
            stream.len() as u64,
            Layout::new(size(*s))
                .for_plaintext(data.len() as u64)
                .map(Extent::stream_len)
                .unwrap(),
            "{name}: Tink and atrest split the plaintext the same way"
        );
        // The wrong context fails for Tink's stream too.
        assert!(
            Opener::new(key, b"another context", Options::default())
                .open(&stream)
                .is_err()
        );
    }
}
