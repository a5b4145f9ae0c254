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
