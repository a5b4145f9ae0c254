//! Finding the items under a source directory, without following links.

use std::fs;
use std::path::{Path, PathBuf};

/// What a walk found.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// Regular files, sorted by path.
    pub(crate) files: Vec<PathBuf>,
    /// Entries left alone (symbolic links, devices, sockets, pipes), with
    /// why.
    pub(crate) skipped: Vec<(PathBuf, &'static str)>,
    /// Directories (or entries) that could not be read, with the error.
    pub(crate) unreadable: Vec<(PathBuf, std::io::Error)>,
}

/// Lists every regular file under `source`. Symbolic links are not
/// followed (neither to files nor to directories) but reported as skipped,
/// as are other special files; a subdirectory that cannot be read is
/// reported and the walk goes on.
///
/// # Errors
/// If `source` itself cannot be read.
pub(crate) fn walk(source: &Path) -> std::io::Result<Walk> {
    let mut found = Walk::default();
    let mut pending = vec![source.to_path_buf()];
    let mut first = true;
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if first => return Err(error),
            Err(error) => {
                found.unreadable.push((dir, error));
                continue;
            }
        };
        first = false;
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    found.unreadable.push((dir.clone(), error));
                    continue;
                }
            };
            let path = entry.path();
            // The entry's own type: a symbolic link is not followed.
            match entry.file_type() {
                Ok(kind) if kind.is_symlink() => {
                    found.skipped.push((path, "a symbolic link (not followed)"));
                }
                Ok(kind) if kind.is_dir() => pending.push(path),
                Ok(kind) if kind.is_file() => found.files.push(path),
                Ok(_) => found.skipped.push((path, "not a regular file")),
                Err(error) => found.unreadable.push((path, error)),
            }
        }
    }
    found.files.sort();
    found.skipped.sort();
    found.unreadable.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}
