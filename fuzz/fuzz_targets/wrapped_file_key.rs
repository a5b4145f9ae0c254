//! Parses arbitrary bytes as a wrapped file key, re-serializes what parses,
//! and tries to unwrap it: nothing may panic, a parsed key must serialize back
//! to the same bytes, and no arbitrary input may unwrap.
#![no_main]

use atrest_filekey::{
    FileContext, FileId, FileVersion, Kek, KeyId, KeyVersion, TenantId, WrappedFileKey,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(wrapped) = WrappedFileKey::from_bytes(data) else {
        return;
    };
    assert_eq!(wrapped.as_bytes().as_slice(), data);

    let json = serde_json::to_string(&wrapped).unwrap();
    assert_eq!(
        serde_json::from_str::<WrappedFileKey>(&json).unwrap(),
        wrapped
    );

    // Under the KEK the input names, with a fixed secret and context: the
    // input was not made with that secret, so it must not authenticate.
    let kek = Kek::from_secret_bytes(wrapped.kek_id(), wrapped.kek_version(), &[7; 32]);
    let context = FileContext::new(
        TenantId::from_bytes([1; 16]).unwrap(),
        FileId::from_bytes([2; 16]).unwrap(),
        FileVersion::FIRST,
    );
    assert!(kek.unwrap(&wrapped, &context).is_err());
    // Under another KEK id or version it is refused before decryption.
    let other = Kek::from_secret_bytes(
        KeyId::from_bytes([3; 16]).unwrap(),
        KeyVersion::FIRST,
        &[7; 32],
    );
    if (other.id(), other.version()) != (wrapped.kek_id(), wrapped.kek_version()) {
        assert!(matches!(
            other.unwrap(&wrapped, &context),
            Err(atrest_filekey::Error::KekMismatch { .. })
        ));
    }
});
