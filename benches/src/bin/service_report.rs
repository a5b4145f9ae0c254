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

use std::path::PathBuf;
use std::process::Command;

use atrest_benches::load::{Load, Server, bench_data, bin, run, script, wrk};

const LARGE: usize = 64 << 20;
const SMALL: usize = 4 << 10;

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(10, |a| a.parse().unwrap());
    let soak: u64 = args.next().map_or(60, |a| a.parse().unwrap());
    let work = std::env::temp_dir().join(format!("atrest-service-report-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let data = work.join("data");
    let token = bench_data(&data);
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
