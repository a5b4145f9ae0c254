//! What a meeting participant's client reads from the service: a delivered
//! key's wire form, and the ciphertext it decrypts with it. Nothing may
//! panic; nothing unauthenticated is ever handed on.
#![no_main]

use atrest::{DeliveredKey, WriterSink};
use libfuzzer_sys::fuzz_target;

/// A well-formed delivery for a 100-byte plaintext (the key is fixed: no
/// fuzzed ciphertext can authenticate under it).
const WIRE: &str = r#"{"format":"atrest-delivered-key/1","tenant":"0123456789abcdef0123456789abcdef","file":"fedcba9876543210fedcba9876543210","version":1,"segment_size":4096,"plaintext_len":100,"blob_len":156,"key":"0707070707070707070707070707070707070707070707070707070707070707"}"#;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = DeliveredKey::from_wire(text);
    }
    let key = DeliveredKey::from_wire(WIRE).expect("the fixed delivery parses");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut out = WriterSink(Vec::new());
    let opened = runtime.block_on(key.open(data, &mut out));
    assert!(opened.is_err(), "a fuzzed ciphertext authenticated");
    assert!(
        out.0.is_empty(),
        "plaintext handed on before it authenticated"
    );
});
