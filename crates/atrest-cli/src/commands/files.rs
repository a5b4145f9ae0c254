//! `atrest put`, `atrest get` and `atrest blobs`: files in and out, and
//! the copies of their blobs.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use atrest::tenant::Access;
use atrest_cli::pipe::{ReadAhead, WriteBehind};
use atrest_deployment::{Deployment, FileName};

use super::{open, show_fallbacks};
use crate::cli::BlobsCommand;
use crate::exit::Error;
use crate::output::{Output, peak_memory_kib, rate};
use crate::staging::Destination;

fn parse_size(text: &str) -> Result<u64, Error> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let shift = match unit {
        "" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => {
            return Err(Error::usage(format!(
                "{text:?}: sizes are a number with an optional K, M or G"
            )));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| Error::usage(format!("{text:?} is not a size")))
}

/// A `--range` as written, before the file's length is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RangeSpec {
    /// `A..B`: bytes A up to (not including) B.
    Between(u64, u64),
    /// `A..`: from byte A to the end.
    From(u64),
    /// `..B`: the first B bytes.
    To(u64),
    /// `-N`: the last N bytes.
    Last(u64),
}

/// Parses `--range`: `A..B`, `A..`, `..B` or `-N` (sizes with an optional
/// K, M or G).
fn parse_range(text: &str) -> Result<RangeSpec, Error> {
    let bad = || {
        Error::usage(format!(
            "--range {text:?}: write START..END, START.., ..END or -LAST, for example 10M..20M"
        ))
    };
    if let Some(last) = text.strip_prefix('-') {
        return Ok(RangeSpec::Last(parse_size(last)?));
    }
    let (start, end) = text.split_once("..").ok_or_else(bad)?;
    match (start.trim().is_empty(), end.trim().is_empty()) {
        (true, true) => Err(bad()),
        (true, false) => Ok(RangeSpec::To(parse_size(end)?)),
        (false, true) => Ok(RangeSpec::From(parse_size(start)?)),
        (false, false) => {
            let (start, end) = (parse_size(start)?, parse_size(end)?);
            if start > end {
                return Err(Error::usage(format!(
                    "--range {text:?}: START is after END"
                )));
            }
            Ok(RangeSpec::Between(start, end))
        }
    }
}

impl RangeSpec {
    /// The bytes it selects in a file of `len` bytes, as HTTP byte ranges
    /// do: an end past the end of the file stops at it; a range that starts
    /// at or past the end (or asks for the last 0 bytes) selects nothing and
    /// is refused.
    fn resolve(self, len: u64) -> Result<Range<u64>, Error> {
        let range = match self {
            Self::Between(start, end) => start..end.min(len),
            Self::From(start) => start..len,
            Self::To(end) => 0..end.min(len),
            Self::Last(n) => len.saturating_sub(n)..len,
        };
        let satisfiable = match self {
            Self::Last(n) => n > 0 && len > 0,
            Self::To(end) => end > 0 && len > 0,
            Self::Between(start, end) => start < len && start < end,
            Self::From(start) => start < len,
        };
        if !satisfiable {
            return Err(Error::usage(format!(
                "--range selects no bytes of a file of {len} bytes"
            )));
        }
        Ok(range)
    }
}

