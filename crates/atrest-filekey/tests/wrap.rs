//! Wrapping and unwrapping: round trips, context binding, tampering and
//! malformed input.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use atrest_filekey::{
    Error, FileContext, FileId, FileKey, FileVersion, Kek, KeyId, KeyVersion, OsRng, TenantId,
    WrappedFileKey,
};
use proptest::prelude::*;

fn id<T: TryFrom<[u8; 16]>>(bytes: [u8; 16]) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(bytes).unwrap()
}

fn setup() -> (Kek, FileContext, FileKey, WrappedFileKey) {
    let mut rng = OsRng;
    let kek = Kek::generate(
        KeyId::random(&mut rng).unwrap(),
        KeyVersion::FIRST,
        &mut rng,
    )
    .unwrap();
    let context = FileContext::new(
        TenantId::random(&mut rng).unwrap(),
        FileId::random(&mut rng).unwrap(),
        FileVersion::FIRST,
    );
    let key = FileKey::generate_with(&mut rng).unwrap();
    let wrapped = kek.wrap(&key, &context, &mut rng).unwrap();
    (kek, context, key, wrapped)
}

#[test]
fn round_trip_and_fresh_salts() {
    let (kek, context, key, wrapped) = setup();
    assert_eq!(
        kek.unwrap(&wrapped, &context).unwrap().expose_secret(),
        key.expose_secret()
    );

    let wrapped_os = kek.wrap(&key, &context, &mut OsRng).unwrap();
    assert_ne!(wrapped_os, wrapped, "every wrap draws a fresh salt");
    assert_eq!(
        kek.unwrap(&wrapped_os, &context).unwrap().expose_secret(),
        key.expose_secret()
    );

    let reparsed = WrappedFileKey::from_bytes(wrapped.as_bytes()).unwrap();
    assert_eq!(reparsed, wrapped);
    assert_eq!(reparsed.kek_id(), kek.id());
    assert_eq!(reparsed.kek_version(), kek.version());
}

#[test]
fn generate_wrapped_makes_distinct_keys_that_unwrap() {
    let (kek, context, _, _) = setup();
    let mut rng = OsRng;
    let (a, wrapped_a) = kek.generate_wrapped(&context, &mut rng).unwrap();
    let (b, wrapped_b) = kek.generate_wrapped(&context, &mut rng).unwrap();
    assert_ne!(a.expose_secret(), b.expose_secret());
    assert_ne!(wrapped_a, wrapped_b);
    // The key and the salt are different draws: the wrapped bytes do not
    // contain the key.
    assert!(
        !wrapped_a
            .as_bytes()
            .windows(32)
            .any(|w| w == a.expose_secret())
    );
    assert_eq!(
        kek.unwrap(&wrapped_a, &context).unwrap().expose_secret(),
        a.expose_secret()
    );
    assert_eq!(
        kek.unwrap(&wrapped_b, &context).unwrap().expose_secret(),
        b.expose_secret()
    );
    let (key, wrapped) = kek.generate_wrapped(&context, &mut OsRng).unwrap();
    assert_eq!(
        kek.unwrap(&wrapped, &context).unwrap().expose_secret(),
        key.expose_secret()
    );
}

#[test]
fn serde_forms_round_trip() {
    let (kek, context, key, wrapped) = setup();
    let json = serde_json::to_string(&wrapped).unwrap();
    assert_eq!(json.len(), 2 + 2 * WrappedFileKey::LEN);
    let back: WrappedFileKey = serde_json::from_str(&json).unwrap();
    assert_eq!(
        kek.unwrap(&back, &context).unwrap().expose_secret(),
        key.expose_secret()
    );

    // Truncated or non-hex strings are rejected with an error, not a panic.
    assert!(serde_json::from_str::<WrappedFileKey>(&json[..json.len() - 3]).is_err());
    assert!(serde_json::from_str::<WrappedFileKey>("\"zz\"").is_err());
}

#[test]
fn another_kek_fails() {
    let (kek, context, _, wrapped) = setup();
    let mut rng = OsRng;
    // Same id and version, different secret: authentication fails.
    let impostor = Kek::generate(kek.id(), kek.version(), &mut rng).unwrap();
    assert_eq!(
        impostor.unwrap(&wrapped, &context).unwrap_err(),
        Error::AuthenticationFailed
    );
    // Another id or version: refused before any decryption, naming both keys.
    let other_version = Kek::generate(kek.id(), KeyVersion::new(2).unwrap(), &mut rng).unwrap();
    assert!(matches!(
        other_version.unwrap(&wrapped, &context),
        Err(Error::KekMismatch { found_version, .. }) if found_version == kek.version()
    ));
    let other_id =
        Kek::generate(KeyId::random(&mut rng).unwrap(), kek.version(), &mut rng).unwrap();
    assert!(matches!(
        other_id.unwrap(&wrapped, &context),
        Err(Error::KekMismatch { .. })
    ));
}

