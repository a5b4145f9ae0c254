//! The contract of a root-key provider ([`RootKeyProvider`]), written once
//! and run by every provider's tests against the real thing behind it (the
//! service's key store, SoftHSM2, OpenBao, the AWS KMS emulator):
//!
//! ```ignore
//! atrest_test_support::provider_contract::check(provider, [key_a, key_b], missing).await;
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::missing_panics_doc
)]

use std::sync::Arc;

use atrest_tenant::{KeyMaterial, ProviderError, RootKeyProvider, RootKeyRef, TikBinding};

fn binding(text: &str) -> TikBinding {
    TikBinding::from_bytes(text.as_bytes().to_vec())
}

/// Whether `outcome` is an answer that refuses: an error that is not an
/// outage (a wrong key, binding or value must never open the way to the
/// availability key).
#[track_caller]
fn assert_refused<T>(outcome: &Result<T, ProviderError>, what: &str) {
    match outcome {
        Ok(_) => panic!("{what}: accepted"),
        Err(error) => assert!(
            !error.is_unavailable(),
            "{what}: refused as an outage: {error:?}"
        ),
    }
}

/// Runs every item of the contract against `provider`:
///
/// - its name is its references' provider, and `current_version` of each
///   key is at least the version referenced;
/// - a wrap unwraps to the same material under the same key and binding,
///   and two wraps of the same material differ (randomised);
/// - another binding, the other key, a value changed in any of several
///   places, cut short, extended or empty: `AuthenticationFailed` for
///   another binding, and a refusal (never an outage, never the material)
///   for the rest;
/// - a key that does not exist: `NotFound` to wrap, a refusal to unwrap;
/// - a reference of another provider: a refusal;
/// - 32 wraps and unwraps at once, across both keys, all round trip.
///
/// `keys` are two distinct keys the provider may wrap with; `missing` is a
/// reference of this provider to a key it does not have.
pub async fn check(provider: Arc<dyn RootKeyProvider>, keys: [RootKeyRef; 2], missing: RootKeyRef) {
    let name = provider.name().to_owned();
    for key in &keys {
        assert_eq!(
            key.provider(),
            name,
            "{key}: a reference of another provider"
        );
        let current = provider.current_version(key.label()).await.unwrap();
        assert!(current >= key.version(), "{key}: current version {current}");
    }

    let material = KeyMaterial::generate().unwrap();
    let (first, second) = (
        binding("tenant-1/tik-1/slot-0"),
        binding("tenant-2/tik-1/slot-0"),
    );
    let wrapped = provider.wrap(&keys[0], &material, &first).await.unwrap();
    let again = provider.wrap(&keys[0], &material, &first).await.unwrap();
    assert_ne!(wrapped, again, "two wraps of the same material are equal");
    for value in [&wrapped, &again] {
        let unwrapped = provider.unwrap(&keys[0], value, &first).await.unwrap();
        assert_eq!(unwrapped.expose_secret(), material.expose_secret());
    }

    let other_binding = provider.unwrap(&keys[0], &wrapped, &second).await;
    assert!(
        matches!(
            other_binding,
            Err(ProviderError::AuthenticationFailed { .. })
        ),
        "another binding: {other_binding:?}"
    );
    assert_refused(
        &provider.unwrap(&keys[1], &wrapped, &first).await,
        "a wrap of the other key",
    );
    let positions = [0, wrapped.len() / 2, wrapped.len() - 1];
    for position in positions {
        let mut changed = wrapped.clone();
        changed[position] ^= 0x01;
        assert_refused(
            &provider.unwrap(&keys[0], &changed, &first).await,
            &format!("a wrap changed at byte {position}"),
        );
    }
    assert_refused(
        &provider
            .unwrap(&keys[0], &wrapped[..wrapped.len() - 1], &first)
            .await,
        "a wrap cut short",
    );
    let mut longer = wrapped.clone();
    longer.push(b'A');
    assert_refused(
        &provider.unwrap(&keys[0], &longer, &first).await,
        "a wrap extended",
    );
    assert_refused(
        &provider.unwrap(&keys[0], &[], &first).await,
        "an empty wrap",
    );

    let missing_wrap = provider.wrap(&missing, &material, &first).await;
    assert!(
        matches!(missing_wrap, Err(ProviderError::NotFound { .. })),
        "a missing key: {missing_wrap:?}"
    );
    assert_refused(
        &provider.unwrap(&missing, &wrapped, &first).await,
        "unwrapped under a missing key",
    );

    let foreign =
        RootKeyRef::new(format!("not-{name}"), keys[0].label(), keys[0].version()).unwrap();
    assert_refused(
        &provider.wrap(&foreign, &material, &first).await,
        "a reference of another provider",
    );
    assert_refused(
        &provider.unwrap(&foreign, &wrapped, &first).await,
        "a reference of another provider",
    );

    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let provider = provider.clone();
            let key = keys[i % 2].clone();
            tokio::spawn(async move {
                let material = KeyMaterial::generate().unwrap();
                let binding = binding(&format!("tenant-{i}/tik-1/slot-{}", i % 2));
                let wrapped = provider.wrap(&key, &material, &binding).await.unwrap();
                let unwrapped = provider.unwrap(&key, &wrapped, &binding).await.unwrap();
                assert_eq!(unwrapped.expose_secret(), material.expose_secret());
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}
