//! The token itself: the PKCS#11 module's context, the logged-in session,
//! finding keys, and the calls the provider, the tenant keys and the
//! checkpoint signer make, each blocking on the token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroize;

use super::KeyProtection;
use crate::seal::Secret;
use crate::{KeyMaterial, ProviderError, RootKeyMaterial, RootKeyRef};

/// The label prefix of tenant keys held in a token.
pub(crate) const TENANT_KEY_PREFIX: &str = "atrest-tenant-";

const VERSION: u8 = 1;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
const TAG_BITS: u64 = 128;
const WRAPPED_LEN: usize = 1 + IV_LEN + KeyMaterial::LEN + TAG_LEN;

/// One PKCS#11 token, logged in: what [`Pkcs11Keys`](super::Pkcs11Keys)
/// handles share. Its calls block on the token.
///
/// One session, logged in as the user, serialized behind a mutex: the
/// hierarchy caches unwrapped TIKs, so token calls are rare.
pub(crate) struct Token {
    pub(crate) name: String,
    context: Pkcs11,
    pub(crate) token_label: String,
    pin: AuthPin,
    session: Mutex<Option<Session>>,
}

/// One initialized context per module, for the life of the process:
/// PKCS#11 modules are initialized once and shared by all their users.
fn context_for(module: &Path) -> Result<Pkcs11, CkError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(context) = contexts.get(module) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(module)?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(error) => return Err(error),
    }
    let _ = contexts.insert(module.to_path_buf(), context.clone());
    Ok(context)
}

impl Token {
    /// Opens the token labelled `token_label` through the PKCS#11 module at
    /// `module` and logs in as the user with `user_pin`. `name` is the
    /// provider name used in [`RootKeyRef`]s (for example `customer-hsm-a`).
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if the module cannot be loaded,
    /// `name` is invalid or no token has that label;
    /// [`ProviderError::AccessDenied`] if the PIN is refused;
    /// [`ProviderError::Unavailable`] if the device fails.
    pub(crate) fn open(
        name: &str,
        module: &Path,
        token_label: &str,
        user_pin: &str,
    ) -> Result<Self, ProviderError> {
        // Validates the name.
        let _ = RootKeyRef::new(name, "-", 1)?;
        let context = context_for(module).map_err(|error| ProviderError::Misconfigured {
            provider: name.to_owned(),
            detail: format!("cannot load PKCS#11 module {}: {error}", module.display()),
        })?;
        let keys = Self {
            name: name.to_owned(),
            context,
            token_label: token_label.to_owned(),
            pin: AuthPin::from(user_pin.to_owned()),
            session: Mutex::new(None),
        };
        drop(keys.session(&keys.token_ref())?);
        Ok(keys)
    }

    pub(crate) fn token_ref(&self) -> RootKeyRef {
        RootKeyRef::new(self.name.clone(), format!("token {}", self.token_label), 1)
            .or_else(|_| RootKeyRef::new(self.name.clone(), "token", 1))
            .unwrap_or_else(|_| unreachable!("the provider name was validated in open"))
    }

    pub(crate) fn key_ref(&self, label: &str) -> Result<RootKeyRef, ProviderError> {
        RootKeyRef::new(self.name.clone(), label, 1)
    }

