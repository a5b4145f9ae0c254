//! A damaged log that `open` refuses is set aside whole by `restart`, and a
//! new log begins with a signed line saying where it went and what was
//! wrong; a log that verifies, or a key that is not the signer's, is
//! refused; a restart cut between its two renames is finished.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use atrest_audit::log::restart::{finish_restart, restart, set_aside_dir};
use atrest_audit::{
    AuditLog, DirectoryWitness, Error, Event, LogConfig, read_entries, verify, verify_witnessed,
};
use atrest_test_support::TempDir;
use common::{record, segment_file, signer};

/// Every file under `dir`, by path relative to it, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                found.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

fn config(witness: &Path) -> LogConfig {
    LogConfig {
        witness: Some(Arc::new(DirectoryWitness::new(witness))),
        ..LogConfig::default()
    }
}

#[test]
fn a_damaged_log_is_set_aside_whole_and_a_new_one_records_it() {
    let root = TempDir::new("restart");
    let dir = root.join("audit");
    let witness = root.join("witness");
    let key = signer().verifying_key();
    let log = AuditLog::create(&dir, signer(), config(&witness)).unwrap();
    for i in 0..12 {
        log.append(&record(i)).unwrap();
    }
    let old_id = log.log_id().to_owned();
    drop(log);

    // A log that verifies is not set aside.
    assert!(matches!(
        restart(&dir, signer(), config(&witness), &key),
        Err(Error::Intact)
    ));

    // One byte of an early line changed: the log no longer opens.
    let segment = segment_file(&dir);
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.iter().position(|&b| b == b'\n').unwrap() + 40;
    bytes[at] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    assert!(AuditLog::open(&dir, signer(), config(&witness)).is_err());
    let damaged = files(&dir);

    // A key that is not the signer's is refused, and nothing moves.
    let (other, _) = atrest_audit::SigningKey::generate("other").unwrap();
    assert!(matches!(
        restart(&dir, signer(), config(&witness), &other.verifying_key()),
        Err(Error::Malformed { .. })
    ));
    assert_eq!(files(&dir), damaged);

    let done = restart(&dir, signer(), config(&witness), &key).unwrap();
    let aside = done.set_aside.unwrap();
    assert!(
        aside.starts_with(set_aside_dir(&dir)),
        "{}",
        aside.display()
    );
    assert_eq!(done.previous_log.as_deref(), Some(old_id.as_str()));
    // Every byte of the damaged log is kept as it was.
    assert_eq!(files(&aside), damaged);

    // The new log opens, verifies against the witness, and begins with the
    // record of the restart.
    let (log, _) = AuditLog::open(&dir, signer(), config(&witness)).unwrap();
    assert_ne!(log.log_id(), old_id);
    log.append(&record(99)).unwrap();
    drop(log);
    let (report, _) = verify_witnessed(&dir, &key, &DirectoryWitness::new(&witness)).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    let entries = read_entries(&dir).unwrap();
    // Its first record, after the checkpoint every new log begins with.
    assert!(matches!(entries[0].event, Event::Checkpoint { .. }));
    let Event::LogRestarted {
        previous_log,
        set_aside,
        lines_verified,
        damage,
        segments,
        bytes: set_aside_bytes,
        sha256,
        ..
    } = &entries[1].event
    else {
        panic!("{:?}", entries[1]);
    };
    assert_eq!(previous_log.as_str(), old_id);
    assert!(
        set_aside.as_str().starts_with("audit.set-aside/"),
        "{set_aside:?}"
    );
    // Line 1 verified; line 2 is the damaged one.
    assert_eq!(*lines_verified, 1);
    assert!(damage.as_str().contains("line 2"), "{damage:?}");
    assert_eq!(*segments, 1);
    assert_eq!(*set_aside_bytes, bytes.len() as u64);
    assert_eq!(sha256.as_str().len(), 64);
    // The old log, where it was set aside, still reports its damage.
    let old = verify(&aside, &[], &key).unwrap();
    assert!(old.problem.is_some());
}

#[test]
fn a_restart_cut_between_its_renames_is_finished() {
    let root = TempDir::new("restart-cut");
    let dir = root.join("audit");
    let new = root.join("audit.new");
    let log = AuditLog::create(&new, signer(), LogConfig::default()).unwrap();
    log.append(&record(1)).unwrap();
    drop(log);
    // The old log was set aside; the new one not yet renamed.
    assert!(finish_restart(&dir).unwrap());
    assert!(!new.exists());
    let (log, _) = AuditLog::open(&dir, signer(), LogConfig::default()).unwrap();
    drop(log);
    assert!(
        verify(&dir, &[], &signer().verifying_key())
            .unwrap()
            .is_ok()
    );
    // Nothing to finish now.
    assert!(!finish_restart(&dir).unwrap());
}
