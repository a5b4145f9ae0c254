//! Load on the upload service `atrest-serve`, one and two instances, side by
//! side with `plain_server` (the same HTTP stack moving the same bytes to
//! files, unencrypted), measured with `wrk` (Debian package `wrk`).
//!
//! ```text
//! cargo build --release -p atrest-cli --bin atrest --bin atrest-serve \
//!     -p atrest-benches --bin plain_server --bin service_report
//! target/release/service_report [SECONDS] [SOAK_SECONDS]
//! ```
//!
//! Defaults: 10 s per throughput row, 60 s for the soak. Every instance
//! runs on the embedded defaults (SQLite catalog and key store, local blob
//! directory with every blob and record flushed to disk before the `201`),
//! sharing one deployment directory; `wrk` runs on the same machine.
//!
//! Rows: 64 MiB PUT and GET throughput (2 connections per instance), 4 KiB
//! PUTs per second with p50/p99 latency under 16 and under 64 connections
//! (shared out among the instances), and a soak of 64 connections of 4 KiB
//! PUTs with the errors counted and the instances' peak resident memory
//! (`VmHWM`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::panic
)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const LARGE: usize = 64 << 20;
const SMALL: usize = 4 << 10;

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().join(name)
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(mut command: Command, log: &Path) -> Self {
        command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap());
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .rsplit_once(' ')
            .map(|(_, url)| url.to_owned())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Self { child, url }
    }

    /// Peak resident memory so far, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one `wrk` run measured.
#[derive(Debug, Default, Clone, Copy)]
struct Load {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    requests: u64,
}

fn millis(text: &str) -> f64 {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * scale
}

fn parse_wrk(output: &str) -> Load {
    let mut load = Load::default();
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => load.requests_per_s = n.parse().unwrap_or(0.0),
            ["50%", v] => load.p50_ms = millis(v),
            ["99%", v] => load.p99_ms = millis(v),
            [n, "requests", "in", ..] => load.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => load.errors += n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                load.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    load
}

/// Runs one `wrk` per URL at once, each with `connections`; sums them.
fn wrk(urls: &[String], script: &Path, connections: u32, seconds: u64) -> Load {
    let children: Vec<Child> = urls
        .iter()
        .map(|url| {
            Command::new("wrk")
                .args(["-t", "1", "-c", &connections.to_string()])
                .args([
                    "-d",
                    &format!("{seconds}s"),
                    "--timeout",
                    "60s",
                    "--latency",
                ])
                .arg("-s")
                .arg(script)
                .arg(url)
                .stdout(Stdio::piped())
                .spawn()
                .expect("wrk (apt-get install wrk)")
        })
        .collect();
    let loads: Vec<Load> = children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            parse_wrk(&String::from_utf8_lossy(&output.stdout))
        })
        .collect();
    Load {
        requests_per_s: loads.iter().map(|l| l.requests_per_s).sum(),
        // Latency of the first instance's run (they run alike).
        p50_ms: loads[0].p50_ms,
        p99_ms: loads[0].p99_ms,
        errors: loads.iter().map(|l| l.errors).sum(),
        requests: loads.iter().map(|l| l.requests).sum(),
    }
}

