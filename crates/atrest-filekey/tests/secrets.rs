//! No key type lets its bytes reach `Debug` output.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use atrest_filekey::{FileKey, Kek, KeyId, KeyVersion, OsRng};

/// True if `text` contains the bytes in any common rendering.
fn leaks(text: &str, secret: &[u8]) -> bool {
    let lower = hex::encode(secret);
    let upper = lower.to_uppercase();
    let decimal = format!("{secret:?}");
    let first_bytes = format!("{:?}", &secret[..4])
        .trim_end_matches(']')
        .to_string();
    text.contains(&lower)
        || text.contains(&upper)
        || text.contains(&decimal)
        || text.contains(&first_bytes)
}

#[test]
fn file_key_debug_shows_no_bytes() {
    let key = FileKey::generate().unwrap();
    for text in [format!("{key:?}"), format!("{key:#?}")] {
        assert!(!leaks(&text, key.expose_secret()), "{text}");
        assert!(text.starts_with("FileKey"));
    }
}

#[test]
fn kek_debug_shows_only_id_and_version() {
    let secret = [0xa5u8; 32];
    let id = KeyId::random(&mut OsRng).unwrap();
    let kek = Kek::from_secret_bytes(id, KeyVersion::FIRST, &secret);
    let text = format!("{kek:?}");
    assert!(!leaks(&text, &secret), "{text}");
    assert!(!text.contains("165"), "{text}"); // 0xa5 in decimal
    assert!(text.contains(&id.to_string()), "{text}");
}

#[test]
fn commitment_is_public_and_compared_in_constant_time() {
    let key = FileKey::generate().unwrap();
    let commitment = key.commitment();
    assert!(commitment.verify(&key));
    assert!(!commitment.verify(&FileKey::generate().unwrap()));
    // The commitment is not the key.
    assert_ne!(commitment.as_bytes(), key.expose_secret());
}
