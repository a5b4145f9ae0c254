//! What the server says about a key, and what operators do with keys:
//! create, rotate, and the policy the service's token needs.

use atrest_tenant::{ProviderError, RootKeyRef};
use reqwest::Method;

use super::{KEY_TYPE, TransitKeys, is_key_name};
use crate::error::{Failure, Op, map_failure};
use crate::wire;

/// Key types whose encryption authenticates associated data, the only ones
/// that wrap.
const AEAD_KEY_TYPES: [&str; 3] = [KEY_TYPE, "chacha20-poly1305", "xchacha20-poly1305"];

/// What the server says about a transit key ([`TransitKeys::key_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransitKeyInfo {
    /// The key type, for example `aes256-gcm96`.
    pub key_type: String,
    /// The newest version.
    pub latest_version: u32,
    /// Versions below this one no longer decrypt (set by the key's owner).
    pub min_decryption_version: u32,
    /// Versions below this one no longer encrypt (0: any).
    pub min_encryption_version: u32,
    /// Whether the key can be exported (it then leaves the server).
    pub exportable: bool,
    /// Whether a plaintext backup of the key can be taken.
    pub allow_plaintext_backup: bool,
    /// Whether the key may be deleted.
    pub deletion_allowed: bool,
    /// Whether the key needs a derivation context.
    pub derived: bool,
}

impl TransitKeyInfo {
    fn from_wire(data: wire::KeyData) -> Option<Self> {
        let version = |v: u64| u32::try_from(v).ok();
        Some(Self {
            key_type: data.key_type,
            latest_version: version(data.latest_version)?,
            min_decryption_version: version(data.min_decryption_version)?,
            min_encryption_version: version(data.min_encryption_version)?,
            exportable: data.exportable,
            allow_plaintext_backup: data.allow_plaintext_backup,
            deletion_allowed: data.deletion_allowed,
            derived: data.derived,
        })
    }

    /// Refuses a key that cannot wrap as this crate requires: one whose
    /// encryption does not authenticate associated data, that needs a
    /// derivation context, or that can leave the server.
    pub(super) fn check_wraps(&self, key: &RootKeyRef) -> Result<(), ProviderError> {
        let refuse = |why: &str| ProviderError::Misconfigured {
            provider: key.provider().to_owned(),
            detail: format!("transit key {}: {why}", key.label()),
        };
        if !AEAD_KEY_TYPES.contains(&self.key_type.as_str()) {
            return Err(refuse(&format!(
                "type {} does not authenticate associated data; use {KEY_TYPE}",
                self.key_type
            )));
        }
        if self.derived {
            return Err(refuse("a derived key is not supported"));
        }
        if self.exportable || self.allow_plaintext_backup {
            return Err(refuse(
                "the key can be exported or backed up in plaintext; root keys must be created with exportable=false",
            ));
        }
        Ok(())
    }
}

impl TransitKeys {
    /// What the server says about transit key `label`.
    ///
    /// # Errors
    /// [`ProviderError::NotFound`] if there is no such key; otherwise as
    /// for any call (see the crate documentation's table).
    pub async fn key_info(&self, label: &str) -> Result<TransitKeyInfo, ProviderError> {
        let key = self.key_ref(label, 1)?;
        self.read_key(&key).await
    }

    /// `GET <mount>/keys/<key>`: the key's description.
    pub(super) async fn read_key(&self, key: &RootKeyRef) -> Result<TransitKeyInfo, ProviderError> {
        let body = self
            .request(key, Op::ReadKey, Method::GET, "keys", None, None)
            .await?;
        serde_json::from_slice::<wire::Answer<wire::KeyData>>(&body)
            .ok()
            .and_then(|answer| TransitKeyInfo::from_wire(answer.data))
            .ok_or_else(|| {
                map_failure(
                    key,
                    Op::ReadKey,
                    Failure::Malformed("not a transit key's description"),
                )
            })
    }

