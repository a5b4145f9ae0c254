//! Ed25519 keys for signing audit checkpoints, kept in the token.

use std::sync::Arc;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};

use super::token::Token;
use crate::{ProviderError, RootKeyRef};

/// Ed25519 keys for signing audit checkpoints, kept in the token.
impl Token {
    /// Generates an Ed25519 key pair labelled `label` in the token (private
    /// half sensitive, not extractable, usable only to sign) and returns a
    /// signer over it.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if the token already has an object
    /// with that label or no Ed25519 support; otherwise as for any token
    /// call.
    pub(crate) fn generate_checkpoint_signer(
        self: &Arc<Self>,
        label: &str,
    ) -> Result<TokenCheckpointSigner, ProviderError> {
        let key = self.key_ref(label)?;
        self.with_session(&key, |session| {
            let existing = session.find_objects(&[Attribute::Label(label.as_bytes().to_vec())])?;
            if !existing.is_empty() {
                return Err(CkError::Pkcs11(
                    RvError::TemplateInconsistent,
                    cryptoki::context::Function::FindObjects,
                ));
            }
            let public = [
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::EcParams(ED25519_OID.to_vec()),
            ];
            let private = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::AllowedMechanisms(vec![MechanismType::EDDSA]),
            ];
            session.generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private)
        })
        .map_err(|error| match error {
            ProviderError::Misconfigured { .. } => ProviderError::Misconfigured {
                provider: self.name.clone(),
                detail: format!("token already holds an object labelled {label:?}"),
            },
            other => other,
        })?;
        self.checkpoint_signer(label)
    }

    /// A signer over the Ed25519 key pair labelled `label` in the token.
    /// The verifying key is named `label` too.
    ///
    /// # Errors
    /// [`ProviderError::NotFound`] if there is no such key pair;
    /// [`ProviderError::Misconfigured`] if its public key is not Ed25519;
    /// otherwise as for any token call.
    pub(crate) fn checkpoint_signer(
        self: &Arc<Self>,
        label: &str,
    ) -> Result<TokenCheckpointSigner, ProviderError> {
        let key = self.key_ref(label)?;
        let point = self.with_session(&key, |session| {
            let found = session.find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC_EDWARDS),
                Attribute::Label(label.as_bytes().to_vec()),
            ])?;
            let [handle] = found.as_slice() else {
                return Err(CkError::Pkcs11(
                    RvError::KeyHandleInvalid,
                    cryptoki::context::Function::FindObjects,
                ));
            };
            let attributes = session.get_attributes(*handle, &[AttributeType::EcPoint])?;
            Ok(attributes.into_iter().find_map(|a| match a {
                Attribute::EcPoint(point) => Some(point),
                _ => None,
            }))
        })?;
        let misconfigured = |detail: &str| ProviderError::Misconfigured {
            provider: self.name.clone(),
            detail: format!("{label}: {detail}"),
        };
        let point = point.ok_or_else(|| misconfigured("the public key has no CKA_EC_POINT"))?;
        // An OCTET STRING holding the 32-byte key (some tokens give it bare).
        let raw = match point.as_slice() {
            [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
            bare if bare.len() == 32 => bare,
            _ => return Err(misconfigured("the public key is not an Ed25519 point")),
        };
        let public: [u8; 32] = raw
            .try_into()
            .map_err(|_| misconfigured("the public key is not 32 bytes"))?;
        let verifying = atrest_audit::VerifyingKey::from_public_key(label, public)
            .map_err(|e| misconfigured(&e.to_string()))?;
        Ok(TokenCheckpointSigner {
            token: self.clone(),
            key,
            verifying,
        })
    }
}

/// DER of the Ed25519 curve's object identifier, 1.3.101.112.
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Signs audit checkpoints with an Ed25519 key that never leaves a PKCS#11
/// token (`CKM_EDDSA`): give it to
/// [`AuditLog::create`](atrest_audit::AuditLog::create) and
/// [`AuditLog::open`](atrest_audit::AuditLog::open) in place of a
/// [`SigningKey`](atrest_audit::SigningKey) file. Made by
/// [`Pkcs11Keys::generate_checkpoint_signer`](super::Pkcs11Keys::generate_checkpoint_signer) or
/// [`Pkcs11Keys::checkpoint_signer`](super::Pkcs11Keys::checkpoint_signer).
pub struct TokenCheckpointSigner {
    token: Arc<Token>,
    key: RootKeyRef,
    verifying: atrest_audit::VerifyingKey,
}

impl atrest_audit::Signer for TokenCheckpointSigner {
    fn verifying_key(&self) -> atrest_audit::VerifyingKey {
        self.verifying.clone()
    }

    fn sign_message(&self, message: &[u8]) -> Result<[u8; 64], atrest_audit::Error> {
        let unavailable = |detail: String| atrest_audit::Error::Signer {
            signer: self.key.to_string(),
            reason: detail,
        };
        let signature = self
            .token
            .with_session(&self.key, |session| {
                let found = session.find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::KeyType(KeyType::EC_EDWARDS),
                    Attribute::Label(self.key.label().as_bytes().to_vec()),
                ])?;
                let [handle] = found.as_slice() else {
                    return Err(CkError::Pkcs11(
                        RvError::KeyHandleInvalid,
                        cryptoki::context::Function::FindObjects,
                    ));
                };
                let mechanism = Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
                    cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
                ));
                session.sign(&mechanism, *handle, message)
            })
            .map_err(|e| unavailable(e.to_string()))?;
        signature
            .as_slice()
            .try_into()
            .map_err(|_| unavailable(format!("a signature of {} bytes", signature.len())))
    }
}

impl core::fmt::Debug for TokenCheckpointSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TokenCheckpointSigner")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
