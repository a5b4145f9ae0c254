//! The AWS KMS emulator `scripts/test` starts (moto's server, plain and
//! over TLS), and what a key's owner does there with their own tools:
//! make keys, disable and enable them, schedule and cancel their deletion.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::missing_panics_doc
)]

use aws_credential_types::Credentials;
use aws_sdk_kms::Client;
use aws_sdk_kms::config::{BehaviorVersion, Region};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};

const HINT: &str =
    "run scripts/test, which installs moto (PyPI) and starts its KMS server for these tests";

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {HINT}"))
}

/// The plain HTTP emulator's endpoint (`ATREST_AWS_KMS_ENDPOINT`).
pub fn endpoint() -> String {
    var("ATREST_AWS_KMS_ENDPOINT")
}

/// The TLS emulator's endpoint (`ATREST_AWS_KMS_TLS_ENDPOINT`); its
/// certificate is issued by the CA in `ATREST_TEST_CA`.
pub fn tls_endpoint() -> String {
    var("ATREST_AWS_KMS_TLS_ENDPOINT")
}

/// The access key id and secret the emulator takes (it checks a
/// signature's form, not its key).
pub const ACCESS_KEY: (&str, &str) = ("AKIDATRESTTEST", "atrest-test-secret");

/// A key owner's client for `region` at `endpoint`, trusting `ca` (PEM)
/// for https.
pub fn owner(endpoint: &str, region: &str, ca: Option<&[u8]>) -> Owner {
    let mut trust = TrustStore::empty();
    if let Some(ca) = ca {
        trust = trust.with_pem_certificate(ca.to_vec());
    }
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(
            TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .unwrap(),
        )
        .build_https();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new(
            "AKIDOWNER",
            "owner-secret",
            None,
            None,
            "test",
        ))
        .endpoint_url(endpoint)
        .http_client(http)
        .build();
    Owner(Client::from_conf(config))
}

/// What a key's owner does with their own tools.
#[derive(Clone, Debug)]
pub struct Owner(pub Client);

/// The key id of an ARN, as the owner's calls name it (the emulator looks
/// keys up by id).
pub fn key_id(arn: &str) -> &str {
    arn.rsplit_once('/').unwrap().1
}

/// An ARN of the same account and region that names no key.
pub fn missing_arn(arn: &str) -> String {
    let (prefix, _) = arn.rsplit_once('/').unwrap();
    format!("{prefix}/00000000-0000-4000-8000-000000000000")
}

impl Owner {
    /// A new symmetric encryption key: its ARN.
    pub async fn create_key(&self) -> String {
        let made = self
            .0
            .create_key()
            .key_spec(KeySpec::SymmetricDefault)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .description("atrest test key")
            .send()
            .await
            .unwrap();
        made.key_metadata().unwrap().arn().unwrap().to_owned()
    }

    /// Disables the key.
    pub async fn disable(&self, arn: &str) {
        self.0
            .disable_key()
            .key_id(key_id(arn))
            .send()
            .await
            .unwrap();
    }

    /// Enables the key.
    pub async fn enable(&self, arn: &str) {
        self.0
            .enable_key()
            .key_id(key_id(arn))
            .send()
            .await
            .unwrap();
    }

    /// Schedules the key's deletion in a week.
    pub async fn schedule_deletion(&self, arn: &str) {
        self.0
            .schedule_key_deletion()
            .key_id(key_id(arn))
            .pending_window_in_days(7)
            .send()
            .await
            .unwrap();
    }

    /// Cancels the key's deletion (which leaves it disabled, as KMS does).
    pub async fn cancel_deletion(&self, arn: &str) {
        self.0
            .cancel_key_deletion()
            .key_id(key_id(arn))
            .send()
            .await
            .unwrap();
    }
}
