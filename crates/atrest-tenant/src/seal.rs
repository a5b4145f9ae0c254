//! Sealing 32-byte keys under a 32-byte key held in this process: how the
//! service's root keys wrap TIKs and how the master key file seals root
//! and tenant keys.
//!
//! # Construction (version 1)
//!
//! `atrest-filekey`'s one labelled wrap ([`atrest_filekey::labelled`]),
//! the construction file keys are wrapped with, under this use's own
//! labels: `PRK = HKDF-SHA256-Extract(salt = "atrest/v1 seal", ikm = key)`;
//! for each seal a random 32-byte `salt`, `seal_key =
//! HKDF-SHA256-Expand(PRK, "atrest/v1 seal key" || salt, 32)`, and
//! `AES-256-GCM(seal_key, nonce = 0^96, plaintext, aad = 0x01 || aad)`.
//! Each seal key encrypts once, so there is no per-key usage limit.
//!
//! Sealed form, 81 bytes: `0x01` (version) ‖ salt (32) ‖ ciphertext (32) ‖
//! tag (16).

use atrest_filekey::labelled::{KEY_LEN, LabelledWrapKey, SALT_LEN, TAG_LEN, WrapLabel};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroize;

const VERSION: u8 = 1;
/// Length of a sealed key.
pub(crate) const SEALED_LEN: usize = 1 + SALT_LEN + KEY_LEN + TAG_LEN;
/// This use's labels.
const SEAL: WrapLabel = WrapLabel::new(b"atrest/v1 seal", b"atrest/v1 seal key");

/// A 32-byte secret of one role (see `provider::secret_type`), as sealing
/// sees it.
pub(crate) trait Secret {
    fn bytes(&self) -> &[u8; KEY_LEN];
    fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self;
}

/// Why a seal did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Wrong length or version.
    Malformed,
    /// Wrong key or associated data, or tampered.
    AuthenticationFailed,
}

/// A key that seals other keys (its PRK is wiped on drop).
pub(crate) struct SealingKey {
    key: LabelledWrapKey,
}

fn full_aad(aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(1 + aad.len());
    full.push(VERSION);
    full.extend_from_slice(aad);
    full
}

impl SealingKey {
    pub(crate) fn new(key: &impl Secret) -> Self {
        Self {
            key: LabelledWrapKey::new(SEAL, key.bytes()),
        }
    }

    pub(crate) fn seal(&self, secret: &impl Secret, aad: &[u8]) -> Result<Vec<u8>, crate::Error> {
        let mut salt = [0u8; SALT_LEN];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| crate::Error::Rng)?;
        let mut body = *secret.bytes();
        let tag = self.key.seal_in_place(&salt, &full_aad(aad), &mut body);
        let tag = tag.map_err(|_| crate::Error::Misuse("AES-GCM refused a 32-byte plaintext"))?;
        let mut out = Vec::with_capacity(SEALED_LEN);
        out.push(VERSION);
        out.extend_from_slice(&salt);
        out.extend_from_slice(&body);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    pub(crate) fn open<S: Secret>(&self, sealed: &[u8], aad: &[u8]) -> Result<S, OpenError> {
        if sealed.len() != SEALED_LEN || sealed.first() != Some(&VERSION) {
            return Err(OpenError::Malformed);
        }
        let rest = sealed.get(1..).ok_or(OpenError::Malformed)?;
        let (salt, rest) = rest.split_at(SALT_LEN);
        let (body, tag) = rest.split_at(KEY_LEN);
        let salt: &[u8; SALT_LEN] = salt.try_into().map_err(|_| OpenError::Malformed)?;
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| OpenError::Malformed)?;
        let mut plain = [0u8; KEY_LEN];
        plain.copy_from_slice(body);
        let opened = self
            .key
            .open_in_place(salt, &full_aad(aad), &mut plain, tag)
            .map(|()| S::from_bytes(&plain))
            .map_err(|_| OpenError::AuthenticationFailed);
        plain.zeroize();
        opened
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
