//! Benchmarks for the atrest crates. Run them with
//! `cargo bench -p atrest-benches`; see the workspace README for the reports.

use atrest_stream::Backend;

pub mod load;

/// The median of `values`, as every report quotes its runs (of an even
/// number, the upper of the middle two).
///
/// # Panics
/// If `values` is empty.
pub fn median<T: PartialOrd>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(core::cmp::Ordering::Equal));
    values.swap_remove(values.len() / 2)
}

/// The baseline of every stream measurement: one-shot AES-256-GCM of the
/// whole `buffer`, in place, with `backend`'s own API and a fixed key and
/// nonce.
///
/// # Panics
/// If the backend rejects the buffer (longer than AES-GCM allows) or is one
/// this function does not know.
#[allow(clippy::panic, clippy::unwrap_used)]
pub fn one_shot_aes_256_gcm(backend: Backend, buffer: &mut [u8]) {
    let (key, nonce) = ([7u8; 32], [1u8; 12]);
    match backend.name() {
        "ring" => {
            use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
            let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
            let _tag = k
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    buffer,
                )
                .unwrap();
        }
        "aws-lc-rs" => {
            use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
            let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
            let _tag = k
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    buffer,
                )
                .unwrap();
        }
        "rustcrypto" => {
            use aes_gcm::aead::AeadInPlace;
            use aes_gcm::{Aes256Gcm, KeyInit};
            let _tag = Aes256Gcm::new(&key.into())
                .encrypt_in_place_detached(&nonce.into(), &[], buffer)
                .unwrap();
        }
        other => panic!("no baseline for backend {other}"),
    }
}

/// One-shot AES-256-GCM of the whole `input` into `out` (the same length):
/// the least a call that must leave its input untouched can do with
/// `backend`'s own API. AWS-LC seals from one buffer into another in one
/// pass; `ring` and RustCrypto seal in place only, so the whole input is
/// copied first, as their users would.
///
/// # Panics
/// As [`one_shot_aes_256_gcm`], or if the lengths differ.
#[allow(clippy::panic, clippy::unwrap_used)]
pub fn one_shot_aes_256_gcm_to(backend: Backend, input: &[u8], out: &mut [u8]) {
    assert_eq!(input.len(), out.len());
    if backend.name() == "aws-lc-rs" {
        use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
        let mut tag = [0u8; 16];
        k.seal_out_of_place_scatter(
            Nonce::assume_unique_for_key([1u8; 12]),
            Aad::empty(),
            input,
            out,
            &[],
            &mut tag,
        )
        .unwrap();
        return;
    }
    out.copy_from_slice(input);
    one_shot_aes_256_gcm(backend, out);
}
