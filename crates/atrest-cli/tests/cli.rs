//! The `atrest` program driven as an operator would: a
//! fresh data directory, commands in sequence, checking output, exit codes
//! and files.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod name_edits;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use atrest_test_support::softhsm::SoftHsm;
use atrest_test_support::{TempDir, seeded as content};
use name_edits::NameEdits;

struct Cli {
    data: PathBuf,
    env: Vec<(String, String)>,
}

impl Cli {
    fn new(dir: &Path) -> Self {
        Self {
            data: dir.join("data"),
            env: Vec::new(),
        }
    }

    /// The program on this deployment, with this environment, to be given
    /// its arguments.
    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_atrest"));
        command.arg("--data").arg(&self.data);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs and expects exit status `code`; returns stdout.
    fn expect(&self, code: i32, args: &[&str]) -> String {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(code),
            "atrest {args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        if code != 0 {
            assert!(
                stderr.starts_with("atrest: "),
                "error message for {args:?}: {stderr}"
            );
        }
        stdout
    }

    fn ok(&self, args: &[&str]) -> String {
        self.expect(0, args)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

/// A fresh deployment in `dir` with tenant `contoso`, holding `bytes` as
/// file `name` (also written to `dir/name`, whose path is returned).
fn deployment_with_file(dir: &Path, name: &str, bytes: &[u8]) -> (Cli, PathBuf) {
    let cli = Cli::new(dir);
    cli.ok(&["init"]);
    cli.ok(&["tenant", "create", "contoso"]);
    let file = dir.join(name);
    std::fs::write(&file, bytes).unwrap();
    cli.ok(&["put", "contoso", file.to_str().unwrap()]);
    (cli, file)
}

fn blobs(data: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(data.join("blobs"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_session_from_init_to_purge() {
    let dir = TempDir::new("session");
    let cli = Cli::new(dir.path());
    // Nothing works before init, and says so.
    let output = cli.run(&["ls"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("atrest init"));

    cli.ok(&["init"]);
    cli.expect(7, &["init"]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(cli.data.join("master.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    cli.ok(&["tenant", "create", "contoso"]);
    cli.ok(&["tenant", "create", "fabrikam"]);
    cli.expect(7, &["tenant", "create", "contoso"]);

    let report = dir.path().join("quarterly report.pdf");
    let plain = content(1_300_000, 7);
    std::fs::write(&report, &plain).unwrap();
    let put = cli.json(&["put", "contoso", report.to_str().unwrap()]);
    assert_eq!(put["version"], 1);
    assert_eq!(put["record"]["plaintext_len"], 1_300_000);
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, b"fabrikam notes").unwrap();
    cli.ok(&["put", "fabrikam", notes.to_str().unwrap()]);
    // A second version of the same name.
    let put2 = cli.json(&["put", "contoso", report.to_str().unwrap()]);
    assert_eq!(put2["version"], 2);

    let listing = cli.json(&["ls", "contoso", "--versions"]);
    let names: Vec<_> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["quarterly report.pdf", "quarterly report.pdf"]);
    assert!(cli.ok(&["ls"]).contains("notes.txt"));
    // Without --versions, the newest of each file; one file's versions.
    let newest = cli.json(&["ls", "contoso"]);
    assert_eq!(newest.as_array().unwrap().len(), 1, "{newest}");
    assert_eq!(newest[0]["version"], 2);
    let one = cli.json(&["ls", "contoso", "quarterly report.pdf"]);
    assert_eq!(one, listing);
    assert_eq!(
        cli.json(&["ls", "contoso", "--prefix", "quarterly"]),
        newest
    );
    assert_eq!(
        cli.json(&["ls", "contoso", "--prefix", "notes"]),
        serde_json::json!([])
    );
    cli.expect(3, &["ls", "contoso", "nothing.txt"]);

    // Whole file, to a file and to stdout.
    let back = dir.path().join("back.pdf");
    cli.ok(&[
        "get",
        "contoso",
        "quarterly report.pdf",
        "-o",
        back.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&back).unwrap(), plain);
    let output = cli.run(&["get", "fabrikam", "notes.txt"]);
    assert_eq!(output.stdout, b"fabrikam notes");
    // Exact ranges, at segment boundaries and inside segments.
    for (range, start, end) in [
        ("10K..20K", 10_240, 20_480),
        ("0..1", 0, 1),
        ("65000..200000", 65_000, 200_000),
        ("1299999..1300000", 1_299_999, 1_300_000),
        // An end past the end of the file stops there.
        ("0..2M", 0, 1_300_000),
    ] {
        let output = cli.run(&["get", "contoso", "quarterly report.pdf", "--range", range]);
        assert!(output.status.success(), "{range}");
        assert_eq!(output.stdout, plain[start..end], "{range}");
    }
    cli.expect(
        2,
        &["get", "contoso", "quarterly report.pdf", "--range", "5..5"],
    );
    cli.expect(
        2,
        &[
            "get",
            "contoso",
            "quarterly report.pdf",
            "--range",
            "20..10",
        ],
    );
    cli.expect(
        2,
        &[
            "get",
            "contoso",
            "quarterly report.pdf",
            "--range",
            "ten..20",
        ],
    );

    // Storage can neither identify nor read what it holds.
    let tenants = cli.json(&["tenant", "list"]);
    let mut needles: Vec<Vec<u8>> = vec![
        b"contoso".to_vec(),
        b"fabrikam".to_vec(),
        b"quarterly".to_vec(),
        b"notes.txt".to_vec(),
    ];
    for tenant in tenants.as_array().unwrap() {
        let id = tenant["id"].as_str().unwrap();
        needles.push(id.as_bytes().to_vec());
        let hex: String = id.chars().filter(|c| *c != '-').collect();
        needles.push(
            (0..16)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect(),
        );
    }
    let stored = blobs(&cli.data);
    assert_eq!(stored.len(), 3);
    for (name, bytes) in &stored {
        assert!(
            name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}"
        );
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "blob {name} holds an identifier"
            );
        }
        assert!(
            !bytes
                .windows(64)
                .any(|w| plain.windows(64).next() == Some(w)),
            "plaintext in blob {name}"
        );
    }

    // Cross-tenant access, unknown names, bad input.
    cli.expect(
        4,
        &[
            "get",
            "contoso",
            "quarterly report.pdf",
            "--as",
            "bob@fabrikam",
        ],
    );
    cli.expect(3, &["get", "fabrikam", "quarterly report.pdf"]);
    cli.expect(3, &["get", "northwind", "notes.txt"]);
    cli.expect(
        3,
        &["get", "contoso", "quarterly report.pdf", "--version", "9"],
    );
    // An input file that is not there: it cannot be read (I/O, as `cat`
    // says), not a malformed command.
    cli.expect(
        1,
        &[
            "put",
            "contoso",
            dir.path().join("missing").to_str().unwrap(),
        ],
    );
    // A directory given as the input: an I/O error, not bad usage or a
    // damaged file.
    cli.expect(
        1,
        &[
            "put",
            "contoso",
            dir.path().to_str().unwrap(),
            "--name",
            "a directory",
        ],
    );
    cli.expect(2, &["purge", "fabrikam"]);

    // A corrupted blob: integrity error, and no partial output file.
    let (target, _) = stored.iter().find(|(_, b)| b.len() > 1_000_000).unwrap();
    let blob_path = cli.data.join("blobs").join(target);
    let mut bytes = std::fs::read(&blob_path).unwrap();
    bytes[700_000] ^= 0x20;
    std::fs::write(&blob_path, &bytes).unwrap();
    let out = dir.path().join("corrupt.out");
    let version = if cli.json(&["ls", "contoso", "--versions"])[0]["blob"] == target.as_str() {
        "1"
    } else {
        "2"
    };
    cli.expect(
        5,
        &[
            "get",
            "contoso",
            "quarterly report.pdf",
            "--version",
            version,
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(!out.exists() && !out.with_extension("atrest-partial").exists());
    bytes[700_000] ^= 0x20;
    std::fs::write(&blob_path, &bytes).unwrap();

    // Rotation keeps every file readable.
    let rotated = cli.json(&["rotate", "tik", "contoso"]);
    assert_eq!(rotated["tik_version"], 2);
    assert_eq!(rotated["rewrapped"], 2);
    assert_eq!(rotated["running_instances_follow_within_s"], 2);
    cli.ok(&["rotate", "root-key"]);
    cli.ok(&["rotate", "root-key", "--availability"]);
    assert!(
        cli.json(&["ls", "contoso", "--versions"])
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["tik_version"] == 2)
    );
    let output = cli.run(&["get", "contoso", "quarterly report.pdf", "--version", "1"]);
    assert_eq!(output.stdout, plain);

    // Purge: every file of fabrikam unreadable, contoso unaffected.
    cli.ok(&["purge", "fabrikam", "--yes"]);
    cli.expect(4, &["get", "fabrikam", "notes.txt"]);
    assert_eq!(cli.json(&["tenant", "show", "fabrikam"])["state"], "purged");
    assert_eq!(
        cli.run(&["get", "contoso", "quarterly report.pdf"]).stdout,
        plain
    );

    // The audit trail verifies, and holds what happened.
    let verified = cli.json(&["audit", "verify"]);
    assert!(verified["problem"].is_null());
    // Every line is signed, and the log matches the witness's newest
    // checkpoint.
    assert_eq!(
        verified["signed_through"].as_u64(),
        verified["records"].as_u64().map(|n| n - 1)
    );
    assert_eq!(verified["witness_checkpoints_verified"], 1);
    let entries = cli.json(&["audit", "show", "--tenant", "fabrikam"]);
    let types: Vec<_> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap().to_owned())
        .collect();
    for wanted in [
        "tik_rolled",
        "file_key_wrapped",
        "file_sealed",
        "file_key_released",
        "file_opened",
        "tenant_purged",
        "release_denied",
    ] {
        assert!(
            types.iter().any(|t| t == wanted),
            "{wanted} missing from {types:?}"
        );
    }
    // gc forgets the purged tenant: its records and blobs go, its name is
    // free for a new tenant (another id, nothing of the old one's).
    let blobs_in = |data: &Path| {
        let mut count = 0;
        let mut dirs = vec![data.join("blobs")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    count += 1;
                }
            }
        }
        count
    };
    let old_id = cli.json(&["tenant", "show", "fabrikam"])["id"].clone();
    // A row edited to say a live tenant is purged loses it nothing: its
    // keys are still there.
    let contoso_id = cli.json(&["tenant", "show", "contoso"])["id"]
        .as_str()
        .unwrap()
        .replace('-', "");
    let edit = |sql: &str| {
        let db =
            atrest_test_support::sqlite::Connection::open(cli.data.join("atrest.sqlite")).unwrap();
        let _ = db.execute(sql, []).unwrap();
    };
    edit(&format!(
        "UPDATE tenants SET state = 'purged' WHERE tenant = x'{contoso_id}'"
    ));
    let kept = cli.json(&["gc", "--dry-run"]);
    let released: Vec<_> = kept["released_tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(released, vec!["fabrikam".to_owned()], "{kept}");
    // Nor is it taken for purged: with its keys still held, the row is
    // tampered with (exit 5), not a purge (a refusal, exit 4).
    let _ = cli.expect(5, &["ls", "contoso"]);
    edit(&format!(
        "UPDATE tenants SET state = 'active' WHERE tenant = x'{contoso_id}'"
    ));
    let before = blobs_in(&cli.data);
    let dry = cli.json(&["gc", "--dry-run"]);
    assert_eq!(dry["released_tenants"][0]["name"], "fabrikam", "{dry}");
    assert_eq!(blobs_in(&cli.data), before);
    let collected = cli.json(&["gc"]);
    let released = &collected["released_tenants"][0];
    assert_eq!(released["name"], "fabrikam", "{collected}");
    assert_eq!(released["id"], old_id);
    let freed = collected["orphan_blobs"].as_array().unwrap().len();
    assert!(
        freed >= 1 && u64::try_from(freed).unwrap() <= released["file_versions"].as_u64().unwrap()
    );
    assert_eq!(blobs_in(&cli.data), before - freed);
    cli.expect(3, &["ls", "fabrikam"]);
    cli.ok(&["tenant", "create", "fabrikam"]);
    let reborn = cli.json(&["tenant", "show", "fabrikam"]);
    assert_ne!(reborn["id"], old_id);
    assert_eq!(reborn["state"], "active");
    assert_eq!(cli.json(&["ls", "fabrikam"]), serde_json::json!([]));
    cli.expect(3, &["get", "fabrikam", "notes.txt"]);
    assert!(cli.json(&["audit", "verify"])["problem"].is_null());
    assert!(
        cli.json(&["gc"])["released_tenants"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A tampered audit log does not verify.
    let segment = std::fs::read_dir(cli.data.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let log = std::fs::read_to_string(&segment).unwrap();
    std::fs::write(
        &segment,
        log.replacen("contoso", "c0ntoso", 1)
            .replacen("\"bytes\":1300000", "\"bytes\":1300001", 1),
    )
    .unwrap();
    cli.expect(5, &["audit", "verify"]);
}

#[test]
fn customer_key_tenant_in_softhsm_tokens() {
    let dir = TempDir::new("customer-key");
    let hsm = SoftHsm::init("cli-tokens", &["northwind-a", "northwind-b"]).unwrap();
    let module = hsm.module().display().to_string();
    let conf = hsm.conf().to_path_buf();
    let empty = SoftHsm::init("cli-no-tokens", &[]).unwrap();
    let empty_conf = empty.conf().to_path_buf();
    let mut cli = Cli::new(dir.path());
    cli.env
        .push(("SOFTHSM2_CONF".into(), conf.display().to_string()));
    cli.ok(&["init"]);
    // The PIN is read from the environment, never stored.
    cli.expect(
        2,
        &[
            "tenant",
            "create",
            "northwind",
            "--customer-key",
            "--module",
            &module,
            "--token-a",
            "northwind-a",
            "--token-b",
            "northwind-b",
            "--key-a",
            "k1",
            "--key-b",
            "k1",
            "--generate",
        ],
    );
    cli.env.push(("ATREST_PKCS11_PIN".into(), "5678".into()));
    let created = cli.json(&[
        "tenant",
        "create",
        "northwind",
        "--customer-key",
        "--module",
        &module,
        "--token-a",
        "northwind-a",
        "--token-b",
        "northwind-b",
        "--key-a",
        "k1",
        "--key-b",
        "k1",
        "--generate",
    ]);
    assert_eq!(created["kind"], "customer-key");
    assert_eq!(created["root_keys"].as_array().unwrap().len(), 3);
    // Another customer's tokens under the provider names taken: the error
    // names the options that solve it.
    let other = cli.run(&[
        "tenant",
        "create",
        "tailspin",
        "--customer-key",
        "--module",
        &module,
        "--token-a",
        "tailspin-a",
        "--token-b",
        "tailspin-b",
        "--key-a",
        "k1",
        "--key-b",
        "k1",
    ]);
    let said = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(7), "{said}");
    assert!(said.contains("--provider-a"), "{said}");
    assert!(
        !std::fs::read_to_string(cli.data.join("atrest.json"))
            .unwrap()
            .contains("5678")
    );

    let file = dir.path().join("ledger.csv");
    let plain = content(200_000, 3);
    std::fs::write(&file, &plain).unwrap();
    cli.ok(&["put", "northwind", file.to_str().unwrap()]);
    assert_eq!(cli.run(&["get", "northwind", "ledger.csv"]).stdout, plain);
    cli.ok(&["rotate", "tik", "northwind"]);
    assert_eq!(
        cli.run(&["get", "northwind", "ledger.csv", "--range", "1K..2K"])
            .stdout,
        plain[1024..2048]
    );

    // Without the PIN, with a wrong one (as after the customer changed it
    // on both tokens), or with tokens not where the configuration says,
    // the customer's keys refuse: exit 4 and the reason, never the
    // availability key, whatever the tenant's fallback policy.
    let mut no_pin = Cli::new(dir.path());
    no_pin
        .env
        .push(("SOFTHSM2_CONF".into(), conf.display().to_string()));
    let mut wrong_pin = Cli::new(dir.path());
    wrong_pin.env = vec![
        ("SOFTHSM2_CONF".into(), conf.display().to_string()),
        ("ATREST_PKCS11_PIN".into(), "0000".into()),
    ];
    let mut no_tokens = Cli::new(dir.path());
    no_tokens.env = vec![
        // A SoftHSM2 configuration whose token directory holds no token.
        ("SOFTHSM2_CONF".into(), empty_conf.display().to_string()),
        ("ATREST_PKCS11_PIN".into(), "5678".into()),
    ];
    let fallbacks = |cli: &Cli| {
        cli.json(&["audit", "show", "--tenant", "northwind"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["event"]["type"] == "availability_key_fallback"
                    && e["outcome"]["result"] == "success"
            })
            .count()
    };
    let served = fallbacks(&cli);
    for policy in [
        &["fallback", "northwind", "automatic"][..],
        &["fallback", "northwind", "declared"],
        &[
            "outage",
            "northwind",
            "--for",
            "1h",
            "--reason",
            "the customer's tokens are down",
        ],
        &["fallback", "northwind", "never"],
    ] {
        let mut args = vec!["tenant"];
        args.extend_from_slice(policy);
        cli.ok(&args);
        // (Tokens not where the configuration says are a configuration to
        // mend: exit 2.)
        for (who, refused, code, why) in [
            (&no_pin, "get", 4, "ATREST_PKCS11_PIN is not set"),
            (&wrong_pin, "get", 4, "PIN"),
            (&wrong_pin, "put", 4, "PIN"),
            (&no_tokens, "get", 2, "no token labelled"),
        ] {
            let output = if refused == "get" {
                who.run(&["get", "northwind", "ledger.csv", "-o", "/dev/null"])
            } else {
                who.run(&[
                    "put",
                    "northwind",
                    file.to_str().unwrap(),
                    "--name",
                    "refused.csv",
                ])
            };
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(code),
                "{policy:?} {refused}: {stderr}"
            );
            assert!(stderr.contains(why), "{policy:?}: {stderr}");
        }
    }
    assert_eq!(
        fallbacks(&cli),
        served,
        "a refusal was served through the availability key"
    );
    let shown = cli.json(&["tenant", "show", "northwind"]);
    assert_eq!(shown["fallback"], "never", "{shown}");
    cli.ok(&["tenant", "fallback", "northwind", "automatic"]);
    // With the right PIN nothing is said.
    let output = cli.run(&["get", "northwind", "ledger.csv"]);
    assert_eq!(output.stdout, plain);
    assert!(!String::from_utf8_lossy(&output.stderr).contains("availability key"));

    // A key the token does not hold is "not found".
    cli.expect(
        3,
        &[
            "tenant",
            "create",
            "westwind",
            "--customer-key",
            "--module",
            &module,
            "--token-a",
            "northwind-a",
            "--token-b",
            "northwind-b",
            "--key-a",
            "no-such-key",
            "--key-b",
            "k1",
        ],
    );
    // Nothing of all that was served through the availability key.
    assert_eq!(fallbacks(&cli), served);

    // The customer revokes one key: the files stay readable through the
    // other, and every report says so (and when running instances follow).
    let first = cli.ok(&["revoke", "northwind", "hsm-a:k1"]);
    assert!(
        first.contains("1 of 2 customer keys revoked")
            && first.contains("readable through the others")
            && first.contains("Running instances"),
        "{first}"
    );
    let shown = cli.json(&["tenant", "show", "northwind"]);
    assert_eq!(
        shown["revoked_keys"],
        serde_json::json!(["hsm-a:k1@1"]),
        "{shown}"
    );
    assert!(
        shown["state"]
            .as_str()
            .unwrap()
            .starts_with("active: 1 of 2"),
        "{shown}"
    );
    cli.ok(&["get", "northwind", "ledger.csv", "-o", "/dev/null"]);
    // Then both: user requests are refused, and the state says so.
    let both = cli.json(&["revoke", "northwind", "hsm-b:k1"]);
    assert!(
        both["state"].as_str().unwrap().starts_with("revoked"),
        "{both}"
    );
    cli.expect(4, &["get", "northwind", "ledger.csv"]);
    cli.expect(3, &["revoke", "northwind", "hsm-c:k1"]);
    cli.ok(&["purge", "northwind", "--yes"]);
    cli.expect(4, &["get", "northwind", "ledger.csv"]);
    cli.ok(&["audit", "verify"]);
}

#[test]
fn the_demo_runs_on_the_embedded_defaults() {
    let dir = TempDir::new("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_atrest"))
        .args(["--json", "demo", "--size-mib", "4", "--dir"])
        .arg(dir.path().join("demo"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["cross-tenant"].as_str().unwrap().contains("refused"));
    assert!(report["tamper"].as_str().unwrap().contains("refused"));
    assert!(report["purge"].as_str().unwrap().contains("refused"));
    assert!(report["audit"].as_str().unwrap().contains("verified"));
    assert!(!report["audit"].as_str().unwrap().contains("PROBLEM"));
}

#[test]
fn principals_are_user_at_tenant_exactly() {
    let dir = TempDir::new("principals");
    let cli = Cli::new(dir.path());
    cli.ok(&["init"]);
    cli.ok(&["tenant", "create", "contoso"]);
    cli.ok(&["tenant", "create", "fabrikam"]);
    let file = dir.path().join("memo.txt");
    std::fs::write(&file, b"memo").unwrap();
    let file = file.to_str().unwrap();

    // Writing as someone who is not, exactly, a user of the tenant.
    for principal in [
        "@contoso",
        "alice@",
        "alice",
        "a@a@a",
        "alice@contoso@contoso",
        "bob@fabrikam",
        "bob@othertenant",
    ] {
        cli.expect(4, &["put", "contoso", file, "--as", principal]);
    }
    assert_eq!(cli.json(&["ls", "contoso"]), serde_json::json!([]));
    let refusals = cli.json(&["audit", "show", "--tenant", "contoso"]);
    assert_eq!(
        refusals
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"]["type"] == "write_denied")
            .count(),
        7
    );

    // Reading likewise.
    cli.ok(&["put", "contoso", file, "--as", "alice@contoso"]);
    assert_eq!(
        cli.run(&["get", "contoso", "memo.txt", "--as", "alice@contoso"])
            .stdout,
        b"memo"
    );
    for principal in ["@contoso", "a@a@a", "alice@contoso@contoso", "bob@fabrikam"] {
        cli.expect(4, &["get", "contoso", "memo.txt", "--as", principal]);
    }
}

#[test]
fn exit_codes_come_from_the_error_kinds() {
    let dir = TempDir::new("cli-kinds");
    let mut cli = Cli::new(dir.path());
    // Usage (2): no deployment yet; a range that is not one.
    cli.expect(2, &["ls"]);
    cli.ok(&["init"]);
    cli.ok(&["tenant", "create", "contoso"]);
    let input = dir.join("in.bin");
    std::fs::write(&input, content(100_000, 1)).unwrap();
    cli.ok(&["put", "contoso", input.to_str().unwrap(), "--name", "a.bin"]);
    cli.expect(2, &["get", "contoso", "a.bin", "--range", "x..y"]);
    // Conflict (7): it exists already.
    cli.expect(7, &["tenant", "create", "contoso"]);
    // Not found (3): no such file, version or tenant.
    cli.expect(3, &["get", "contoso", "nope.bin"]);
    cli.expect(3, &["get", "contoso", "a.bin", "--version", "9"]);
    // Refused (4): a principal of another tenant.
    cli.expect(4, &["get", "contoso", "a.bin", "--as", "eve@fabrikam"]);
    // I/O (1): a directory given as the input.
    cli.expect(
        1,
        &[
            "put",
            "contoso",
            dir.path().to_str().unwrap(),
            "--name",
            "b.bin",
        ],
    );
    // I/O (1): a full disk (`/dev/full` is written through as a device),
    // and a reader that goes away (a closed pipe).
    cli.expect(1, &["get", "contoso", "a.bin", "-o", "/dev/full"]);
    let mut reader = cli
        .command()
        .args(["get", "contoso", "a.bin"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(reader.stdout.take());
    let closed = reader.wait_with_output().unwrap();
    assert_eq!(
        closed.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&closed.stderr)
    );
    // Unavailable (6): the customer's key service cannot be reached
    // (nothing listens at its address), so the tenant cannot be created.
    cli.env
        .push(("ATREST_TEST_BAO_TOKEN".into(), "unused".into()));
    cli.ok(&[
        "kms",
        "add",
        "bao",
        "--address",
        "http://127.0.0.1:9",
        "--token-env",
        "ATREST_TEST_BAO_TOKEN",
    ]);
    cli.expect(
        6,
        &[
            "tenant",
            "create",
            "northwind",
            "--customer-keys",
            "bao:a@1,bao:b@1",
        ],
    );
    // Integrity (5): a blob changed in storage.
    let (name, mut bytes) = blobs(&cli.data).into_iter().next().unwrap();
    bytes[5000] ^= 1;
    std::fs::write(cli.data.join("blobs").join(name), bytes).unwrap();
    cli.expect(
        5,
        &[
            "get",
            "contoso",
            "a.bin",
            "-o",
            dir.join("out.bin").to_str().unwrap(),
        ],
    );
}

#[test]
fn concurrent_commands_on_one_deployment_keep_it_working() {
    let dir = TempDir::new("cli-concurrent");
    let plain = content(300_000, 11);
    let (cli, file) = deployment_with_file(dir.path(), "shared.bin", &plain);
    let big = dir.path().join("big.bin");
    std::fs::write(&big, content(64 << 20, 5)).unwrap();

    let file = file.to_str().unwrap();
    for round in 0..3 {
        // Eight commands at once: gets, puts of one name, a listing, and a
        // TIK rotation in the middle of them.
        let outputs: Vec<(Vec<&str>, Output)> = std::thread::scope(|scope| {
            let mut commands: Vec<Vec<&str>> = vec![
                vec!["get", "contoso", "shared.bin"],
                vec!["get", "contoso", "shared.bin"],
                vec!["get", "contoso", "shared.bin", "--range", "1K..200K"],
                vec!["put", "contoso", file],
                vec!["put", "contoso", file],
                vec!["put", "contoso", file, "--name", "other.bin"],
                vec!["ls", "contoso"],
            ];
            if round == 1 {
                commands.push(vec!["rotate", "tik", "contoso"]);
            } else {
                commands.push(vec!["get", "contoso", "shared.bin"]);
            }
            let handles: Vec<_> = commands
                .into_iter()
                .map(|args| {
                    let cli = &cli;
                    scope.spawn(move || {
                        let output = cli.run(&args);
                        (args, output)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (args, output) in &outputs {
            assert_eq!(
                output.status.code(),
                Some(0),
                "round {round}: atrest {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            if args[0] == "get" {
                let expected = if args.len() > 3 {
                    &plain[1024..200 * 1024]
                } else {
                    &plain[..]
                };
                assert!(output.stdout == expected, "round {round}: atrest {args:?}");
            }
        }
    }

    // A put killed with SIGKILL in the middle: the others keep working and
    // the trail still verifies.
    let mut killed = cli
        .command()
        .args(["put", "contoso", big.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    killed.kill().unwrap();
    killed.wait().unwrap();

    let versions = cli.json(&["ls", "contoso", "--versions"]);
    let shared = versions
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["name"] == "shared.bin")
        .count();
    assert_eq!(shared, 7, "{versions}");
    assert_eq!(cli.run(&["get", "contoso", "shared.bin"]).stdout, plain);
    let verified = cli.json(&["audit", "verify"]);
    assert!(verified["problem"].is_null(), "{verified}");
    // Every get and put is in the trail once.
    let entries = cli.json(&["audit", "show", "--tenant", "contoso"]);
    let sealed = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["type"] == "file_sealed")
        .count();
    // The first put and three puts in each of three rounds.
    assert!(sealed >= 10, "{sealed} file_sealed records");
}

#[test]
fn a_rewritten_audit_trail_is_caught_by_the_operators_key_and_witness() {
    use atrest::audit::{AuditLog, LogConfig, SigningKey};

    let dir = TempDir::new("cli-audit-rewrite");
    let cli = Cli::new(dir.path());
    // The witness lives outside the data directory.
    let witness = dir.path().join("elsewhere/witness");
    let init = cli.json(&["init", "--audit-witness", witness.to_str().unwrap()]);
    let key = init["audit_verifying_key"].as_str().unwrap().to_owned();
    cli.ok(&["tenant", "create", "contoso"]);
    let file = dir.path().join("a.txt");
    std::fs::write(&file, b"hello").unwrap();
    cli.ok(&["put", "contoso", file.to_str().unwrap()]);
    cli.ok(&["get", "contoso", "a.txt"]);
    let trusted = [
        "audit",
        "verify",
        "--key",
        &key,
        "--witness",
        witness.to_str().unwrap(),
    ];
    cli.ok(&trusted);

    let audit = cli.data.join("audit");
    let original = std::fs::read(audit.join("00000001.log")).unwrap();

    // 1. The last record and its checkpoint cut off: still a signed log,
    //    but behind the witness. Verification fails and no command writes
    //    on top of it.
    let lines: Vec<&[u8]> = original.split_inclusive(|&b| b == b'\n').collect();
    std::fs::write(
        audit.join("00000001.log"),
        lines[..lines.len() - 2].concat(),
    )
    .unwrap();
    cli.expect(5, &trusted);
    cli.expect(5, &["audit", "verify"]);
    cli.expect(5, &["ls", "contoso"]);
    std::fs::write(audit.join("00000001.log"), &original).unwrap();
    cli.ok(&trusted);

    // 2. Rewritten with the deployment's own signing key (read from the
    //    data directory), same log id, one release left out, and longer
    //    than before.
    let pkcs8 = std::fs::read(cli.data.join("audit-signing.key")).unwrap();
    let signer = SigningKey::from_pkcs8("atrest-audit", &pkcs8).unwrap();
    let forged = dir.path().join("forged");
    std::fs::create_dir_all(&forged).unwrap();
    std::fs::copy(audit.join("LOG"), forged.join("LOG")).unwrap();
    std::fs::write(forged.join("00000001.log"), b"").unwrap();
    let (log, _) = AuditLog::open(&forged, signer, LogConfig::default()).unwrap();
    for entry in atrest::audit::read_entries(&audit).unwrap() {
        let keep = !matches!(
            entry.event,
            atrest::audit::Event::Checkpoint { .. } | atrest::audit::Event::FileKeyReleased { .. }
        );
        if keep {
            log.append(&entry.into_record()).unwrap();
        }
    }
    for _ in 0..20 {
        log.append(&atrest::audit::Record::new(
            atrest::audit::Text::new("atrest-cli").unwrap(),
            atrest::audit::Event::TenantPurged { tik_versions: 0 },
        ))
        .unwrap();
    }
    drop(log);
    let moved = dir.path().join("original-audit");
    std::fs::rename(&audit, &moved).unwrap();
    std::fs::rename(&forged, &audit).unwrap();
    let output = cli.run(&[
        "--json",
        "audit",
        "verify",
        "--key",
        &key,
        "--witness",
        witness.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(5));
    // The report, then the error.
    let report: serde_json::Value = serde_json::Deserializer::from_slice(&output.stdout)
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    assert!(
        report["problem"]
            .as_str()
            .unwrap()
            .contains("do not match the checkpoint"),
        "{report}"
    );

    // 3. The log, the signing key, the configuration's verifying key and
    //    witness all replaced: the deployment's own settings now agree with
    //    the forgery, but the operator's key and witness do not.
    std::fs::remove_dir_all(&audit).unwrap();
    let (attacker, attacker_pkcs8) = SigningKey::generate("atrest-audit").unwrap();
    let attacker_key = attacker.verifying_key().to_string();
    drop(AuditLog::create(&audit, attacker, LogConfig::default()).unwrap());
    std::fs::write(cli.data.join("audit-signing.key"), &attacker_pkcs8[..]).unwrap();
    let config_path = cli.data.join("atrest.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["audit_verifying_key"] = attacker_key.into();
    config["audit_witness"] = serde_json::Value::Null;
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    cli.ok(&["audit", "verify"]);
    cli.expect(5, &trusted);
    cli.expect(5, &["audit", "verify", "--key", &key]);
    cli.expect(
        5,
        &["audit", "verify", "--witness", witness.to_str().unwrap()],
    );
}

/// Files whose name contains `.atrest-partial` in `dir`.
fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("atrest-partial"))
        .collect()
}

/// Starts `get contoso NAME -o TARGET` and returns once its staging file
/// is there (it is writing).
fn get_until_staged(cli: &Cli, name: &str, target: &Path) -> std::process::Child {
    let child = cli
        .command()
        .args(["get", "contoso", name, "-o", target.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dir = target.parent().unwrap();
    let started = std::time::Instant::now();
    while partials(dir).is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no staging file"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child
}

#[test]
fn get_stages_output_privately_and_never_leaves_plaintext_behind() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};

    let dir = TempDir::new("cli-output");
    let cli = Cli::new(dir.path());
    cli.ok(&["init"]);
    cli.ok(&["tenant", "create", "contoso"]);
    cli.ok(&["tenant", "create", "fabrikam"]);
    let (a, b) = (content(2_000_000, 1), content(2_000_000, 2));
    for (name, bytes) in [("a.bin", &a), ("b.bin", &b)] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        cli.ok(&["put", "contoso", path.to_str().unwrap()]);
    }
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let path = |name: &str| out.join(name).to_str().unwrap().to_owned();

    // Two gets at once into names that differ only in their extension each
    // get their own bytes.
    std::thread::scope(|scope| {
        for (file, target) in [("a.bin", "same.bin"), ("b.bin", "same.txt")] {
            let (cli, target) = (&cli, path(target));
            scope.spawn(move || cli.ok(&["get", "contoso", file, "-o", &target]));
        }
    });
    assert!(std::fs::read(out.join("same.bin")).unwrap() == a);
    assert!(std::fs::read(out.join("same.txt")).unwrap() == b);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // A new file is private; a replaced file keeps its mode.
    assert_eq!(mode(&out.join("same.bin")), 0o600);
    std::fs::set_permissions(out.join("same.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    cli.ok(&["get", "contoso", "a.bin", "-o", &path("same.txt")]);
    assert_eq!(mode(&out.join("same.txt")), 0o640);
    assert!(std::fs::read(out.join("same.txt")).unwrap() == a);

    // A symbolic link: the file it names is replaced, the link stays.
    std::os::unix::fs::symlink(out.join("same.bin"), out.join("link")).unwrap();
    cli.ok(&["get", "contoso", "b.bin", "-o", &path("link")]);
    assert!(
        std::fs::symlink_metadata(out.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(std::fs::read(out.join("same.bin")).unwrap() == b);

    // A FIFO is written through, not replaced.
    let fifo = out.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    cli.ok(&["get", "contoso", "a.bin", "-o", fifo.to_str().unwrap()]);
    assert!(reader.join().unwrap() == a);
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );

    // A refused get leaves neither the target nor a staging file.
    cli.expect(
        4,
        &[
            "get",
            "contoso",
            "a.bin",
            "--as",
            "eve@fabrikam",
            "-o",
            &path("refused.bin"),
        ],
    );
    assert!(!out.join("refused.bin").exists());

    // Interrupted (SIGTERM, SIGINT) while writing: the staging file goes too.
    let big = dir.path().join("big.bin");
    std::fs::write(&big, content(96 << 20, 3)).unwrap();
    cli.ok(&["put", "contoso", big.to_str().unwrap()]);
    for signal in ["TERM", "INT"] {
        let target = path(&format!("interrupted-{signal}.bin"));
        let mut child = get_until_staged(&cli, "big.bin", Path::new(&target));
        let killed = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "SIG{signal}");
        assert!(
            partials(&out).is_empty(),
            "SIG{signal} left {:?}",
            partials(&out)
        );
        assert!(!Path::new(&target).exists());
    }
    assert!(partials(&out).is_empty());
}

/// A get killed outright (SIGKILL) cannot clean up: its partial output
/// stays private (0600, even when it replaces a file others may read), and
/// the next get into the same target removes it — but never one a live
/// process still holds.
#[test]
fn a_killed_get_leaves_a_private_partial_that_the_next_get_removes() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = TempDir::new("cli-killed-get");
    let cli = Cli::new(dir.path());
    cli.ok(&["init"]);
    cli.ok(&["tenant", "create", "contoso"]);
    let big = dir.path().join("big.bin");
    let bytes = content(96 << 20, 4);
    std::fs::write(&big, &bytes).unwrap();
    cli.ok(&["put", "contoso", big.to_str().unwrap()]);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let target = out.join("shared.bin");
    std::fs::write(&target, b"an older copy, readable by all").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    let mut child = get_until_staged(&cli, "big.bin", &target);
    child.kill().unwrap();
    let _ = child.wait().unwrap();
    let left = partials(&out);
    assert_eq!(left.len(), 1, "{left:?}");
    let partial = out.join(&left[0]);
    assert_eq!(mode(&partial), 0o600, "a partial output is private");

    // Another staging file of the same target, held by a live process.
    let held_path = out.join(format!(
        ".shared.bin.{}.1.0.atrest-partial",
        std::process::id()
    ));
    let held = std::fs::File::create(&held_path).unwrap();
    held.lock().unwrap();
    // Both left alone long enough.
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for path in [&partial, &held_path] {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }

    let output = cli
        .command()
        .args(["get", "contoso", "big.bin", "-o", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("partial output of an earlier get"),
        "{output:?}"
    );
    assert!(
        !partial.exists(),
        "the killed get's partial output was removed"
    );
    assert!(
        held_path.exists(),
        "a staging file a live process holds stays"
    );
    assert!(std::fs::read(&target).unwrap() == bytes);
    assert_eq!(mode(&target), 0o644, "the replaced file's mode is kept");

    // Once its process lets go, it goes too.
    drop(held);
    cli.ok(&["get", "contoso", "big.bin", "-o", target.to_str().unwrap()]);
    assert!(partials(&out).is_empty(), "{:?}", partials(&out));
}

#[test]
fn json_reports_never_share_a_stream_with_data() {
    let dir = TempDir::new("cli-json-stdout");
    let plain = content(100_000, 4);
    let (cli, _) = deployment_with_file(dir.path(), "f.bin", &plain);
    let output = cli.run(&["--json", "get", "contoso", "f.bin"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout == plain, "the report was mixed into the data");
    let report: serde_json::Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(report["bytes"], 100_000);
    // An error with data on stdout: the JSON error goes to stderr too.
    cli.ok(&["tenant", "create", "fabrikam"]);
    let output = cli.run(&["--json", "get", "contoso", "f.bin", "--as", "eve@fabrikam"]);
    assert_eq!(output.status.code(), Some(4));
    assert!(output.stdout.is_empty());
    // Usage errors are JSON with --json.
    let output = cli.run(&["--json", "tenant", "no-such-command"]);
    assert_eq!(output.status.code(), Some(2));
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(error["exit"], 2);
}

#[test]
fn ranges_follow_http_byte_range_rules() {
    let dir = TempDir::new("cli-ranges");
    let plain = content(3 << 20, 5);
    let (cli, _) = deployment_with_file(dir.path(), "f.bin", &plain);
    let get = |range: &str| cli.run(&["get", "contoso", "f.bin", "--range", range]);
    let len = plain.len();
    for (range, expected) in [
        ("1M..", &plain[1 << 20..]),
        ("..5", &plain[..5]),
        ("-7", &plain[len - 7..]),
        ("3M-10..", &plain[len - 10..]),
        ("2M..100M", &plain[2 << 20..]),
        ("-100M", &plain[..]),
    ] {
        let range = range.replace("3M-10", &(len - 10).to_string());
        let output = get(&range);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{range}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.stdout == expected, "--range {range}");
    }
    for unsatisfiable in ["3M..", "3M..4M", "-0", "..0", "10..10"] {
        let output = get(unsatisfiable);
        assert_eq!(output.status.code(), Some(2), "--range {unsatisfiable}");
        assert!(output.stdout.is_empty());
    }
    for malformed in ["..", "5..2", "x..", "1M", "--5"] {
        assert_eq!(get(malformed).status.code(), Some(2), "--range {malformed}");
    }
}

#[test]
fn names_and_paths_are_checked_and_never_panic() {
    use std::os::unix::ffi::OsStrExt as _;

    let dir = TempDir::new("cli-names");
    let cli = Cli::new(dir.path());
    cli.ok(&["init"]);
    // Look-alike tenants: a zero-width space, spaces at the ends.
    for name in ["con\u{200B}toso", " contoso", "contoso "] {
        cli.expect(2, &["tenant", "create", name]);
    }
    cli.ok(&["tenant", "create", "contoso"]);
    let file = dir.path().join("f.txt");
    std::fs::write(&file, b"hello").unwrap();
    let file = file.to_str().unwrap();
    for name in ["a/../b", "../x", "/etc/passwd", "a//b", "dir/"] {
        cli.expect(2, &["put", "contoso", file, "--name", name]);
    }
    cli.ok(&["put", "contoso", file, "--name", "reports/2026/f.txt"]);
    // 256 characters of two bytes each: the limit counts characters.
    cli.ok(&["put", "contoso", file, "--name", &"é".repeat(256)]);
    cli.expect(2, &["put", "contoso", file, "--name", &"é".repeat(257)]);

    // A file whose name is not UTF-8 is not stored under a mangled name.
    let raw = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    std::fs::write(&raw, b"bytes").unwrap();
    let output = cli
        .command()
        .args(["put", "contoso"])
        .arg(&raw)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--name"));
    let listing = cli.json(&["ls", "contoso"]);
    assert!(!listing.to_string().contains('\u{FFFD}'));

    // Writing to a path that is not UTF-8, with a JSON report: no panic.
    let target = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"out-\xff.bin"));
    let output = cli
        .command()
        .args(["--json", "get", "contoso", "reports/2026/f.txt", "-o"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"hello");
}

#[test]
fn init_is_all_or_nothing() {
    let dir = TempDir::new("cli-init");
    let cli = Cli::new(dir.path());
    // A blob store URL that does not work: nothing is left behind, and the
    // next init with a good one works.
    let output = cli.run(&["init", "--blobs", "nosuchscheme://bucket/prefix"]);
    assert_ne!(output.status.code(), Some(0));
    assert!(
        !cli.data.exists(),
        "a failed init left {}",
        cli.data.display()
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A witness that cannot be written fails half way: the keys and the
    // log were already made, and go too.
    let output = cli.run(&["init", "--audit-witness", "/proc/atrest-witness"]);
    assert_ne!(output.status.code(), Some(0));
    assert!(!cli.data.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    cli.expect(2, &["ls"]);
    cli.ok(&["init"]);
    cli.ok(&["tenant", "create", "contoso"]);
    cli.ok(&["audit", "verify"]);
    // An existing deployment, or a directory holding anything else, is
    // refused and left alone.
    cli.expect(7, &["init"]);
    let other = Cli::new(&dir.path().join("other"));
    std::fs::create_dir_all(&other.data).unwrap();
    std::fs::write(other.data.join("notes.txt"), b"mine").unwrap();
    other.expect(7, &["init"]);
    assert_eq!(
        std::fs::read(other.data.join("notes.txt")).unwrap(),
        b"mine"
    );
    // An empty directory is fine.
    let empty = Cli::new(&dir.path().join("empty"));
    std::fs::create_dir_all(&empty.data).unwrap();
    empty.ok(&["init"]);
    empty.ok(&["audit", "verify"]);
    // The deployment can be moved: its witness is named relative to it.
    let moved = dir.path().join("moved");
    std::fs::rename(&empty.data, moved.join("data")).unwrap_or_else(|_| {
        std::fs::create_dir_all(&moved).unwrap();
        std::fs::rename(&empty.data, moved.join("data")).unwrap();
    });
    Cli::new(&moved).ok(&["audit", "verify"]);
}

#[test]
fn gc_removes_what_killed_processes_left_and_never_what_a_living_one_writes() {
    use std::io::Write as _;

    let dir = TempDir::new("cli-gc");
    let kept = content(300_000, 6);
    let (cli, _) = deployment_with_file(dir.path(), "kept.bin", &kept);
    let blobs_dir = cli.data.join("blobs");
    let entries = || -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(&blobs_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let staging = || entries().into_iter().filter(|n| n.contains('#')).count();
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let started = std::time::Instant::now();
        while !done() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "{what}: {:?}",
                entries()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    let put_from_stdin = |name: &str| {
        cli.command()
            .args(["put", "contoso", "-", "--name", name])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let len = |report: &serde_json::Value, key: &str| report[key].as_array().unwrap().len();

    // A put killed half way: a staging file and a begun upload, seconds
    // old. Its process is gone, so gc needs no age to know it is garbage.
    let mut killed = put_from_stdin("killed.bin");
    let mut stdin = killed.stdin.take().unwrap();
    stdin.write_all(&content(8 << 20, 7)).unwrap();
    stdin.flush().unwrap();
    wait_for("the killed put's staging file", &|| staging() == 1);
    killed.kill().unwrap();
    killed.wait().unwrap();
    drop(stdin);
    // A complete blob that no record names.
    std::fs::write(
        blobs_dir.join("0123456789abcdef0123456789abcdef"),
        b"orphan",
    )
    .unwrap();
    // A get killed half way, into a file outside the deployment.
    let big = content(64 << 20, 9);
    let big_path = dir.path().join("big.bin");
    std::fs::write(&big_path, &big).unwrap();
    cli.ok(&["put", "contoso", big_path.to_str().unwrap()]);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut get = get_until_staged(&cli, "big.bin", &out.join("big.bin"));
    // Killed once its staging file is noted for gc.
    let outputs = cli.data.join("outputs");
    wait_for("the get's note", &|| {
        std::fs::read_dir(&outputs).is_ok_and(|notes| {
            notes
                .flatten()
                .any(|note| !note.file_name().to_string_lossy().starts_with('.'))
        })
    });
    get.kill().unwrap();
    get.wait().unwrap();
    assert_eq!(partials(&out).len(), 1);

    // A dry run reports all of it, with the default cut-off of a day, and
    // changes nothing.
    let before = entries();
    let report = cli.json(&["gc", "--dry-run"]);
    assert_eq!(len(&report, "orphan_blobs"), 1, "{report}");
    assert_eq!(len(&report, "abandoned_uploads"), 1, "{report}");
    assert_eq!(len(&report, "partial_uploads"), 1, "{report}");
    assert_eq!(len(&report, "partial_outputs"), 1, "{report}");
    assert_eq!(len(&report, "skipped"), 0, "{report}");
    assert_eq!(entries(), before);
    assert_eq!(partials(&out).len(), 1);
    let text = cli.ok(&["gc", "--dry-run"]);
    assert!(
        text.contains("1 uploads whose process died") && text.contains("left alone: 0"),
        "{text}"
    );

    // Uploads of living processes, with a cut-off of zero: a large one
    // writing its staging file, a small one still reading its input (no
    // staging file yet), and a get writing its output.
    let mut large = put_from_stdin("large.bin");
    let mut large_in = large.stdin.take().unwrap();
    let large_bytes = content(16 << 20, 8);
    large_in.write_all(&large_bytes[..12 << 20]).unwrap();
    large_in.flush().unwrap();
    wait_for("the running put's staging file", &|| staging() == 2);
    let mut small = put_from_stdin("small.bin");
    let mut small_in = small.stdin.take().unwrap();
    small_in.write_all(&kept[..1000]).unwrap();
    small_in.flush().unwrap();
    // Its seal begins once the deployment is open.
    wait_for("the small put's seal", &|| {
        len(
            &cli.json(&["gc", "--dry-run", "--older-than", "0s"]),
            "skipped",
        ) == 3
    });
    let running_get = get_until_staged(&cli, "big.bin", &dir.path().join("running.bin"));

    let report = cli.json(&["gc", "--older-than", "0s"]);
    assert_eq!(len(&report, "orphan_blobs"), 1, "{report}");
    assert_eq!(len(&report, "abandoned_uploads"), 1, "{report}");
    assert_eq!(len(&report, "partial_uploads"), 1, "{report}");
    // Two uploads and the large one's staging file.
    assert_eq!(len(&report, "skipped"), 3, "{report}");
    assert!(
        report["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !s["reason"].as_str().unwrap().is_empty()),
        "{report}"
    );
    assert!(len(&report, "running") >= 3, "{report}");
    let outputs = report["partial_outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 2, "{report}");
    assert_eq!(
        outputs.iter().filter(|o| o["in_use"] == true).count(),
        1,
        "{report}"
    );
    assert!(partials(&out).is_empty(), "{:?}", partials(&out));
    assert!(!blobs_dir.join("0123456789abcdef0123456789abcdef").exists());
    assert_eq!(staging(), 1, "only the running put's staging file is left");

    // Every living process finishes its work.
    large_in.write_all(&large_bytes[12 << 20..]).unwrap();
    drop(large_in);
    small_in.write_all(&kept[1000..2000]).unwrap();
    drop(small_in);
    assert!(large.wait().unwrap().success());
    assert!(small.wait().unwrap().success());
    let got = running_get.wait_with_output().unwrap();
    assert!(got.status.success(), "{got:?}");
    assert!(std::fs::read(dir.path().join("running.bin")).unwrap() == big);
    assert!(cli.run(&["get", "contoso", "large.bin"]).stdout == large_bytes);
    assert!(cli.run(&["get", "contoso", "small.bin"]).stdout == kept[..2000]);
    assert!(cli.run(&["get", "contoso", "kept.bin"]).stdout == kept);
    // Nothing is left to collect, and the killed put's name never existed.
    let report = cli.json(&["gc", "--older-than", "0s"]);
    for key in [
        "orphan_blobs",
        "abandoned_uploads",
        "partial_uploads",
        "skipped",
    ] {
        assert_eq!(len(&report, key), 0, "{key}: {report}");
    }
    cli.expect(3, &["get", "contoso", "killed.bin"]);
    cli.ok(&["audit", "verify"]);
}

#[tokio::test]
async fn small_things_an_operator_sees() {
    let dir = TempDir::new("cli-small");
    let cli = Cli::new(dir.path());
    cli.ok(&["init"]);
    cli.ok(&["tenant", "create", "contoso"]);
    cli.ok(&["tenant", "create", "fabrikam"]);
    let file = dir.path().join("tiny.txt");
    std::fs::write(&file, b"tiny").unwrap();
    // A small file's rate is not "0.00 GB/s".
    let put = cli.ok(&["put", "fabrikam", file.to_str().unwrap()]);
    assert!(!put.contains("0.00 GB/s"), "{put}");
    cli.ok(&["put", "contoso", file.to_str().unwrap()]);

    // A rotation that has not finished, and the versions kept for it.
    {
        let deployment =
            atrest_deployment::Deployment::open(&cli.data, atrest_deployment::Options::new("test"))
                .await
                .unwrap();
        let id = deployment.tenant_id("contoso").await.unwrap();
        deployment.files().keys().roll_tik(id).await.unwrap();
    }
    let shown = cli.json(&["tenant", "show", "contoso"]);
    assert_eq!(shown["rotation_unfinished"], true, "{shown}");
    assert_eq!(
        shown["tik_versions"].as_array().unwrap().len(),
        2,
        "{shown}"
    );
    assert_eq!(shown["tik_versions"][0]["file_keys"], 1);
    let text = cli.ok(&["tenant", "show", "contoso"]);
    assert!(
        text.contains("(kept)") && text.contains("rotation has not finished"),
        "{text}"
    );
    cli.ok(&["rotate", "tik", "contoso"]);
    let shown = cli.json(&["tenant", "show", "contoso"]);
    assert_eq!(shown["rotation_unfinished"], false, "{shown}");

    // A purged tenant: its files are marked, errors name it by name.
    cli.ok(&["purge", "fabrikam", "--yes"]);
    let listing = cli.json(&["ls", "fabrikam"]);
    assert_eq!(listing[0]["readable"], false);
    assert!(cli.ok(&["ls", "fabrikam"]).contains("purged"));
    let id = cli.json(&["tenant", "show", "fabrikam"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let output = cli.run(&["get", "fabrikam", "tiny.txt"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"fabrikam\"") && !stderr.contains(&id),
        "{stderr}"
    );
    let contoso = cli.json(&["tenant", "show", "contoso"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let output = cli.run(&["get", "contoso", "no-such-file"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"contoso\"") && !stderr.contains(&contoso),
        "{stderr}"
    );

    // The audit trail for people is a table, not JSON.
    let shown = cli.ok(&["audit", "show", "--last", "3"]);
    assert!(
        shown.starts_with("TIME") && !shown.contains("{\""),
        "{shown}"
    );
}

#[test]
fn every_file_of_a_deployment_is_its_owners_only() {
    use std::os::unix::fs::PermissionsExt as _;

    fn walk(path: &Path, found: &mut Vec<(PathBuf, u32, bool)>) {
        let meta = std::fs::symlink_metadata(path).unwrap();
        found.push((
            path.to_path_buf(),
            meta.permissions().mode() & 0o777,
            meta.is_dir(),
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                walk(&entry.unwrap().path(), found);
            }
        }
    }
    let dir = TempDir::new("cli-modes");
    let (cli, _) = deployment_with_file(dir.path(), "f.bin", &content(100_000, 9));
    cli.ok(&[
        "get",
        "contoso",
        "f.bin",
        "-o",
        dir.path().join("out.bin").to_str().unwrap(),
    ]);
    cli.ok(&["rotate", "tik", "contoso"]);
    cli.ok(&["gc"]);
    let mut found = Vec::new();
    walk(&cli.data, &mut found);
    assert!(found.len() > 10, "{found:?}");
    for (path, mode, is_dir) in found {
        let wanted = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, wanted, "{} is {mode:o}", path.display());
    }
    let out = std::fs::metadata(dir.path().join("out.bin")).unwrap();
    assert_eq!(out.permissions().mode() & 0o777, 0o600);
}

/// Copies every database file of a deployment (`*.sqlite`, with any
/// `-wal`/`-shm` beside it) from `from` to `to`, as a backup or a restore.
fn copy_databases(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(to).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains(".sqlite") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let mut copied = 0;
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_string_lossy().contains(".sqlite") {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
            copied += 1;
        }
    }
    assert!(copied >= 3, "the key store, the root keys and the catalog");
}

#[test]
fn restoring_a_database_backup_after_a_purge_leaves_the_tenant_unreadable() {
    let dir = TempDir::new("backup-restore");
    let (cli, _) = deployment_with_file(dir.path(), "report.txt", b"contoso's report");
    cli.ok(&["tenant", "create", "fabrikam"]);
    let other = dir.path().join("plan.txt");
    std::fs::write(&other, b"fabrikam's plan").unwrap();
    cli.ok(&["put", "fabrikam", other.to_str().unwrap()]);

    // Last night's backup of every database, then the purge.
    let backup = dir.path().join("backup");
    copy_databases(&cli.data, &backup);
    cli.ok(&["purge", "contoso", "--yes"]);
    cli.expect(4, &["get", "contoso", "report.txt"]);

    // The backup restored over the purged databases: the records say
    // contoso is active again, but its tenant key is gone.
    copy_databases(&backup, &cli.data);
    let output = cli.run(&["get", "contoso", "report.txt"]);
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has no tenant key"), "{stderr}");
    let output = cli.run(&["--json", "tenant", "show", "contoso"]);
    assert_eq!(output.status.code(), Some(5), "{output:?}");

    // Other tenants are unaffected.
    assert_eq!(
        cli.ok(&["get", "fabrikam", "plan.txt"]).as_bytes(),
        b"fabrikam's plan"
    );
    // Purging again brings the records in line.
    cli.ok(&["purge", "contoso", "--yes"]);
    assert_eq!(cli.json(&["tenant", "show", "contoso"])["state"], "purged");
    cli.expect(4, &["get", "contoso", "report.txt"]);
}

/// Output to a reader that went away (`atrest init | head -0`) ends
/// quietly: the command still does its work, with no panic and nothing but
/// warnings on standard error, and exits 1 as for any output that could not be written
/// (or with its own error's code).
#[test]
fn output_to_a_reader_that_went_away_ends_quietly() {
    let dir = TempDir::new("cli-closed-pipe");
    let cli = Cli::new(dir.path());
    let runs: [(&[&str], i32); 5] = [
        (&["init"], 1),
        (&["tenant", "create", "contoso"], 1),
        (&["tenant", "list"], 1),
        (&["--json", "tenant", "show", "contoso"], 1),
        (&["--json", "tenant", "show", "nobody"], 3),
    ];
    for (args, code) in runs {
        let mut child = cli
            .command()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The only reader of its standard output is gone before it writes.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(code),
            "atrest {args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "atrest {args:?}: {stderr}");
        // Nothing but warnings (such as init's about where the witness is).
        if code == 1 {
            assert!(
                stderr
                    .lines()
                    .all(|line| line.starts_with("atrest: warning: ")),
                "atrest {args:?}: {stderr}"
            );
        }
    }
    assert!(cli.ok(&["tenant", "list"]).contains("contoso"));
    // Standard output that fails otherwise is reported.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = cli
        .command()
        .args(["tenant", "list"])
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("atrest: cannot write to standard output"),
        "{stderr}"
    );
}

/// Names that print alike are one name (composed, NFC), tenant names have
/// one spelling, and listings line up however wide the names' characters.
#[test]
fn names_are_composed_and_listings_line_up() {
    let dir = TempDir::new("cli-names");
    let cli = Cli::new(dir.path());
    cli.ok(&["init"]);
    cli.ok(&["tenant", "create", "contoso"]);
    for bad in ["Contoso", "con toso", "con/toso", "-x"] {
        cli.expect(2, &["tenant", "create", bad]);
    }
    let input = dir.path().join("in.txt");
    std::fs::write(&input, b"one").unwrap();
    // "café" decomposed (e + combining acute) and composed.
    let decomposed = "cafe\u{301}.txt";
    let composed = "caf\u{e9}.txt";
    cli.ok(&[
        "put",
        "contoso",
        input.to_str().unwrap(),
        "--name",
        decomposed,
    ]);
    std::fs::write(&input, b"two").unwrap();
    let second = cli.json(&[
        "put",
        "contoso",
        input.to_str().unwrap(),
        "--name",
        composed,
    ]);
    assert_eq!(second["version"], 2, "{second}");
    assert_eq!(cli.run(&["get", "contoso", decomposed]).stdout, b"two");
    let listing = cli.json(&["ls", "contoso", "--versions"]);
    let names: Vec<_> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, [composed, composed]);
    // Seconds, not nanoseconds.
    let sealed = listing[0]["sealed"].as_str().unwrap();
    assert!(sealed.ends_with('Z') && !sealed.contains('.'), "{sealed}");

    // Wide (CJK) and narrow names: each column starts at the same place.
    cli.ok(&[
        "put",
        "contoso",
        input.to_str().unwrap(),
        "--name",
        "日本語の報告書.txt",
    ]);
    cli.ok(&["put", "contoso", input.to_str().unwrap(), "--name", "a.txt"]);
    let table = cli.ok(&["ls", "contoso"]);
    let width = |text: &str| -> usize {
        text.chars()
            .map(|c| match c {
                '\u{3000}'..='\u{9fff}' | '\u{ff00}'..='\u{ffef}' => 2,
                '\u{300}'..='\u{36f}' => 0,
                _ => 1,
            })
            .sum()
    };
    let columns: Vec<usize> = table
        .lines()
        .map(|line| {
            // Where the third column (VER, right-aligned) ends.
            let mut tokens = 0;
            let mut in_token = false;
            let mut end = line.len();
            for (at, c) in line.char_indices() {
                if c == ' ' && in_token {
                    tokens += 1;
                    if tokens == 3 {
                        end = at;
                        break;
                    }
                }
                in_token = c != ' ';
            }
            width(&line[..end])
        })
        .collect();
    assert!(
        columns.windows(2).all(|w| w[0] == w[1]),
        "{columns:?}\n{table}"
    );
}

/// One damaged byte in the audit log stops the deployment (it fails
/// closed), says the way out, and `audit recover` with the operator's key
/// sets the log aside whole and lets the deployment work again.
#[test]
fn a_damaged_audit_log_is_set_aside_and_the_deployment_works_again() {
    let dir = TempDir::new("cli-audit-recover");
    let cli = Cli::new(dir.path());
    let init = cli.json(&["init"]);
    let key = init["audit_verifying_key"].as_str().unwrap().to_owned();
    cli.ok(&["tenant", "create", "contoso"]);
    let input = dir.path().join("in.bin");
    let bytes = content(100_000, 3);
    std::fs::write(&input, &bytes).unwrap();
    cli.ok(&["put", "contoso", input.to_str().unwrap(), "--name", "a.bin"]);

    // One byte of an early line.
    let audit = cli.data.join("audit");
    let segment = audit.join("00000001.log");
    let mut log = std::fs::read(&segment).unwrap();
    let at = log.iter().position(|&b| b == b'\n').unwrap() + 30;
    log[at] ^= 0x01;
    std::fs::write(&segment, &log).unwrap();
    let snapshot = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let damaged = snapshot(&audit);
    for args in [
        vec!["ls"],
        vec!["put", "contoso", input.to_str().unwrap()],
        vec!["get", "contoso", "a.bin"],
    ] {
        let output = cli.run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(5), "{args:?}: {stderr}");
        assert!(
            stderr.contains("atrest audit recover"),
            "{args:?}: {stderr}"
        );
    }
    let verify = cli.run(&["audit", "verify", "--key", &key]);
    assert_eq!(verify.status.code(), Some(5));

    // A key that is not one, or not the deployment's, is refused; so is a
    // recovery while another process has the deployment open.
    cli.expect(2, &["audit", "recover", "--key", "garbage"]);
    let leases = cli.data.join("leases");
    let held = std::fs::File::create(leases.join("1-1.lease")).unwrap();
    held.lock().unwrap();
    std::fs::write(
        leases.join("1-1.lease"),
        br#"{"program":"atrest-serve","pid":1,"started":1}"#,
    )
    .unwrap();
    let refused = cli.expect(7, &["audit", "recover", "--key", &key]);
    assert!(refused.is_empty());
    drop(held);
    assert_eq!(snapshot(&audit), damaged, "nothing moved");

    let recovered = cli.json(&["audit", "recover", "--key", &key]);
    let set_aside = Path::new(recovered["set_aside"].as_str().unwrap()).to_path_buf();
    assert!(
        set_aside.starts_with(cli.data.join("audit.set-aside")),
        "{recovered}"
    );
    assert_eq!(recovered["lines_verified"], 1, "{recovered}");
    // The evidence is kept byte for byte.
    let kept: Vec<_> = snapshot(&set_aside)
        .into_iter()
        .filter(|(name, _)| name != "LOCK")
        .collect();
    let before: Vec<_> = damaged
        .into_iter()
        .filter(|(name, _)| name != "LOCK")
        .collect();
    assert_eq!(kept, before);

    // The deployment works again, and the new log says how it began.
    assert!(cli.run(&["get", "contoso", "a.bin"]).stdout == bytes);
    cli.ok(&["put", "contoso", input.to_str().unwrap(), "--name", "b.bin"]);
    let verified = cli.ok(&["audit", "verify", "--key", &key]);
    assert!(verified.contains("after a damaged one"), "{verified}");
    let entries = cli.json(&["audit", "show", "--checkpoints"]);
    assert_eq!(entries[1]["event"]["type"], "log_restarted", "{entries}");
    cli.expect(2, &["audit", "recover", "--key", &key]);
}

/// A full disk (a small tmpfs, filled): commands that only read still
/// work, writes fail as I/O (exit 1) saying the disk is out of space, and
/// nothing is damaged: once room is made, everything works and verifies.
/// Mounting needs root (and a machine that allows it), which CI has;
/// elsewhere the test says it is skipped.
#[test]
fn a_full_disk_is_out_of_space_and_what_only_reads_still_works() {
    let dir = TempDir::new("cli-full-disk");
    let disk = dir.path().join("disk");
    let Some(_mounted) = atrest_test_support::tmpfs::Tmpfs::mount(&disk, 48) else {
        return;
    };
    let cli = Cli {
        data: disk.join("data"),
        env: Vec::new(),
    };
    cli.ok(&["init"]);
    cli.ok(&["tenant", "create", "contoso"]);
    let input = dir.path().join("in.bin");
    let bytes = content(3_000_000, 5);
    std::fs::write(&input, &bytes).unwrap();
    cli.ok(&["put", "contoso", input.to_str().unwrap(), "--name", "a.bin"]);

    // Fill it.
    let filler = disk.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    let _ = file.sync_all();
    drop(file);

    for args in [
        vec!["ls"],
        vec!["ls", "contoso", "a.bin"],
        vec!["tenant", "list"],
        vec!["tenant", "show", "contoso"],
        vec!["audit", "verify"],
        vec!["audit", "show", "--last", "3"],
        vec!["gc", "--dry-run"],
        vec!["kms", "list"],
    ] {
        cli.ok(&args);
    }
    let out = dir.path().join("out.bin");
    for args in [
        vec!["put", "contoso", input.to_str().unwrap(), "--name", "b.bin"],
        vec!["tenant", "create", "fabrikam"],
        vec!["get", "contoso", "a.bin", "-o", out.to_str().unwrap()],
    ] {
        let output = cli.run(&args);
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {said}");
        assert!(
            said.contains("out of space") || said.contains("No space left"),
            "{args:?}: {said}"
        );
    }
    // Still whole, and working once there is room.
    cli.ok(&["audit", "verify"]);
    std::fs::remove_file(&filler).unwrap();
    cli.ok(&["put", "contoso", input.to_str().unwrap(), "--name", "b.bin"]);
    cli.ok(&["get", "contoso", "a.bin", "-o", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == bytes);
    cli.ok(&["audit", "verify"]);
}

/// Copies directory `from` to `to` (files only, recursively, modes kept).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `atrest rm` deletes a version (or a file) and erases its key: a
/// deployment whose databases and blobs are restored from a backup taken
/// before — the tenant keys as they are now, which no database holds —
/// cannot read it. Other files stay readable in the live deployment; a
/// refused principal deletes nothing; `--later` leaves the erasure to
/// `atrest erase`.
#[test]
fn rm_erases_for_good_even_from_a_restored_backup() {
    let dir = TempDir::new("rm");
    let cli = Cli::new(dir.path());
    cli.ok(&["init"]);
    cli.ok(&["tenant", "create", "contoso"]);
    cli.ok(&["tenant", "create", "fabrikam"]);
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let v1 = write("minutes-1", b"first minutes, to be deleted");
    let v2 = write("minutes-2", b"second minutes, kept");
    let other = write("budget", b"the budget, kept");
    cli.ok(&["put", "contoso", &v1, "--name", "minutes.txt"]);
    cli.ok(&["put", "contoso", &v2, "--name", "minutes.txt"]);
    cli.ok(&["put", "contoso", &other, "--name", "budget.txt"]);
    // A backup of everything but the tenant keys (no process running).
    let backup = dir.path().join("backup");
    copy_tree(&cli.data, &backup);
    std::fs::remove_dir_all(backup.join("tenant-keys")).unwrap();
    std::fs::remove_dir_all(backup.join("leases")).unwrap();

    // Another tenant's user may not delete.
    cli.expect(
        4,
        &[
            "rm",
            "contoso",
            "minutes.txt",
            "--version",
            "1",
            "--as",
            "eve@fabrikam",
        ],
    );
    cli.expect(3, &["rm", "contoso", "minutes.txt", "--version", "9"]);
    cli.expect(3, &["rm", "contoso", "nothing.txt"]);
    let removed = cli.json(&["rm", "contoso", "minutes.txt", "--version", "1"]);
    assert_eq!(
        removed["deleted_versions"],
        serde_json::json!([1]),
        "{removed}"
    );
    assert_eq!(removed["erasure"]["complete"], true, "{removed}");
    assert_eq!(
        removed["erasure"]["retired_tik_versions"],
        serde_json::json!([1])
    );
    cli.expect(3, &["get", "contoso", "minutes.txt", "--version", "1"]);
    let listed = cli.json(&["ls", "contoso", "minutes.txt"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        cli.run(&["get", "contoso", "minutes.txt"]).stdout,
        b"second minutes, kept"
    );
    assert_eq!(
        cli.run(&["get", "contoso", "budget.txt"]).stdout,
        b"the budget, kept"
    );
    let audit = cli.json(&["audit", "show", "--tenant", "contoso"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"]["type"] == "file_deleted"
                && e["event"]["principal"] == "cli@contoso"),
        "{audit}"
    );

    // The backup's databases and blobs, today's tenant keys: the deleted
    // version's record and wrapped key are back, its key is not.
    let restored = dir.path().join("restored");
    copy_tree(&backup, &restored);
    copy_tree(&cli.data.join("tenant-keys"), &restored.join("tenant-keys"));
    let restored_cli = Cli {
        data: restored,
        env: Vec::new(),
    };
    // The tenant's record changed since the backup (the erasure rolled its
    // TIK): the restored one is an older copy, refused until the operator
    // who restored the backup accepts it. The other tenant did not change.
    let refused = restored_cli.run(&["ls", "contoso", "minutes.txt"]);
    assert_eq!(refused.status.code(), Some(5), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("older copy"),
        "{refused:?}"
    );
    restored_cli.ok(&["ls", "fabrikam"]);
    let contoso_id = cli.json(&["tenant", "show", "contoso"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(&contoso_id),
        "the refusal names the tenant's id: {refused:?}"
    );
    let accepted = restored_cli.json(&["tenant", "accept-restored", &contoso_id]);
    assert_eq!(accepted["name"], "contoso", "{accepted}");
    assert!(
        restored_cli
            .json(&["audit", "show", "--tenant", "contoso"])
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"]["type"] == "tenant_record_accepted"),
        "the acceptance is audited"
    );
    let listed = restored_cli.json(&["ls", "contoso", "minutes.txt"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "the backup lists it");
    let output = restored_cli.run(&["get", "contoso", "minutes.txt", "--version", "1"]);
    // The wrap opens under no key there is: an integrity failure.
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");

    // Deleting now and erasing later: every version of a file.
    cli.ok(&["rm", "contoso", "budget.txt", "--later"]);
    cli.expect(3, &["get", "contoso", "budget.txt"]);
    let erased = cli.json(&["erase", "contoso"]);
    assert_eq!(erased["complete"], true, "{erased}");
    assert_eq!(
        cli.run(&["get", "contoso", "minutes.txt"]).stdout,
        b"second minutes, kept"
    );
    assert!(cli.json(&["audit", "verify"])["problem"].is_null());
}

/// A writer of the catalog (no key) edits the table that maps tenant
/// names to tenants — every single edit of each row's name, tenant and
/// tag to each value seen in its column or a fresh one, each deletion, and
/// every ordered pair of them (which swaps names, ids or tags between the
/// two tenants): `bob@fabrikam` never reads contoso's file nor writes into
/// contoso, and `alice@contoso` never reads fabrikam's; an edited name is
/// refused (and audited), never followed. The service refuses the same
/// way.
#[test]
fn every_edit_of_the_tenant_names_keeps_tenants_apart() {
    let dir = TempDir::new("name-edits");
    let (cli, _) = deployment_with_file(dir.path(), "minutes.txt", b"contoso's minutes");
    cli.ok(&["tenant", "create", "fabrikam"]);
    let theirs = dir.path().join("fabrikam").join("minutes.txt");
    std::fs::create_dir_all(theirs.parent().unwrap()).unwrap();
    std::fs::write(&theirs, b"fabrikam's minutes").unwrap();
    cli.ok(&["put", "fabrikam", theirs.to_str().unwrap()]);
    let upload = dir.path().join("upload.txt");
    std::fs::write(&upload, b"bob's upload").unwrap();
    let contoso_id = cli.json(&["tenant", "show", "contoso"])["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let catalog = cli.data.join("catalog.sqlite");
    let edits = NameEdits::of(&catalog);
    let mut uploads = 0;
    let check = |label: &str, uploads: &mut u32| {
        let read = cli.run(&["get", "fabrikam", "minutes.txt", "--as", "bob@fabrikam"]);
        assert!(
            !String::from_utf8_lossy(&read.stdout).contains("contoso's"),
            "{label}: bob@fabrikam read contoso's file"
        );
        let read = cli.run(&["get", "contoso", "minutes.txt", "--as", "alice@contoso"]);
        assert!(
            !String::from_utf8_lossy(&read.stdout).contains("fabrikam's"),
            "{label}: alice@contoso read fabrikam's file"
        );
        *uploads += 1;
        let name = format!("upload-{uploads}.txt");
        let _ = cli.run(&[
            "put",
            "fabrikam",
            upload.to_str().unwrap(),
            "--name",
            &name,
            "--as",
            "bob@fabrikam",
        ]);
        let into_contoso: i64 = atrest_test_support::sqlite::Connection::open(&catalog)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM catalog_files WHERE name = ?1 AND hex(tenant) = upper(replace(?2, '-', ''))",
                [name.as_str(), contoso_id.as_str()],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(into_contoso, 0, "{label}: bob@fabrikam wrote into contoso");
    };
    let cases = edits.each(|label| check(label, &mut uploads));
    assert!(cases > 40, "{cases} cases");
    // Unedited, both read their own; the refusals were audited.
    assert_eq!(
        cli.run(&["get", "fabrikam", "minutes.txt", "--as", "bob@fabrikam"])
            .stdout,
        b"fabrikam's minutes"
    );
    let rejected = cli
        .json(&["audit", "show"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["type"] == "metadata_rejected")
        .count();
    assert!(rejected > 0);
}

/// A deployment whose tenant names were made before names were tagged:
/// its names are refused until `atrest tenant tag-names` tags them, once;
/// a name that has a tag is left as it is.
#[test]
fn untagged_names_of_an_earlier_version_are_refused_until_tagged() {
    let dir = TempDir::new("untagged-names");
    let (cli, _) = deployment_with_file(dir.path(), "minutes.txt", b"contoso's minutes");
    cli.ok(&["tenant", "create", "fabrikam"]);
    let db =
        atrest_test_support::sqlite::Connection::open(cli.data.join("catalog.sqlite")).unwrap();
    let tag_of = |name: &str| -> Option<Vec<u8>> {
        db.query_row(
            "SELECT tag FROM catalog_tenants WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .unwrap()
    };
    let fabrikam_tag = tag_of("fabrikam");
    // As an earlier version left it: contoso's name has no tag.
    db.execute(
        "UPDATE catalog_tenants SET tag = NULL WHERE name = 'contoso'",
        [],
    )
    .unwrap();
    cli.expect(5, &["get", "contoso", "minutes.txt"]);
    let tagged = cli.json(&["tenant", "tag-names"]);
    assert_eq!(tagged["tagged"], serde_json::json!(["contoso"]), "{tagged}");
    assert_eq!(
        cli.ok(&["get", "contoso", "minutes.txt"]),
        "contoso's minutes"
    );
    assert_eq!(
        tag_of("fabrikam"),
        fabrikam_tag,
        "a tagged name is left alone"
    );
    let again = cli.json(&["tenant", "tag-names"]);
    assert_eq!(again["tagged"], serde_json::json!([]), "{again}");
}

/// A writer of the databases edits contoso's record so that its tenant key
/// is not found, and points the name "fabrikam" at contoso: `atrest purge
/// fabrikam` refuses, and contoso's keys stay (its file reads again once
/// the databases are put back).
#[test]
fn a_name_pointed_at_a_tenant_whose_key_seems_gone_purges_nothing() {
    let dir = TempDir::new("purge-edited");
    let (cli, _) = deployment_with_file(dir.path(), "minutes.txt", b"contoso's minutes");
    cli.ok(&["tenant", "create", "fabrikam"]);
    let contoso = cli.json(&["tenant", "show", "contoso"])["id"]
        .as_str()
        .unwrap()
        .replace('-', "");
    let backup = dir.path().join("backup");
    copy_databases(&cli.data, &backup);
    let keys =
        atrest_test_support::sqlite::Connection::open(cli.data.join("atrest.sqlite")).unwrap();
    assert_eq!(
        keys.execute(
            &format!(
                "UPDATE tenants SET tik_id = randomblob(16) WHERE hex(tenant) = upper('{contoso}')"
            ),
            [],
        )
        .unwrap(),
        1
    );
    let catalog =
        atrest_test_support::sqlite::Connection::open(cli.data.join("catalog.sqlite")).unwrap();
    catalog
        .execute_batch(&format!(
            "UPDATE catalog_tenants SET tenant = randomblob(16) WHERE name = 'contoso';
             UPDATE catalog_tenants SET tenant = X'{contoso}' WHERE name = 'fabrikam';"
        ))
        .unwrap();
    drop((keys, catalog));
    let output = cli.run(&["purge", "fabrikam", "--yes"]);
    assert_ne!(output.status.code(), Some(0), "{output:?}");
    copy_databases(&backup, &cli.data);
    assert_eq!(
        cli.ok(&["get", "contoso", "minutes.txt"]),
        "contoso's minutes"
    );
}
