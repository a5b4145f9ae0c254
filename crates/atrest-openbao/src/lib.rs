#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod credentials;
mod error;
mod transit;
mod wire;

pub use credentials::Credentials;
pub use transit::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, KEY_TYPE, TransitKeyInfo, TransitKeys,
    TransitKeysBuilder,
};