fn script(
    dir: &Path,
    name: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Path>,
) -> PathBuf {
    let body = body.map_or_else(String::new, |file| {
        format!(
            "local f = assert(io.open(\"{}\", \"rb\"))\nwrk.body = f:read(\"*all\")\nf:close()\n",
            file.display()
        )
    });
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n")
    };
    let text = format!(
        "wrk.method = \"{method}\"\n{auth}{body}local n = 0\nrequest = function()\n  n = n + 1\n  return wrk.format(nil, \"{path}\" .. \"{}\")\nend\n",
        if path.ends_with('/') {
            "\" .. n .. \""
        } else {
            ""
        }
    );
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(10, |a| a.parse().unwrap());
    let soak: u64 = args.next().map_or(60, |a| a.parse().unwrap());
    let work = std::env::temp_dir().join(format!("atrest-service-report-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let data = work.join("data");
    let atrest = |args: &[&str]| {
        run(Command::new(bin("atrest"))
            .arg("--data")
            .arg(&data)
            .args(args))
    };
    atrest(&["init"]);
    atrest(&["tenant", "create", "bench"]);
    let token = run(Command::new(bin("atrest-serve"))
        .arg("--data")
        .arg(&data)
        .args(["token", "add", "load@bench"]))
    .trim()
    .to_owned();
    let large = work.join("large.bin");
    let small = work.join("small.bin");
    std::fs::write(&large, atrest_test_support::seeded(LARGE, 1)).unwrap();
    std::fs::write(&small, atrest_test_support::seeded(SMALL, 2)).unwrap();

    let service = |name: &str| {
        let mut command = Command::new(bin("atrest-serve"));
        command.arg("--data").arg(&data).args([
            "serve",
            "--plain-http",
            "--listen",
            "127.0.0.1:0",
            "--actor",
            name,
        ]);
        Server::start(command, &work.join(format!("{name}.log")))
    };
    let plain = {
        let mut command = Command::new(bin("plain_server"));
        command.arg(work.join("plain"));
        Server::start(command, &work.join("plain.log"))
    };
    let a = service("service-a");
    let b = service("service-b");

    let files = "/v1/tenants/bench/files";
    let scripts = |label: &str, prefix: &str, token: &str| {
        (
            script(
                &work,
                &format!("{label}-put-large.lua"),
                "PUT",
                &format!("{prefix}large-put"),
                token,
                Some(&large),
            ),
            script(
                &work,
                &format!("{label}-get-large.lua"),
                "GET",
                &format!("{prefix}large"),
                token,
                None,
            ),
            script(
                &work,
                &format!("{label}-put-small.lua"),
                "PUT",
                &format!("{prefix}small/"),
                token,
                Some(&small),
            ),
        )
    };
    let (svc_put_large, svc_get_large, svc_put_small) =
        scripts("service", &format!("{files}/"), &token);
    let (plain_put_large, plain_get_large, plain_put_small) = scripts("plain", "/files/", "");
    // The files the GET rows read.
    for (url, path, auth) in [
        (&a.url, format!("{files}/large"), format!("Bearer {token}")),
        (&plain.url, "/files/large".to_owned(), String::new()),
    ] {
        let mut curl = Command::new("curl");
        curl.args(["-sf", "-X", "PUT", "--data-binary"])
            .arg(format!("@{}", large.display()))
            .arg(format!("{url}{path}"));
        if !auth.is_empty() {
            curl.args(["-H", &format!("Authorization: {auth}")]);
        }
        run(&mut curl);
    }

    let mib = |load: Load| load.requests_per_s * (LARGE as f64) / f64::from(1 << 20);
    let one = std::slice::from_ref(&a.url);
    let two = [a.url.clone(), b.url.clone()];
    let base = std::slice::from_ref(&plain.url);

    println!("# atrest-serve under load ({seconds} s per row, soak {soak} s)");
    println!();
    println!("| row | plain_server | 1 instance | ratio | 2 instances | ratio |");
    println!("|---|---|---|---|---|---|");
    // (row, plain script, service script, connections, large): a large
    // row runs its connections at each instance; a small row shares them
    // out among the instances (the same load offered to one or two).
    let rows: [(&str, &PathBuf, &PathBuf, u32, bool); 4] = [
        (
            "64 MiB PUT (MiB/s)",
            &plain_put_large,
            &svc_put_large,
            2,
            true,
        ),
        (
            "64 MiB GET (MiB/s)",
            &plain_get_large,
            &svc_get_large,
            2,
            true,
        ),
        (
            "4 KiB PUT, 16 connections (req/s)",
            &plain_put_small,
            &svc_put_small,
            16,
            false,
        ),
        (
            "4 KiB PUT, 64 connections (req/s)",
            &plain_put_small,
            &svc_put_small,
            64,
            false,
        ),
    ];
    let mut small_latency = Vec::new();
    for (row, plain_script, svc_script, connections, large_row) in rows {
        let value = |load: Load| {
            if large_row {
                mib(load)
            } else {
                load.requests_per_s
            }
        };
        let shared = if large_row {
            connections
        } else {
            connections / 2
        };
        let baseline = wrk(base, plain_script, connections, seconds);
        let single = wrk(one, svc_script, connections, seconds);
        let double = wrk(&two, svc_script, shared, seconds);
        for (what, load) in [("plain", baseline), ("1", single), ("2", double)] {
            assert_eq!(load.errors, 0, "{row} {what}: {load:?}");
            if !large_row {
                small_latency.push((connections, what, load));
            }
        }
        println!(
            "| {row} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} |",
            value(baseline),
            value(single),
            value(single) / value(baseline),
            value(double),
            value(double) / value(baseline),
        );
    }
    println!();
    println!("4 KiB PUT latency (the connections shared out among the instances):");
    for (connections, what, load) in small_latency {
        println!(
            "- {connections} connections, {what}: p50 {:.2} ms, p99 {:.2} ms",
            load.p50_ms, load.p99_ms
        );
    }

    let soaked = wrk(&two, &svc_put_small, 32, soak);
    println!();
    println!(
        "Soak: 64 connections (32 per instance) of 4 KiB PUTs for {soak} s: {} requests, {:.0} req/s, {} errors, p99 {:.2} ms",
        soaked.requests, soaked.requests_per_s, soaked.errors, soaked.p99_ms
    );
    println!(
        "Peak RSS: instance A {:.1} MiB, instance B {:.1} MiB, plain_server {:.1} MiB",
        a.peak_rss_mib(),
        b.peak_rss_mib(),
        plain.peak_rss_mib()
    );
    drop((a, b, plain));
    let _ = std::fs::remove_dir_all(&work);
}
