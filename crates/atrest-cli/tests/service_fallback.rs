//! Refusal or outage, decided safely, through the upload service:
//! - the customer's OpenBao made unreachable by a proxy the test controls
//!   (connections reset, then a network that answers nothing): users are
//!   served through the availability key only under the `automatic`
//!   policy, or under `declared` while a declared outage window is open;
//!   otherwise 503, and every decision is audited;
//! - the customer's PKCS#11 tokens opened without their PIN or with a
//!   wrong one (as after the customer changed it): 403 for reads and
//!   writes under every policy, never the availability key.
//!
//! `scripts/test` starts OpenBao and installs SoftHSM2.

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
use std::time::{Duration, Instant};

use atrest_test_support::TempDir;
use atrest_test_support::proxy::Proxy;
use atrest_test_support::softhsm::SoftHsm;
use serde_json::Value;

use servers_support::{openbao, unique, var};
use service_support::{Instance, atrest_in as atrest, contoso_in_bao, send, token_in};

/// The policies the tests go through, as `atrest tenant` arguments, and
/// whether users are served through the availability key under each.
const POLICIES: [(&[&str], bool); 5] = [
    (&["fallback", "contoso", "automatic"], true),
    (&["fallback", "contoso", "never"], false),
    (&["fallback", "contoso", "declared"], false),
    (
        &[
            "outage",
            "contoso",
            "--for",
            "1h",
            "--reason",
            "the customer's key service is down",
        ],
        true,
    ),
    (&["outage", "contoso", "--end"], false),
];

