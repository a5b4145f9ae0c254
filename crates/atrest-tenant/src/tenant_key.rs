//! Per-tenant keys kept outside the metadata database: what makes a purge
//! final even when the database is restored from a backup, and what
//! authenticates the tenant's key metadata.
//!
//! # Why a key outside the database
//!
//! Root keys are shared: one service root key serves every service-managed
//! tenant, one availability key every customer-key tenant. If a tenant's TIK
//! depended only on wraps kept in the database, restoring yesterday's
//! backup after a purge would bring the wraps back, and the shared root keys
//! would open them. So each tenant also has a **tenant key**, created with
//! the tenant and kept in a [`TenantKeyStore`], never in the metadata
//! database:
//!
//! - A TIK version's key is `HMAC-SHA256(version key, HMAC-SHA256(tenant
//!   key, "atrest/v1 tik" ‖ tenant ‖ TIK id ‖ version ‖ seed))`, where the
//!   32-byte `seed` is what the root keys wrap and the **version key** is
//!   the version's own key in the same store ([`version_key_id`]; a version
//!   made before version keys derives from the tenant key alone). Without
//!   the tenant key, the seeds are useless; without a version's key, that
//!   version is: retiring a version destroys its key, which erases every
//!   file key ever wrapped under it, backups included.
//! - The tenant's metadata key, `HMAC-SHA256(tenant key, "atrest/v1
//!   metadata key" ‖ tenant ‖ TIK id)`, authenticates the file records of
//!   the `atrest` catalog (see [`MetadataKey`]).
//! - Each version of the tenant's own record (kind, root-key slots,
//!   revocations, fallback policy, current TIK version) is authenticated
//!   under a **record key** of its own in the same store, made for it and
//!   destroyed once the next version replaces it ([`TenantTag`]): an older
//!   copy of the record, restored by a writer of the database to undo a
//!   revocation mark or a stricter fallback policy, has no key left to
//!   verify under.
//!
//! Purging a tenant destroys its tenant key (and its version keys) first.
//! Restoring the database afterwards gives back wraps and records that
//! nothing can use.
//!
//! # Where tenant keys live
//!
//! In a PKCS#11 token, when the deployment has one: [`crate::Pkcs11Keys`]
//! implements [`TenantKeyStore`] with one generic secret per tenant, made
//! in the token (sensitive, not extractable, usable only for HMAC), which
//! computes each derivation itself; a purge destroys the token object.
//!
//! Otherwise [`TenantKeyDir`] keeps each tenant key in its own file in a directory
//! (mode 0700; files 0600), sealed under the deployment's [`MasterKey`]
//! (a key file, or a key in a PKCS#11 token). Purge overwrites the file with
//! random bytes, syncs it and removes it. The directory must therefore not
//! be part of the database's backups: a copy of a tenant key file taken
//! before a purge, restored with the database, undoes the purge for whoever
//! also holds the master key. On file systems that keep old blocks (copy on
//! write, snapshots, SSD remapping), overwriting is best effort; the
//! removal of the only sealed copy is what counts.
//!
//! A tenant key is identified by the tenant and its TIK id, which is random
//! per tenant creation: two processes racing to create the same tenant, or
//! a creation interrupted before its database row was written, each leave a
//! key of their own, and no creation can overwrite a key another one uses.
//! A purge destroys every key of the tenant.

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use atrest_filekey::{KeyId, TenantId};
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};
use zeroize::Zeroize as _;

use crate::provider::secret_type;
use crate::{Error, KeyFileProblem, MasterKey, RootKeyRef};

secret_type! {
    /// 32 bytes derived from a tenant key ([`TenantKeyStore::derive`]): a
    /// TIK version's key, or a tenant's metadata key.
    pub struct DerivedKey;
}

secret_type! {
    /// A tenant key's own bytes, while a [`TenantKeyDir`] seals or
    /// unseals it.
    struct TenantKeyMaterial;
}

