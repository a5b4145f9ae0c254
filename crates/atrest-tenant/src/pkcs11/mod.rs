//! Root keys in a PKCS#11 token (an HSM, or SoftHSM2): customer keys, or the
//! service's master key.
//!
//! Keys are AES-256 secret keys on the token, created *sensitive* and *not
//! extractable*, so their value never leaves the token, and usable with
//! `CKM_AES_GCM` only (`CKA_ALLOWED_MECHANISMS`); wrapping and unwrapping
//! run inside the token. The service can disable a key
//! ([`Pkcs11Keys::disable_key`]) but has no way to enable one again: that
//! is the customer's act.
//!
//! # Wrapped form (version 1)
//!
//! `0x01` ‖ IV (12 bytes) ‖ AES-256-GCM ciphertext of the 32-byte key ‖
//! 16-byte tag, with associated data `0x01 ‖ aad`: 61 bytes. The IV is
//! random from the operating system, or whatever the token wrote back into
//! the mechanism parameters (tokens in FIPS mode generate their own): the
//! IV stored is always the one read back after encryption.
//!
//! The random 96-bit IV bounds the number of wraps under one token key to
//! 2^32 (NIST SP 800-38D). A token key wraps one TIK version per tenant it
//! protects and per roll, which stays many orders of magnitude below that.
//!
//! # Errors
//!
//! Return values are mapped onto [`ProviderError`]: a wrong PIN, a locked
//! PIN, a key whose use was disabled or a user who is not logged in is
//! [`ProviderError::AccessDenied`]; a missing key is
//! [`ProviderError::NotFound`] (PKCS#11 cannot tell a destroyed key from
//! one that never existed; the hierarchy reports a key that once wrapped a
//! TIK as destroyed); a wrap that does not authenticate is
//! [`ProviderError::AuthenticationFailed`] (including the general failure
//! SoftHSM2 reports for a GCM tag mismatch, when the session is otherwise
//! healthy); no token with the configured label among the tokens present is
//! [`ProviderError::Misconfigured`] (a refusal: the key is not where the
//! configuration says); anything else (device errors, a token reported
//! removed, a closed session) is [`ProviderError::Unavailable`]. A
//! session that went away is reopened once before giving up.

mod signer;
mod tenant_keys;
mod token;

use std::path::Path;
use std::sync::Arc;

use atrest_filekey::{KeyId, TenantId};
use cryptoki::mechanism::MechanismType;

use crate::{
    DerivedKey, KeyMaterial, ProviderError, RootKeyMaterial, RootKeyProvider, RootKeyRef,
    TenantKeyStore, TikBinding,
};

pub use signer::TokenCheckpointSigner;
pub(crate) use token::Token;

/// How a token protects a key: what [`Pkcs11Keys::protection`] reads back
/// from the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyProtection {
    /// `CKA_SENSITIVE`: the value cannot be read in the clear.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`: the key can be wrapped out of the token.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: it has been sensitive since it was made.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`: it has never been extractable.
    pub never_extractable: bool,
    /// Whether reading `CKA_VALUE` was refused by the token.
    pub value_readable: bool,
}

/// Root keys held in one PKCS#11 token: customer keys, the service's
/// master key, tenant keys and audit checkpoint signing keys.
///
/// Every call to the token blocks until it answers: each runs on the async
/// runtime's blocking pool ([`atrest_core::blocking::run`]), so a service
/// waiting for the token holds a task, not a worker thread. Cloning is
/// cheap: the clones share the token's one session.
#[derive(Clone)]
pub struct Pkcs11Keys {
    token: Arc<Token>,
}

