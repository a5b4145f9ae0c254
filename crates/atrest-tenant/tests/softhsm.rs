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
    Collected, FileKeys, PIN, USER, block_on, context, module, service_keys, system, token,
    with_tokens,
};

#[test]
fn customer_key_tenant_end_to_end() {
    with_tokens("customer_key_tenant_end_to_end", |dir| {
        let hsm_a = token("hsm-a", "customer-a");
        let hsm_b = token("hsm-b", "customer-b");
        let key_a = block_on(hsm_a.generate_key("tenant-key-1")).unwrap();
        let key_b = block_on(hsm_b.generate_key("tenant-key-1")).unwrap();

        // The service's root keys, sealed under a master key in a token.
        let master_token = token("service-master-token", "service-master");
        block_on(master_token.generate_key("master")).unwrap();
        let master = MasterKey::in_token(master_token, "master").unwrap();
        let tenant_keys =
            Arc::new(TenantKeyDir::open(&dir.join("tenant-keys"), master.clone()).unwrap());
        let service = service_keys("service", &dir.join("keys.sqlite"), master);
        block_on(service.create_key("root")).unwrap();
        block_on(service.create_key("availability")).unwrap();

        let store = Arc::new(block_on(SqliteStore::open(&dir.join("tenants.sqlite"))).unwrap());
        let file_keys = FileKeys::open(&dir.join("catalog.sqlite"));
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
        block_on(hierarchy.create_customer_key_tenant(tenant, [key_a.clone(), key_b.clone()]))
            .unwrap();
        let service_tenant = TenantId::random(&mut OsRng).unwrap();
        block_on(hierarchy.create_service_tenant(service_tenant)).unwrap();

        // Wrap and release, through the tokens (cache flushed) and the cache.
        let mut files = Vec::new();
        for t in [tenant, service_tenant] {
            for _ in 0..5 {
                let (ctx, key, _) = file_keys.new_file(&hierarchy, &USER, t);
                files.push((ctx, *key.expose_secret()));
            }
        }
        let check_all = |hierarchy: &KeyHierarchy| {
            hierarchy.flush_cache();
            for (ctx, key) in &files {
                let wrapped = file_keys.wrapped(ctx);
                assert_eq!(
                    block_on(hierarchy.release_file_key(&USER, ctx, &wrapped))
                        .unwrap()
                        .expose_secret(),
                    key
                );
            }
        };
        check_all(&hierarchy);

        // Rotate: the TIK (with re-wrap), then customer key A to a new key.
        block_on(hierarchy.roll_tik(tenant)).unwrap();
        let report =
            block_on(hierarchy.rewrap_file_keys(tenant, file_keys.index(), 2, &mut |_| {}))
                .unwrap();
        assert_eq!(report.rewrapped, 5);
        let key_a2 = block_on(hsm_a.generate_key("tenant-key-2")).unwrap();
        let rolled = block_on(hierarchy.roll_root_key(&key_a, &key_a2)).unwrap();
        assert_eq!((rolled.tenants, rolled.tik_versions), (1, 2));
        block_on(hsm_a.destroy_key("tenant-key-1")).unwrap();
        check_all(&hierarchy);
        // The service root key too (sealed under the token master key).
        let root_2 = block_on(service.roll_key("root")).unwrap();
        block_on(hierarchy.roll_root_key(&"service:root@1".parse().unwrap(), &root_2)).unwrap();
        check_all(&hierarchy);

        // Revoke: the customer disables key B and destroys key A.
        block_on(hsm_b.disable_key("tenant-key-1")).unwrap();
        hierarchy.flush_cache();
        let (ctx, _) = &files[0];
        let wrapped = file_keys.wrapped(ctx);
        block_on(hierarchy.release_file_key(&USER, ctx, &wrapped)).unwrap(); // key A2 still answers
        block_on(hsm_a.destroy_key("tenant-key-2")).unwrap();
        hierarchy.flush_cache();
        let refused = block_on(hierarchy.release_file_key(&USER, ctx, &wrapped));
        assert!(
            matches!(
                refused,
                Err(Error::RootKey(ProviderError::AccessDenied { .. }))
            ),
            "{refused:?}"
        );
        // A marked system operation may still use the availability key.
        block_on(hierarchy.release_file_key(&system(&scan), ctx, &wrapped)).unwrap();
        block_on(hierarchy.revoke_customer_key(tenant, &key_a2)).unwrap();
        block_on(hierarchy.revoke_customer_key(tenant, &key_b)).unwrap();
        assert!(matches!(
            block_on(hierarchy.release_file_key(&USER, ctx, &wrapped)),
            Err(Error::Revoked(_))
        ));

        // Purge: nothing recovers any key of the tenant any more.
        assert_eq!(block_on(hierarchy.purge(tenant)).unwrap(), 2);
        for (ctx, _) in files.iter().filter(|(c, _)| c.tenant == tenant) {
            let wrapped = file_keys.wrapped(ctx);
            for access in [USER, system(&scan)] {
                assert!(matches!(
                    block_on(hierarchy.release_file_key(&access, ctx, &wrapped)),
                    Err(Error::Purged(_))
                ));
            }
        }
        // The service-managed tenant is unaffected.
        for (ctx, key) in files.iter().filter(|(c, _)| c.tenant == service_tenant) {
            let wrapped = file_keys.wrapped(ctx);
            assert_eq!(
                block_on(hierarchy.release_file_key(&USER, ctx, &wrapped))
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
    });
}

#[test]
fn token_keys_cannot_be_extracted() {
    with_tokens("token_keys_cannot_be_extracted", |_| {
        let hsm = token("hsm-a", "customer-a");
        block_on(hsm.generate_key("generated")).unwrap();
        block_on(hsm.import_key(
            "imported",
            &atrest_tenant::RootKeyMaterial::from_secret_bytes(&[9; 32]),
        ))
        .unwrap();
        for label in ["generated", "imported"] {
            let protection = block_on(hsm.protection(label)).unwrap();
            assert!(protection.sensitive, "{label}: {protection:?}");
            assert!(!protection.extractable, "{label}: {protection:?}");
            assert!(!protection.value_readable, "{label}: {protection:?}");
        }
        // Generated inside the token, it was never anywhere else.
        let generated = block_on(hsm.protection("generated")).unwrap();
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
                block_on(hsm.allowed_mechanisms(label)).unwrap(),
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
            block_on(hsm.generate_key("generated")),
            Err(ProviderError::Misconfigured { .. })
        ));
    });
}

