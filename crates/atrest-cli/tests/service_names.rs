//! A writer of the catalog edits the names of tenants under a running
//! `atrest-serve` — every edit and pair of edits of the names table, and a
//! plain swap: the users of either tenant are refused, never served the
//! other tenant's files nor let to write into it; and a service token
//! reaches only the tenant it was made for.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod name_edits;
mod service_support;

use atrest_test_support::TempDir;
use name_edits::NameEdits;

use service_support::{Instance, atrest, send, token};

/// The path of a tenant's minutes.
fn path(tenant: &str) -> String {
    format!("/v1/tenants/{tenant}/files/minutes.txt")
}

/// How long the service may keep using a tenant name it authenticated
/// before it reads the name from the catalog again (the deployment
/// remembers authenticated names for a second), with a margin.
const NAME_LIFETIME: std::time::Duration = std::time::Duration::from_millis(1500);

/// A deployment in `dir` with tenants contoso (user alice) and fabrikam
/// (user bob), a service over it (started with `args`), and each tenant's
/// minutes uploaded: `(data, alice's token, bob's token, the service)`.
fn two_tenants(dir: &TempDir, args: &[&str]) -> (std::path::PathBuf, String, String, Instance) {
    let data = dir.path().join("data");
    atrest(&data, &["init"]);
    for tenant in ["contoso", "fabrikam"] {
        atrest(&data, &["tenant", "create", tenant]);
    }
    let alice = token(&data, "alice@contoso");
    let bob = token(&data, "bob@fabrikam");
    let instance = Instance::start(&data, "service", &[], args);
    for (who, tenant, body) in [
        (&alice, "contoso", &b"contoso's minutes"[..]),
        (&bob, "fabrikam", &b"fabrikam's minutes"[..]),
    ] {
        let put = send(&instance.addr, who, "PUT", &path(tenant), body);
        assert_eq!(put.status, 201, "{}", put.text());
    }
    (data, alice, bob, instance)
}

#[test]
fn swapped_tenant_names_keep_the_service_tenants_apart() {
    let dir = TempDir::new("service-names");
    let (data, alice, bob, instance) = two_tenants(&dir, &[]);

    let db = atrest_test_support::sqlite::Connection::open(data.join("catalog.sqlite")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute_batch(
        "UPDATE catalog_tenants SET name = 'swap' WHERE name = 'contoso';
         UPDATE catalog_tenants SET name = 'contoso' WHERE name = 'fabrikam';
         UPDATE catalog_tenants SET name = 'fabrikam' WHERE name = 'swap';",
    )
    .unwrap();
    // Meanwhile the names the service authenticated before the swap still
    // serve each user their own tenant; once it reads them again, the
    // swapped ones fail.
    for (who, tenant, own) in [
        (&bob, "fabrikam", &b"fabrikam's minutes"[..]),
        (&alice, "contoso", &b"contoso's minutes"[..]),
    ] {
        let got = send(&instance.addr, who, "GET", &path(tenant), b"");
        assert!(
            got.status != 200 || got.body == own,
            "{tenant}: {}",
            got.text()
        );
    }
    std::thread::sleep(NAME_LIFETIME);

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

#[test]
fn every_edit_of_the_tenant_names_keeps_the_service_tenants_apart() {
    let dir = TempDir::new("service-name-edits");
    // Without cached keys the service remembers no name either: every
    // request reads the edited names table.
    let (data, alice, bob, instance) = two_tenants(&dir, &["--cache-ttl", "0s"]);
    let shown: serde_json::Value =
        serde_json::from_str(&atrest(&data, &["--json", "tenant", "show", "contoso"])).unwrap();
    let contoso_id = shown["id"]
        .as_str()
        .unwrap()
        .replace('-', "")
        .to_uppercase();
    let catalog = data.join("catalog.sqlite");
    let edits = NameEdits::of(&catalog);
    let mut uploads = 0;
    let cases = edits.each(|label| {
        for (who, tenant, other) in [
            (&bob, "fabrikam", "contoso's"),
            (&alice, "contoso", "fabrikam's"),
        ] {
            let got = send(&instance.addr, who, "GET", &path(tenant), b"");
            assert!(
                got.status != 200 || !got.text().contains(other),
                "{label}: {tenant}'s user read {other} file"
            );
        }
        uploads += 1;
        let name = format!("upload-{uploads}");
        let _ = send(
            &instance.addr,
            &bob,
            "PUT",
            &format!("/v1/tenants/fabrikam/files/{name}"),
            b"bob's upload",
        );
        let into_contoso: i64 = atrest_test_support::sqlite::Connection::open(&catalog)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM catalog_files WHERE name = ?1 AND hex(tenant) = ?2",
                [name.as_str(), contoso_id.as_str()],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(into_contoso, 0, "{label}: bob@fabrikam wrote into contoso");
    });
    assert!(cases > 40, "{cases} cases");
    let got = send(&instance.addr, &bob, "GET", &path("fabrikam"), b"");
    assert!(got.status == 200 && got.body == b"fabrikam's minutes");
}
