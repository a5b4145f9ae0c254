//! The headers a client sends the upload service that it parses itself:
//! `Range`, `If-None-Match`, `If-Range`. Nothing may panic, and a range
//! served is never empty and never past the end of the file.
#![no_main]

#[path = "../../crates/atrest-cli/src/bin/atrest-serve/conditional.rs"]
#[allow(dead_code)]
mod conditional;
#[path = "../../crates/atrest-cli/src/bin/atrest-serve/range.rs"]
#[allow(dead_code)]
mod range;

use libfuzzer_sys::fuzz_target;

const ETAG: &str = "\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.3\"";

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let len = u64::from(u16::from_le_bytes([data[0], data[1]])) * 257;
    let Ok(header) = std::str::from_utf8(&data[2..]) else {
        return;
    };
    match range::requested(Some(header), len) {
        range::Requested::Part(part) => {
            assert!(
                part.start < part.end && part.end <= len,
                "{part:?} of {len}"
            );
        }
        range::Requested::Whole | range::Requested::Unsatisfiable => {}
    }
    let _ = conditional::none_match(header, ETAG);
    // A range applies for the version's own strong tag alone: no date,
    // weak tag or other text.
    let applies = conditional::range_applies(header, ETAG);
    assert!(!applies || header.trim() == ETAG, "{header:?}");
});
