//! The `atrest` program with replicas, driven as an operator would: `init
//! --replica … --copies N`, uploads that succeed while a replica is down,
//! downloads that come around a deleted or damaged copy, and `blobs scrub`
//! (with and without `--repair`) reporting and fixing the copies.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use atrest_test_support::{TempDir, seeded as content};
use serde_json::Value;

struct Cli {
    data: PathBuf,
    env: Vec<(String, String)>,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_atrest"));
        command.arg("--data").arg(&self.data).args(args);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command.output().unwrap()
    }

    /// Runs and expects exit status `code`; returns stdout.
    fn expect(&self, code: i32, args: &[&str]) -> String {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(
            output.status.code(),
            Some(code),
            "atrest {args:?}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    fn ok(&self, args: &[&str]) -> String {
        self.expect(0, args)
    }

    /// `blobs scrub` (with `extra` arguments) as JSON, expecting `code`.
    fn scrub(&self, code: i32, extra: &[&str]) -> Value {
        let mut args = vec!["--json", "blobs", "scrub"];
        args.extend_from_slice(extra);
        // A failing command prints its error as a second document.
        let stdout = self.expect(code, &args);
        serde_json::Deserializer::from_str(&stdout)
            .into_iter::<Value>()
            .next()
            .unwrap()
            .unwrap()
    }

    fn get(&self, name: &str) -> Vec<u8> {
        let output = self.run(&["get", "contoso", name]);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        output.stdout
    }
}

/// The one blob in directory `dir`.
fn only_blob(dir: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.into_iter().next().unwrap()
}

/// The states of the bad copies a JSON scrub report lists, as
/// (location index, state).
fn bad_copies(report: &Value) -> Vec<(u64, String)> {
    let mut bad = Vec::new();
    for record in report["damaged"].as_array().unwrap() {
        for copy in record["copies"].as_array().unwrap() {
            let state = copy["state"].as_str().unwrap().to_owned();
            if state != "good" {
                bad.push((copy["location"].as_u64().unwrap(), state));
            }
        }
    }
    bad
}

fn take_down(dir: &Path) {
    std::fs::rename(dir, dir.with_extension("away")).unwrap();
    std::fs::write(dir, b"not a directory").unwrap();
}

fn bring_back(dir: &Path) {
    std::fs::remove_file(dir).unwrap();
    std::fs::rename(dir.with_extension("away"), dir).unwrap();
}

