//! Where `get` writes plaintext: staged next to a regular file and renamed
//! into place once every byte verified, or written through to stdout, a
//! FIFO or a device.
//!
//! A staging file is created exclusively (never reusing or following
//! anything already there) in the target's directory, with mode 0600 — or
//! the mode of the file it replaces — before any plaintext is written. It
//! is removed when the command fails, and when the program is interrupted
//! (SIGINT, SIGTERM, SIGHUP): [`install_interrupt_cleanup`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::exit::Error;

/// Staging files to remove if the program is interrupted.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes every pending staging file and exits with 130 when the program
/// is interrupted. Call once, early.
pub(crate) fn install_interrupt_cleanup() {
    let installed = ctrlc::set_handler(|| {
        remove_pending();
        std::process::exit(130);
    });
    if let Err(error) = installed {
        atrest_cli::errln!("atrest: warning: cannot watch for interruptions: {error}");
    }
}

fn remove_pending() {
    let pending = PENDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for path in pending.iter() {
        let _ = fs::remove_file(path);
    }
}

fn forget(path: &Path) {
    PENDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .retain(|p| p != path);
}

/// Where plaintext goes.
pub(crate) enum Destination {
    /// Standard output.
    Stdout(io::Stdout),
    /// Written directly: a FIFO, a character or block device.
    Through(File),
    /// A staging file, renamed over the target by [`Destination::finish`].
    Staged(Staged),
}

/// A staging file and the path it will replace.
pub(crate) struct Staged {
    file: File,
    staging: PathBuf,
    target: PathBuf,
    done: bool,
}

impl Destination {
    /// The destination for `path` (`-`: standard output).
    ///
    /// # Errors
    /// A usage error for a directory or a path without a file name; I/O
    /// errors.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        if path.as_os_str() == "-" {
            return Ok(Self::Stdout(io::stdout()));
        }
        // Follow a symbolic link to what it names: that is what is replaced.
        let target = match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                fs::canonicalize(path).map_err(Error::at(path))?
            }
            _ => path.to_path_buf(),
        };
        let existing = match fs::metadata(&target) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::at(&target)(e)),
        };
        let mode = match &existing {
            Some(meta) if meta.is_dir() => {
                return Err(Error::usage(format!(
                    "{} is a directory; give a file to write to",
                    path.display()
                )));
            }
            Some(meta) if meta.is_file() => meta.permissions().mode() & 0o7777,
            Some(meta) => {
                let kind = meta.file_type();
                if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&target)
                        .map_err(Error::at(&target))?;
                    return Ok(Self::Through(file));
                }
                return Err(Error::usage(format!(
                    "{} is neither a regular file, a FIFO nor a device",
                    path.display()
                )));
            }
            None => 0o600,
        };
        let name = target
            .file_name()
            .ok_or_else(|| Error::usage(format!("{} does not name a file", path.display())))?;
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let unique = format!(
                "{}.{}.{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos()),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let mut staging_name = std::ffi::OsString::from(".");
            staging_name.push(name);
            staging_name.push(format!(".{unique}.atrest-partial"));
            let staging = dir.join(staging_name);
            // Registered before it exists, so an interruption in between
            // leaves nothing behind either.
            PENDING
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(staging.clone());
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&staging)
            {
                Ok(file) => {
                    // Exactly the mode wanted, whatever the umask.
                    if let Err(e) = file.set_permissions(fs::Permissions::from_mode(mode)) {
                        forget(&staging);
                        let _ = fs::remove_file(&staging);
                        return Err(Error::at(&staging)(e));
                    }
                    return Ok(Self::Staged(Staged {
                        file,
                        staging,
                        target,
                        done: false,
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => forget(&staging),
                Err(e) => {
                    forget(&staging);
                    return Err(Error::at(&staging)(e));
                }
            }
        }
    }

    /// Whether plaintext goes to standard output.
    pub(crate) fn is_stdout(&self) -> bool {
        matches!(self, Self::Stdout(_))
    }

    /// Makes what was written final: flushes, and for a staging file syncs
    /// it, renames it over the target and syncs the directory.
    ///
    /// # Errors
    /// I/O errors (the staging file is then removed).
    pub(crate) fn finish(self) -> Result<(), Error> {
        match self {
            Self::Stdout(mut stdout) => stdout.flush().map_err(Error::stdout),
            Self::Through(mut file) => file.flush().map_err(|e| Error::Io {
                what: "the output".into(),
                source: e,
            }),
            Self::Staged(mut staged) => {
                staged.file.sync_all().map_err(Error::at(&staged.staging))?;
                fs::rename(&staged.staging, &staged.target).map_err(Error::at(&staged.target))?;
                staged.done = true;
                forget(&staged.staging);
                if let Some(dir) = staged.target.parent().filter(|d| !d.as_os_str().is_empty()) {
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(Error::at(dir))?;
                }
                Ok(())
            }
        }
    }
}

impl Write for Destination {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Stdout(out) => out.write(buf),
            Self::Through(file) => file.write(buf),
            Self::Staged(staged) => staged.file.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Stdout(out) => out.flush(),
            Self::Through(file) => file.flush(),
            Self::Staged(staged) => staged.file.flush(),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.staging);
            forget(&self.staging);
        }
    }
}
