//! Service-managed root keys: the service's own root keys and the
//! availability key, each sealed under a master key the operator supplies
//! and kept, sealed, in a [`SealedKeyStore`] (the embedded default is
//! `atrest-sqlite`'s `SqliteSealedKeys`).
//!
//! The master key is either a key file ([`MasterKey::create_file`], created
//! with mode 0600 and refused if anyone but its owner can read it) or a key
//! in a PKCS#11 token ([`MasterKey::in_token`]), in which case the root keys
//! are sealed and unsealed inside the token.
//!
//! Root keys are versioned: [`ServiceKeys::roll_key`] adds a version, which
//! becomes the one new wraps use; old versions keep unwrapping until
//! [`ServiceKeys::destroy_version`]. Unsealed root keys are kept in memory
//! (as HKDF PRKs, zeroized on drop) once used.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use zeroize::Zeroize;

use crate::provider::secret_type;
use crate::seal::Secret;
use crate::seal::{OpenError, SealingKey};
use crate::{
    Error, KeyFileProblem, KeyMaterial, Pkcs11Keys, ProviderError, RootKeyMaterial,
    RootKeyProvider, RootKeyRef, TikBinding,
};

secret_type! {
    /// The master key's own bytes (a master key file's content).
    struct MasterKeyMaterial;
}

const MASTER_FILE_HEADER: &str = "atrest master key v1\n";
const ROOT_KEY_AAD_LABEL: &[u8] = b"atrest/v1 service root key";

/// One version of a root key, as a [`SealedKeyStore`] holds it.
#[derive(Clone, PartialEq, Eq)]
pub enum SealedKey {
    /// Its bytes, sealed under the master key.
    Sealed(Vec<u8>),
    /// It was destroyed.
    Destroyed,
}

impl core::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Sealed(bytes) => write!(f, "Sealed({} bytes)", bytes.len()),
            Self::Destroyed => f.write_str("Destroyed"),
        }
    }
}

/// Where [`ServiceKeys`] keeps the service's root keys: each version sealed
/// under the [`MasterKey`] (and bound to its label and version), so the
/// store holds ciphertext only, and a sealed key moved to another label or
/// version does not open.
///
/// Implementations must make each change atomic and durable, and
/// [`SealedKeyStore::destroy`] must leave no copy of the sealed bytes
/// where the store keeps its data (overwrite them, not only unlink them).
#[async_trait::async_trait]
pub trait SealedKeyStore: Send + Sync {
    /// Adds version `version` of key `label`; `false` (and nothing
    /// changed) if that version exists.
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn add(&self, label: &str, version: u32, sealed: &[u8]) -> Result<bool, Error>;

    /// Version `version` of key `label`, if the store has it.
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn get(&self, label: &str, version: u32) -> Result<Option<SealedKey>, Error>;

    /// The newest version of key `label` that was not destroyed.
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn newest(&self, label: &str) -> Result<Option<u32>, Error>;

    /// Destroys version `version` of key `label`; `false` if the store has
    /// no such version.
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn destroy(&self, label: &str, version: u32) -> Result<bool, Error>;

    /// Every version of every key, by label and version, and whether it
    /// was destroyed.
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn versions(&self) -> Result<Vec<(String, u32, bool)>, Error>;
}

/// The key that seals the service's root keys (and the tenant keys of a
/// [`crate::TenantKeyDir`]) at rest.
///
/// Cloning shares the key; it is not copied.
#[derive(Clone)]
pub struct MasterKey(Arc<Master>);

enum Master {
    File(SealingKey),
    Token {
        keys: Arc<Pkcs11Keys>,
        key: RootKeyRef,
    },
}

