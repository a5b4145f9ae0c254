//! Identifier and version types, and their canonical byte encodings.
//!
//! Every identifier is 16 bytes (a UUID's size) and every version a non-zero
//! integer, so all of them are `Copy` and cheap to pass around. Each type has
//! exactly one canonical byte encoding, used wherever it is bound as associated
//! data:
//!
//! ```text
//! tag (1 byte) || length (1 byte) || value (length bytes)
//! ```
//!
//! | type          | tag    | length | value                  |
//! |---------------|--------|--------|------------------------|
//! | [`TenantId`]  | `0x01` | 16     | the id's bytes         |
//! | [`FileId`]    | `0x02` | 16     | the id's bytes         |
//! | [`FileVersion`] | `0x03` | 8    | big-endian `u64`       |
//! | [`KeyId`]     | `0x04` | 16     | the id's bytes         |
//! | [`KeyVersion`] | `0x05` | 4     | big-endian `u32`       |
//!
//! The tag makes encodings of different types distinct, and the length prefix
//! keeps any concatenation of encodings unambiguous, so two different contexts
//! never encode to the same bytes.
//!
//! The text form of an id is the lowercase hyphenated UUID form
//! (`0f8fad5b-d9cb-469f-a165-70867728950e`); parsing also accepts 32 hex digits
//! without hyphens, in either case. The all-zero ("nil") id is rejected
//! everywhere: it is almost always an uninitialised value.

use core::fmt;
use core::num::{NonZeroU32, NonZeroU64};
use core::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::Error;
use crate::rng::SecureRandom;

fn invalid(kind: &'static str, reason: &'static str) -> Error {
    Error::InvalidId { kind, reason }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses the hyphenated UUID form or 32 bare hex digits.
fn parse_id(kind: &'static str, s: &str) -> Result<[u8; 16], Error> {
    let digits: &[u8] = s.as_bytes();
    let hyphenated = match digits.len() {
        36 => true,
        32 => false,
        _ => {
            return Err(invalid(
                kind,
                "expected 32 hex digits, optionally hyphenated as a UUID",
            ));
        }
    };
    let mut out = [0u8; 16];
    let mut nibbles = 0usize;
    for (i, &c) in digits.iter().enumerate() {
        if hyphenated && matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return Err(invalid(
                    kind,
                    "hyphens must be at UUID positions 8, 13, 18 and 23",
                ));
            }
            continue;
        }
        let v = hex_value(c).ok_or_else(|| invalid(kind, "not a hexadecimal digit"))?;
        if let Some(byte) = out.get_mut(nibbles / 2) {
            *byte = (*byte << 4) | v;
        }
        nibbles += 1;
    }
    if nibbles != 32 {
        return Err(invalid(kind, "expected 32 hex digits"));
    }
    Ok(out)
}

fn fmt_id(bytes: &[u8; 16], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    // Built on the stack and written once: ids are formatted on hot paths
    // (audit records of every key release).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; 36];
    let mut out = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out += 1;
        }
        for (slot, nibble) in text.iter_mut().skip(out).zip([b >> 4, b & 0x0f]) {
            *slot = DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'?');
        }
        out += 2;
    }
    match core::str::from_utf8(&text) {
        Ok(text) => f.write_str(text),
        Err(_) => Err(fmt::Error),
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $tag:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; 16]);

        impl $name {
            /// Length of the canonical encoding: tag, length, 16 bytes.
            pub const ENCODED_LEN: usize = 18;

            /// Builds the id from its 16 bytes.
            ///
            /// # Errors
            /// [`Error::InvalidId`] if all bytes are zero (the nil id).
            pub fn from_bytes(bytes: [u8; 16]) -> Result<Self, Error> {
                if bytes == [0u8; 16] {
                    return Err(invalid($kind, "the nil (all-zero) id is not allowed"));
                }
                Ok(Self(bytes))
            }

            /// A fresh random id from the given generator.
            ///
            /// # Errors
            /// [`Error::Rng`] if the generator fails.
            pub fn random(rng: &mut impl SecureRandom) -> Result<Self, Error> {
                loop {
                    let mut bytes = [0u8; 16];
                    rng.fill(&mut bytes)?;
                    // Probability 2^-128; the loop keeps the type's invariant exact.
                    if let Ok(id) = Self::from_bytes(bytes) {
                        return Ok(id);
                    }
                }
            }

            /// The id's 16 bytes.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }

            /// The canonical encoding: `tag || 16 || bytes`.
            pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
                let mut out = [0u8; Self::ENCODED_LEN];
                let (head, body) = out.split_at_mut(2);
                head.copy_from_slice(&[$tag, 16]);
                body.copy_from_slice(&self.0);
                out
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_id(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::from_bytes(parse_id($kind, s)?)
            }
        }

        impl TryFrom<[u8; 16]> for $name {
            type Error = Error;
            fn try_from(bytes: [u8; 16]) -> Result<Self, Error> {
                Self::from_bytes(bytes)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.collect_str(self)
                } else {
                    serializer.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct IdVisitor;
                impl Visitor<'_> for IdVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a ", $kind, " (UUID text or 16 bytes)"))
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<$name, E> {
                        let bytes: [u8; 16] =
                            v.try_into().map_err(|_| E::invalid_length(v.len(), &self))?;
                        $name::from_bytes(bytes).map_err(E::custom)
                    }
                }
                if deserializer.is_human_readable() {
                    deserializer.deserialize_str(IdVisitor)
                } else {
                    deserializer.deserialize_bytes(IdVisitor)
                }
            }
        }
    };
}

