//! The `atrest` program on the servers a deployment beyond one machine
//! uses: key metadata and the catalog in PostgreSQL, blobs in Azure storage
//! (the Azurite emulator), a customer's root keys in OpenBao's transit
//! engine. `scripts/test` starts all three.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::{Command, Output};

use atrest_test_support::postgres::{admin_url, database_url, run_sql};

mod servers_support;
use atrest_test_support::{TempDir, seeded as content};
use servers_support::{openbao, unique, var};

struct Program<'a> {
    data: &'a Path,
    env: Vec<(String, String)>,
}

impl Program<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_atrest"));
        command.arg("--data").arg(self.data).args(args);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command.output().unwrap()
    }

    fn expect(&self, code: i32, args: &[&str]) -> String {
        let output = self.run(args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "atrest {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn ok(&self, args: &[&str]) -> String {
        self.expect(0, args)
    }
}

#[test]
fn the_program_runs_on_postgresql_azure_storage_and_openbao() {
    // A database, a container and a transit mount of this test's own.
    let admin = admin_url();
    let database = unique("atrest_cli_");
    run_sql(&admin, &format!("CREATE DATABASE {database}"));
    let database_url = database_url(&admin, &database);
    let azurite = atrest_test_support::azurite::azurite();
    let container = unique("atrest-cli-");
    azurite.create_container(&container);
    let mount = unique("transit-cli-");
    openbao(
        "POST",
        &format!("sys/mounts/{mount}"),
        r#"{"type":"transit"}"#,
    );

    let dir = TempDir::new("servers");
    let data = dir.path().join("data");
    let mut env: Vec<(String, String)> = azurite
        .options()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v))
        .collect();
    env.push(("ATREST_TEST_METADATA_URL".into(), database_url.clone()));
    env.push(("ATREST_TEST_BAO_TOKEN".into(), var("ATREST_OPENBAO_TOKEN")));
    let program = Program { data: &data, env };

    let replica = dir.path().join("replica");
    program.ok(&[
        "init",
        "--blobs",
        &format!("az://{container}"),
        "--replica",
        replica.to_str().unwrap(),
        "--metadata-url-env",
        "ATREST_TEST_METADATA_URL",
    ]);
    program.ok(&[
        "kms",
        "add",
        "bao",
        "--address",
        &var("ATREST_OPENBAO_ADDR"),
        "--mount",
        &mount,
        "--token-env",
        "ATREST_TEST_BAO_TOKEN",
    ]);
    // The configuration names where things are, never a credential.
    let config = std::fs::read_to_string(data.join("atrest.json")).unwrap();
    assert!(
        config.contains("ATREST_TEST_METADATA_URL") && config.contains("ATREST_TEST_BAO_TOKEN")
    );
    assert!(!config.contains(&database) && !config.contains(&var("ATREST_OPENBAO_TOKEN")));

    for key in ["contoso-a", "contoso-b"] {
        program.ok(&["kms", "create-key", "bao", key]);
    }
    program.ok(&[
        "tenant",
        "create",
        "contoso",
        "--customer-keys",
        "bao:contoso-a@1,bao:contoso-b@1",
    ]);
    let bytes = content(300_000, 7);
    let input = dir.path().join("report.pdf");
    std::fs::write(&input, &bytes).unwrap();
    program.ok(&["put", "contoso", input.to_str().unwrap()]);
    let output = program.run(&["get", "contoso", "report.pdf"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout == bytes);
    assert!(program.ok(&["ls", "contoso"]).contains("report.pdf"));
    // The replica in a local directory, checked against the digest the
    // PostgreSQL catalog keeps; a copy removed there is made again.
    assert!(program.ok(&["blobs", "scrub"]).contains("0 bad copies"));
    let copies: Vec<_> = std::fs::read_dir(&replica)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(copies.len(), 1);
    std::fs::remove_file(&copies[0]).unwrap();
    let _ = program.expect(5, &["blobs", "scrub"]);
    assert!(
        program
            .ok(&["blobs", "scrub", "--repair"])
            .contains("1 repaired")
    );
    assert!(program.ok(&["blobs", "scrub"]).contains("0 bad copies"));

    // Neither the key metadata, nor the catalog, nor a blob stayed in the
    // directory (the service's own root keys, sealed under the master key,
    // do).
    for entry in std::fs::read_dir(&data).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with("atrest.sqlite")
                && !name.starts_with("catalog.sqlite")
                && name != "blobs",
            "{name} in the deployment directory"
        );
    }

    // The customer retires the version the tenant's keys use, in both
    // keys: refused, and never served by the availability key.
    for key in ["contoso-a", "contoso-b"] {
        openbao("POST", &format!("{mount}/keys/{key}/rotate"), "");
        openbao(
            "POST",
            &format!("{mount}/keys/{key}/config"),
            r#"{"min_decryption_version":2}"#,
        );
    }
    let refused = program.run(&["--json", "get", "contoso", "report.pdf"]);
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    assert!(refused.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!stderr.contains("\"succeeded\":true"), "{stderr}");

    run_sql(&admin, &format!("DROP DATABASE {database} WITH (FORCE)"));
}
