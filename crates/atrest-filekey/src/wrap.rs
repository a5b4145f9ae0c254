//! Wrapping file keys under a key-encryption key.
//!
//! # Construction (format version 1, suite 1)
//!
//! The construction is the crate's one labelled wrap
//! ([`crate::labelled`]) with the labels [`WrapLabel::FILE_KEY`]. A [`Kek`]
//! holds `PRK = HKDF-SHA256-Extract(salt = "atrest/v1 wrap", ikm = KEK)`,
//! computed once when the KEK is loaded. Wrapping a [`FileKey`] for a
//! [`FileContext`]:
//!
//! 1. draw a random 32-byte `salt`;
//! 2. `wrap_key = HKDF-SHA256-Expand(PRK, info = 0x01 || "atrest/v1 wrap key" || salt, 32)`;
//! 3. `ciphertext || tag = AES-256-GCM(wrap_key, nonce = 0^96, plaintext = file key,
//!    aad = header || context)`, where `header` is the first 22 bytes of the
//!    wrapped key below and `context` is [`FileContext::encode`] (tenant, file,
//!    file version).
//!
//! The wrapped key is 102 bytes:
//!
//! | offset | length | field                                    |
//! |--------|--------|------------------------------------------|
//! | 0      | 1      | format version, `0x01`                   |
//! | 1      | 1      | suite, `0x01` = HKDF-SHA256 + AES-256-GCM |
//! | 2      | 16     | KEK id                                   |
//! | 18     | 4      | KEK version, big-endian, non-zero        |
//! | 22     | 32     | salt                                     |
//! | 54     | 32     | encrypted file key                       |
//! | 86     | 16     | GCM tag                                  |
//!
//! The tenant, file id and file version are bound as associated data but not
//! stored: the caller supplies them again to unwrap, and any difference fails
//! authentication. The KEK id and version are stored (so a reader knows which
//! key version to fetch) *and* authenticated, as are the format version and
//! suite.
//!
//! # Bounds
//!
//! Every wrap uses its own AES-GCM key, used for exactly one encryption, so the
//! fixed zero nonce is never reused under a key and GCM's per-key limits (the
//! 2^32 random-nonce bound, the data volume bound) do not apply to the KEK.
//! Two wraps share a wrap key only if they draw the same 256-bit salt, which
//! after `n` wraps under one KEK happens with probability about `n² / 2^257`:
//! below 2^-129 even after 2^64 wraps. The remaining limit is HKDF-SHA256 as a
//! PRF keyed by the PRK, which is good far beyond any practical number of
//! calls. So there is no practical ceiling on the number of wraps per KEK, and
//! rotation is needed only by policy, never by the construction (the same
//! approach as the AWS hierarchical keyring's per-wrap derived keys).

use core::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroize;

use crate::key::FileKey;
use crate::labelled::{LabelledWrapKey, SALT_LEN, TAG_LEN, WrapLabel};
use crate::rng::SecureRandom;
use crate::{Error, FileContext, KeyId, KeyVersion};

const FORMAT_VERSION: u8 = 1;
const SUITE_HKDF_SHA256_AES_256_GCM: u8 = 1;

const HEADER_LEN: usize = 22;
/// What a new wrapped file key draws from the generator: the key and the
/// wrap's salt.
const DRAWN_PER_KEY: usize = FileKey::LEN + SALT_LEN;
/// Where a wrapped key holds what a new key draws: the salt, then the body
/// (the key's bytes until the wrap encrypts them in place).
const DRAWN_AT: core::ops::Range<usize> = HEADER_LEN..HEADER_LEN + DRAWN_PER_KEY;

/// A wrapped key's bytes in place: its header, salt, body and tag.
type Parts<'a> = (
    &'a mut [u8; HEADER_LEN],
    &'a mut [u8; SALT_LEN],
    &'a mut [u8; FileKey::LEN],
    &'a mut [u8; TAG_LEN],
);