#[test]
fn token_errors_are_typed() {
    with_tokens("token_errors_are_typed", |_| {
        let wrong_pin = block_on(Pkcs11Keys::open("hsm", &module(), "customer-a", "0000"));
        assert!(
            matches!(wrong_pin, Err(ProviderError::AccessDenied { .. })),
            "{wrong_pin:?}"
        );
        let no_token = block_on(Pkcs11Keys::open("hsm", &module(), "no-such-token", PIN));
        assert!(
            matches!(no_token, Err(ProviderError::Unavailable { .. })),
            "{no_token:?}"
        );
        let no_module = block_on(Pkcs11Keys::open(
            "hsm",
            std::path::Path::new("/nonexistent/module.so"),
            "x",
            PIN,
        ));
        assert!(
            matches!(no_module, Err(ProviderError::Misconfigured { .. })),
            "{no_module:?}"
        );

        let hsm = token("hsm-b", "customer-b");
        let key = block_on(hsm.generate_key("k")).unwrap();
        let material = KeyMaterial::from_secret_bytes(&[1; 32]);
        let wrapped = block_on(hsm.wrap(&key, &material, &binding(b"aad"))).unwrap();
        assert_eq!(wrapped.len(), 61);
        assert_eq!(
            block_on(hsm.unwrap(&key, &wrapped, &binding(b"aad")))
                .unwrap()
                .expose_secret(),
            &[1; 32]
        );
        let wrong_aad = block_on(hsm.unwrap(&key, &wrapped, &binding(b"aaD")));
        assert!(
            matches!(wrong_aad, Err(ProviderError::AuthenticationFailed { .. })),
            "{wrong_aad:?}"
        );
        let mut tampered = wrapped.clone();
        tampered[20] ^= 1;
        assert!(matches!(
            block_on(hsm.unwrap(&key, &tampered, &binding(b"aad"))),
            Err(ProviderError::AuthenticationFailed { .. })
        ));
        assert!(matches!(
            block_on(hsm.unwrap(&key, &wrapped[1..], &binding(b"aad"))),
            Err(ProviderError::AuthenticationFailed { .. })
        ));
        let missing = "hsm-b:missing".parse().unwrap();
        assert!(matches!(
            block_on(hsm.unwrap(&missing, &wrapped, &binding(b"aad"))),
            Err(ProviderError::NotFound { .. })
        ));
        block_on(hsm.disable_key("k")).unwrap();
        assert!(matches!(
            block_on(hsm.unwrap(&key, &wrapped, &binding(b"aad"))),
            Err(ProviderError::AccessDenied { .. })
        ));
        assert!(format!("{hsm:?}").contains("customer-b"));
    });
}

