//! Verifies an atrest audit log with a verifying key you trust and, if
//! given, against a witness directory, and reports the first problem.
//!
//! ```text
//! audit-verify LOG_DIR VERIFYING_KEY [WITNESS_DIR] [CHECKPOINT_FILE ...]
//! ```
//!
//! `VERIFYING_KEY` is the text form `name+keyid+base64key` (or a file holding
//! it). Every line must chain to the one before and the log must end with a
//! checkpoint line signed by that key. With `WITNESS_DIR` (a
//! [`DirectoryWitness`]), the log is also checked against the newest
//! checkpoint published there; further checkpoint files (copies kept
//! elsewhere, in the C2SP-style text form) are checked too. Exit status: 0
//! verified, 1 a problem was found, 2 the command could not run.

use std::path::Path;
use std::process::ExitCode;

use atrest_audit::{Checkpoint, DirectoryWitness, VerifyingKey, Witness as _, read_origin, verify};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, key, extra @ ..] = args.as_slice() else {
        eprintln!("usage: audit-verify LOG_DIR VERIFYING_KEY [WITNESS_DIR] [CHECKPOINT_FILE ...]");
        return ExitCode::from(2);
    };
    match run(dir, key, extra) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("audit-verify: {error}");
            ExitCode::from(2)
        }
    }
}

fn run(dir: &str, key: &str, extra: &[String]) -> Result<bool, Box<dyn std::error::Error>> {
    let key_text = std::fs::read_to_string(key).unwrap_or_else(|_| key.to_owned());
    let key = VerifyingKey::parse(&key_text)?;
    let mut checkpoints = Vec::new();
    for path in extra {
        if Path::new(path).is_dir() {
            let witness = DirectoryWitness::new(path);
            checkpoints.extend(witness.latest(&read_origin(dir)?)?);
            continue;
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        checkpoints.push(Checkpoint::parse(&text).map_err(|e| format!("{path}: {e}"))?);
    }
    let report = verify(dir, &checkpoints, &key)?;
    println!("lines verified       {}", report.records);
    println!("head                 {}", hex(&report.head));
    match report.signed {
        Some(size) => println!("signed through       line {size}"),
        None => println!("signed through       (no verified signature)"),
    }
    println!(
        "checkpoints verified {} of {}",
        report.checkpoints_verified,
        checkpoints.len()
    );
    match &report.problem {
        None => {
            println!("result               OK");
            Ok(true)
        }
        Some(problem) => {
            println!("result               FAILED: {problem}");
            Ok(false)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
