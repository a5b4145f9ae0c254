//! The deployment through its public API, in one process: what the
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
use atrest::tenant::fault::{Fault, FaultInjector};
use atrest::tenant::{Access, MasterKey, ServiceKeys};
use atrest_deployment::{Deployment, Error, FileName, Options, TenantKeys};
use atrest_sqlite::SqliteSealedKeys;
use atrest_test_support::TempDir;

async fn read(
    deployment: &Deployment,
    tenant: &str,
    name: &str,
    principal: &str,
) -> Result<Vec<u8>, Error> {
    let mut out = atrest::WriterSink(Vec::new());
    let access = Access::User { principal };
    deployment
        .get(&access, &FileName::newest(tenant, name), None, &mut out)
        .await?;
    Ok(out.0)
}

#[tokio::test]
async fn creating_a_tenant_keeps_the_hierarchy_and_its_cache() {
    let dir = TempDir::new("cache");
    // A customer's key store that can be made to refuse.
    let stand_in = async |name: &str| {
        let master = MasterKey::create_file(&dir.path().join(format!("{name}.key"))).unwrap();
        let store = SqliteSealedKeys::open(&dir.path().join(format!("{name}.sqlite")))
            .await
            .unwrap();
        let keys = ServiceKeys::new(name, Arc::new(store), master).unwrap();
        let key = keys.create_key("northwind").await.unwrap();
        (Arc::new(FaultInjector::new(Arc::new(keys))), key)
    };
    let (hsm, key) = stand_in("hsm").await;
    let second = stand_in("hsm2").await;
    let options = Options::new("deployment-test")
        .provider(hsm.clone())
        .provider(second.0.clone());
    let mut deployment = Deployment::init(&dir.path().join("data"), None, None, options)
        .await
        .unwrap();
    deployment
        .create_tenant(
            "northwind",
            &TenantKeys::CustomerKeyAt {
                keys: [key, second.1],
            },
        )
        .await
        .unwrap();
    let carol = Access::User {
        principal: "carol@northwind",
    };
    deployment
        .put(&carol, "northwind", "ledger.csv", &b"ledger"[..])
        .await
        .unwrap();
    // The TIK is cached now; the customer then refuses the service.
    assert_eq!(
        read(&deployment, "northwind", "ledger.csv", "carol@northwind")
            .await
            .unwrap(),
        b"ledger"
    );
    hsm.set(Fault::AccessDenied);
    second.0.set(Fault::AccessDenied);

    // A new tenant: its users are members at once…
    deployment
        .create_tenant("contoso", &TenantKeys::ServiceManaged)
        .await
        .unwrap();
    let alice = Access::User {
        principal: "alice@contoso",
    };
    deployment
        .put(&alice, "contoso", "memo.txt", &b"memo"[..])
        .await
        .unwrap();
    assert_eq!(
        read(&deployment, "contoso", "memo.txt", "alice@contoso")
            .await
            .unwrap(),
        b"memo"
    );
    let refused = read(&deployment, "contoso", "memo.txt", "carol@northwind")
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Refused, "{refused}");
    // … and the hierarchy, with its cached TIK, is the same one: the
    // refusing key stores are not asked again within the cache lifetime.
    let calls = hsm.calls() + second.0.calls();
    assert_eq!(
        read(&deployment, "northwind", "ledger.csv", "carol@northwind")
            .await
            .unwrap(),
        b"ledger"
    );
    assert_eq!(hsm.calls() + second.0.calls(), calls);

    // Once the cache is dropped, the refusal counts.
    deployment.files().keys().flush_cache();
    assert!(
        read(&deployment, "northwind", "ledger.csv", "carol@northwind")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn typed_errors_name_what_is_missing_or_taken() {
    let dir = TempDir::new("errors");
    let data = dir.path().join("data");
    assert!(matches!(
        Deployment::open(&data, Options::new("t")).await,
        Err(Error::NoDeployment { .. })
    ));
    let mut deployment = Deployment::init(&data, None, None, Options::new("t"))
        .await
        .unwrap();
    assert!(matches!(
        Deployment::init(&data, None, None, Options::new("t")).await,
        Err(Error::AlreadyInitialized { .. })
    ));
    deployment
        .create_tenant("contoso", &TenantKeys::ServiceManaged)
        .await
        .unwrap();
    let taken = deployment
        .create_tenant("contoso", &TenantKeys::ServiceManaged)
        .await
        .unwrap_err();
    assert_eq!(taken.kind(), ErrorKind::Conflict, "{taken}");
    for bad in ["", " lead", "a@b", "tab\there", "zero\u{200B}width"] {
        let error = deployment
            .create_tenant(bad, &TenantKeys::ServiceManaged)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Usage, "{bad:?}: {error}");
    }
    assert!(matches!(
        read(&deployment, "nobody", "x", "a@nobody").await,
        Err(Error::UnknownTenant { .. })
    ));
    let missing = read(&deployment, "contoso", "x", "a@contoso")
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    let refused = deployment
        .put(
            &Access::User {
                principal: "a@contoso@contoso",
            },
            "contoso",
            "x",
            &b""[..],
        )
        .await;
    let refused = refused.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Refused, "{refused}");
}

