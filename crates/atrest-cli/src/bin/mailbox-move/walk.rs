//! Finding and opening the items under a source directory without ever
//! leaving it.
//!
//! Every directory and item is opened relative to its parent's open
//! directory (`openat`) with `O_NOFOLLOW`, starting from the source
//! directory opened once: a symbolic link is never followed, and a
//! directory swapped for a link while the move runs makes its items fail
//! instead of reading what the link points to. Nothing on another file
//! system than the source directory's is entered or read (a mount point
//! inside it, a file bind-mounted there), and a file with other hard links
//! is left alone (its other name may be outside the directory): both are
//! reported as skipped when the walk finds them, and refused if they
//! appear afterwards.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};

/// The path of an entry under the source directory, as its components.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RelPath(Vec<OsString>);

impl RelPath {
    fn child(&self, name: &OsStr) -> Self {
        let mut components = self.0.clone();
        components.push(name.to_owned());
        Self(components)
    }

    /// The path as text, `/`-separated, if every component is UTF-8.
    pub(crate) fn to_str(&self) -> Option<String> {
        let parts: Option<Vec<&str>> = self.0.iter().map(|c| c.to_str()).collect();
        parts.map(|parts| parts.join("/"))
    }

    /// The path as bytes, `/`-separated (for the move manifest).
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (i, component) in self.0.iter().enumerate() {
            if i > 0 {
                bytes.push(b'/');
            }
            bytes.extend_from_slice(component.as_bytes());
        }
        bytes
    }

    /// The path for reports: `/`-separated, bytes that are not UTF-8
    /// escaped as `\xNN`.
    pub(crate) fn display(&self) -> String {
        let mut text = String::new();
        for chunk in self.to_bytes().utf8_chunks() {
            text.push_str(chunk.valid());
            for byte in chunk.invalid() {
                text.push_str(&format!("\\x{byte:02X}"));
            }
        }
        if text.is_empty() { ".".into() } else { text }
    }
}

/// What a walk found.
#[derive(Debug)]
pub(crate) struct Walk {
    /// The source directory, open.
    pub(crate) root: OwnedFd,
    /// Its device: nothing on another is entered or read.
    pub(crate) device: u64,
    /// Regular files, sorted by path.
    pub(crate) files: Vec<RelPath>,
    /// Entries left alone (symbolic links, devices, sockets, pipes), with
    /// why.
    pub(crate) skipped: Vec<(RelPath, &'static str)>,
    /// Directories (or entries) that could not be read, with the error.
    pub(crate) unreadable: Vec<(RelPath, std::io::Error)>,
}

/// The device of an open file or directory.
fn device_of(fd: &OwnedFd) -> std::io::Result<u64> {
    Ok(rustix::fs::fstat(fd)?.st_dev)
}

/// Why an entry with status `stat` is left alone although it is a
/// regular file or a directory, if it is: on another file system than
/// `device`, or (a file) with other hard links.
fn out_of_bounds(stat: &rustix::fs::Stat, device: u64) -> Option<&'static str> {
    if stat.st_dev != device {
        return Some("on another file system (a mount point; not entered)");
    }
    let file = FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile;
    (file && stat.st_nlink > 1)
        .then_some("a file with other hard links (its other names may be outside the directory)")
}

fn open_dir_at(parent: &OwnedFd, name: &OsStr, device: u64) -> std::io::Result<OwnedFd> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if device_of(&fd)? != device {
        return Err(std::io::Error::other(
            "now on another file system (a mount point; not entered)",
        ));
    }
    Ok(fd)
}

/// Opens directory `dir` under the source, one component at a time, never
/// following a link nor entering another file system.
fn open_dir(root: &OwnedFd, dir: &RelPath) -> std::io::Result<OwnedFd> {
    let device = device_of(root)?;
    let mut current = rustix::io::dup(root)?;
    for component in &dir.0 {
        current = open_dir_at(&current, component, device)?;
    }
    Ok(current)
}

