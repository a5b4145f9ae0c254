//! The upload service over TLS beside nginx, the server a user would pick
//! to serve files: both with the same certificate (a private CA made here
//! with OpenSSL's command), TLS 1.3, on the same machine, loaded by the
//! same clients (Debian packages `nginx`, `wrk` and `curl`). nginx takes
//! WebDAV `PUT`s (`dav_methods PUT`) and serves `GET`s from its files with
//! `sendfile`; `atrest-serve` seals each upload in the request and opens
//! each download on the way out, on its embedded defaults.
//!
//! ```text
//! cargo build --release -p atrest-cli --bin atrest --bin atrest-serve \
//!     -p atrest-benches --bin tls_report
//! target/release/tls_report [SECONDS] [SOAK_SECONDS] [DISK_DIR]
//! ```
//!
//! Defaults: 10 s per row, a 60 s soak, and the disk rows in a directory
//! under `target/`. Each row runs twice, files on a tmpfs (`/dev/shm`) and
//! on disk. On disk, `atrest-serve` flushes every blob and record before
//! its `201` (fsync, syncfs for a batch); nginx flushes nothing (a `201`
//! from nginx means the bytes are in the page cache); each run starts with
//! the file system flushed (`sync -f`), so that neither server writes back
//! what the other left.
//!
//! Rows: 256 MiB PUT and GET (one transfer at a time by `curl`, the two
//! servers taking turns, 3 to 9 runs: `wrk` spends more than a core of its
//! own on so large a body), over HTTP/1.1 and again over HTTP/2 (which
//! `curl` picks by itself over TLS, both servers offering it), 4 KiB PUTs
//! at 16 and 64 connections by `wrk` (HTTP/1.1) with p50 and p99 (the two
//! servers taking turns, three runs of SECONDS each); each value is the
//! median of its runs and each ratio the median of the runs' ratios
//! (atrest-serve's run over nginx's just before it), so that a drift of the
//! shared machine's load falls on both servers. Then a soak of 64
//! connections of 4 KiB PUTs against `atrest-serve` with its errors
//! counted, and both servers' peak resident memory. The large rows and the
//! small ones each start both servers on fresh files, the other rows'
//! files removed (see [`measure`]).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::panic
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use atrest_benches::load::{Load, Server, bench_data, bin, run, script, wrk};
use atrest_benches::median;
use atrest_test_support::pki::{issue, make_ca};

const LARGE: usize = 256 << 20;

/// The HTTP version `curl` speaks for a large row: HTTP/1.1, as `wrk`
/// speaks, or HTTP/2, which `curl` picks by itself over TLS with either
/// server (both offer it).
#[derive(Debug, Clone, Copy)]
enum Http {
    One,
    Two,
}

impl Http {
    fn curl_flag(self) -> &'static str {
        match self {
            Self::One => "--http1.1",
            Self::Two => "--http2",
        }
    }
}

