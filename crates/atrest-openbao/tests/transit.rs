//! Against a real OpenBao server (`bao server -dev`, started by
//! `scripts/test`): TIKs wrapped by transit keys, for the service's root
//! key and for a customer's two keys, through the real key hierarchy;
//! rotation, revocation by the key owner, a server that is down or silent,
//! a token without `decrypt`, and revocation lag across two processes.
//!
//! Each test enables the transit engine at a mount of its own.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest_audit::{Event, Outcome};
use atrest_filekey::{FileContext, OsRng, TenantId, WrappedFileKey};
use atrest_openbao::{Credentials, TransitKeys};
use atrest_tenant::{Error, KeyHierarchy, KeyMaterial, ProviderError, RootKeyProvider, TikBinding};
use common::{Collected, Deployment, Server, TempDir, USER, context};

fn binding(bytes: &[u8]) -> TikBinding {
    TikBinding::from_bytes(bytes.to_vec())
}

/// Successful availability-key fallbacks made for a user request.
fn user_fallbacks(audit: &Collected) -> usize {
    audit.count(|event, outcome| {
        matches!(event, Event::AvailabilityKeyFallback { operation, .. }
            if operation.as_str().starts_with("user request"))
            && matches!(outcome, Outcome::Success)
    })
}

fn fallbacks(audit: &Collected) -> usize {
    audit.count(|event, _| matches!(event, Event::AvailabilityKeyFallback { .. }))
}

#[tokio::test]
async fn wraps_round_trip_and_refuse_another_binding_or_a_tampered_value() {
    let server = Server::from_env();
    let mount = server.transit_mount("round-trip");
    let kms = server.root_provider("kms", &mount);
    let key = kms.create_key("root").await.unwrap();
    assert_eq!(key.to_string(), "kms:root@1");
    assert_eq!(kms.current_version("root").await.unwrap(), 1);
    let info = kms.key_info("root").await.unwrap();
    assert_eq!(info.key_type, "aes256-gcm96");
    assert!(!info.exportable && !info.allow_plaintext_backup);
    assert!(matches!(
        kms.create_key("root").await,
        Err(ProviderError::Misconfigured { .. })
    ));

    let material = KeyMaterial::from_secret_bytes(&[7; 32]);
    let wrapped = kms
        .wrap(&key, &material, &binding(b"tenant 1"))
        .await
        .unwrap();
    assert!(wrapped.starts_with(b"vault:v1:"), "{wrapped:?}");
    let unwrapped = kms
        .unwrap(&key, &wrapped, &binding(b"tenant 1"))
        .await
        .unwrap();
    assert_eq!(unwrapped.expose_secret(), &[7; 32]);

    // Another binding, a flipped bit, a cut value, another version prefix.
    let other = kms.unwrap(&key, &wrapped, &binding(b"tenant 2")).await;
    assert!(
        matches!(other, Err(ProviderError::AuthenticationFailed { .. })),
        "{other:?}"
    );
    let prefix = b"vault:v1:".len();
    for at in [prefix, prefix + 10, wrapped.len() - 3] {
        let mut tampered = wrapped.clone();
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let result = kms.unwrap(&key, &tampered, &binding(b"tenant 1")).await;
        assert!(
            matches!(result, Err(ProviderError::AuthenticationFailed { .. })),
            "byte {at}: {result:?}"
        );
    }
    for bad in [
        wrapped[..wrapped.len() - 8].to_vec(),
        [b"vault:v2:", &wrapped[prefix..]].concat(),
        wrapped[prefix..].to_vec(),
    ] {
        let result = kms.unwrap(&key, &bad, &binding(b"tenant 1")).await;
        assert!(
            matches!(result, Err(ProviderError::AuthenticationFailed { .. })),
            "{result:?}"
        );
    }

    // A missing key is reported, never created by an encryption.
    let missing = kms.key_ref("missing", 1).unwrap();
    assert!(matches!(
        kms.wrap(&missing, &material, &binding(b"x")).await,
        Err(ProviderError::NotFound { .. })
    ));
    assert!(matches!(
        kms.key_info("missing").await,
        Err(ProviderError::NotFound { .. })
    ));
    assert!(matches!(
        kms.unwrap(&missing, b"vault:v1:AAAA", &binding(b"x")).await,
        Err(ProviderError::NotFound { .. })
    ));
    // A version that does not exist yet.
    let future = kms.key_ref("root", 2).unwrap();
    assert!(matches!(
        kms.wrap(&future, &material, &binding(b"x")).await,
        Err(ProviderError::NotFound { .. })
    ));
    // An exportable key (made by someone else) does not wrap.
    let _ = server.ok(
        "POST",
        &format!("{mount}/keys/exportable"),
        Some(serde_json::json!({"type": "aes256-gcm96", "exportable": true})),
    );
    let exportable = kms.key_ref("exportable", 1).unwrap();
    assert!(matches!(
        kms.wrap(&exportable, &material, &binding(b"x")).await,
        Err(ProviderError::Misconfigured { .. })
    ));

    // Made, used and dropped inside a task of this one-thread runtime: it
    // owns no runtime, so dropping it there neither blocks nor panics.
    let task = tokio::spawn({
        let (server, mount) = (server.clone(), mount.clone());
        async move {
            let inner = server.root_provider("kms", &mount);
            let provider: &dyn RootKeyProvider = &*inner;
            let material = provider
                .unwrap(&key, &wrapped, &binding(b"tenant 1"))
                .await
                .unwrap();
            drop(inner);
            material
        }
    });
    assert_eq!(task.await.unwrap().expose_secret(), &[7; 32]);

    // The token never shows.
    let debug = format!("{kms:?}");
    assert!(debug.contains("kms") && debug.contains(&mount), "{debug}");
    assert!(!debug.contains(&std::env::var(common::TOKEN_VAR).unwrap()));
}