/// Splits a wrapped key's bytes into its [`Parts`]. `None` never happens
/// (the lengths add up to [`WrappedFileKey::LEN`]); callers fail closed on
/// it all the same.
fn parts_mut(bytes: &mut [u8; WrappedFileKey::LEN]) -> Option<Parts<'_>> {
    let (header, rest) = bytes.split_first_chunk_mut::<HEADER_LEN>()?;
    let (salt, rest) = rest.split_first_chunk_mut::<SALT_LEN>()?;
    let (body, tag) = rest.split_first_chunk_mut::<{ FileKey::LEN }>()?;
    Some((header, salt, body, tag.try_into().ok()?))
}

/// A key-encryption key: wraps and unwraps [`FileKey`]s.
///
/// Identified by a [`KeyId`] and a [`KeyVersion`], which every wrapped key
/// records. Holds only the HKDF pseudorandom key derived from the KEK bytes,
/// in one heap allocation zeroized on drop (see the crate's "Zeroization"
/// section for the state of a wrap or unwrap, which is not); not `Clone`;
/// `Debug` shows the id and version only.
pub struct Kek {
    id: KeyId,
    version: KeyVersion,
    key: LabelledWrapKey,
}

impl Kek {
    /// KEK length in bytes.
    pub const LEN: usize = 32;

    /// Builds a KEK from its 32 secret bytes (for example a tenant
    /// intermediate key just unwrapped from a root key). The caller should
    /// zeroize its copy.
    pub fn from_secret_bytes(id: KeyId, version: KeyVersion, bytes: &[u8; Self::LEN]) -> Self {
        Self {
            id,
            version,
            key: LabelledWrapKey::new(WrapLabel::FILE_KEY, bytes),
        }
    }

    /// A fresh random KEK.
    ///
    /// # Errors
    /// [`Error::Rng`] if the generator fails.
    pub fn generate(
        id: KeyId,
        version: KeyVersion,
        rng: &mut impl SecureRandom,
    ) -> Result<Self, Error> {
        let mut bytes = [0u8; Self::LEN];
        rng.fill(&mut bytes)?;
        let kek = Self::from_secret_bytes(id, version, &bytes);
        bytes.zeroize();
        Ok(kek)
    }

    /// The KEK's id.
    pub const fn id(&self) -> KeyId {
        self.id
    }

    /// The KEK's version.
    pub const fn version(&self) -> KeyVersion {
        self.version
    }

    /// Wraps `key` for `context`, drawing the salt from `rng`.
    ///
    /// ```
    /// use atrest_filekey::*;
    /// let mut rng = OsRng;
    /// let kek = Kek::generate(KeyId::random(&mut rng)?, KeyVersion::FIRST, &mut rng)?;
    /// let context = FileContext::new(
    ///     TenantId::random(&mut rng)?,
    ///     FileId::random(&mut rng)?,
    ///     FileVersion::FIRST,
    /// );
    /// let key = FileKey::generate_with(&mut rng)?;
    /// let wrapped = kek.wrap(&key, &context, &mut rng)?;
    /// let unwrapped = kek.unwrap(&wrapped, &context)?;
    /// assert_eq!(unwrapped.expose_secret(), key.expose_secret());
    /// # Ok::<(), atrest_filekey::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Rng`] if the generator fails.
    pub fn wrap(
        &self,
        key: &FileKey,
        context: &FileContext,
        rng: &mut impl SecureRandom,
    ) -> Result<WrappedFileKey, Error> {
        let mut salt = [0u8; SALT_LEN];
        rng.fill(&mut salt)?;
        self.wrap_with_salt(key, context, &salt)
    }

    /// Generates a new file key and wraps it for `context`, drawing the key
    /// and the wrap's salt from `rng` in one call: the same result as
    /// [`FileKey::generate_with`] followed by [`Kek::wrap`], with one request
    /// to the generator instead of two.
    ///
    /// # Errors
    /// [`Error::Rng`] if the generator fails.
    pub fn generate_wrapped(
        &self,
        context: &FileContext,
        rng: &mut impl SecureRandom,
    ) -> Result<(FileKey, WrappedFileKey), Error> {
        // Drawn straight into the wrapped key's salt and body.
        let mut out = [0u8; WrappedFileKey::LEN];
        let drawn = out.get_mut(DRAWN_AT).ok_or(Error::Backend)?;
        if let Err(error) = rng.fill(drawn) {
            drawn.zeroize();
            return Err(error);
        }
        self.generate_wrapped_in(&mut out, context)
    }

