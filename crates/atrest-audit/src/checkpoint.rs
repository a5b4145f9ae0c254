//! Signed checkpoints of the log's head.
//!
//! A checkpoint states "the log `origin` has `size` records and its head
//! hash is `head`", signed with Ed25519. Keeping a copy of the latest
//! checkpoint somewhere the log's writer cannot reach makes any later
//! rewrite, deletion or tail truncation of the first `size` records
//! detectable.
//!
//! # Text format
//!
//! In the spirit of the C2SP `tlog-checkpoint` and `signed-note` formats:
//!
//! ```text
//! atrest-audit/0f8fad5bd9cb469fa16570867728950e      origin: "atrest-audit/" and the log id
//! 1042                                               size: number of records, decimal
//! q9Cg0xT8iR0d1ZtvbfqQm2z4hI9HIA2XG2yPQdwvLS8=       head: SHA-256 of record size-1, base64
//!                                                    (empty line)
//! — audit-2026 5n1bhEm9RfeO3b4YNdR0Fm4Zp8F8V0o5Qg…   signature line(s)
//! ```
//!
//! An optional fourth line, `time <RFC 3339 UTC with nanoseconds>`, states
//! when the checkpoint was made (an extension line in `tlog-checkpoint`'s
//! terms); the log writes it in every checkpoint. The signed message is the
//! note text: the lines above the empty line, each ending in a newline. A signature line is an em dash, a space, the key name, a
//! space, and base64 of a 4-byte key id followed by the 64-byte Ed25519
//! signature. The key id is the first 4 bytes of
//! `SHA-256(name || "\n" || 0x01 || public key)`. A verifying key is written
//! `name+<key id in hex>+<base64(0x01 || public key)>`.
//!
//! For an empty log the head is the genesis hash, `SHA-256("atrest-audit v1
//! genesis\n" || log id in hex)`.
//!
//! The log signs a checkpoint at the end of every commit batch and stores it
//! as the batch's last line ([`Event::Checkpoint`](crate::Event::Checkpoint));
//! [`Checkpoint::to_text`] is the form published to a
//! [`Witness`](crate::Witness).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
// Checkpoints are signed with AWS-LC's Ed25519 where it is built in (about
// 2.5 times as fast as ring's, which matters once per batch of the log),
// and with ring's otherwise: the same deterministic signatures from the
// same PKCS#8 documents. Both verify with ring.
#[cfg(feature = "aws-lc-rs")]
use aws_lc_rs::{rand::SystemRandom, signature::Ed25519KeyPair, signature::KeyPair as _};
use ring::signature::{ED25519, UnparsedPublicKey};
#[cfg(not(feature = "aws-lc-rs"))]
use ring::{rand::SystemRandom, signature::Ed25519KeyPair, signature::KeyPair as _};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Error;
use crate::record::Timestamp;

const ALGORITHM_ED25519: u8 = 0x01;
const SIGNATURE_PREFIX: &str = "\u{2014} ";
const TIME_PREFIX: &str = "time ";
/// Longest checkpoint text accepted, in bytes.
pub const MAX_CHECKPOINT_LEN: usize = 4096;

fn malformed(what: &'static str, reason: &'static str) -> Error {
    Error::Malformed { what, reason }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.contains('+')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut hash = Sha256::new();
    hash.update(name.as_bytes());
    hash.update(b"\n");
    hash.update([ALGORITHM_ED25519]);
    hash.update(public);
    let digest = hash.finalize();
    let mut id = [0u8; 4];
    id.copy_from_slice(digest.get(..4).unwrap_or_default());
    id
}

/// An Ed25519 key that signs checkpoints. Keep it away from the log's
/// writer: whoever holds it can sign a rewritten log.
pub struct SigningKey {
    name: String,
    pair: Ed25519KeyPair,
    public: [u8; 32],
}

