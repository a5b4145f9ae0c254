//! Where `get` writes plaintext: staged next to a regular file and renamed
//! into place once every byte verified, or written through to stdout, a
//! FIFO or a device.
//!
//! A staging file is created exclusively (never reusing or following
//! anything already there) in the target's directory, with mode 0600,
//! before any plaintext is written, and keeps that mode until it is
//! complete: the mode of a file it replaces is given to it just before the
//! rename. It is removed when the command fails, and when the program is
//! interrupted (SIGINT, SIGTERM, SIGHUP): [`install_interrupt_cleanup`].
//!
//! A process killed outright (SIGKILL, a crash, a power cut) cannot remove
//! its staging file, so each one is locked (`flock`) by its writer for as
//! long as it lives: the next `get` into the same target removes the
//! staging files of that target that no process holds and that nothing
//! wrote to for [`STALE_AFTER`] (which covers the instant between a
//! staging file's creation and its lock), and says so. Each staging file is
//! also noted in the deployment directory (`DATA/outputs`, once locked),
//! so that `atrest gc` finds those that no later `get` into the same target
//! came to remove: [`collect_partial_outputs`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::exit::Error;

/// Staging files to remove if the program is interrupted.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// How long a staging file no process holds must have been left alone
/// before another `get` removes it.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// What ends a staging file's name.
const PARTIAL_SUFFIX: &str = ".atrest-partial";

/// Where staging files are noted, in the deployment directory: one file
/// each, holding the staging file's absolute path.
pub(crate) const OUTPUTS: &str = "outputs";

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
    /// Locked for as long as this process writes it.
    file: File,
    staging: PathBuf,
    target: PathBuf,
    /// The mode the target gets: that of the file it replaces, or 0600.
    mode: u32,
    /// Its note in `DATA/outputs`, if one could be made.
    note: Option<PathBuf>,
    done: bool,
}

impl Destination {
    /// The destination for `path` (`-`: standard output); a staging file
    /// is noted in `data`'s `outputs` directory.
    ///
    /// # Errors
    /// A usage error for a directory or a path without a file name; I/O
    /// errors.
    pub(crate) fn open(path: &Path, data: &Path) -> Result<Self, Error> {
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
        remove_stale_partials(&dir, name);
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
            staging_name.push(format!(".{unique}{PARTIAL_SUFFIX}"));
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
                    // Locked before any plaintext is written, so that no
                    // other `get` takes it for one left by a dead process.
                    if let Err(e) = file.try_lock() {
                        forget(&staging);
                        let _ = fs::remove_file(&staging);
                        return Err(Error::at(&staging)(io::Error::other(e.to_string())));
                    }
                    let note = note(data, &staging, &unique);
                    return Ok(Self::Staged(Staged {
                        file,
                        staging,
                        target,
                        mode,
                        note,
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
                // Exactly the mode wanted, whatever the umask, now that
                // every byte is written and verified.
                staged
                    .file
                    .set_permissions(fs::Permissions::from_mode(staged.mode))
                    .map_err(Error::at(&staged.staging))?;
                staged.file.sync_all().map_err(Error::at(&staged.staging))?;
                fs::rename(&staged.staging, &staged.target).map_err(Error::at(&staged.target))?;
                staged.done = true;
                forget(&staged.staging);
                if let Some(note) = staged.note.take() {
                    let _ = fs::remove_file(note);
                }
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

/// Removes the staging files of target `name` in `dir` that an earlier
/// `get` left when it was killed: those no process holds locked and that
/// were not written to for [`STALE_AFTER`]. Reports each on standard
/// error; one that cannot be removed is left for the next run.
fn remove_stale_partials(dir: &Path, name: &std::ffi::OsStr) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        if !is_partial_of(&file_name, name) {
            continue;
        }
        let path = entry.path();
        // Only a regular file this process can lock: never what a link
        // points to.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let left_alone = meta
            .modified()
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|idle| idle >= STALE_AFTER);
        if !meta.file_type().is_file() || !left_alone {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        // Its writer holds the lock while it lives; a lock taken here means
        // the writer is gone.
        if file.try_lock().is_ok() && fs::remove_file(&path).is_ok() {
            atrest_cli::errln!(
                "atrest: removed {}, the partial output of an earlier get that was killed",
                path.display()
            );
        }
    }
}

/// Whether `file_name` is a staging file of target `name`:
/// `.NAME.PID.NANOS.N.atrest-partial`, the three numbers in decimal.
fn is_partial_of(file_name: &std::ffi::OsStr, name: &std::ffi::OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let (file_name, name) = (file_name.as_bytes(), name.as_bytes());
    let Some(rest) = file_name
        .strip_prefix(b".")
        .and_then(|rest| rest.strip_prefix(name))
        .and_then(|rest| rest.strip_prefix(b"."))
        .and_then(|rest| rest.strip_suffix(PARTIAL_SUFFIX.as_bytes()))
    else {
        return false;
    };
    let numbers: Vec<&[u8]> = rest.split(|&b| b == b'.').collect();
    numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit))
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
        if let Some(note) = &self.note {
            let _ = fs::remove_file(note);
        }
    }
}