#[tokio::test]
async fn the_service_root_key_in_transit_rotates_and_old_versions_retire() {
    let server = Server::from_env();
    let mount = server.transit_mount("service-root");
    let kms = server.root_provider("kms", &mount);
    let v1 = kms.create_key("service-root").await.unwrap();
    let dir = TempDir::new("openbao-service-root");
    let deployment = Deployment::open(dir.path()).await;
    let audit = Arc::new(Collected::default());
    let (hierarchy, _admin) = deployment.hierarchy(
        std::slice::from_ref(&kms),
        ("kms", "service-root"),
        Duration::from_secs(60),
        &audit,
    );

    let tenant = TenantId::random(&mut OsRng).unwrap();
    let record = hierarchy.create_service_tenant(tenant).await.unwrap();
    assert_eq!(record.slots[0].key, v1);
    let mut files = Vec::new();
    for _ in 0..3 {
        let ctx = context(tenant);
        let (key, wrapped) = hierarchy.new_file_key(&USER, &ctx).await.unwrap();
        files.push((ctx, wrapped, *key.expose_secret()));
    }
    let check = async |hierarchy: &KeyHierarchy| {
        hierarchy.flush_cache();
        for (ctx, wrapped, key) in &files {
            let released = hierarchy
                .release_file_key(&USER, ctx, wrapped)
                .await
                .unwrap();
            assert_eq!(released.expose_secret(), key);
        }
    };
    check(&hierarchy).await;
    // What version 1 wrapped, for the provider-level check below.
    let material = KeyMaterial::from_secret_bytes(&[3; 32]);
    let old_wrap = kms.wrap(&v1, &material, &binding(b"old")).await.unwrap();

    // Rotate in transit, then move every TIK wrap to the new version.
    let v2 = kms.rotate_key("service-root").await.unwrap();
    assert_eq!(v2.version(), 2);
    assert_eq!(kms.current_version("service-root").await.unwrap(), 2);
    let rolled = hierarchy.roll_root_key(&v1, &v2).await.unwrap();
    assert_eq!((rolled.tenants, rolled.tik_versions), (1, 1));
    assert_eq!(hierarchy.tenant(tenant).await.unwrap().slots[0].key, v2);
    check(&hierarchy).await;
    // New tenants use the new version.
    let other = TenantId::random(&mut OsRng).unwrap();
    assert_eq!(
        hierarchy.create_service_tenant(other).await.unwrap().slots[0].key,
        v2
    );

    // Version 1 still decrypts until the key owner retires it.
    assert!(kms.unwrap(&v1, &old_wrap, &binding(b"old")).await.is_ok());
    server.set_min_decryption_version(&mount, "service-root", 2);
    let retired = kms.unwrap(&v1, &old_wrap, &binding(b"old")).await;
    assert!(
        matches!(&retired, Err(ProviderError::AccessDenied { detail, .. })
            if detail.contains("retired by the key owner")),
        "{retired:?}"
    );
    // Version 1 no longer wraps either.
    assert!(matches!(
        kms.wrap(&v1, &material, &binding(b"old")).await,
        Err(ProviderError::NotFound { .. } | ProviderError::AccessDenied { .. })
    ));
    // The hierarchy moved on: nothing depends on version 1 any more.
    check(&hierarchy).await;
    assert_eq!(fallbacks(&audit), 0);
}