/// Lists every regular file under `source`. Symbolic links are not
/// followed (neither to files nor to directories) but reported as skipped,
/// as are other special files; a subdirectory that cannot be read is
/// reported and the walk goes on.
///
/// # Errors
/// If `source` itself cannot be opened as a directory.
pub(crate) fn walk(source: &Path) -> std::io::Result<Walk> {
    let root: OwnedFd = fs::File::open(source)?.into();
    if !rustix::fs::fstat(&root)
        .map(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Directory)
        .unwrap_or(false)
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    let device = device_of(&root)?;
    let mut found = Walk {
        root,
        device,
        files: Vec::new(),
        skipped: Vec::new(),
        unreadable: Vec::new(),
    };
    let mut pending = vec![RelPath(Vec::new())];
    while let Some(dir) = pending.pop() {
        let entries = match open_dir(&found.root, &dir).and_then(|fd| Ok(rustix::fs::Dir::new(fd)?))
        {
            Ok(entries) => entries,
            Err(error) => {
                found.unreadable.push((dir, error));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    found.unreadable.push((dir.clone(), error.into()));
                    break;
                }
            };
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let path = dir.child(name);
            let stat = open_dir(&found.root, &dir).and_then(|fd| {
                Ok(rustix::fs::statat(
                    &fd,
                    name,
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )?)
            });
            let stat = match stat {
                Ok(stat) => stat,
                Err(error) => {
                    found.unreadable.push((path, error));
                    continue;
                }
            };
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Symlink => {
                    found.skipped.push((path, "a symbolic link (not followed)"));
                }
                FileType::Directory | FileType::RegularFile
                    if let Some(why) = out_of_bounds(&stat, found.device) =>
                {
                    found.skipped.push((path, why));
                }
                FileType::Directory => pending.push(path),
                FileType::RegularFile => found.files.push(path),
                _ => found.skipped.push((path, "not a regular file")),
            }
        }
    }
    found.files.sort();
    found.skipped.sort_by(|a, b| a.0.cmp(&b.0));
    found.unreadable.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// Opens item `item` under the source for reading: every directory on the
/// way and the item itself are opened without following links, and the
/// item must (still) be a regular file.
///
/// # Errors
/// If it cannot be opened, is now a link or is no longer a regular file.
pub(crate) fn open_item(root: &OwnedFd, item: &RelPath) -> std::io::Result<fs::File> {
    let (dir, name) = open_parent(root, item)?;
    let fd = rustix::fs::openat(
        &dir,
        name.as_os_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| {
        if errno == rustix::io::Errno::LOOP {
            std::io::Error::other("now a symbolic link (not followed)")
        } else {
            errno.into()
        }
    })?;
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::other("no longer a regular file"));
    }
    if let Some(why) = out_of_bounds(&stat, device_of(root)?) {
        return Err(std::io::Error::other(format!("now {why}")));
    }
    Ok(fs::File::from(fd))
}

/// Removes item `item` under the source if `still` says its status
/// (`lstat`, through its directory opened without following links) is
/// still what was read; `Ok(false)` if it is not (then it stays).
///
/// # Errors
/// If its directory cannot be opened or it cannot be removed.
pub(crate) fn remove_item(
    root: &OwnedFd,
    item: &RelPath,
    still: impl FnOnce(&rustix::fs::Stat) -> bool,
) -> std::io::Result<bool> {
    let (dir, name) = open_parent(root, item)?;
    let stat = rustix::fs::statat(
        &dir,
        name.as_os_str(),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile || !still(&stat) {
        return Ok(false);
    }
    rustix::fs::unlinkat(&dir, name.as_os_str(), rustix::fs::AtFlags::empty())?;
    Ok(true)
}

/// The directory holding `item`, opened as [`open_dir`] does, and the
/// item's name in it.
fn open_parent<'a>(root: &OwnedFd, item: &'a RelPath) -> std::io::Result<(OwnedFd, &'a OsString)> {
    let (name, dirs) = item
        .0
        .split_last()
        .ok_or_else(|| std::io::Error::other("not an item"))?;
    Ok((open_dir(root, &RelPath(dirs.to_vec()))?, name))
}
