//! Two key hierarchies over one store, as two processes of a service (or
//! the service and the operator program) have them: a TIK roll, a
//! revocation and a purge made through one reach the other's caches within
//! its change-poll interval, not after the cache lifetime.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest_filekey::KeyVersion;
use atrest_sqlite::SqliteStore;
use atrest_tenant::{Error, KeyHierarchy, RootKeyProvider};
use common::{Fixture, USER, context, policy};

/// The other instance: its own connection to the store, a long cache
/// lifetime, and `poll` between looks at the change log.
async fn other_instance(fixture: &Fixture, poll: Duration) -> KeyHierarchy {
    let store = SqliteStore::open(&fixture.dir.path().join("tenants.sqlite"))
        .await
        .unwrap();
    KeyHierarchy::builder(
        Arc::new(store),
        fixture.tenant_keys.clone(),
        fixture.audit.clone(),
    )
    .provider(fixture.service.clone() as Arc<dyn RootKeyProvider>)
    .provider(fixture.customer_a.clone() as Arc<dyn RootKeyProvider>)
    .provider(fixture.customer_b.clone() as Arc<dyn RootKeyProvider>)
    .service_root_key("service", "root")
    .availability_key("service", "availability")
    .policy(policy())
    .cache_ttl(Duration::from_secs(3600))
    .change_poll(poll)
    .actor("other-instance")
    .build()
    .unwrap()
}

/// Runs `check` until it holds, and returns how long that took; gives up
/// after ten seconds.
async fn until(mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(10), "never observed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

const POLL: Duration = Duration::from_millis(500);
/// The bound the service promises (with its default poll of one second).
const WITHIN: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_a_revocation_and_a_purge_reach_the_other_instance_within_its_poll() {
    let fixture = Fixture::new("instances").await;
    let other = other_instance(&fixture, POLL).await;
    let service = fixture.service_tenant().await;
    let customer = fixture.customer_tenant().await;

    // Warm the other instance's caches.
    let (_, first) = other.new_file_key(&USER, &context(service)).await.unwrap();
    assert_eq!(first.kek_version(), KeyVersion::FIRST);
    let customer_file = context(customer);
    let (_, customer_wrapped) = other.new_file_key(&USER, &customer_file).await.unwrap();
    assert!(other.cached_tiks() >= 2);

    // A TIK roll: new file keys go under the new version.
    let rolled = fixture.hierarchy.roll_tik(service).await.unwrap();
    let took = until(async || {
        let (_, wrapped) = other.new_file_key(&USER, &context(service)).await.unwrap();
        wrapped.kek_version() == rolled
    })
    .await;
    assert!(took < WITHIN, "the roll took {took:?}");

    // The customer revokes both keys: users are refused, never served
    // through the availability key.
    for key in Fixture::customer_keys() {
        fixture
            .hierarchy
            .revoke_customer_key(customer, &key)
            .await
            .unwrap();
    }
    let took = until(async || {
        matches!(
            other
                .release_file_key(&USER, &customer_file, &customer_wrapped)
                .await,
            Err(Error::Revoked(_))
        )
    })
    .await;
    assert!(took < WITHIN, "the revocation took {took:?}");

    // A purge: no new file key, none released.
    let _ = fixture.hierarchy.purge(service).await.unwrap();
    let took = until(async || {
        matches!(
            other.new_file_key(&USER, &context(service)).await,
            Err(Error::Purged(_))
        )
    })
    .await;
    assert!(took < WITHIN, "the purge took {took:?}");
}

/// Without a look at the change log the cache would serve the old state
/// for its whole lifetime: what the poll is for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_look_at_the_change_log_the_cache_keeps_the_old_state() {
    let fixture = Fixture::new("instances-no-poll").await;
    let other = other_instance(&fixture, Duration::from_secs(3600)).await;
    let service = fixture.service_tenant().await;
    let _ = other.new_file_key(&USER, &context(service)).await.unwrap();
    let _ = fixture.hierarchy.roll_tik(service).await.unwrap();
    let _ = fixture.hierarchy.purge(service).await.unwrap();
    tokio::time::sleep(POLL * 2).await;
    let (_, wrapped) = other.new_file_key(&USER, &context(service)).await.unwrap();
    assert_eq!(wrapped.kek_version(), KeyVersion::FIRST);
}
