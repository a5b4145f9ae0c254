#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod arn;
mod credentials;
mod error;
mod keys;

pub use arn::KeyArn;
pub use credentials::{
    ACCESS_KEY_VARIABLE, AwsCredentials, CREDENTIALS_REFRESH, SECRET_KEY_VARIABLE,
    SESSION_TOKEN_VARIABLE,
};
pub use keys::{
    AwsKmsKeys, AwsKmsKeysBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT,
    ENCRYPTION_CONTEXT_KEY, MAX_WRAPPED,
};
