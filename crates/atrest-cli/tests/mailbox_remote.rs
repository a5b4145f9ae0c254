//! `mailbox-move --to`: a mailbox of 5,000 items moved through
//! `atrest-serve` over TLS, the mover killed and the service killed in the
//! middle, each resumed; then the source's journal and the service's trail
//! checked against each other by `atrest audit check-move` (every item
//! once, the statistics equal), and every item stored once. A source item
//! that changes while it is sent is detected and stored only once still.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod service_support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use atrest_cli::moves::{Journal, journal_moves};
use atrest_test_support::pki::{issue, make_ca};
use atrest_test_support::{TempDir, seeded as content};
use service_support::{Instance, atrest, token};

/// The service over TLS on the deployment `data`.
fn serve(data: &Path, pki: &Path, name: &str) -> (Instance, String) {
    let instance = Instance::start(
        data,
        name,
        &[],
        &[
            "--tls-cert",
            pki.join("server.pem").to_str().unwrap(),
            "--tls-key",
            pki.join("server.key").to_str().unwrap(),
        ],
    );
    let port = instance.addr.rsplit(':').next().unwrap().to_owned();
    (instance, format!("https://localhost:{port}"))
}

fn mover(service: &str, pki: &Path, token: &Path, journal: &Path, source: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mailbox-move"));
    command
        .args(["--json", "--to", service, "--ca-file"])
        .arg(pki.join("ca.pem"))
        .arg("--token-file")
        .arg(token)
        .arg("--journal")
        .arg(journal)
        .args(["contoso"])
        .arg(source)
        .args(["--mailbox", "alice"]);
    command
}

