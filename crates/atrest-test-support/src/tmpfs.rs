//! A small tmpfs mounted for a test (a disk that fills for real), unmounted
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a directory.
#[derive(Debug)]
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `dir` (created if missing); `None`
    /// if this machine does not allow it (mounting needs root), after
    /// saying on standard error that the test is skipped.
    pub fn mount(dir: &Path, mib: u32) -> Option<Self> {
        std::fs::create_dir_all(dir).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .is_ok_and(|output| output.status.success());
        if !mounted {
            eprintln!("skipped: this machine does not let the test mount a tmpfs (root needed)");
            return None;
        }
        Some(Self(dir.to_path_buf()))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
