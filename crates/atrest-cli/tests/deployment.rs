//! The deployment module through its public API, in one process: what the
//! command line cannot show.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use atrest::ErrorKind;
use atrest::tenant::blocking::block_on;
use atrest::tenant::fault::{Fault, FaultInjector};
use atrest::tenant::{Access, MasterKey, ServiceKeys};
use atrest_cli::deployment::{Deployment, Error, Options, TenantKeys};
use atrest_sqlite::SqliteSealedKeys;
use atrest_test_support::TempDir;

fn read(
    deployment: &Deployment,
    tenant: &str,
    name: &str,
    principal: &str,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let access = Access::User { principal };
    deployment.get(tenant, name, None, &access, None, &mut out)?;
    Ok(out)
}

#[test]
fn creating_a_tenant_keeps_the_hierarchy_and_its_cache() {
    let dir = TempDir::new("cache");
    // A customer's key store that can be made to refuse.
    let stand_in = |name: &str| {
        let master = MasterKey::create_file(&dir.path().join(format!("{name}.key"))).unwrap();
        let store = block_on(SqliteSealedKeys::open(
            &dir.path().join(format!("{name}.sqlite")),
        ))
        .unwrap();
        let keys = ServiceKeys::new(name, Arc::new(store), master).unwrap();
        let key = block_on(keys.create_key("northwind")).unwrap();
        (Arc::new(FaultInjector::new(Arc::new(keys))), key)
    };
    let (hsm, key) = stand_in("hsm");
    let second = stand_in("hsm2");
    let options = Options::new("deployment-test")
        .provider(hsm.clone())
        .provider(second.0.clone());
    let mut deployment = Deployment::init(&dir.path().join("data"), None, None, options).unwrap();
    deployment
        .create_tenant(
            "northwind",
            &TenantKeys::CustomerKeyAt {
                keys: [key, second.1],
            },
        )
        .unwrap();
    let carol = Access::User {
        principal: "carol@northwind",
    };
    deployment
        .put("northwind", "ledger.csv", &carol, &b"ledger"[..])
        .unwrap();
    // The TIK is cached now; the customer then refuses the service.
    assert_eq!(
        read(&deployment, "northwind", "ledger.csv", "carol@northwind").unwrap(),
        b"ledger"
    );
    hsm.set(Fault::AccessDenied);
    second.0.set(Fault::AccessDenied);

    // A new tenant: its users are members at once…
    deployment
        .create_tenant("contoso", &TenantKeys::ServiceManaged)
        .unwrap();
    let alice = Access::User {
        principal: "alice@contoso",
    };
    deployment
        .put("contoso", "memo.txt", &alice, &b"memo"[..])
        .unwrap();
    assert_eq!(
        read(&deployment, "contoso", "memo.txt", "alice@contoso").unwrap(),
        b"memo"
    );
    let refused = read(&deployment, "contoso", "memo.txt", "carol@northwind").unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Refused, "{refused}");
    // … and the hierarchy, with its cached TIK, is the same one: the
    // refusing key stores are not asked again within the cache lifetime.
    let calls = hsm.calls() + second.0.calls();
    assert_eq!(
        read(&deployment, "northwind", "ledger.csv", "carol@northwind").unwrap(),
        b"ledger"
    );
    assert_eq!(hsm.calls() + second.0.calls(), calls);

    // Once the cache is dropped, the refusal counts.
    deployment.files().keys().flush_cache();
    assert!(read(&deployment, "northwind", "ledger.csv", "carol@northwind").is_err());
}

#[test]
fn typed_errors_name_what_is_missing_or_taken() {
    let dir = TempDir::new("errors");
    let data = dir.path().join("data");
    assert!(matches!(
        Deployment::open(&data, Options::new("t")),
        Err(Error::NoDeployment { .. })
    ));
    let mut deployment = Deployment::init(&data, None, None, Options::new("t")).unwrap();
    assert!(matches!(
        Deployment::init(&data, None, None, Options::new("t")),
        Err(Error::AlreadyInitialized { .. })
    ));
    deployment
        .create_tenant("contoso", &TenantKeys::ServiceManaged)
        .unwrap();
    let taken = deployment
        .create_tenant("contoso", &TenantKeys::ServiceManaged)
        .unwrap_err();
    assert_eq!(taken.kind(), ErrorKind::Conflict, "{taken}");
    for bad in ["", " lead", "a@b", "tab\there", "zero\u{200B}width"] {
        let error = deployment
            .create_tenant(bad, &TenantKeys::ServiceManaged)
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Usage, "{bad:?}: {error}");
    }
    assert!(matches!(
        read(&deployment, "nobody", "x", "a@nobody"),
        Err(Error::UnknownTenant { .. })
    ));
    let missing = read(&deployment, "contoso", "x", "a@contoso").unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    let refused = deployment.put(
        "contoso",
        "x",
        &Access::User {
            principal: "a@contoso@contoso",
        },
        &b""[..],
    );
    let refused = refused.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Refused, "{refused}");
}
