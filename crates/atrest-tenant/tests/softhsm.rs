//! End to end against a real PKCS#11 token: SoftHSM2, initialized in a
//! temporary directory. Customer keys are generated inside the tokens as
//! sensitive, non-extractable keys; tenants are created, file keys wrapped
//! and released, the TIK and a customer key rotated, access revoked (a key
//! disabled, a key destroyed), and the tenant purged.
//!
//! SoftHSM2 reads its configuration from `SOFTHSM2_CONF` when the module is
//! initialized, so each test re-runs itself in a child process with that
//! variable pointing at its own token directory. `scripts/test` installs
//! SoftHSM2 (Debian package `softhsm2`); the module path can be overridden
//! with `ATREST_PKCS11_MODULE`.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use atrest_audit::Event;
use atrest_filekey::{OsRng, TenantId};
use atrest_sqlite::SqliteStore;
use atrest_tenant::{
    Error, KeyHierarchy, KeyMaterial, MasterKey, Pkcs11Keys, ProviderError, RootKeyProvider,
    TenantKeyDir, TenantKeyStore,
};
use atrest_test_support::sqlite as rusqlite;
use common::{
    Collected, FileKeys, PIN, USER, context, module, service_keys, system, token, with_tokens,
};

#[tokio::test]
async fn customer_key_tenant_end_to_end() {
    with_tokens("customer_key_tenant_end_to_end", async |dir| {
        let hsm_a = token("hsm-a", "customer-a").await;
        let hsm_b = token("hsm-b", "customer-b").await;
        let key_a = hsm_a.generate_key("tenant-key-1").await.unwrap();
        let key_b = hsm_b.generate_key("tenant-key-1").await.unwrap();

        // The service's root keys, sealed under a master key in a token.
        let master_token = token("service-master-token", "service-master").await;
        master_token.generate_key("master").await.unwrap();
        let master = MasterKey::in_token(master_token, "master").unwrap();
        let tenant_keys =
            Arc::new(TenantKeyDir::open(&dir.join("tenant-keys"), master.clone()).unwrap());
        let service = service_keys("service", &dir.join("keys.sqlite"), master).await;
        service.create_key("root").await.unwrap();
        service.create_key("availability").await.unwrap();

        let store = Arc::new(
            SqliteStore::open(&dir.join("tenants.sqlite"))
                .await
                .unwrap(),
        );
        let file_keys = FileKeys::open(&dir.join("catalog.sqlite")).await;
        let audit = Arc::new(Collected::default());
        let (hierarchy, admin) =
            KeyHierarchy::builder(store.clone(), tenant_keys.clone(), audit.clone())
                .provider(service.clone())
                .provider(hsm_a.clone() as Arc<dyn RootKeyProvider>)
                .provider(hsm_b.clone() as Arc<dyn RootKeyProvider>)
                .service_root_key("service", "root")
                .availability_key("service", "availability")
                .policy(common::policy())
                .cache_ttl(Duration::from_secs(60))
                .build_with_administration()
                .unwrap();
        let scan = admin.capability("scan");

        let tenant = TenantId::random(&mut OsRng).unwrap();
        hierarchy
            .create_customer_key_tenant(tenant, [key_a.clone(), key_b.clone()])
            .await
            .unwrap();
        let service_tenant = TenantId::random(&mut OsRng).unwrap();
        hierarchy
            .create_service_tenant(service_tenant)
            .await
            .unwrap();

        // Wrap and release, through the tokens (cache flushed) and the cache.
        let mut files = Vec::new();
        for t in [tenant, service_tenant] {
            for _ in 0..5 {
                let (ctx, key, _) = file_keys.new_file(&hierarchy, &USER, t).await;
                files.push((ctx, *key.expose_secret()));
            }
        }
        let check_all = async |hierarchy: &KeyHierarchy| {
            hierarchy.flush_cache();
            for (ctx, key) in &files {
                let wrapped = file_keys.wrapped(ctx).await;
                assert_eq!(
                    hierarchy
                        .release_file_key(&USER, ctx, &wrapped)
                        .await
                        .unwrap()
                        .expose_secret(),
                    key
                );
            }
        };
        check_all(&hierarchy).await;

        // Rotate: the TIK (with re-wrap), then customer key A to a new key.
        hierarchy.roll_tik(tenant).await.unwrap();
        let report = hierarchy
            .rewrap_file_keys(tenant, file_keys.index(), 2, &mut |_| {})
            .await
            .unwrap();
        assert_eq!(report.rewrapped, 5);
        let key_a2 = hsm_a.generate_key("tenant-key-2").await.unwrap();
        let rolled = hierarchy.roll_root_key(&key_a, &key_a2).await.unwrap();
        assert_eq!((rolled.tenants, rolled.tik_versions), (1, 2));
        hsm_a.destroy_key("tenant-key-1").await.unwrap();
        check_all(&hierarchy).await;
        // The service root key too (sealed under the token master key).
        let root_2 = service.roll_key("root").await.unwrap();
        hierarchy
            .roll_root_key(&"service:root@1".parse().unwrap(), &root_2)
            .await
            .unwrap();
        check_all(&hierarchy).await;

        // Revoke: the customer disables key B and destroys key A.
        hsm_b.disable_key("tenant-key-1").await.unwrap();
        hierarchy.flush_cache();
        let (ctx, _) = &files[0];
        let wrapped = file_keys.wrapped(ctx).await;
        hierarchy
            .release_file_key(&USER, ctx, &wrapped)
            .await
            .unwrap(); // key A2 still answers
        hsm_a.destroy_key("tenant-key-2").await.unwrap();
        hierarchy.flush_cache();
        let refused = hierarchy.release_file_key(&USER, ctx, &wrapped).await;
        assert!(
            matches!(
                refused,
                Err(Error::RootKey(ProviderError::AccessDenied { .. }))
            ),
            "{refused:?}"
        );
        // A marked system operation may still use the availability key.
        hierarchy
            .release_file_key(&system(&scan), ctx, &wrapped)
            .await
            .unwrap();
        hierarchy
            .revoke_customer_key(tenant, &key_a2)
            .await
            .unwrap();
        hierarchy.revoke_customer_key(tenant, &key_b).await.unwrap();
        assert!(matches!(
            hierarchy.release_file_key(&USER, ctx, &wrapped).await,
            Err(Error::Revoked(_))
        ));

        // Purge: nothing recovers any key of the tenant any more.
        assert_eq!(hierarchy.purge(tenant).await.unwrap(), 2);
        for (ctx, _) in files.iter().filter(|(c, _)| c.tenant == tenant) {
            let wrapped = file_keys.wrapped(ctx).await;
            for access in [USER, system(&scan)] {
                assert!(matches!(
                    hierarchy.release_file_key(&access, ctx, &wrapped).await,
                    Err(Error::Purged(_))
                ));
            }
        }
        // The service-managed tenant is unaffected.
        for (ctx, key) in files.iter().filter(|(c, _)| c.tenant == service_tenant) {
            let wrapped = file_keys.wrapped(ctx).await;
            assert_eq!(
                hierarchy
                    .release_file_key(&USER, ctx, &wrapped)
                    .await
                    .unwrap()
                    .expose_secret(),
                key
            );
        }
        assert_eq!(
            audit.count(|e, _| matches!(e, Event::AvailabilityKeyFallback { .. })),
            1
        );
        assert_eq!(
            audit.count(|e, _| matches!(e, Event::TenantPurged { .. })),
            1
        );
    })
    .await;
}

