#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod ids;
mod key;
pub mod labelled;
pub mod rng;
pub mod wrap;

pub use error::Error;
pub use ids::{FileContext, FileId, FileVersion, KeyId, KeyVersion, TenantId};
pub use key::{FileKey, FromDerivedBytes, KeyCommitment};
pub use labelled::{LabelledWrapKey, WrapLabel};
pub use rng::{OsRng, SecureRandom};
pub use wrap::{Kek, WrappedFileKey};