/// A deployment handed to request handlers gives up its administration:
/// no system capability comes out of it any more, not even after its
/// configuration changes.
#[tokio::test]
async fn a_deployment_that_gave_up_its_administration_issues_no_capability() {
    let dir = TempDir::new("no-administration");
    let data = dir.path().join("data");
    let mut deployment = Deployment::init(&data, None, None, Options::new("t"))
        .await
        .unwrap();
    assert!(deployment.system_capability("scan").is_ok());
    deployment.give_up_administration();
    let refused = deployment.system_capability("scan").unwrap_err();
    assert!(matches!(refused, Error::NoAdministration));
    assert_eq!(refused.kind(), ErrorKind::Usage);
    // A reconfiguration rebuilds the hierarchy: still none.
    deployment
        .create_tenant("contoso", &TenantKeys::ServiceManaged)
        .await
        .unwrap();
    assert!(deployment.system_capability("scan").is_err());
}

/// A tenant name the deployment authenticated and remembers is not used
/// once its tenant is purged, whether here or by another process on the
/// same directory: the tenant made again under the name is the one
/// reached (by another process's purge, within the key hierarchy's change
/// poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_tenant_name_follows_a_purge_here_and_elsewhere() {
    let dir = TempDir::new("names");
    let data = dir.path().join("data");
    let mut here = Deployment::init(&data, None, None, Options::new("here"))
        .await
        .unwrap();
    let remake = async |deployment: &mut Deployment| {
        let _ = deployment.purge("fabrikam").await.unwrap();
        let _ = deployment
            .collect_garbage(std::time::Duration::ZERO, false)
            .await
            .unwrap();
        let _ = deployment
            .create_tenant("fabrikam", &TenantKeys::ServiceManaged)
            .await
            .unwrap();
        deployment.tenant_id("fabrikam").await.unwrap()
    };
    let _ = here
        .create_tenant("fabrikam", &TenantKeys::ServiceManaged)
        .await
        .unwrap();
    let first = here.tenant_id("fabrikam").await.unwrap();
    assert_eq!(here.tenant_id("fabrikam").await.unwrap(), first);

    let second = remake(&mut here).await;
    assert_ne!(second, first);
    assert_eq!(here.tenant_id("fabrikam").await.unwrap(), second);

    let mut elsewhere = Deployment::open(&data, Options::new("elsewhere"))
        .await
        .unwrap();
    let third = remake(&mut elsewhere).await;
    assert_ne!(third, second);
    let deadline = std::time::Instant::now() + atrest::tenant::DEFAULT_CHANGE_POLL * 5;
    loop {
        match here.tenant_id("fabrikam").await {
            Ok(id) if id == third => break,
            Ok(id) => assert_eq!(id, second, "neither the old nor the new tenant"),
            Err(error) => panic!("{error}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the purge elsewhere was not seen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // And a user of it is let in by the membership policy, which
    // remembers names too.
    let access = Access::User {
        principal: "bob@fabrikam",
    };
    let _ = here
        .put(&access, "fabrikam", "plan.txt", &b"the plan"[..])
        .await
        .unwrap();
    assert_eq!(
        read(&here, "fabrikam", "plan.txt", "bob@fabrikam")
            .await
            .unwrap(),
        b"the plan"
    );
}
