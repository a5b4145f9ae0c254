//! The contract of the key metadata store ([`MetadataStore`]) and of the
//! catalog ([`Catalog`]), written once and run by every backend crate
//! (`atrest-sqlite`, `atrest-postgres`) against its own stores, as
//! `object_store` ships its integration suite:
//!
//! ```ignore
//! atrest_test_support::contract_suite!(|test: &str| MyBackend::new(test));
//! ```
//!
//! declares one test per item of the contract, each on a fresh
//! [`Backend`] made for it (a new database, or files in a new directory).

// Each item of the contract is a test: it panics where the store breaks
// the contract, and its name says what the contract is.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::missing_panics_doc,
    missing_docs
)]

mod catalog;
mod store;

use std::sync::Arc;

use atrest::Catalog;
use atrest_filekey::KeyVersion;
use atrest_tenant::{MetadataStore, RecordTag};

pub use self::catalog::{
    a_forgotten_tenant_leaves_no_record_and_frees_its_name, batches_are_all_or_nothing,
    commits_hold_to_their_precondition_and_keep_the_media_type,
    concurrent_batches_of_one_tenant_all_commit,
    concurrent_seals_of_one_name_get_distinct_versions,
    removed_versions_leave_listings_and_their_names_go_with_the_last,
    retirement_claims_race_attached_keys, rewraps_replace_only_unchanged_keys,
    seals_are_versions_visible_once_committed, tenant_names_are_unique_both_ways,
    version_numbers_are_never_given_twice,
};
pub use self::store::{
    changes_apply_only_from_the_tag_they_were_made_from,
    every_change_is_in_the_change_log_in_commit_order,
    fallback_policies_are_stored_with_the_record,
    of_concurrent_changes_from_one_state_exactly_one_wins, retire_and_purge_leave_no_wrap,
    root_key_rolls_replace_every_wrap_of_a_slot, tenants_are_stored_and_read_back,
    the_change_log_keeps_its_last_entries_and_says_when_it_lost_some,
};

/// The stores of one backend over one database: each call opens another
/// instance over it (another process of the service, with connections of
/// its own).
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// A key metadata store over the database.
    async fn store(&self) -> Arc<dyn MetadataStore>;

    /// A catalog over the database.
    async fn catalog(&self) -> Arc<dyn Catalog>;
}

/// Runs one contract test on a multi-threaded runtime of its own (the
/// concurrency tests race tasks on it).
pub fn run<F: Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

/// Declares the contract's tests, each on a backend `make(test_name)`
/// returns (an expression of a type that implements [`Backend`]).
#[macro_export]
macro_rules! contract_suite {
    ($make:expr) => {
        $crate::contract_suite!(@each $make;
            tenants_are_stored_and_read_back,
            changes_apply_only_from_the_tag_they_were_made_from,
            root_key_rolls_replace_every_wrap_of_a_slot,
            retire_and_purge_leave_no_wrap,
            of_concurrent_changes_from_one_state_exactly_one_wins,
            every_change_is_in_the_change_log_in_commit_order,
            fallback_policies_are_stored_with_the_record,
            the_change_log_keeps_its_last_entries_and_says_when_it_lost_some,
            tenant_names_are_unique_both_ways,
            seals_are_versions_visible_once_committed,
            batches_are_all_or_nothing,
            retirement_claims_race_attached_keys,
            rewraps_replace_only_unchanged_keys,
            concurrent_seals_of_one_name_get_distinct_versions,
            concurrent_batches_of_one_tenant_all_commit,
            commits_hold_to_their_precondition_and_keep_the_media_type,
            a_forgotten_tenant_leaves_no_record_and_frees_its_name,
            removed_versions_leave_listings_and_their_names_go_with_the_last,
            version_numbers_are_never_given_twice,
        );
    };
    (@each $make:expr; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                let backend = ($make)(stringify!($test));
                $crate::contract::run($crate::contract::$test(&backend));
            }
        )*
    };
}

fn version(n: u32) -> KeyVersion {
    KeyVersion::try_from(n).unwrap()
}

fn tag(byte: u8) -> RecordTag {
    RecordTag::from_slice(&[byte; 32]).unwrap()
}
