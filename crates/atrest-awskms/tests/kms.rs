//! Against the AWS KMS emulator `scripts/test` starts (moto's server,
//! plain and over TLS): the provider contract, keys in two regions, the
//! key owner's refusals (a disabled key, a key scheduled for deletion, a
//! wrong encryption context), outages (the emulator stopped or silent,
//! through a proxy the test controls), TLS, and the availability-key rule
//! through the real key hierarchy.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest_audit::{Event, Outcome};
use atrest_awskms::{AwsCredentials, AwsKmsKeys, ENCRYPTION_CONTEXT_KEY};
use atrest_filekey::{FileContext, FileId, FileVersion, OsRng, TenantId};
use atrest_sqlite::{SqliteSealedKeys, SqliteStore};
use atrest_tenant::{
    Access, Decision, Error, KeyHierarchy, KeyMaterial, MasterKey, ProviderError, RootKeyProvider,
    RootKeyRef, ServiceKeys, TenantKeyDir, TikBinding,
};
use atrest_test_support::TempDir;
use atrest_test_support::audit::Collected;
use atrest_test_support::kms_emulator::{self, ACCESS_KEY, Owner, endpoint, missing_arn};
use atrest_test_support::proxy::Proxy;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;

/// Credentials the emulator takes.
fn credentials() -> AwsCredentials {
    AwsCredentials::Provider(SharedCredentialsProvider::new(Credentials::new(
        ACCESS_KEY.0,
        ACCESS_KEY.1,
        None,
        None,
        "test",
    )))
}

/// A provider named `name` for the emulator at `endpoint`.
fn provider(name: &str, endpoint: &str) -> Arc<AwsKmsKeys> {
    Arc::new(
        AwsKmsKeys::builder(name, credentials())
            .endpoint(endpoint)
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
    )
}

/// The key owner's own client for `region` (what a customer does with
/// their own tools).
fn owner(region: &str) -> Owner {
    kms_emulator::owner(&endpoint(), region, None)
}

fn binding(bytes: &[u8]) -> TikBinding {
    TikBinding::from_bytes(bytes.to_vec())
}

#[tokio::test]
async fn kms_keys_pass_the_provider_contract() {
    let kms = provider("aws", &endpoint());
    let east = owner("us-east-1");
    let keys = [
        kms.key_ref(&east.create_key().await).unwrap(),
        kms.key_ref(&east.create_key().await).unwrap(),
    ];
    let missing = kms.key_ref(&missing_arn(keys[0].label())).unwrap();
    atrest_test_support::provider_contract::check(kms, keys, missing).await;
}

/// One provider serves a customer's two keys in two regions, each through
/// a client for its region; credentials from a private file sign as well.
#[tokio::test]
async fn one_provider_serves_keys_in_two_regions() {
    let dir = TempDir::new("awskms-regions");
    let file = credentials_file(dir.path());
    let kms = AwsKmsKeys::builder("contoso-aws", AwsCredentials::FromFile(file))
        .endpoint(&endpoint())
        .build()
        .unwrap();
    let east = owner("us-east-1").create_key().await;
    let west = owner("eu-west-1").create_key().await;
    assert!(east.contains(":us-east-1:") && west.contains(":eu-west-1:"));
    let material = KeyMaterial::generate().unwrap();
    for arn in [&east, &west] {
        let key = kms.key_ref(arn).unwrap();
        assert_eq!(key.to_string(), format!("contoso-aws:{arn}@1"));
        let wrapped = kms.wrap(&key, &material, &binding(b"t")).await.unwrap();
        let unwrapped = kms.unwrap(&key, &wrapped, &binding(b"t")).await.unwrap();
        assert_eq!(unwrapped.expose_secret(), material.expose_secret());
    }
    // A key ARN is looked up in its own region: the same key id under the
    // other region's ARN is another (missing) key.
    let moved = east.replace(":us-east-1:", ":eu-west-1:");
    let key = kms.key_ref(&moved).unwrap();
    assert!(matches!(
        kms.wrap(&key, &material, &binding(b"t")).await,
        Err(ProviderError::NotFound { .. })
    ));
}

fn credentials_file(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join("aws-credentials");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(
        &mut file,
        b"[default]\naws_access_key_id = AKIDFROMFILE\naws_secret_access_key = from-file-secret\n",
    )
    .unwrap();
    path
}

