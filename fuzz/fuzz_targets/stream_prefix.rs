//! Parses arbitrary bytes as an envelope prefix: nothing may panic, and a
//! prefix that parses re-encodes to the same bytes.
#![no_main]

use atrest_stream::format::{
    FORMAT_VERSION, MAGIC, PREFIX_LEN, SUITE_AES256_GCM_HKDF_SHA256, parse_prefix,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bytes) = <[u8; PREFIX_LEN]>::try_from(data) else {
        return;
    };
    if let Ok(prefix) = parse_prefix(&bytes) {
        let mut encoded = Vec::with_capacity(PREFIX_LEN);
        encoded.extend_from_slice(&MAGIC);
        encoded.extend_from_slice(&[FORMAT_VERSION, SUITE_AES256_GCM_HKDF_SHA256]);
        encoded.extend_from_slice(&prefix.segment_size.get().to_be_bytes());
        encoded.extend_from_slice(prefix.commitment.as_bytes());
        assert_eq!(encoded, data);
    }
});