    pub(crate) fn open_session(&self, key: &RootKeyRef) -> Result<Session, ProviderError> {
        let slot = self
            .context
            .get_slots_with_token()
            .map_err(|e| map_error(key, e))?
            .into_iter()
            .find(|slot| {
                self.context
                    .get_token_info(*slot)
                    .is_ok_and(|info| info.label() == self.token_label)
            })
            // Not where the configuration says: a refusal, never taken for
            // an outage (which would open the way to the availability key).
            .ok_or_else(|| ProviderError::Misconfigured {
                provider: self.name.clone(),
                detail: format!("no token labelled {:?} is present", self.token_label),
            })?;
        let session = self
            .context
            .open_rw_session(slot)
            .map_err(|e| map_error(key, e))?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(error) => Err(map_error(key, error)),
        }
    }

    /// The logged-in session, opened if needed.
    pub(crate) fn session(
        &self,
        key: &RootKeyRef,
    ) -> Result<MutexGuard<'_, Option<Session>>, ProviderError> {
        let mut guard = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none() {
            *guard = Some(self.open_session(key)?);
        }
        Ok(guard)
    }

    /// Runs `op` on the session; reopens the session once if it went away.
    pub(crate) fn with_session<T>(
        &self,
        key: &RootKeyRef,
        op: impl Fn(&Session) -> Result<T, CkError>,
    ) -> Result<T, ProviderError> {
        let mut guard = self.session(key)?;
        let first = match guard.as_ref() {
            Some(session) => op(session),
            None => unreachable!("session() opened a session"),
        };
        match first {
            Err(CkError::Pkcs11(
                RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved,
                _,
            )) => {
                *guard = None;
                let session = self.open_session(key)?;
                let result = op(&session).map_err(|e| map_error(key, e));
                *guard = Some(session);
                result
            }
            other => other.map_err(|e| map_error(key, e)),
        }
    }

    pub(crate) fn find(session: &Session, label: &str) -> Result<Option<ObjectHandle>, CkError> {
        let found = session.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            // Ambiguous: refuse rather than pick one.
            _ => Err(CkError::Pkcs11(
                RvError::TemplateInconsistent,
                cryptoki::context::Function::FindObjects,
            )),
        }
    }

    pub(crate) fn handle(
        &self,
        session: &Session,
        key: &RootKeyRef,
    ) -> Result<ObjectHandle, CkError> {
        Self::find(session, key.label())?.ok_or(CkError::Pkcs11(
            RvError::KeyHandleInvalid,
            cryptoki::context::Function::FindObjects,
        ))
    }

    pub(crate) fn key_template(label: &str) -> Vec<Attribute> {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            // Usable with AES-GCM only: no ECB or CBC to misuse it with.
            Attribute::AllowedMechanisms(vec![MechanismType::AES_GCM]),
        ]
    }

    pub(crate) fn refuse_existing(
        &self,
        session: &Session,
        key: &RootKeyRef,
    ) -> Result<(), ProviderError> {
        match Self::find(session, key.label()) {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(ProviderError::Misconfigured {
                provider: self.name.clone(),
                detail: format!("token already holds a key labelled {:?}", key.label()),
            }),
            Err(error) => Err(map_error(key, error)),
        }
    }

    /// Generates a new AES-256 key labelled `label` inside the token:
    /// persistent, private, sensitive, not extractable, usable only to
    /// encrypt and decrypt.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if the token already has a key with
    /// that label; otherwise as for any token call.
    pub(crate) fn generate_key(&self, label: &str) -> Result<RootKeyRef, ProviderError> {
        let key = self.key_ref(label)?;
        let guard = self.session(&key)?;
        let session = guard.as_ref().unwrap_or_else(|| unreachable!("opened"));
        self.refuse_existing(session, &key)?;
        let mut template = Self::key_template(label);
        template.push(Attribute::ValueLen(32.into()));
        let _ = session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| map_error(&key, e))?;
        Ok(key)
    }

    /// Imports 32 bytes as a new AES-256 key labelled `label` (for a
    /// customer who brings their own key): sensitive and not extractable
    /// from then on.
    ///
    /// # Errors
    /// As for [`Pkcs11Keys::generate_key`](super::Pkcs11Keys::generate_key).
    pub(crate) fn import_key(
        &self,
        label: &str,
        material: &RootKeyMaterial,
    ) -> Result<RootKeyRef, ProviderError> {
        let key = self.key_ref(label)?;
        let guard = self.session(&key)?;
        let session = guard.as_ref().unwrap_or_else(|| unreachable!("opened"));
        self.refuse_existing(session, &key)?;
        let mut template = Self::key_template(label);
        let mut value = material.expose_secret().to_vec();
        template.push(Attribute::Value(value.clone()));
        value.zeroize();
        let created = session.create_object(&template);
        for attribute in &mut template {
            if let Attribute::Value(bytes) = attribute {
                bytes.zeroize();
            }
        }
        let _ = created.map_err(|e| map_error(&key, e))?;
        Ok(key)
    }

    /// Reads back how the token protects key `label`, including whether it
    /// hands out the key's value (it must not).
    ///
    /// # Errors
    /// [`ProviderError::NotFound`] if there is no such key; otherwise as for
    /// any token call.
    pub(crate) fn protection(&self, label: &str) -> Result<KeyProtection, ProviderError> {
        let key = self.key_ref(label)?;
        self.with_session(&key, |session| {
            let handle = self.handle(session, &key)?;
            let flags = session.get_attributes(
                handle,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                ],
            )?;
            let flag = |wanted: AttributeType| {
                flags.iter().any(|attribute| match attribute {
                    Attribute::Sensitive(v) if wanted == AttributeType::Sensitive => *v,
                    Attribute::Extractable(v) if wanted == AttributeType::Extractable => *v,
                    Attribute::AlwaysSensitive(v) if wanted == AttributeType::AlwaysSensitive => *v,
                    Attribute::NeverExtractable(v) if wanted == AttributeType::NeverExtractable => {
                        *v
                    }
                    _ => false,
                })
            };
            let value_readable = match session.get_attributes(handle, &[AttributeType::Value]) {
                Ok(values) => values.iter().any(|a| matches!(a, Attribute::Value(_))),
                Err(_) => false,
            };
            Ok(KeyProtection {
                sensitive: flag(AttributeType::Sensitive),
                extractable: flag(AttributeType::Extractable),
                always_sensitive: flag(AttributeType::AlwaysSensitive),
                never_extractable: flag(AttributeType::NeverExtractable),
                value_readable,
            })
        })
    }

    /// Destroys key `label` in the token. Everything wrapped only under it
    /// becomes unrecoverable.
    ///
    /// # Errors
    /// [`ProviderError::NotFound`] if there is no such key; otherwise as for
    /// any token call.
    pub(crate) fn destroy_key(&self, label: &str) -> Result<(), ProviderError> {
        let key = self.key_ref(label)?;
        self.with_session(&key, |session| {
            let handle = self.handle(session, &key)?;
            session.destroy_object(handle)
        })
    }

    /// Forbids using key `label` to encrypt and decrypt: how a token owner
    /// suspends the service's use of a key without destroying it. There is
    /// deliberately no way back through this type: making the key usable
    /// again is the customer's act, with the customer's own tools, never
    /// the service's.
    ///
    /// # Errors
    /// As for [`Pkcs11Keys::destroy_key`](super::Pkcs11Keys::destroy_key).
    pub(crate) fn disable_key(&self, label: &str) -> Result<(), ProviderError> {
        let key = self.key_ref(label)?;
        self.with_session(&key, |session| {
            let handle = self.handle(session, &key)?;
            session.update_attributes(
                handle,
                &[Attribute::Encrypt(false), Attribute::Decrypt(false)],
            )
        })
    }

    /// The mechanisms key `label` may be used with (`CKA_ALLOWED_MECHANISMS`),
    /// as the token reports them; empty if it sets no restriction.
    ///
    /// # Errors
    /// As for [`Pkcs11Keys::destroy_key`](super::Pkcs11Keys::destroy_key).
    pub(crate) fn allowed_mechanisms(
        &self,
        label: &str,
    ) -> Result<Vec<MechanismType>, ProviderError> {
        let key = self.key_ref(label)?;
        self.with_session(&key, |session| {
            let handle = self.handle(session, &key)?;
            let attributes = session.get_attributes(handle, &[AttributeType::AllowedMechanisms])?;
            Ok(attributes
                .into_iter()
                .find_map(|a| match a {
                    Attribute::AllowedMechanisms(list) => Some(list),
                    _ => None,
                })
                .unwrap_or_default())
        })
    }
}

