//! The `mailbox-move` program driven as an operator would: a deployment
//! made with `atrest`, a source directory of items, moves run (and killed,
//! and run again), checking reports, exit codes, the catalog and the audit
//! trail.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use atrest_test_support::{TempDir, seeded as content};

struct Cli {
    data: PathBuf,
}

impl Cli {
    fn new(dir: &Path) -> Self {
        Self {
            data: dir.join("data"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_atrest"))
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "atrest {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    fn mailbox_move(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mailbox-move"));
        command.arg("--data").arg(&self.data);
        command
    }

    /// Runs `mailbox-move --json TENANT SOURCE ARGS`; returns the exit code
    /// and the report.
    fn move_json(&self, tenant: &str, source: &Path, args: &[&str]) -> (i32, serde_json::Value) {
        let output = self
            .mailbox_move()
            .args(["--json", tenant])
            .arg(source)
            .args(args)
            .output()
            .unwrap();
        let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code().unwrap(), report)
    }

    /// Every file version of `tenant`: name to (versions, bytes of the
    /// newest).
    fn versions(&self, tenant: &str) -> BTreeMap<String, (u64, u64)> {
        let mut versions = BTreeMap::new();
        for listing in self.json(&["ls", tenant, "--versions"]).as_array().unwrap() {
            let entry = versions
                .entry(listing["name"].as_str().unwrap().to_owned())
                .or_insert((0, 0));
            entry.0 += 1;
            entry.1 = listing["bytes"].as_u64().unwrap();
        }
        versions
    }

    /// The newest audit record.
    fn last_event(&self) -> serde_json::Value {
        self.json(&["audit", "show", "--last", "1"])[0]["event"].clone()
    }
}

/// A deployment with tenant `contoso`.
fn deployment(dir: &TempDir) -> Cli {
    let cli = Cli::new(dir.path());
    cli.ok(&["init"]);
    cli.ok(&["tenant", "create", "contoso"]);
    cli
}

/// `count` items of varied sizes (some empty, some several segments) in a
/// few subdirectories; returns the source directory and each item's
/// expected file name and content.
fn mailbox(dir: &Path, count: u64) -> (PathBuf, BTreeMap<String, Vec<u8>>) {
    let source = dir.join("inbox");
    let mut items = BTreeMap::new();
    for i in 0..count {
        let sub = format!("folder-{}", i % 7);
        std::fs::create_dir_all(source.join(&sub)).unwrap();
        let len = match i % 50 {
            0 => 0,
            1 => 200_000,
            n => usize::try_from(n * 97).unwrap(),
        };
        let bytes = content(len, i);
        std::fs::write(source.join(&sub).join(format!("{i}.eml")), &bytes).unwrap();
        let _ = items.insert(format!("mailbox/inbox/{sub}/{i}.eml"), bytes);
    }
    (source, items)
}

