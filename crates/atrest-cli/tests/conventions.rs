//! One convention for the three programs (`atrest`, `atrest-serve`,
//! `mailbox-move`): exit codes by the kind of failure, `PROGRAM: message`
//! on standard error, and with `--json` one document `{"error", "kind",
//! "exit"}` on standard output (standard error when standard output
//! carries a file's bytes); arguments that are malformed are usage errors,
//! and what the operator gives is never taken for evidence of damage.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::{Command, Output};

use atrest_test_support::{TempDir, seeded as content};
use serde_json::Value;

fn run(program: &str, data: &Path, args: &[&str]) -> Output {
    let binary = match program {
        "atrest" => env!("CARGO_BIN_EXE_atrest"),
        "atrest-serve" => env!("CARGO_BIN_EXE_atrest-serve"),
        _ => env!("CARGO_BIN_EXE_mailbox-move"),
    };
    Command::new(binary)
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

/// Runs `program args` and checks that it fails with `code`, a message on
/// standard error that contains `says`, and the same failure as JSON with
/// `--json` (on standard output unless `json_on_stderr`).
fn fails(program: &str, data: &Path, args: &[&str], code: i32, says: &str, json_on_stderr: bool) {
    let output = run(program, data, args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{program} {args:?}: {stderr}"
    );
    assert!(
        stderr.starts_with(&format!("{program}: ")) && stderr.contains(says),
        "{program} {args:?}: {stderr}"
    );
    let mut with_json = vec!["--json"];
    with_json.extend_from_slice(args);
    let output = run(program, data, &with_json);
    assert_eq!(output.status.code(), Some(code), "{program} {with_json:?}");
    let (document, other) = if json_on_stderr {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (
            stderr.lines().last().unwrap_or_default().to_owned(),
            output.stdout,
        )
    } else {
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            Vec::new(),
        )
    };
    let document: Value = serde_json::from_str(document.trim())
        .unwrap_or_else(|e| panic!("{program} {with_json:?}: {e}: {document}"));
    assert_eq!(document["exit"], code, "{document}");
    let kind = match code {
        1 => "io",
        2 => "usage",
        3 => "not_found",
        4 => "refused",
        5 => "integrity",
        6 => "unavailable",
        _ => "conflict",
    };
    assert_eq!(document["kind"], kind, "{document}");
    assert!(
        document["error"].as_str().unwrap().contains(says),
        "{document}"
    );
    assert!(
        other.is_empty(),
        "data on stdout next to an error: {other:?}"
    );
}

#[test]
fn every_program_fails_by_one_convention() {
    let dir = TempDir::new("conventions");
    let data = dir.join("data");
    let atrest = |args: &[&str]| run("atrest", &data, args);
    assert!(atrest(&["init"]).status.success());
    assert!(atrest(&["tenant", "create", "contoso"]).status.success());
    assert!(atrest(&["tenant", "create", "gone"]).status.success());
    let input = dir.join("in.bin");
    std::fs::write(&input, content(50_000, 1)).unwrap();
    assert!(
        atrest(&["put", "contoso", input.to_str().unwrap(), "--name", "a.bin"])
            .status
            .success()
    );
    assert!(atrest(&["purge", "gone", "--yes"]).status.success());

    // atrest: malformed arguments are usage errors (2) ...
    fails(
        "atrest",
        &data,
        &["get", "contoso", "a.bin", "--version", "0", "-o", "x"],
        2,
        "versions start at 1",
        false,
    );
    fails(
        "atrest",
        &data,
        &["get", "contoso", "a.bin", "--version", "x"],
        2,
        "invalid value",
        false,
    );
    fails(
        "atrest",
        &data,
        &["audit", "verify", "--key", "not-a-key"],
        2,
        "the verifying key given",
        false,
    );
    let nowhere = dir.join("nowhere");
    fails(
        "atrest",
        &data,
        &["audit", "verify", "--witness", nowhere.to_str().unwrap()],
        2,
        "is not a directory",
        false,
    );
    fails(
        "atrest",
        &data,
        &["tenant", "create", "Contoso"],
        2,
        "lower case",
        false,
    );
    fails(
        "atrest",
        &data,
        &["tenant", "create", "con toso"],
        2,
        "tenant name",
        false,
    );
    // ... an input that cannot be read is I/O (1), as `cat` says ...
    let missing = dir.join("missing.bin");
    fails(
        "atrest",
        &data,
        &["put", "contoso", missing.to_str().unwrap()],
        1,
        "No such file",
        false,
    );
    // ... what is not there is not found (3), refusals are refused (4) ...
    fails(
        "atrest",
        &data,
        &["get", "nobody", "a.bin", "-o", "x"],
        3,
        "no tenant named",
        false,
    );
    fails(
        "atrest",
        &data,
        &["get", "Contoso", "a.bin", "-o", "x"],
        3,
        "tenant names are lower case",
        false,
    );
    fails(
        "atrest",
        &data,
        &["ls", "contoso", "b.bin"],
        3,
        "no file named",
        false,
    );
    // The error of a get whose bytes go to standard output is never
    // mixed into them: its JSON goes to standard error.
    fails(
        "atrest",
        &data,
        &["get", "contoso", "b.bin"],
        3,
        "b.bin",
        true,
    );
    fails(
        "atrest",
        &data,
        &["get", "contoso", "a.bin", "--as", "eve@fabrikam", "-o", "x"],
        4,
        "denied",
        false,
    );
    // ... and a blob that is gone from every copy is damage (5), said so.
    for entry in std::fs::read_dir(data.join("blobs")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    fails(
        "atrest",
        &data,
        &["get", "contoso", "a.bin", "-o", "x"],
        5,
        "missing from the blob store",
        false,
    );

    // atrest-serve: the same codes, and its token list as JSON.
    fails(
        "atrest-serve",
        &data,
        &["token", "add", "no-at-sign"],
        2,
        "user@tenant",
        false,
    );
    fails(
        "atrest-serve",
        &data,
        &["token", "add", "alice@nowhere"],
        3,
        "no tenant named \"nowhere\"",
        false,
    );
    fails(
        "atrest-serve",
        &data,
        &["token", "revoke", "deadbeef"],
        3,
        "no token",
        false,
    );
    let added = run(
        "atrest-serve",
        &data,
        &["--json", "token", "add", "alice@contoso"],
    );
    assert!(added.status.success());
    let added: Value = serde_json::from_slice(&added.stdout).unwrap();
    let listed = run("atrest-serve", &data, &["--json", "token", "list"]);
    assert!(listed.status.success());
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["id"], added["id"], "{listed}");
    assert_eq!(listed[0]["principal"], "alice@contoso");
    assert!(listed[0].get("sha256").is_none(), "{listed}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    fails(
        "atrest-serve",
        &data,
        &["serve", "--plain-http", "--listen", &address],
        1,
        "cannot listen",
        false,
    );

    // mailbox-move: the tenant by its name, the CLI's codes, JSON errors.
    let source = dir.join("mailbox");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("1.eml"), b"hello").unwrap();
    let source = source.to_str().unwrap();
    fails(
        "mailbox-move",
        &data,
        &["nobody", source],
        3,
        "no tenant named \"nobody\"",
        false,
    );
    fails(
        "mailbox-move",
        &data,
        &["gone", source],
        4,
        "\"gone\"",
        false,
    );
    fails(
        "mailbox-move",
        &data,
        &["--batch", "0", "contoso", source],
        2,
        "invalid value",
        false,
    );
}