/// Runs an AES-GCM encryption with `iv` in its parameters and returns the
/// IV as the parameters hold it afterwards: a token that generates its own
/// IV (FIPS-mode HSMs) writes it back there, and only that IV decrypts.
fn gcm_encrypt<E>(
    iv: [u8; IV_LEN],
    encrypt: impl FnOnce(&mut [u8]) -> Result<Vec<u8>, E>,
) -> Result<([u8; IV_LEN], Vec<u8>), E> {
    let mut iv = iv;
    let ciphertext = encrypt(&mut iv)?;
    Ok((iv, ciphertext))
}

/// The wrapped form: version, the IV the token used, ciphertext and tag.
fn assemble_wrapped(
    key: &RootKeyRef,
    iv: [u8; IV_LEN],
    ciphertext: &[u8],
) -> Result<Vec<u8>, ProviderError> {
    if ciphertext.len() != KeyMaterial::LEN + TAG_LEN {
        return Err(ProviderError::Unavailable {
            key: key.clone(),
            detail: format!(
                "token returned {} bytes of AES-GCM output",
                ciphertext.len()
            ),
        });
    }
    let mut wrapped = Vec::with_capacity(WRAPPED_LEN);
    wrapped.push(VERSION);
    wrapped.extend_from_slice(&iv);
    wrapped.extend_from_slice(ciphertext);
    Ok(wrapped)
}

fn full_aad(aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(1 + aad.len());
    full.push(VERSION);
    full.extend_from_slice(aad);
    full
}

