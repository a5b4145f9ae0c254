//! `mailbox-move` of a tree of small items against `cp -r` of the same
//! tree, side by side in one run, on the disk (a directory of your
//! choice), with every moved item durable: into a deployment directory
//! (the local mode), and through `atrest-serve` over TLS on this machine
//! (`--to`, with the source's journal).
//!
//! ```text
//! cargo build --release -p atrest-cli --bin atrest --bin mailbox-move --bin atrest-serve
//! cargo run --release -p atrest-benches --bin mailbox_throughput -- [ITEMS] [RUNS] [DIR]
//! ```
//!
//! Defaults: 2000 items of 4 KiB, 5 runs, `target/mailbox-bench`. Each run
//! makes fresh deployments and a tenant (not timed), then times in turn
//! `cp -r` of the tree, `cp -r` followed by `sync -f` (a durable copy),
//! `mailbox-move` of the tree into a deployment, and `mailbox-move --to` of
//! it through an `atrest-serve` instance (HTTPS, a certificate from a
//! private CA made here with OpenSSL's command) over another deployment;
//! the report gives the medians, items per second and the ratios to `cp
//! -r` and to the local mode. The binaries are
//! `target/release/{atrest,mailbox-move,atrest-serve}`, or `ATREST_BIN_DIR`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::indexing_slicing
)]

use std::io::BufRead as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atrest_benches::median;

fn run(command: &mut Command) -> (Duration, serde_json::Value) {
    let started = Instant::now();
    let output = command.output().expect("command runs");
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    (elapsed, json)
}

/// `items` files of 4 KiB of varied bytes, 100 to a subdirectory.
fn make_tree(source: &Path, items: u64) {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..items {
        let dir = source.join(format!("folder-{}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        std::fs::write(dir.join(format!("{i}.eml")), bytes).unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let items: u64 = args.first().map_or(2000, |a| a.parse().expect("ITEMS"));
    let runs: usize = args.get(1).map_or(5, |a| a.parse().expect("RUNS"));
    let base = PathBuf::from(args.get(2).map_or("target/mailbox-bench", String::as_str));
    let bins = std::env::var_os("ATREST_BIN_DIR")
        .map_or_else(|| PathBuf::from("target/release"), PathBuf::from);
    let (atrest, mover, serve) = (
        bins.join("atrest"),
        bins.join("mailbox-move"),
        bins.join("atrest-serve"),
    );
    for bin in [&atrest, &mover, &serve] {
        assert!(
            bin.exists(),
            "{} missing: cargo build --release -p atrest-cli --bin atrest --bin mailbox-move --bin atrest-serve",
            bin.display()
        );
    }

    let dir = base.join(format!("run-{}", std::process::id()));
    let source = dir.join("inbox");
    make_tree(&source, items);
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    atrest_test_support::pki::make_ca(&pki);
    let (chain, key) = atrest_test_support::pki::issue(&pki, "server", "bench");
    let (mut cp, mut cp_sync, mut moved, mut remote) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let data = dir.join(format!("data-{i}"));
        let init = |args: &[&str]| {
            let mut command = Command::new(&atrest);
            command.arg("--data").arg(&data).args(args);
            let _ = run(&mut command);
        };
        init(&["init"]);
        init(&["tenant", "create", "contoso"]);

        let copy = dir.join(format!("copy-{i}"));
        cp.push(run(Command::new("cp").arg("-r").arg(&source).arg(&copy)).0);
        let copy = dir.join(format!("copy-sync-{i}"));
        let started = Instant::now();
        let _ = run(Command::new("cp").arg("-r").arg(&source).arg(&copy));
        let _ = run(Command::new("sync").arg("-f").arg(&copy));
        cp_sync.push(started.elapsed());

        let (elapsed, report) = run(Command::new(&mover)
            .arg("--data")
            .arg(&data)
            .args(["--json", "contoso"])
            .arg(&source));
        assert_eq!(report["items"].as_u64(), Some(items), "{report}");
        moved.push(elapsed);

        // Through the service: a deployment of its own, an instance over
        // TLS, the mover's token.
        let served = dir.join(format!("served-{i}"));
        let admin = |args: &[&str]| {
            let mut command = Command::new(&atrest);
            command.arg("--data").arg(&served).args(args);
            let _ = run(&mut command);
        };
        admin(&["init"]);
        admin(&["tenant", "create", "contoso"]);
        let token = Command::new(&serve)
            .arg("--data")
            .arg(&served)
            .args(["token", "add", "mailbox-move@contoso"])
            .output()
            .unwrap();
        assert!(token.status.success(), "{token:?}");
        let token_file = dir.join(format!("token-{i}"));
        std::fs::write(&token_file, &token.stdout).unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut instance = Command::new(&serve)
            .arg("--data")
            .arg(&served)
            .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(&chain)
            .arg("--tls-key")
            .arg(&key)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(instance.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().rsplit(':').next().unwrap().to_owned();
        let (elapsed, report) = run(Command::new(&mover)
            .args([
                "--json",
                "--to",
                &format!("https://localhost:{port}"),
                "--ca-file",
            ])
            .arg(pki.join("ca.pem"))
            .arg("--token-file")
            .arg(&token_file)
            .arg("--journal")
            .arg(dir.join(format!("journal-{i}")))
            .arg("contoso")
            .arg(&source));
        let _ = instance.kill();
        let _ = instance.wait();
        assert_eq!(report["items"].as_u64(), Some(items), "{report}");
        remote.push(elapsed);
    }
    std::fs::remove_dir_all(&dir).unwrap();

    let (cp, cp_sync, moved, remote) = (median(cp), median(cp_sync), median(moved), median(remote));
    let rate = |d: Duration| items as f64 / d.as_secs_f64();
    println!(
        "{items} items of 4 KiB, {runs} runs, on {} (medians)",
        base.display()
    );
    println!(
        "  cp -r                {:>9.1} ms  {:>9.0} items/s",
        cp.as_secs_f64() * 1e3,
        rate(cp)
    );
    println!(
        "  cp -r; sync -f       {:>9.1} ms  {:>9.0} items/s  {:>6.2} x cp -r",
        cp_sync.as_secs_f64() * 1e3,
        rate(cp_sync),
        cp_sync.as_secs_f64() / cp.as_secs_f64()
    );
    println!(
        "  mailbox-move         {:>9.1} ms  {:>9.0} items/s  {:>6.2} x cp -r  (every item durable)",
        moved.as_secs_f64() * 1e3,
        rate(moved),
        moved.as_secs_f64() / cp.as_secs_f64()
    );
    println!(
        "  mailbox-move --to    {:>9.1} ms  {:>9.0} items/s  {:>6.2} x cp -r  {:.2} of the local mode's rate  (through atrest-serve over TLS, journal on the source)",
        remote.as_secs_f64() * 1e3,
        rate(remote),
        remote.as_secs_f64() / cp.as_secs_f64(),
        moved.as_secs_f64() / remote.as_secs_f64()
    );
}
