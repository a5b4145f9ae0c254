//! Bearer tokens: who a request is from.
//!
//! A token is `atrest_<id>_<secret>`: 8 hex digits naming it (for listing
//! and revoking) and 32 random bytes from the OS in unpadded base64url.
//! The token file keeps, per token, its id, the principal it stands for and
//! the SHA-256 of the whole token — never the token itself, which is shown
//! once, when it is made. A stolen token file lets no one in.
//!
//! The file (`service-tokens.json` in the deployment directory, mode 0600)
//! is changed under an exclusive lock and replaced atomically (written
//! beside, synced, renamed), so several `token` commands at once lose
//! nothing and a reader never sees half a file. The service re-reads it
//! when it changes (checked at most once per [`RELOAD_INTERVAL`]), so a
//! revocation reaches every instance within that interval; a file that
//! cannot be read or parsed lets no request in until it is fixed.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use atrest::filekey::TenantId;
use atrest_deployment::Principal;

mod format;

pub(crate) use self::format::TokenEntry;
use self::format::{FORMAT_VERSION, FileContents};

/// The token file's name in a deployment directory.
pub(crate) const TOKEN_FILE: &str = "service-tokens.json";

/// How often the service checks whether the token file changed.
pub(crate) const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

const PREFIX: &str = "atrest_";

/// What went wrong with the token file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file is not a token file this program can read.
    #[error("{}: not a token file: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A principal that is not `user@tenant`.
    #[error("{0:?} is not a principal of the form user@tenant")]
    BadPrincipal(String),
    /// No token has this id.
    #[error("no token has the id {0:?}")]
    UnknownId(String),
    /// The OS random generator failed.
    #[error("the OS random generator failed: {0}")]
    Random(getrandom::Error),
}

/// A new token: shown once, never stored.
pub(crate) struct NewToken {
    /// Its id.
    pub id: String,
    /// The principal.
    pub principal: String,
    secret: Zeroizing<String>,
}

impl NewToken {
    /// The token itself, to hand to the client.
    pub(crate) fn expose_secret(&self) -> &str {
        &self.secret
    }
}

impl core::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> TokenError + '_ {
    move |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn read_contents(path: &Path) -> Result<FileContents, TokenError> {
    // Opened without following a link, and refused if anyone but its owner
    // may write it: whoever can edit it can make a token for anyone.
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
        .open(path);
    let bytes = match opened.and_then(|mut file| {
        let meta = file.metadata()?;
        if meta.mode() & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "others may write it (mode {:o}): make it its owner's only (chmod 600)",
                    meta.mode() & 0o777
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        io::Read::read_to_end(&mut file, &mut bytes)?;
        Ok(bytes)
    }) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Ok(FileContents {
                version: FORMAT_VERSION,
                tokens: Vec::new(),
            });
        }
        Err(error) => return Err(io_at(path)(error)),
    };
    format::parse(&bytes, |principal| Principal::parse(principal).is_some()).map_err(|reason| {
        TokenError::Malformed {
            path: path.to_path_buf(),
            reason,
        }
    })
}