#[test]
fn audit_checkpoints_signed_by_a_key_that_never_leaves_the_token() {
    use atrest_audit::{AuditLog, LogConfig, Record, Signer as _, Text, verify};

    with_tokens(
        "audit_checkpoints_signed_by_a_key_that_never_leaves_the_token",
        |dir| {
            let hsm = token("audit-hsm", "customer-a");
            let signer = block_on(hsm.generate_checkpoint_signer("audit-2026")).unwrap();
            let trusted = signer.verifying_key();
            // A second key pair under the same label is refused.
            assert!(matches!(
                block_on(hsm.generate_checkpoint_signer("audit-2026")),
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
            let again = block_on(hsm.checkpoint_signer("audit-2026")).unwrap();
            assert_eq!(again.verifying_key(), trusted);
            let (log, _) = AuditLog::open(&log_dir, again, LogConfig::default()).unwrap();
            log.append(&Record::new(
                Text::new("svc").unwrap(),
                Event::TenantPurged { tik_versions: 9 },
            ))
            .unwrap();
            assert!(verify(&log_dir, &[], &trusted).unwrap().is_ok());

            // A label with no key pair.
            let missing = block_on(hsm.checkpoint_signer("no-such-key"));
            assert!(
                matches!(missing, Err(ProviderError::NotFound { .. })),
                "{missing:?}"
            );
        },
    );
}

#[test]
fn tenant_keys_in_a_token_never_leave_it_and_a_purge_destroys_them_there() {
    with_tokens(
        "tenant_keys_in_a_token_never_leave_it_and_a_purge_destroys_them_there",
        |dir| {
            // The deployment's token holds the master key and the tenant keys.
            let deployment_token = token("deployment", "service-master");
            block_on(deployment_token.generate_key("master")).unwrap();
            let master = MasterKey::in_token(deployment_token.clone(), "master").unwrap();
            let service = service_keys("service", &dir.join("keys.sqlite"), master);
            block_on(service.create_key("root")).unwrap();
            let db = dir.join("tenants.sqlite");
            let build = || {
                KeyHierarchy::builder(
                    Arc::new(block_on(SqliteStore::open(&db)).unwrap()),
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
            let hierarchy = build();
            let [tenant, other] = [0; 2].map(|_| TenantId::random(&mut OsRng).unwrap());
            let files: Vec<_> = [tenant, other]
                .into_iter()
                .map(|t| {
                    block_on(hierarchy.create_service_tenant(t)).unwrap();
                    let ctx = context(t);
                    let (key, wrapped) = block_on(hierarchy.new_file_key(&USER, &ctx)).unwrap();
                    (ctx, wrapped, *key.expose_secret())
                })
                .collect();
            for (ctx, wrapped, key) in &files {
                let released = block_on(hierarchy.release_file_key(&USER, ctx, wrapped)).unwrap();
                assert_eq!(released.expose_secret(), key);
            }

            // The tenant key is a token object that cannot be read out.
            let record = block_on(hierarchy.tenant(tenant)).unwrap();
            let label = format!("atrest-tenant-{tenant}-{}", record.tik_id);
            let protection = block_on(deployment_token.protection(&label)).unwrap();
            assert!(protection.sensitive && !protection.extractable);
            assert!(protection.always_sensitive && protection.never_extractable);
            assert!(!protection.value_readable);
            assert!(matches!(
                block_on(TenantKeyStore::create(
                    &*deployment_token,
                    tenant,
                    record.tik_id
                )),
                Err(Error::TenantExists(_))
            ));

            // Back up the database, purge, restore: the token's key is gone.
            let connection = rusqlite::Connection::open(&db).unwrap();
            let _: i64 = connection
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
                .unwrap();
            drop(connection);
            let backup = std::fs::read(&db).unwrap();
            block_on(hierarchy.purge(tenant)).unwrap();
            drop(hierarchy);
            assert!(matches!(
                block_on(deployment_token.protection(&label)),
                Err(ProviderError::NotFound { .. })
            ));
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
            std::fs::write(&db, backup).unwrap();
            let restored = build();
            let (ctx, wrapped, _) = &files[0];
            assert!(matches!(
                block_on(restored.release_file_key(&USER, ctx, wrapped)),
                Err(Error::TenantKeyMissing(t)) if t == tenant
            ));
            let (ctx, wrapped, key) = &files[1];
            let released = block_on(restored.release_file_key(&USER, ctx, wrapped)).unwrap();
            assert_eq!(released.expose_secret(), key);
        },
    );
}

fn binding(bytes: &[u8]) -> atrest_tenant::TikBinding {
    atrest_tenant::TikBinding::from_bytes(bytes.to_vec())
}
