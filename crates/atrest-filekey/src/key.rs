//! The per-file key and the sub-keys derived from it.

use core::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;
use crate::rng::{OsRng, SecureRandom};

/// HKDF-SHA256 salt for the key commitment (domain label).
const COMMITMENT_SALT: &[u8] = b"atrest/v1 key commitment";
/// HKDF-SHA256 info for the key commitment. It starts with a zero byte, which
/// no stream associated data does (that always starts with the envelope
/// magic), so a commitment can never equal a stream key.
const COMMITMENT_INFO: &[u8] = b"\x00atrest/v1 key commitment";

/// A random 256-bit key for one version of one file.
///
/// - Generated from the operating system's generator ([`FileKey::generate`],
///   or [`FileKey::generate_with`] given [`OsRng`]).
/// - Its bytes live in one heap allocation, so moving a `FileKey` copies
///   a pointer, not the key, and that allocation is zeroized on drop (see
///   the crate's "Zeroization" section for what is not).
/// - Not `Clone`; `Debug` prints no bytes; no `Display` or `Serialize`. To
///   store it, [wrap](crate::Kek::wrap) it.
pub struct FileKey {
    bytes: Box<[u8; Self::LEN]>,
}

impl FileKey {
    /// Key length in bytes.
    pub const LEN: usize = 32;

    /// A fresh key from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`Error::Rng`] if the operating system's generator fails.
    pub fn generate() -> Result<Self, Error> {
        Self::generate_with(&mut OsRng)
    }

    /// A fresh key from the given generator.
    ///
    /// # Errors
    /// [`Error::Rng`] if the generator fails.
    pub fn generate_with(rng: &mut impl SecureRandom) -> Result<Self, Error> {
        let mut key = Self::zeroed();
        rng.fill(&mut key.bytes[..])?;
        Ok(key)
    }

    /// Builds a key from raw bytes, for keys that come from elsewhere (another
    /// implementation, a test vector). The caller should zeroize its copy.
    pub fn from_secret_bytes(bytes: &[u8; Self::LEN]) -> Self {
        let mut key = Self::zeroed();
        key.bytes.copy_from_slice(bytes);
        key
    }

    /// An all-zero key, filled in place by the constructors, so the key's
    /// bytes are written only into its own allocation.
    fn zeroed() -> Self {
        Self {
            bytes: Box::new([0; Self::LEN]),
        }
    }

    /// The raw key bytes. Use only to hand the key to another implementation;
    /// never log or store them unwrapped.
    pub fn expose_secret(&self) -> &[u8; Self::LEN] {
        &self.bytes
    }

    /// Derives a 256-bit stream key straight into the key type `K`:
    /// `HKDF-SHA256(ikm = file key, salt, info)`, 32 bytes of output.
    ///
    /// This is the derivation of Google Tink's AES-GCM-HKDF streaming AEAD
    /// (`salt` is the stream's random salt and `info` its associated data), so
    /// a stream encrypted here decrypts with Tink given this key. The output
    /// bytes are zeroized once `K` holds them; HKDF's internal state is not
    /// (see the crate's "Zeroization" section).
    pub fn derive_stream_key<K: FromDerivedBytes>(&self, salt: &[u8], info: &[u8]) -> K {
        derive_into(&self.bytes[..], Some(salt), info)
    }

    /// The key commitment: `HKDF-SHA256(ikm = file key,
    /// salt = "atrest/v1 key commitment", info = 0x00 || "atrest/v1 key commitment")`.
    ///
    /// Stored in the clear in front of a ciphertext, it lets a reader check in
    /// constant time that it holds *the* key the ciphertext was made with, so
    /// no ciphertext can be crafted to decrypt validly under two keys.
    pub fn commitment(&self) -> KeyCommitment {
        derive_into(&self.bytes[..], Some(COMMITMENT_SALT), COMMITMENT_INFO)
    }
}

impl Drop for FileKey {
    fn drop(&mut self) {
        self.bytes[..].zeroize();
    }
}

impl ZeroizeOnDrop for FileKey {}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKey").finish_non_exhaustive()
    }
}

/// A key type that can be built from 32 bytes of HKDF output.
///
/// Implemented by the key types of the crates that use derived keys (for
/// example a streaming cipher's segment key), so derived bytes go straight
/// into a key type and the caller never holds them.
pub trait FromDerivedBytes: Sized {
    /// Builds the key. `bytes` is zeroized after this returns.
    fn from_derived_bytes(bytes: &[u8; 32]) -> Self;
}

pub(crate) fn derive_into<K: FromDerivedBytes>(ikm: &[u8], salt: Option<&[u8]>, info: &[u8]) -> K {
    let mut okm = [0u8; 32];
    let hkdf = Hkdf::<Sha256>::new(salt, ikm);
    // 32 bytes is far below HKDF-SHA256's 8,160-byte limit.
    if hkdf.expand(info, &mut okm).is_err() {
        unreachable!("HKDF-SHA256 can always produce 32 bytes");
    }
    let key = K::from_derived_bytes(&okm);
    okm.zeroize();
    key
}

/// A 32-byte commitment to a [`FileKey`] (see [`FileKey::commitment`]).
///
/// Not secret, but compared only in constant time ([`KeyCommitment::verify`]
/// and `PartialEq`), so a comparison leaks nothing about where it differs.
#[derive(Clone, Copy)]
pub struct KeyCommitment([u8; 32]);

impl KeyCommitment {
    /// Length in bytes.
    pub const LEN: usize = 32;

    /// A commitment read from a ciphertext.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The commitment's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `key` is the key this commitment was made for, compared in
    /// constant time.
    pub fn verify(&self, key: &FileKey) -> bool {
        *self == key.commitment()
    }
}

impl FromDerivedBytes for KeyCommitment {
    fn from_derived_bytes(bytes: &[u8; 32]) -> Self {
        Self(*bytes)
    }
}

impl PartialEq for KeyCommitment {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for KeyCommitment {}

impl fmt::Debug for KeyCommitment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyCommitment({})", hex::encode(self.0))
    }
}