/// Item lines in the journal so far.
fn journal_items(journal: &Path) -> usize {
    Journal::entries(journal)
        .map(|entries| {
            journal_moves(&entries)
                .iter()
                .map(|(_, m)| m.items.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Waits until the journal holds at least `lines` item lines, or `child`
/// ended (`false` then).
fn wait_for(journal: &Path, lines: usize, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if journal_items(journal) >= lines {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn report(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("not a report: {output:?}"))
}

fn check_move(data: &Path, journal: &Path, key: &str, move_id: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_atrest"));
    command
        .arg("--data")
        .arg(data)
        .args(["--json", "audit", "check-move", "--journal"])
        .arg(journal)
        .args(["--journal-key", key]);
    if let Some(id) = move_id {
        command.args(["--move", id]);
    }
    command.output().unwrap()
}

struct World {
    dir: TempDir,
    data: PathBuf,
    pki: PathBuf,
    token: PathBuf,
}

fn world(name: &str) -> World {
    let dir = TempDir::new(name);
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    make_ca(&pki);
    let _ = issue(&pki, "server", "mailbox");
    let data = dir.path().join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "contoso"]);
    let token_path = dir.path().join("mover.token");
    std::fs::write(&token_path, token(&data, "mailbox-move@contoso")).unwrap();
    std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    World {
        dir,
        data,
        pki,
        token: token_path,
    }
}

#[test]
fn a_move_through_the_service_survives_kills_on_both_sides_and_the_trails_agree() {
    let world = world("mailbox-remote");
    let source = world.dir.path().join("alice");
    let items = 5_000;
    for i in 0..items {
        let folder = source.join(format!("folder-{}", i % 20));
        std::fs::create_dir_all(&folder).unwrap();
        // Mostly small messages, every 500th an attachment of 300 KB.
        let len = if i % 500 == 7 {
            300_000
        } else {
            1_000 + (i * 37) % 6_000
        };
        std::fs::write(folder.join(format!("{i:05}.eml")), content(len, i as u64)).unwrap();
    }
    std::os::unix::fs::symlink("/etc/passwd", source.join("link.eml")).unwrap();
    let journal = world.dir.path().join("journal");
    let (mut service, url) = serve(&world.data, &world.pki, "mailbox-a");

    // The mover killed in the middle.
    let mut first = mover(&url, &world.pki, &world.token, &journal, &source)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(&journal, 600, &mut first),
        "the move ended before it was killed"
    );
    first.kill().unwrap();
    let said = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&said.stderr);
    let key = stderr
        .split("its verifying key (keep it elsewhere): ")
        .nth(1)
        .unwrap_or_else(|| panic!("no verifying key printed: {stderr}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let after_first = journal_items(&journal);
    assert!(after_first < items, "{after_first}");

    // Resumed, and the service killed in the middle of that.
    let mut second = mover(&url, &world.pki, &world.token, &journal, &source)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(&journal, after_first + 600, &mut second),
        "the move ended before the service was killed"
    );
    service.kill();
    let second = second.wait_with_output().unwrap();
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    let second = report(&second);
    assert!(second["failures"].as_u64().unwrap() > 0, "{second}");
    assert!(second.get("move_stats").is_none(), "{second}");

    // The service back (another instance, another port), the move resumed
    // to its end.
    drop(service);
    let (_service, url) = serve(&world.data, &world.pki, "mailbox-b");
    let third = mover(&url, &world.pki, &world.token, &journal, &source)
        .output()
        .unwrap();
    assert_eq!(third.status.code(), Some(0), "{third:?}");
    let third = report(&third);
    let stats = &third["move_stats"];
    assert_eq!(stats["items"], items as u64, "{third}");
    assert_eq!(third["skipped"].as_array().unwrap().len(), 1, "{third}");
    let move_id = third["move_id"].as_str().unwrap().to_owned();

    // Every item stored once: one version of each name (`ls` lists every
    // version), and no other. (An upload cut short by a kill may have
    // taken a version number it never committed.)
    let listed = atrest(&world.data, &["--json", "ls", "contoso"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let listed = listed.as_array().unwrap();
    let names: std::collections::BTreeSet<_> =
        listed.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), names.len(), "an item stored twice");
    assert_eq!(names.len(), items, "items lost");

    // The two trails agree, item by item, and in their statistics.
    let checked = check_move(&world.data, &journal, &key, None);
    assert_eq!(checked.status.code(), Some(0), "{checked:?}");
    let checked = report(&checked);
    assert_eq!(checked["report"]["matched"], items as u64, "{checked}");
    assert_eq!(
        checked["report"]["service_seals"].as_u64().unwrap()
            + checked["report"]["seal_records_lost"].as_u64().unwrap(),
        items as u64,
        "{checked}"
    );
    assert_eq!(
        checked["report"]["journal_stats"], checked["report"]["service_stats"],
        "{checked}"
    );
    assert_eq!(checked["report"]["move_id"], move_id);
    // Against another deployment's trail (which sealed nothing of it),
    // or with another key, they do not.
    let other = world.dir.path().join("other");
    atrest(&other, &["init"]);
    atrest(&other, &["tenant", "create", "contoso"]);
    let disagree = check_move(&other, &journal, &key, None);
    assert_eq!(disagree.status.code(), Some(5), "{disagree:?}");
    let wrong_key = check_move(&world.data, &journal, "ed25519:AAAA", None);
    assert_ne!(wrong_key.status.code(), Some(0), "{wrong_key:?}");

    // Run again: nothing to send, a new move of nothing is not made.
    let again = mover(&url, &world.pki, &world.token, &journal, &source)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    let again = report(&again);
    assert_eq!(again["items"], 0, "{again}");
    assert_eq!(again["already_moved"], items as u64, "{again}");
}

#[test]
fn an_item_that_changes_while_it_is_sent_is_not_stored() {
    let world = world("mailbox-remote-changing");
    let source = world.dir.path().join("bob");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("still.eml"), content(5_000, 1)).unwrap();
    let growing = source.join("growing.mbox");
    std::fs::write(&growing, content(48 << 20, 2)).unwrap();
    let journal = world.dir.path().join("journal");
    let (_service, url) = serve(&world.data, &world.pki, "mailbox-changing");

    // Appended to while the move runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, growing) = (stop.clone(), growing.clone());
        std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&growing)
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::io::Write::write_all(&mut file, b"x").unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let changing = mover(&url, &world.pki, &world.token, &journal, &source)
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    assert_eq!(changing.status.code(), Some(1), "{changing:?}");
    let changing = report(&changing);
    let failed = changing["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{changing}");
    assert_eq!(failed[0]["item"], "growing.mbox");
    assert!(
        failed[0]["reason"].as_str().unwrap().contains("changed"),
        "{changing}"
    );
    let listed = atrest(&world.data, &["--json", "ls", "contoso"]);
    assert!(!listed.contains("growing.mbox"), "{listed}");
    // An incomplete move does not check.
    let move_id = changing["move_id"].as_str().unwrap();
    let entries = Journal::entries(&journal).unwrap();
    assert!(journal_moves(&entries)[0].1.finished.is_none());
    let key_file = Command::new(env!("CARGO_BIN_EXE_atrest"))
        .arg("--data")
        .arg(&world.data)
        .args(["audit", "check-move", "--journal"])
        .arg(&journal)
        .args(["--move", move_id])
        .output()
        .unwrap();
    assert_eq!(key_file.status.code(), Some(5), "{key_file:?}");

    // Still now: moved, once.
    let still = mover(&url, &world.pki, &world.token, &journal, &source)
        .output()
        .unwrap();
    assert_eq!(still.status.code(), Some(0), "{still:?}");
    let listed = atrest(&world.data, &["--json", "ls", "contoso"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    // (The upload cut short took a version number it never committed.)
    let names: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["mailbox/alice/growing.mbox", "mailbox/alice/still.eml"],
        "each once"
    );
}

/// Two movers at once on one journal and one source: the second waits for
/// the first to let go of the journal, then finds every item moved; each
/// item is stored once, and the trails agree.
#[test]
fn two_movers_at_once_on_one_journal_store_each_item_once() {
    let world = world("mailbox-remote-twice");
    let source = world.dir.path().join("carol");
    std::fs::create_dir(&source).unwrap();
    for i in 0..400_u64 {
        std::fs::write(source.join(format!("{i:03}.eml")), content(3_000, i)).unwrap();
    }
    let journal = world.dir.path().join("journal");
    let (_service, url) = serve(&world.data, &world.pki, "mailbox-twice");
    let movers: Vec<Child> = (0..2)
        .map(|_| {
            mover(&url, &world.pki, &world.token, &journal, &source)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let reports: Vec<serde_json::Value> = movers
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            assert_eq!(output.status.code(), Some(0), "{output:?}");
            report(&output)
        })
        .collect();
    let moved: u64 = reports.iter().map(|r| r["items"].as_u64().unwrap()).sum();
    let already: u64 = reports
        .iter()
        .map(|r| r["already_moved"].as_u64().unwrap())
        .sum();
    assert_eq!((moved, already), (400, 400), "{reports:?}");
    let listed = atrest(&world.data, &["--json", "ls", "contoso"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        400,
        "an item stored twice"
    );
    let key = Journal::open(&journal).unwrap().0.verifying_key();
    let checked = check_move(&world.data, &journal, &key, None);
    assert_eq!(checked.status.code(), Some(0), "{checked:?}");
}
