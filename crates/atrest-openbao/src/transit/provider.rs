//! The [`RootKeyProvider`] calls: a key's current version, and TIKs
//! wrapped and unwrapped by the server with their binding as associated
//! data.

use atrest_tenant::{KeyMaterial, ProviderError, RootKeyProvider, RootKeyRef, TikBinding};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use reqwest::Method;
use zeroize::Zeroizing;

use super::TransitKeys;
use crate::error::{Failure, Op, map_failure};
use crate::wire;

#[async_trait::async_trait]
impl RootKeyProvider for TransitKeys {
    fn name(&self) -> &str {
        &self.name
    }

    /// The newest version of transit key `label` (its `latest_version`),
    /// once the key is found fit to wrap.
    async fn current_version(&self, label: &str) -> Result<u32, ProviderError> {
        let key = self.key_ref(label, 1)?;
        let info = self.read_key(&key).await?;
        info.check_wraps(&key)?;
        Ok(info.latest_version)
    }

    async fn wrap(
        &self,
        key: &RootKeyRef,
        material: &KeyMaterial,
        binding: &TikBinding,
    ) -> Result<Vec<u8>, ProviderError> {
        // The key must exist (an encryption with `create` permission would
        // make a fresh key under a missing name) and be fit to wrap.
        self.read_key(key).await?.check_wraps(key)?;
        let mut plaintext = Zeroizing::new(String::with_capacity(48));
        STANDARD.encode_string(material.expose_secret(), &mut plaintext);
        let associated_data = STANDARD.encode(binding.as_bytes());
        let mut body = Zeroizing::new(Vec::with_capacity(
            128 + plaintext.len() + associated_data.len(),
        ));
        serde_json::to_writer(
            &mut *body,
            &wire::Encrypt {
                plaintext: &plaintext,
                associated_data: &associated_data,
                key_version: key.version(),
            },
        )
        .map_err(|_| map_failure(key, Op::Encrypt, Failure::Request("cannot encode".into())))?;
        drop(plaintext);
        let answer = self
            .request(
                key,
                Op::Encrypt,
                Method::POST,
                "encrypt",
                None,
                Some(Bytes::from_owner(body)),
            )
            .await?;
        let ciphertext = wire::encrypted(&answer)
            .ok_or_else(|| map_failure(key, Op::Encrypt, Failure::Malformed("no ciphertext")))?;
        if check_wrapped(key, ciphertext.as_bytes()).is_none() {
            return Err(map_failure(
                key,
                Op::Encrypt,
                Failure::Malformed("a ciphertext of another key version or form"),
            ));
        }
        Ok(ciphertext.into_bytes())
    }

    async fn unwrap(
        &self,
        key: &RootKeyRef,
        wrapped: &[u8],
        binding: &TikBinding,
    ) -> Result<KeyMaterial, ProviderError> {
        let ciphertext = check_wrapped(key, wrapped)
            .ok_or_else(|| ProviderError::AuthenticationFailed { key: key.clone() })?;
        let associated_data = STANDARD.encode(binding.as_bytes());
        let body = serde_json::to_vec(&wire::Decrypt {
            ciphertext,
            associated_data: &associated_data,
        })
        .map_err(|_| map_failure(key, Op::Decrypt, Failure::Request("cannot encode".into())))?;
        let answer = self
            .request(
                key,
                Op::Decrypt,
                Method::POST,
                "decrypt",
                None,
                Some(body.into()),
            )
            .await?;
        let plain = wire::decrypted(&answer)
            .map_err(|()| map_failure(key, Op::Decrypt, Failure::Malformed("no plaintext")))?;
        // Anything but 32 bytes was not wrapped here.
        plain
            .and_then(|plain| {
                KeyMaterial::from_secret_slice(&plain).filter(|_| plain.len() == KeyMaterial::LEN)
            })
            .ok_or_else(|| ProviderError::AuthenticationFailed { key: key.clone() })
    }
}

/// The ciphertext of a wrapped value, if it is a transit ciphertext of
/// `key`'s version: `vault:v<version>:<base64>`.
fn check_wrapped<'a>(key: &RootKeyRef, wrapped: &'a [u8]) -> Option<&'a str> {
    wire::transit_ciphertext(wrapped, key.version())
}

#[cfg(test)]
mod tests {
    use super::super::tests::key;
    use super::*;

    #[test]
    fn only_a_ciphertext_of_the_references_version_is_sent() {
        let good = b"vault:v3:AAECAwQFBgcICQoLDA0ODw==";
        assert!(check_wrapped(&key(3), good).is_some());
        for bad in [
            &b"vault:v2:AAECAwQFBgcICQoLDA0ODw=="[..],
            b"vault:v03:AAECAwQFBgcICQoLDA0ODw==",
            b"vault:v3:",
            b"vault:v3:AAEC AwQF",
            b"vault:v3:AAEC\"}",
            b"vault:3:AAECAwQF",
            b"v3:AAECAwQF",
            b"vault:v+3:AAECAwQF",
            b"vault:v4294967299:AAECAwQF",
            b"\xffvault:v3:AAECAwQF",
            b"",
        ] {
            assert!(check_wrapped(&key(3), bad).is_none(), "{bad:?}");
        }
        let long = format!("vault:v3:{}", "A".repeat(wire::MAX_WRAPPED));
        assert!(check_wrapped(&key(3), long.as_bytes()).is_none());
    }
}