    /// Generates a new file key for each of `contexts` and wraps it for
    /// that context: the same as [`Kek::generate_wrapped`] for each, in
    /// order, with one request to the generator per
    /// [`Kek::KEYS_PER_DRAW`] keys instead of one per key. The bytes drawn
    /// are wiped once the keys are made.
    ///
    /// A system call to the operating system's generator costs about as
    /// much as the rest of a key's generation and wrap together; a batch
    /// of files (as `atrest`'s `Files::seal_batch` makes) pays it once.
    ///
    /// ```
    /// use atrest_filekey::*;
    /// let mut rng = OsRng;
    /// let kek = Kek::generate(KeyId::random(&mut rng)?, KeyVersion::FIRST, &mut rng)?;
    /// let tenant = TenantId::random(&mut rng)?;
    /// let contexts = (0..3)
    ///     .map(|_| Ok(FileContext::new(tenant, FileId::random(&mut rng)?, FileVersion::FIRST)))
    ///     .collect::<Result<Vec<_>, Error>>()?;
    /// let made = kek.generate_wrapped_many(&contexts, &mut rng)?;
    /// for (context, (key, wrapped)) in contexts.iter().zip(&made) {
    ///     let unwrapped = kek.unwrap(wrapped, context)?;
    ///     assert_eq!(unwrapped.expose_secret(), key.expose_secret());
    /// }
    /// assert_ne!(made[0].0.expose_secret(), made[1].0.expose_secret());
    /// # Ok::<(), atrest_filekey::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Rng`] if the generator fails (then no key is returned).
    pub fn generate_wrapped_many(
        &self,
        contexts: &[FileContext],
        rng: &mut impl SecureRandom,
    ) -> Result<Vec<(FileKey, WrappedFileKey)>, Error> {
        let mut made = Vec::with_capacity(contexts.len());
        let mut drawn = [0u8; DRAWN_PER_KEY * Self::KEYS_PER_DRAW];
        let result = contexts.chunks(Self::KEYS_PER_DRAW).try_for_each(|group| {
            let drawn = drawn
                .get_mut(..group.len() * DRAWN_PER_KEY)
                .ok_or(Error::Backend)?;
            rng.fill(drawn)?;
            for (context, bytes) in group.iter().zip(drawn.chunks_exact(DRAWN_PER_KEY)) {
                let mut out = [0u8; WrappedFileKey::LEN];
                out.get_mut(DRAWN_AT)
                    .ok_or(Error::Backend)?
                    .copy_from_slice(bytes);
                made.push(self.generate_wrapped_in(&mut out, context)?);
            }
            Ok(())
        });
        drawn.zeroize();
        result.map(|()| made)
    }

    /// How many keys [`Kek::generate_wrapped_many`] draws the bytes of in
    /// one request to the generator (4 KiB).
    pub const KEYS_PER_DRAW: usize = 64;

    /// A new file key: the bytes drawn into the salt and the body of
    /// `out` ([`DRAWN_AT`]) are the wrap's salt and the key, which is then
    /// wrapped for `context` in place. The only other copy of the key's
    /// bytes is the `FileKey` returned; if the wrap fails, the body is
    /// wiped.
    fn generate_wrapped_in(
        &self,
        out: &mut [u8; WrappedFileKey::LEN],
        context: &FileContext,
    ) -> Result<(FileKey, WrappedFileKey), Error> {
        let Some((_, _, body, _)) = parts_mut(out) else {
            out.zeroize();
            return Err(Error::Backend);
        };
        let key = FileKey::from_secret_bytes(body);
        let wrapped = self.seal_prepared(out, context)?;
        Ok((key, wrapped))
    }

    fn wrap_with_salt(
        &self,
        key: &FileKey,
        context: &FileContext,
        salt: &[u8; SALT_LEN],
    ) -> Result<WrappedFileKey, Error> {
        let mut out = [0u8; WrappedFileKey::LEN];
        let (_, salt_out, body, _) = parts_mut(&mut out).ok_or(Error::Backend)?;
        *salt_out = *salt;
        body.copy_from_slice(key.expose_secret());
        self.seal_prepared(&mut out, context)
    }