/// The token file of a deployment, for the commands that change it.
#[derive(Debug, Clone)]
pub(crate) struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    /// The token file at `path` (it need not exist yet).
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Every token, without secrets.
    ///
    /// # Errors
    /// [`TokenError::Io`], [`TokenError::Malformed`].
    pub(crate) fn list(&self) -> Result<Vec<TokenEntry>, TokenError> {
        Ok(read_contents(&self.path)?.tokens)
    }

    /// Makes a token for `principal`, bound to tenant `tenant` (the id its
    /// tenant name names now), and records its hash.
    ///
    /// # Errors
    /// [`TokenError::BadPrincipal`]; file errors; [`TokenError::Random`].
    pub(crate) fn add(&self, principal: &str, tenant: TenantId) -> Result<NewToken, TokenError> {
        if Principal::parse(principal).is_none() {
            return Err(TokenError::BadPrincipal(principal.to_owned()));
        }
        let mut secret = Zeroizing::new([0_u8; 32]);
        getrandom::fill(secret.as_mut_slice()).map_err(TokenError::Random)?;
        let mut id = [0_u8; 4];
        getrandom::fill(&mut id).map_err(TokenError::Random)?;
        let id = hex::encode(id);
        let token = Zeroizing::new(format!(
            "{PREFIX}{id}_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.as_slice())
        ));
        let entry = TokenEntry {
            id: id.clone(),
            principal: principal.to_owned(),
            tenant: Some(tenant.to_string()),
            sha256: hex::encode(digest(&token)),
            created: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        self.change(|contents| {
            contents.tokens.push(entry);
            Ok(())
        })?;
        Ok(NewToken {
            id,
            principal: principal.to_owned(),
            secret: token,
        })
    }

    /// Removes the token with id `id`.
    ///
    /// # Errors
    /// [`TokenError::UnknownId`]; file errors.
    pub(crate) fn revoke(&self, id: &str) -> Result<TokenEntry, TokenError> {
        let mut removed = None;
        self.change(|contents| {
            let position = contents
                .tokens
                .iter()
                .position(|entry| entry.id == id)
                .ok_or_else(|| TokenError::UnknownId(id.to_owned()))?;
            removed = Some(contents.tokens.remove(position));
            Ok(())
        })?;
        removed.ok_or_else(|| TokenError::UnknownId(id.to_owned()))
    }

    /// Reads, changes and atomically replaces the file, under an exclusive
    /// lock on `<file>.lock`.
    fn change(
        &self,
        edit: impl FnOnce(&mut FileContents) -> Result<(), TokenError>,
    ) -> Result<(), TokenError> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let lock_path = self.path.with_extension("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_at(&lock_path)(e.into()))?;
        let mut contents = read_contents(&self.path)?;
        edit(&mut contents)?;
        let mut staging = self.path.clone().into_os_string();
        staging.push(format!(".{}.tmp", std::process::id()));
        let staging = PathBuf::from(staging);
        let written = (|| {
            // A file of our own, made now: never one in the way (a link).
            let _ = fs::remove_file(&staging);
            let mut file = fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
                .open(&staging)?;
            let text = serde_json::to_vec_pretty(&contents).map_err(io::Error::other)?;
            file.write_all(&text)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&staging, &self.path)?;
            fs::File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&staging);
        }
        written.map_err(io_at(&self.path))
    }
}

/// The tokens the service accepts, re-read when the file changes.
#[derive(Debug)]
pub(crate) struct Tokens {
    path: PathBuf,
    state: RwLock<Loaded>,
    checked: Mutex<Instant>,
}

#[derive(Debug, Default)]
struct Loaded {
    /// Modification time, size and inode of the file read (`None`: absent).
    stamp: Option<(SystemTime, u64, u64)>,
    /// Who each token (by its hash) stands for; `None` if the file could
    /// not be read.
    principals: Option<HashMap<[u8; 32], Bearer>>,
}

/// Who a token stands for: its principal, and the tenant it was made for
/// (`None` for a token made before tokens were bound).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bearer {
    pub(crate) principal: String,
    pub(crate) tenant: Option<TenantId>,
}

fn stamp(path: &Path) -> io::Result<Option<(SystemTime, u64, u64)>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some((meta.modified()?, meta.len(), meta.ino()))),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

impl Tokens {
    /// The tokens of the file at `path`, read now.
    ///
    /// # Errors
    /// The file cannot be read or parsed.
    pub(crate) fn load(path: impl Into<PathBuf>) -> Result<Self, TokenError> {
        let tokens = Self {
            path: path.into(),
            state: RwLock::new(Loaded::default()),
            checked: Mutex::new(Instant::now()),
        };
        tokens.reload()?;
        Ok(tokens)
    }