const FILE_HEADER: &[u8] = b"atrest tenant key v1\n";
const SEAL_AAD_LABEL: &[u8] = b"atrest/v1 tenant key";
const METADATA_KEY_LABEL: &[u8] = b"atrest/v1 metadata key";
const VERSION_KEY_LABEL: &[u8] = b"atrest/v1 tik version key";
const RECORD_KEYS_LABEL: &[u8] = b"atrest/v1 tenant record keys in use";

/// Where each tenant's tenant key is kept (see the [module
/// documentation](self)): outside the metadata database, so that
/// destroying it is final.
///
/// The one operation on a key is a PRF: `derive` returns
/// `HMAC-SHA256(key, input)`, so an implementation may keep the key where it
/// cannot be read (a PKCS#11 token computing the HMAC itself).
#[async_trait::async_trait]
pub trait TenantKeyStore: Send + Sync {
    /// Creates the tenant key of `tenant` for the incarnation whose TIK id
    /// is `tik_id`, durably.
    ///
    /// # Errors
    /// [`Error::TenantExists`] if that key exists; [`Error::KeyFile`] or
    /// [`Error::RootKey`] if it cannot be made or stored.
    async fn create(&self, tenant: TenantId, tik_id: KeyId) -> Result<(), Error>;

    /// `HMAC-SHA256(tenant key, input)`.
    ///
    /// # Errors
    /// [`Error::TenantKeyMissing`] if the key does not exist (destroyed by a
    /// purge, or removed); [`Error::KeyFile`] or [`Error::RootKey`] if it
    /// cannot be read or unsealed.
    async fn derive(
        &self,
        tenant: TenantId,
        tik_id: KeyId,
        input: &[u8],
    ) -> Result<DerivedKey, Error>;

    /// The key of a TIK version from its seed's derivation `input`:
    /// `HMAC-SHA256(tenant key, input)` taken through the version's own
    /// key `version_key` (see [`version_key_id`]), or kept as it is if the
    /// store holds no such key (a version made before version keys, or one
    /// erased since: then no file key opens under the result).
    ///
    /// The two derivations of every cold TIK release; a store that can
    /// makes them in one call (one trip to its blocking pool or token).
    ///
    /// # Errors
    /// As for [`TenantKeyStore::derive`] on the tenant key.
    async fn derive_version(
        &self,
        tenant: TenantId,
        tik_id: KeyId,
        version_key: KeyId,
        input: &[u8],
    ) -> Result<DerivedKey, Error> {
        let material = self.derive(tenant, tik_id, input).await?;
        let scoped = self
            .derive(tenant, version_key, material.expose_secret())
            .await;
        through_version_key(material, scoped)
    }

    /// Destroys every tenant key of `tenant`; returns how many there were.
    /// Destroying keys that do not exist is not an error.
    ///
    /// # Errors
    /// [`Error::KeyFile`] if a key could not be destroyed.
    async fn destroy(&self, tenant: TenantId) -> Result<u64, Error>;

    /// Destroys the one key `key` of `tenant` (a TIK version's key, see
    /// [`version_key_id`]); returns whether it existed. Destroying a key
    /// that does not exist is not an error.
    ///
    /// # Errors
    /// [`Error::KeyFile`] if the key could not be destroyed.
    async fn destroy_key(&self, tenant: TenantId, key: KeyId) -> Result<bool, Error>;

    /// Whether the store holds any key of `tenant`: a purged tenant's are
    /// all gone, which no edit of a database can fake.
    ///
    /// # Errors
    /// [`Error::KeyFile`] if the store cannot be read.
    async fn holds_keys_of(&self, tenant: TenantId) -> Result<bool, Error>;
}

/// The end of [`TenantKeyStore::derive_version`]: the derivation through
/// the version key, or the tenant key's own if there is no version key.
pub(crate) fn through_version_key(
    material: DerivedKey,
    scoped: Result<DerivedKey, Error>,
) -> Result<DerivedKey, Error> {
    match scoped {
        Err(Error::TenantKeyMissing(_)) => Ok(material),
        scoped => scoped,
    }
}