/// The catalog holds every item exactly once (one version each), with its
/// size; some are read back and compared; the blob store holds one blob
/// per item and nothing else; the audit trail verifies.
fn assert_moved_once(cli: &Cli, items: &BTreeMap<String, Vec<u8>>) {
    let versions = cli.versions("contoso");
    let expected: BTreeMap<String, (u64, u64)> = items
        .iter()
        .map(|(name, bytes)| (name.clone(), (1, bytes.len() as u64)))
        .collect();
    assert_eq!(versions, expected);
    for (name, bytes) in items.iter().step_by(37) {
        assert_eq!(&cli.run(&["get", "contoso", name]).stdout, bytes, "{name}");
    }
    let blobs = std::fs::read_dir(cli.data.join("blobs"))
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .count();
    assert_eq!(blobs, items.len(), "one blob per item");
    let output = cli.run(&["audit", "verify"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn mailbox_move_streams_items_and_audits_the_move() {
    let dir = TempDir::new("mailbox");
    let cli = deployment(&dir);
    let source = dir.path().join("inbox");
    std::fs::create_dir_all(source.join("2026")).unwrap();
    std::fs::write(source.join("a.eml"), b"Subject: hello").unwrap();
    std::fs::write(source.join("2026/b.eml"), content(150_000, 5)).unwrap();
    let (code, report) = cli.move_json("contoso", &source, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        (
            report["items"].as_u64(),
            report["bytes"].as_u64(),
            report["failures"].as_u64()
        ),
        (Some(2), Some(150_014), Some(0))
    );
    let event = cli.last_event();
    assert_eq!(event["type"], "data_move");
    assert_eq!(
        (event["items"].as_u64(), event["failures"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(
        cli.run(&["get", "contoso", "mailbox/inbox/2026/b.eml"])
            .stdout,
        content(150_000, 5)
    );
    // An unknown tenant: nothing moves, exit status 3 (not found), as for
    // every program of the package; the error named as the CLI names it.
    let output = cli
        .mailbox_move()
        .arg("nobody")
        .arg(&source)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "mailbox-move: no tenant named \"nobody\""
    );
}

#[test]
fn mailbox_move_skips_links_and_reports_unreadable_directories() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = TempDir::new("mailbox-links");
    let cli = Cli::new(dir.path());
    cli.ok(&["init"]);
    cli.ok(&["tenant", "create", "contoso"]);
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), b"not part of the mailbox").unwrap();
    let source = dir.path().join("inbox");
    std::fs::create_dir_all(source.join("locked")).unwrap();
    std::fs::write(source.join("a.eml"), b"Subject: hello").unwrap();
    std::fs::write(source.join("locked/b.eml"), b"Subject: locked").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), source.join("link.eml")).unwrap();
    std::os::unix::fs::symlink(&outside, source.join("linked-dir")).unwrap();
    let locked = source.join("locked");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Privileged users read it anyway; then only the links are checked.
    let locked_out = std::fs::read_dir(&locked).is_err();

    let output = Command::new(env!("CARGO_BIN_EXE_mailbox-move"))
        .arg("--data")
        .arg(&cli.data)
        .args(["--json", "contoso"])
        .arg(&source)
        .output()
        .unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let skipped: Vec<_> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["item"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(skipped, ["link.eml", "linked-dir"], "{report}");
    let listing = cli.json(&["ls", "contoso"]);
    let names: Vec<_> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("secret") || n.contains("link"))
    );
    if locked_out {
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(report["items"], 1);
        assert_eq!(report["failures"], 1);
        assert_eq!(report["failed"][0]["item"], "locked");
        assert_eq!(names, ["mailbox/inbox/a.eml"]);
    } else {
        assert_eq!(output.status.code(), Some(0));
        assert_eq!(report["items"], 2);
        assert_eq!(names, ["mailbox/inbox/a.eml", "mailbox/inbox/locked/b.eml"]);
    }
    let entries = cli.json(&["audit", "show", "--last", "1"]);
    assert_eq!(entries[0]["event"]["type"], "data_move");
    assert_eq!(entries[0]["event"]["items"], report["items"]);
}

#[test]
fn mailbox_move_reports_each_failed_item_with_its_path_and_goes_on() {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::PermissionsExt as _;

    let dir = TempDir::new("mailbox-failures");
    let cli = deployment(&dir);
    let source = dir.path().join("inbox");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("a.eml"), b"Subject: a").unwrap();
    std::fs::write(source.join("sub/c.eml"), b"Subject: c").unwrap();
    // A name that is not UTF-8 cannot become a file name as it is (and
    // must not be stored under a look-alike with U+FFFD).
    let bad = source.join(std::ffi::OsStr::from_bytes(b"bad\xFF.eml"));
    std::fs::write(&bad, b"Subject: bad").unwrap();
    // An item that cannot be read (unless privileged).
    let locked = source.join("sub/locked.eml");
    std::fs::write(&locked, b"Subject: locked").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let locked_out = std::fs::File::open(&locked).is_err();

    let (code, report) = cli.move_json("contoso", &source, &[]);
    let failed: Vec<(String, String)> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["item"].as_str().unwrap().to_owned(),
                f["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(code, 1, "{report}");
    assert_eq!(failed[0].0, "bad\\xFF.eml", "{report}");
    assert!(failed[0].1.contains("UTF-8"), "{report}");
    let moved = if locked_out {
        assert_eq!(failed.len(), 2, "{report}");
        assert_eq!(failed[1].0, "sub/locked.eml", "{report}");
        3 - 1
    } else {
        assert_eq!(failed.len(), 1, "{report}");
        3
    };
    assert_eq!(report["items"], moved);
    assert_eq!(report["failures"].as_u64(), Some(failed.len() as u64));
    let names: Vec<String> = cli.versions("contoso").into_keys().collect();
    assert!(names.iter().all(|n| !n.contains('\u{FFFD}')), "{names:?}");
    assert!(names.contains(&"mailbox/inbox/sub/c.eml".to_owned()));

    // The same failures in the text report, with their paths.
    let output = cli
        .mailbox_move()
        .arg("contoso")
        .arg(&source)
        .output()
        .unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1));
    assert!(text.contains("failed: bad\\xFF.eml: "), "{text}");
    if locked_out {
        assert!(text.contains("failed: sub/locked.eml: "), "{text}");
    }
    let event = cli.last_event();
    assert_eq!(event["type"], "data_move");
    assert_eq!(event["failures"].as_u64(), Some(failed.len() as u64));
}

