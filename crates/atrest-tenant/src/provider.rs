//! Root-key providers: what wraps a tenant intermediate key.

use core::fmt;

use crate::ProviderError;

/// Longest provider name or key label, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// A root key, by reference: the provider that holds it, its label there,
/// and its version. Never the key itself.
///
/// Displayed as `provider:label@version`, which is also how it appears in
/// audit records.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RootKeyRef {
    provider: String,
    label: String,
    version: u32,
}

impl RootKeyRef {
    /// A reference to version `version` of key `label` held by `provider`.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if a name is empty, longer than
    /// [`MAX_NAME_LEN`] bytes or contains control characters, `:` or `@`
    /// (the provider name) or control characters (the label), or the version
    /// is 0.
    pub fn new(
        provider: impl Into<String>,
        label: impl Into<String>,
        version: u32,
    ) -> Result<Self, ProviderError> {
        let (provider, label) = (provider.into(), label.into());
        let bad = |detail: &str| ProviderError::Misconfigured {
            provider: provider.clone(),
            detail: format!("invalid root key reference: {detail}"),
        };
        check_name(&provider, &[':', '@']).map_err(|why| bad(&format!("provider name {why}")))?;
        check_name(&label, &['@']).map_err(|why| bad(&format!("key label {why}")))?;
        if version == 0 {
            return Err(bad("version 0"));
        }
        Ok(Self {
            provider,
            label,
            version,
        })
    }

    /// The provider's name.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The key's label at the provider.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The key's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The same key at another version.
    pub(crate) fn with_version(&self, version: u32) -> Self {
        Self {
            version,
            ..self.clone()
        }
    }

    /// Canonical, unambiguous encoding, for associated data.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        for part in [self.provider.as_bytes(), self.label.as_bytes()] {
            // Both are at most MAX_NAME_LEN (128) bytes long.
            out.push(u8::try_from(part.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(part);
        }
        out.extend_from_slice(&self.version.to_be_bytes());
    }
}

fn check_name(name: &str, forbidden: &[char]) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("is longer than 128 bytes");
    }
    if name
        .chars()
        .any(|c| c.is_control() || forbidden.contains(&c))
    {
        return Err("contains a control character or a reserved character (`:` `@`)");
    }
    Ok(())
}

impl fmt::Display for RootKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}@{}", self.provider, self.label, self.version)
    }
}

impl fmt::Debug for RootKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootKeyRef({self})")
    }
}

impl core::str::FromStr for RootKeyRef {
    type Err = ProviderError;

    /// Parses `provider:label@version` (the `@version` part may be left
    /// out, meaning version 1).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || ProviderError::Misconfigured {
            provider: text.chars().take(MAX_NAME_LEN).collect(),
            detail: "a root key is written provider:label[@version]".into(),
        };
        let (provider, rest) = text.split_once(':').ok_or_else(malformed)?;
        let (label, version) = match rest.rsplit_once('@') {
            Some((label, version)) => (label, version.parse().map_err(|_| malformed())?),
            None => (rest, 1),
        };
        Self::new(provider, label, version)
    }
}

/// Defines a 32-byte secret type for one role: zeroized on drop, not
/// `Clone`, and its `Debug` shows no bytes. One type per role, so a secret
/// of one role is never passed where another's is expected.
macro_rules! secret_type {
    ($(#[$doc:meta])* $vis:vis struct $name:ident;) => {
        $(#[$doc])*
        $vis struct $name([u8; 32]);

        #[allow(dead_code, unreachable_pub)]
        impl $name {
            /// Length in bytes.
            pub const LEN: usize = 32;

            /// Takes a copy of secret bytes; the caller should zeroize its
            /// own.
            pub fn from_secret_bytes(bytes: &[u8; Self::LEN]) -> Self {
                Self(*bytes)
            }

            /// From a slice of exactly 32 bytes, or `None` for any other
            /// length.
            pub fn from_secret_slice(bytes: &[u8]) -> Option<Self> {
                let mut secret = Self([0; Self::LEN]);
                secret.0.copy_from_slice(
                    bytes
                        .get(..Self::LEN)
                        .filter(|_| bytes.len() == Self::LEN)?,
                );
                Some(secret)
            }

            /// Fresh random bytes from the operating system.
            ///
            /// # Errors
            /// [`crate::Error::Rng`] if the generator fails.
            pub fn generate() -> Result<Self, crate::Error> {
                let mut secret = Self([0; Self::LEN]);
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret.0)
                    .map_err(|_| crate::Error::Rng)?;
                Ok(secret)
            }

            /// The secret bytes.
            pub fn expose_secret(&self) -> &[u8; Self::LEN] {
                &self.0
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                ::zeroize::Zeroize::zeroize(&mut self.0);
            }
        }

        impl ::zeroize::ZeroizeOnDrop for $name {}

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }

        impl crate::seal::Secret for $name {
            fn bytes(&self) -> &[u8; 32] {
                &self.0
            }

            fn from_bytes(bytes: &[u8; 32]) -> Self {
                Self(*bytes)
            }
        }
    };
}
pub(crate) use secret_type;