impl SigningKey {
    /// A fresh key named `name`, and its PKCS#8 document to store (secret).
    ///
    /// # Errors
    /// [`Error::Malformed`] for an invalid name; [`Error::Rng`].
    pub fn generate(name: &str) -> Result<(Self, Zeroizing<Vec<u8>>), Error> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| Error::Rng)?;
        let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
        Ok((Self::from_pkcs8(name, &pkcs8)?, pkcs8))
    }

    /// Loads a key from its PKCS#8 document.
    ///
    /// # Errors
    /// [`Error::Malformed`] for an invalid name or document.
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Self, Error> {
        if !valid_name(name) {
            return Err(malformed(
                "key name",
                "empty, too long, or contains whitespace or '+'",
            ));
        }
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| malformed("signing key", "not an Ed25519 PKCS#8 document"))?;
        let public = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| malformed("signing key", "public key is not 32 bytes"))?;
        Ok(Self {
            name: name.to_owned(),
            pair,
            public,
        })
    }

    /// The key that verifies this key's signatures.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            name: self.name.clone(),
            public: self.public,
            id: key_id(&self.name, &self.public),
        }
    }

    /// Signs a checkpoint of `size` records with head hash `head`.
    ///
    /// # Errors
    /// [`Error::Malformed`] for an empty, overlong or non-printable origin.
    pub fn sign(&self, origin: &str, size: u64, head: [u8; 32]) -> Result<Checkpoint, Error> {
        Checkpoint::signed(self, origin, size, head, None)
    }
}

/// Something that signs checkpoints with Ed25519: a [`SigningKey`] held in
/// memory, or a key that never leaves a token (implement this trait over
/// the token's `sign` operation).
pub trait Signer: Send + Sync {
    /// The key that verifies this signer's signatures (its name and public
    /// key).
    fn verifying_key(&self) -> VerifyingKey;

    /// The Ed25519 signature of `message`.
    ///
    /// # Errors
    /// If the key cannot sign (a token that is unavailable, for example).
    fn sign_message(&self, message: &[u8]) -> Result<[u8; 64], Error>;
}

impl Signer for SigningKey {
    fn verifying_key(&self) -> VerifyingKey {
        SigningKey::verifying_key(self)
    }