/// The id of the key a TIK version has of its own in the tenant key store
/// (its **version key**): derived from the TIK id and the version, so no
/// database holds it.
///
/// A TIK version made with a version key derives its TIK from both keys,
/// `HMAC-SHA256(version key, HMAC-SHA256(tenant key, …))`; retiring the
/// version destroys the version key. The file keys wrapped under that
/// version are then gone for good: a database backup restored afterwards
/// brings back their wraps, which nothing can open — what makes deleting a
/// file (its version's TIK retired once every other file key moved to a
/// newer version) a crypto-erasure, as a purge is for a whole tenant.
pub fn version_key_id(tik_id: KeyId, version: atrest_filekey::KeyVersion) -> KeyId {
    let mut input = tik_id.encode().to_vec();
    input.extend_from_slice(&version.encode());
    derived_key_id(VERSION_KEY_LABEL, &input, tik_id)
}

/// The id of the key whose existence says that `tik_id`'s tenant has its
/// records tagged under record keys ([`TenantTag::Keyed`]): made when the
/// tenant is, or when a record tagged before record keys existed is first
/// replaced; destroyed only by a purge. While it exists, a record with a
/// tag of the earlier kind ([`TenantTag::Legacy`]) is an older copy.
pub fn record_keys_marker_id(tik_id: KeyId) -> KeyId {
    derived_key_id(RECORD_KEYS_LABEL, &tik_id.encode(), tik_id)
}

/// A key id derived from a label and an input, never nil.
fn derived_key_id(label: &[u8], input: &[u8], fallback: KeyId) -> KeyId {
    let mut message = label.to_vec();
    message.extend_from_slice(input);
    let digest = ring::digest::digest(&ring::digest::SHA256, &message);
    let mut id = [0u8; 16];
    id.copy_from_slice(digest.as_ref().get(..16).unwrap_or(&[1u8; 16]));
    if id == [0u8; 16] {
        id[15] = 1;
    }
    KeyId::from_bytes(id).unwrap_or(fallback)
}

/// The authentication tag of a tenant's record
/// ([`TenantRecord::tag`](crate::TenantRecord::tag)).
///
/// A record is tagged under a record key of its own in the tenant key
/// store (a fresh random id), made for it and destroyed once a newer record
/// replaces it, so that an older copy of the record (a database backup
/// restored by its writer, or one row put back) has no key to verify under
/// and is refused. The tag names its key and the key of the record it
/// replaced: whoever reads the newer record finishes that key's
/// destruction, should the change that made it have been cut short.
///
/// Records tagged before record keys existed carry the tag of the tenant's
/// metadata key ([`TenantTag::Legacy`]); the first change of such a record
/// tags the next one under a record key and makes the tenant's marker key
/// ([`record_keys_marker_id`]), after which no tag of the earlier kind is
/// believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantTag {
    /// `HMAC-SHA256(metadata key, …)` of a record made before record keys
    /// existed: 32 bytes.
    Legacy(RecordTag),
    /// `HMAC-SHA256(record key, …)`: stored as `0x01 ‖ key ‖ previous (or
    /// 16 zero bytes) ‖ MAC`, 65 bytes.
    Keyed {
        /// The record key, in the tenant key store.
        key: KeyId,
        /// The record key of the record this one replaced, destroyed once
        /// this one is written (or by the first reader of this one).
        previous: Option<KeyId>,
        /// The MAC (not secret).
        mac: RecordTag,
    },
}

impl TenantTag {
    const KEYED: u8 = 1;
    const ID_LEN: usize = 16;
    const KEYED_LEN: usize = 1 + 2 * Self::ID_LEN + RecordTag::LEN;

