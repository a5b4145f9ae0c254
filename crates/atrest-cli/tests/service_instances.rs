//! Two `atrest-serve` instances over one deployment's shared servers — the
//! catalog and key metadata in PostgreSQL, blobs in Azure storage (the
//! Azurite emulator), the customer's root keys in OpenBao — with the
//! operator program working beside them: uploads through one and
//! downloads through the other while the TIK is rotated, an instance
//! killed mid-upload, and a customer key revocation both refuse within
//! the cache lifetime. `scripts/test` starts the servers.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod servers_support;
mod service_support;

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use atrest_test_support::postgres::{admin_url, database_url, run_sql};
use atrest_test_support::{TempDir, seeded as content};
use serde_json::Value;

use servers_support::{openbao, unique, var};
use service_support::{
    Instance, atrest_in as atrest, bearer, contoso_in_bao, head, send, token_in,
};

/// The cache lifetime the instances run with.
const TTL: Duration = Duration::from_secs(2);

fn names(addr: &str, token: &str) -> Vec<String> {
    let listing = send(addr, token, "GET", "/v1/tenants/contoso/files", b"");
    assert_eq!(listing.status, 200, "{}", listing.text());
    let listing: Value = serde_json::from_slice(&listing.body).unwrap();
    listing["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn two_instances_share_files_through_rotation_a_kill_and_a_revocation() {
    let admin = admin_url();
    let database = unique("atrest_service_");
    run_sql(&admin, &format!("CREATE DATABASE {database}"));
    let azurite = atrest_test_support::azurite::azurite();
    let container = unique("atrest-service-");
    azurite.create_container(&container);
    let mount = unique("transit-service-");
    openbao(
        "POST",
        &format!("sys/mounts/{mount}"),
        r#"{"type":"transit"}"#,
    );

    let dir = TempDir::new("service-instances");
    let data = dir.path().join("data");
    let mut env: Vec<(String, String)> = azurite
        .options()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v))
        .collect();
    env.push((
        "ATREST_TEST_METADATA_URL".into(),
        database_url(&admin, &database),
    ));
    env.push(("ATREST_TEST_BAO_TOKEN".into(), var("ATREST_OPENBAO_TOKEN")));
    let blobs = format!("az://{container}");
    atrest(
        &data,
        &env,
        &[
            "init",
            "--blobs",
            &blobs,
            "--metadata-url-env",
            "ATREST_TEST_METADATA_URL",
        ],
    );
    contoso_in_bao(&data, &env, &var("ATREST_OPENBAO_ADDR"), &mount, &[]);
    let alice = token_in(&data, &env, "alice@contoso");
    let ttl = format!("{}s", TTL.as_secs());
    let a = Instance::start(&data, "service-a", &env, &["--cache-ttl", &ttl]);
    let mut b = Instance::start(&data, "service-b", &env, &["--cache-ttl", &ttl]);

    // Up through one, down through the other.
    let report = content(3_000_000, 1);
    let put = send(
        &a.addr,
        &alice,
        "PUT",
        "/v1/tenants/contoso/files/report",
        &report,
    );
    assert_eq!(put.status, 201, "{}\n{}", put.text(), a.log());
    let got = send(
        &b.addr,
        &alice,
        "GET",
        "/v1/tenants/contoso/files/report",
        b"",
    );
    assert_eq!(got.status, 200, "{}\n{}", got.text(), b.log());
    assert!(got.body == report);

    // Traffic on both instances while the operator program rotates the TIK.
    let traffic = {
        let (a, b, alice) = (a.addr.clone(), b.addr.clone(), alice.clone());
        std::thread::spawn(move || {
            for i in 0..24_u64 {
                let (up, down) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
                let bytes = content(100_000 + usize::try_from(i).unwrap(), i);
                let path = format!("/v1/tenants/contoso/files/during-rotation/{i}");
                let put = send(up, &alice, "PUT", &path, &bytes);
                assert_eq!(put.status, 201, "upload {i}: {}", put.text());
                let got = send(down, &alice, "GET", &path, b"");
                assert_eq!(got.status, 200, "download {i}: {}", got.text());
                assert!(got.body == bytes, "download {i}");
            }
        })
    };
    atrest(&data, &env, &["rotate", "tik", "contoso"]);
    traffic.join().unwrap();
    // Files from before and during the rotation open through both.
    for addr in [&a.addr, &b.addr] {
        let got = send(addr, &alice, "GET", "/v1/tenants/contoso/files/report", b"");
        assert!(got.status == 200 && got.body == report);
    }
    let shown = atrest(&data, &env, &["--json", "tenant", "show", "contoso"]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["current_tik"], 2, "{shown}");

    // Instance B is killed in the middle of an upload: no trace of it in
    // the catalog, through A; the operator's gc removes the rest.
    let mut stream = TcpStream::connect(&b.addr).unwrap();
    let auth = bearer(&alice);
    let start = head(
        &b.addr,
        "PUT",
        "/v1/tenants/contoso/files/killed",
        &[(auth.0, auth.1.as_str())],
        Some(8_000_000),
    );
    stream.write_all(start.as_bytes()).unwrap();
    stream.write_all(&content(2_000_000, 9)).unwrap();
    // Killed once the upload is under way: its seal begun in the catalog,
    // which gc leaves alone, whatever the cut-off, while B lives.
    let begun = Instant::now();
    loop {
        let dry = atrest(
            &data,
            &env,
            &["--json", "gc", "--dry-run", "--older-than", "0s"],
        );
        let dry: Value = serde_json::from_str(&dry).unwrap();
        if dry["skipped"].as_array().is_some_and(|skipped| {
            skipped
                .iter()
                .any(|s| s["reason"].as_str().unwrap().contains("service-b"))
        }) {
            assert_eq!(dry["abandoned_uploads"], serde_json::json!([]), "{dry}");
            break;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(30),
            "the upload never began: {dry}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    b.kill();
    drop(stream);
    assert!(!names(&a.addr, &alice).contains(&"killed".to_owned()));
    let killed = send(
        &a.addr,
        &alice,
        "GET",
        "/v1/tenants/contoso/files/killed",
        b"",
    );
    assert_eq!(killed.status, 404);
    let gc = atrest(&data, &env, &["--json", "gc", "--older-than", "0s"]);
    let gc: Value = serde_json::from_str(&gc).unwrap();
    assert_eq!(
        gc["abandoned_uploads"].as_array().map(Vec::len),
        Some(1),
        "{gc}"
    );
    let b = Instance::start(&data, "service-b2", &env, &["--cache-ttl", &ttl]);
    let got = send(
        &b.addr,
        &alice,
        "GET",
        "/v1/tenants/contoso/files/report",
        b"",
    );
    assert!(got.status == 200 && got.body == report);

    // The customer revokes their keys in OpenBao (retires the versions the
    // tenant's keys use): both instances refuse within the cache lifetime,
    // and never fall back to the availability key for a user.
    for key in ["contoso-a", "contoso-b"] {
        openbao("POST", &format!("{mount}/keys/{key}/rotate"), "");
        openbao(
            "POST",
            &format!("{mount}/keys/{key}/config"),
            r#"{"min_decryption_version":2}"#,
        );
    }
    let revoked = Instant::now();
    let mut refused = [None, None];
    while refused.iter().any(Option::is_none) {
        for (i, addr) in [&a.addr, &b.addr].into_iter().enumerate() {
            if refused[i].is_none() {
                let got = send(addr, &alice, "GET", "/v1/tenants/contoso/files/report", b"");
                match got.status {
                    200 => assert!(got.body == report),
                    403 => refused[i] = Some(revoked.elapsed()),
                    other => panic!("status {other}: {}", got.text()),
                }
            }
        }
        assert!(
            revoked.elapsed() < TTL * 4,
            "still served {:?} after the revocation: {refused:?}",
            revoked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for addr in [&a.addr, &b.addr] {
        let put = send(
            addr,
            &alice,
            "PUT",
            "/v1/tenants/contoso/files/after",
            b"new",
        );
        assert_eq!(put.status, 403, "{}", put.text());
        let got = send(addr, &alice, "GET", "/v1/tenants/contoso/files/report", b"");
        assert_eq!(got.status, 403, "{}", got.text());
    }

    drop((a, b));
    run_sql(&admin, &format!("DROP DATABASE {database} WITH (FORCE)"));
}