    fn sign_message(&self, message: &[u8]) -> Result<[u8; 64], Error> {
        self.pair
            .sign(message)
            .as_ref()
            .try_into()
            .map_err(|_| malformed("signature", "not 64 bytes"))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The public half of a [`SigningKey`].
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    name: String,
    public: [u8; 32],
    id: [u8; 4],
}

impl VerifyingKey {
    /// The verifying key named `name` for the Ed25519 public key `public`
    /// (for a [`Signer`] whose key lives elsewhere).
    ///
    /// # Errors
    /// [`Error::Malformed`] for an invalid name.
    pub fn from_public_key(name: &str, public: [u8; 32]) -> Result<Self, Error> {
        if !valid_name(name) {
            return Err(malformed(
                "key name",
                "empty, too long, or contains whitespace or '+'",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            id: key_id(name, &public),
            public,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Parses `name+<key id hex>+<base64(0x01 || public key)>`.
    ///
    /// # Errors
    /// [`Error::Malformed`].
    pub fn parse(text: &str) -> Result<Self, Error> {
        // The key is base64, which may itself contain '+': split twice only.
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("verifying key", "expected name+keyid+key"));
        };
        if !valid_name(name) {
            return Err(malformed("verifying key", "invalid name"));
        }
        let key = STANDARD
            .decode(key_b64)
            .map_err(|_| malformed("verifying key", "key is not base64"))?;
        let Some((&ALGORITHM_ED25519, public)) = key.split_first() else {
            return Err(malformed("verifying key", "not an Ed25519 key"));
        };
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| malformed("verifying key", "public key is not 32 bytes"))?;
        let id = key_id(name, &public);
        if hex::encode(id) != id_hex {
            return Err(malformed("verifying key", "key id does not match the key"));
        }
        Ok(Self {
            name: name.to_owned(),
            public,
            id,
        })
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Display for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = vec![ALGORITHM_ED25519];
        key.extend_from_slice(&self.public);
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            STANDARD.encode(key)
        )
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({self})")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct SignatureLine {
    name: String,
    blob: Vec<u8>,
}

impl SignatureLine {
    /// A signature line from its key name and base64 blob (key id and
    /// signature).
    fn parse(name: &str, blob_base64: &str) -> Result<Self, Error> {
        let blob = STANDARD
            .decode(blob_base64)
            .map_err(|_| malformed("checkpoint", "signature is not base64"))?;
        if !valid_name(name) || blob.len() < 5 {
            return Err(malformed("checkpoint", "invalid signature line"));
        }
        Ok(Self {
            name: name.to_owned(),
            blob,
        })
    }
}

/// A signed statement of a log's size and head hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// `atrest-audit/<log id>`.
    pub origin: String,
    /// Number of records.
    pub size: u64,
    /// SHA-256 of the last record's line (the genesis hash for an empty log).
    pub head: [u8; 32],
    /// When it was made, if stated (an extension line, signed with the
    /// rest; the log states it in every checkpoint line).
    pub time: Option<Timestamp>,
    signatures: Vec<SignatureLine>,
}

impl Checkpoint {
    fn unsigned(origin: &str, size: u64, head: [u8; 32]) -> Result<Self, Error> {
        if origin.is_empty() || origin.len() > 256 || origin.chars().any(char::is_control) {
            return Err(malformed("checkpoint", "invalid origin"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            head,
            time: None,
            signatures: Vec::new(),
        })
    }

    /// A checkpoint of `size` records with head `head`, made at `time` (if
    /// given), signed by `signer`.
    ///
    /// # Errors
    /// [`Error::Malformed`] for an empty, overlong or non-printable origin;
    /// the signer's error.
    pub fn signed(
        signer: &(impl Signer + ?Sized),
        origin: &str,
        size: u64,
        head: [u8; 32],
        time: Option<Timestamp>,
    ) -> Result<Self, Error> {
        let mut checkpoint = Self::unsigned(origin, size, head)?;
        checkpoint.time = time;
        let key = signer.verifying_key();
        let signature = signer.sign_message(checkpoint.body().as_bytes())?;
        let mut blob = key.id.to_vec();
        blob.extend_from_slice(&signature);
        checkpoint.signatures.push(SignatureLine {
            name: key.name,
            blob,
        });
        Ok(checkpoint)
    }

    /// A checkpoint with one signature line, from the fields of a
    /// checkpoint line in the log.
    pub(crate) fn from_signature(
        origin: &str,
        size: u64,
        head: [u8; 32],
        time: Timestamp,
        name: &str,
        blob_base64: &str,
    ) -> Result<Self, Error> {
        let mut checkpoint = Self::unsigned(origin, size, head)?;
        checkpoint.time = Some(time);
        checkpoint
            .signatures
            .push(SignatureLine::parse(name, blob_base64)?);
        Ok(checkpoint)
    }

    /// The name and base64 signature blob of the first signature line.
    pub(crate) fn first_signature(&self) -> Option<(&str, String)> {
        self.signatures
            .first()
            .map(|line| (line.name.as_str(), STANDARD.encode(&line.blob)))
    }

    /// The signed part: origin, size, head and the time if stated, one per
    /// line.
    fn body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.head)
        );
        if let Some(time) = self.time {
            body.push_str(&format!("{TIME_PREFIX}{time}\n"));
        }
        body
    }

    /// The full text: body, an empty line, signature lines.
    pub fn to_text(&self) -> String {
        let mut text = self.body();
        text.push('\n');
        for line in &self.signatures {
            text.push_str(&format!(
                "{SIGNATURE_PREFIX}{} {}\n",
                line.name,
                STANDARD.encode(&line.blob)
            ));
        }
        text
    }

    /// Parses a checkpoint. Signatures are checked only by [`Self::verify`].
    ///
    /// # Errors
    /// [`Error::Malformed`] for anything but the exact format.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.len() > MAX_CHECKPOINT_LEN {
            return Err(malformed("checkpoint", "too long"));
        }
        let Some((body, signatures)) = text.split_once("\n\n") else {
            return Err(malformed(
                "checkpoint",
                "no empty line before the signatures",
            ));
        };
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(head), time, None) = (
            lines.next(),
            lines.next(),
            lines.next(),
            lines.next(),
            lines.next(),
        ) else {
            return Err(malformed(
                "checkpoint",
                "expected origin, size, head and optional time lines",
            ));
        };
        let time = time
            .map(|line| {
                line.strip_prefix(TIME_PREFIX)
                    .and_then(|t| humantime::parse_rfc3339(t).ok().map(|at| (t, at)))
                    .map(|(t, at)| (t, Timestamp::from(at)))
                    .filter(|(t, at)| at.to_string() == *t)
                    .map(|(_, at)| at)
                    .ok_or_else(|| {
                        malformed("checkpoint", "the fourth line is not a canonical time")
                    })
            })
            .transpose()?;
        let canonical_size = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        if !canonical_size {
            return Err(malformed(
                "checkpoint",
                "size is not a canonical decimal number",
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| malformed("checkpoint", "size out of range"))?;
        let head: [u8; 32] = STANDARD
            .decode(head)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| malformed("checkpoint", "head is not 32 bytes of base64"))?;
        let mut checkpoint = Self::unsigned(origin, size, head)?;
        checkpoint.time = time;
        if STANDARD.encode(head) != lines_head(body) {
            return Err(malformed("checkpoint", "head is not canonical base64"));
        }
        if !signatures.ends_with('\n') {
            return Err(malformed(
                "checkpoint",
                "signature lines must end with a newline",
            ));
        }
        // Exactly one newline ends the last signature line: blank lines
        // after it would not survive re-serialization (non-canonical).
        let Some(signatures) = signatures.strip_suffix('\n') else {
            unreachable!("checked above");
        };
        for line in signatures.split('\n') {
            let Some(rest) = line.strip_prefix(SIGNATURE_PREFIX) else {
                return Err(malformed(
                    "checkpoint",
                    "signature line does not start with an em dash",
                ));
            };
            let Some((name, blob)) = rest.split_once(' ') else {
                return Err(malformed("checkpoint", "signature line lacks a signature"));
            };
            checkpoint
                .signatures
                .push(SignatureLine::parse(name, blob)?);
        }
        if checkpoint.signatures.is_empty() {
            return Err(malformed("checkpoint", "no signature"));
        }
        Ok(checkpoint)
    }

    /// Checks that `key` signed this checkpoint.
    ///
    /// # Errors
    /// [`Error::BadSignature`] if no signature line is a valid signature by
    /// `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), Error> {
        let body = self.body();
        let signed = self.signatures.iter().any(|line| {
            line.name == key.name
                && line.blob.get(..4) == Some(&key.id[..])
                && key.verify(body.as_bytes(), line.blob.get(4..).unwrap_or_default())
        });
        if signed {
            Ok(())
        } else {
            Err(Error::BadSignature)
        }
    }
}

