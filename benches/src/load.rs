//! What the load reports share: servers started as child processes, `wrk`
//! runs (Debian package `wrk`) and their parsed results, and the Lua
//! scripts that make `wrk` send PUTs and GETs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::missing_panics_doc,
    missing_docs
)]

// Report helpers: they panic on anything unexpected, as a report should.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A program of this package, beside the running one.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().join(name)
}

pub fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Makes an atrest data directory `data` on its embedded defaults with
/// tenant `bench`, and returns a service token of principal `load` for it.
pub fn bench_data(data: &Path) -> String {
    let atrest = |program: &str, args: &[&str]| {
        run(Command::new(bin(program))
            .arg("--data")
            .arg(data)
            .args(args))
    };
    atrest("atrest", &["init"]);
    atrest("atrest", &["tenant", "create", "bench"]);
    atrest("atrest-serve", &["token", "add", "load@bench"])
        .trim()
        .to_owned()
}

pub struct Server {
    child: Child,
    /// The address it printed (`http://…` or `https://…`).
    pub url: String,
}

impl Server {
    pub fn start(mut command: Command, log: &Path) -> Self {
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
    pub fn peak_rss_mib(&self) -> f64 {
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
pub struct Load {
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub requests: u64,
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
pub fn wrk(urls: &[String], script: &Path, connections: u32, seconds: u64) -> Load {
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

pub fn script(
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