#[test]
fn mailbox_move_run_again_skips_what_was_moved_and_audits_the_statistics() {
    let dir = TempDir::new("mailbox-resume");
    let cli = deployment(&dir);
    let (source, mut items) = mailbox(dir.path(), 300);
    std::os::unix::fs::symlink("/etc/passwd", source.join("passwd.eml")).unwrap();

    let (code, first) = cli.move_json("contoso", &source, &[]);
    assert_eq!(code, 0, "{first}");
    assert_eq!(first["items"], 300);
    let event = cli.last_event();
    assert_eq!(event["type"], "data_move");
    assert_eq!(
        [&event["items"], &event["failures"], &event["skipped"]],
        [300, 0, 1]
    );
    assert_eq!(event["bytes"], first["bytes"]);
    assert!(event["duration_ms"].is_u64());

    // Again: nothing to do.
    let (code, again) = cli.move_json("contoso", &source, &[]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["items"], 0);
    assert_eq!(again["already_moved"], 300);
    let event = cli.last_event();
    assert_eq!(
        [&event["items"], &event["bytes"], &event["skipped"]],
        [0, 0, 301]
    );
    assert_moved_once(&cli, &items);

    // A new item and a changed one are moved; the rest is skipped.
    let added = source.join("folder-1/new.eml");
    std::fs::write(&added, b"Subject: new").unwrap();
    let _ = items.insert(
        "mailbox/inbox/folder-1/new.eml".into(),
        b"Subject: new".to_vec(),
    );
    let changed = source.join("folder-2/2.eml");
    std::fs::write(&changed, b"Subject: changed").unwrap();
    let (code, third) = cli.move_json("contoso", &source, &[]);
    assert_eq!(code, 0, "{third}");
    assert_eq!(
        (&third["items"], &third["already_moved"]),
        (&2.into(), &299.into())
    );
    let versions = cli.versions("contoso");
    assert_eq!(versions["mailbox/inbox/folder-2/2.eml"], (2, 16));
    assert_eq!(versions["mailbox/inbox/folder-1/new.eml"], (1, 12));
}

#[test]
fn mailbox_move_killed_at_any_point_then_run_again_stores_each_item_once() {
    let dir = TempDir::new("mailbox-kill");
    let cli = deployment(&dir);
    let (source, items) = mailbox(dir.path(), 1200);
    // Kill runs at different points: while walking, while batches are in
    // flight, near the end; each later run resumes what the earlier left.
    let mut killed = 0;
    for delay_ms in [5, 40, 90, 150, 220, 300, 400, 550] {
        let mut child = cli
            .mailbox_move()
            .args(["--json", "--batch", "16", "contoso"])
            .arg(&source)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        child.kill().unwrap_or(()); // SIGKILL
        let _ = child.wait().unwrap();
    }
    assert!(killed > 0, "no run was killed: make the mailbox larger");
    let (code, last) = cli.move_json("contoso", &source, &[]);
    assert_eq!(code, 0, "{last}");
    assert_eq!(last["failures"], 0, "{last}");
    assert_moved_once(&cli, &items);
    // And once more: everything is there, nothing is moved.
    let (_, again) = cli.move_json("contoso", &source, &[]);
    assert_eq!(
        (&again["items"], &again["already_moved"]),
        (&0.into(), &1200.into())
    );
}