    fn reload(&self) -> Result<(), TokenError> {
        let result = stamp(&self.path)
            .map_err(io_at(&self.path))
            .and_then(|stamp| Ok((stamp, read_contents(&self.path)?)));
        let mut state = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok((stamp, contents)) => {
                let mut principals = HashMap::with_capacity(contents.tokens.len());
                for entry in contents.tokens {
                    let mut hash = [0_u8; 32];
                    if hex::decode_to_slice(&entry.sha256, &mut hash).is_ok() {
                        let tenant = entry.tenant.as_deref().and_then(|id| id.parse().ok());
                        principals.insert(
                            hash,
                            Bearer {
                                principal: entry.principal,
                                tenant,
                            },
                        );
                    }
                }
                *state = Loaded {
                    stamp,
                    principals: Some(principals),
                };
                Ok(())
            }
            Err(error) => {
                // Fail closed: no token works until the file is readable.
                *state = Loaded {
                    stamp: None,
                    principals: None,
                };
                Err(error)
            }
        }
    }

    /// Re-reads the file if it changed and the last check is older than
    /// [`RELOAD_INTERVAL`].
    fn refresh(&self) {
        {
            let mut checked = self
                .checked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if checked.elapsed() < RELOAD_INTERVAL {
                return;
            }
            *checked = Instant::now();
        }
        let current = stamp(&self.path).ok();
        let known = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let unchanged = known.principals.is_some() && current == Some(known.stamp);
        drop(known);
        if !unchanged && let Err(error) = self.reload() {
            tracing::error!("tokens refused until fixed: {error}");
        }
    }

    /// Who `token` stands for, if it is a current token.
    ///
    /// # Errors
    /// [`Refused::Unknown`] for any other token;
    /// [`Refused::Unreadable`] while the file cannot be read (no token
    /// works then: the service's outage, not the client's fault).
    pub(crate) fn bearer(&self, token: &str) -> Result<Bearer, Refused> {
        if !token.starts_with(PREFIX) || token.len() > 128 {
            return Err(Refused::Unknown);
        }
        self.refresh();
        let hash = digest(token);
        match self.lookup(&hash) {
            Err(Refused::Unknown) => {}
            // Read again by `refresh` once a second, not per request: a
            // client cannot have the file read (and the failure logged)
            // at its own pace.
            found => return found,
        }
        // Not known: a token added since the last read works at once if
        // the file changed (one `stat` per unknown token, a read only when
        // it changed).
        let current = stamp(&self.path).ok();
        let changed = {
            let known = self
                .state
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            current != Some(known.stamp)
        };
        if changed {
            if let Err(error) = self.reload() {
                tracing::error!("tokens refused until fixed: {error}");
            }
            return self.lookup(&hash);
        }
        Err(Refused::Unknown)
    }

    fn lookup(&self, hash: &[u8; 32]) -> Result<Bearer, Refused> {
        let state = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A lookup by the token's SHA-256: what its timing could tell is
        // about the hash of a 256-bit secret, not the secret.
        state
            .principals
            .as_ref()
            .ok_or(Refused::Unreadable)?
            .get(hash)
            .cloned()
            .ok_or(Refused::Unknown)
    }
}

/// Why [`Tokens::bearer`] let a token in as no one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not a current token.
    Unknown,
    /// The token file cannot be read or parsed: no token is known.
    Unreadable,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tokens_are_stored_as_hashes_and_revocable() {
        let dir = std::env::temp_dir().join(format!("atrest-tokens-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(TOKEN_FILE);
        let file = TokenFile::new(&path);
        let acme = TenantId::random(&mut atrest::filekey::OsRng).unwrap();
        let alice = file.add("alice@acme", acme).unwrap();
        let bob = file.add("bob@globex", acme).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(alice.expose_secret()));
        assert!(!format!("{alice:?}").contains(alice.expose_secret()));
        assert_eq!(
            fs::metadata(&path).unwrap().mode() & 0o777,
            0o600,
            "the token file is its owner's only"
        );
        let tokens = Tokens::load(&path).unwrap();
        assert_eq!(
            tokens.bearer(alice.expose_secret()),
            Ok(Bearer {
                principal: "alice@acme".into(),
                tenant: Some(acme)
            })
        );
        assert_eq!(tokens.bearer("atrest_00000000_nope"), Err(Refused::Unknown));
        assert_eq!(tokens.bearer(""), Err(Refused::Unknown));
        file.revoke(&bob.id).unwrap();
        *tokens.checked.lock().unwrap() = Instant::now() - RELOAD_INTERVAL;
        assert_eq!(tokens.bearer(bob.expose_secret()), Err(Refused::Unknown));
        assert!(matches!(
            file.add("a@b@c", acme),
            Err(TokenError::BadPrincipal(_))
        ));
        // A file others may write, or a link, is refused (no token works).
        let mut permissions = fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o622);
        fs::set_permissions(&path, permissions.clone()).unwrap();
        assert!(Tokens::load(&path).is_err());
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
        fs::set_permissions(&path, permissions.clone()).unwrap();
        let link = dir.join("linked.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(Tokens::load(&link).is_err());
        assert!(Tokens::load(&path).is_ok());
        let good = fs::read(&path).unwrap();
        fs::write(&path, b"{").unwrap();
        *tokens.checked.lock().unwrap() = Instant::now() - RELOAD_INTERVAL;
        assert_eq!(
            tokens.bearer(alice.expose_secret()),
            Err(Refused::Unreadable),
            "an unreadable file lets no one in, and says so"
        );
        assert_eq!(
            tokens.bearer("atrest_00000000_nope"),
            Err(Refused::Unreadable)
        );
        // Mended, it is read again within a second, and tokens work.
        fs::write(&path, good).unwrap();
        *tokens.checked.lock().unwrap() = Instant::now() - RELOAD_INTERVAL;
        assert_eq!(
            tokens.bearer(alice.expose_secret()).map(|b| b.principal),
            Ok("alice@acme".to_owned())
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
