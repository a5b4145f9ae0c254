//! Parses arbitrary bytes as a tenant record's stored tag (what the key
//! metadata database holds, and any writer of it can set): nothing may
//! panic, and a parsed tag must store back to the same bytes.
#![no_main]

use atrest_tenant::TenantTag;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(tag) = TenantTag::from_slice(data) else {
        return;
    };
    assert_eq!(tag.to_bytes(), data);
    assert_eq!(TenantTag::from_slice(&tag.to_bytes()), Some(tag));
    let _ = format!("{tag:?}");
});