#[test]
fn mailbox_moves_of_one_source_at_once_store_each_item_once() {
    let dir = TempDir::new("mailbox-concurrent");
    let cli = deployment(&dir);
    let (source, items) = mailbox(dir.path(), 400);
    let runs: Vec<_> = (0..3)
        .map(|_| {
            cli.mailbox_move()
                .args(["--json", "contoso"])
                .arg(&source)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut moved = 0;
    for run in runs {
        let output = run.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        moved += report["items"].as_u64().unwrap();
    }
    assert_eq!(moved, 400);
    assert_moved_once(&cli, &items);
}

/// An item rewritten while it is read is not stored half of one version
/// and half of another: it is reported as changed, and moved whole by the
/// next run once it is still. `--remove-source` makes it a move: each item
/// is removed from the source once its version is durable.
#[test]
fn an_item_that_changes_while_read_is_not_stored_torn() {
    let dir = TempDir::new("mailbox-torn");
    let cli = Cli::new(dir.path());
    cli.ok(&["init"]);
    cli.ok(&["tenant", "create", "contoso"]);
    let source = dir.path().join("box");
    std::fs::create_dir(&source).unwrap();
    let (a, b) = (content(6 << 20, 1), content(6 << 20, 2));
    let busy = source.join("busy.eml");
    std::fs::write(&busy, &a).unwrap();
    std::fs::write(source.join("still.eml"), b"a quiet item").unwrap();

    // A writer that rewrites the item, whole, one version after the other,
    // in place, for as long as the move runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, busy, a, b) = (stop.clone(), busy.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            use std::io::{Seek as _, Write as _};
            let mut file = std::fs::OpenOptions::new().write(true).open(&busy).unwrap();
            let mut turn = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                file.rewind().unwrap();
                file.write_all(if turn.is_multiple_of(2) { &b } else { &a })
                    .unwrap();
                turn += 1;
            }
        })
    };
    let (code, report) = cli.move_json("contoso", &source, &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["items"], 1, "{report}");
    assert_eq!(report["failed"][0]["item"], "busy.eml", "{report}");
    assert!(
        report["failed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("changed while it was read"),
        "{report}"
    );
    assert_eq!(report["tenant"], "contoso");
    assert_eq!(report["prefix"], "mailbox/box/");
    // Nothing torn was stored under its name.
    let get = cli.run(&["get", "contoso", "mailbox/box/busy.eml", "-o", "/dev/null"]);
    assert_eq!(get.status.code(), Some(3), "{get:?}");

    // Still now: the next run moves it whole, and removes the source.
    let now = std::fs::read(&busy).unwrap();
    assert!(now == a || now == b);
    let (code, report) = cli.move_json("contoso", &source, &["--remove-source"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["items"], 1, "{report}");
    // The item the first run moved is skipped (and stays: it was moved
    // without --remove-source).
    assert_eq!(report["already_moved"], 1, "{report}");
    assert_eq!(report["removed"], 1, "{report}");
    assert!(!busy.exists());
    assert!(source.join("still.eml").exists());
    let got = cli.run(&["get", "contoso", "mailbox/box/busy.eml"]);
    assert!(got.stdout == now, "stored whole, as it was when still");
}

/// A hard link to a file outside the mailbox, and a file system mounted
/// on a folder inside it (as root, where mounts are allowed): both are left
/// alone and reported as skipped; nothing of them is stored.
#[test]
fn mailbox_move_stays_beneath_its_directory_through_hard_links_and_mounts() {
    let dir = TempDir::new("mailbox-beneath");
    let cli = deployment(&dir);
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), b"not part of the mailbox").unwrap();
    let source = dir.path().join("inbox");
    std::fs::create_dir_all(source.join("mounted")).unwrap();
    std::fs::write(source.join("a.eml"), b"Subject: hello").unwrap();
    std::fs::hard_link(outside.join("secret.txt"), source.join("hard.eml")).unwrap();
    let mount_point = source.join("mounted");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mount_point)
        .status()
        .is_ok_and(|status| status.success());
    struct Unmount(Option<PathBuf>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            if let Some(path) = self.0.take() {
                let _ = Command::new("umount").arg(&path).status();
            }
        }
    }
    let _unmount = Unmount(mounted.then(|| mount_point.clone()));
    if mounted {
        std::fs::write(mount_point.join("other.eml"), b"on another file system").unwrap();
    }

    let output = Command::new(env!("CARGO_BIN_EXE_mailbox-move"))
        .arg("--data")
        .arg(&cli.data)
        .args(["--json", "contoso"])
        .arg(&source)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let skipped: Vec<(String, String)> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["item"].as_str().unwrap().to_owned(),
                s["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mut expected = vec!["hard.eml"];
    if mounted {
        expected.push("mounted");
    }
    assert_eq!(
        skipped
            .iter()
            .map(|(item, _)| item.as_str())
            .collect::<Vec<_>>(),
        expected,
        "{report}"
    );
    assert!(skipped[0].1.contains("hard links"), "{report}");
    if mounted {
        assert!(skipped[1].1.contains("another file system"), "{report}");
    }
    let names: Vec<String> = cli
        .json(&["ls", "contoso"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["mailbox/inbox/a.eml"]);
    // The file outside is untouched.
    assert_eq!(
        std::fs::read(outside.join("secret.txt")).unwrap(),
        b"not part of the mailbox"
    );
}
