//! The one key-wrapping construction of atrest, shared by every layer that
//! seals a 32-byte key under another: file keys under a TIK ([`crate::Kek`]),
//! and, in `atrest-tenant`, TIK seeds under the service's root keys and root
//! and tenant keys under the master key.
//!
//! # Construction
//!
//! A [`LabelledWrapKey`] holds `PRK = HKDF-SHA256-Extract(salt = extract
//! label, ikm = wrapping key)`. Sealing 32 bytes with a random 32-byte
//! `salt` and associated data `aad`:
//!
//! 1. `seal_key = HKDF-SHA256-Expand(PRK, info = expand label ‖ salt, 32)`;
//! 2. `ciphertext ‖ tag = AES-256-GCM(seal_key, nonce = 0^96, plaintext,
//!    aad)`.
//!
//! Each seal key encrypts exactly once, so the fixed nonce is never reused
//! under a key, and there is no per-wrapping-key usage limit (see the bounds
//! in [`crate::wrap`]). The two labels ([`WrapLabel`]) separate the uses:
//! a wrap made for one use never opens as another's, even under the same
//! wrapping key bytes. The caller frames the result (version bytes, salt,
//! ciphertext, tag) and binds its own header into `aad`.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;

/// Length of a wrapping key, of what is sealed, and of a salt.
pub const KEY_LEN: usize = 32;
/// Length of a salt.
pub const SALT_LEN: usize = 32;
/// Length of a tag.
pub const TAG_LEN: usize = 16;

/// The two domain labels of one use of the construction: the HKDF extract
/// salt and the prefix of the expand info.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WrapLabel {
    extract: &'static [u8],
    expand: &'static [u8],
}

impl WrapLabel {
    /// File keys under a key-encryption key ([`crate::Kek`]).
    pub const FILE_KEY: Self = Self::new(b"atrest/v1 wrap", b"\x01atrest/v1 wrap key");

    /// A use named by its two labels. Labels of different uses must differ.
    pub const fn new(extract: &'static [u8], expand: &'static [u8]) -> Self {
        Self { extract, expand }
    }
}

impl core::fmt::Debug for WrapLabel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "WrapLabel({:?})", String::from_utf8_lossy(self.extract))
    }
}

/// A wrapping key of one use: seals and opens 32-byte secrets.
///
/// Holds only the HKDF pseudorandom key, in one heap allocation zeroized on
/// drop; each seal's expanded key is wiped once the AES key schedule is made
/// (ring's schedule itself is not; see the crate's "Zeroization" section).
/// Not `Clone`; `Debug` shows the label only.
pub struct LabelledWrapKey {
    label: WrapLabel,
    prk: Box<[u8; 32]>,
}

impl LabelledWrapKey {
    /// The wrapping key of `label`'s use from its 32 secret bytes; the
    /// caller should wipe its copy.
    pub fn new(label: WrapLabel, key: &[u8; KEY_LEN]) -> Self {
        // The `Hkdf` value extract returns holds HMAC state keyed with the
        // PRK; it has no zeroize support.
        let (mut prk, _) = hkdf::Hkdf::<sha2::Sha256>::extract(Some(label.extract), key);
        let mut this = Self {
            label,
            prk: Box::new([0; 32]),
        };
        this.prk.copy_from_slice(&prk);
        prk.zeroize();
        this
    }

    /// The use this key serves.
    pub fn label(&self) -> WrapLabel {
        self.label
    }