/// Two customer transit engines (each its own mount and key, a token
/// limited by the service policy) and the deployment's availability key.
struct CustomerWorld {
    server: Server,
    mounts: [String; 2],
    dir: TempDir,
    deployment: Deployment,
    audit: Arc<Collected>,
    hierarchy: KeyHierarchy,
    admin: atrest_tenant::Administration,
    tenant: TenantId,
}

impl CustomerWorld {
    async fn new(test: &str, ttl: Duration) -> Self {
        let server = Server::from_env();
        let dir = TempDir::new(&format!("openbao-{test}"));
        let mounts = [0, 1].map(|i| server.transit_mount(&format!("{test}-{i}")));
        let mut providers = Vec::new();
        for (i, mount) in mounts.iter().enumerate() {
            let admin = server.root_provider(&format!("contoso-{i}"), mount);
            let _ = admin.create_key("contoso").await.unwrap();
            let token =
                server.token_with_policy("atrest", &admin.service_policy(&["contoso"]).unwrap());
            let file = server.token_file(dir.path(), &format!("contoso-{i}"), &token);
            providers.push(server.provider(&format!("contoso-{i}"), mount, &file));
        }
        let deployment = Deployment::open(dir.path()).await;
        let audit = Arc::new(Collected::default());
        let (hierarchy, admin) = deployment.hierarchy(&providers, ("service", "root"), ttl, &audit);
        let tenant = TenantId::random(&mut OsRng).unwrap();
        let keys = [0, 1].map(|i| providers[i].key_ref("contoso", 1).unwrap());
        let _ = hierarchy
            .create_customer_key_tenant(tenant, keys)
            .await
            .unwrap();
        Self {
            server,
            mounts,
            dir,
            deployment,
            audit,
            hierarchy,
            admin,
            tenant,
        }
    }

    /// Another hierarchy over the same stores with other providers under
    /// the customers' provider names.
    fn with_providers(&self, providers: &[Arc<TransitKeys>]) -> (KeyHierarchy, Arc<Collected>) {
        let audit = Arc::new(Collected::default());
        let (hierarchy, _) = self.deployment.hierarchy(
            providers,
            ("service", "root"),
            Duration::from_secs(60),
            &audit,
        );
        (hierarchy, audit)
    }
}

#[tokio::test]
async fn customer_keys_in_transit_refusals_never_reach_the_availability_key() {
    let world = CustomerWorld::new("customer", Duration::from_secs(60)).await;
    let hierarchy = &world.hierarchy;
    let ctx = context(world.tenant);
    let (key, wrapped) = hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    let release = async || {
        hierarchy.flush_cache();
        hierarchy.release_file_key(&USER, &ctx, &wrapped).await
    };
    assert_eq!(
        release().await.unwrap().expose_secret(),
        key.expose_secret()
    );

    // Customer A retires the version the service uses: key B still answers.
    let _ = world.server.ok(
        "POST",
        &format!("{}/keys/contoso/rotate", world.mounts[0]),
        None,
    );
    world
        .server
        .set_min_decryption_version(&world.mounts[0], "contoso", 2);
    assert_eq!(
        release().await.unwrap().expose_secret(),
        key.expose_secret()
    );

    // Customer B deletes its key: both refuse, so the user is refused.
    world.server.delete_key(&world.mounts[1], "contoso");
    let refused = release().await;
    assert!(
        matches!(&refused, Err(Error::RootKey(ProviderError::AccessDenied { detail, .. }))
            if detail.contains("retired by the key owner")),
        "{refused:?}"
    );
    assert_eq!(fallbacks(&world.audit), 0);
    // Only a marked system operation may use the availability key, audited.
    let scan = world.admin.capability("scan");
    let system = atrest_tenant::Access::System(&scan);
    hierarchy.flush_cache();
    assert!(
        hierarchy
            .release_file_key(&system, &ctx, &wrapped)
            .await
            .is_ok()
    );
    assert_eq!(fallbacks(&world.audit), 1);
    // And that did not warm the cache for users.
    assert!(
        hierarchy
            .release_file_key(&USER, &ctx, &wrapped)
            .await
            .is_err()
    );
    assert_eq!(user_fallbacks(&world.audit), 0);
}