impl MasterKey {
    /// Creates a new random master key in a new file at `path`, readable
    /// and writable by its owner only (mode 0600), and flushes it to disk.
    ///
    /// # Errors
    /// [`Error::KeyFile`] if the file exists or cannot be written.
    pub fn create_file(path: &Path) -> Result<Self, Error> {
        let material = MasterKeyMaterial::generate()?;
        let mut text = format!(
            "{MASTER_FILE_HEADER}{}\n",
            hex_encode(material.expose_secret())
        );
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok::<_, std::io::Error>(())
        })();
        text.zeroize();
        written.map_err(|e| Error::KeyFile {
            path: path.to_path_buf(),
            problem: KeyFileProblem::Io(e),
        })?;
        Ok(Self(Arc::new(Master::File(SealingKey::new(&material)))))
    }

    /// Reads the master key file at `path`.
    ///
    /// # Errors
    /// [`Error::KeyFile`] if the file cannot be read, is readable or
    /// writable by group or others, or is not a master key file.
    pub fn open_file(path: &Path) -> Result<Self, Error> {
        let bad = |problem: KeyFileProblem| Error::KeyFile {
            path: path.to_path_buf(),
            problem,
        };
        let metadata = fs::metadata(path).map_err(|e| bad(e.into()))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(KeyFileProblem::Permissions { mode }));
        }
        let mut text = fs::read_to_string(path).map_err(|e| bad(e.into()))?;
        let material = text
            .strip_prefix(MASTER_FILE_HEADER)
            .and_then(|rest| rest.strip_suffix('\n'))
            .and_then(hex_decode_32);
        text.zeroize();
        let material = material.ok_or_else(|| bad(KeyFileProblem::NotAKeyFile))?;
        Ok(Self(Arc::new(Master::File(SealingKey::new(&material)))))
    }

    /// A master key held in a PKCS#11 token, under `label` (see
    /// [`Pkcs11Keys::generate_key`]): root keys are sealed inside the token.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if `label` is not a valid key label.
    pub fn in_token(keys: Arc<Pkcs11Keys>, label: &str) -> Result<Self, ProviderError> {
        let key = RootKeyRef::new(keys.name(), label, 1)?;
        Ok(Self(Arc::new(Master::Token { keys, key })))
    }

    /// Seals a secret of any role (a root key, a tenant key), binding
    /// `aad`. A master key in a token blocks on the token: call it on the
    /// blocking pool.
    pub(crate) fn seal(
        &self,
        material: &impl Secret,
        aad: &[u8],
        key: &RootKeyRef,
    ) -> Result<Vec<u8>, ProviderError> {
        match &*self.0 {
            Master::File(sealing) => {
                sealing
                    .seal(material, aad)
                    .map_err(|e| ProviderError::Unavailable {
                        key: key.clone(),
                        detail: e.to_string(),
                    })
            }
            Master::Token { keys, key: master } => keys.token().wrap_secret(master, material, aad),
        }
    }

    /// Opens what [`MasterKey::seal`] sealed for the same `aad` (on the
    /// blocking pool, as [`MasterKey::seal`]).
    pub(crate) fn open<S: Secret>(
        &self,
        sealed: &[u8],
        aad: &[u8],
        key: &RootKeyRef,
    ) -> Result<S, ProviderError> {
        match &*self.0 {
            Master::File(sealing) => {
                sealing
                    .open(sealed, aad)
                    .map_err(|_| ProviderError::AccessDenied {
                        key: key.clone(),
                        detail: "the master key does not open this root key (wrong master key?)"
                            .into(),
                    })
            }
            Master::Token { keys, key: master } => keys.token().unwrap_secret(master, sealed, aad),
        }
    }
}

impl core::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &*self.0 {
            Master::File(_) => f.write_str("MasterKey(file)"),
            Master::Token { key, .. } => write!(f, "MasterKey(token key {key})"),
        }
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode_32(text: &str) -> Option<MasterKeyMaterial> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let digits = core::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(digits, 16).ok()?;
    }
    let material = MasterKeyMaterial::from_secret_bytes(&bytes);
    bytes.zeroize();
    Some(material)
}

/// The service's root keys (including the availability key), sealed under
/// a [`MasterKey`] in a [`SealedKeyStore`].
pub struct ServiceKeys {
    name: String,
    master: MasterKey,
    store: Arc<dyn SealedKeyStore>,
    unsealed: RwLock<HashMap<(String, u32), Arc<SealingKey>>>,
}

impl ServiceKeys {
    /// The root keys in `store`, sealed under `master`; `name` is the
    /// provider name in [`RootKeyRef`]s (for example `service`).
    ///
    /// # Errors
    /// [`Error::RootKey`] if `name` is invalid.
    pub fn new(
        name: &str,
        store: Arc<dyn SealedKeyStore>,
        master: MasterKey,
    ) -> Result<Self, Error> {
        let _ = RootKeyRef::new(name, "-", 1)?;
        Ok(Self {
            name: name.to_owned(),
            master,
            store,
            unsealed: RwLock::default(),
        })
    }

    fn aad(key: &RootKeyRef) -> Vec<u8> {
        let mut aad = ROOT_KEY_AAD_LABEL.to_vec();
        key.encode_into(&mut aad);
        aad
    }

    async fn add_version(&self, label: &str, version: u32) -> Result<RootKeyRef, Error> {
        let key = RootKeyRef::new(self.name.clone(), label, version)?;
        let material = RootKeyMaterial::generate()?;
        let (master, sealing_for) = (self.master.clone(), key.clone());
        let sealed = atrest_core::blocking::run(move || {
            master.seal(&material, &Self::aad(&sealing_for), &sealing_for)
        })
        .await?;
        if !self.store.add(label, version, &sealed).await? {
            return Err(Error::KeyExists(key));
        }
        Ok(key)
    }

    /// Creates root key `label` (version 1).
    ///
    /// # Errors
    /// [`Error::KeyExists`] if it exists; [`Error::RootKey`] if the master key
    /// cannot seal it; [`Error::Store`] if the store fails.
    pub async fn create_key(&self, label: &str) -> Result<RootKeyRef, Error> {
        self.add_version(label, 1).await
    }