    /// Wraps the key in `out`, whose salt and body (the key's bytes) are
    /// in place: writes the header, encrypts the body in place for
    /// `context` and writes the tag. If it fails, the body is wiped.
    fn seal_prepared(
        &self,
        out: &mut [u8; WrappedFileKey::LEN],
        context: &FileContext,
    ) -> Result<WrappedFileKey, Error> {
        let Some((header, salt, body, tag_out)) = parts_mut(out) else {
            out.zeroize();
            return Err(Error::Backend);
        };
        write_header(header, self.id, self.version);
        let aad = associated_data(header, context);
        // Wipes `body` if it fails.
        *tag_out = self.key.seal_in_place(salt, &aad, body)?;
        Ok(WrappedFileKey {
            bytes: *out,
            kek_id: self.id,
            kek_version: self.version,
        })
    }

    /// Unwraps a key wrapped under this KEK for `context`.
    ///
    /// # Errors
    /// - [`Error::KekMismatch`] if `wrapped` names another KEK id or version;
    /// - [`Error::AuthenticationFailed`] for any other tenant, file or file
    ///   version, another KEK with the same id and version, or tampered bytes.
    pub fn unwrap(
        &self,
        wrapped: &WrappedFileKey,
        context: &FileContext,
    ) -> Result<FileKey, Error> {
        let (found_id, found_version) = (wrapped.kek_id, wrapped.kek_version);
        if (found_id, found_version) != (self.id, self.version) {
            return Err(Error::KekMismatch {
                expected_id: self.id,
                expected_version: self.version,
                found_id,
                found_version,
            });
        }
        let (header, rest) = wrapped.bytes.split_at(HEADER_LEN);
        let (salt, rest) = rest.split_at(SALT_LEN);
        let (body, tag) = rest.split_at(FileKey::LEN);
        let salt: &[u8; SALT_LEN] = salt.try_into().map_err(|_| Error::Malformed("salt"))?;
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| Error::Malformed("tag"))?;
        let mut plaintext = [0u8; FileKey::LEN];
        plaintext.copy_from_slice(body);
        let aad = associated_data(header, context);
        let result = self
            .key
            .open_in_place(salt, &aad, &mut plaintext, tag)
            .map(|()| FileKey::from_secret_bytes(&plaintext));
        plaintext.zeroize();
        result
    }
}

fn write_header(header: &mut [u8], id: KeyId, version: KeyVersion) {
    let (fixed, rest) = header.split_at_mut(2);
    let (id_part, version_part) = rest.split_at_mut(16);
    fixed.copy_from_slice(&[FORMAT_VERSION, SUITE_HKDF_SHA256_AES_256_GCM]);
    id_part.copy_from_slice(id.as_bytes());
    version_part.copy_from_slice(&version.get().to_be_bytes());
}

fn associated_data(
    header: &[u8],
    context: &FileContext,
) -> [u8; HEADER_LEN + FileContext::ENCODED_LEN] {
    let mut aad = [0u8; HEADER_LEN + FileContext::ENCODED_LEN];
    let (h, c) = aad.split_at_mut(HEADER_LEN);
    h.copy_from_slice(header);
    c.copy_from_slice(&context.encode());
    aad
}

/// Its wrapping key wipes itself on drop.
impl zeroize::ZeroizeOnDrop for Kek {}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A [`FileKey`] wrapped under a [`Kek`]: 102 bytes, format version 1 (see the
/// [module documentation](self) for the layout).
///
/// Safe to store next to the file's metadata: it reveals the KEK id and
/// version but nothing of the key. Serializes as lowercase hex in
/// human-readable formats and as raw bytes otherwise.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WrappedFileKey {
    bytes: [u8; Self::LEN],
    // Parsed from `bytes` once, when the value is built.
    kek_id: KeyId,
    kek_version: KeyVersion,
}

