//! What a key server (OpenBao or Vault transit) answers the root-key
//! provider: encryption and decryption answers, error bodies, key
//! information, and the ciphertexts it gives back to be stored. Nothing
//! may panic; a ciphertext accepted is of the version asked for.
#![no_main]

#[path = "../../crates/atrest-openbao/src/wire.rs"]
#[allow(dead_code)]
mod wire;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wire::encrypted(data);
    let _ = wire::decrypted(data);
    let _ = wire::Errors::parse(data);
    let _ = serde_json::from_slice::<wire::Answer<wire::KeyData>>(data);
    let version = data.first().map_or(1, |b| u32::from(*b));
    if let Some(text) = wire::transit_ciphertext(data, version) {
        assert!(text.starts_with(&format!("vault:v{version}:")), "{text}");
        assert!(text.len() <= wire::MAX_WRAPPED);
    }
});
