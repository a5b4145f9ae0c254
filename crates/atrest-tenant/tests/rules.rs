//! Each rule of the key hierarchy model, driven through the fault-injecting
//! provider: the availability key on unavailable customer keys only,
//! revocation within the cache TTL and at once after a flush, final purges,
//! tenant isolation, and rotation that never loses a key.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::Duration;

use atrest_audit::{Event, Outcome};
use atrest_filekey::{FileContext, KeyVersion};
use atrest_tenant::fault::Fault;
use atrest_tenant::{
    Access, Error, FallbackPolicy, MetadataStore as _, OutageWindow, ProviderError, RewrapProgress,
    TenantState,
};
use atrest_test_support::sqlite as rusqlite;
use common::{Fixture, USER, context, system};

fn is_fallback(event: &Event, outcome: &Outcome) -> bool {
    matches!(event, Event::AvailabilityKeyFallback { .. }) && *outcome == Outcome::Success
}

#[tokio::test]
async fn service_tenant_round_trip_and_every_release_and_denial_is_audited() {
    let f = Fixture::new("service").await;
    let tenant = f.service_tenant().await;
    let ctx = context(tenant);
    let (key, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    let released = f
        .hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    assert_eq!(key.expose_secret(), released.expose_secret());

    let intruder = Access::User {
        principal: "mallory",
    };
    let denied = f
        .hierarchy
        .release_file_key(&intruder, &ctx, &wrapped)
        .await;
    assert!(
        matches!(&denied, Err(Error::Denied { reason }) if reason == "not a reader"),
        "{denied:?}"
    );

    let events = f.audit.events();
    assert!(matches!(
        &events[0].0,
        Event::TikRolled {
            previous_version: None,
            ..
        }
    ));
    assert!(matches!(&events[1].0, Event::FileKeyWrapped { .. }));
    assert!(
        matches!(&events[2], (Event::FileKeyReleased { principal, .. }, Outcome::Success) if principal.as_str() == "reader-1")
    );
    assert!(
        matches!(&events[3], (Event::ReleaseDenied { principal, .. }, Outcome::Denied { .. }) if principal.as_str() == "mallory")
    );
}

#[tokio::test]
async fn customer_keys_are_tried_first_and_one_is_enough() {
    let f = Fixture::new("first").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    f.hierarchy.flush_cache();
    f.customer_a.set(Fault::Unavailable);
    f.hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    // Customer key B answered: no fallback.
    assert_eq!(f.audit.count(is_fallback), 0);
}

#[tokio::test]
async fn the_availability_key_is_used_when_customer_keys_are_unavailable_and_audited() {
    let f = Fixture::new("fallback").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (key, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    f.hierarchy.flush_cache();
    f.customer_a.set(Fault::Unavailable);
    f.customer_b.set(Fault::Unavailable);
    let released = f
        .hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    assert_eq!(key.expose_secret(), released.expose_secret());
    assert_eq!(f.audit.count(is_fallback), 1);
    let fallback = f
        .audit
        .events()
        .into_iter()
        .find(|(e, _)| matches!(e, Event::AvailabilityKeyFallback { .. }))
        .unwrap();
    let Event::AvailabilityKeyFallback {
        root_keys,
        operation,
    } = fallback.0
    else {
        unreachable!()
    };
    assert_eq!(root_keys.len(), 2);
    assert!(operation.as_str().contains("reader-1"));
}

#[tokio::test]
async fn access_denied_never_falls_back_for_a_user_request() {
    let f = Fixture::new("denied").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    f.hierarchy.flush_cache();
    // One key refuses and the other is down: a refusal is an answer.
    f.customer_a.set(Fault::AccessDenied);
    f.customer_b.set(Fault::Unavailable);
    let result = f.hierarchy.release_file_key(&USER, &ctx, &wrapped).await;
    assert!(
        matches!(
            result,
            Err(Error::RootKey(ProviderError::AccessDenied { .. }))
        ),
        "{result:?}"
    );
    f.customer_b.set(Fault::AccessDenied);
    assert!(
        f.hierarchy
            .release_file_key(&USER, &ctx, &wrapped)
            .await
            .is_err()
    );
    assert!(
        f.hierarchy
            .new_file_key(&USER, &context(tenant))
            .await
            .is_err()
    );
    assert_eq!(
        f.audit
            .count(|e, _| matches!(e, Event::AvailabilityKeyFallback { .. })),
        0
    );

    // A marked system operation may use the availability key, audited...
    let scan = f.admin.capability("scan");
    f.hierarchy
        .release_file_key(&system(&scan), &ctx, &wrapped)
        .await
        .unwrap();
    assert_eq!(f.audit.count(is_fallback), 1);
    // ...but what it obtained is not cached for users.
    assert!(
        f.hierarchy
            .release_file_key(&USER, &ctx, &wrapped)
            .await
            .is_err()
    );
    assert_eq!(f.hierarchy.cached_tiks(), 0);
}

#[tokio::test]
async fn a_destroyed_customer_key_is_reported_as_destroyed_and_never_falls_back() {
    let f = Fixture::new("destroyed").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    f.hierarchy.flush_cache();
    for keys in [&f.keys_a, &f.keys_b] {
        let versions = keys.keys().await.unwrap();
        keys.destroy_version(&versions[0].0).await.unwrap();
    }
    let result = f.hierarchy.release_file_key(&USER, &ctx, &wrapped).await;
    assert!(
        matches!(result, Err(Error::RootKey(ProviderError::Destroyed { .. }))),
        "{result:?}"
    );
    assert_eq!(f.audit.count(is_fallback), 0);
}

#[tokio::test]
async fn revocation_takes_effect_within_the_cache_ttl() {
    let ttl = Duration::from_millis(300);
    let f = Fixture::with_ttl("ttl", ttl).await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    f.hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    // The customer removes the service's access at their HSMs.
    f.customer_a.set(Fault::AccessDenied);
    f.customer_b.set(Fault::AccessDenied);
    let calls = f.customer_a.calls();
    // Within the TTL the cached TIK still serves (the documented lag)...
    f.hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    assert_eq!(f.customer_a.calls(), calls, "served from the cache");
    // ...and once it expires, user requests fail.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let result = f.hierarchy.release_file_key(&USER, &ctx, &wrapped).await;
    assert!(
        matches!(
            result,
            Err(Error::RootKey(ProviderError::AccessDenied { .. }))
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn revocation_takes_effect_at_once_after_a_flush() {
    let f = Fixture::new("flush").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    f.hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    assert!(f.hierarchy.cached_tiks() > 0);
    f.customer_a.set(Fault::AccessDenied);
    f.customer_b.set(Fault::AccessDenied);
    f.hierarchy.flush_cache();
    assert_eq!(f.hierarchy.cached_tiks(), 0);
    assert!(
        f.hierarchy
            .release_file_key(&USER, &ctx, &wrapped)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn recorded_revocation_stops_user_requests_at_once() {
    let f = Fixture::new("revoke").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    f.hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    let [a, b] = Fixture::customer_keys();
    f.hierarchy.revoke_customer_key(tenant, &a).await.unwrap();
    // Key B still answers.
    f.hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    f.hierarchy.revoke_customer_key(tenant, &b).await.unwrap();
    let result = f.hierarchy.release_file_key(&USER, &ctx, &wrapped).await;
    assert!(
        matches!(result, Err(Error::Revoked(t)) if t == tenant),
        "{result:?}"
    );
    assert_eq!(
        f.audit
            .count(|e, _| matches!(e, Event::CustomerKeyRevoked { .. })),
        2
    );
    // Not a customer key of this tenant.
    assert!(matches!(
        f.hierarchy
            .revoke_customer_key(tenant, &"service:root".parse().unwrap())
            .await,
        Err(Error::Misuse(_))
    ));
}

#[tokio::test]
async fn a_purge_is_final_cache_included_and_audited() {
    let f = Fixture::new("purge").await;
    let tenant = f.customer_tenant().await;
    let other = f.customer_tenant().await;
    let ctx = context(tenant);
    let other_ctx = context(other);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    let (_, other_wrapped) = f.hierarchy.new_file_key(&USER, &other_ctx).await.unwrap();
    f.hierarchy.roll_tik(tenant).await.unwrap();
    f.hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();

    assert_eq!(f.hierarchy.purge(tenant).await.unwrap(), 2);
    let scan = f.admin.capability("scan");
    for access in [USER, system(&scan)] {
        let result = f.hierarchy.release_file_key(&access, &ctx, &wrapped).await;
        assert!(
            matches!(result, Err(Error::Purged(t)) if t == tenant),
            "{result:?}"
        );
    }
    assert!(matches!(
        f.hierarchy.new_file_key(&USER, &context(tenant)).await,
        Err(Error::Purged(_))
    ));
    assert!(matches!(
        f.hierarchy.roll_tik(tenant).await,
        Err(Error::Purged(_))
    ));
    assert_eq!(
        f.hierarchy.tenant(tenant).await.unwrap().state,
        TenantState::Purged
    );
    // The other tenant is unaffected.
    f.hierarchy
        .release_file_key(&USER, &other_ctx, &other_wrapped)
        .await
        .unwrap();

    // A new hierarchy over the same store, every provider healthy: still purged.
    let (again, again_admin) = Fixture::build(
        &f.store,
        &f.tenant_keys,
        &f.audit,
        &f.service,
        &f.customer_a,
        &f.customer_b,
        Duration::from_secs(60),
    );
    let scan = again_admin.capability("scan");
    assert!(matches!(
        again.release_file_key(&system(&scan), &ctx, &wrapped).await,
        Err(Error::Purged(_))
    ));
    // Nothing of the tenant's TIKs is left in the store.
    assert!(f.store.tik_versions(tenant).await.unwrap().is_empty());
    assert!(
        f.store
            .tik_wraps(tenant, KeyVersion::FIRST)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        f.audit
            .count(|e, _| matches!(e, Event::TenantPurged { tik_versions: 2 })),
        1
    );
    // Every release refused after the purge (each returned `Purged`,
    // above) is audited as a failure.
    let failed_after_purge = f.audit.count(|e, o| {
        matches!(e, Event::ReleaseDenied { .. }) && matches!(o, Outcome::Failed { .. })
    });
    assert_eq!(failed_after_purge, 3);
}

#[tokio::test]
async fn a_tenants_keys_never_unwrap_under_another_tenant() {
    let f = Fixture::new("isolation").await;
    let a = f.customer_tenant().await;
    let b = f.service_tenant().await;
    let ctx_a = context(a);
    let (_, wrapped_a) = f.hierarchy.new_file_key(&USER, &ctx_a).await.unwrap();
    // Tenant A's wrapped key presented for tenant B (same file id).
    let as_b = FileContext { tenant: b, ..ctx_a };
    let result = f.hierarchy.release_file_key(&USER, &as_b, &wrapped_a).await;
    assert!(
        matches!(result, Err(Error::WrongTenant(t)) if t == b),
        "{result:?}"
    );

    // Tenant A's TIK wraps copied over tenant B's: they do not unwrap for
    // B, because each wrap binds its tenant, TIK id and version.
    let c = f.customer_tenant().await;
    let ctx_c = context(c);
    let (_, wrapped_c) = f.hierarchy.new_file_key(&USER, &ctx_c).await.unwrap();
    let db = rusqlite::Connection::open(f.dir.path().join("tenants.sqlite")).unwrap();
    let copied = db
        .execute(
            "UPDATE tik_wraps SET wrapped = (SELECT w.wrapped FROM tik_wraps w WHERE w.tenant = ?1
               AND w.version = tik_wraps.version AND w.slot = tik_wraps.slot) WHERE tenant = ?2",
            rusqlite::params![a.as_bytes(), c.as_bytes()],
        )
        .unwrap();
    assert_eq!(copied, 3);
    f.hierarchy.flush_cache();
    let scan = f.admin.capability("scan");
    for access in [USER, system(&scan)] {
        let result = f
            .hierarchy
            .release_file_key(&access, &ctx_c, &wrapped_c)
            .await;
        assert!(
            matches!(
                result,
                Err(Error::RootKey(ProviderError::AuthenticationFailed { .. }))
            ),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn tik_rotation_rewrap_and_retirement() {
    let f = Fixture::new("rotate").await;
    let tenant = f.customer_tenant().await;
    let index = f.file_keys.index();
    let mut keys = Vec::new();
    for _ in 0..25 {
        let (ctx, key, _) = f.file_keys.new_file(&f.hierarchy, &USER, tenant).await;
        keys.push((ctx, *key.expose_secret()));
    }
    let v2 = f.hierarchy.roll_tik(tenant).await.unwrap();
    assert_eq!(u32::from(v2), 2);
    // New files use the new version; old ones keep working.
    let (_, new_wrapped) = f
        .hierarchy
        .new_file_key(&USER, &context(tenant))
        .await
        .unwrap();
    assert_eq!(new_wrapped.kek_version(), v2);
    let retire = f
        .hierarchy
        .retire_tik(tenant, KeyVersion::FIRST, index)
        .await;
    assert!(
        matches!(retire, Err(Error::TikInUse { references: 25, .. })),
        "{retire:?}"
    );

    let mut seen = Vec::new();
    let report = f
        .hierarchy
        .rewrap_file_keys(tenant, index, 10, &mut |p: RewrapProgress| seen.push(p))
        .await
        .unwrap();
    assert_eq!((report.rewrapped, report.batches), (25, 3));
    assert_eq!(seen.first(), Some(&RewrapProgress { done: 0, total: 25 }));
    assert_eq!(
        seen.last(),
        Some(&RewrapProgress {
            done: 25,
            total: 25
        })
    );
    for (ctx, key) in &keys {
        let wrapped = f.file_keys.wrapped(ctx).await;
        assert_eq!(wrapped.kek_version(), v2);
        assert_eq!(
            f.hierarchy
                .release_file_key(&USER, ctx, &wrapped)
                .await
                .unwrap()
                .expose_secret(),
            key
        );
    }
    // Nothing refers to version 1 any more; the current version stays.
    assert!(matches!(
        f.hierarchy.retire_tik(tenant, v2, index).await,
        Err(Error::TikInUse {
            is_current: true,
            ..
        })
    ));
    f.hierarchy
        .retire_tik(tenant, KeyVersion::FIRST, index)
        .await
        .unwrap();
    assert!(matches!(
        f.hierarchy
            .retire_tik(tenant, KeyVersion::FIRST, index)
            .await,
        Err(Error::UnknownTikVersion { .. })
    ));
    // A re-wrap with nothing to do is a no-op.
    let report = f
        .hierarchy
        .rewrap_file_keys(tenant, index, 10, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(report.rewrapped, 0);
    assert_eq!(
        f.audit
            .count(|e, _| matches!(e, Event::FileKeysRewrapped { .. })),
        3
    );
}

/// A retired TIK version's own key is destroyed with it: the file keys
/// ever wrapped under it are gone for good, even with every database
/// restored from a backup taken before (what makes deleting a file a
/// crypto-erasure once the other files moved to a newer version).
#[tokio::test]
async fn a_retired_versions_file_keys_stay_gone_after_a_backup_is_restored() {
    for customer_key in [false, true] {
        let f = Fixture::new("retired-restored").await;
        let index = f.file_keys.index();
        let tenant = if customer_key {
            f.customer_tenant().await
        } else {
            f.service_tenant().await
        };
        let (ctx, key, old_wrap) = f.file_keys.new_file(&f.hierarchy, &USER, tenant).await;
        let backup = backup_databases(f.dir.path());

        let v2 = f.hierarchy.roll_tik(tenant).await.unwrap();
        let _ = f
            .hierarchy
            .rewrap_file_keys(tenant, index, 100, &mut |_| {})
            .await
            .unwrap();
        f.hierarchy
            .retire_tik(tenant, KeyVersion::FIRST, index)
            .await
            .unwrap();
        // The key moved to version 2 opens; its version-1 wrap never again.
        let moved = f.file_keys.wrapped(&ctx).await;
        assert_eq!(moved.kek_version(), v2);
        assert_eq!(
            f.hierarchy
                .release_file_key(&USER, &ctx, &moved)
                .await
                .unwrap()
                .expose_secret(),
            key.expose_secret()
        );
        f.hierarchy.flush_cache();
        assert!(
            f.hierarchy
                .release_file_key(&USER, &ctx, &old_wrap)
                .await
                .is_err()
        );

        // The key metadata as the backup has it (restored beside the live
        // files, which this process still has open): version 1 current
        // again, its wraps there; its key is not.
        let restored_dir = f.dir.join("restored");
        std::fs::create_dir_all(&restored_dir).unwrap();
        for (db, bytes) in &backup {
            std::fs::write(restored_dir.join(db.file_name().unwrap()), bytes).unwrap();
        }
        let store = std::sync::Arc::new(
            atrest_sqlite::SqliteStore::open(&restored_dir.join("tenants.sqlite"))
                .await
                .unwrap(),
        );
        let (restored, admin) = Fixture::build(
            &store,
            &f.tenant_keys,
            &f.audit,
            &f.service,
            &f.customer_a,
            &f.customer_b,
            Duration::from_secs(60),
        );
        assert_eq!(
            store.tenant(tenant).await.unwrap().unwrap().current_tik,
            KeyVersion::FIRST
        );
        let scan = admin.capability("scan");
        for access in [USER, system(&scan)] {
            let released = restored.release_file_key(&access, &ctx, &old_wrap).await;
            assert!(released.is_err(), "{released:?}");
        }
    }
}

#[tokio::test]
async fn rolling_a_root_key_rewraps_tik_versions_only() {
    let f = Fixture::new("root-roll").await;
    let service_tenant = f.service_tenant().await;
    let customer_tenant = f.customer_tenant().await;
    let mut files = Vec::new();
    for tenant in [service_tenant, customer_tenant] {
        f.hierarchy.roll_tik(tenant).await.unwrap();
        let ctx = context(tenant);
        let (key, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
        files.push((ctx, wrapped, *key.expose_secret()));
    }
    // The service root key and the availability key get new versions.
    for label in ["root", "availability"] {
        let old = f
            .service
            .keys()
            .await
            .unwrap()
            .into_iter()
            .find(|(k, _)| k.label() == label)
            .unwrap()
            .0;
        let new = f.service.roll_key(label).await.unwrap();
        assert_eq!(new.version(), 2);
        let report = f.hierarchy.roll_root_key(&old, &new).await.unwrap();
        assert_eq!((report.tenants, report.tik_versions), (1, 2));
        // The old version can go: nothing is wrapped under it any more.
        f.service.destroy_version(&old).await.unwrap();
    }
    // A customer key is replaced by a new one.
    let old_a: atrest_tenant::RootKeyRef = "customer-a:key-1".parse().unwrap();
    let new_a = f.keys_a.create_key("key-2").await.unwrap();
    f.hierarchy.roll_root_key(&old_a, &new_a).await.unwrap();
    f.keys_a.destroy_version(&old_a).await.unwrap();

    f.hierarchy.flush_cache();
    f.customer_b.set(Fault::Unavailable);
    for (ctx, wrapped, key) in &files {
        let released = f
            .hierarchy
            .release_file_key(&USER, ctx, wrapped)
            .await
            .unwrap();
        assert_eq!(released.expose_secret(), key);
    }
    // Customer key B still has its original wraps, and the availability key
    // its new version.
    f.customer_a.set(Fault::Unavailable);
    f.customer_b.set(Fault::None);
    f.hierarchy.flush_cache();
    f.hierarchy
        .release_file_key(&USER, &files[1].0, &files[1].1)
        .await
        .unwrap();
    f.customer_b.set(Fault::Unavailable);
    f.hierarchy.flush_cache();
    f.hierarchy
        .release_file_key(&USER, &files[1].0, &files[1].1)
        .await
        .unwrap();
    assert_eq!(
        f.audit
            .count(|e, _| matches!(e, Event::RootKeyRolled { .. })),
        3
    );
}

#[tokio::test]
async fn slow_providers_only_cost_the_first_unwrap() {
    let f = Fixture::new("slow").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    f.hierarchy.flush_cache();
    f.customer_a.set(Fault::Slow(Duration::from_millis(200)));
    let start = std::time::Instant::now();
    f.hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(200));
    let calls = f.customer_a.calls();
    for _ in 0..100 {
        f.hierarchy
            .release_file_key(&USER, &ctx, &wrapped)
            .await
            .unwrap();
    }
    assert_eq!(f.customer_a.calls(), calls);
}

#[tokio::test]
async fn bad_input_gets_typed_errors() {
    let f = Fixture::new("bad").await;
    let tenant = f.service_tenant().await;
    assert!(
        matches!(f.hierarchy.create_service_tenant(tenant).await, Err(Error::TenantExists(t)) if t == tenant)
    );
    let unknown = context(atrest_filekey::TenantId::random(&mut atrest_filekey::OsRng).unwrap());
    assert!(matches!(
        f.hierarchy.new_file_key(&USER, &unknown).await,
        Err(Error::UnknownTenant(_))
    ));
    f.audit.clear();
    let (_, some_key) = f
        .hierarchy
        .new_file_key(&USER, &context(tenant))
        .await
        .unwrap();
    assert!(matches!(
        f.hierarchy
            .release_file_key(&USER, &unknown, &some_key)
            .await,
        Err(Error::UnknownTenant(_))
    ));
    assert_eq!(
        f.audit
            .count(|e, o| matches!(e, Event::ReleaseDenied { .. })
                && matches!(o, Outcome::Failed { .. })),
        1,
        "a release for an unknown tenant is recorded"
    );
    let same: atrest_tenant::RootKeyRef = "customer-a:key-1".parse().unwrap();
    let t2 = atrest_filekey::TenantId::random(&mut atrest_filekey::OsRng).unwrap();
    assert!(matches!(
        f.hierarchy
            .create_customer_key_tenant(t2, [same.clone(), same])
            .await,
        Err(Error::Misuse(_))
    ));
    // A wrapped key released under the wrong file fails authentication.
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    let other_file = context(tenant);
    assert!(matches!(
        f.hierarchy
            .release_file_key(&USER, &other_file, &wrapped)
            .await,
        Err(Error::FileKey(atrest_filekey::Error::AuthenticationFailed))
    ));
    for text in ["", "no-colon", "a:b@0", "a:b@x", ":b", "a@b:c"] {
        assert!(text.parse::<atrest_tenant::RootKeyRef>().is_err(), "{text}");
    }
    assert_eq!(
        "p:l"
            .parse::<atrest_tenant::RootKeyRef>()
            .unwrap()
            .to_string(),
        "p:l@1"
    );
}

#[tokio::test]
async fn a_system_capability_works_only_with_the_hierarchy_that_issued_it() {
    let f = Fixture::new("capability").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    // A second hierarchy built over the same store, with an administration
    // of its own: its capabilities mean nothing to the first.
    let (_, foreign_admin) = Fixture::build(
        &f.store,
        &f.tenant_keys,
        &f.audit,
        &f.service,
        &f.customer_a,
        &f.customer_b,
        Duration::from_secs(60),
    );
    let foreign = foreign_admin.capability("rewrap");
    f.customer_a.set(Fault::AccessDenied);
    f.customer_b.set(Fault::AccessDenied);
    f.hierarchy.flush_cache();
    let result = f
        .hierarchy
        .release_file_key(&system(&foreign), &ctx, &wrapped)
        .await;
    assert!(matches!(result, Err(Error::Misuse(_))), "{result:?}");
    assert_eq!(
        f.audit.count(is_fallback),
        0,
        "the availability key was used"
    );
    // Its own administration's capability is honoured.
    let own = f.admin.capability("rewrap");
    f.hierarchy
        .release_file_key(&system(&own), &ctx, &wrapped)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_denied_write_makes_no_file_key_and_is_audited() {
    let f = Fixture::new("write-denied").await;
    let tenant = f.service_tenant().await;
    let ctx = context(tenant);
    // The fixture's policy lets only readers (and system operations) in.
    let stranger = Access::User {
        principal: "mallory",
    };
    let result = f.hierarchy.new_file_key(&stranger, &ctx).await;
    assert!(matches!(result, Err(Error::Denied { .. })), "{result:?}");
    assert_eq!(
        f.audit
            .count(|e, o| matches!(e, Event::WriteDenied { .. })
                && matches!(o, Outcome::Denied { .. })),
        1
    );
    assert_eq!(
        f.audit
            .count(|e, _| matches!(e, Event::FileKeyWrapped { .. })),
        0
    );
    f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();

    // A batch of refused writes gets no TIK unwrapped for it: the decision
    // comes first (no call reaches the customer's key service).
    let customer = f.customer_tenant().await;
    f.hierarchy.flush_cache();
    let calls = f.customer_a.calls();
    let contexts: Vec<_> = (0..3).map(|_| context(customer)).collect();
    let (made, records) = f
        .hierarchy
        .new_file_keys_records_pending(&stranger, customer, &contexts)
        .await
        .unwrap();
    records.commit().await.unwrap();
    assert!(made.iter().all(|m| matches!(m, Err(Error::Denied { .. }))));
    assert_eq!(f.customer_a.calls(), calls, "no unwrap for refused writes");
    assert_eq!(
        f.audit
            .count(|e, o| matches!(e, Event::WriteDenied { .. })
                && matches!(o, Outcome::Denied { .. })),
        4
    );
    assert_eq!(
        f.audit
            .count(|e, _| matches!(e, Event::FileKeyWrapped { .. })),
        1
    );
}

#[tokio::test]
async fn deleted_customer_wraps_are_a_refusal_never_a_fallback() {
    let f = Fixture::new("deleted-wraps").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    // The customer destroyed both keys...
    f.customer_a.set(Fault::NotFound);
    f.customer_b.set(Fault::NotFound);
    f.hierarchy.flush_cache();
    assert!(
        f.hierarchy
            .release_file_key(&USER, &ctx, &wrapped)
            .await
            .is_err()
    );
    // ...and a writer of the database deletes the customer wraps, one or
    // both, so that no customer key is even asked.
    let db = rusqlite::Connection::open(f.dir.path().join("tenants.sqlite")).unwrap();
    let slots: Vec<i64> = db
        .prepare(
            "SELECT slot FROM root_key_slots WHERE tenant = ?1 AND role = 'customer' ORDER BY slot",
        )
        .and_then(|mut s| {
            s.query_map([tenant.as_bytes()], |row| row.get(0))?
                .collect::<Result<_, _>>()
        })
        .unwrap();
    assert_eq!(slots.len(), 2);
    for deleted in [&slots[..1], &slots[..]] {
        for slot in deleted {
            db.execute(
                "DELETE FROM tik_wraps WHERE tenant = ?1 AND slot = ?2",
                rusqlite::params![tenant.as_bytes(), slot],
            )
            .unwrap();
        }
        f.hierarchy.flush_cache();
        let result = f.hierarchy.release_file_key(&USER, &ctx, &wrapped).await;
        assert!(matches!(result, Err(Error::Corrupt(_))), "{result:?}");
        assert_eq!(
            f.audit.count(is_fallback),
            0,
            "the availability key was used"
        );
    }
}

#[tokio::test]
async fn relabelled_slots_and_kinds_do_not_unwrap() {
    let f = Fixture::new("relabelled").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    // The customer destroyed both keys: users are refused.
    f.customer_a.set(Fault::NotFound);
    f.customer_b.set(Fault::NotFound);
    f.hierarchy.flush_cache();
    assert!(
        f.hierarchy
            .release_file_key(&USER, &ctx, &wrapped)
            .await
            .is_err()
    );
    let db = rusqlite::Connection::open(f.dir.path().join("tenants.sqlite")).unwrap();
    let reset = |db: &rusqlite::Connection| {
        db.execute_batch(&format!(
            "UPDATE tenants SET kind = 'customer' WHERE tenant = x'{id}';
             UPDATE root_key_slots SET role = 'customer' WHERE tenant = x'{id}' AND slot < 2;
             UPDATE root_key_slots SET role = 'availability' WHERE tenant = x'{id}' AND slot = 2;",
            id = hex(tenant.as_bytes())
        ))
        .unwrap();
    };
    for edit in [
        // The tenant made service-managed, its availability slot the
        // service root key's: the service-managed path would unwrap it.
        "UPDATE tenants SET kind = 'service' WHERE tenant = x'{id}';
         UPDATE root_key_slots SET role = 'service' WHERE tenant = x'{id}' AND slot = 2;",
        // The availability slot relabelled as a customer key, a customer
        // slot as the availability key.
        "UPDATE root_key_slots SET role = 'customer' WHERE tenant = x'{id}' AND slot = 2;
         UPDATE root_key_slots SET role = 'availability' WHERE tenant = x'{id}' AND slot = 0;",
    ] {
        reset(&db);
        db.execute_batch(&edit.replace("{id}", &hex(tenant.as_bytes())))
            .unwrap();
        f.hierarchy.flush_cache();
        let result = f.hierarchy.release_file_key(&USER, &ctx, &wrapped).await;
        assert!(result.is_err(), "released after: {edit}");
        assert_eq!(f.audit.count(is_fallback), 0, "{edit}");
    }
}

/// A backup of every database file in `dir` (the key metadata, the
/// service's root keys, the customer stand-ins' key stores), taken while
/// everything is consistent: each file and its bytes.
fn backup_databases(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let databases: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sqlite"))
        .collect();
    for db in &databases {
        let connection = rusqlite::Connection::open(db).unwrap();
        let _: i64 = connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
            .unwrap();
    }
    databases
        .iter()
        .map(|db| (db.clone(), std::fs::read(db).unwrap()))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_database_backup_restored_after_a_purge_brings_nothing_back() {
    let f = Fixture::new("backup-restore").await;
    let tenant = f.customer_tenant().await;
    let other = f.customer_tenant().await;
    let service_managed = f.service_tenant().await;
    let mut files = Vec::new();
    for t in [tenant, other, service_managed] {
        let ctx = context(t);
        let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
        files.push((ctx, wrapped));
    }

    // A backup of every database file (the key metadata, the service's
    // root keys, the customer stand-ins' key stores), taken while
    // everything is consistent.
    let backup = backup_databases(f.dir.path());
    assert!(backup.len() >= 4);

    f.hierarchy.purge(tenant).await.unwrap();
    f.hierarchy.purge(service_managed).await.unwrap();

    // Restored over the live files; a new hierarchy over them, every
    // customer key healthy.
    for (db, bytes) in &backup {
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        std::fs::write(db, bytes).unwrap();
    }
    let store = std::sync::Arc::new(
        atrest_sqlite::SqliteStore::open(&f.dir.join("tenants.sqlite"))
            .await
            .unwrap(),
    );
    let (again, admin) = Fixture::build(
        &store,
        &f.tenant_keys,
        &f.audit,
        &f.service,
        &f.customer_a,
        &f.customer_b,
        Duration::from_secs(60),
    );
    let scan = admin.capability("scan");
    for purged in [tenant, service_managed] {
        assert_eq!(
            store.tenant(purged).await.unwrap().unwrap().state,
            TenantState::Active,
            "the restored records say the tenant is active"
        );
        let (ctx, wrapped) = files.iter().find(|(c, _)| c.tenant == purged).unwrap();
        for access in [USER, system(&scan)] {
            let result = again.release_file_key(&access, ctx, wrapped).await;
            assert!(
                matches!(result, Err(Error::TenantKeyMissing(t)) if t == purged),
                "{result:?}"
            );
        }
    }
    assert!(
        f.audit
            .count(|e, _| matches!(e, Event::MetadataRejected {}))
            >= 2
    );
    // The other tenant is unaffected.
    let (ctx, wrapped) = &files[1];
    again.release_file_key(&USER, ctx, wrapped).await.unwrap();
    // Purging again makes the records agree.
    again.purge(tenant).await.unwrap();
    assert!(matches!(
        again
            .release_file_key(&USER, &files[0].0, &files[0].1)
            .await,
        Err(Error::Purged(_))
    ));
}

#[tokio::test]
async fn an_edited_tenant_record_is_refused_and_audited() {
    let f = Fixture::new("edited-record").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    f.hierarchy
        .revoke_customer_key(tenant, &Fixture::customer_keys()[0])
        .await
        .unwrap();
    f.hierarchy
        .revoke_customer_key(tenant, &Fixture::customer_keys()[1])
        .await
        .unwrap();
    f.hierarchy.flush_cache();
    assert!(matches!(
        f.hierarchy.release_file_key(&USER, &ctx, &wrapped).await,
        Err(Error::Revoked(_))
    ));
    // The database writer clears the revocations.
    let db = rusqlite::Connection::open(f.dir.join("tenants.sqlite")).unwrap();
    db.execute("UPDATE root_key_slots SET revoked = 0", [])
        .unwrap();
    drop(db);
    // Read again once the cached record expires (here: at once).
    f.hierarchy.flush_cache();
    let result = f.hierarchy.release_file_key(&USER, &ctx, &wrapped).await;
    assert!(
        matches!(result, Err(Error::Tampered { tenant: t, .. }) if t == tenant),
        "{result:?}"
    );
    assert_eq!(
        f.audit
            .count(|e, _| matches!(e, Event::MetadataRejected {})),
        1
    );
    // Revocation cannot be undone by the service either: a new revocation
    // attempt sees the edited record and is refused too.
    assert!(matches!(
        f.hierarchy
            .revoke_customer_key(tenant, &Fixture::customer_keys()[0])
            .await,
        Err(Error::Tampered { .. })
    ));
}

fn fallback_refused(event: &Event, outcome: &Outcome) -> bool {
    matches!(event, Event::AvailabilityKeyFallback { .. })
        && matches!(outcome, Outcome::Denied { .. })
}

#[tokio::test]
async fn the_fallback_policy_decides_when_users_get_the_availability_key() {
    let f = Fixture::new("fallback-policy").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (key, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    f.customer_a.set(Fault::Unavailable);
    f.customer_b.set(Fault::Unavailable);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let window = |start: u64, end: u64| OutageWindow {
        start,
        end,
        reason: "region a of the customer's key service is down".into(),
    };
    let release = async || {
        f.hierarchy.flush_cache();
        f.hierarchy.release_file_key(&USER, &ctx, &wrapped).await
    };

    // `never`: an outage is an outage for users; system operations go on.
    f.hierarchy
        .set_fallback_policy(tenant, FallbackPolicy::Never)
        .await
        .unwrap();
    let refused = release().await.unwrap_err();
    assert!(
        matches!(&refused, Error::RootKey(p) if p.is_unavailable()),
        "{refused}"
    );
    assert_eq!(refused.kind(), atrest_core::ErrorKind::Unavailable);
    assert_eq!(f.audit.count(fallback_refused), 1);
    assert_eq!(f.audit.count(is_fallback), 0);
    let capability = f.admin.capability("re-wrap");
    let system_access = system(&capability);
    f.hierarchy.flush_cache();
    let _ = f
        .hierarchy
        .release_file_key(&system_access, &ctx, &wrapped)
        .await
        .unwrap();

    // `declared`, with no window, with one past and one to come: refused;
    // with one open now: served, and audited.
    for policy in [
        FallbackPolicy::Declared(None),
        FallbackPolicy::Declared(Some(window(now - 7200, now - 3600))),
        FallbackPolicy::Declared(Some(window(now + 3600, now + 7200))),
    ] {
        f.hierarchy
            .set_fallback_policy(tenant, policy.clone())
            .await
            .unwrap();
        assert!(release().await.is_err(), "{policy:?}");
    }
    f.hierarchy
        .set_fallback_policy(
            tenant,
            FallbackPolicy::Declared(Some(window(now - 60, now + 3600))),
        )
        .await
        .unwrap();
    let served = release().await.unwrap();
    assert_eq!(served.expose_secret(), key.expose_secret());
    let set = f
        .audit
        .events()
        .into_iter()
        .filter(|(e, _)| matches!(e, Event::FallbackPolicySet { .. }))
        .count();
    assert_eq!(set, 5);

    // `automatic`: served on any outage; but never on a refusal.
    f.hierarchy
        .set_fallback_policy(tenant, FallbackPolicy::Automatic)
        .await
        .unwrap();
    let _ = release().await.unwrap();
    f.customer_a.set(Fault::AccessDenied);
    assert!(release().await.is_err());

    // A window that is not valid, and a service-managed tenant: misuse.
    let bad = f
        .hierarchy
        .set_fallback_policy(tenant, FallbackPolicy::Declared(Some(window(now, now))))
        .await;
    assert!(matches!(bad, Err(Error::Misuse(_))));
    let service = f.service_tenant().await;
    let bad = f
        .hierarchy
        .set_fallback_policy(service, FallbackPolicy::Never)
        .await;
    assert!(matches!(bad, Err(Error::Misuse(_))));
}

#[tokio::test]
async fn a_tik_served_through_the_availability_key_is_cached_briefly() {
    let f = Fixture::new("fallback-cache").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    f.hierarchy.flush_cache();
    f.customer_a.set(Fault::Unavailable);
    f.customer_b.set(Fault::Unavailable);
    let _ = f
        .hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    // The fixture caches for five minutes; the fallback's TIK is kept for
    // FALLBACK_CACHE_TTL only. The cache's contents are not observable
    // directly; a declared window that ends in two seconds bounds it
    // further, and a release after it must ask the keys again.
    f.hierarchy.flush_cache();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    f.hierarchy
        .set_fallback_policy(
            tenant,
            FallbackPolicy::Declared(Some(OutageWindow {
                start: now - 10,
                end: now + 2,
                reason: "a short outage".into(),
            })),
        )
        .await
        .unwrap();
    let _ = f
        .hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    let served = f.audit.count(is_fallback);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The window is over and the cached TIK expired with it: refused.
    assert!(
        f.hierarchy
            .release_file_key(&USER, &ctx, &wrapped)
            .await
            .is_err()
    );
    assert_eq!(f.audit.count(is_fallback), served);
    assert!(atrest_tenant::FALLBACK_CACHE_TTL <= Duration::from_secs(30));
}

/// A writer of the database edits a tenant's fallback policy (or its
/// declared window) to let users through during an outage: the record no
/// longer authenticates, and nothing is released.
#[tokio::test]
async fn an_edited_fallback_policy_is_refused() {
    let f = Fixture::new("fallback-edit").await;
    let tenant = f.customer_tenant().await;
    let ctx = context(tenant);
    let (_, wrapped) = f.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let db = rusqlite::Connection::open(f.dir.path().join("tenants.sqlite")).unwrap();
    let edits = [
        (
            FallbackPolicy::Never,
            "UPDATE tenants SET fallback = 'automatic'",
        ),
        (
            FallbackPolicy::Declared(None),
            "UPDATE tenants SET fallback = 'automatic'",
        ),
        (
            FallbackPolicy::Declared(Some(OutageWindow {
                start: now + 3600,
                end: now + 7200,
                reason: "planned".into(),
            })),
            "UPDATE tenants SET outage_start = outage_start - 7200",
        ),
    ];
    f.customer_a.set(Fault::Unavailable);
    f.customer_b.set(Fault::Unavailable);
    for (policy, edit) in edits {
        f.hierarchy
            .set_fallback_policy(tenant, policy.clone())
            .await
            .unwrap();
        let _ = db.execute(edit, []).unwrap();
        f.hierarchy.flush_cache();
        let result = f.hierarchy.release_file_key(&USER, &ctx, &wrapped).await;
        assert!(
            matches!(result, Err(Error::Tampered { .. })),
            "{policy:?} edited by {edit:?}: {result:?}"
        );
        // Put back as it was, for the next round.
        let back = match &policy {
            FallbackPolicy::Never => "UPDATE tenants SET fallback = 'never'",
            FallbackPolicy::Declared(None) => "UPDATE tenants SET fallback = 'declared'",
            _ => "UPDATE tenants SET outage_start = outage_start + 7200",
        };
        let _ = db.execute(back, []).unwrap();
    }
}