    /// Runs `f` with the AEAD key of `salt`'s seal key. The key is made
    /// and used in place: it is large (the AES schedule and the GHASH
    /// table), and returning it would copy it more than once per wrap.
    fn with_cipher<T>(
        &self,
        salt: &[u8; SALT_LEN],
        f: impl FnOnce(&LessSafeKey) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut okm = [0u8; KEY_LEN];
        // Cannot fail: the PRK is one hash long and 32 bytes of output is in range.
        let expanded = hkdf::Hkdf::<sha2::Sha256>::from_prk(&self.prk[..])
            .map_err(|_| Error::Backend)
            .and_then(|hkdf| {
                hkdf.expand_multi_info(&[self.label.expand, salt], &mut okm)
                    .map_err(|_| Error::Backend)
            });
        let key =
            expanded.and_then(|()| UnboundKey::new(&AES_256_GCM, &okm).map_err(|_| Error::Backend));
        okm.zeroize();
        f(&LessSafeKey::new(key?))
    }

    /// Seals `secret` in place under the seal key of `salt`, binding `aad`;
    /// returns the tag. On an error, `secret` is wiped.
    ///
    /// # Errors
    /// [`Error::Backend`] if the AEAD refuses (it does not for 32 bytes).
    pub fn seal_in_place(
        &self,
        salt: &[u8; SALT_LEN],
        aad: &[u8],
        secret: &mut [u8; KEY_LEN],
    ) -> Result<[u8; TAG_LEN], Error> {
        let sealed = self.with_cipher(salt, |cipher| {
            cipher
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([0; 12]),
                    Aad::from(aad),
                    secret,
                )
                .map_err(|_| Error::Backend)
        });
        match sealed {
            Ok(tag) => {
                let mut out = [0u8; TAG_LEN];
                out.copy_from_slice(tag.as_ref());
                Ok(out)
            }
            Err(error) => {
                secret.zeroize();
                Err(error)
            }
        }
    }

    /// Opens in place what [`LabelledWrapKey::seal_in_place`] sealed with
    /// the same salt and `aad`. On an error, `sealed` is wiped.
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`] for another key, use, salt or
    /// `aad`, or tampered bytes.
    pub fn open_in_place(
        &self,
        salt: &[u8; SALT_LEN],
        aad: &[u8],
        sealed: &mut [u8; KEY_LEN],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error> {
        let tag = Tag::try_from(&tag[..]).map_err(|_| Error::Malformed("tag"))?;
        let opened = self.with_cipher(salt, |cipher| {
            cipher
                .open_in_place_separate_tag(
                    Nonce::assume_unique_for_key([0; 12]),
                    Aad::from(aad),
                    tag,
                    sealed,
                    0..,
                )
                .map(|_| ())
                .map_err(|_| Error::AuthenticationFailed)
        });
        if opened.is_err() {
            sealed.zeroize();
        }
        opened
    }
}

impl Drop for LabelledWrapKey {
    fn drop(&mut self) {
        self.prk[..].zeroize();
    }
}

impl ZeroizeOnDrop for LabelledWrapKey {}

impl core::fmt::Debug for LabelledWrapKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LabelledWrapKey")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OTHER: WrapLabel = WrapLabel::new(b"test other", b"test other key");

    #[test]
    fn opens_only_with_the_same_key_use_salt_and_aad() {
        let key = LabelledWrapKey::new(WrapLabel::FILE_KEY, &[7; 32]);
        let same_bytes_other_use = LabelledWrapKey::new(OTHER, &[7; 32]);
        let salt = [3; 32];
        let mut body = [42; 32];
        let tag = key.seal_in_place(&salt, b"aad", &mut body).unwrap();
        assert_ne!(body, [42; 32]);
        let open = |k: &LabelledWrapKey, salt: &[u8; 32], aad: &[u8], tag: &[u8; 16]| {
            let mut copy = body;
            k.open_in_place(salt, aad, &mut copy, tag).map(|()| copy)
        };
        assert_eq!(open(&key, &salt, b"aad", &tag).unwrap(), [42; 32]);
        for result in [
            open(&same_bytes_other_use, &salt, b"aad", &tag),
            open(&key, &[4; 32], b"aad", &tag),
            open(&key, &salt, b"aaD", &tag),
            open(&key, &salt, b"aad", &[0; 16]),
        ] {
            assert_eq!(result, Err(Error::AuthenticationFailed));
        }
    }
}
