//! File-to-file `atrest put` and `atrest get` against `cat in > out`, side
//! by side in one run, on a directory of your choice (tmpfs by default),
//! with the CLI's peak memory.
//!
//! ```text
//! cargo build --release -p atrest-cli --bin atrest
//! cargo run --release -p atrest-benches --bin cli_throughput -- [SIZE_MIB] [RUNS] [DIR]
//! ```
//!
//! Defaults: 1024 MiB, 5 runs, `/dev/shm`. Each run times `cat in > out`,
//! `atrest put` of the same file and `atrest get -o` of it, in turn, and
//! the report gives the medians and the ratios to `cat`. The `atrest`
//! binary is `target/release/atrest`, or `ATREST_BIN`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::indexing_slicing
)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size_mib: u64 = args.first().map_or(1024, |a| a.parse().expect("SIZE_MIB"));
    let runs: usize = args.get(1).map_or(5, |a| a.parse().expect("RUNS"));
    let base = PathBuf::from(args.get(2).map_or("/dev/shm", String::as_str));
    let bin = std::env::var_os("ATREST_BIN")
        .map_or_else(|| PathBuf::from("target/release/atrest"), PathBuf::from);
    assert!(
        bin.exists(),
        "{} missing: cargo build --release -p atrest-cli --bin atrest",
        bin.display()
    );

    let dir = base.join(format!("atrest-cli-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.bin");
    {
        let mut file = std::fs::File::create(&input).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..size_mib {
            for byte in &mut chunk {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state.to_le_bytes()[0];
            }
            file.write_all(&chunk).unwrap();
        }
    }
    let data = dir.join("data");
    let atrest = |args: &[&str]| {
        let mut command = Command::new(&bin);
        command.arg("--data").arg(&data).arg("--json").args(args);
        command
    };
    let _ = run(&mut atrest(&["init"]));
    let _ = run(&mut atrest(&["tenant", "create", "bench"]));
    let output = dir.join("out.bin");
    let (mut cat, mut put, mut get) = (Vec::new(), Vec::new(), Vec::new());
    let (mut put_peak, mut get_peak) = (0u64, 0u64);
    for i in 0..runs {
        let _ = std::fs::remove_file(&output);
        cat.push(
            run(Command::new("sh").arg("-c").arg(format!(
                "cat '{}' > '{}'",
                input.display(),
                output.display()
            )))
            .0,
        );
        let _ = std::fs::remove_file(&output);
        let name = format!("file-{i}");
        let (time, json) = run(&mut atrest(&[
            "put",
            "bench",
            input.to_str().unwrap(),
            "--name",
            &name,
        ]));
        put.push(time);
        put_peak = put_peak.max(json["peak_memory_kib"].as_u64().unwrap_or(0));
        let (time, json) = run(&mut atrest(&[
            "get",
            "bench",
            &name,
            "-o",
            output.to_str().unwrap(),
        ]));
        get.push(time);
        get_peak = get_peak.max(json["peak_memory_kib"].as_u64().unwrap_or(0));
        // Keep tmpfs from filling up: drop this run's blob.
        for entry in std::fs::read_dir(data.join("blobs")).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
    }
    let same = std::fs::read(&input).unwrap() == std::fs::read(&output).unwrap();
    let (cat, put, get) = (median(cat), median(put), median(get));
    let gbps = |d: Duration| (size_mib << 20) as f64 / d.as_secs_f64() / 1e9;
    println!(
        "file to file, {size_mib} MiB on {}, {runs} runs, medians:",
        base.display()
    );
    println!(
        "  cat in > out      {:>8.3} s  {:>6.2} GB/s",
        cat.as_secs_f64(),
        gbps(cat)
    );
    println!(
        "  atrest put        {:>8.3} s  {:>6.2} GB/s  {:.3} x cat  peak memory {} KiB",
        put.as_secs_f64(),
        gbps(put),
        put.as_secs_f64() / cat.as_secs_f64(),
        put_peak
    );
    println!(
        "  atrest get -o     {:>8.3} s  {:>6.2} GB/s  {:.3} x cat  peak memory {} KiB",
        get.as_secs_f64(),
        gbps(get),
        get.as_secs_f64() / cat.as_secs_f64(),
        get_peak
    );
    println!("  round trip identical: {same}");
    std::fs::remove_dir_all(&dir).unwrap();
}