    /// Adds a new version of root key `label`, which new wraps then use.
    /// Existing wraps keep working until their TIK versions are re-wrapped
    /// (`KeyHierarchy::roll_root_key`) and the old version is destroyed.
    ///
    /// # Errors
    /// As for [`ServiceKeys::create_key`], and [`Error::RootKey`] with
    /// [`ProviderError::NotFound`] if there is no such key.
    pub async fn roll_key(&self, label: &str) -> Result<RootKeyRef, Error> {
        let current = RootKeyProvider::current_version(self, label).await?;
        self.add_version(label, current.saturating_add(1)).await
    }

    /// Destroys one version of a root key: its sealed bytes are overwritten
    /// in the store, and anything wrapped only under it is lost.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails; [`Error::RootKey`] with
    /// [`ProviderError::NotFound`] if there is no such version.
    pub async fn destroy_version(&self, key: &RootKeyRef) -> Result<(), Error> {
        if !self.store.destroy(key.label(), key.version()).await? {
            return Err(ProviderError::NotFound { key: key.clone() }.into());
        }
        let _ = self
            .unsealed
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(key.label().to_owned(), key.version()));
        Ok(())
    }

    /// Every root key version in the store, and whether it was destroyed.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub async fn keys(&self) -> Result<Vec<(RootKeyRef, bool)>, Error> {
        let mut keys = Vec::new();
        for (label, version, destroyed) in self.store.versions().await? {
            keys.push((
                RootKeyRef::new(self.name.clone(), label, version)?,
                destroyed,
            ));
        }
        Ok(keys)
    }

    /// A failure of the store, for the provider's answer: the key cannot
    /// be used now, which says nothing about the key itself.
    fn unavailable(key: &RootKeyRef, error: &Error) -> ProviderError {
        ProviderError::Unavailable {
            key: key.clone(),
            detail: format!("service key store: {error}"),
        }
    }

    async fn sealing_key(&self, key: &RootKeyRef) -> Result<Arc<SealingKey>, ProviderError> {
        // A key of the same label here is not the key another provider's
        // reference names.
        if key.provider() != self.name {
            return Err(ProviderError::Misconfigured {
                provider: self.name.clone(),
                detail: format!("root key {key} belongs to another provider"),
            });
        }
        let cache_key = (key.label().to_owned(), key.version());
        if let Some(found) = self
            .unsealed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&cache_key)
        {
            return Ok(Arc::clone(found));
        }
        let found = self
            .store
            .get(key.label(), key.version())
            .await
            .map_err(|e| Self::unavailable(key, &e))?;
        let sealed = match found {
            None => return Err(ProviderError::NotFound { key: key.clone() }),
            Some(SealedKey::Destroyed) => {
                return Err(ProviderError::Destroyed { key: key.clone() });
            }
            Some(SealedKey::Sealed(sealed)) => sealed,
        };
        let (master, opening) = (self.master.clone(), key.clone());
        let sealing = atrest_core::blocking::run(move || {
            let mut sealed = sealed;
            let material: Result<RootKeyMaterial, _> =
                master.open(&sealed, &Self::aad(&opening), &opening);
            sealed.zeroize();
            material.map(|material| SealingKey::new(&material))
        })
        .await?;
        let sealing = Arc::new(sealing);
        let _ = self
            .unsealed
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cache_key, Arc::clone(&sealing));
        Ok(sealing)
    }
}

impl core::fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServiceKeys")
            .field("name", &self.name)
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl RootKeyProvider for ServiceKeys {
    fn name(&self) -> &str {
        &self.name
    }

    async fn current_version(&self, label: &str) -> Result<u32, ProviderError> {
        let key = RootKeyRef::new(self.name.clone(), label, 1)?;
        self.store
            .newest(label)
            .await
            .map_err(|e| Self::unavailable(&key, &e))?
            .ok_or(ProviderError::NotFound { key })
    }

    async fn wrap(
        &self,
        key: &RootKeyRef,
        material: &KeyMaterial,
        binding: &TikBinding,
    ) -> Result<Vec<u8>, ProviderError> {
        self.sealing_key(key)
            .await?
            .seal(material, binding.as_bytes())
            .map_err(|e| ProviderError::Unavailable {
                key: key.clone(),
                detail: e.to_string(),
            })
    }

    async fn unwrap(
        &self,
        key: &RootKeyRef,
        wrapped: &[u8],
        binding: &TikBinding,
    ) -> Result<KeyMaterial, ProviderError> {
        self.sealing_key(key)
            .await?
            .open(wrapped, binding.as_bytes())
            .map_err(|error| match error {
                OpenError::Malformed | OpenError::AuthenticationFailed => {
                    ProviderError::AuthenticationFailed { key: key.clone() }
                }
            })
    }
}