/// The key owner disables the key, then schedules its deletion: each is a
/// refusal for every call, never an outage, and undoing it restores use.
#[tokio::test]
async fn a_disabled_key_or_one_scheduled_for_deletion_is_refused() {
    let kms = provider("aws", &endpoint());
    let owner = owner("us-east-1");
    let arn = owner.create_key().await;
    let key = kms.key_ref(&arn).unwrap();
    let material = KeyMaterial::generate().unwrap();
    let wrapped = kms.wrap(&key, &material, &binding(b"t")).await.unwrap();

    let all_refused = async |why: &str| {
        let outcomes = [
            kms.current_version(&arn).await.map(|_| ()),
            kms.wrap(&key, &material, &binding(b"t")).await.map(|_| ()),
            kms.unwrap(&key, &wrapped, &binding(b"t")).await.map(|_| ()),
        ];
        for outcome in outcomes {
            assert!(
                matches!(&outcome, Err(ProviderError::AccessDenied { detail, .. }) if detail.contains(why)),
                "{why}: {outcome:?}"
            );
        }
    };

    owner.disable(&arn).await;
    all_refused("disabled").await;
    owner.enable(&arn).await;
    assert!(kms.unwrap(&key, &wrapped, &binding(b"t")).await.is_ok());

    owner.schedule_deletion(&arn).await;
    all_refused("scheduled for deletion").await;
    owner.cancel_deletion(&arn).await;
    // Cancelling leaves the key disabled, as KMS does; the owner enables it.
    owner.enable(&arn).await;
    let unwrapped = kms.unwrap(&key, &wrapped, &binding(b"t")).await.unwrap();
    assert_eq!(unwrapped.expose_secret(), material.expose_secret());
}

/// A wrap is bound to its TIK binding through the encryption context: the
/// owner's own `Decrypt` without it, or with another, fails, and so does
/// the provider's with another binding.
#[tokio::test]
async fn the_binding_is_the_encryption_context() {
    let kms = provider("aws", &endpoint());
    let owner = owner("us-east-1");
    let arn = owner.create_key().await;
    let key = kms.key_ref(&arn).unwrap();
    let material = KeyMaterial::generate().unwrap();
    let wrapped = kms
        .wrap(&key, &material, &binding(b"tenant-a"))
        .await
        .unwrap();
    let wrong = kms.unwrap(&key, &wrapped, &binding(b"tenant-b")).await;
    assert!(
        matches!(wrong, Err(ProviderError::AuthenticationFailed { .. })),
        "{wrong:?}"
    );
    let blob = aws_sdk_kms::primitives::Blob::new(wrapped.clone());
    let without = owner.0.decrypt().ciphertext_blob(blob.clone()).send().await;
    assert_eq!(
        aws_sdk_kms::error::ProvideErrorMetadata::code(&without.unwrap_err()),
        Some("InvalidCiphertextException")
    );
    // With the context the provider sends, the owner decrypts it too.
    let with = owner
        .0
        .decrypt()
        .ciphertext_blob(blob)
        .encryption_context(ENCRYPTION_CONTEXT_KEY, "dGVuYW50LWE")
        .send()
        .await
        .unwrap();
    assert_eq!(
        with.plaintext().unwrap().as_ref(),
        material.expose_secret().as_slice()
    );
}

/// Through a proxy the test controls: connections reset, then accepted
/// and never answered. Both are outages, the silent one after the timeout.
#[tokio::test]
async fn a_stopped_or_silent_emulator_is_an_outage() {
    let owner = owner("us-east-1");
    let arn = owner.create_key().await;
    let target = endpoint().trim_start_matches("http://").to_owned();
    let proxy = Proxy::start(target.as_str());
    let kms = provider("aws", &format!("http://{}", proxy.addr()));
    let key = kms.key_ref(&arn).unwrap();
    let material = KeyMaterial::generate().unwrap();
    let wrapped = kms.wrap(&key, &material, &binding(b"t")).await.unwrap();

    proxy.cut();
    let cut = kms.unwrap(&key, &wrapped, &binding(b"t")).await;
    assert!(
        matches!(&cut, Err(ProviderError::Unavailable { .. })),
        "{cut:?}"
    );
    proxy.blackhole();
    let started = Instant::now();
    let silent = kms.unwrap(&key, &wrapped, &binding(b"t")).await;
    let waited = started.elapsed();
    assert!(
        matches!(&silent, Err(ProviderError::Unavailable { .. })),
        "{silent:?}"
    );
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    proxy.restore();
    let unwrapped = kms.unwrap(&key, &wrapped, &binding(b"t")).await.unwrap();
    assert_eq!(unwrapped.expose_secret(), material.expose_secret());
}

