//! Identifier validation, text and serde forms, and canonical encodings.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashSet;

use atrest_filekey::{Error, FileContext, FileId, FileVersion, KeyId, KeyVersion, OsRng, TenantId};

#[test]
fn text_form_round_trips_and_accepts_both_spellings() {
    let text = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let tenant: TenantId = text.parse().unwrap();
    assert_eq!(tenant.to_string(), text);
    assert_eq!(
        "0F8FAD5BD9CB469FA16570867728950E"
            .parse::<TenantId>()
            .unwrap(),
        tenant
    );
    assert_eq!(format!("{tenant:?}"), format!("TenantId({text})"));
}

#[test]
fn invalid_ids_are_typed_errors() {
    for bad in [
        "",
        "0f8fad5b",
        "0f8fad5b-d9cb-469f-a165-70867728950",
        "0f8fad5b-d9cb-469f-a165-70867728950e0",
        "0f8fad5bd-9cb-469f-a165-70867728950e",
        "0f8fad5b-d9cb-469f-a165-70867728950g",
        "00000000-0000-0000-0000-000000000000",
        "00000000000000000000000000000000",
        "0f8fad5b-d9cb-469f-a165-7086772895\u{e9}",
    ] {
        assert!(
            matches!(
                bad.parse::<FileId>(),
                Err(Error::InvalidId {
                    kind: "file id",
                    ..
                })
            ),
            "{bad:?}"
        );
    }
    assert!(KeyId::from_bytes([0; 16]).is_err());
    assert!(FileVersion::new(0).is_err());
    assert!(KeyVersion::new(0).is_err());
    assert!("0".parse::<FileVersion>().is_err());
    assert!("-1".parse::<KeyVersion>().is_err());
    assert!("4294967296".parse::<KeyVersion>().is_err());
    assert_eq!("4294967295".parse::<KeyVersion>().unwrap().get(), u32::MAX);
    assert_eq!(KeyVersion::new(u32::MAX).unwrap().next(), None);
}

#[test]
fn serde_validates() {
    let tenant = TenantId::random(&mut OsRng).unwrap();
    let json = serde_json::to_string(&tenant).unwrap();
    assert_eq!(json, format!("\"{tenant}\""));
    assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), tenant);
    assert!(serde_json::from_str::<TenantId>("\"00000000-0000-0000-0000-000000000000\"").is_err());
    assert!(serde_json::from_str::<FileVersion>("0").is_err());
    assert_eq!(serde_json::from_str::<FileVersion>("3").unwrap().get(), 3);

    let context = FileContext::new(
        tenant,
        FileId::random(&mut OsRng).unwrap(),
        FileVersion::FIRST,
    );
    let json = serde_json::to_string(&context).unwrap();
    assert_eq!(serde_json::from_str::<FileContext>(&json).unwrap(), context);
}

#[test]
fn canonical_encodings_are_length_prefixed_and_distinct() {
    let bytes = [0x42; 16];
    let tenant = TenantId::from_bytes(bytes).unwrap();
    let file = FileId::from_bytes(bytes).unwrap();
    let key = KeyId::from_bytes(bytes).unwrap();
    // The same 16 bytes encode differently per type.
    assert_eq!(tenant.encode()[..2], [0x01, 16]);
    assert_eq!(file.encode()[..2], [0x02, 16]);
    assert_eq!(key.encode()[..2], [0x04, 16]);
    assert_eq!(&tenant.encode()[2..], &bytes);
    assert_ne!(tenant.encode(), file.encode());
    assert_eq!(
        FileVersion::new(0x0102).unwrap().encode(),
        [0x03, 8, 0, 0, 0, 0, 0, 0, 1, 2]
    );
    assert_eq!(
        KeyVersion::new(0x0102).unwrap().encode(),
        [0x05, 4, 0, 0, 1, 2]
    );

    let context = FileContext::new(tenant, file, FileVersion::new(7).unwrap());
    let encoded = context.encode();
    assert_eq!(encoded.len(), 46);
    assert_eq!(&encoded[..18], &tenant.encode());
    assert_eq!(&encoded[18..36], &file.encode());
    assert_eq!(&encoded[36..], &FileVersion::new(7).unwrap().encode());

    // Swapping two different ids between the tenant and file roles changes
    // the encoding.
    let other = [0x17; 16];
    let a = FileContext::new(tenant, FileId::from_bytes(other).unwrap(), context.version);
    let b = FileContext::new(TenantId::from_bytes(other).unwrap(), file, context.version);
    assert_ne!(a.encode(), b.encode());
    let mut seen = HashSet::new();
    for i in 1u8..=50 {
        let mut t = bytes;
        t[0] = i;
        let ctx = FileContext::new(
            TenantId::from_bytes(t).unwrap(),
            file,
            FileVersion::new(u64::from(i)).unwrap(),
        );
        assert!(seen.insert(ctx.encode()));
    }
}

#[test]
fn time_ordered_file_ids_sort_by_time_and_stay_apart_within_a_millisecond() {
    let at = 0x0123_4567_89ab_u64;
    let earlier = FileId::time_ordered(at, &mut OsRng).unwrap();
    let later = FileId::time_ordered(at + 1, &mut OsRng).unwrap();
    assert_eq!(
        earlier.as_bytes()[..6],
        [0x01, 0x23, 0x45, 0x67, 0x89, 0xab]
    );
    assert!(earlier < later, "a later millisecond sorts after");
    // Only the low 48 bits of the time are kept.
    let wrapped = FileId::time_ordered(at | (0xffff << 48), &mut OsRng).unwrap();
    assert_eq!(wrapped.as_bytes()[..6], earlier.as_bytes()[..6]);
    // The same millisecond: the random part keeps them apart.
    let same: HashSet<FileId> = (0..1000)
        .map(|_| FileId::time_ordered(at, &mut OsRng).unwrap())
        .collect();
    assert_eq!(same.len(), 1000);
    assert!(
        same.iter()
            .all(|id| id.as_bytes()[..6] == earlier.as_bytes()[..6])
    );
    // Time zero still never gives the nil id.
    assert!(FileId::time_ordered(0, &mut OsRng).is_ok());
}
