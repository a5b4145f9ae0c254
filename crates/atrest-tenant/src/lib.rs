#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod fault;
mod hierarchy;
pub mod pkcs11;
mod policy;
mod provider;
mod seal;
pub mod service;
pub mod store;
pub mod tenant_key;

pub use error::{Error, KeyFileProblem, ProviderError};
pub use hierarchy::{
    Builder, DEFAULT_CACHE_TTL, DEFAULT_CHANGE_POLL, FALLBACK_CACHE_TTL, KeyHierarchy, NewFileKey,
    PendingKeyRecords, RewrapProgress, RewrapReport, RootRollReport, TikCacheCounts,
};
pub use pkcs11::{KeyProtection, Pkcs11Keys, TokenCheckpointSigner};
pub use policy::{Access, Administration, Decision, DenyAll, ReleasePolicy, SystemCapability};
pub use provider::{
    KeyMaterial, MAX_NAME_LEN, RootKeyMaterial, RootKeyProvider, RootKeyRef, TikBinding,
};
pub use service::{MasterKey, SealedKey, SealedKeyStore, ServiceKeys};
pub use store::{
    CHANGE_LOG_KEPT, FallbackPolicy, KeyChanges, MetadataStore, OutageWindow, Rewrapped,
    RootKeySlot, SlotRole, StoredFallback, StoredSlot, StoredTenant, TagUpdate, TenantKind,
    TenantRecord, TenantState, TikWrap, WrappedKeyIndex,
};
pub use tenant_key::{
    DerivedKey, MetadataKey, RecordTag, TenantKeyDir, TenantKeyStore, TenantTag,
    record_keys_marker_id, version_key_id,
};
