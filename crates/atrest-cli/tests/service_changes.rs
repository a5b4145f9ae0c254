//! Key changes made by the operator program reach running `atrest-serve`
//! instances within two seconds, whatever their cache lifetime: a TIK roll
//! is used for the next uploads, a revocation refuses, and a purge refuses
//! reads and never acknowledges an upload once it has completed. Two
//! instances over one deployment, with its key metadata in SQLite and then
//! in PostgreSQL; the customer's keys in OpenBao. `scripts/test` starts the
//! servers.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod servers_support;
mod service_support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use atrest_test_support::TempDir;
use atrest_test_support::postgres::{admin_url, database_url, run_sql};
use serde_json::Value;

use servers_support::{openbao, unique, var};
use service_support::{Instance, atrest_in as atrest, contoso_in_bao, send, token_in};

/// What the service promises.
const WITHIN: Duration = Duration::from_secs(2);

/// The TIK version the newest file key wrapped by `actor` is under.
fn last_wrap_by(data: &Path, env: &[(String, String)], tenant: &str, actor: &str) -> u64 {
    let shown = atrest(
        data,
        env,
        &[
            "--json", "audit", "show", "--tenant", tenant, "--last", "40",
        ],
    );
    let shown: Value = serde_json::from_str(&shown).unwrap();
    shown
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["actor"] == actor && e["event"]["type"] == "file_key_wrapped")
        .and_then(|e| e["event"]["kek"]["version"].as_u64())
        .unwrap_or_else(|| panic!("no key wrapped by {actor}: {shown}"))
}

/// The deployment in `data` (made by `init` with `init_args`), its
/// customer keys in a fresh OpenBao transit mount: two tenants, two
/// instances caching for an hour, and the three changes.
fn changes_reach_running_instances(data: &Path, env: &[(String, String)], init_args: &[&str]) {
    let mut args = vec!["init"];
    args.extend_from_slice(init_args);
    atrest(data, env, &args);
    let mount = unique("transit-changes-");
    openbao(
        "POST",
        &format!("sys/mounts/{mount}"),
        r#"{"type":"transit"}"#,
    );
    contoso_in_bao(data, env, &var("ATREST_OPENBAO_ADDR"), &mount, &[]);
    atrest(data, env, &["tenant", "create", "tailspin"]);
    let alice = token_in(data, env, "alice@contoso");
    let bob = token_in(data, env, "bob@tailspin");
    let hour = ["--cache-ttl", "1h"];
    let a = Instance::start(data, "service-a", env, &hour);
    let b = Instance::start(data, "service-b", env, &hour);
    let instances = [("service-a", &a), ("service-b", &b)];

    // Both instances cache both tenants' keys.
    for (name, instance) in instances {
        for (token, tenant) in [(&alice, "contoso"), (&bob, "tailspin")] {
            let path = format!("/v1/tenants/{tenant}/files/warm-{name}");
            let put = send(&instance.addr, token, "PUT", &path, b"warm");
            assert_eq!(put.status, 201, "{}\n{}", put.text(), instance.log());
            let got = send(&instance.addr, token, "GET", &path, b"");
            assert_eq!(got.status, 200, "{}", got.text());
        }
        assert_eq!(last_wrap_by(data, env, "tailspin", name), 1);
    }

    // A TIK roll: the next uploads on both are under the new version.
    atrest(data, env, &["rotate", "tik", "tailspin"]);
    std::thread::sleep(WITHIN);
    for (name, instance) in instances {
        let path = format!("/v1/tenants/tailspin/files/rolled-{name}");
        let put = send(&instance.addr, &bob, "PUT", &path, b"after the roll");
        assert_eq!(put.status, 201, "{}", put.text());
        assert_eq!(last_wrap_by(data, env, "tailspin", name), 2, "{name}");
    }

    // The operator records the customer's revocation of both keys: both
    // instances refuse reads and writes of the tenant.
    atrest(data, env, &["revoke", "contoso", "bao:contoso-a@1"]);
    atrest(data, env, &["revoke", "contoso", "bao:contoso-b@1"]);
    std::thread::sleep(WITHIN);
    for (name, instance) in instances {
        let path = format!("/v1/tenants/contoso/files/warm-{name}");
        let got = send(&instance.addr, &alice, "GET", &path, b"");
        assert_eq!(got.status, 403, "{name}: {}", got.text());
        let put = send(&instance.addr, &alice, "PUT", &path, b"after");
        assert_eq!(put.status, 403, "{name}: {}", put.text());
    }

    // A purge while both instances take uploads and serve reads: no upload
    // begun after the purge completed is acknowledged, and reads are
    // refused within the bound.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic: Vec<_> = instances
        .iter()
        .map(|(name, instance)| {
            let (addr, bob, stop) = (instance.addr.clone(), bob.clone(), Arc::clone(&stop));
            let name = (*name).to_owned();
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let path = format!("/v1/tenants/tailspin/files/during-{name}-{i}");
                    let began = Instant::now();
                    let put = send(&addr, &bob, "PUT", &path, b"during the purge");
                    answers.push((began, "PUT", put.status));
                    let began = Instant::now();
                    let got = send(
                        &addr,
                        &bob,
                        "GET",
                        "/v1/tenants/tailspin/files/rolled-service-a",
                        b"",
                    );
                    answers.push((began, "GET", got.status));
                    i += 1;
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    atrest(data, env, &["purge", "tailspin", "--yes"]);
    let purged = Instant::now();
    std::thread::sleep(WITHIN + Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let mut after = 0;
    for thread in traffic {
        for (began, method, status) in thread.join().unwrap() {
            if began > purged {
                after += 1;
                assert_ne!(status, 201, "an upload acknowledged after the purge");
                if began > purged + WITHIN {
                    assert!(
                        (400..500).contains(&status),
                        "{method} answered {status} {:?} after the purge",
                        began - purged
                    );
                }
            }
        }
    }
    assert!(after > 10, "too little traffic after the purge: {after}");
    for (name, instance) in instances {
        let got = send(
            &instance.addr,
            &bob,
            "GET",
            "/v1/tenants/tailspin/files/rolled-service-a",
            b"",
        );
        assert_eq!(got.status, 403, "{name}: {}", got.text());
    }
}

#[test]
fn changes_reach_running_instances_on_sqlite() {
    let dir = TempDir::new("service-changes-sqlite");
    let env = vec![("ATREST_TEST_BAO_TOKEN".into(), var("ATREST_OPENBAO_TOKEN"))];
    changes_reach_running_instances(&dir.path().join("data"), &env, &[]);
}

#[test]
fn changes_reach_running_instances_on_postgresql() {
    let admin = admin_url();
    let database = unique("atrest_changes_");
    run_sql(&admin, &format!("CREATE DATABASE {database}"));
    let dir = TempDir::new("service-changes-postgres");
    let env = vec![
        ("ATREST_TEST_BAO_TOKEN".into(), var("ATREST_OPENBAO_TOKEN")),
        (
            "ATREST_TEST_METADATA_URL".into(),
            database_url(&admin, &database),
        ),
    ];
    changes_reach_running_instances(
        &dir.path().join("data"),
        &env,
        &["--metadata-url-env", "ATREST_TEST_METADATA_URL"],
    );
    run_sql(&admin, &format!("DROP DATABASE {database} WITH (FORCE)"));
}