/// Over TLS (the emulator with the certificate of `scripts/test`'s private
/// CA): with that CA it works; without it, or under a name the certificate
/// does not hold, every call is refused, never an outage.
#[tokio::test]
async fn over_tls_a_certificate_or_name_that_does_not_verify_is_a_refusal() {
    let address = kms_emulator::tls_endpoint();
    let ca =
        std::fs::read(std::env::var("ATREST_TEST_CA").expect("ATREST_TEST_CA: run scripts/test"))
            .unwrap();
    let with = |address: &str, ca: Option<&[u8]>| {
        let mut builder = AwsKmsKeys::builder("aws", credentials())
            .endpoint(address)
            .timeout(Duration::from_secs(3));
        if let Some(ca) = ca {
            builder = builder.ca_certificate_pem(ca);
        }
        builder.build().unwrap()
    };
    // The key, made on the TLS emulator by the owner's client trusting the CA.
    let trusted = with(&address, Some(&ca));
    let owner = kms_emulator::owner(&address, "us-east-1", Some(&ca));
    let arn = owner.create_key().await;
    let key = trusted.key_ref(&arn).unwrap();
    let material = KeyMaterial::generate().unwrap();
    let wrapped = trusted.wrap(&key, &material, &binding(b"t")).await.unwrap();
    let unwrapped = trusted
        .unwrap(&key, &wrapped, &binding(b"t"))
        .await
        .unwrap();
    assert_eq!(unwrapped.expose_secret(), material.expose_secret());

    let port = address.rsplit(':').next().unwrap().to_owned();
    let proxy = Proxy::start_on("127.0.0.2", format!("127.0.0.1:{port}"));
    let renamed = format!("https://{}", proxy.addr());
    for (keys, what) in [
        (with(&address, None), "no CA"),
        (with(&renamed, Some(&ca)), "another name"),
    ] {
        for outcome in [
            keys.unwrap(&key, &wrapped, &binding(b"t"))
                .await
                .map(|_| ()),
            keys.wrap(&key, &material, &binding(b"t")).await.map(|_| ()),
        ] {
            assert!(
                matches!(&outcome, Err(ProviderError::AccessDenied { detail, .. }) if detail.contains("authenticated")),
                "{what}: {outcome:?}"
            );
        }
    }
}

/// The stores of a deployment in `dir` and a hierarchy over them: the
/// service's own key store holds the availability key; `providers` are
/// registered, and `service_root` names the service root key.
async fn hierarchy(
    dir: &Path,
    providers: &[Arc<AwsKmsKeys>],
    service_root: (&str, &str),
    audit: &Arc<Collected>,
) -> (KeyHierarchy, atrest_tenant::Administration) {
    let key_file = dir.join("master.key");
    let master = if key_file.exists() {
        MasterKey::open_file(&key_file).unwrap()
    } else {
        MasterKey::create_file(&key_file).unwrap()
    };
    let tenant_keys =
        Arc::new(TenantKeyDir::open(&dir.join("tenant-keys"), master.clone()).unwrap());
    let sealed = SqliteSealedKeys::open(&dir.join("keys.sqlite"))
        .await
        .unwrap();
    let service = Arc::new(ServiceKeys::new("service", Arc::new(sealed), master).unwrap());
    if service.keys().await.unwrap().is_empty() {
        service.create_key("availability").await.unwrap();
    }
    let store = Arc::new(
        SqliteStore::open(&dir.join("tenants.sqlite"))
            .await
            .unwrap(),
    );
    let mut builder = KeyHierarchy::builder(store, tenant_keys, audit.clone())
        .provider(service as Arc<dyn RootKeyProvider>);
    for provider in providers {
        builder = builder.provider(provider.clone() as Arc<dyn RootKeyProvider>);
    }
    builder
        .service_root_key(service_root.0, service_root.1)
        .availability_key("service", "availability")
        .policy(Arc::new(
            |access: &Access<'_>, _: TenantId, _: FileId| match access {
                Access::User { .. } | Access::System { .. } => Decision::Allow,
            },
        ))
        .cache_ttl(Duration::from_secs(60))
        .build_with_administration()
        .unwrap()
}

