//! Which processes have a deployment open: each holds a lease, a file in
//! `DIR/leases` that it keeps locked (`flock`) from [`Deployment::open`]
//! until it ends, and that names its program, process id and start time.
//! A lease whose file is not locked belongs to a process that died.
//!
//! Every seal a process begins is marked in the catalog with its lease's
//! id: the leases directory's own random id (made once, in
//! `DIR/leases/directory`), a slash, and the lease's name. Collecting
//! garbage reads them: a seal of a lease of this directory is running if
//! and only if that lease is locked; a seal of another directory (an
//! instance on another machine sharing PostgreSQL metadata) cannot be
//! asked, so only its age tells (see [`Deployment::collect_garbage`]).
//!
//! [`Deployment::open`]: crate::Deployment::open
//! [`Deployment::collect_garbage`]: crate::Deployment::collect_garbage

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The directory of leases, in the deployment directory.
pub(crate) const LEASES: &str = "leases";

/// A lease file's name ends so; one being made ends in `.new`.
const SUFFIX: &str = ".lease";

/// The file holding the leases directory's random id.
const DIRECTORY_ID: &str = "directory";

/// Who holds a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The program, as the audit trail names it.
    pub program: String,
    /// Its process id.
    pub pid: u32,
    /// When it opened the deployment, in seconds since the Unix epoch.
    pub started: u64,
}

/// This process's lease: removed when dropped (a process killed leaves the
/// file, unlocked).
#[derive(Debug)]
pub(crate) struct Lease {
    /// What the seals it begins are marked with.
    id: String,
    path: PathBuf,
    /// Kept open: the lock lasts as long as the descriptor.
    _file: File,
}

impl Lease {
    /// Takes a lease in `dir` for `program`. Blocks (file calls).
    pub(crate) fn take(dir: &Path, program: &str) -> io::Result<Self> {
        let leases = dir.join(LEASES);
        std::fs::create_dir_all(&leases)?;
        let directory = directory_id(&leases)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let holder = Holder {
            program: program.to_owned(),
            pid: std::process::id(),
            started: now.as_secs(),
        };
        let name = format!("{}-{}", holder.pid, now.as_nanos());
        // Made and locked under a name readers pass over, then renamed: a
        // reader never sees an unlocked lease of a living process.
        let new = leases.join(format!(".{name}.new"));
        let path = leases.join(format!("{name}{SUFFIX}"));
        let mut file = OpenOptions::new().write(true).create_new(true).open(&new)?;
        let made = file
            .lock()
            .and_then(|()| file.write_all(&serde_json::to_vec(&holder).map_err(io::Error::other)?))
            .and_then(|()| std::fs::rename(&new, &path));
        if let Err(error) = made {
            let _ = std::fs::remove_file(&new);
            return Err(error);
        }
        Ok(Self {
            id: format!("{directory}/{name}"),
            path,
            _file: file,
        })
    }

    /// What the seals begun under it are marked with.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Its file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The random id of the leases directory `leases`, made if it has none
/// yet (by one process, whichever links its file first). Blocks.
fn directory_id(leases: &Path) -> io::Result<String> {
    let path = leases.join(DIRECTORY_ID);
    let valid = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    match std::fs::read_to_string(&path) {
        Ok(id) if valid(id.trim()) => return Ok(id.trim().to_owned()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} does not hold a directory id", path.display()),
            ));
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let id = atrest::BlobName::random()
        .map_err(io::Error::other)?
        .to_string();
    let new = leases.join(format!(".{DIRECTORY_ID}.{}.new", std::process::id()));
    std::fs::write(&new, &id)?;
    // A link fails if the name exists: the first one made wins, whole.
    let linked = std::fs::hard_link(&new, &path);
    let _ = std::fs::remove_file(&new);
    match linked {
        Ok(()) => Ok(id),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            let id = std::fs::read_to_string(&path)?;
            if valid(id.trim()) {
                Ok(id.trim().to_owned())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} does not hold a directory id", path.display()),
                ))
            }
        }
        Err(error) => Err(error),
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What [`scan`] found.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    /// The leases directory's id (`None` if it has none: no lease was ever
    /// taken in it).
    pub(crate) directory: Option<String>,
    /// The living holders other than the caller, by lease id.
    pub(crate) living: Vec<(String, Holder)>,
    /// The lease files of processes that died (and lease files never
    /// finished by one).
    pub(crate) dead: Vec<PathBuf>,
}

