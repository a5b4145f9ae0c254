//! The master key file and the service key store: permissions, bad files,
//! wrong master keys, destroyed versions, and key types that never print
//! their bytes.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::os::unix::fs::PermissionsExt as _;

use atrest_tenant::{
    Error, KeyFileProblem, KeyMaterial, MasterKey, ProviderError, RootKeyProvider as _,
};
use common::{TempDir, service_keys};

#[tokio::test]
async fn the_master_key_file_is_private_and_checked() {
    let dir = TempDir::new("master");
    let path = dir.path().join("master.key");
    MasterKey::create_file(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never overwritten.
    assert!(matches!(
        MasterKey::create_file(&path),
        Err(Error::KeyFile {
            problem: KeyFileProblem::Io(_),
            ..
        })
    ));
    MasterKey::open_file(&path).unwrap();

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = MasterKey::open_file(&path).unwrap_err().to_string();
    assert!(
        refused.contains("644") && refused.contains("chmod 600"),
        "{refused}"
    );

    let other = dir.path().join("not-a-key");
    std::fs::write(&other, "hello\n").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let refused = MasterKey::open_file(&other).unwrap_err().to_string();
    assert!(refused.contains("not an atrest key file"), "{refused}");
    assert!(matches!(
        MasterKey::open_file(&dir.path().join("missing")),
        Err(Error::KeyFile {
            problem: KeyFileProblem::Io(_),
            ..
        })
    ));
}

#[tokio::test]
async fn root_keys_open_only_under_their_master_key() {
    let dir = TempDir::new("wrong-master");
    let db = dir.path().join("keys.sqlite");
    let material = KeyMaterial::from_secret_bytes(&[5; 32]);
    let (root, wrapped) = {
        let master = MasterKey::create_file(&dir.path().join("a.key")).unwrap();
        let keys = service_keys("service", &db, master).await;
        let root = keys.create_key("root").await.unwrap();
        assert!(matches!(
            keys.create_key("root").await,
            Err(Error::KeyExists(_))
        ));
        let wrapped = keys.wrap(&root, &material, &binding(b"aad")).await.unwrap();
        (root, wrapped)
    };
    // Reopened with the right master key: works.
    let keys = service_keys(
        "service",
        &db,
        MasterKey::open_file(&dir.path().join("a.key")).unwrap(),
    )
    .await;
    assert_eq!(
        keys.unwrap(&root, &wrapped, &binding(b"aad"))
            .await
            .unwrap()
            .expose_secret(),
        &[5; 32]
    );
    // With another master key, the root key does not open.
    let keys = service_keys(
        "service",
        &db,
        MasterKey::create_file(&dir.path().join("b.key")).unwrap(),
    )
    .await;
    assert!(matches!(
        keys.unwrap(&root, &wrapped, &binding(b"aad")).await,
        Err(ProviderError::AccessDenied { .. })
    ));

    // Versions: roll, destroy, and typed errors for each state.
    let keys = service_keys(
        "service",
        &db,
        MasterKey::open_file(&dir.path().join("a.key")).unwrap(),
    )
    .await;
    let v2 = keys.roll_key("root").await.unwrap();
    assert_eq!(keys.current_version("root").await.unwrap(), 2);
    keys.destroy_version(&root).await.unwrap();
    assert!(matches!(
        keys.unwrap(&root, &wrapped, &binding(b"aad")).await,
        Err(ProviderError::Destroyed { .. })
    ));
    assert_eq!(keys.current_version("root").await.unwrap(), 2);
    let wrapped_2 = keys.wrap(&v2, &material, &binding(b"aad")).await.unwrap();
    assert!(matches!(
        keys.unwrap(&v2, &wrapped_2, &binding(b"other")).await,
        Err(ProviderError::AuthenticationFailed { .. })
    ));
    let missing = "service:nothing@1".parse().unwrap();
    assert!(matches!(
        keys.unwrap(&missing, &wrapped_2, &binding(b"aad")).await,
        Err(ProviderError::NotFound { .. })
    ));
    assert!(matches!(
        keys.roll_key("nothing").await,
        Err(Error::RootKey(ProviderError::NotFound { .. }))
    ));
    assert_eq!(keys.keys().await.unwrap().len(), 2);
}

#[tokio::test]
async fn key_types_never_print_their_bytes() {
    let dir = TempDir::new("debug");
    let material = KeyMaterial::from_secret_bytes(&[0xAB; 32]);
    let master = MasterKey::create_file(&dir.path().join("m.key")).unwrap();
    let keys = service_keys("service", &dir.path().join("k.sqlite"), master).await;
    let root = keys.create_key("root").await.unwrap();
    let key_file = std::fs::read_to_string(dir.path().join("m.key")).unwrap();
    let master_hex = key_file.lines().nth(1).unwrap().to_owned();
    let printed = [
        format!("{material:?}"),
        format!("{keys:?}"),
        format!(
            "{:?}",
            MasterKey::open_file(&dir.path().join("m.key")).unwrap()
        ),
        format!("{root:?} {root}"),
    ];
    for text in printed {
        assert!(
            !text.contains("ab") && !text.contains("AB") && !text.contains("171"),
            "{text}"
        );
        assert!(!text.contains(&master_hex[..16]), "{text}");
    }
    // The key store holds root keys only sealed.
    drop(keys);
    let store = std::fs::read(dir.path().join("k.sqlite")).unwrap();
    let master_bytes = hex_bytes(&master_hex);
    assert!(!store.windows(16).any(|w| w == &master_bytes[..16]));
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn binding(bytes: &[u8]) -> atrest_tenant::TikBinding {
    atrest_tenant::TikBinding::from_bytes(bytes.to_vec())
}