impl Token {
    /// Wraps a 32-byte secret of any role under `key` (AES-GCM in the
    /// token), binding `aad`.
    pub(crate) fn wrap_secret(
        &self,
        key: &RootKeyRef,
        secret: &impl Secret,
        aad: &[u8],
    ) -> Result<Vec<u8>, ProviderError> {
        let mut iv = [0u8; IV_LEN];
        SystemRandom::new()
            .fill(&mut iv)
            .map_err(|_| ProviderError::Unavailable {
                key: key.clone(),
                detail: "the operating system random number generator failed".into(),
            })?;
        let aad = full_aad(aad);
        let (used_iv, ciphertext) = self.with_session(key, |session| {
            let handle = self.handle(session, key)?;
            gcm_encrypt(iv, |iv| {
                let params = GcmParams::new(iv, &aad, TAG_BITS.into())?;
                session.encrypt(&Mechanism::AesGcm(params), handle, secret.bytes())
            })
        })?;
        assemble_wrapped(key, used_iv, &ciphertext)
    }

    /// Unwraps what [`Self::wrap_secret`] returned.
    pub(crate) fn unwrap_secret<S: Secret>(
        &self,
        key: &RootKeyRef,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<S, ProviderError> {
        if wrapped.len() != WRAPPED_LEN || wrapped.first() != Some(&VERSION) {
            return Err(ProviderError::AuthenticationFailed { key: key.clone() });
        }
        let (iv, ciphertext) = wrapped.get(1..).unwrap_or_default().split_at(IV_LEN);
        let aad = full_aad(aad);
        let mut plain = self.with_session(key, |session| {
            let handle = self.handle(session, key)?;
            let mut iv = iv.to_vec();
            let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into())?;
            match session.decrypt(&Mechanism::AesGcm(params), handle, ciphertext) {
                // SoftHSM2 (and some HSMs) report a GCM tag mismatch as a
                // general failure. If the session still works, that is what
                // it was.
                Err(CkError::Pkcs11(RvError::GeneralError | RvError::FunctionFailed, function))
                    if session.get_session_info().is_ok() =>
                {
                    Err(CkError::Pkcs11(RvError::EncryptedDataInvalid, function))
                }
                other => other,
            }
        })?;
        let secret = <&[u8; 32]>::try_from(plain.as_slice())
            .ok()
            .map(S::from_bytes);
        plain.zeroize();
        secret.ok_or_else(|| ProviderError::AuthenticationFailed { key: key.clone() })
    }
}

/// Maps a PKCS#11 failure onto what it means for the hierarchy.
pub(crate) fn map_error(key: &RootKeyRef, error: CkError) -> ProviderError {
    let CkError::Pkcs11(rv, function) = &error else {
        return ProviderError::Unavailable {
            key: key.clone(),
            detail: error.to_string(),
        };
    };
    match rv {
        RvError::PinIncorrect
        | RvError::PinInvalid
        | RvError::PinLenRange
        | RvError::PinExpired
        | RvError::PinLocked
        | RvError::UserNotLoggedIn
        | RvError::UserPinNotInitialized
        | RvError::KeyFunctionNotPermitted
        | RvError::ActionProhibited
        | RvError::FunctionRejected => ProviderError::AccessDenied {
            key: key.clone(),
            detail: format!("{function}: {rv}"),
        },
        RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid => {
            ProviderError::NotFound { key: key.clone() }
        }
        RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange => {
            ProviderError::AuthenticationFailed { key: key.clone() }
        }
        RvError::TemplateInconsistent
            if matches!(function, cryptoki::context::Function::FindObjects) =>
        {
            ProviderError::Misconfigured {
                provider: key.provider().to_owned(),
                detail: format!("more than one key is labelled {:?}", key.label()),
            }
        }
        _ => ProviderError::Unavailable {
            key: key.clone(),
            detail: format!("{function}: {rv}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_iv_a_token_writes_back_is_the_one_stored() {
        // A token that generates its own IV overwrites the one it was given.
        let token_iv = [0x5a; IV_LEN];
        let (iv, ciphertext) = gcm_encrypt([0u8; IV_LEN], |iv| {
            iv.copy_from_slice(&token_iv);
            Ok::<_, ()>(vec![7; KeyMaterial::LEN + TAG_LEN])
        })
        .unwrap();
        assert_eq!(iv, token_iv);
        let key = RootKeyRef::new("hsm", "k", 1).unwrap();
        let wrapped = assemble_wrapped(&key, iv, &ciphertext).unwrap();
        assert_eq!(wrapped.get(1..1 + IV_LEN), Some(&token_iv[..]));
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        // A token that keeps the IV it was given: that one is stored.
        let (iv, _) = gcm_encrypt([3u8; IV_LEN], |_| Ok::<_, ()>(Vec::new())).unwrap();
        assert_eq!(iv, [3u8; IV_LEN]);
    }
}