impl WrappedFileKey {
    /// Length of a version-1 wrapped key.
    pub const LEN: usize = HEADER_LEN + SALT_LEN + FileKey::LEN + TAG_LEN;

    /// Where the KEK version lies in the bytes (four bytes, big-endian):
    /// for a store that must find the keys under a version without parsing
    /// each (a catalog counting a TIK version's keys before it is retired).
    /// Not authenticated until [`Kek::unwrap`].
    pub const KEK_VERSION_AT: core::ops::Range<usize> = 18..HEADER_LEN;

    /// Parses a wrapped key, checking its length, format version, suite and
    /// header fields. Authenticity is checked only by [`Kek::unwrap`].
    ///
    /// # Errors
    /// [`Error::InvalidLength`], [`Error::UnsupportedVersion`],
    /// [`Error::UnsupportedSuite`] or [`Error::Malformed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let Some((&version, _)) = bytes.split_first() else {
            return Err(Error::InvalidLength {
                expected: Self::LEN,
                actual: 0,
            });
        };
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        let array: [u8; Self::LEN] = bytes.try_into().map_err(|_| Error::InvalidLength {
            expected: Self::LEN,
            actual: bytes.len(),
        })?;
        let (header, _) = array.split_at(HEADER_LEN);
        let (fixed, rest) = header.split_at(2);
        let (id_bytes, version_bytes) = rest.split_at(16);
        if fixed != [FORMAT_VERSION, SUITE_HKDF_SHA256_AES_256_GCM] {
            return Err(Error::UnsupportedSuite(
                fixed.get(1).copied().unwrap_or_default(),
            ));
        }
        let id_bytes: [u8; 16] = id_bytes
            .try_into()
            .map_err(|_| Error::Malformed("KEK id"))?;
        let version_bytes: [u8; 4] = version_bytes
            .try_into()
            .map_err(|_| Error::Malformed("KEK version"))?;
        let kek_id =
            KeyId::from_bytes(id_bytes).map_err(|_| Error::Malformed("the KEK id is all zeros"))?;
        let kek_version = KeyVersion::new(u32::from_be_bytes(version_bytes))
            .map_err(|_| Error::Malformed("the KEK version is zero"))?;
        Ok(Self {
            bytes: array,
            kek_id,
            kek_version,
        })
    }

    /// The wrapped key's bytes.
    pub const fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.bytes
    }

    /// The id of the KEK this key was wrapped under.
    pub const fn kek_id(&self) -> KeyId {
        self.kek_id
    }

    /// The version of the KEK this key was wrapped under.
    pub const fn kek_version(&self) -> KeyVersion {
        self.kek_version
    }
}

impl TryFrom<&[u8]> for WrappedFileKey {
    type Error = Error;
    fn try_from(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_bytes(bytes)
    }
}

impl AsRef<[u8]> for WrappedFileKey {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for WrappedFileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedFileKey")
            .field("kek_id", &self.kek_id)
            .field("kek_version", &self.kek_version)
            .finish_non_exhaustive()
    }
}

impl Serialize for WrappedFileKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(self.bytes))
        } else {
            serializer.serialize_bytes(&self.bytes)
        }
    }
}