    /// Creates transit key `label` as a root key: type `aes256-gcm96`, not
    /// exportable, no plaintext backup. For operators (a customer creates
    /// their keys with their own tools and the same settings) and tests.
    /// Returns its first version.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if the key already exists;
    /// [`ProviderError::AccessDenied`] if the token may not create it;
    /// otherwise as for any call.
    pub async fn create_key(&self, label: &str) -> Result<RootKeyRef, ProviderError> {
        let key = self.key_ref(label, 1)?;
        match self.read_key(&key).await {
            Err(ProviderError::NotFound { .. }) => {}
            Ok(_) => {
                return Err(ProviderError::Misconfigured {
                    provider: self.name.clone(),
                    detail: format!("transit key {label} already exists"),
                });
            }
            Err(error) => return Err(error),
        }
        let body = serde_json::to_vec(&wire::CreateKey {
            key_type: KEY_TYPE,
            exportable: false,
            allow_plaintext_backup: false,
        })
        .map_err(|_| {
            map_failure(
                &key,
                Op::ManageKey,
                Failure::Request("cannot encode".into()),
            )
        })?;
        let _ = self
            .request(
                &key,
                Op::ManageKey,
                Method::POST,
                "keys",
                None,
                Some(body.into()),
            )
            .await?;
        let info = self.read_key(&key).await?;
        self.key_ref(label, info.latest_version)
    }

    /// Rotates transit key `label`: a new version that new TIK wraps use
    /// once [`KeyHierarchy::roll_root_key`](atrest_tenant::KeyHierarchy::roll_root_key)
    /// moved them to it. Older versions still decrypt until the key's owner
    /// raises its `min_decryption_version`. Returns the new version.
    ///
    /// # Errors
    /// [`ProviderError::NotFound`] if there is no such key;
    /// [`ProviderError::AccessDenied`] if the token may not rotate it;
    /// otherwise as for any call.
    pub async fn rotate_key(&self, label: &str) -> Result<RootKeyRef, ProviderError> {
        let key = self.key_ref(label, 1)?;
        let _ = self
            .request(
                &key,
                Op::ManageKey,
                Method::POST,
                "keys",
                Some("rotate"),
                None,
            )
            .await?;
        let info = self.read_key(&key).await?;
        self.key_ref(label, info.latest_version)
    }

    /// A policy (HCL) that lets the service use keys `labels` of this
    /// mount and nothing else: read each key's versions, encrypt and
    /// decrypt with it. It grants `update`, not `create`, on `encrypt`, so
    /// the server never creates a missing key on an encryption.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] for a label that is not a transit
    /// key name (it would be written into the policy's text).
    pub fn service_policy(&self, labels: &[&str]) -> Result<String, ProviderError> {
        let mut policy = String::new();
        for label in labels {
            if !is_key_name(label) {
                return Err(ProviderError::Misconfigured {
                    provider: self.name.clone(),
                    detail: format!("{label:?} is not a transit key name"),
                });
            }
            for (path, capability) in [
                ("keys", "read"),
                ("encrypt", "update"),
                ("decrypt", "update"),
            ] {
                policy.push_str(&format!(
                    "path \"{}/{path}/{label}\" {{\n  capabilities = [\"{capability}\"]\n}}\n",
                    self.mount
                ));
            }
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{key, provider};
    use super::*;

    #[test]
    fn the_service_policy_grants_update_on_named_keys_only() {
        let keys = provider("http://127.0.0.1:1", "/tenants/contoso/");
        let policy = keys.service_policy(&["contoso"]).unwrap();
        assert!(
            keys.service_policy(&["x\" { capabilities = [\"sudo\"] }"])
                .is_err()
        );
        assert!(policy.contains("path \"tenants/contoso/decrypt/contoso\""));
        assert!(policy.contains("[\"update\"]") && !policy.contains("create"));
    }

    #[test]
    fn keys_that_cannot_wrap_are_refused() {
        let info = TransitKeyInfo {
            key_type: KEY_TYPE.into(),
            latest_version: 1,
            min_decryption_version: 1,
            min_encryption_version: 0,
            exportable: false,
            allow_plaintext_backup: false,
            deletion_allowed: false,
            derived: false,
        };
        assert!(info.check_wraps(&key(1)).is_ok());
        for bad in [
            TransitKeyInfo {
                key_type: "rsa-4096".into(),
                ..info.clone()
            },
            TransitKeyInfo {
                exportable: true,
                ..info.clone()
            },
            TransitKeyInfo {
                allow_plaintext_backup: true,
                ..info.clone()
            },
            TransitKeyInfo {
                derived: true,
                ..info.clone()
            },
        ] {
            assert!(
                matches!(
                    bad.check_wraps(&key(1)),
                    Err(ProviderError::Misconfigured { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
