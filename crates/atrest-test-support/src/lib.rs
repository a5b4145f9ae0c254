//! Test scaffolding shared by the atrest crates' integration tests and
//! benchmarks: a self-deleting temporary directory, SoftHSM2 tokens in a
//! private directory, deterministic content, a TCP proxy that cuts the
//! connection to a server on demand, a small tmpfs that fills for real, (with the `audit` feature)
//! in-memory audit sinks, and (with the `azurite` feature) the Azure storage
//! emulator.
//!
//! Not published. It depends on nothing but std (and `atrest-audit` with
//! the `audit` feature, `ring` and `base64` with `azurite`, `tokio-postgres`
//! with `postgres`), so every crate
//! of the workspace can take it as a dev-dependency. Helpers panic with a message where a failure can only
//! mean a broken test environment, as a test would.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "audit")]
pub mod audit;
#[cfg(feature = "azurite")]
pub mod azurite;
mod content;
#[cfg(feature = "contract")]
pub mod contract;
#[cfg(feature = "files")]
pub mod files;
#[cfg(feature = "kms-emulator")]
pub mod kms_emulator;
pub mod pki;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "provider-contract")]
pub mod provider_contract;
pub mod proxy;
pub mod softhsm;
/// A writer of the SQLite databases of the embedded stores, as the tests
/// play one (someone who can edit the database, without any key):
/// `rusqlite`, re-exported.
#[cfg(feature = "sqlite")]
pub mod sqlite {
    pub use rusqlite::*;
}
mod temp;
pub mod tmpfs;

pub use content::{plaintext, seeded};
pub use temp::TempDir;
