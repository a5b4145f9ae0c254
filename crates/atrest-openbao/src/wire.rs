//! The JSON bodies of the transit API calls this crate makes, and the
//! checks of what the server answers: pure functions of its bytes (the
//! `key_server_answers` fuzz target runs them).

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize as _, Zeroizing};

/// Longest wrapped value accepted, in bytes (a wrap is about 80).
pub(crate) const MAX_WRAPPED: usize = 1024;

/// The ciphertext of an encryption's answer.
pub(crate) fn encrypted(answer: &[u8]) -> Option<String> {
    serde_json::from_slice::<Answer<Encrypted>>(answer)
        .ok()
        .map(|answer| answer.data.ciphertext)
}

/// The plaintext of a decryption's answer: `Err` if the answer has none,
/// `Ok(None)` if it is not base64. Every copy of it is wiped.
pub(crate) fn decrypted(answer: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, ()> {
    let decrypted = serde_json::from_slice::<Answer<Decrypted<'_>>>(answer)
        .map_err(|_| ())?
        .data
        .plaintext;
    let mut plain = Zeroizing::new(Vec::with_capacity(64));
    let decoded = STANDARD.decode_vec(decrypted.as_bytes(), &mut plain);
    if let Cow::Owned(mut owned) = decrypted {
        owned.zeroize();
    }
    Ok(decoded.ok().map(|()| plain))
}

/// `wrapped`, if it is a transit ciphertext of key version `version`:
/// `vault:v<version>:<base64>`, at most [`MAX_WRAPPED`] bytes.
pub(crate) fn transit_ciphertext(wrapped: &[u8], version: u32) -> Option<&str> {
    if wrapped.len() > MAX_WRAPPED {
        return None;
    }
    let text = core::str::from_utf8(wrapped).ok()?;
    let rest = text.strip_prefix("vault:v")?;
    let (digits, payload) = rest.split_once(':')?;
    let canonical = !digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit());
    let valid_payload = !payload.is_empty()
        && payload
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    (canonical && digits.parse::<u32>().ok()? == version && valid_payload).then_some(text)
}

/// The `data` member of an answer.
#[derive(Deserialize)]
pub(crate) struct Answer<T> {
    pub(crate) data: T,
}

/// `GET <mount>/keys/<key>`.
#[derive(Deserialize)]
pub(crate) struct KeyData {
    #[serde(rename = "type")]
    pub(crate) key_type: String,
    pub(crate) latest_version: u64,
    pub(crate) min_decryption_version: u64,
    #[serde(default)]
    pub(crate) min_encryption_version: u64,
    #[serde(default)]
    pub(crate) exportable: bool,
    #[serde(default)]
    pub(crate) allow_plaintext_backup: bool,
    #[serde(default)]
    pub(crate) deletion_allowed: bool,
    #[serde(default)]
    pub(crate) derived: bool,
}

/// `POST <mount>/keys/<key>`.
#[derive(Serialize)]
pub(crate) struct CreateKey {
    #[serde(rename = "type")]
    pub(crate) key_type: &'static str,
    pub(crate) exportable: bool,
    pub(crate) allow_plaintext_backup: bool,
}

/// `POST <mount>/encrypt/<key>`: base64 fields.
#[derive(Serialize)]
pub(crate) struct Encrypt<'a> {
    pub(crate) plaintext: &'a str,
    pub(crate) associated_data: &'a str,
    pub(crate) key_version: u32,
}

/// The answer to an encryption.
#[derive(Deserialize)]
pub(crate) struct Encrypted {
    pub(crate) ciphertext: String,
}

/// `POST <mount>/decrypt/<key>`.
#[derive(Serialize)]
pub(crate) struct Decrypt<'a> {
    pub(crate) ciphertext: &'a str,
    pub(crate) associated_data: &'a str,
}

/// The answer to a decryption: the base64 plaintext, borrowed from the
/// (zeroized) body unless it had escapes.
#[derive(Deserialize)]
pub(crate) struct Decrypted<'a> {
    #[serde(borrow)]
    pub(crate) plaintext: Cow<'a, str>,
}

/// The body of an error answer.
#[derive(Deserialize, Default)]
pub(crate) struct Errors {
    #[serde(default)]
    pub(crate) errors: Vec<String>,
}

impl Errors {
    /// The server's messages, if the body has any.
    pub(crate) fn parse(body: &[u8]) -> Vec<String> {
        serde_json::from_slice::<Self>(body)
            .unwrap_or_default()
            .errors
    }
}