    /// The tag from its stored bytes, or `None` for bytes that are not one.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() == RecordTag::LEN {
            return RecordTag::from_slice(bytes).map(Self::Legacy);
        }
        if bytes.len() != Self::KEYED_LEN || bytes.first() != Some(&Self::KEYED) {
            return None;
        }
        let id =
            |at: usize| -> Option<[u8; 16]> { bytes.get(at..at + Self::ID_LEN)?.try_into().ok() };
        let key = KeyId::from_bytes(id(1)?).ok()?;
        // The nil id (which no key has) stands for none.
        let previous = id(1 + Self::ID_LEN)?;
        let previous = if previous == [0; 16] {
            None
        } else {
            Some(KeyId::from_bytes(previous).ok()?)
        };
        let mac = RecordTag::from_slice(bytes.get(1 + 2 * Self::ID_LEN..)?)?;
        Some(Self::Keyed { key, previous, mac })
    }

    /// The tag's bytes, to store.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Legacy(tag) => tag.as_bytes().to_vec(),
            Self::Keyed { key, previous, mac } => {
                let mut out = Vec::with_capacity(Self::KEYED_LEN);
                out.push(Self::KEYED);
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(&previous.map_or([0; 16], |previous| *previous.as_bytes()));
                out.extend_from_slice(mac.as_bytes());
                out
            }
        }
    }
}

/// A tenant's metadata key: authenticates the records that decide key
/// releases (the tenant's own record in the key store, file records in a
/// catalog) against edits by anyone without the tenant key.
///
/// Its tags are `HMAC-SHA256(metadata key, len(label) ‖ label ‖ message)`.
/// Holds a ring HMAC key, whose internal state ring does not zeroize.
pub struct MetadataKey {
    key: hmac::Key,
}

/// An authentication tag over a metadata record (32 bytes). Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordTag([u8; 32]);

impl RecordTag {
    /// Length in bytes.
    pub const LEN: usize = 32;

    /// The tag from its 32 stored bytes, or `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The tag's bytes, to store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for RecordTag {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RecordTag(")?;
        for byte in self.0.iter().take(4) {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…)")
    }
}

impl MetadataKey {
    /// Derives the metadata key of `tenant` (TIK id `tik_id`) from its
    /// tenant key in `keys`.
    ///
    /// # Errors
    /// As for [`TenantKeyStore::derive`].
    pub(crate) async fn derive(
        keys: &dyn TenantKeyStore,
        tenant: TenantId,
        tik_id: KeyId,
    ) -> Result<Self, Error> {
        let mut input = METADATA_KEY_LABEL.to_vec();
        input.extend_from_slice(&tenant.encode());
        input.extend_from_slice(&tik_id.encode());
        let material = keys.derive(tenant, tik_id, &input).await?;
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, material.expose_secret()),
        })
    }

    fn message(label: &[u8], message: &[u8]) -> Vec<u8> {
        let mut input = Vec::with_capacity(2 + label.len() + message.len());
        // Labels are short constants.
        input.extend_from_slice(&u16::try_from(label.len()).unwrap_or(u16::MAX).to_be_bytes());
        input.extend_from_slice(label);
        input.extend_from_slice(message);
        input
    }

    /// The tag of `message` under `label` (which names the kind of record,
    /// so that a tag of one kind never verifies as another).
    pub fn tag(&self, label: &[u8], message: &[u8]) -> RecordTag {
        let tag = hmac::sign(&self.key, &Self::message(label, message));
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        RecordTag(out)
    }

    /// Whether `tag` is the tag of `message` under `label` (compared in
    /// constant time).
    pub fn verify(&self, label: &[u8], message: &[u8], tag: &RecordTag) -> bool {
        hmac::verify(&self.key, &Self::message(label, message), &tag.0).is_ok()
    }
}

impl core::fmt::Debug for MetadataKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MetadataKey").finish_non_exhaustive()
    }
}

/// Tenant keys in files of one directory, each sealed under a
/// [`MasterKey`] (see the [module documentation](self)). Its calls read,
/// write and sync files: they run on the async runtime's blocking pool.
///
/// Cloning is cheap: the clones use the same directory and master key.
#[derive(Clone)]
pub struct TenantKeyDir {
    dir: PathBuf,
    master: MasterKey,
}

