#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod blob;
#[cfg(feature = "blobs")]
pub mod blobs;
pub mod catalog;
mod error;
mod files;
mod record;

pub use blob::{BlobDigest, BlobName, BlobReader, BlobUpload, Blobs, MemoryBlobs};
pub use catalog::{
    Catalog, MediaType, NewVersion, Precondition, TenantName, check_name, normalize_name,
};
pub use error::{CatalogError, Error, ErrorKind, RecordError};
pub use files::{
    BatchItem, Ciphertext, CollectReport, DELIVERED_KEY_FORMAT, DeliveredKey, EraseReport,
    FileSelector, Files, OpenSink, SealOptions, WriterSink, authenticate_tenant_name,
};
pub use record::FileRecord;

pub use atrest_audit as audit;
pub use atrest_filekey as filekey;
pub use atrest_stream as stream;
pub use atrest_tenant as tenant;