/// The status `method path` gets once the instance has followed the last
/// policy change (within two seconds), asked every 200 ms; then asked once
/// more, to see that it holds.
fn settled(instance: &Instance, token: &str, method: &str, path: &str, want: u16) -> u16 {
    let start = Instant::now();
    loop {
        let status = send(&instance.addr, token, method, path, b"body").status;
        if status == want || start.elapsed() > Duration::from_secs(30) {
            return send(&instance.addr, token, method, path, b"body").status;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many availability-key fallbacks the audit trail has, served and
/// refused.
fn fallbacks(data: &Path, env: &[(String, String)]) -> (usize, usize) {
    let shown = atrest(
        data,
        env,
        &["--json", "audit", "show", "--tenant", "contoso"],
    );
    let shown: Value = serde_json::from_str(&shown).unwrap();
    let of = |result: &str| {
        shown
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["event"]["type"] == "availability_key_fallback"
                    && e["outcome"]["result"] == result
            })
            .count()
    };
    (of("success"), of("denied"))
}

#[test]
fn an_unreachable_key_service_serves_users_only_as_the_policy_allows() {
    let bao = var("ATREST_OPENBAO_ADDR");
    let target = bao.strip_prefix("http://").unwrap().to_owned();
    let proxy = Proxy::start(target.as_str());
    let mount = unique("transit-fallback-");
    openbao(
        "POST",
        &format!("sys/mounts/{mount}"),
        r#"{"type":"transit"}"#,
    );
    let dir = TempDir::new("service-fallback");
    let data = dir.path().join("data");
    let env = vec![("ATREST_TEST_BAO_TOKEN".into(), var("ATREST_OPENBAO_TOKEN"))];
    atrest(&data, &env, &["init"]);
    // A network that answers nothing costs the timeout per key.
    contoso_in_bao(
        &data,
        &env,
        &format!("http://{}", proxy.addr()),
        &mount,
        &["--timeout", "500ms"],
    );
    let alice = token_in(&data, &env, "alice@contoso");
    // A short cache, so that every request soon asks the keys again.
    let instance = Instance::start(&data, "service", &env, &["--cache-ttl", "1s"]);
    let path = "/v1/tenants/contoso/files/minutes";
    let put = send(&instance.addr, &alice, "PUT", path, b"body");
    assert_eq!(put.status, 201, "{}", put.text());

    for (outage, label) in [
        (Proxy::cut as fn(&Proxy), "reset"),
        (Proxy::blackhole, "blackhole"),
    ] {
        outage(&proxy);
        for (policy, served) in POLICIES {
            let mut args = vec!["tenant"];
            args.extend_from_slice(policy);
            atrest(&data, &env, &args);
            let want = if served { 200 } else { 503 };
            let status = settled(&instance, &alice, "GET", path, want);
            assert_eq!(status, want, "{label}, {policy:?}\n{}", instance.log());
        }
        proxy.restore();
    }
    let (served, refused) = fallbacks(&data, &env);
    assert!(
        served > 0 && refused > 0,
        "{served} served, {refused} refused"
    );

    // The operator program follows the same rules: exit 6 (unavailable)
    // under `never`, the file under `automatic`.
    proxy.cut();
    atrest(&data, &env, &["tenant", "fallback", "contoso", "never"]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_atrest"))
        .arg("--data")
        .arg(&data)
        .args(["get", "contoso", "minutes"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(6), "{output:?}");
    atrest(&data, &env, &["tenant", "fallback", "contoso", "automatic"]);
    let got = atrest(&data, &env, &["get", "contoso", "minutes"]);
    assert_eq!(got, "body");
    proxy.restore();
    atrest(&data, &env, &["audit", "verify"]);
}

#[test]
fn a_pin_that_is_missing_or_wrong_is_refused_under_every_policy() {
    let hsm = SoftHsm::init("service-pins", &["contoso-a", "contoso-b"]).unwrap();
    let dir = TempDir::new("service-pins");
    let data = dir.path().join("data");
    let conf = ("SOFTHSM2_CONF".to_owned(), hsm.conf().display().to_string());
    let with_pin = vec![
        conf.clone(),
        ("ATREST_PKCS11_PIN".to_owned(), hsm.user_pin().to_owned()),
    ];
    atrest(&data, &with_pin, &["init"]);
    let module = hsm.module().display().to_string();
    atrest(
        &data,
        &with_pin,
        &[
            "tenant",
            "create",
            "contoso",
            "--customer-key",
            "--module",
            &module,
            "--token-a",
            "contoso-a",
            "--token-b",
            "contoso-b",
            "--key-a",
            "k1",
            "--key-b",
            "k1",
            "--generate",
        ],
    );
    let alice = token_in(&data, &with_pin, "alice@contoso");
    let path = "/v1/tenants/contoso/files/minutes";
    {
        let good = Instance::start(&data, "service-good", &with_pin, &[]);
        let put = send(&good.addr, &alice, "PUT", path, b"body");
        assert_eq!(put.status, 201, "{}", put.text());
    }
    let no_pin = vec![conf.clone()];
    let wrong_pin = vec![conf, ("ATREST_PKCS11_PIN".to_owned(), "0000".to_owned())];
    let instances = [
        Instance::start(&data, "service-no-pin", &no_pin, &[]),
        Instance::start(&data, "service-wrong-pin", &wrong_pin, &[]),
    ];
    for (policy, _) in POLICIES {
        let mut args = vec!["tenant"];
        args.extend_from_slice(policy);
        atrest(&data, &with_pin, &args);
        // Whatever the policy: refused, at once and once the change has
        // reached the instances.
        for settle in [Duration::ZERO, Duration::from_millis(2100)] {
            std::thread::sleep(settle);
            for instance in &instances {
                let got = send(&instance.addr, &alice, "GET", path, b"");
                assert_eq!(got.status, 403, "{policy:?}: {}", got.text());
                let new = "/v1/tenants/contoso/files/new";
                let put = send(&instance.addr, &alice, "PUT", new, b"x");
                assert_eq!(put.status, 403, "{policy:?}: {}", put.text());
            }
        }
    }
    let (served, _) = fallbacks(&data, &with_pin);
    assert_eq!(
        served, 0,
        "a refusal was served through the availability key"
    );
    for instance in &instances {
        let log = instance.log();
        assert!(
            log.contains("PIN") || log.contains("access denied"),
            "the service log says why: {log}"
        );
    }
}