impl Pkcs11Keys {
    /// Runs `call` with the token on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Arc<Token>) -> T + Send + 'static,
    ) -> T {
        let token = Arc::clone(&self.token);
        atrest_core::blocking::run(move || call(&token)).await
    }

    /// The token, for the crate's synchronous callers already on the
    /// blocking pool (a master key in the token, say).
    pub(crate) fn token(&self) -> &Arc<Token> {
        &self.token
    }

    /// Opens the token labelled `token_label` through the PKCS#11 module at
    /// `module` and logs in as the user with `user_pin`. `name` is the
    /// provider name used in [`RootKeyRef`]s (for example `customer-hsm-a`).
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if the module cannot be loaded,
    /// `name` is invalid or no token has that label;
    /// [`ProviderError::AccessDenied`] if the PIN is refused;
    /// [`ProviderError::Unavailable`] if the device fails.
    pub async fn open(
        name: &str,
        module: &Path,
        token_label: &str,
        user_pin: &str,
    ) -> Result<Self, ProviderError> {
        let (name, module, token_label, pin) = (
            name.to_owned(),
            module.to_owned(),
            token_label.to_owned(),
            zeroize::Zeroizing::new(user_pin.to_owned()),
        );
        let token =
            atrest_core::blocking::run(move || Token::open(&name, &module, &token_label, &pin))
                .await?;
        Ok(Self {
            token: Arc::new(token),
        })
    }

    /// Generates a new AES-256 key labelled `label` inside the token:
    /// persistent, private, sensitive, not extractable, usable only to
    /// encrypt and decrypt.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if the token already has a key with
    /// that label; otherwise as for any token call.
    pub async fn generate_key(&self, label: &str) -> Result<RootKeyRef, ProviderError> {
        let label = label.to_owned();
        self.blocking(move |token| token.generate_key(&label)).await
    }

    /// Imports 32 bytes as a new AES-256 key labelled `label` (for a
    /// customer who brings their own key): sensitive and not extractable
    /// from then on.
    ///
    /// # Errors
    /// As for [`Pkcs11Keys::generate_key`].
    pub async fn import_key(
        &self,
        label: &str,
        material: &RootKeyMaterial,
    ) -> Result<RootKeyRef, ProviderError> {
        let label = label.to_owned();
        // A copy for the blocking pool, wiped when dropped.
        let material = RootKeyMaterial::from_secret_bytes(material.expose_secret());
        self.blocking(move |token| token.import_key(&label, &material))
            .await
    }

    /// Reads back how the token protects key `label`, including whether it
    /// hands out the key's value (it must not).
    ///
    /// # Errors
    /// [`ProviderError::NotFound`] if there is no such key; otherwise as for
    /// any token call.
    pub async fn protection(&self, label: &str) -> Result<KeyProtection, ProviderError> {
        let label = label.to_owned();
        self.blocking(move |token| token.protection(&label)).await
    }

    /// Destroys key `label` in the token. Everything wrapped only under it
    /// becomes unrecoverable.
    ///
    /// # Errors
    /// [`ProviderError::NotFound`] if there is no such key; otherwise as for
    /// any token call.
    pub async fn destroy_key(&self, label: &str) -> Result<(), ProviderError> {
        let label = label.to_owned();
        self.blocking(move |token| token.destroy_key(&label)).await
    }

    /// Forbids using key `label` to encrypt and decrypt: how a token owner
    /// suspends the service's use of a key without destroying it. There is
    /// deliberately no way back through this type: making the key usable
    /// again is the customer's act, with the customer's own tools, never
    /// the service's.
    ///
    /// # Errors
    /// As for [`Pkcs11Keys::destroy_key`].
    pub async fn disable_key(&self, label: &str) -> Result<(), ProviderError> {
        let label = label.to_owned();
        self.blocking(move |token| token.disable_key(&label)).await
    }

    /// The mechanisms key `label` may be used with (`CKA_ALLOWED_MECHANISMS`),
    /// as the token reports them; empty if it sets no restriction.
    ///
    /// # Errors
    /// As for [`Pkcs11Keys::destroy_key`].
    pub async fn allowed_mechanisms(
        &self,
        label: &str,
    ) -> Result<Vec<MechanismType>, ProviderError> {
        let label = label.to_owned();
        self.blocking(move |token| token.allowed_mechanisms(&label))
            .await
    }

    /// Generates an Ed25519 key pair labelled `label` in the token (private
    /// half sensitive, not extractable, usable only to sign) and returns a
    /// signer over it.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if the token already has an object
    /// with that label or no Ed25519 support; otherwise as for any token
    /// call.
    pub async fn generate_checkpoint_signer(
        &self,
        label: &str,
    ) -> Result<TokenCheckpointSigner, ProviderError> {
        let label = label.to_owned();
        self.blocking(move |token| token.generate_checkpoint_signer(&label))
            .await
    }

    /// A signer over the Ed25519 key pair labelled `label` in the token.
    /// The verifying key is named `label` too.
    ///
    /// # Errors
    /// [`ProviderError::NotFound`] if there is no such key pair;
    /// [`ProviderError::Misconfigured`] if its public key is not Ed25519;
    /// otherwise as for any token call.
    pub async fn checkpoint_signer(
        &self,
        label: &str,
    ) -> Result<TokenCheckpointSigner, ProviderError> {
        let label = label.to_owned();
        self.blocking(move |token| token.checkpoint_signer(&label))
            .await
    }
}

