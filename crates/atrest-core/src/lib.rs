#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "blocking")]
pub mod blocking;
mod kind;
#[cfg(feature = "tls")]
pub mod tls;

pub use kind::ErrorKind;
