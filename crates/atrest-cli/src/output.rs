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
                Ok(out) => atrest_cli::outln!("{out}"),
                Err(error) => atrest_cli::errln!("atrest: cannot print JSON: {error}"),
            }
        } else {
            atrest_cli::outln!("{}", text());
        }
    }

    /// Prints `value` as JSON on standard error (for commands whose data is
    /// on standard output).
    pub(crate) fn show_on_stderr<T: Serialize + ?Sized>(self, value: &T) {
        match serde_json::to_string_pretty(value) {
            Ok(out) => atrest_cli::errln!("{out}"),
            Err(error) => atrest_cli::errln!("atrest: cannot print JSON: {error}"),
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

impl Output {
    /// A progress bar over `len` things that are not bytes (`unit`: `keys`),
    /// hidden with `--json`.
    pub(crate) fn count_bar(self, len: u64, unit: &str) -> ProgressBar {
        if self.json {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) =
            ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {unit} {{eta}}"))
        {
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

/// `bytes` in `elapsed`, as a rate in the unit that suits it (B/s to
/// GB/s, three significant digits).
pub(crate) fn rate(bytes: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    #[allow(clippy::cast_precision_loss)]
    let per_second = bytes as f64 / seconds;
    let (value, unit) = [(1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s")]
        .into_iter()
        .find(|(scale, _)| per_second >= *scale)
        .map_or((per_second, "B/s"), |(scale, unit)| {
            (per_second / scale, unit)
        });
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$} {unit}")
}