impl core::fmt::Debug for TenantKeyDir {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TenantKeyDir")
            .field("dir", &self.dir)
            .field("master", &self.master)
            .finish()
    }
}

impl TenantKeyDir {
    /// Opens the directory `dir`, creating it (mode 0700) if it does not
    /// exist.
    ///
    /// # Errors
    /// [`Error::KeyFile`] if it cannot be created, is not a directory, or
    /// group or others may use it.
    pub fn open(dir: &Path, master: MasterKey) -> Result<Self, Error> {
        let bad = |problem: KeyFileProblem| Error::KeyFile {
            path: dir.to_path_buf(),
            problem,
        };
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => sync_parent(dir).map_err(|e| bad(e.into()))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(bad(e.into())),
        }
        let metadata = fs::metadata(dir).map_err(|e| bad(e.into()))?;
        if !metadata.is_dir() {
            return Err(bad(KeyFileProblem::NotAKeyFile));
        }
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(KeyFileProblem::Permissions { mode }));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            master,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, tenant: TenantId, tik_id: KeyId) -> PathBuf {
        self.dir.join(format!("{tenant}.{tik_id}"))
    }

    /// The name under which the master key's errors report a tenant key.
    fn key_ref(tenant: TenantId) -> Result<RootKeyRef, Error> {
        Ok(RootKeyRef::new("tenant-keys", tenant.to_string(), 1)?)
    }

    fn aad(tenant: TenantId, tik_id: KeyId) -> Vec<u8> {
        let mut aad = SEAL_AAD_LABEL.to_vec();
        aad.extend_from_slice(&tenant.encode());
        aad.extend_from_slice(&tik_id.encode());
        aad
    }

    fn key_file_error(path: &Path, error: std::io::Error) -> Error {
        Error::KeyFile {
            path: path.to_path_buf(),
            problem: error.into(),
        }
    }

    /// [`TenantKeyStore::create`], on the calling thread.
    fn create_blocking(&self, tenant: TenantId, tik_id: KeyId) -> Result<(), Error> {
        let path = self.file(tenant, tik_id);
        let material = TenantKeyMaterial::generate()?;
        let sealed = self.master.seal(
            &material,
            &Self::aad(tenant, tik_id),
            &Self::key_ref(tenant)?,
        )?;
        drop(material);
        let mut suffix = [0u8; 8];
        SystemRandom::new()
            .fill(&mut suffix)
            .map_err(|_| Error::Rng)?;
        let staging = self.dir.join(format!(
            ".{tenant}.{tik_id}.{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&staging)?;
            file.write_all(FILE_HEADER)?;
            file.write_all(&sealed)?;
            file.sync_all()?;
            // A hard link never replaces an existing file: the key of an
            // existing tenant cannot be overwritten.
            fs::hard_link(&staging, &path)
        })();
        let _ = fs::remove_file(&staging);
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::TenantExists(tenant));
            }
            Err(e) => return Err(Self::key_file_error(&path, e)),
        }
        sync_dir(&self.dir).map_err(|e| Self::key_file_error(&self.dir, e))
    }

    /// [`TenantKeyStore::derive`], on the calling thread.
    fn derive_blocking(
        &self,
        tenant: TenantId,
        tik_id: KeyId,
        input: &[u8],
    ) -> Result<DerivedKey, Error> {
        let path = self.file(tenant, tik_id);
        let mut bytes = Vec::with_capacity(FILE_HEADER.len() + 128);
        match fs::File::open(&path).and_then(|file| file.take(4096).read_to_end(&mut bytes)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::TenantKeyMissing(tenant));
            }
            Err(e) => return Err(Self::key_file_error(&path, e)),
        }
        let sealed = bytes
            .strip_prefix(FILE_HEADER)
            .ok_or_else(|| Error::KeyFile {
                path: path.clone(),
                problem: KeyFileProblem::NotAKeyFile,
            })?;
        let material: TenantKeyMaterial =
            self.master
                .open(sealed, &Self::aad(tenant, tik_id), &Self::key_ref(tenant)?)?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, material.expose_secret());
        drop(material);
        let tag = hmac::sign(&key, input);
        let out = DerivedKey::from_secret_slice(tag.as_ref())
            .ok_or(Error::Misuse("HMAC-SHA256 gives 32 bytes"))?;
        Ok(out)
    }

    /// [`TenantKeyStore::destroy`], on the calling thread: each key file is
    /// overwritten with random bytes, synced, and removed, then the
    /// directory is synced.
    fn destroy_blocking(&self, tenant: TenantId) -> Result<u64, Error> {
        let prefix = format!("{tenant}.");
        let staging_prefix = format!(".{tenant}.");
        let mut destroyed = 0;
        let entries = fs::read_dir(&self.dir).map_err(|e| Self::key_file_error(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Self::key_file_error(&self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(&prefix) {
                self.destroy_file(name)?;
                destroyed += 1;
            } else if name.starts_with(&staging_prefix) {
                let path = entry.path();
                shred(&path).map_err(|e| Self::key_file_error(&path, e))?;
            }
        }
        sync_dir(&self.dir).map_err(|e| Self::key_file_error(&self.dir, e))?;
        Ok(destroyed)
    }

    /// [`TenantKeyStore::destroy_key`], on the calling thread.
    fn destroy_key_blocking(&self, tenant: TenantId, key: KeyId) -> Result<bool, Error> {
        let name = format!("{tenant}.{key}");
        match fs::symlink_metadata(self.dir.join(&name)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Self::key_file_error(&self.dir.join(&name), e)),
        }
        self.destroy_file(&name)?;
        sync_dir(&self.dir).map_err(|e| Self::key_file_error(&self.dir, e))?;
        Ok(true)
    }

    /// Destroys key file `name`: out of the way first, in one step (from
    /// there on the key is missing, even if the process stops before it is
    /// overwritten: a later destroy overwrites what is left), then
    /// overwritten, synced and removed.
    fn destroy_file(&self, name: &str) -> Result<(), Error> {
        let path = self.dir.join(name);
        let doomed = self.dir.join(format!(".{name}.destroyed"));
        fs::rename(&path, &doomed).map_err(|e| Self::key_file_error(&path, e))?;
        sync_dir(&self.dir).map_err(|e| Self::key_file_error(&self.dir, e))?;
        shred(&doomed).map_err(|e| Self::key_file_error(&doomed, e))
    }
}

