//! A writer of the catalog swaps two tenants' names under a running
//! `atrest-serve`: the users of either are refused, never served the
//! other tenant's files nor let to write into it.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod service_support;

use atrest_test_support::TempDir;

use service_support::{Instance, atrest, send, token};

#[test]
fn swapped_tenant_names_keep_the_service_tenants_apart() {
    let dir = TempDir::new("service-names");
    let data = dir.path().join("data");
    atrest(&data, &["init"]);
    for tenant in ["contoso", "fabrikam"] {
        atrest(&data, &["tenant", "create", tenant]);
    }
    let alice = token(&data, "alice@contoso");
    let bob = token(&data, "bob@fabrikam");
    let instance = Instance::start(&data, "service", &[], &[]);
    let path = |tenant: &str| format!("/v1/tenants/{tenant}/files/minutes.txt");
    for (who, tenant, body) in [
        (&alice, "contoso", &b"contoso's minutes"[..]),
        (&bob, "fabrikam", &b"fabrikam's minutes"[..]),
    ] {
        let put = send(&instance.addr, who, "PUT", &path(tenant), body);
        assert_eq!(put.status, 201, "{}", put.text());
    }

    let db = atrest_test_support::sqlite::Connection::open(data.join("catalog.sqlite")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute_batch(
        "UPDATE catalog_tenants SET name = 'swap' WHERE name = 'contoso';
         UPDATE catalog_tenants SET name = 'contoso' WHERE name = 'fabrikam';
         UPDATE catalog_tenants SET name = 'fabrikam' WHERE name = 'swap';",
    )
    .unwrap();

    for (who, tenant, other) in [
        (&bob, "fabrikam", "contoso's"),
        (&alice, "contoso", "fabrikam's"),
    ] {
        let got = send(&instance.addr, who, "GET", &path(tenant), b"");
        assert_ne!(got.status, 200, "{}", got.text());
        assert!(!got.text().contains(other), "{}", got.text());
        let put = send(
            &instance.addr,
            who,
            "PUT",
            &format!("/v1/tenants/{tenant}/files/new"),
            b"x",
        );
        assert_ne!(put.status, 201, "{}", put.text());
    }
    // Put back, both are served again.
    db.execute_batch(
        "UPDATE catalog_tenants SET name = 'swap' WHERE name = 'contoso';
         UPDATE catalog_tenants SET name = 'contoso' WHERE name = 'fabrikam';
         UPDATE catalog_tenants SET name = 'fabrikam' WHERE name = 'swap';",
    )
    .unwrap();
    let got = send(&instance.addr, &bob, "GET", &path("fabrikam"), b"");
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got.body == b"fabrikam's minutes");
    // The refusals are in the audit trail.
    let audit = atrest(&data, &["audit", "show"]);
    assert!(audit.contains("metadata_rejected"), "{audit}");
}

/// A service token is bound to the tenant its name named when the token
/// was made: once that tenant is purged and forgotten, a tenant made again
/// under the same name is another tenant, which the old token does not
/// reach.
#[test]
fn a_token_reaches_only_the_tenant_it_was_made_for() {
    let dir = TempDir::new("service-token-binding");
    let data = dir.path().join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "fabrikam"]);
    let old = token(&data, "bob@fabrikam");
    atrest(&data, &["purge", "fabrikam", "--yes"]);
    atrest(&data, &["gc"]);
    atrest(&data, &["tenant", "create", "fabrikam"]);
    let new = token(&data, "bob@fabrikam");
    let instance = Instance::start(&data, "service", &[], &[]);
    let path = "/v1/tenants/fabrikam/files/plan.txt";
    let put = send(&instance.addr, &old, "PUT", path, b"old token");
    assert_eq!(put.status, 403, "{}", put.text());
    let listed = send(
        &instance.addr,
        &old,
        "GET",
        "/v1/tenants/fabrikam/files",
        b"",
    );
    assert_eq!(listed.status, 403, "{}", listed.text());
    let put = send(&instance.addr, &new, "PUT", path, b"new token");
    assert_eq!(put.status, 201, "{}", put.text());
    let got = send(&instance.addr, &old, "GET", path, b"");
    assert_eq!(got.status, 403, "{}", got.text());
}