id_type!(
    /// Identifies a tenant: the owner of a key hierarchy and of every file key
    /// under it.
    TenantId,
    "tenant id",
    0x01
);

id_type!(
    /// Identifies a file within a tenant. Each version of the file has its own
    /// [`FileVersion`] and its own file key.
    FileId,
    "file id",
    0x02
);

impl FileId {
    /// A fresh id that sorts by creation time: the first six bytes are
    /// `unix_millis` (milliseconds since the Unix epoch, big-endian, taken
    /// modulo 2^48), the other ten come from `rng`.
    ///
    /// Ids made this way land next to each other in the ordered indexes of
    /// a catalog, so a batch of new files changes a few index pages rather
    /// than one page per file. The time in the id is no secret: the
    /// catalog records when each version was sealed anyway. Eighty random
    /// bits keep two ids of the same millisecond apart (a collision among
    /// a million ids of one millisecond has a probability below 2^-40).
    ///
    /// # Errors
    /// [`Error::Rng`] if the generator fails.
    pub fn time_ordered(unix_millis: u64, rng: &mut impl SecureRandom) -> Result<Self, Error> {
        loop {
            let mut bytes = [0u8; 16];
            let (time, random) = bytes.split_at_mut(6);
            for (to, from) in time
                .iter_mut()
                .zip(unix_millis.to_be_bytes().iter().skip(2))
            {
                *to = *from;
            }
            rng.fill(random)?;
            // All zero only if the time is zero too; draw again, as `random` does.
            if let Ok(id) = Self::from_bytes(bytes) {
                return Ok(id);
            }
        }
    }

    /// [`FileId::time_ordered`] at the system clock's current time (a clock
    /// set before 1970 counts as 0).
    ///
    /// # Errors
    /// [`Error::Rng`] if the generator fails.
    pub fn time_ordered_now(rng: &mut impl SecureRandom) -> Result<Self, Error> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        Self::time_ordered(millis, rng)
    }
}

id_type!(
    /// Identifies a key-encryption key (for example one tenant intermediate key,
    /// across all its versions).
    KeyId,
    "key id",
    0x04
);

macro_rules! version_type {
    ($(#[$doc:meta])* $name:ident, $nz:ty, $int:ty, $kind:literal, $tag:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name($nz);

        impl $name {
            /// The first version.
            pub const FIRST: Self = Self(<$nz>::MIN);

            /// Length of the canonical encoding: tag, length, big-endian value.
            pub const ENCODED_LEN: usize = 2 + core::mem::size_of::<$int>();

            /// Builds the version from its number.
            ///
            /// # Errors
            /// [`Error::InvalidId`] for zero: versions count from 1.
            pub const fn new(n: $int) -> Result<Self, Error> {
                match <$nz>::new(n) {
                    Some(v) => Ok(Self(v)),
                    None => Err(Error::InvalidId { kind: $kind, reason: "versions start at 1" }),
                }
            }

            /// The version number.
            pub const fn get(self) -> $int {
                self.0.get()
            }

            /// The next version, or `None` at the maximum.
            pub const fn next(self) -> Option<Self> {
                match self.0.checked_add(1) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// The canonical encoding: `tag || length || big-endian value`.
            pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
                let mut out = [0u8; Self::ENCODED_LEN];
                let (head, body) = out.split_at_mut(2);
                #[allow(clippy::cast_possible_truncation)] // the size is 4 or 8
                head.copy_from_slice(&[$tag, core::mem::size_of::<$int>() as u8]);
                body.copy_from_slice(&self.get().to_be_bytes());
                out
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                let n: $int = s
                    .parse()
                    .map_err(|_| invalid($kind, "not a decimal number in range"))?;
                Self::new(n)
            }
        }

        impl TryFrom<$int> for $name {
            type Error = Error;
            fn try_from(n: $int) -> Result<Self, Error> {
                Self::new(n)
            }
        }

        impl From<$name> for $int {
            fn from(v: $name) -> $int {
                v.get()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.get().serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let n = <$int>::deserialize(deserializer)?;
                Self::new(n).map_err(de::Error::custom)
            }
        }
    };
}

version_type!(
    /// The version of a file. Every version has its own file key.
    FileVersion,
    NonZeroU64,
    u64,
    "file version",
    0x03
);

version_type!(
    /// The version of a key-encryption key. Rolling a key makes a new version
    /// under the same [`KeyId`].
    KeyVersion,
    NonZeroU32,
    u32,
    "key version",
    0x05
);

/// The file a key belongs to: tenant, file and file version.
///
/// Its [canonical encoding](FileContext::encode) is what file keys are bound
/// to, both when wrapped and when used to encrypt a stream.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct FileContext {
    /// The tenant that owns the file.
    pub tenant: TenantId,
    /// The file.
    pub file: FileId,
    /// The version of the file.
    pub version: FileVersion,
}

impl FileContext {
    /// Length of the canonical encoding.
    pub const ENCODED_LEN: usize =
        TenantId::ENCODED_LEN + FileId::ENCODED_LEN + FileVersion::ENCODED_LEN;

    /// A context for (tenant, file, version).
    pub const fn new(tenant: TenantId, file: FileId, version: FileVersion) -> Self {
        Self {
            tenant,
            file,
            version,
        }
    }

    /// The canonical encoding: the tenant's, the file's and the version's
    /// encodings, concatenated in that order (46 bytes).
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        let (t, rest) = out.split_at_mut(TenantId::ENCODED_LEN);
        let (f, v) = rest.split_at_mut(FileId::ENCODED_LEN);
        t.copy_from_slice(&self.tenant.encode());
        f.copy_from_slice(&self.file.encode());
        v.copy_from_slice(&self.version.encode());
        out
    }
}