/// Notes `staging` in `data`'s `outputs` directory; `None` if that cannot
/// be done (only `gc` would miss it).
fn note(data: &Path, staging: &Path, unique: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt as _;
    let staging = std::path::absolute(staging).ok()?;
    let dir = data.join(OUTPUTS);
    fs::create_dir_all(&dir).ok()?;
    // Written whole under a name `gc` passes over, then renamed.
    let new = dir.join(format!(".{unique}.new"));
    let note = dir.join(unique);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&new)
        .and_then(|mut file| file.write_all(staging.as_os_str().as_bytes()))
        .and_then(|()| fs::rename(&new, &note));
    match written {
        Ok(()) => Some(note),
        Err(_) => {
            let _ = fs::remove_file(&new);
            None
        }
    }
}

/// A partial output `gc` found.
#[derive(Debug, serde::Serialize)]
pub(crate) struct PartialOutput {
    /// The staging file.
    pub(crate) path: PathBuf,
    /// Its size in bytes.
    pub(crate) bytes: u64,
    /// Whether a running `get` still writes it (then it is left alone).
    pub(crate) in_use: bool,
}

/// The staging files noted in `data`'s `outputs` directory that still
/// exist: those no process holds are removed (unless `dry_run`), with their
/// notes; a note whose file is gone is removed. Only a regular file whose
/// name has the staging form is ever removed, whatever a note says.
pub(crate) fn collect_partial_outputs(
    data: &Path,
    dry_run: bool,
) -> io::Result<Vec<PartialOutput>> {
    use std::os::unix::ffi::OsStrExt as _;
    let entries = match fs::read_dir(data.join(OUTPUTS)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let note = entry?.path();
        // A note being written (its get is alive; one a get killed while
        // writing it left is removed after a minute), or not a note.
        if note
            .file_name()
            .is_none_or(|name| name.as_bytes().starts_with(b"."))
        {
            let abandoned = fs::symlink_metadata(&note)
                .ok()
                .and_then(|meta| meta.modified().ok())
                .and_then(|at| at.elapsed().ok())
                .is_some_and(|idle| idle >= std::time::Duration::from_secs(60));
            if abandoned && !dry_run {
                let _ = fs::remove_file(&note);
            }
            continue;
        }
        let Ok(bytes) = fs::read(&note) else { continue };
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&bytes));
        let staging_form = path
            .file_name()
            .is_some_and(|name| name.as_bytes().starts_with(b".") && is_partial(name));
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_file() && staging_form => meta,
            // Renamed into place or removed since (or not a staging file).
            _ => {
                if !dry_run {
                    let _ = fs::remove_file(&note);
                }
                continue;
            }
        };
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let in_use = file.try_lock().is_err();
        if !in_use && !dry_run {
            fs::remove_file(&path)?;
            let _ = fs::remove_file(&note);
        }
        found.push(PartialOutput {
            path,
            bytes: meta.len(),
            in_use,
        });
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Whether `file_name` has the form of a staging file of any target.
fn is_partial(file_name: &std::ffi::OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = file_name.as_bytes();
    // `.NAME.PID.NANOS.N.atrest-partial`: NAME is what precedes the last
    // three numbers.
    let Some(rest) = bytes
        .strip_prefix(b".")
        .and_then(|rest| rest.strip_suffix(PARTIAL_SUFFIX.as_bytes()))
    else {
        return false;
    };
    let mut parts = rest.rsplitn(4, |&b| b == b'.');
    let numbers: Vec<&[u8]> = parts.by_ref().take(3).collect();
    let Some(name) = parts.next().filter(|name| !name.is_empty()) else {
        return false;
    };
    numbers.len() == 3 && is_partial_of(file_name, std::ffi::OsStr::from_bytes(name))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::{is_partial, is_partial_of};

    #[test]
    fn only_the_staging_files_of_the_same_target_match() {
        let name = OsStr::new("report.pdf");
        assert!(is_partial_of(
            OsStr::new(".report.pdf.41.7.0.atrest-partial"),
            name
        ));
        for other in [
            ".report.pdf.atrest-partial",
            ".report.pdf.41.7.atrest-partial",
            ".report.pdf.41.7.0.1.atrest-partial",
            ".report.pdf.41.x.0.atrest-partial",
            ".report.pdf..7.0.atrest-partial",
            ".report.pdf.41.7.0.atrest-partial.bak",
            ".report.pdf2.41.7.0.atrest-partial",
            "report.pdf.41.7.0.atrest-partial",
            ".other.pdf.41.7.0.atrest-partial",
            "report.pdf",
        ] {
            assert!(!is_partial_of(OsStr::new(other), name), "{other}");
        }
        assert!(is_partial(OsStr::new(".report.pdf.41.7.0.atrest-partial")));
        assert!(is_partial(OsStr::new(".a.b.41.7.0.atrest-partial")));
        for other in [
            ".41.7.0.atrest-partial",
            "..41.7.0.atrest-partial",
            ".report.pdf.41.7.atrest-partial",
            "report.pdf.41.7.0.atrest-partial",
            "/etc/passwd",
        ] {
            assert!(!is_partial(OsStr::new(other)), "{other}");
        }
    }
}
