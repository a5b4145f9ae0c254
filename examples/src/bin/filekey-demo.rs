//! Generates, wraps and unwraps per-file keys for a tenant and prints a short
//! report: what a wrapped key looks like, that every other context fails, and
//! the rates on this machine.
//!
//! ```text
//! cargo run --release -p atrest-examples --bin filekey-demo [-- COUNT]
//! ```

use std::process::ExitCode;
use std::time::Instant;

use atrest_filekey::{
    Error, FileContext, FileId, FileKey, FileVersion, Kek, KeyId, KeyVersion, OsRng, TenantId,
    WrappedFileKey,
};

const DEFAULT_COUNT: u32 = 1_000_000;

fn main() -> ExitCode {
    let count = match std::env::args().nth(1).map(|arg| arg.parse::<u32>()) {
        None => DEFAULT_COUNT,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!(
                "usage: filekey-demo [COUNT]   (COUNT: a positive number of keys, default {DEFAULT_COUNT})"
            );
            return ExitCode::from(2);
        }
    };
    match run(count) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("filekey-demo: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(count: u32) -> Result<(), Error> {
    let mut rng = OsRng;
    let tenant = TenantId::random(&mut rng)?;
    let kek = Kek::generate(KeyId::random(&mut rng)?, KeyVersion::FIRST, &mut rng)?;
    println!("tenant             {tenant}");
    println!("key-encryption key {} version {}", kek.id(), kek.version());

    let context = FileContext::new(tenant, FileId::random(&mut rng)?, FileVersion::FIRST);
    let key = FileKey::generate_with(&mut rng)?;
    let wrapped = kek.wrap(&key, &context, &mut rng)?;
    println!(
        "file               {} version {}",
        context.file, context.version
    );
    println!(
        "wrapped file key   {} bytes: {}",
        WrappedFileKey::LEN,
        hex(wrapped.as_bytes())
    );

    let checks = [
        (
            "another tenant",
            FileContext {
                tenant: TenantId::random(&mut rng)?,
                ..context
            },
        ),
        (
            "another file",
            FileContext {
                file: FileId::random(&mut rng)?,
                ..context
            },
        ),
        (
            "another version",
            FileContext {
                version: FileVersion::new(2)?,
                ..context
            },
        ),
    ];
    for (what, other) in checks {
        let outcome = match kek.unwrap(&wrapped, &other) {
            Err(Error::AuthenticationFailed) => "rejected",
            Err(_) | Ok(_) => return Err(Error::AuthenticationFailed),
        };
        println!("unwrap for {what:<15} {outcome}");
    }
    let unwrapped = kek.unwrap(&wrapped, &context)?;
    println!(
        "unwrap for the right file   {}",
        if unwrapped.expose_secret() == key.expose_secret() {
            "ok"
        } else {
            "MISMATCH"
        }
    );

    println!("\n{count} keys on one thread:");
    let mut keys = Vec::with_capacity(count as usize);
    let start = Instant::now();
    for _ in 0..count {
        let key = FileKey::generate_with(&mut rng)?;
        keys.push(kek.wrap(&key, &context, &mut rng)?);
    }
    report("generate + wrap", count, start);
    let start = Instant::now();
    for wrapped in &keys {
        drop(kek.unwrap(wrapped, &context)?);
    }
    report("unwrap", count, start);
    Ok(())
}

fn report(what: &str, count: u32, start: Instant) {
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "  {what:<16} {:>12.0} per second",
        f64::from(count) / seconds
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