#[test]
fn copies_are_read_around_scrubbed_and_repaired() {
    let dir = TempDir::new("cli-replicas");
    let cli = Cli {
        data: dir.path().join("data"),
        env: Vec::new(),
    };
    let r1 = dir.path().join("replica-1");
    let r2 = dir.path().join("replica-2");
    let init = cli.ok(&[
        "init",
        "--replica",
        r1.to_str().unwrap(),
        "--replica",
        r2.to_str().unwrap(),
        "--copies",
        "2",
    ]);
    assert!(
        init.contains("replica-1") && init.contains("replica-2"),
        "{init}"
    );
    cli.ok(&["tenant", "create", "contoso"]);
    let bytes = content(900_000, 3);
    let input = dir.path().join("report.pdf");
    std::fs::write(&input, &bytes).unwrap();
    cli.ok(&["put", "contoso", input.to_str().unwrap()]);
    let primary = only_blob(&cli.data.join("blobs"));
    let copy1 = only_blob(&r1);
    let copy2 = only_blob(&r2);
    let sealed = std::fs::read(&primary).unwrap();
    assert_eq!(std::fs::read(&copy1).unwrap(), sealed);
    assert_eq!(std::fs::read(&copy2).unwrap(), sealed);
    let clean = cli.scrub(0, &[]);
    assert_eq!(clean["records"], 1);
    assert!(bad_copies(&clean).is_empty());

    // The primary's copy is deleted and the first replica's has a flipped
    // byte: downloads come from the good copy left.
    std::fs::remove_file(&primary).unwrap();
    let mut flipped = sealed.clone();
    flipped[400_000] ^= 4;
    std::fs::write(&copy1, &flipped).unwrap();
    assert_eq!(cli.get("report.pdf"), bytes);
    let found = cli.scrub(5, &[]);
    assert_eq!(
        bad_copies(&found),
        [(0, "missing".to_owned()), (1, "wrong_digest".to_owned())]
    );
    let text = cli.expect(5, &["blobs", "scrub"]);
    assert!(
        text.contains("missing") && text.contains("wrong digest"),
        "{text}"
    );

    let repaired = cli.scrub(0, &["--repair"]);
    for record in repaired["damaged"].as_array().unwrap() {
        for copy in record["copies"].as_array().unwrap() {
            if copy["state"] != "good" {
                assert_eq!(copy["repair"]["outcome"], "repaired", "{repaired}");
            }
        }
    }
    assert!(bad_copies(&cli.scrub(0, &[])).is_empty());
    assert_eq!(std::fs::read(&primary).unwrap(), sealed);
    assert_eq!(std::fs::read(&copy1).unwrap(), sealed);

    // A truncated copy: reported as the wrong length, and repaired.
    std::fs::write(&copy2, &sealed[..sealed.len() - 100]).unwrap();
    let found = cli.scrub(5, &[]);
    assert_eq!(bad_copies(&found), [(2, "wrong_length".to_owned())]);
    assert_eq!(found["damaged"][0]["copies"][2]["len"], sealed.len() - 100);
    let _ = cli.scrub(0, &["--repair"]);
    assert!(bad_copies(&cli.scrub(0, &[])).is_empty());
    assert_eq!(cli.get("report.pdf"), bytes);

    // Every copy damaged: nothing to repair from, and the download fails
    // as an integrity failure. To a file, without a byte of output; to
    // standard output, which is written as segments verify, with no more
    // than the verified segments before the damaged one.
    for copy in [&primary, &copy1, &copy2] {
        std::fs::write(copy, &flipped).unwrap();
    }
    let target = dir.path().join("copy.pdf");
    let output = cli.run(&[
        "get",
        "contoso",
        "report.pdf",
        "-o",
        target.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(5));
    assert!(!target.exists());
    let output = cli.run(&["get", "contoso", "report.pdf"]);
    assert_eq!(output.status.code(), Some(5));
    // The damaged byte is in the seventh segment (of 64 KiB, the first
    // shortened by the 40-byte header).
    let released = output.stdout.len();
    assert!(released <= 6 * (64 * 1024 - 16) - 40, "{released} released");
    assert!(bytes.starts_with(&output.stdout));
    let _ = cli.scrub(5, &["--repair"]);

    // The scrubs are in the audit trail.
    let audit = cli.ok(&["audit", "show"]);
    assert!(audit.contains("blobs_scrubbed"), "{audit}");
    // So are the copies downloads passed over.
    assert!(audit.contains("blob_copy_passed_over"), "{audit}");
}

#[test]
fn a_replica_down_takes_no_upload_while_copies_allow_and_is_repaired_when_back() {
    let dir = TempDir::new("cli-replica-down");
    let cli = Cli {
        data: dir.path().join("data"),
        env: Vec::new(),
    };
    let r1 = dir.path().join("replica-1");
    let r2 = dir.path().join("replica-2");
    cli.ok(&[
        "init",
        "--replica",
        r1.to_str().unwrap(),
        "--replica",
        r2.to_str().unwrap(),
        "--copies",
        "2",
    ]);
    cli.ok(&["tenant", "create", "contoso"]);
    take_down(&r2);
    let bytes = content(200_000, 4);
    let input = dir.path().join("notes.txt");
    std::fs::write(&input, &bytes).unwrap();
    let output = cli.run(&["--json", "put", "contoso", input.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let put: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(put["copy_failures"].as_array().unwrap().len(), 1, "{put}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("blobs scrub --repair"));
    assert_eq!(cli.get("notes.txt"), bytes);

    // Only an unreachable location is left bad: exit 6, and a repair
    // cannot reach it either.
    let found = cli.scrub(6, &[]);
    assert_eq!(bad_copies(&found), [(2, "unreachable".to_owned())]);
    let _ = cli.scrub(6, &["--repair"]);

    // A second replica down: too few locations for two copies, so the
    // upload fails and leaves no version.
    take_down(&r1);
    let second = dir.path().join("second.txt");
    std::fs::write(&second, b"second").unwrap();
    let failed = cli.run(&["put", "contoso", second.to_str().unwrap()]);
    assert_ne!(failed.status.code(), Some(0), "{failed:?}");
    let listing = cli.ok(&["ls", "contoso"]);
    assert!(!listing.contains("second.txt"), "{listing}");
    bring_back(&r1);
    bring_back(&r2);

    // Back: the missing copy is made, and a second scrub is clean.
    let found = cli.scrub(5, &[]);
    assert_eq!(bad_copies(&found), [(2, "missing".to_owned())]);
    let _ = cli.scrub(0, &["--repair"]);
    assert!(bad_copies(&cli.scrub(0, &[])).is_empty());
    assert_eq!(
        std::fs::read(only_blob(&r2)).unwrap(),
        std::fs::read(only_blob(&cli.data.join("blobs"))).unwrap()
    );
    // The failed upload left no blob anywhere.
    assert_eq!(std::fs::read_dir(&r1).unwrap().count(), 1);
    let _ = cli.ok(&["gc"]);
    assert_eq!(std::fs::read_dir(&r1).unwrap().count(), 1);
}

#[test]
fn a_replica_with_nothing_listening_is_passed_over_and_reported() {
    let dir = TempDir::new("cli-nothing-listening");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cli = Cli {
        data: dir.path().join("data"),
        env: vec![
            ("AZURE_STORAGE_ACCOUNT_NAME".into(), "devstoreaccount1".into()),
            // Azurite's published development key: protects nothing.
            (
                "AZURE_STORAGE_ACCOUNT_KEY".into(),
                "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
                    .into(),
            ),
            (
                "AZURE_STORAGE_ENDPOINT".into(),
                format!("http://127.0.0.1:{port}/devstoreaccount1"),
            ),
            ("AZURE_ALLOW_HTTP".into(), "true".into()),
        ],
    };
    let replica = dir.path().join("replica");
    cli.ok(&[
        "init",
        "--replica",
        "az://down",
        "--replica",
        replica.to_str().unwrap(),
        "--copies",
        "2",
    ]);
    cli.ok(&["tenant", "create", "contoso"]);
    let bytes = content(300_000, 8);
    let input = dir.path().join("minutes.txt");
    std::fs::write(&input, &bytes).unwrap();
    let put: Value =
        serde_json::from_str(&cli.ok(&["--json", "put", "contoso", input.to_str().unwrap()]))
            .unwrap();
    assert_eq!(put["copy_failures"][0]["location"], "az://down", "{put}");
    std::fs::remove_file(only_blob(&cli.data.join("blobs"))).unwrap();
    assert_eq!(cli.get("minutes.txt"), bytes);
    let found = cli.scrub(5, &[]);
    assert_eq!(
        bad_copies(&found),
        [(0, "missing".to_owned()), (1, "unreachable".to_owned())]
    );
    // The primary is repaired; the location that does not answer is left
    // for later, and the scrub says only an unreachable location is bad.
    let repaired = cli.scrub(6, &["--repair"]);
    assert_eq!(
        repaired["damaged"][0]["copies"][0]["repair"]["outcome"],
        "repaired"
    );
    assert_eq!(
        bad_copies(&cli.scrub(6, &[])),
        [(1, "unreachable".to_owned())]
    );
}

#[test]
fn init_checks_copies_and_stays_all_or_nothing() {
    let dir = TempDir::new("cli-replica-init");
    let cli = Cli {
        data: dir.path().join("data"),
        env: Vec::new(),
    };
    let replica = dir.path().join("replica");
    // --copies needs a replica; more copies than locations is refused,
    // and nothing is left behind.
    cli.expect(2, &["init", "--copies", "1"]);
    cli.expect(
        2,
        &[
            "init",
            "--replica",
            replica.to_str().unwrap(),
            "--copies",
            "3",
        ],
    );
    cli.expect(
        2,
        &[
            "init",
            "--replica",
            replica.to_str().unwrap(),
            "--copies",
            "0",
        ],
    );
    assert!(!cli.data.exists() && !replica.exists());
    // A replica URL that does not parse: refused, nothing made.
    cli.expect(
        2,
        &[
            "init",
            "--replica",
            replica.to_str().unwrap(),
            "--replica",
            "nope://x",
        ],
    );
    assert!(!cli.data.exists() && !replica.exists());
    // Without --copies, every location must keep a copy.
    cli.ok(&["init", "--replica", replica.to_str().unwrap()]);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(cli.data.join("atrest.json")).unwrap())
            .unwrap();
    assert_eq!(config["copies"], 2);
    assert_eq!(config["replicas"][0], replica.to_str().unwrap());
}

#[test]
fn a_deployment_without_replicas_is_scrubbed_too() {
    let dir = TempDir::new("cli-no-replicas");
    let cli = Cli {
        data: dir.path().join("data"),
        env: Vec::new(),
    };
    cli.ok(&["init"]);
    let config = std::fs::read_to_string(cli.data.join("atrest.json")).unwrap();
    assert!(!config.contains("replicas") && !config.contains("copies"));
    cli.ok(&["tenant", "create", "contoso"]);
    let input = dir.path().join("a.txt");
    std::fs::write(&input, b"hello").unwrap();
    cli.ok(&["put", "contoso", input.to_str().unwrap()]);
    let clean = cli.scrub(0, &[]);
    assert_eq!(clean["locations"].as_array().unwrap().len(), 1);
    // Seals record no digest without replicas: the report says the copies
    // were checked by length only.
    assert_eq!(clean["records_without_digest"], 1);
    let text = cli.ok(&["blobs", "scrub"]);
    assert!(text.contains("checked by length only"), "{text}");
    std::fs::remove_file(only_blob(&cli.data.join("blobs"))).unwrap();
    let found = cli.scrub(5, &["--repair"]);
    assert_eq!(bad_copies(&found), [(0, "missing".to_owned())]);
    assert_eq!(
        found["damaged"][0]["copies"][0]["repair"]["outcome"],
        "failed"
    );
}

/// A replica in Azure storage (the Azurite emulator) and another Azure
/// location that takes nothing (its container does not exist): uploads
/// succeed with two copies of three, downloads come around a deleted
/// primary copy, and the scrub repairs what it can reach.
#[test]
fn an_azure_replica_and_a_location_down() {
    let azurite = atrest_test_support::azurite::azurite();
    let dir = TempDir::new("cli-azure-replica");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let container = format!("atrest-replica-{nanos:x}");
    azurite.create_container(&container);
    let cli = Cli {
        data: dir.path().join("data"),
        env: azurite
            .options()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect(),
    };
    let azure = format!("az://{container}");
    let down = format!("az://atrest-missing-{nanos:x}");
    cli.ok(&[
        "init",
        "--replica",
        &azure,
        "--replica",
        &down,
        "--copies",
        "2",
    ]);
    cli.ok(&["tenant", "create", "contoso"]);
    let bytes = content(2_000_000, 5);
    let input = dir.path().join("big.bin");
    std::fs::write(&input, &bytes).unwrap();
    let put: Value =
        serde_json::from_str(&cli.ok(&["--json", "put", "contoso", input.to_str().unwrap()]))
            .unwrap();
    assert_eq!(put["copy_failures"].as_array().unwrap().len(), 1, "{put}");
    std::fs::remove_file(only_blob(&cli.data.join("blobs"))).unwrap();
    assert_eq!(cli.get("big.bin"), bytes);
    let found = cli.scrub(5, &[]);
    let bad = bad_copies(&found);
    assert_eq!(bad.len(), 2, "{found}");
    assert_eq!(bad[0], (0, "missing".to_owned()));
    assert_eq!(bad[1].0, 2);
    let repaired = cli.scrub(5, &["--repair"]);
    assert_eq!(
        repaired["damaged"][0]["copies"][0]["repair"]["outcome"],
        "repaired"
    );
    let again = cli.scrub(5, &[]);
    assert_eq!(bad_copies(&again).len(), 1);
    assert_eq!(bad_copies(&again)[0].0, 2);
    assert_eq!(cli.get("big.bin"), bytes);
}

/// A deployment in `dir` with one replica and two copies, and one file of
/// contoso (`report.pdf`, content `seed`): `(cli, its bytes, the primary's
/// blob file, the replica's)`.
fn one_replicated_file(dir: &TempDir, seed: u64) -> (Cli, Vec<u8>, PathBuf, PathBuf) {
    let cli = Cli {
        data: dir.path().join("data"),
        env: Vec::new(),
    };
    let r1 = dir.path().join("replica-1");
    cli.ok(&["init", "--replica", r1.to_str().unwrap(), "--copies", "2"]);
    cli.ok(&["tenant", "create", "contoso"]);
    let bytes = content(300_000, seed);
    let input = dir.path().join("report.pdf");
    std::fs::write(&input, &bytes).unwrap();
    cli.ok(&["put", "contoso", input.to_str().unwrap()]);
    let primary = only_blob(&cli.data.join("blobs"));
    let replica = only_blob(&r1);
    (cli, bytes, primary, replica)
}

/// A writer of one replica damages its copy, and a writer of the database
/// sets the record's digest to the damaged copy's, so that the good copies
/// look bad and the damaged one good: the repair authenticates the record
/// first and writes nothing, and the good copies stay as they were.
#[test]
fn a_repair_never_trusts_a_forged_digest() {
    use sha2::Digest as _;
    let dir = TempDir::new("cli-replicas-forged");
    let (cli, _, primary, replica) = one_replicated_file(&dir, 5);
    let sealed = std::fs::read(&primary).unwrap();

    let mut damaged = sealed.clone();
    damaged[200_000] ^= 1;
    std::fs::write(&replica, &damaged).unwrap();
    let forged = sha2::Sha256::digest(&damaged).to_vec();
    let db =
        atrest_test_support::sqlite::Connection::open(cli.data.join("catalog.sqlite")).unwrap();
    assert_eq!(
        db.execute("UPDATE catalog_versions SET blob_sha256 = ?1", [&forged])
            .unwrap(),
        1
    );
    drop(db);

    // The check, keyless, sees the primary as the bad copy...
    let found = cli.scrub(5, &[]);
    assert_eq!(bad_copies(&found), [(0, "wrong_digest".to_owned())]);
    // ... and the repair refuses the record: nothing is written.
    let refused = cli.scrub(5, &["--repair"]);
    let outcome = &refused["damaged"][0]["copies"][0]["repair"];
    assert_eq!(outcome["outcome"], "failed", "{refused}");
    assert!(
        outcome["error"]
            .as_str()
            .unwrap()
            .contains("does not authenticate"),
        "{refused}"
    );
    assert_eq!(std::fs::read(&primary).unwrap(), sealed);
    assert_eq!(std::fs::read(&replica).unwrap(), damaged);
    // The download refuses the edited record too; nothing of the damaged
    // copy is ever released.
    let output = cli.run(&["get", "contoso", "report.pdf"]);
    assert_eq!(output.status.code(), Some(5), "{output:?}");
}

/// A record with its true digest, and a copy of the right digest: the
/// repair authenticates that copy whole before writing it, and checks what
/// it wrote; the file opens from every copy afterwards.
#[test]
fn a_repair_authenticates_its_source_and_what_it_wrote() {
    let dir = TempDir::new("cli-replicas-verified");
    let (cli, bytes, primary, replica) = one_replicated_file(&dir, 6);
    std::fs::remove_file(&primary).unwrap();
    let repaired = cli.scrub(0, &["--repair"]);
    assert_eq!(
        repaired["damaged"][0]["copies"][0]["repair"]["outcome"], "repaired",
        "{repaired}"
    );
    assert_eq!(repaired["records_without_digest"], 0);
    // The key the repair used was released to the operation, audited.
    let audit = cli.ok(&["audit", "show"]);
    assert!(audit.contains("blobs repair"), "{audit}");
    std::fs::remove_file(replica).unwrap();
    assert_eq!(cli.get("report.pdf"), bytes);
}
