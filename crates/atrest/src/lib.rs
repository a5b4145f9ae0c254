#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "tokio")]
mod asynchronous;
#[cfg(feature = "blobs")]
pub mod blobs;
#[cfg(feature = "deployment")]
pub mod deployment;
mod error;
mod files;
mod record;

pub use error::Error;
pub use files::{Files, SealOptions};
pub use record::FileRecord;

pub use atrest_audit as audit;
pub use atrest_filekey as filekey;
pub use atrest_stream as stream;
pub use atrest_tenant as tenant;