fn context(tenant: TenantId) -> FileContext {
    FileContext::new(
        tenant,
        FileId::random(&mut OsRng).unwrap(),
        FileVersion::FIRST,
    )
}

const USER: Access<'static> = Access::User {
    principal: "reader@contoso",
};

/// Successful availability-key fallbacks made for a user request.
fn user_fallbacks(audit: &Collected) -> usize {
    audit.count(|event, outcome| {
        matches!(event, Event::AvailabilityKeyFallback { operation, .. }
            if operation.as_str().starts_with("user request"))
            && matches!(outcome, Outcome::Success)
    })
}

/// A customer-key tenant whose two keys are in AWS KMS in two regions,
/// through the real hierarchy: a refusal by the owner (a key disabled, the
/// other scheduled for deletion) never reaches the availability key; the
/// emulator stopped (both keys unavailable) does, audited.
#[tokio::test]
async fn customer_keys_in_two_regions_use_the_availability_key_only_in_an_outage() {
    let dir = TempDir::new("awskms-hierarchy");
    let target = endpoint().trim_start_matches("http://").to_owned();
    let proxy = Proxy::start(target.as_str());
    let kms = provider("contoso-aws", &format!("http://{}", proxy.addr()));
    let owners = [owner("us-east-1"), owner("eu-west-1")];
    let keys = [
        kms.key_ref(&owners[0].create_key().await).unwrap(),
        kms.key_ref(&owners[1].create_key().await).unwrap(),
    ];
    let audit = Arc::new(Collected::default());
    // A throwaway service root key: customer-key tenants do not use it.
    let service_root_owner = owner("us-east-1");
    let service_root = service_root_owner.create_key().await;
    let (keys_hierarchy, _) = hierarchy(
        dir.path(),
        std::slice::from_ref(&kms),
        ("contoso-aws", &service_root),
        &audit,
    )
    .await;
    let tenant = TenantId::random(&mut OsRng).unwrap();
    keys_hierarchy
        .create_customer_key_tenant(tenant, keys.clone())
        .await
        .unwrap();
    let ctx = context(tenant);
    let (key, wrapped) = keys_hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    let release = async || {
        keys_hierarchy.flush_cache();
        keys_hierarchy.release_file_key(&USER, &ctx, &wrapped).await
    };
    assert_eq!(
        release().await.unwrap().expose_secret(),
        key.expose_secret()
    );

    // The emulator stopped: both keys unavailable, the availability key
    // serves the user, audited.
    proxy.cut();
    assert_eq!(
        release().await.unwrap().expose_secret(),
        key.expose_secret()
    );
    assert_eq!(user_fallbacks(&audit), 1);
    proxy.restore();

    // The owner disables one key: the other serves.
    owners[0].disable(keys[0].label()).await;
    assert_eq!(
        release().await.unwrap().expose_secret(),
        key.expose_secret()
    );
    // And schedules the other's deletion: refused, never the availability key.
    owners[1].schedule_deletion(keys[1].label()).await;
    let refused = release().await;
    assert!(
        matches!(
            &refused,
            Err(Error::RootKey(ProviderError::AccessDenied { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(user_fallbacks(&audit), 1);
}

/// The service root key in AWS KMS: service-managed tenants' TIKs are
/// wrapped by it, and survive a fresh hierarchy (another process).
#[tokio::test]
async fn the_service_root_key_in_kms() {
    let dir = TempDir::new("awskms-service-root");
    let kms = provider("aws", &endpoint());
    let arn = owner("eu-central-1").create_key().await;
    let audit = Arc::new(Collected::default());
    let (first, _) = hierarchy(
        dir.path(),
        std::slice::from_ref(&kms),
        ("aws", &arn),
        &audit,
    )
    .await;
    let tenant = TenantId::random(&mut OsRng).unwrap();
    first.create_service_tenant(tenant).await.unwrap();
    let ctx = context(tenant);
    let (key, wrapped) = first.new_file_key(&USER, &ctx).await.unwrap();
    drop(first);
    let (second, _) = hierarchy(dir.path(), &[kms], ("aws", &arn), &audit).await;
    let released = second
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    assert_eq!(released.expose_secret(), key.expose_secret());
    let _: RootKeyRef = RootKeyRef::new("aws", &arn, 1).unwrap();
}