secret_type! {
    /// A TIK version's secret as root-key providers wrap it (its seed: the
    /// TIK itself is derived from it and the tenant key, see
    /// [`crate::tenant_key`]): what travels between a provider and the
    /// hierarchy.
    pub struct KeyMaterial;
}

secret_type! {
    /// A root key's own bytes: what a customer who brings their own key
    /// imports into a token ([`crate::Pkcs11Keys::import_key`]), and what
    /// the service's key store seals under its master key.
    pub struct RootKeyMaterial;
}

/// The associated data a TIK wrap is bound to: the tenant and its kind,
/// the TIK id and version, and the root-key slot (index, role, key). Made
/// by the key hierarchy; a provider authenticates [`TikBinding::as_bytes`]
/// (for example as AES-GCM associated data) and stores nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct TikBinding(Vec<u8>);

impl TikBinding {
    /// A binding of the given bytes. The hierarchy makes its own; this is
    /// for testing a provider in isolation.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes to authenticate.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TikBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TikBinding({} bytes)", self.0.len())
    }
}

/// Something that holds root keys and wraps and unwraps tenant intermediate
/// keys (TIKs) with them, without the root key leaving it: the service's
/// own key store ([`crate::ServiceKeys`]), a customer's HSM over PKCS#11
/// ([`crate::Pkcs11Keys`]), a cloud KMS.
///
/// A [`TikBinding`] binds each wrap to the tenant, the TIK version and the
/// root-key slot; a provider must authenticate it (for example as AES-GCM
/// associated data) so that a wrap never unwraps in another context.
///
/// Errors must tell a refusal ([`ProviderError::AccessDenied`],
/// [`ProviderError::NotFound`], [`ProviderError::Destroyed`]) from a
/// transient failure ([`ProviderError::Unavailable`]): the hierarchy falls
/// back to the availability key only on the latter.
///
/// Async, so that a network KMS does not block the caller's thread; the
/// providers of this crate answer without waiting and also offer the same
/// calls as blocking inherent methods.
#[async_trait::async_trait]
pub trait RootKeyProvider: Send + Sync {
    /// The provider's name, the first part of its [`RootKeyRef`]s.
    fn name(&self) -> &str;

    /// The newest version of key `label` (providers without versions: 1).
    ///
    /// # Errors
    /// As for [`RootKeyProvider::wrap`].
    async fn current_version(&self, label: &str) -> Result<u32, ProviderError> {
        let _ = label;
        Ok(1)
    }

    /// Wraps `material` under root key `key`, binding `binding`.
    ///
    /// # Errors
    /// A [`ProviderError`] saying why the key could not be used.
    async fn wrap(
        &self,
        key: &RootKeyRef,
        material: &KeyMaterial,
        binding: &TikBinding,
    ) -> Result<Vec<u8>, ProviderError>;

    /// Unwraps what [`RootKeyProvider::wrap`] returned for the same `key`
    /// and `binding`.
    ///
    /// # Errors
    /// A [`ProviderError`] saying why the key could not be used, or
    /// [`ProviderError::AuthenticationFailed`] if `wrapped` or `binding`
    /// differ from what was wrapped.
    async fn unwrap(
        &self,
        key: &RootKeyRef,
        wrapped: &[u8],
        binding: &TikBinding,
    ) -> Result<KeyMaterial, ProviderError>;
}
