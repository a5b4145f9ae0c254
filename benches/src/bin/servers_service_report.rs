//! The upload service on the servers of a deployment beyond one machine:
//! `atrest-serve` over TLS with its catalog and key metadata in PostgreSQL
//! (`fsync` on) and its blobs in Azure storage (Azurite), beside the same
//! service on its embedded defaults (SQLite and a local directory, on the
//! same disk), loaded by the same `wrk` in the same run.
//!
//! ```text
//! cargo build --release -p atrest-cli --bin atrest --bin atrest-serve \
//!     -p atrest-benches --bin servers_service_report
//! ATREST_POSTGRES_DURABLE=1 scripts/with-servers target/release/servers_service_report [SECONDS]
//! ```
//!
//! `ATREST_POSTGRES_DURABLE=1` makes `scripts/with-servers` start its
//! PostgreSQL with the defaults a deployment keeps (`fsync`, synchronous
//! commit, full page writes); the report refuses to run on a server with
//! `fsync` off. Default: 10 s per row.
//!
//! Rows: 4 KiB PUTs at 16 and 64 connections, 4 KiB GETs at 64
//! connections (of files put before, in turn), requests per second with
//! p50/p99 latency, and the ratio of the PostgreSQL + Azurite deployment
//! to the embedded one. Then what Azurite itself serves on this machine,
//! through the blob store client the service uses, as many calls at once
//! as the row's connections, with the service's ratio to it (each upload
//! and download through the service makes one such call): 4 KiB blobs put
//! into an empty container first, and the service's own blobs read from
//! its container after its GET row. Azurite slows as a container fills
//! (reads above all), so both favour Azurite over the service.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest::blobs::BlobStore;
use atrest::stream::RunBuffer;
use atrest::{BlobName, Blobs};

use atrest_benches::load::{Load, Server, bin, run, script, wrk};
use atrest_test_support::pki::{issue, make_ca};
use atrest_test_support::postgres::{admin_url, database_url, query_text, run_sql};

const SMALL: usize = 4 << 10;
/// Files the GET row reads in turn.
const GET_FILES: usize = 256;

/// Where a deployment keeps its metadata and blobs.
enum Servers {
    Embedded,
    PostgresAzurite { env: Vec<(String, String)> },
}

struct Row {
    name: &'static str,
    embedded: Load,
    servers: Load,
}

fn deployment(dir: &Path, servers: &Servers, tls: (&Path, &Path)) -> (Server, String) {
    std::fs::create_dir_all(dir).unwrap();
    let data = dir.join("data");
    let command = |program: &str| {
        let mut command = Command::new(bin(program));
        command.arg("--data").arg(&data);
        if let Servers::PostgresAzurite { env } = servers {
            command.envs(env.iter().map(|(k, v)| (k, v)));
        }
        command
    };
    match servers {
        Servers::Embedded => run(command("atrest").arg("init")),
        Servers::PostgresAzurite { .. } => {
            let container = service_container();
            atrest_test_support::azurite::azurite().create_container(&container);
            run(command("atrest").args([
                "init",
                "--metadata-url-env",
                "ATREST_REPORT_METADATA_URL",
                "--blobs",
                &format!("az://{container}"),
            ]))
        }
    };
    run(command("atrest").args(["tenant", "create", "bench"]));
    let token = run(command("atrest-serve").args(["token", "add", "load@bench"]))
        .trim()
        .to_owned();
    let mut serve = command("atrest-serve");
    // One principal stands in for many clients: its 64 connections must
    // not meet the per-principal limit (64 in flight, a slot given back
    // only once a response's body has gone).
    serve
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--max-requests-per-principal", "1024", "--tls-cert"])
        .arg(tls.0)
        .arg("--tls-key")
        .arg(tls.1);
    (Server::start(serve, &dir.join("atrest-serve.log")), token)
}

fn measure(
    dir: &Path,
    servers: &Servers,
    tls: (&Path, &Path),
    body: &Path,
    seconds: u64,
) -> [Load; 3] {
    let (service, token) = deployment(dir, servers, tls);
    let files = "/v1/tenants/bench/files/";
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    // The files the GET row reads: put first, then read in turn.
    let ca = tls.0.parent().unwrap().join("ca.pem");
    for n in 1..=GET_FILES {
        run(Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(&ca)
            .args(["-X", "PUT", "-H", &format!("Authorization: Bearer {token}")])
            .arg("--data-binary")
            .arg(format!("@{}", body.display()))
            .arg(format!("{}{files}get/{n}", service.url)));
    }
    let put = script(
        &scripts,
        "put.lua",
        "PUT",
        &format!("{files}put/"),
        &token,
        Some(body),
    );
    let get = cycling_get(&scripts, &format!("{files}get/"), &token);
    let url = std::slice::from_ref(&service.url);
    let mut loads = Vec::new();
    for (script, connections) in [(&put, 16), (&put, 64), (&get, 64)] {
        let before = cpu_ticks();
        let load = wrk(url, script, connections, seconds);
        let cores = cores_since(&before, seconds);
        assert_eq!(load.errors, 0, "{}: {load:?}", dir.display());
        println!(
            "{} {connections} connections {}: {:.0} req/s; cores used: {cores}",
            dir.file_name().unwrap().to_string_lossy(),
            script.file_stem().unwrap().to_string_lossy(),
            load.requests_per_s,
        );
        loads.push(load);
    }
    loads.try_into().unwrap()
}