/// `atrest put`.
pub(crate) async fn put(
    data: &Path,
    out: Output,
    tenant: &str,
    file: &Path,
    name: Option<String>,
    principal: Option<String>,
) -> Result<(), Error> {
    let stdin = file.as_os_str() == "-";
    let name = match name {
        Some(name) => name,
        None if stdin => return Err(Error::usage("give --name when reading stdin")),
        None => match file.file_name().map(|n| n.to_str()) {
            Some(Some(name)) => name.to_owned(),
            Some(None) => {
                return Err(Error::usage(format!(
                    "{}: the file name is not UTF-8; give --name",
                    file.display()
                )));
            }
            None => {
                return Err(Error::usage(format!(
                    "{} has no file name; give --name",
                    file.display()
                )));
            }
        },
    };
    let deployment = open(data).await?;
    let principal = super::principal(principal, tenant);
    let access = Access::User {
        principal: &principal,
    };
    let started = Instant::now();
    // Read on a thread of its own, ahead of the cipher.
    let report = if stdin {
        let source = ReadAhead::new(std::io::stdin(), |_| {});
        deployment.put(&access, tenant, &name, source).await
    } else {
        let input = std::fs::File::open(file).map_err(Error::at(file))?;
        let metadata = input.metadata().map_err(Error::at(file))?;
        if metadata.is_dir() {
            return Err(Error::at(file)(std::io::ErrorKind::IsADirectory.into()));
        }
        let bar = out.bytes_bar(metadata.len());
        let progress = bar.clone();
        let source = ReadAhead::new(input, move |n| progress.inc(n));
        let report = deployment.put(&access, tenant, &name, source).await;
        bar.finish_and_clear();
        report
    };
    let fallbacks = show_fallbacks(&deployment);
    let copy_failures = show_copy_failures(&deployment);
    let report = report?;
    let elapsed = started.elapsed();
    let info = serde_json::json!({
        "fallbacks": fallbacks,
        "copy_failures": copy_failures,
        "tenant": report.tenant,
        "name": report.name,
        "version": report.version,
        "record": report.record,
        "blob": report.blob,
        "seconds": elapsed.as_secs_f64(),
        "peak_memory_kib": peak_memory_kib(),
    });
    out.show(&info, || {
        format!(
            "sealed {}/{} version {}: {} bytes in {:.2?} ({}), blob {}",
            report.tenant,
            report.name,
            report.version,
            report.record.plaintext_len,
            elapsed,
            rate(report.record.plaintext_len, elapsed),
            report.blob
        )
    });
    Ok(())
}

/// Tells the operator (on stderr) about replica locations that did not
/// keep a copy of what was just written; returns them for JSON output.
fn show_copy_failures(deployment: &Deployment) -> Vec<serde_json::Value> {
    deployment
        .copy_failures()
        .into_iter()
        .map(|(blob, location, error)| {
            atrest_cli::errln!(
                "warning: {location} did not keep a copy of blob {blob} ({error}); `atrest blobs scrub --repair` makes it"
            );
            serde_json::json!({ "blob": blob, "location": location, "error": error })
        })
        .collect()
}

/// `atrest blobs …`.
pub(crate) async fn blobs(data: &Path, out: Output, command: BlobsCommand) -> Result<(), Error> {
    let BlobsCommand::Scrub { repair } = command;
    let deployment = open(data).await?;
    let report = deployment.scrub_blobs(repair).await?;
    out.show(&report, || scrub_text(&report));
    report.result()?;
    Ok(())
}

/// A scrub report for people: one line per bad copy.
fn scrub_text(report: &atrest_deployment::ScrubReport) -> String {
    use atrest::blobs::{CopyState, RepairOutcome};
    let mut text = format!(
        "checked {} file versions at {} locations ({}): {} bad copies",
        report.records,
        report.locations.len(),
        report.locations.join(", "),
        report.bad_copies(),
    );
    if report.repair {
        text.push_str(&format!(", {} repaired", report.repaired_copies()));
    }
    if report.records_without_digest > 0 {
        text.push_str(&format!(
            "\n  {} of them record no blob digest (sealed without replicas): checked by length only",
            report.records_without_digest
        ));
    }
    for record in &report.damaged {
        for copy in record.check.copies.iter().filter(|c| !c.state.is_good()) {
            let state = match &copy.state {
                CopyState::Missing => "missing".to_owned(),
                CopyState::WrongLength { len } => {
                    format!("wrong length ({len} bytes, not {})", record.check.len)
                }
                CopyState::WrongDigest { .. } => "wrong digest".to_owned(),
                CopyState::Unreachable { error } => format!("unreachable ({error})"),
                other => format!("{other:?}"),
            };
            let repair = match &copy.repair {
                None => String::new(),
                Some(RepairOutcome::Repaired { from }) => format!(
                    ": repaired from {}",
                    report.locations.get(*from).map_or("?", String::as_str)
                ),
                Some(RepairOutcome::Failed { error }) => format!(": NOT repaired ({error})"),
                Some(other) => format!(": {other:?}"),
            };
            text.push_str(&format!(
                "\n  {}/{} v{} blob {} at {}: {state}{repair}",
                record.tenant, record.file, record.version, record.check.blob, copy.place
            ));
        }
    }
    text
}