/// One transfer of the large file by `curl` over `http` (a `PUT` of
/// `body`, or a `GET` read and dropped), in MiB/s as `curl` timed it.
fn curl_mib_per_s(
    http: Http,
    url: &str,
    method: &str,
    token: Option<&str>,
    body: Option<&Path>,
) -> f64 {
    let mut command = Command::new("curl");
    command.args(["-skf", http.curl_flag(), "-o", "/dev/null", "-X", method]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let speed = match body {
        Some(body) => {
            command
                .arg("--data-binary")
                .arg(format!("@{}", body.display()));
            "%{speed_upload}"
        }
        None => "%{speed_download}",
    };
    let out = run(command.args(["-w", speed]).arg(url));
    out.trim().parse::<f64>().unwrap() / f64::from(1 << 20)
}

const SMALL: usize = 4 << 10;

/// A private CA and a certificate for 127.0.0.1 it issued, in `dir`:
/// `(chain.pem, key.pem)`.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    make_ca(dir);
    issue(dir, "server", "127.0.0.1")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx in the foreground with a configuration of its own under `dir`.
struct Nginx {
    child: Child,
    url: String,
}

impl Nginx {
    fn start(dir: &Path, (chain, key): (&Path, &Path)) -> Self {
        for sub in ["www/files/small", "body", "logs"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let port = free_port();
        let conf = format!(
            "user root;
worker_processes auto;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_max_body_size 0;
    client_body_buffer_size 1m;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/body;
    fastcgi_temp_path {dir}/body;
    uwsgi_temp_path {dir}/body;
    scgi_temp_path {dir}/body;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {chain};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {dir}/www;
        location /files/ {{
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw;
        }}
    }}
}}
",
            dir = dir.display(),
            chain = chain.display(),
            key = key.display(),
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .spawn()
            .expect("nginx (apt-get install nginx)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url: format!("https://127.0.0.1:{port}"),
        }
    }

    /// Peak resident memory of the master and its workers, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let master = self.child.id();
        let mut pids = vec![master];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // The parent's pid is the field after the command's closing ')'.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if parent == Some(master) {
                pids.push(pid);
            }
        }
        pids.iter()
            .map(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default()
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                    .unwrap_or(0.0)
            })
            .sum::<f64>()
            / 1024.0
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (SIGKILL would orphan them).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// One row: the medians of its runs, nginx's and atrest-serve's, the
/// median of the runs' ratios (each run of atrest-serve over the nginx run
/// just before it), and for the small rows both servers' median p50 and p99.
struct Row {
    name: &'static str,
    nginx: f64,
    atrest: f64,
    ratio: f64,
    latency: Option<[(f64, f64); 2]>,
}

impl Row {
    /// The row of `runs`, each a pair (nginx, atrest-serve) measured one
    /// after the other, by `value`.
    fn of<T: Copy>(name: &'static str, runs: &[(T, T)], value: impl Fn(T) -> f64) -> Self {
        let values = |pick: fn(&(T, T)) -> T| runs.iter().map(|run| value(pick(run))).collect();
        Self {
            name,
            nginx: median(values(|run| run.0)),
            atrest: median(values(|run| run.1)),
            ratio: median(runs.iter().map(|run| value(run.1) / value(run.0)).collect()),
            latency: None,
        }
    }
}

/// One place the files go: what both servers measured there.
struct Place {
    name: &'static str,
    rows: Vec<Row>,
    soak: Option<Load>,
    rss: (f64, f64),
}

/// One of the two servers a row compares.
#[derive(Debug, Clone, Copy)]
enum Side {
    Nginx,
    Atrest,
}

/// `runs` runs of the two servers in turn, nginx first, as
/// `(nginx's, atrest-serve's)` by `measure`. Each run starts with nothing
/// of the other's left to write back: a flush by atrest-serve (`syncfs`)
/// covers the whole file system, and nginx leaves its bytes in the page
/// cache, so `dir`'s file system is flushed (`sync -f`) before each.
fn in_turn<T>(dir: &Path, runs: usize, mut measure: impl FnMut(Side) -> T) -> Vec<(T, T)> {
    let settle = || run(Command::new("sync").arg("-f").arg(dir));
    (0..runs)
        .map(|_| {
            settle();
            let of_nginx = measure(Side::Nginx);
            settle();
            (of_nginx, measure(Side::Atrest))
        })
        .collect()
}

/// Both servers on fresh files in `dir` (made here): atrest-serve on a new
/// data directory with tenant `bench` and a token for it, nginx on an
/// empty root.
struct Servers {
    service: Server,
    token: String,
    nginx: Nginx,
}