#[test]
fn completions_and_the_manual_come_from_the_command_line() {
    let dir = TempDir::new("conventions-docs");
    let data = dir.join("data");
    let bash = run("atrest", &data, &["completions", "bash"]);
    assert!(bash.status.success());
    let bash = String::from_utf8(bash.stdout).unwrap();
    for command in ["put", "get", "gc", "recover", "completions"] {
        assert!(bash.contains(command), "{command} not in the completions");
    }
    let man = run("atrest", &data, &["man"]);
    assert!(man.status.success());
    let man = String::from_utf8(man.stdout).unwrap();
    assert!(
        man.starts_with(".ie") || man.contains(".TH atrest"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(
        man.contains("Exit status"),
        "the manual gives the exit codes"
    );
}

#[test]
fn what_the_operator_needs_to_know_is_said() {
    let dir = TempDir::new("conventions-said");
    // init warns when the witness sits inside the deployment directory,
    // and not when it is elsewhere.
    let inside = run("atrest", &dir.join("inside"), &["init"]);
    assert!(inside.status.success());
    let said = String::from_utf8_lossy(&inside.stderr);
    assert!(
        said.contains("warning: the audit witness") && said.contains("inside"),
        "{said}"
    );
    let witness = dir.join("witness");
    let elsewhere = run(
        "atrest",
        &dir.join("elsewhere"),
        &["init", "--audit-witness", witness.to_str().unwrap()],
    );
    assert!(elsewhere.status.success());
    assert!(
        elsewhere.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&elsewhere.stderr)
    );

    // serve --init shows the audit verifying key that init shows.
    let data = dir.join("served");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_atrest-serve"))
        .arg("--data")
        .arg(&data)
        .args(["serve", "--init", "--plain-http", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(serve.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("atrest-serve: listening on"), "{line}");
    serve.kill().unwrap();
    let output = serve.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    let config: Value =
        serde_json::from_slice(&std::fs::read(data.join("atrest.json")).unwrap()).unwrap();
    let key = config["audit_verifying_key"].as_str().unwrap();
    assert!(said.contains(key), "{said}");

    // The demo leaves nothing behind unless asked to keep its directory.
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let demo = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_atrest"))
            .args(["--json", "demo", "--size-mib", "1"])
            .args(args)
            .env("TMPDIR", &tmp)
            .output()
            .unwrap()
    };
    let cleaned = demo(&[]);
    assert!(
        cleaned.status.success(),
        "{}",
        String::from_utf8_lossy(&cleaned.stderr)
    );
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    let kept = demo(&["--keep"]);
    assert!(kept.status.success());
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1);
    assert!(String::from_utf8_lossy(&kept.stderr).contains("kept"));
}