/// Overwrites a file with random bytes, syncs it, and removes it.
fn shred(path: &Path) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    let mut noise = vec![0u8; len.min(64 * 1024)];
    SystemRandom::new()
        .fill(&mut noise)
        .map_err(|_| std::io::Error::other("the operating system generator failed"))?;
    file.write_all(&noise)?;
    file.sync_all()?;
    noise.zeroize();
    drop(file);
    fs::remove_file(path)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => sync_dir(Path::new(".")),
    }
}

#[async_trait::async_trait]
impl TenantKeyStore for TenantKeyDir {
    async fn create(&self, tenant: TenantId, tik_id: KeyId) -> Result<(), Error> {
        let keys = self.clone();
        atrest_core::blocking::run(move || keys.create_blocking(tenant, tik_id)).await
    }

    async fn derive(
        &self,
        tenant: TenantId,
        tik_id: KeyId,
        input: &[u8],
    ) -> Result<DerivedKey, Error> {
        let keys = self.clone();
        // Wiped when dropped: it holds the TIK's seed.
        let input = zeroize::Zeroizing::new(input.to_vec());
        atrest_core::blocking::run_short(move || keys.derive_blocking(tenant, tik_id, &input)).await
    }

    async fn derive_version(
        &self,
        tenant: TenantId,
        tik_id: KeyId,
        version_key: KeyId,
        input: &[u8],
    ) -> Result<DerivedKey, Error> {
        let keys = self.clone();
        let input = zeroize::Zeroizing::new(input.to_vec());
        atrest_core::blocking::run_short(move || {
            let material = keys.derive_blocking(tenant, tik_id, &input)?;
            let scoped = keys.derive_blocking(tenant, version_key, material.expose_secret());
            through_version_key(material, scoped)
        })
        .await
    }

