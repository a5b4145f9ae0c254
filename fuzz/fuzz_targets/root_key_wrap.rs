//! Untrusted inputs of the tenant key hierarchy: root-key references as
//! stored in the key store and typed by operators, and wrapped TIKs read
//! back from the store. A reference that parses must print back to itself;
//! no arbitrary bytes may unwrap under a service root key.
#![no_main]

use std::sync::OnceLock;

use atrest_sqlite::SqliteSealedKeys;
use atrest_tenant::{
    MasterKey, ProviderError, RootKeyProvider as _, RootKeyRef, ServiceKeys, TikBinding,
};

std::thread_local! {
    /// The runtime the target drives the async provider on.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
}

/// Runs `future` to its end on this thread's runtime.
fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|runtime| runtime.block_on(future))
}
use libfuzzer_sys::fuzz_target;

fn service() -> &'static (ServiceKeys, RootKeyRef) {
    static SERVICE: OnceLock<(ServiceKeys, RootKeyRef)> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let file =
            std::env::temp_dir().join(format!("atrest-fuzz-master-{}.key", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let master = MasterKey::create_file(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        let store = block_on(SqliteSealedKeys::open(std::path::Path::new(":memory:"))).unwrap();
        let keys = ServiceKeys::new("service", std::sync::Arc::new(store), master).unwrap();
        let root = block_on(keys.create_key("root")).unwrap();
        (keys, root)
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(key) = text.parse::<RootKeyRef>()
    {
        assert_eq!(key.to_string().parse::<RootKeyRef>().unwrap(), key);
    }
    let (keys, root) = service();
    let (aad, wrapped) = data.split_at(data.len().min(8));
    assert!(matches!(
        block_on(keys.unwrap(root, wrapped, &TikBinding::from_bytes(aad.to_vec()))),
        Err(ProviderError::AuthenticationFailed { .. })
    ));
});
