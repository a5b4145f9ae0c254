//! Printing: text or one JSON document, progress bars, rates.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Where the output goes, and in what form.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Output {
    /// One JSON document on stdout instead of text (and no progress bars).
    pub(crate) json: bool,
}

impl Output {
    /// Prints `value` as JSON, or `text` otherwise.
    pub(crate) fn show<T: Serialize + ?Sized>(self, value: &T, text: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(out) => println!("{out}"),
                Err(error) => eprintln!("atrest: cannot print JSON: {error}"),
            }
        } else {
            println!("{}", text());
        }
    }

    /// A progress bar over `len` bytes (hidden with `--json`).
    pub(crate) fn bytes_bar(self, len: u64) -> ProgressBar {
        if self.json {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
        ) {
            bar.set_style(style);
        }
        bar
    }
}

/// This process's peak resident memory (Linux), in KiB.
pub(crate) fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `bytes` in `elapsed`, as GB/s.
pub(crate) fn rate(bytes: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    #[allow(clippy::cast_precision_loss)]
    let per_second = bytes as f64 / seconds;
    format!("{:.2} GB/s", per_second / 1e9)
}