#[tokio::test]
async fn token_keys_cannot_be_extracted() {
    with_tokens("token_keys_cannot_be_extracted", async |_| {
        let hsm = token("hsm-a", "customer-a").await;
        hsm.generate_key("generated").await.unwrap();
        hsm.import_key(
            "imported",
            &atrest_tenant::RootKeyMaterial::from_secret_bytes(&[9; 32]),
        )
        .await
        .unwrap();
        for label in ["generated", "imported"] {
            let protection = hsm.protection(label).await.unwrap();
            assert!(protection.sensitive, "{label}: {protection:?}");
            assert!(!protection.extractable, "{label}: {protection:?}");
            assert!(!protection.value_readable, "{label}: {protection:?}");
        }
        // Generated inside the token, it was never anywhere else.
        let generated = hsm.protection("generated").await.unwrap();
        assert!(
            generated.always_sensitive && generated.never_extractable,
            "{generated:?}"
        );

        // Wrapping the key out of the token with another key is refused.
        use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
        use cryptoki::mechanism::Mechanism;
        use cryptoki::object::{Attribute, ObjectClass};
        use cryptoki::session::UserType;
        let pkcs11 = Pkcs11::new(module()).unwrap();
        let _ = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        let slot = pkcs11
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| pkcs11.get_token_info(*s).unwrap().label() == "customer-a")
            .unwrap();
        let session = pkcs11.open_rw_session(slot).unwrap();
        let _ = session.login(UserType::User, Some(&PIN.to_owned().into()));
        let wrapping = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Wrap(true),
                    Attribute::Extractable(true),
                ],
            )
            .unwrap();
        for label in ["generated", "imported"] {
            let target = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(label.into()),
                ])
                .unwrap()[0];
            let exported = session.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, target);
            assert!(exported.is_err(), "{label} was wrapped out of the token");
            let value = session.get_attributes(target, &[cryptoki::object::AttributeType::Value]);
            assert!(
                value.is_err()
                    || value
                        .unwrap()
                        .iter()
                        .all(|a| !matches!(a, Attribute::Value(_))),
                "{label}: value readable"
            );
        }
        // Each key may be used with AES-GCM only: ECB on it is refused.
        for label in ["generated", "imported"] {
            assert_eq!(
                hsm.allowed_mechanisms(label).await.unwrap(),
                [cryptoki::mechanism::MechanismType::AES_GCM],
                "{label}"
            );
            let target = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(label.into()),
                ])
                .unwrap()[0];
            let ecb = session.encrypt(&Mechanism::AesEcb, target, &[0u8; 16]);
            assert!(ecb.is_err(), "{label} encrypted with ECB");
        }
        // Creating a key whose label is taken is refused.
        assert!(matches!(
            hsm.generate_key("generated").await,
            Err(ProviderError::Misconfigured { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn token_errors_are_typed() {
    with_tokens("token_errors_are_typed", async |_| {
        let wrong_pin = Pkcs11Keys::open("hsm", &module(), "customer-a", "0000").await;
        assert!(
            matches!(wrong_pin, Err(ProviderError::AccessDenied { .. })),
            "{wrong_pin:?}"
        );
        // Not where the configuration says: a refusal, never an outage.
        let no_token = Pkcs11Keys::open("hsm", &module(), "no-such-token", PIN).await;
        assert!(
            matches!(no_token, Err(ProviderError::Misconfigured { .. })),
            "{no_token:?}"
        );
        let no_module = Pkcs11Keys::open(
            "hsm",
            std::path::Path::new("/nonexistent/module.so"),
            "x",
            PIN,
        )
        .await;
        assert!(
            matches!(no_module, Err(ProviderError::Misconfigured { .. })),
            "{no_module:?}"
        );

        let hsm = token("hsm-b", "customer-b").await;
        let key = hsm.generate_key("k").await.unwrap();
        let material = KeyMaterial::from_secret_bytes(&[1; 32]);
        let wrapped = hsm.wrap(&key, &material, &binding(b"aad")).await.unwrap();
        assert_eq!(wrapped.len(), 61);
        assert_eq!(
            hsm.unwrap(&key, &wrapped, &binding(b"aad"))
                .await
                .unwrap()
                .expose_secret(),
            &[1; 32]
        );
        let wrong_aad = hsm.unwrap(&key, &wrapped, &binding(b"aaD")).await;
        assert!(
            matches!(wrong_aad, Err(ProviderError::AuthenticationFailed { .. })),
            "{wrong_aad:?}"
        );
        let mut tampered = wrapped.clone();
        tampered[20] ^= 1;
        assert!(matches!(
            hsm.unwrap(&key, &tampered, &binding(b"aad")).await,
            Err(ProviderError::AuthenticationFailed { .. })
        ));
        assert!(matches!(
            hsm.unwrap(&key, &wrapped[1..], &binding(b"aad")).await,
            Err(ProviderError::AuthenticationFailed { .. })
        ));
        let missing = "hsm-b:missing".parse().unwrap();
        assert!(matches!(
            hsm.unwrap(&missing, &wrapped, &binding(b"aad")).await,
            Err(ProviderError::NotFound { .. })
        ));
        hsm.disable_key("k").await.unwrap();
        assert!(matches!(
            hsm.unwrap(&key, &wrapped, &binding(b"aad")).await,
            Err(ProviderError::AccessDenied { .. })
        ));
        assert!(format!("{hsm:?}").contains("customer-b"));
    })
    .await;
}

#[tokio::test]
async fn audit_checkpoints_signed_by_a_key_that_never_leaves_the_token() {
    use atrest_audit::{AuditLog, LogConfig, Record, Signer as _, Text, verify};

    with_tokens(
        "audit_checkpoints_signed_by_a_key_that_never_leaves_the_token",
        async |dir| {
            let hsm = token("audit-hsm", "customer-a").await;
            let signer = hsm.generate_checkpoint_signer("audit-2026").await.unwrap();
            let trusted = signer.verifying_key();
            // A second key pair under the same label is refused.
            assert!(matches!(
                hsm.generate_checkpoint_signer("audit-2026").await,
                Err(ProviderError::Misconfigured { .. })
            ));
            let log_dir = dir.join("audit");
            let log = AuditLog::create(&log_dir, signer, LogConfig::default()).unwrap();
            for i in 0..5u64 {
                log.append(&Record::new(
                    Text::new("svc").unwrap(),
                    Event::TenantPurged { tik_versions: i },
                ))
                .unwrap();
            }
            drop(log);
            let report = verify(&log_dir, &[], &trusted).unwrap();
            assert!(report.is_ok(), "{:?}", report.problem);
            assert_eq!(report.signed, Some(report.records - 1));

            // Reopened with the token's key found by its label.
            let again = hsm.checkpoint_signer("audit-2026").await.unwrap();
            assert_eq!(again.verifying_key(), trusted);
            let (log, _) = AuditLog::open(&log_dir, again, LogConfig::default()).unwrap();
            log.append(&Record::new(
                Text::new("svc").unwrap(),
                Event::TenantPurged { tik_versions: 9 },
            ))
            .unwrap();
            assert!(verify(&log_dir, &[], &trusted).unwrap().is_ok());

            // A label with no key pair.
            let missing = hsm.checkpoint_signer("no-such-key").await;
            assert!(
                matches!(missing, Err(ProviderError::NotFound { .. })),
                "{missing:?}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn tenant_keys_in_a_token_never_leave_it_and_a_purge_destroys_them_there() {
    with_tokens(
        "tenant_keys_in_a_token_never_leave_it_and_a_purge_destroys_them_there",
        async |dir| {
            // The deployment's token holds the master key and the tenant keys.
            let deployment_token = token("deployment", "service-master").await;
            deployment_token.generate_key("master").await.unwrap();
            let master = MasterKey::in_token(deployment_token.clone(), "master").unwrap();
            let service = service_keys("service", &dir.join("keys.sqlite"), master).await;
            service.create_key("root").await.unwrap();
            let db = dir.join("tenants.sqlite");
            let build = async || {
                KeyHierarchy::builder(
                    Arc::new(SqliteStore::open(&db).await.unwrap()),
                    deployment_token.clone(),
                    Arc::new(Collected::default()),
                )
                .provider(service.clone())
                .service_root_key("service", "root")
                .policy(common::policy())
                .cache_ttl(Duration::ZERO)
                .build()
                .unwrap()
            };
            let hierarchy = build().await;
            let [tenant, other] = [0; 2].map(|_| TenantId::random(&mut OsRng).unwrap());
            let mut files = Vec::new();
            for t in [tenant, other] {
                hierarchy.create_service_tenant(t).await.unwrap();
                let ctx = context(t);
                let (key, wrapped) = hierarchy.new_file_key(&USER, &ctx).await.unwrap();
                files.push((ctx, wrapped, *key.expose_secret()));
            }
            for (ctx, wrapped, key) in &files {
                let released = hierarchy
                    .release_file_key(&USER, ctx, wrapped)
                    .await
                    .unwrap();
                assert_eq!(released.expose_secret(), key);
            }

            // The tenant key is a token object that cannot be read out.
            let record = hierarchy.tenant(tenant).await.unwrap();
            let label = format!("atrest-tenant-{tenant}-{}", record.tik_id);
            let protection = deployment_token.protection(&label).await.unwrap();
            assert!(protection.sensitive && !protection.extractable);
            assert!(protection.always_sensitive && protection.never_extractable);
            assert!(!protection.value_readable);
            assert!(matches!(
                TenantKeyStore::create(&*deployment_token, tenant, record.tik_id).await,
                Err(Error::TenantExists(_))
            ));

            // Back up the database, purge, restore: the token's key is gone.
            let connection = rusqlite::Connection::open(&db).unwrap();
            let _: i64 = connection
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
                .unwrap();
            drop(connection);
            let backup = std::fs::read(&db).unwrap();
            hierarchy.purge(tenant).await.unwrap();
            drop(hierarchy);
            assert!(matches!(
                deployment_token.protection(&label).await,
                Err(ProviderError::NotFound { .. })
            ));
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
            std::fs::write(&db, backup).unwrap();
            let restored = build().await;
            let (ctx, wrapped, _) = &files[0];
            assert!(matches!(
                restored.release_file_key(&USER, ctx, wrapped).await,
                Err(Error::TenantKeyMissing(t)) if t == tenant
            ));
            let (ctx, wrapped, key) = &files[1];
            let released = restored
                .release_file_key(&USER, ctx, wrapped)
                .await
                .unwrap();
            assert_eq!(released.expose_secret(), key);
        },
    )
    .await;
}

fn binding(bytes: &[u8]) -> atrest_tenant::TikBinding {
    atrest_tenant::TikBinding::from_bytes(bytes.to_vec())
}

/// The customer changes the user PIN of both tokens: a service that opens
/// them with the PIN it was given is refused (never served through the
/// availability key), and the error says so.
#[tokio::test]
async fn a_pin_the_customer_changed_is_refused() {
    with_tokens("a_pin_the_customer_changed_is_refused", async |_| {
        use cryptoki::session::UserType;
        use cryptoki::types::AuthPin;
        let pkcs11 = cryptoki::context::Pkcs11::new(module()).unwrap();
        pkcs11
            .initialize(cryptoki::context::CInitializeArgs::new(
                cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
            ))
            .unwrap();
        for label in ["customer-a", "customer-b"] {
            let slot = pkcs11
                .get_slots_with_token()
                .unwrap()
                .into_iter()
                .find(|slot| pkcs11.get_token_info(*slot).unwrap().label() == label)
                .unwrap();
            let session = pkcs11.open_rw_session(slot).unwrap();
            let (old, new) = (
                AuthPin::from(PIN.to_owned()),
                AuthPin::from("8765".to_owned()),
            );
            session.login(UserType::User, Some(&old)).unwrap();
            session.set_pin(&old, &new).unwrap();
        }
        for label in ["customer-a", "customer-b"] {
            let opened = Pkcs11Keys::open("hsm", &module(), label, PIN).await;
            let Err(error) = opened else {
                panic!("{label} opened with the old PIN");
            };
            assert!(
                matches!(error, ProviderError::AccessDenied { .. }),
                "{error:?}"
            );
            assert!(!error.is_unavailable());
            assert_eq!(error.kind(), atrest_core::ErrorKind::Refused);
        }
        let opened = Pkcs11Keys::open("hsm", &module(), "customer-a", "8765").await;
        assert!(opened.is_ok(), "the new PIN opens the token");
    })
    .await;
}

/// The provider contract every root-key provider passes, against a
/// SoftHSM2 token, and against the service's own key store (sealed under a
/// master key file).
#[tokio::test]
async fn token_and_service_keys_pass_the_provider_contract() {
    with_tokens(
        "token_and_service_keys_pass_the_provider_contract",
        async |dir| {
            let hsm = token("hsm-contract", "customer-a").await;
            let keys = [
                hsm.generate_key("contract-a").await.unwrap(),
                hsm.generate_key("contract-b").await.unwrap(),
            ];
            let missing = atrest_tenant::RootKeyRef::new("hsm-contract", "no-such-key", 1).unwrap();
            atrest_test_support::provider_contract::check(hsm, keys, missing).await;

            let master = MasterKey::create_file(&dir.join("master.key")).unwrap();
            let service = service_keys("service", &dir.join("keys.sqlite"), master).await;
            let keys = [
                service.create_key("root").await.unwrap(),
                service.create_key("availability").await.unwrap(),
            ];
            let missing = atrest_tenant::RootKeyRef::new("service", "no-such-key", 1).unwrap();
            atrest_test_support::provider_contract::check(service, keys, missing).await;
        },
    )
    .await;
}
