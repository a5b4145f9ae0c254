//! The upload service's token file, as a writer of the deployment
//! directory could leave it. Nothing may panic; every token it yields
//! has a principal the check accepted and a hash of 64 hex digits.
#![no_main]

#[path = "../../crates/atrest-cli/src/bin/atrest-serve/tokens/format.rs"]
#[allow(dead_code)]
mod format;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let valid = |principal: &str| principal.split('@').count() == 2;
    if let Ok(contents) = format::parse(data, valid) {
        assert_eq!(contents.version, format::FORMAT_VERSION);
        for entry in contents.tokens {
            assert!(valid(&entry.principal));
            assert_eq!(entry.sha256.len(), 64);
        }
    }
});