#[test]
fn every_single_bit_flip_fails() {
    let (kek, context, _, wrapped) = setup();
    let bytes = *wrapped.as_bytes();
    for bit in 0..bytes.len() * 8 {
        let mut tampered = bytes;
        tampered[bit / 8] ^= 1 << (bit % 8);
        // A flip either makes the bytes unparseable, names another KEK, or
        // fails authentication; it never yields a key.
        match WrappedFileKey::from_bytes(&tampered) {
            Err(_) => {}
            Ok(parsed) => assert!(kek.unwrap(&parsed, &context).is_err(), "bit {bit} accepted"),
        }
    }
}

#[test]
fn every_truncation_and_extension_is_a_typed_error() {
    let (_, _, _, wrapped) = setup();
    let bytes = wrapped.as_bytes();
    assert_eq!(
        WrappedFileKey::from_bytes(&[]).unwrap_err(),
        Error::InvalidLength {
            expected: 102,
            actual: 0
        }
    );
    for len in 1..bytes.len() {
        assert_eq!(
            WrappedFileKey::from_bytes(&bytes[..len]).unwrap_err(),
            Error::InvalidLength {
                expected: 102,
                actual: len
            }
        );
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(
        WrappedFileKey::from_bytes(&longer).unwrap_err(),
        Error::InvalidLength {
            expected: 102,
            actual: 103
        }
    );
}

#[test]
fn header_fields_are_validated() {
    let (_, _, _, wrapped) = setup();
    let mut bytes = *wrapped.as_bytes();
    bytes[0] = 2;
    assert_eq!(
        WrappedFileKey::from_bytes(&bytes).unwrap_err(),
        Error::UnsupportedVersion(2)
    );
    // A future version is reported as such whatever its length.
    assert_eq!(
        WrappedFileKey::from_bytes(&[9, 1, 2]).unwrap_err(),
        Error::UnsupportedVersion(9)
    );

    let mut bytes = *wrapped.as_bytes();
    bytes[1] = 7;
    assert_eq!(
        WrappedFileKey::from_bytes(&bytes).unwrap_err(),
        Error::UnsupportedSuite(7)
    );

    let mut bytes = *wrapped.as_bytes();
    bytes[2..18].fill(0);
    assert!(matches!(
        WrappedFileKey::from_bytes(&bytes),
        Err(Error::Malformed(_))
    ));

    let mut bytes = *wrapped.as_bytes();
    bytes[18..22].fill(0);
    assert!(matches!(
        WrappedFileKey::from_bytes(&bytes),
        Err(Error::Malformed(_))
    ));
}

fn context_strategy() -> impl Strategy<Value = FileContext> {
    (any::<[u8; 16]>(), any::<[u8; 16]>(), 1u64..)
        .prop_filter("ids are not nil", |(t, f, _)| {
            *t != [0; 16] && *f != [0; 16]
        })
        .prop_map(|(t, f, v)| FileContext::new(id(t), id(f), FileVersion::new(v).unwrap()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Unwrapping under any context but the one wrapped for fails.
    #[test]
    fn any_other_context_fails(a in context_strategy(), b in context_strategy(), pick in 0usize..4) {
        let mut rng = OsRng;
        let kek = Kek::generate(KeyId::random(&mut rng).unwrap(), KeyVersion::FIRST, &mut rng).unwrap();
        let key = FileKey::generate().unwrap();
        let wrapped = kek.wrap(&key, &a, &mut rng).unwrap();
        // Change one field, or all of them.
        let other = match pick {
            0 => FileContext { tenant: b.tenant, ..a },
            1 => FileContext { file: b.file, ..a },
            2 => FileContext { version: b.version, ..a },
            _ => b,
        };
        prop_assume!(other != a);
        prop_assert_eq!(kek.unwrap(&wrapped, &other).unwrap_err(), Error::AuthenticationFailed);
        let unwrapped = kek.unwrap(&wrapped, &a).unwrap();
        prop_assert_eq!(unwrapped.expose_secret(), key.expose_secret());
    }

    /// Arbitrary bytes never panic and never unwrap.
    #[test]
    fn arbitrary_bytes_never_unwrap(bytes in proptest::collection::vec(any::<u8>(), 0..130)) {
        let (kek, context, _, _) = setup();
        if let Ok(parsed) = WrappedFileKey::from_bytes(&bytes) {
            prop_assert!(kek.unwrap(&parsed, &context).is_err());
        }
    }
}