    async fn destroy(&self, tenant: TenantId) -> Result<u64, Error> {
        let keys = self.clone();
        atrest_core::blocking::run(move || keys.destroy_blocking(tenant)).await
    }

    async fn destroy_key(&self, tenant: TenantId, key: KeyId) -> Result<bool, Error> {
        let keys = self.clone();
        atrest_core::blocking::run(move || keys.destroy_key_blocking(tenant, key)).await
    }

    async fn holds_keys_of(&self, tenant: TenantId) -> Result<bool, Error> {
        let keys = self.clone();
        atrest_core::blocking::run(move || {
            let prefix = format!("{tenant}.");
            let entries =
                fs::read_dir(&keys.dir).map_err(|e| Self::key_file_error(&keys.dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Self::key_file_error(&keys.dir, e))?;
                if entry
                    .file_name()
                    .to_str()
                    .is_some_and(|name| name.starts_with(&prefix))
                {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (atrest_test_support::TempDir, TenantKeyDir) {
        let temp = atrest_test_support::TempDir::new("tenant-keys");
        let master = MasterKey::create_file(&temp.path().join("master.key")).unwrap();
        let keys = TenantKeyDir::open(&temp.path().join("keys"), master).unwrap();
        (temp, keys)
    }

    #[test]
    fn a_key_derives_the_same_until_destroyed_and_never_again() {
        let (_temp, keys) = dir();
        let tenant = TenantId::random(&mut atrest_filekey::OsRng).unwrap();
        let tik = KeyId::random(&mut atrest_filekey::OsRng).unwrap();
        keys.create_blocking(tenant, tik).unwrap();
        let mode = fs::metadata(keys.file(tenant, tik))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = keys.derive_blocking(tenant, tik, b"input").unwrap();
        let again = keys.derive_blocking(tenant, tik, b"input").unwrap();
        let other = keys.derive_blocking(tenant, tik, b"other").unwrap();
        assert_eq!(first.expose_secret(), again.expose_secret());
        assert_ne!(first.expose_secret(), other.expose_secret());
        assert!(matches!(
            keys.create_blocking(tenant, tik),
            Err(Error::TenantExists(_))
        ));
        assert_eq!(keys.destroy_blocking(tenant).unwrap(), 1);
        assert!(matches!(
            keys.derive_blocking(tenant, tik, b"input"),
            Err(Error::TenantKeyMissing(t)) if t == tenant
        ));
        assert_eq!(fs::read_dir(keys.path()).unwrap().count(), 0);
        assert_eq!(keys.destroy_blocking(tenant).unwrap(), 0);
    }

    #[test]
    fn a_key_file_copied_to_another_tenant_does_not_open() {
        let (_temp, keys) = dir();
        let mut rng = atrest_filekey::OsRng;
        let (a, b) = (
            TenantId::random(&mut rng).unwrap(),
            TenantId::random(&mut rng).unwrap(),
        );
        let tik = KeyId::random(&mut rng).unwrap();
        keys.create_blocking(a, tik).unwrap();
        fs::copy(keys.file(a, tik), keys.file(b, tik)).unwrap();
        assert!(matches!(
            keys.derive_blocking(b, tik, b"input"),
            Err(Error::RootKey(_))
        ));
    }

    #[test]
    fn a_directory_others_can_read_is_refused() {
        let temp = atrest_test_support::TempDir::new("tenant-keys");
        let master = MasterKey::create_file(&temp.path().join("master.key")).unwrap();
        let open = temp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            TenantKeyDir::open(&open, master),
            Err(Error::KeyFile {
                problem: KeyFileProblem::Permissions { .. },
                ..
            })
        ));
    }
}