/// What `atrest get` reads.
pub(crate) struct GetArgs {
    pub(crate) tenant: String,
    pub(crate) name: String,
    pub(crate) output: Option<PathBuf>,
    pub(crate) range: Option<String>,
    pub(crate) version: Option<u64>,
    pub(crate) principal: Option<String>,
}

/// `atrest get`: plaintext to `-o FILE` (staged and renamed into place once
/// every byte verified; written through for a FIFO or device) or to
/// standard output; the report never shares a stream with the data.
pub(crate) async fn get(data: &Path, out: Output, args: GetArgs) -> Result<(), Error> {
    let GetArgs {
        tenant,
        name,
        output,
        range,
        version,
        principal,
    } = args;
    let range = range.as_deref().map(parse_range).transpose()?;
    let deployment = open(data).await?;
    let principal = super::principal(principal, &tenant);
    let access = Access::User {
        principal: &principal,
    };
    // One version throughout, even if another is sealed meanwhile. The
    // open authenticates the record.
    let record = deployment
        .record_to_open(&FileName {
            tenant: &tenant,
            name: &name,
            version,
        })
        .await?;
    let file = FileName {
        tenant: &tenant,
        name: &name,
        version: Some(u64::from(record.version)),
    };
    let range = range
        .map(|spec| spec.resolve(record.plaintext_len))
        .transpose()?;
    let started = Instant::now();
    let destination = Destination::open(output.as_deref().unwrap_or(Path::new("-")), data)?;
    let to_stdout = destination.is_stdout();
    let bytes = range
        .as_ref()
        .map_or(record.plaintext_len, |r| r.end - r.start);
    let bar = if to_stdout {
        indicatif::ProgressBar::hidden()
    } else {
        out.bytes_bar(bytes)
    };
    // Written on a thread of its own, behind the cipher.
    let mut sink = WriteBehind::new(Counted {
        inner: destination,
        bar: bar.clone(),
    });
    let result = deployment
        .get(&access, &file, range.clone(), &mut sink)
        .await;
    bar.finish_and_clear();
    let fallbacks = show_fallbacks(&deployment);
    // The writing thread is joined whatever happened: on an error the
    // destination, and its staging file, go now.
    let written = sink.close().await;
    let _ = result?;
    let destination = written
        .map_err(|source| Error::Io {
            what: "the output".into(),
            source,
        })?
        .inner;
    destination.finish()?;
    let elapsed = started.elapsed();
    let info = serde_json::json!({
        "fallbacks": fallbacks,
        "tenant": tenant,
        "name": name,
        "version": record.version,
        "range": range.as_ref().map(|r| [r.start, r.end]),
        "bytes": bytes,
        "output": output.as_ref().map(|p| p.to_string_lossy()),
        "seconds": elapsed.as_secs_f64(),
        "peak_memory_kib": peak_memory_kib(),
    });
    let text = || {
        format!(
            "opened {tenant}/{name} version {}: {bytes} bytes in {elapsed:.2?} ({})",
            record.version,
            rate(bytes, elapsed)
        )
    };
    if to_stdout {
        // The data is on standard output: the report goes to standard
        // error, with --json only.
        if out.json {
            out.show_on_stderr(&info);
        }
    } else {
        out.show(&info, text);
    }
    Ok(())
}

/// A writer that moves a progress bar by what it writes.
struct Counted<W> {
    inner: W,
    bar: indicatif::ProgressBar,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
