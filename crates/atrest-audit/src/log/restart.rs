//! Beginning a log anew after damage that [`AuditLog::open`] refuses to
//! repair: the damaged log is set aside whole, as evidence, and a new log
//! begins with a signed line saying where it went and what was wrong.
//!
//! [`restart`] of the log in `DIR`:
//!
//! 1. takes the writers' lock, so no writer is in the middle of a batch;
//! 2. verifies the log with the operator's verifying key (which must be the
//!    signer's) and the witness's newest checkpoint: a log that verifies is
//!    left alone ([`Error::Intact`]);
//! 3. makes the new log in `DIR.new`, its first batch an
//!    [`Event::LogRestarted`] line (the old log's id, where it is set aside,
//!    how many of its lines verified and their chain head, the damage, and
//!    the SHA-256 of its segments), signed and published to the witness
//!    like every batch;
//! 4. renames `DIR` to `DIR.set-aside/<time>-<old log id>` — nothing in it
//!    is changed — and `DIR.new` to `DIR`.
//!
//! A restart that stops before step 4 leaves the old log in place and a
//! `DIR.new` that the next [`restart`] replaces; one that stops between the
//! two renames leaves no `DIR` and a complete `DIR.new`, which the next
//! [`restart`] (or [`finish_restart`]) puts in place.

use std::fs;
use std::path::{Path, PathBuf};

use ring::digest;

use crate::checkpoint::{Signer, VerifyingKey};
use crate::fs::{META_FILE, io, open_lock, read_meta, segments, sync_dir, take_lock};
use crate::record::{Event, Record, Text};
use crate::verify::{Report, verify_segments};
use crate::{AuditLog, Error, LOG_ACTOR, LogConfig};

/// What [`restart`] did.
#[derive(Debug, Clone)]
pub struct Restart {
    /// Where the damaged log was set aside (`None` when this call only
    /// finished a restart that an earlier one had set aside already).
    pub set_aside: Option<PathBuf>,
    /// Its id.
    pub previous_log: Option<String>,
    /// What verifying it found.
    pub report: Option<Report>,
}

/// `DIR` with `suffix` added to its last component (`audit` → `audit.new`).
fn beside(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Where a restart of the log in `dir` sets damaged logs aside:
/// `DIR.set-aside`.
pub fn set_aside_dir(dir: impl AsRef<Path>) -> PathBuf {
    beside(dir.as_ref(), ".set-aside")
}

/// Puts in place the new log of a restart that stopped between setting the
/// old log aside and renaming the new one (`DIR` missing, `DIR.new`
/// complete); `Ok(false)` if there is none to finish.
///
/// # Errors
/// [`Error::Io`].
pub fn finish_restart(dir: impl AsRef<Path>) -> Result<bool, Error> {
    let dir = dir.as_ref();
    let new = beside(dir, ".new");
    if dir.join(META_FILE).exists() || !new.join(META_FILE).exists() {
        return Ok(false);
    }
    if dir.exists() {
        // An empty directory left where the log was (made by a writer that
        // came after the old log was set aside).
        io(dir, fs::remove_dir(dir))?;
    }
    io(&new, fs::rename(&new, dir))?;
    sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
    Ok(true)
}

/// Sets the damaged log in `dir` aside and begins a new one there, signed
/// by `signer`, with `config` (see the [module documentation](self)).
/// `key` is the operator's copy of the log's verifying key: it must be the
/// signer's.
///
/// # Errors
/// [`Error::Intact`] if the log verifies (nothing to set aside);
/// [`Error::Malformed`] if `key` is not the signer's; [`Error::NotALog`];
/// [`Error::Busy`] if writers hold the lock; [`Error::Witness`];
/// [`Error::Io`].
pub fn restart(
    dir: impl AsRef<Path>,
    signer: impl Signer + 'static,
    config: LogConfig,
    key: &VerifyingKey,
) -> Result<Restart, Error> {
    let dir = dir.as_ref();
    if finish_restart(dir)? {
        return Ok(Restart {
            set_aside: None,
            previous_log: None,
            report: None,
        });
    }
    if signer.verifying_key() != *key {
        return Err(Error::Malformed {
            what: "verifying key",
            reason: "it is not the key of the log's signer: give the key the log was created with",
        });
    }
    let log_id = read_meta(dir)?;
    let lock_path = dir.join(crate::fs::LOCK_FILE);
    let lock = open_lock(dir)?;
    let guard = take_lock(&lock, &lock_path, false, config.lock_timeout)?;

    // What the log holds, read under the lock, and what it verifies to.
    let mut contents = Vec::new();
    for path in segments(dir)? {
        let bytes = io(&path, fs::read(&path))?;
        contents.push((path, bytes));
    }
    let latest = match &config.witness {
        Some(witness) => witness.latest(&crate::fs::origin_of(&log_id))?,
        None => None,
    };
    let report = verify_segments(
        &log_id,
        contents.iter().map(|(p, b)| (p.as_path(), b.as_slice())),
        latest.as_slice(),
        key,
    );
    let Some(problem) = &report.problem else {
        return Err(Error::Intact);
    };
    let mut sha = digest::Context::new(&digest::SHA256);
    let mut bytes = 0u64;
    for (path, content) in &contents {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        sha.update(name.as_bytes());
        sha.update(&(content.len() as u64).to_be_bytes());
        sha.update(content);
        bytes += content.len() as u64;
    }

    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let aside_root = set_aside_dir(dir);
    let aside = aside_root.join(format!("{stamp}-{log_id}"));
    let relative = aside
        .strip_prefix(dir.parent().unwrap_or(Path::new("")))
        .unwrap_or(&aside)
        .display()
        .to_string();
    let event = Event::LogRestarted {
        previous_log: Text::lossy(&log_id),
        set_aside: Text::lossy(relative),
        lines_verified: report.records,
        verified_head: Text::lossy(hex::encode(report.head)),
        damage: Text::lossy(problem.to_string()),
        segments: contents.len() as u64,
        bytes,
        sha256: Text::lossy(hex::encode(sha.finish())),
    };

    // The new log, complete, beside the old one.
    let new = beside(dir, ".new");
    if new.exists() {
        // Left by a restart that stopped before it set the old log aside.
        io(&new, fs::remove_dir_all(&new))?;
    }
    let log = AuditLog::create(&new, signer, config)?;
    log.writer
        .append_log_record(&Record::of_log(Text::lossy(LOG_ACTOR), event))?;
    drop(log);

    // The old log aside, whole; the new one in its place.
    io(&aside_root, crate::fs::private_dirs(&aside_root))?;
    io(dir, fs::rename(dir, &aside))?;
    sync_dir(&aside_root)?;
    drop(guard);
    io(&new, fs::rename(&new, dir))?;
    sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
    Ok(Restart {
        set_aside: Some(aside),
        previous_log: Some(log_id),
        report: Some(report),
    })
}