impl core::fmt::Debug for Pkcs11Keys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pkcs11Keys")
            .field("name", &self.token.name)
            .field("token", &self.token.token_label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Keys {
    /// Refuses a reference of another provider: a key of the same label in
    /// this token is not the key it names.
    fn check_provider(&self, key: &RootKeyRef) -> Result<(), ProviderError> {
        if key.provider() == self.token.name {
            Ok(())
        } else {
            Err(ProviderError::Misconfigured {
                provider: self.token.name.clone(),
                detail: format!("root key {key} belongs to another provider"),
            })
        }
    }
}

#[async_trait::async_trait]
impl RootKeyProvider for Pkcs11Keys {
    fn name(&self) -> &str {
        &self.token.name
    }

    async fn wrap(
        &self,
        key: &RootKeyRef,
        material: &KeyMaterial,
        binding: &TikBinding,
    ) -> Result<Vec<u8>, ProviderError> {
        self.check_provider(key)?;
        let (key, binding) = (key.clone(), binding.clone());
        let material = KeyMaterial::from_secret_bytes(material.expose_secret());
        self.blocking(move |token| token.wrap_secret(&key, &material, binding.as_bytes()))
            .await
    }

    async fn unwrap(
        &self,
        key: &RootKeyRef,
        wrapped: &[u8],
        binding: &TikBinding,
    ) -> Result<KeyMaterial, ProviderError> {
        self.check_provider(key)?;
        let (key, wrapped, binding) = (key.clone(), wrapped.to_vec(), binding.clone());
        self.blocking(move |token| token.unwrap_secret(&key, &wrapped, binding.as_bytes()))
            .await
    }
}

/// Tenant keys held in the token (see [`crate::tenant_key`]): one
/// generic secret per tenant, made inside the token (sensitive, not
/// extractable, usable only for `CKM_SHA256_HMAC` signing), so the key
/// never exists outside it and a purge destroys it there. Its label is
/// `atrest-tenant-<tenant>-<TIK id>`.
#[async_trait::async_trait]
impl TenantKeyStore for Pkcs11Keys {
    async fn create(&self, tenant: TenantId, tik_id: KeyId) -> Result<(), crate::Error> {
        self.blocking(move |token| token.create_tenant_key(tenant, tik_id))
            .await
    }

    async fn derive(
        &self,
        tenant: TenantId,
        tik_id: KeyId,
        input: &[u8],
    ) -> Result<DerivedKey, crate::Error> {
        let input = zeroize::Zeroizing::new(input.to_vec());
        self.blocking(move |token| token.derive_with_tenant_key(tenant, tik_id, &input))
            .await
    }

    async fn derive_version(
        &self,
        tenant: TenantId,
        tik_id: KeyId,
        version_key: KeyId,
        input: &[u8],
    ) -> Result<DerivedKey, crate::Error> {
        let input = zeroize::Zeroizing::new(input.to_vec());
        self.blocking(move |token| {
            let material = token.derive_with_tenant_key(tenant, tik_id, &input)?;
            let scoped =
                token.derive_with_tenant_key(tenant, version_key, material.expose_secret());
            crate::tenant_key::through_version_key(material, scoped)
        })
        .await
    }

    async fn destroy(&self, tenant: TenantId) -> Result<u64, crate::Error> {
        self.blocking(move |token| token.destroy_tenant_keys(tenant))
            .await
    }

    async fn destroy_key(&self, tenant: TenantId, key: KeyId) -> Result<bool, crate::Error> {
        self.blocking(move |token| token.destroy_tenant_key(tenant, key))
            .await
    }

    async fn holds_keys_of(&self, tenant: TenantId) -> Result<bool, crate::Error> {
        self.blocking(move |token| token.holds_tenant_keys(tenant))
            .await
    }
}
