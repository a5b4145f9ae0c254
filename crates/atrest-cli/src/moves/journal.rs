//! The source's journal: an audit log of its own, in a directory of its
//! own, signed with a key kept beside it, and held by one run at a time.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use atrest::audit::{AuditLog, Entry, LogConfig, Record, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

/// The journal's signing key file (PKCS#8, mode 0600), in its directory.
const KEY_FILE: &str = "journal.key";
/// The journal's log, in its directory.
const LOG_DIR: &str = "log";
/// The lock one run holds for as long as it uses the journal.
const LOCK_FILE: &str = "journal.lock";

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Its directory or key file.
    #[error("journal {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Its key file may be read by others.
    #[error("journal key {}: permissions {mode:03o} let others read it; chmod 600 it", path.display())]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permissions.
        mode: u32,
    },
    /// The log failed.
    #[error("journal: {0}")]
    Audit(#[from] atrest::audit::Error),
}

/// The source's journal of moves: an audit log of its own, signed with a
/// key kept beside it.
pub struct Journal {
    log: AuditLog,
    dir: PathBuf,
    verifying_key: VerifyingKey,
    /// Held (an exclusive `flock`) until the journal is dropped: two runs
    /// at once would each take the other's items for their own.
    _lock: std::fs::File,
}

impl core::fmt::Debug for Journal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("verifying_key", &self.verifying_key.to_string())
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens the journal in `dir`, making it (and its key) if there is
    /// none; the second value says whether it was made now. One run holds
    /// a journal at a time: a second waits until the first is done. Blocks.
    ///
    /// # Errors
    /// [`JournalError`].
    pub fn open(dir: &Path) -> Result<(Self, bool), JournalError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .and_then(|file| file.lock().map(|()| file))
            .map_err(io(&lock_path))?;
        let key_path = dir.join(KEY_FILE);
        let log_dir = dir.join(LOG_DIR);
        let (signer, made) = match std::fs::metadata(&key_path) {
            Ok(meta) => {
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
                if mode & 0o077 != 0 {
                    return Err(JournalError::Exposed {
                        path: key_path,
                        mode,
                    });
                }
                let pkcs8 = Zeroizing::new(std::fs::read(&key_path).map_err(io(&key_path))?);
                (
                    SigningKey::from_pkcs8("mailbox-move-journal", &pkcs8)?,
                    false,
                )
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let (signer, pkcs8) = SigningKey::generate("mailbox-move-journal")?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_path)
                    .map_err(io(&key_path))?;
                std::io::Write::write_all(&mut file, &pkcs8).map_err(io(&key_path))?;
                file.sync_all().map_err(io(&key_path))?;
                (signer, true)
            }
            Err(error) => return Err(io(&key_path)(error)),
        };
        let verifying_key = signer.verifying_key();
        let log = if log_dir.exists() {
            AuditLog::open(&log_dir, signer, LogConfig::default())?.0
        } else {
            AuditLog::create(&log_dir, signer, LogConfig::default())?
        };
        Ok((
            Self {
                log,
                dir: dir.to_path_buf(),
                verifying_key,
                _lock: lock,
            },
            made,
        ))
    }

    /// The key that verifies the journal's checkpoints (text form).
    pub fn verifying_key(&self) -> String {
        self.verifying_key.to_string()
    }

    /// Appends `records` in one commit; returns once they are durable.
    /// Blocks.
    ///
    /// # Errors
    /// If the log cannot make them durable.
    pub fn append(&self, records: &[Record]) -> Result<(), JournalError> {
        let _ = self.log.append_all(records)?;
        Ok(())
    }

    /// Every record of the journal in `dir`, in order. Blocks.
    ///
    /// # Errors
    /// If the log cannot be read or does not parse.
    pub fn entries(dir: &Path) -> Result<Vec<Entry>, JournalError> {
        let log_dir = dir.join(LOG_DIR);
        if !log_dir.exists() {
            return Ok(Vec::new());
        }
        Ok(atrest::audit::read_entries(log_dir)?)
    }

    /// Verifies the journal in `dir` with `key`, or with the key kept
    /// beside it (the second value is `true` then: a key anyone who could
    /// rewrite the journal could have replaced). Blocks.
    ///
    /// # Errors
    /// If the key does not parse or cannot be read.
    pub fn verify(
        dir: &Path,
        key: Option<&str>,
    ) -> Result<(atrest::audit::Report, bool), JournalError> {
        let (key, from_journal) = match key {
            Some(text) => (VerifyingKey::parse(text)?, false),
            None => {
                let key_path = dir.join(KEY_FILE);
                let pkcs8 = Zeroizing::new(std::fs::read(&key_path).map_err(|source| {
                    JournalError::Io {
                        path: key_path.clone(),
                        source,
                    }
                })?);
                (
                    SigningKey::from_pkcs8("mailbox-move-journal", &pkcs8)?.verifying_key(),
                    true,
                )
            }
        };
        Ok((
            atrest::audit::verify(dir.join(LOG_DIR), &[], &key)?,
            from_journal,
        ))
    }
}