impl Leases {
    /// Whether the seal marked `owner` belongs to a process of this
    /// leases directory (`Some`), and then its living holder (`Some(None)`:
    /// it died); `None` for another directory's, or an unmarked seal.
    pub(crate) fn holder_of(&self, owner: Option<&str>) -> Option<Option<&Holder>> {
        let (directory, name) = owner?.split_once('/')?;
        if Some(directory) != self.directory.as_deref() {
            return None;
        }
        Some(
            self.living
                .iter()
                .find(|(id, _)| id.split_once('/').is_some_and(|(_, n)| n == name))
                .map(|(_, holder)| holder),
        )
    }
}

/// The leases in `dir` other than `own`. Blocks.
pub(crate) fn scan(dir: &Path, own: Option<&Path>) -> io::Result<Leases> {
    let leases = dir.join(LEASES);
    let mut found = Leases::default();
    let entries = match std::fs::read_dir(&leases) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(error) => return Err(error),
    };
    found.directory = match std::fs::read_to_string(leases.join(DIRECTORY_ID)) {
        Ok(id) => Some(id.trim().to_owned()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    for entry in entries {
        let path = entry?.path();
        if Some(path.as_path()) == own {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with(&format!(".{DIRECTORY_ID}.")) {
            continue;
        }
        let unfinished = name.starts_with('.') && name.ends_with(".new");
        let Some(stem) = name.strip_suffix(SUFFIX).or(unfinished.then_some(name)) else {
            continue;
        };
        let stem = stem.to_owned();
        let file = match File::open(&path) {
            Ok(file) => file,
            // Its holder ended (or was renamed) since the listing.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        match file.try_lock_shared() {
            Ok(()) => found.dead.push(path),
            // Still being made: its holder is alive and will finish it.
            Err(TryLockError::WouldBlock) if unfinished => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read(&path)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Holder>(&bytes).ok());
                // A lease that is locked but unreadable is still a living
                // holder.
                let holder = holder.unwrap_or_else(|| Holder {
                    program: "(unreadable lease)".into(),
                    pid: 0,
                    started: 0,
                });
                let directory = found.directory.clone().unwrap_or_default();
                found.living.push((format!("{directory}/{stem}"), holder));
            }
            Err(TryLockError::Error(error)) => return Err(error),
        }
    }
    found.living.sort_by_key(|(_, holder)| holder.started);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_living_while_held_and_gone_when_dropped() {
        let dir = atrest_test_support::TempDir::new("lease");
        let lease = Lease::take(dir.path(), "test").unwrap();
        let other = Lease::take(dir.path(), "other").unwrap();
        let found = scan(dir.path(), None).unwrap();
        assert_eq!(found.living.len(), 2);
        let holder = found.holder_of(Some(lease.id())).unwrap().unwrap();
        assert_eq!(holder.pid, std::process::id());
        assert_eq!(holder.program, "test");
        assert!(found.dead.is_empty());
        // Its own lease is not counted.
        let found = scan(dir.path(), Some(lease.path())).unwrap();
        assert_eq!(found.living.len(), 1);
        let id = lease.id().to_owned();
        drop(lease);
        let found = scan(dir.path(), None).unwrap();
        assert!(found.dead.is_empty());
        // A seal of a lease that ended is this directory's, with no
        // holder; one of another directory, or unmarked, is not.
        assert_eq!(found.holder_of(Some(&id)), Some(None));
        assert!(found.holder_of(Some(other.id())).unwrap().is_some());
        assert_eq!(found.holder_of(Some("0123/1-2")), None);
        assert_eq!(found.holder_of(None), None);
    }

    #[test]
    fn an_unlocked_lease_is_a_dead_process() {
        let dir = atrest_test_support::TempDir::new("lease");
        let leases = dir.path().join(LEASES);
        std::fs::create_dir_all(&leases).unwrap();
        let left = leases.join("1-2.lease");
        std::fs::write(&left, br#"{"program":"atrest-cli","pid":1,"started":2}"#).unwrap();
        let found = scan(dir.path(), None).unwrap();
        assert!(found.living.is_empty());
        assert_eq!(found.dead, vec![left]);
    }
}
