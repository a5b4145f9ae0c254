//! How every program of this crate ends: one set of exit codes, from the
//! kind of the failure, and one form of error report.
//!
//! - The exit code is [`EXIT_CODES`]: 0 done, then one code per kind of
//!   failure ([`kind_code`]), the same for `atrest`, `atrest-serve` and
//!   `mailbox-move`.
//! - The message goes to standard error, as `PROGRAM: message`.
//! - With `--json`, a document `{"error": message, "kind": KIND, "exit":
//!   CODE}` follows on standard output — or on standard error when
//!   standard output carries the data (`atrest get` to standard output):
//!   [`report`].
//! - A report of a command that succeeded is one JSON document on standard
//!   output; progress and notes are on standard error.

use atrest::ErrorKind;

/// Done.
pub const DONE: u8 = 0;
/// An I/O or storage error (a directory given as a file, a full disk, a
/// closed pipe), or a file named on the command line that cannot be read.
pub const FAILED: u8 = 1;
/// Bad usage or configuration: a malformed argument, no deployment.
pub const USAGE: u8 = 2;
/// Not found: a tenant, file, version, key or token.
pub const NOT_FOUND: u8 = 3;
/// Refused: the release policy, a revoked or destroyed customer key, a
/// purged tenant.
pub const REFUSED: u8 = 4;
/// Integrity: something that does not authenticate or parse.
pub const INTEGRITY: u8 = 5;
/// Unavailable: a key service or store could not be reached.
pub const UNAVAILABLE: u8 = 6;
/// Conflict: it exists already, or is still in use.
pub const CONFLICT: u8 = 7;

/// The exit codes, as every program's `--help` shows them.
pub const EXIT_CODES: &str = "\
Exit status (the same for atrest, atrest-serve and mailbox-move):
  0  done
  1  failed: an I/O or storage error (a full disk, a closed pipe, a file named on the
     command line that cannot be read)
  2  bad usage or configuration: a malformed argument (--version 0, a bad key or range),
     no deployment (run `atrest init`)
  3  not found (tenant, file, version, key, token)
  4  refused: release policy, revoked or destroyed customer key, purged tenant
  5  integrity: a blob, record or catalog entry that does not authenticate or parse, or an
     audit log that does not verify
  6  unavailable: a key service or store could not be reached
  7  conflict: it exists already (deployment, tenant, file version), or is still in use
With --json, an error is also a document {\"error\", \"kind\", \"exit\"} on standard output
(on standard error when standard output carries a file's bytes).";

/// The exit code of a kind of failure.
pub fn kind_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Refused => REFUSED,
        ErrorKind::Integrity => INTEGRITY,
        ErrorKind::Conflict => CONFLICT,
        ErrorKind::Unavailable => UNAVAILABLE,
        ErrorKind::Usage => USAGE,
        ErrorKind::Io => FAILED,
    }
}

/// The name of the kind of failure an exit code stands for, as JSON
/// reports give it.
pub fn code_name(code: u8) -> &'static str {
    match code {
        DONE => "done",
        USAGE => "usage",
        NOT_FOUND => "not_found",
        REFUSED => "refused",
        INTEGRITY => "integrity",
        UNAVAILABLE => "unavailable",
        CONFLICT => "conflict",
        _ => "io",
    }
}

/// Where a JSON error report goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Json {
    /// No JSON (text only).
    Off,
    /// On standard output.
    Stdout,
    /// On standard error: standard output carries data.
    Stderr,
}

/// Reports a failure of `program` with exit code `code`: the message on
/// standard error, and the JSON document where `json` says.
pub fn report(program: &str, message: &str, code: u8, json: Json) {
    crate::errln!("{program}: {message}");
    let document = serde_json::json!({
        "error": message,
        "kind": code_name(code),
        "exit": code,
    });
    match json {
        Json::Off => {}
        Json::Stdout => crate::outln!("{document}"),
        Json::Stderr => crate::errln!("{document}"),
    }
}

/// Reports a command line that did not parse (`--help` and `--version`
/// are not failures: they print and exit 0) as every failure is reported,
/// and returns the exit code.
pub fn report_usage(program: &str, error: &clap::Error) -> u8 {
    use clap::error::ErrorKind as Kind;
    if matches!(
        error.kind(),
        Kind::DisplayHelp | Kind::DisplayVersion | Kind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return if error.use_stderr() { USAGE } else { DONE };
    }
    let rendered = error.render().to_string();
    let message = rendered.trim_end();
    let message = message.strip_prefix("error: ").unwrap_or(message);
    let first = message.lines().next().unwrap_or_default();
    crate::errln!("{program}: {message}");
    if std::env::args_os().any(|arg| arg == "--json") {
        let document = serde_json::json!({ "error": first, "kind": "usage", "exit": USAGE });
        crate::outln!("{document}");
    }
    USAGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_code_and_name() {
        let kinds = [
            ErrorKind::Io,
            ErrorKind::Usage,
            ErrorKind::NotFound,
            ErrorKind::Refused,
            ErrorKind::Integrity,
            ErrorKind::Unavailable,
            ErrorKind::Conflict,
        ];
        let codes: std::collections::BTreeSet<u8> = kinds.iter().map(|k| kind_code(*k)).collect();
        assert_eq!(codes.len(), kinds.len());
        let names: std::collections::BTreeSet<&str> = codes.iter().map(|c| code_name(*c)).collect();
        assert_eq!(names.len(), kinds.len());
        for code in codes {
            assert!(EXIT_CODES.contains(&format!("  {code}  ")), "{code}");
        }
    }
}
