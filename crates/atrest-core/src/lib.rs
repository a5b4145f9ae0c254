#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "blocking")]
pub mod blocking;
mod kind;

pub use kind::ErrorKind;
