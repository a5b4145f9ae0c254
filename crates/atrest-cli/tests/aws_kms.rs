//! A customer-key tenant whose two keys are in AWS KMS, in two regions,
//! through the operator program, against the emulator `scripts/test`
//! starts (moto's KMS server) behind a proxy the test controls: the
//! provider added with `kms add --aws`, files sealed and opened, an outage
//! served through the availability key only as the tenant's fallback
//! policy allows, and the key owner's refusal never served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use atrest_test_support::kms_emulator::{self, endpoint};
use atrest_test_support::proxy::Proxy;
use atrest_test_support::{TempDir, seeded};

fn atrest(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atrest"))
        .arg("--data")
        .arg(data)
        .args(args)
        // The file names the credentials; none come from the environment.
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap()
}

/// Runs and expects exit status `code`; returns stdout and stderr.
fn expect(data: &Path, code: i32, args: &[&str]) -> (String, String) {
    let output = atrest(data, args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert_eq!(
        output.status.code(),
        Some(code),
        "atrest {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

#[tokio::test]
async fn a_customer_key_tenant_in_aws_kms_through_the_operator_program() {
    let dir = TempDir::new("cli-aws-kms");
    let data = dir.path().join("data");
    let data = data.as_path();
    expect(data, 0, &["init"]);
    let credentials = dir.path().join("aws-credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = AKIDCLI\naws_secret_access_key = cli-secret\n",
    )
    .unwrap();
    let target = endpoint().trim_start_matches("http://").to_owned();
    let proxy = Proxy::start(target.as_str());
    let proxied = format!("http://{}", proxy.addr());
    let add = [
        "kms",
        "add",
        "aws",
        "--aws",
        "--endpoint",
        &proxied,
        "--credentials-file",
        credentials.to_str().unwrap(),
        "--timeout",
        "2s",
    ];
    // A credentials file others can read is refused, and names no secret.
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, said) = expect(data, 2, &add);
    assert!(
        said.contains("chmod 600") && !said.contains("cli-secret"),
        "{said}"
    );
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600)).unwrap();
    expect(data, 0, &add);
    let (listed, _) = expect(data, 0, &["--json", "kms", "list"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["aws"][0]["name"], "aws", "{listed}");
    let (_, said) = expect(data, 2, &["kms", "create-key", "aws", "contoso"]);
    assert!(said.contains("aws kms create-key"), "{said}");

    // The customer's keys, in two regions; an alias is refused.
    let east = kms_emulator::owner(&endpoint(), "us-east-1", None);
    let west = kms_emulator::owner(&endpoint(), "eu-west-1", None);
    let keys = [east.create_key().await, west.create_key().await];
    let alias = keys[0]
        .replace(":key/", ":alias/")
        .replace(kms_emulator::key_id(&keys[0]), "atrest");
    expect(
        data,
        2,
        &[
            "tenant",
            "create",
            "contoso",
            "--customer-keys",
            &format!("aws:{alias},aws:{}", keys[1]),
        ],
    );
    expect(
        data,
        0,
        &[
            "tenant",
            "create",
            "contoso",
            "--customer-keys",
            &format!("aws:{},aws:{}", keys[0], keys[1]),
        ],
    );

    let plain = seeded(200_000, 7);
    let file = dir.path().join("ledger.csv");
    std::fs::write(&file, &plain).unwrap();
    let out = dir.path().join("out.csv");
    let (out_s, file_s) = (out.to_str().unwrap(), file.to_str().unwrap());
    expect(data, 0, &["put", "contoso", file_s]);
    expect(data, 0, &["get", "contoso", "ledger.csv", "-o", out_s]);
    assert_eq!(std::fs::read(&out).unwrap(), plain);

    // KMS unreachable: under `automatic` the availability key serves, said
    // on stderr; under `never` the outage is an outage (exit 6).
    proxy.cut();
    let (_, said) = expect(data, 0, &["get", "contoso", "ledger.csv", "-o", out_s]);
    assert!(said.contains("availability key"), "{said}");
    expect(data, 0, &["tenant", "fallback", "contoso", "never"]);
    expect(data, 6, &["get", "contoso", "ledger.csv", "-o", out_s]);
    expect(data, 0, &["tenant", "fallback", "contoso", "automatic"]);
    proxy.restore();

    // The owner disables one key: the other serves. Both: refused (exit
    // 4), never through the availability key.
    east.disable(&keys[0]).await;
    expect(data, 0, &["get", "contoso", "ledger.csv", "-o", out_s]);
    west.schedule_deletion(&keys[1]).await;
    let (_, said) = expect(data, 4, &["get", "contoso", "ledger.csv", "-o", out_s]);
    assert!(!said.contains("availability key"), "{said}");
    expect(
        data,
        4,
        &["put", "contoso", file_s, "--name", "refused.csv"],
    );
    // The owner restores one: served again.
    east.enable(&keys[0]).await;
    expect(data, 0, &["get", "contoso", "ledger.csv", "-o", out_s]);
    assert_eq!(std::fs::read(&out).unwrap(), plain);
}