impl Servers {
    fn start(dir: &Path, tls: (&Path, &Path)) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let data = dir.join("data");
        let token = bench_data(&data);
        let mut command = Command::new(bin("atrest-serve"));
        command
            .arg("--data")
            .arg(&data)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(tls.0)
            .arg("--tls-key")
            .arg(tls.1);
        let service = Server::start(command, &dir.join("atrest-serve.log"));
        let nginx = Nginx::start(&dir.join("nginx"), tls);
        Self {
            service,
            token,
            nginx,
        }
    }

    /// Both servers' peak resident memory so far, in MiB: (nginx,
    /// atrest-serve).
    fn peak_rss_mib(&self) -> (f64, f64) {
        (self.nginx.peak_rss_mib(), self.service.peak_rss_mib())
    }

    /// Stops both servers and removes their files, `dir`.
    fn remove(self, dir: &Path) {
        drop(self);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The rows of one place, files in `dir`. The large rows and the small
/// ones each start both servers on fresh files, so that the small rows do
/// not run beside the gibibytes the large ones leave (every 256 MiB version
/// atrest-serve keeps): on a virtual machine, memory held elsewhere can
/// slow the whole guest (on the machine this report was written on, 8 GiB
/// of other files on the tmpfs halved atrest-serve's 4 KiB rate, every
/// function of its profile slower alike, the cipher's too), and the small
/// rows would measure that rather than the servers.
fn measure(
    name: &'static str,
    dir: &Path,
    tls: (&Path, &Path),
    bodies: (&Path, &Path),
    (seconds, soak): (u64, u64),
) -> Place {
    let (large, small) = bodies;
    let files = "/v1/tenants/bench/files/";
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let mut measured = Vec::new();

    // The large rows: one transfer at a time by `curl`, which moves a
    // 256 MiB body at several hundred MB/s over TLS on one core, where
    // `wrk` spends more than a core of its own on such a body and measures
    // itself. The two servers alternate, a transfer each, so that both see
    // the machine alike; each row gives the median of its runs.
    let large_dir = dir.join("large");
    let servers = Servers::start(&large_dir, tls);
    let (service, token, nginx) = (&servers.service, servers.token.as_str(), &servers.nginx);
    // The files the GET rows read, put by each server's own PUT.
    for (url, auth) in [
        (
            format!("{}{files}large", service.url),
            format!("Authorization: Bearer {token}"),
        ),
        (
            format!("{}/files/large", nginx.url),
            "X-None: none".to_owned(),
        ),
    ] {
        run(Command::new("curl")
            .args(["-skf", "-X", "PUT", "-H", &auth, "--data-binary"])
            .arg(format!("@{}", large.display()))
            .arg(url));
    }
    let large_runs = usize::try_from(seconds.clamp(3, 9)).unwrap_or(3);
    for (row, http, method, path) in [
        ("256 MiB PUT (MiB/s)", Http::One, "PUT", "large-put"),
        ("256 MiB GET (MiB/s)", Http::One, "GET", "large"),
        ("256 MiB PUT, HTTP/2 (MiB/s)", Http::Two, "PUT", "large-put"),
        ("256 MiB GET, HTTP/2 (MiB/s)", Http::Two, "GET", "large"),
    ] {
        let nginx_url = format!("{}/files/{path}", nginx.url);
        let atrest_url = format!("{}{files}{path}", service.url);
        let put = (method == "PUT").then_some(large);
        let runs = in_turn(dir, large_runs, |side| match side {
            Side::Nginx => curl_mib_per_s(http, &nginx_url, method, None, put),
            Side::Atrest => curl_mib_per_s(http, &atrest_url, method, Some(token), put),
        });
        measured.push(Row::of(row, &runs, |rate| rate));
    }
    let large_rss = servers.peak_rss_mib();
    servers.remove(&large_dir);

    // The small rows: each server in turn for `seconds`, three times, so
    // that a drift of the machine's load (it is shared) falls on both.
    let small_dir = dir.join("small");
    let servers = Servers::start(&small_dir, tls);
    let (service, token, nginx) = (&servers.service, servers.token.as_str(), &servers.nginx);
    let pair = |label: &str, path: &str| {
        (
            script(
                &scripts,
                &format!("nginx-{label}.lua"),
                "PUT",
                &format!("/files/{path}"),
                "",
                Some(small),
            ),
            script(
                &scripts,
                &format!("atrest-{label}.lua"),
                "PUT",
                &format!("{files}{path}"),
                token,
                Some(small),
            ),
        )
    };
    let small_runs = 3;
    for (row, connections) in [
        ("4 KiB PUT, 16 connections (req/s)", 16),
        ("4 KiB PUT, 64 connections (req/s)", 64),
    ] {
        let (nginx_script, atrest_script) = pair("put-small", "small/");
        let runs = in_turn(dir, small_runs, |side| {
            let (url, script) = match side {
                Side::Nginx => (&nginx.url, &nginx_script),
                Side::Atrest => (&service.url, &atrest_script),
            };
            let load = wrk(std::slice::from_ref(url), script, connections, seconds);
            assert_eq!(load.errors, 0, "{name} {row} {side:?}: {load:?}");
            load
        });
        let latency = |pick: fn(&(Load, Load)) -> Load| {
            (
                median(runs.iter().map(|run| pick(run).p50_ms).collect()),
                median(runs.iter().map(|run| pick(run).p99_ms).collect()),
            )
        };
        measured.push(Row {
            latency: Some([latency(|run| run.0), latency(|run| run.1)]),
            ..Row::of(row, &runs, |load| load.requests_per_s)
        });
    }
    let soaked = (soak > 0).then(|| {
        let (_, atrest_script) = pair("soak", "soak/");
        wrk(std::slice::from_ref(&service.url), &atrest_script, 64, soak)
    });
    let small_rss = servers.peak_rss_mib();
    servers.remove(&small_dir);
    Place {
        name,
        rows: measured,
        soak: soaked,
        rss: (large_rss.0.max(small_rss.0), large_rss.1.max(small_rss.1)),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(10, |a| a.parse().unwrap());
    let soak: u64 = args.next().map_or(60, |a| a.parse().unwrap());
    let disk_dir = args.next().map_or_else(
        || {
            let exe = std::env::current_exe().unwrap();
            exe.parent()
                .unwrap()
                .join(format!("tls-report-{}", std::process::id()))
        },
        PathBuf::from,
    );
    let tmpfs_dir = PathBuf::from(format!("/dev/shm/atrest-tls-report-{}", std::process::id()));
    let common = std::env::temp_dir().join(format!("atrest-tls-report-{}", std::process::id()));
    std::fs::create_dir_all(&common).unwrap();
    let (chain, key) = certificate(&common);
    let large = common.join("large.bin");
    let small = common.join("small.bin");
    std::fs::write(&large, atrest_test_support::seeded(LARGE, 1)).unwrap();
    std::fs::write(&small, atrest_test_support::seeded(SMALL, 2)).unwrap();
    let tls = (chain.as_path(), key.as_path());
    let bodies = (large.as_path(), small.as_path());

    let places = [
        measure("tmpfs", &tmpfs_dir, tls, bodies, (seconds, soak)),
        measure("disk", &disk_dir, tls, bodies, (seconds, 0)),
    ];
    let _ = std::fs::remove_dir_all(&tmpfs_dir);
    let _ = std::fs::remove_dir_all(&disk_dir);
    let _ = std::fs::remove_dir_all(&common);

    println!(
        "# atrest-serve beside nginx over TLS (4 KiB rows: three {seconds} s runs of each server in turn; values are medians, ratios the median of the runs' ratios)"
    );
    println!();
    println!(
        "| row | files on | nginx | atrest-serve | ratio | nginx p50 / p99 ms | atrest-serve p50 / p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for place in &places {
        for row in &place.rows {
            let [nginx, atrest] = row.latency.map_or_else(
                || [String::new(), String::new()],
                |latency| latency.map(|(p50, p99)| format!("{p50:.2} / {p99:.2}")),
            );
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.2} | {nginx} | {atrest} |",
                row.name, place.name, row.nginx, row.atrest, row.ratio
            );
        }
    }
    println!();
    for place in &places {
        println!(
            "Peak RSS ({}): nginx {:.1} MiB (master and workers), atrest-serve {:.1} MiB",
            place.name, place.rss.0, place.rss.1
        );
        if let Some(soaked) = place.soak {
            println!(
                "Soak ({}): 64 connections of 4 KiB PUTs for {soak} s against atrest-serve: {} requests, {:.0} req/s, {} errors, p50 {:.2} ms, p99 {:.2} ms",
                place.name,
                soaked.requests,
                soaked.requests_per_s,
                soaked.errors,
                soaked.p50_ms,
                soaked.p99_ms
            );
        }
    }
    println!();
    println!(
        "On disk, atrest-serve flushes each blob and record before it answers; nginx flushes nothing."
    );
}