/// The third line of a checkpoint body, as written.
fn lines_head(body: &str) -> &str {
    body.split('\n').nth(2).unwrap_or_default()
}

/// The head hash of an empty log.
pub fn genesis_hash(log_id: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"atrest-audit v1 genesis\n");
    hash.update(log_id.as_bytes());
    hash.finalize().into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use ring::rand::SystemRandom as RingRandom;
    use ring::signature::{Ed25519KeyPair as RingPair, KeyPair as _};

    use super::{Signer as _, SigningKey};

    /// Whichever library signs, a key signs what ring's Ed25519 signs for
    /// the same PKCS#8 document, documents ring made included: switching
    /// the backend changes no signature and loads every stored key.
    #[test]
    fn a_key_signs_as_ring_does_from_the_same_document() {
        let (made_here, document) = SigningKey::generate("test").unwrap();
        let made_by_ring = RingPair::generate_pkcs8(&RingRandom::new()).unwrap();
        let loaded = SigningKey::from_pkcs8("test", made_by_ring.as_ref()).unwrap();
        for (key, document) in [(made_here, &document[..]), (loaded, made_by_ring.as_ref())] {
            let ring_pair = RingPair::from_pkcs8(document).unwrap();
            assert_eq!(key.verifying_key().public, ring_pair.public_key().as_ref());
            for message in [&b""[..], b"atrest-audit/0011\n42\n", &[7; 1000]] {
                assert_eq!(
                    key.sign_message(message).unwrap(),
                    ring_pair.sign(message).as_ref()
                );
            }
        }
    }
}
