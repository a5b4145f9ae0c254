//! The JSON bodies of the transit API calls this crate makes.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

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