impl<'de> Deserialize<'de> for WrappedFileKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WrappedVisitor;
        impl Visitor<'_> for WrappedVisitor {
            type Value = WrappedFileKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a wrapped file key (204 hex digits or 102 bytes)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WrappedFileKey, E> {
                let bytes = hex::decode(v).map_err(E::custom)?;
                WrappedFileKey::from_bytes(&bytes).map_err(E::custom)
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<WrappedFileKey, E> {
                WrappedFileKey::from_bytes(v).map_err(E::custom)
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(WrappedVisitor)
        } else {
            deserializer.deserialize_bytes(WrappedVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileId, FileVersion, OsRng, TenantId};

    fn hex_array<const N: usize>(value: &serde_json::Value) -> [u8; N] {
        hex::decode(value.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    }

    /// A batch longer than one draw: every key fresh, each wrapped for its
    /// own context only, in order; an empty batch makes nothing.
    #[test]
    fn a_batch_of_keys_is_keys_made_one_by_one() {
        let mut rng = OsRng;
        let kek = Kek::generate(
            KeyId::random(&mut rng).unwrap(),
            KeyVersion::FIRST,
            &mut rng,
        )
        .unwrap();
        let tenant = TenantId::random(&mut rng).unwrap();
        let contexts: Vec<FileContext> = (0..Kek::KEYS_PER_DRAW * 2 + 3)
            .map(|_| {
                FileContext::new(
                    tenant,
                    FileId::random(&mut rng).unwrap(),
                    FileVersion::FIRST,
                )
            })
            .collect();
        let made = kek.generate_wrapped_many(&contexts, &mut rng).unwrap();
        assert_eq!(made.len(), contexts.len());
        let mut keys = std::collections::HashSet::new();
        let mut salts = std::collections::HashSet::new();
        for (i, (context, (key, wrapped))) in contexts.iter().zip(&made).enumerate() {
            assert!(keys.insert(*key.expose_secret()));
            assert!(salts.insert(wrapped.as_bytes()[HEADER_LEN..HEADER_LEN + SALT_LEN].to_vec()));
            let unwrapped = kek.unwrap(wrapped, context).unwrap();
            assert_eq!(unwrapped.expose_secret(), key.expose_secret());
            let other = &contexts[(i + 1) % contexts.len()];
            assert!(kek.unwrap(wrapped, other).is_err());
        }
        assert!(kek.generate_wrapped_many(&[], &mut rng).unwrap().is_empty());
    }

    /// The KEK version lies where `KEK_VERSION_AT` says, for stores that
    /// look it up in the bytes.
    #[test]
    fn the_kek_version_is_where_the_constant_says() {
        let mut rng = OsRng;
        let version = KeyVersion::try_from(0x0102_0304).unwrap();
        let kek = Kek::generate(KeyId::random(&mut rng).unwrap(), version, &mut rng).unwrap();
        let context = FileContext::new(
            TenantId::random(&mut rng).unwrap(),
            FileId::random(&mut rng).unwrap(),
            FileVersion::FIRST,
        );
        let (_, wrapped) = kek.generate_wrapped(&context, &mut rng).unwrap();
        assert_eq!(
            &wrapped.as_bytes()[WrappedFileKey::KEK_VERSION_AT],
            &[1, 2, 3, 4]
        );
    }

    /// The published vectors were made by an independent implementation
    /// (`vectors/generate.py`); both directions must match them exactly.
    #[test]
    fn published_vectors() {
        let file: serde_json::Value =
            serde_json::from_str(include_str!("../vectors/wrapped_file_key_v1.json")).unwrap();
        let vectors = file["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 4);
        for v in vectors {
            let kek = Kek::from_secret_bytes(
                KeyId::from_bytes(hex_array(&v["kek_id"])).unwrap(),
                KeyVersion::new(u32::try_from(v["kek_version"].as_u64().unwrap()).unwrap())
                    .unwrap(),
                &hex_array(&v["kek"]),
            );
            let context = FileContext::new(
                TenantId::from_bytes(hex_array(&v["tenant_id"])).unwrap(),
                FileId::from_bytes(hex_array(&v["file_id"])).unwrap(),
                FileVersion::new(v["file_version"].as_u64().unwrap()).unwrap(),
            );
            let file_key = FileKey::from_secret_bytes(&hex_array(&v["file_key"]));
            let expected: [u8; WrappedFileKey::LEN] = hex_array(&v["wrapped"]);

            let wrapped = kek
                .wrap_with_salt(&file_key, &context, &hex_array(&v["salt"]))
                .unwrap();
            assert_eq!(wrapped.as_bytes(), &expected, "{}", v["comment"]);

            let parsed = WrappedFileKey::from_bytes(&expected).unwrap();
            let unwrapped = kek.unwrap(&parsed, &context).unwrap();
            assert_eq!(unwrapped.expose_secret(), file_key.expose_secret());

            let other = FileContext {
                version: context.version.next().unwrap_or(FileVersion::FIRST),
                ..context
            };
            assert_eq!(
                kek.unwrap(&parsed, &other).unwrap_err(),
                Error::AuthenticationFailed
            );
        }
    }
}