/// Where the machine's CPU went since `before` (what bounds a row), over
/// `seconds`, in cores by program.
fn cores_since(before: &std::collections::BTreeMap<String, u64>, seconds: u64) -> String {
    let cores: Vec<String> = cpu_ticks()
        .iter()
        .map(|(name, ticks)| {
            let used = ticks - before.get(name).copied().unwrap_or(0);
            format!("{name} {:.2}", used as f64 / 100.0 / seconds as f64)
        })
        .collect();
    cores.join(", ")
}

/// The Azure container of this run's service deployment.
fn service_container() -> String {
    format!("atrest-report-{}", std::process::id())
}

/// Runs `op` (given the worker's index and how many it did so far)
/// `at_once` at a time for `seconds`; how many it did a second, and the
/// CPU each server used meanwhile.
async fn drive<F, Fut>(at_once: usize, seconds: u64, op: F) -> (f64, String)
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let before = cpu_ticks();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..at_once)
        .map(|worker| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut done = 0;
                while Instant::now() < deadline {
                    op(worker, done).await;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for worker in workers {
        done += worker.await.unwrap();
    }
    (
        done as f64 / started.elapsed().as_secs_f64(),
        cores_since(&before, seconds),
    )
}

/// Azurite alone, puts: blobs of `body` put 16 and then 64 at once for
/// `seconds` each through the service's blob store client, into a
/// container of their own that starts empty (Azurite slows as a container
/// fills, so this favours it); blobs per second for each.
fn azurite_alone_puts(runtime: &tokio::runtime::Runtime, body: &[u8], seconds: u64) -> [f64; 2] {
    let azurite = atrest_test_support::azurite::azurite();
    let container = format!("atrest-report-alone-{}", std::process::id());
    azurite.create_container(&container);
    let store = Arc::new(
        BlobStore::from_url_with_options(&format!("az://{container}"), azurite.options()).unwrap(),
    );
    let body = bytes::Bytes::copy_from_slice(body);
    runtime.block_on(async {
        let mut rates = Vec::new();
        for at_once in [16, 64] {
            let (store, body) = (store.clone(), body.clone());
            let (rate, cores) = drive(at_once, seconds, move |_, _| {
                let (store, body) = (store.clone(), body.clone());
                async move {
                    let mut upload = store.create(&BlobName::random().unwrap()).await.unwrap();
                    upload.write(body).await.unwrap();
                    let _ = upload.finish().await.unwrap();
                }
            })
            .await;
            println!("azurite alone {at_once} at once put: {rate:.0} blobs/s; cores used: {cores}");
            rates.push(rate);
        }
        rates.try_into().unwrap()
    })
}

/// Azurite alone, reads: [`GET_FILES`] of the blobs the service stored
/// (in its container as its GET row left it), read 64 at once in turn for
/// `seconds` through the service's blob store client; blobs per second.
fn azurite_alone_gets(runtime: &tokio::runtime::Runtime, seconds: u64) -> f64 {
    let azurite = atrest_test_support::azurite::azurite();
    let store = Arc::new(
        BlobStore::from_url_with_options(
            &format!("az://{}", service_container()),
            azurite.options(),
        )
        .unwrap(),
    );
    runtime.block_on(async {
        let mut stored = store.list().await.unwrap();
        stored.truncate(GET_FILES);
        assert!(!stored.is_empty());
        let stored = Arc::new(stored);
        let (rate, cores) = drive(64, seconds, move |worker, done| {
            let (store, stored) = (store.clone(), stored.clone());
            async move {
                let (name, len) = &stored[(worker + done) % stored.len()];
                let mut reader = store.open(name).await.unwrap();
                let mut buf = RunBuffer::new();
                while reader.read(&mut buf, SMALL).await.unwrap() > 0 {}
                assert_eq!(buf.len() as u64, *len);
            }
        })
        .await;
        println!("azurite alone 64 at once get: {rate:.0} blobs/s; cores used: {cores}");
        rate
    })
}

/// CPU time so far (in clock ticks, 100 a second) of the processes that
/// serve a row, by program: the service, PostgreSQL, Azurite (node),
/// `wrk`. Processes that ended meanwhile are not counted.
fn cpu_ticks() -> std::collections::BTreeMap<String, u64> {
    let mut ticks = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("", |(_, name)| name);
        let name = match name {
            "atrest-serve" | "postgres" | "wrk" => name,
            "node" | "MainThread" => "azurite (node)",
            _ => continue,
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of the line, 12 and 13 after
        // the command.
        let used: u64 =
            fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        *ticks.entry(name.to_owned()).or_default() += used;
    }
    ticks
}

/// A `wrk` script that GETs `prefix`1 … `prefix`[`GET_FILES`] in turn.
fn cycling_get(dir: &Path, prefix: &str, token: &str) -> PathBuf {
    let text = format!(
        "wrk.method = \"GET\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\nlocal n = 0\nrequest = function()\n  n = n % {GET_FILES} + 1\n  return wrk.format(nil, \"{prefix}\" .. n)\nend\n"
    );
    let file = dir.join("get.lua");
    std::fs::write(&file, text).unwrap();
    file
}

fn main() {
    let seconds: u64 = std::env::args().nth(1).map_or(10, |a| a.parse().unwrap());
    let admin = admin_url();
    let fsync = query_text(&admin, "SHOW fsync");
    let synchronous_commit = query_text(&admin, "SHOW synchronous_commit");
    assert!(
        fsync == "on" && synchronous_commit == "on",
        "PostgreSQL runs with fsync={fsync}, synchronous_commit={synchronous_commit}: \
         run under ATREST_POSTGRES_DURABLE=1 scripts/with-servers"
    );
    let root = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join(format!("servers-service-report-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    make_ca(&root);
    let (chain, key) = issue(&root, "server", "127.0.0.1");
    let body = root.join("small.bin");
    std::fs::write(&body, atrest_test_support::seeded(SMALL, 2)).unwrap();

    let database = format!("atrest_report_{}", std::process::id());
    run_sql(&admin, &format!("CREATE DATABASE {database}"));
    let azurite = atrest_test_support::azurite::azurite();
    let mut env: Vec<(String, String)> = azurite
        .options()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v))
        .collect();
    env.push((
        "ATREST_REPORT_METADATA_URL".into(),
        database_url(&admin, &database),
    ));
    let tls = (chain.as_path(), key.as_path());
    // Azurite's puts first, into an empty container; its reads after the
    // service's, of the same blobs: the bounds the service's rows are
    // compared with.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let [alone_put_16, alone_put_64] =
        azurite_alone_puts(&runtime, &std::fs::read(&body).unwrap(), seconds);
    let embedded = measure(
        &root.join("embedded"),
        &Servers::Embedded,
        tls,
        &body,
        seconds,
    );
    let servers = measure(
        &root.join("servers"),
        &Servers::PostgresAzurite { env },
        tls,
        &body,
        seconds,
    );
    let alone = [
        alone_put_16,
        alone_put_64,
        azurite_alone_gets(&runtime, seconds),
    ];
    let _ = std::fs::remove_dir_all(&root);
    run_sql(&admin, &format!("DROP DATABASE {database} WITH (FORCE)"));

    let names = [
        "4 KiB PUT, 16 connections",
        "4 KiB PUT, 64 connections",
        "4 KiB GET, 64 connections",
    ];
    let rows: Vec<Row> = names
        .into_iter()
        .zip(embedded.into_iter().zip(servers))
        .map(|(name, (embedded, servers))| Row {
            name,
            embedded,
            servers,
        })
        .collect();
    println!(
        "# atrest-serve over TLS: PostgreSQL (fsync on) + Azurite beside SQLite + a local directory ({seconds} s per row)"
    );
    println!();
    println!(
        "| row | SQLite + directory req/s | PostgreSQL + Azurite req/s | ratio | SQLite p50 / p99 ms | PostgreSQL p50 / p99 ms |"
    );
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            row.name,
            row.embedded.requests_per_s,
            row.servers.requests_per_s,
            row.servers.requests_per_s / row.embedded.requests_per_s,
            row.embedded.p50_ms,
            row.embedded.p99_ms,
            row.servers.p50_ms,
            row.servers.p99_ms
        );
    }
    println!();
    println!(
        "# Azurite alone: 4 KiB blobs through the service's blob store client, as many at once as the row's connections"
    );
    println!();
    println!("| row | Azurite alone blobs/s | PostgreSQL + Azurite service req/s | ratio |");
    println!("|---|---|---|---|");
    for (row, alone) in rows.iter().zip(alone) {
        println!(
            "| {} | {alone:.0} | {:.0} | {:.2} |",
            row.name,
            row.servers.requests_per_s,
            row.servers.requests_per_s / alone
        );
    }
}
