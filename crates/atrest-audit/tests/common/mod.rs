//! Helpers shared by the audit tests.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use atrest_audit::{Event, FileRef, KeyRef, Outcome, Record, Text};

pub fn text(s: &str) -> Text {
    Text::new(s).unwrap()
}

/// A varied record number `i`.
pub fn record(i: u64) -> Record {
    let file = FileRef {
        file: text(&format!("file-{i}")),
        version: 1 + i % 3,
    };
    let event = match i % 5 {
        0 => Event::FileSealed {
            file,
            bytes: i * 1000,
            segments: 1 + i / 10,
        },
        1 => Event::FileKeyReleased {
            file,
            kek: KeyRef {
                key: text("tik-1"),
                version: Some(2),
            },
            principal: text("alice"),
        },
        2 => Event::ReleaseDenied {
            file,
            principal: text("mallory"),
        },
        3 => Event::DataMove {
            source: text("mailbox/src"),
            destination: text("tenant-store"),
            items: i,
            bytes: i * 10,
            failures: 0,
            skipped: 0,
            duration_ms: 5,
        },
        _ => Event::TikRolled {
            tik: KeyRef {
                key: text("tik-1"),
                version: Some(3),
            },
            previous_version: Some(2),
        },
    };
    let outcome = if i % 5 == 2 {
        Outcome::Denied {
            reason: text("not a member"),
        }
    } else {
        Outcome::Success
    };
    Record::new(text("svc:test"), event)
        .tenant(text("tenant-a"))
        .request(text(&format!("req-{i}")))
        .outcome(outcome)
}

/// The single segment of a log with one segment.
pub fn segment_file(dir: &Path) -> PathBuf {
    dir.join("00000001.log")
}

/// The signing key of one test run (the same in every call, so a log can be
/// reopened with it).
pub fn signer() -> atrest_audit::SigningKey {
    static PKCS8: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let pkcs8 = PKCS8.get_or_init(|| {
        atrest_audit::SigningKey::generate("test-signer")
            .unwrap()
            .1
            .to_vec()
    });
    atrest_audit::SigningKey::from_pkcs8("test-signer", pkcs8).unwrap()
}

/// Saves a fresh signing key to `path` (for child processes) and returns it.
pub fn save_signer(path: &Path) -> atrest_audit::SigningKey {
    let (key, pkcs8) = atrest_audit::SigningKey::generate("test-signer").unwrap();
    std::fs::write(path, &pkcs8[..]).unwrap();
    key
}

/// Loads a key saved by [`save_signer`].
pub fn load_signer(path: &Path) -> atrest_audit::SigningKey {
    atrest_audit::SigningKey::from_pkcs8("test-signer", &std::fs::read(path).unwrap()).unwrap()
}

/// Lines of the log in `dir` that are records appended by callers (not the
/// log's own checkpoint and recovery lines).
pub fn caller_entries(dir: &Path) -> Vec<atrest_audit::Entry> {
    atrest_audit::read_entries(dir)
        .unwrap()
        .into_iter()
        .filter(|e| e.actor.as_str() != atrest_audit::LOG_ACTOR)
        .collect()
}