#[tokio::test]
async fn an_unreachable_or_silent_server_falls_back_to_the_availability_key() {
    let world = CustomerWorld::new("unreachable", Duration::from_secs(60)).await;
    let ctx = context(world.tenant);
    let (key, wrapped) = world.hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    let token_file = world.dir.path().join("contoso-0.token");

    // A closed port: connection refused.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    // A listener that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let provider = |name: &str, addr: std::net::SocketAddr, mount: &str| {
        Arc::new(
            TransitKeys::builder(
                name,
                &format!("http://{addr}"),
                mount,
                Credentials::FromFile(token_file.clone()),
            )
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_millis(800))
            .build()
            .unwrap(),
        )
    };
    let down = [
        provider("contoso-0", closed, &world.mounts[0]),
        provider("contoso-1", silent_addr, &world.mounts[1]),
    ];

    // Each provider alone: unavailable, the silent one after its timeout.
    let key_ref = down[1].key_ref("contoso", 1).unwrap();
    let started = Instant::now();
    let timed_out = down[1]
        .unwrap(&key_ref, b"vault:v1:AAAA", &binding(b"x"))
        .await;
    let waited = started.elapsed();
    assert!(
        matches!(&timed_out, Err(ProviderError::Unavailable { detail, .. }) if detail.contains("timed out")),
        "{timed_out:?}"
    );
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let refused = down[0].current_version("contoso").await;
    assert!(
        matches!(&refused, Err(ProviderError::Unavailable { detail, .. }) if detail.contains("connect")),
        "{refused:?}"
    );

    // Through the hierarchy: both unavailable, so the availability key
    // serves the user, and the fallback is audited.
    let (hierarchy, audit) = world.with_providers(&down);
    let released = hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    assert_eq!(released.expose_secret(), key.expose_secret());
    assert_eq!(user_fallbacks(&audit), 1);
    drop(silent);
}

