//! Sealing 32-byte keys under a 32-byte key held in this process: how the
//! service's root keys wrap TIKs and how the master key file seals root
//! keys.
//!
//! # Construction (version 1)
//!
//! The same per-wrap-key construction as `atrest-filekey`'s wrapped file
//! keys, under a different label: `PRK = HKDF-SHA256-Extract(salt =
//! "atrest/v1 seal", ikm = key)`; for each seal a random 32-byte `salt`,
//! `seal_key = HKDF-SHA256-Expand(PRK, "atrest/v1 seal key" || salt, 32)`,
//! and `AES-256-GCM(seal_key, nonce = 0^96, plaintext, aad = 0x01 || aad)`.
//! Each seal key encrypts once, so there is no per-key usage limit.
//!
//! Sealed form, 81 bytes: `0x01` (version) ‖ salt (32) ‖ ciphertext (32) ‖
//! tag (16).

use hkdf::Hkdf;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::Sha256;
use zeroize::Zeroize;

const VERSION: u8 = 1;
const SALT_LEN: usize = 32;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// Length of a sealed key.
pub(crate) const SEALED_LEN: usize = 1 + SALT_LEN + KEY_LEN + TAG_LEN;

/// A 32-byte secret of one role (see `provider::secret_type`), as sealing
/// sees it.
pub(crate) trait Secret {
    fn bytes(&self) -> &[u8; KEY_LEN];
    fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self;
}
const EXTRACT_SALT: &[u8] = b"atrest/v1 seal";
const INFO_LABEL: &[u8] = b"atrest/v1 seal key";

/// Why a seal did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Wrong length or version.
    Malformed,
    /// Wrong key or associated data, or tampered.
    AuthenticationFailed,
}

/// A key that seals other keys; holds only the HKDF PRK.
pub(crate) struct SealingKey {
    prk: [u8; 32],
}

impl SealingKey {
    pub(crate) fn new(key: &impl Secret) -> Self {
        let (prk, _) = Hkdf::<Sha256>::extract(Some(EXTRACT_SALT), key.bytes());
        let mut this = Self { prk: [0; 32] };
        this.prk.copy_from_slice(&prk);
        let mut prk = prk;
        prk.zeroize();
        this
    }

    fn cipher(&self, salt: &[u8]) -> LessSafeKey {
        let mut info = Vec::with_capacity(INFO_LABEL.len() + SALT_LEN);
        info.extend_from_slice(INFO_LABEL);
        info.extend_from_slice(salt);
        let mut okm = [0u8; 32];
        let expanded = Hkdf::<Sha256>::from_prk(&self.prk).and_then(|hkdf| {
            hkdf.expand(&info, &mut okm)
                .map_err(|_| hkdf::InvalidPrkLength)
        });
        debug_assert!(
            expanded.is_ok(),
            "a 32-byte PRK and 32-byte output are valid"
        );
        let key = UnboundKey::new(&AES_256_GCM, &okm).map(LessSafeKey::new);
        okm.zeroize();
        match key {
            Ok(key) => key,
            Err(_) => unreachable!("a 32-byte key is valid for AES-256-GCM"),
        }
    }

    pub(crate) fn seal(&self, secret: &impl Secret, aad: &[u8]) -> Result<Vec<u8>, crate::Error> {
        let mut out = Vec::with_capacity(SEALED_LEN);
        out.push(VERSION);
        let mut salt = [0u8; SALT_LEN];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| crate::Error::Rng)?;
        out.extend_from_slice(&salt);
        out.extend_from_slice(secret.bytes());
        let mut full_aad = Vec::with_capacity(1 + aad.len());
        full_aad.push(VERSION);
        full_aad.extend_from_slice(aad);
        let tag = self
            .cipher(&salt)
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(&full_aad),
                out.get_mut(1 + SALT_LEN..).unwrap_or_default(),
            )
            .map_err(|_| crate::Error::Misuse("AES-GCM refused a 32-byte plaintext"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    pub(crate) fn open<S: Secret>(&self, sealed: &[u8], aad: &[u8]) -> Result<S, OpenError> {
        if sealed.len() != SEALED_LEN || sealed.first() != Some(&VERSION) {
            return Err(OpenError::Malformed);
        }
        let (salt, body) = sealed
            .get(1..)
            .ok_or(OpenError::Malformed)?
            .split_at(SALT_LEN);
        let mut buf = body.to_vec();
        let mut full_aad = Vec::with_capacity(1 + aad.len());
        full_aad.push(VERSION);
        full_aad.extend_from_slice(aad);
        let opened = self
            .cipher(salt)
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(&full_aad),
                &mut buf,
            )
            .ok()
            .and_then(|plain| <&[u8; KEY_LEN]>::try_from(&*plain).ok().map(S::from_bytes));
        buf.zeroize();
        opened.ok_or(OpenError::AuthenticationFailed)
    }
}

impl Drop for SealingKey {
    fn drop(&mut self) {
        self.prk.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyMaterial;

    fn open(key: &SealingKey, sealed: &[u8], aad: &[u8]) -> Result<KeyMaterial, OpenError> {
        key.open(sealed, aad)
    }

    #[test]
    fn seals_open_only_with_the_same_key_and_aad() {
        let key = SealingKey::new(&KeyMaterial::from_secret_bytes(&[7; 32]));
        let other = SealingKey::new(&KeyMaterial::from_secret_bytes(&[8; 32]));
        let secret = KeyMaterial::from_secret_bytes(&[42; 32]);
        let sealed = key.seal(&secret, b"context").unwrap();
        assert_eq!(sealed.len(), SEALED_LEN);
        assert_eq!(
            open(&key, &sealed, b"context").unwrap().expose_secret(),
            &[42; 32]
        );
        assert_eq!(
            open(&key, &sealed, b"contexT").err(),
            Some(OpenError::AuthenticationFailed)
        );
        assert_eq!(
            open(&other, &sealed, b"context").err(),
            Some(OpenError::AuthenticationFailed)
        );
        assert_eq!(
            open(&key, &sealed[1..], b"context").err(),
            Some(OpenError::Malformed)
        );
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(open(&key, &bad, b"context").is_err(), "bit {i}");
        }
        // A random salt per seal: the same key sealed twice differs.
        assert_ne!(sealed, key.seal(&secret, b"context").unwrap());
    }
}
