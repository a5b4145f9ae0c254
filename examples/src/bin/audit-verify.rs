//! Verifies an atrest audit log against its checkpoints and reports the
//! first bad record.
//!
//! ```text
//! audit-verify LOG_DIR VERIFYING_KEY [CHECKPOINT_FILE ...]
//! ```
//!
//! `VERIFYING_KEY` is the text form `name+keyid+base64key` (or a file holding
//! it). The checkpoints stored in `LOG_DIR/checkpoints/` are always checked;
//! name further checkpoint files — the copies kept away from the log — to
//! check those too. Exit status: 0 verified, 1 a problem was found, 2 the
//! command could not run.

use std::process::ExitCode;

use atrest_audit::{Checkpoint, VerifyingKey, stored_checkpoints, verify};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, key, extra @ ..] = args.as_slice() else {
        eprintln!("usage: audit-verify LOG_DIR VERIFYING_KEY [CHECKPOINT_FILE ...]");
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
    let mut checkpoints = stored_checkpoints(dir)?;
    for path in extra {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        checkpoints.push(Checkpoint::parse(&text).map_err(|e| format!("{path}: {e}"))?);
    }
    let report = verify(dir, &checkpoints, &key)?;
    println!("records verified     {}", report.records);
    println!("head                 {}", hex(&report.head));
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