#[tokio::test]
async fn a_token_whose_policy_lacks_decrypt_is_refused() {
    let world = CustomerWorld::new("no-decrypt", Duration::from_secs(60)).await;
    let ctx = context(world.tenant);
    let (_, wrapped) = world.hierarchy.new_file_key(&USER, &ctx).await.unwrap();

    // Both customers replace the service's token by one that may read and
    // encrypt, but not decrypt.
    let providers = [0, 1].map(|i| {
        let mount = &world.mounts[i];
        let policy = format!(
            "path \"{mount}/keys/contoso\" {{ capabilities = [\"read\"] }}\npath \"{mount}/encrypt/contoso\" {{ capabilities = [\"update\"] }}\n"
        );
        let token = world.server.token_with_policy("no-decrypt", &policy);
        let file = world
            .server
            .token_file(world.dir.path(), &format!("no-decrypt-{i}"), &token);
        world.server.provider(&format!("contoso-{i}"), mount, &file)
    });
    let key = providers[0].key_ref("contoso", 1).unwrap();
    let denied = providers[0]
        .unwrap(&key, b"vault:v1:AAAA", &binding(b"x"))
        .await;
    assert!(
        matches!(&denied, Err(ProviderError::AccessDenied { detail, .. }) if detail.contains("403")),
        "{denied:?}"
    );
    let (hierarchy, audit) = world.with_providers(&providers);
    let refused = hierarchy.release_file_key(&USER, &ctx, &wrapped).await;
    assert!(
        matches!(
            refused,
            Err(Error::RootKey(ProviderError::AccessDenied { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(fallbacks(&audit), 0);
}

#[tokio::test]
async fn credentials_come_from_the_environment_or_a_private_file() {
    let server = Server::from_env();
    let mount = server.transit_mount("credentials");
    let dir = TempDir::new("openbao-credentials");
    let build =
        |credentials| TransitKeys::builder("kms", &server.addr, &mount, credentials).build();

    let from_env = build(Credentials::FromEnv(common::TOKEN_VAR.into())).unwrap();
    let _ = from_env.create_key("k").await.unwrap();
    assert!(matches!(
        build(Credentials::FromEnv("ATREST_OPENBAO_UNSET_VARIABLE".into())),
        Err(ProviderError::Misconfigured { .. })
    ));

    // A token file others may read is refused; at 0600 it is used.
    let token = std::env::var(common::TOKEN_VAR).unwrap();
    let file = server.token_file(dir.path(), "root", &token);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = build(Credentials::FromFile(file.clone()));
    assert!(
        matches!(&open, Err(ProviderError::Misconfigured { detail, .. }) if detail.contains("chmod 600")),
        "{open:?}"
    );
    assert!(!format!("{open:?}").contains(&token));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let from_file = build(Credentials::FromFile(file.clone())).unwrap();
    assert_eq!(from_file.current_version("k").await.unwrap(), 1);

    // A wrong token is refused by the server; reloading a good one fixes it.
    std::fs::write(&file, "not-a-token\n").unwrap();
    from_file.reload_credentials().unwrap();
    let denied = from_file.current_version("k").await;
    assert!(
        matches!(denied, Err(ProviderError::AccessDenied { .. })),
        "{denied:?}"
    );
    std::fs::write(&file, format!("{token}\n")).unwrap();
    from_file.reload_credentials().unwrap();
    assert_eq!(from_file.current_version("k").await.unwrap(), 1);
    assert!(!format!("{from_file:?}").contains(&token));
}

const CHILD_DIR: &str = "ATREST_OPENBAO_CHILD_DIR";

/// Process B of the revocation-lag test: a fresh process on the same
/// deployment, with nothing cached.
async fn fresh_process_is_refused(dir: &std::path::Path) {
    let server = Server::from_env();
    let mounts: Vec<String> = std::fs::read_to_string(dir.join("mounts"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let providers: Vec<_> = (0..2)
        .map(|i| {
            let file = dir.join(format!("contoso-{i}.token"));
            server.provider(&format!("contoso-{i}"), &mounts[i], &file)
        })
        .collect();
    let deployment = Deployment::open(dir).await;
    let audit = Arc::new(Collected::default());
    let (hierarchy, _) = deployment.hierarchy(
        &providers,
        ("service", "root"),
        Duration::from_secs(60),
        &audit,
    );
    // The file the first process wrapped a key for, as it wrote it down.
    let file = std::fs::read_to_string(dir.join("file")).unwrap();
    let fields: Vec<&str> = file.split_whitespace().collect();
    let ctx = FileContext::new(
        fields[0].parse().unwrap(),
        fields[1].parse().unwrap(),
        fields[2].parse::<u64>().unwrap().try_into().unwrap(),
    );
    let wrapped = WrappedFileKey::from_bytes(&hex::decode(fields[3]).unwrap()).unwrap();
    let refused = hierarchy.release_file_key(&USER, &ctx, &wrapped).await;
    assert!(
        matches!(
            refused,
            Err(Error::RootKey(ProviderError::AccessDenied { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(fallbacks(&audit), 0);
}

#[tokio::test]
async fn revocation_lag_is_bounded_by_each_process_cache_ttl() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        fresh_process_is_refused(std::path::Path::new(&dir)).await;
        return;
    }
    let ttl = Duration::from_secs(2);
    let world = CustomerWorld::new("lag", ttl).await;
    std::fs::write(world.dir.path().join("mounts"), world.mounts.join("\n")).unwrap();
    let hierarchy = &world.hierarchy;
    let ctx = context(world.tenant);
    let (key, wrapped) = hierarchy.new_file_key(&USER, &ctx).await.unwrap();
    std::fs::write(
        world.dir.path().join("file"),
        format!(
            "{} {} {} {}",
            ctx.tenant,
            ctx.file,
            u64::from(ctx.version),
            hex::encode(wrapped.as_ref())
        ),
    )
    .unwrap();

    // Process A caches the tenant's TIK.
    hierarchy.flush_cache();
    let cached_at = Instant::now();
    assert!(
        hierarchy
            .release_file_key(&USER, &ctx, &wrapped)
            .await
            .is_ok()
    );

    // The customer revokes at OpenBao: both keys' version 1 retired.
    for mount in &world.mounts {
        let _ = world
            .server
            .ok("POST", &format!("{mount}/keys/contoso/rotate"), None);
        world.server.set_min_decryption_version(mount, "contoso", 2);
    }
    // A still serves from its cache.
    let served = hierarchy
        .release_file_key(&USER, &ctx, &wrapped)
        .await
        .unwrap();
    assert_eq!(served.expose_secret(), key.expose_secret());
    assert!(
        cached_at.elapsed() < ttl,
        "the test machine is too slow for a {ttl:?} TTL"
    );

    // A fresh process B is refused at once.
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "revocation_lag_is_bounded_by_each_process_cache_ttl",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, world.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "process B:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Once its TTL expired, A is refused too, never by the availability key.
    tokio::time::sleep(ttl.saturating_sub(cached_at.elapsed()) + Duration::from_millis(100)).await;
    let refused = hierarchy.release_file_key(&USER, &ctx, &wrapped).await;
    assert!(
        matches!(
            refused,
            Err(Error::RootKey(ProviderError::AccessDenied { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(fallbacks(&world.audit), 0);
}

/// Against the dev server over TLS that `scripts/test` starts (its private
/// CA in `ATREST_TEST_CA`, its certificate for localhost and 127.0.0.1):
/// with that CA the provider works; without it, with another CA, or under
/// a name its certificate does not hold, every call is refused — never an
/// outage that would let users through the availability key.
#[tokio::test]
async fn over_tls_a_certificate_or_name_that_does_not_verify_is_a_refusal() {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/test"))
    };
    let address = var("ATREST_OPENBAO_TLS_ADDR");
    let ca = std::fs::read(var("ATREST_TEST_CA")).unwrap();
    let mount = format!("transit-tls-{}", common::unique());
    let with = |address: &str, ca: Option<&[u8]>| {
        let mut builder = TransitKeys::builder(
            "kms",
            address,
            &mount,
            Credentials::FromEnv("ATREST_OPENBAO_TOKEN".into()),
        )
        .timeout(Duration::from_secs(5));
        if let Some(ca) = ca {
            builder = builder.ca_certificate_pem(ca);
        }
        builder.build().unwrap()
    };
    // The mount, made over TLS with the right CA.
    let trusted = with(&address, Some(&ca));
    let client = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
        .build()
        .unwrap();
    let made = client
        .post(format!("{address}/v1/sys/mounts/{mount}"))
        .header("X-Vault-Token", var("ATREST_OPENBAO_TOKEN"))
        .body(r#"{"type":"transit"}"#)
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{made:?}");
    let key = trusted.create_key("root").await.unwrap();
    let material = KeyMaterial::from_secret_bytes(&[7; 32]);
    let wrapped = trusted.wrap(&key, &material, &binding(b"t")).await.unwrap();
    let unwrapped = trusted
        .unwrap(&key, &wrapped, &binding(b"t"))
        .await
        .unwrap();
    assert_eq!(unwrapped.expose_secret(), &[7; 32]);

    // Another CA, made here.
    let dir = TempDir::new("openbao-tls");
    atrest_test_support::pki::make_ca(dir.path());
    let other_ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    // 127.0.0.2 reaches the same server, under an address its certificate
    // does not name.
    let port = address.rsplit(':').next().unwrap().to_owned();
    let proxy =
        atrest_test_support::proxy::Proxy::start_on("127.0.0.2", format!("127.0.0.1:{port}"));
    let renamed = format!("https://{}", proxy.addr());
    for (keys, what) in [
        (with(&address, None), "no CA"),
        (with(&address, Some(&other_ca)), "another CA"),
        (with(&renamed, Some(&ca)), "another name"),
    ] {
        let error = keys
            .unwrap(&key, &wrapped, &binding(b"t"))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ProviderError::AccessDenied { detail, .. } if detail.contains("authenticated")),
            "{what}: {error:?}"
        );
        assert!(!error.is_unavailable(), "{what}");
        let error = keys
            .wrap(&key, &material, &binding(b"t"))
            .await
            .unwrap_err();
        assert!(!error.is_unavailable(), "{what}: {error:?}");
    }
}

/// The provider contract every root-key provider passes.
#[tokio::test]
async fn transit_keys_pass_the_provider_contract() {
    let server = Server::from_env();
    let mount = server.transit_mount("contract");
    let kms = server.root_provider("kms", &mount);
    let keys = [
        kms.create_key("contract-a").await.unwrap(),
        kms.create_key("contract-b").await.unwrap(),
    ];
    let missing = kms.key_ref("no-such-key", 1).unwrap();
    atrest_test_support::provider_contract::check(kms, keys, missing).await;
}
