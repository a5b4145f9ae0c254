//! The configuration file `DIR/atrest.json`, and private key files.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CONFIG;
use super::error::{Error, io_at};

/// A PKCS#11 token holding customer keys, as configured in a deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The provider name root-key references use (for example `hsm-a`).
    pub name: String,
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The environment variable holding the user PIN (never stored).
    pub pin_env: String,
}

/// A key service's transit engine (OpenBao or HashiCorp Vault) holding
/// root keys, as configured in a deployment. Its token is read from the
/// environment or from a private file, never stored here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    /// The provider name root-key references use (for example `bao`).
    pub name: String,
    /// The server's address (`https://…`, or `http://` on loopback).
    pub address: String,
    /// Where the transit engine is mounted (for example `transit`).
    pub mount: String,
    /// The environment variable holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// A file holding the token (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// A PEM file of the CA certificate(s) that issued the server's
    /// certificate, trusted besides the system's (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How long one request may take, in milliseconds (connecting
    /// included), before the server counts as unavailable; the provider's
    /// defaults otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Root keys in AWS KMS, as configured in a deployment: tenants name its
/// keys by their ARN (`NAME:arn:aws:kms:REGION:ACCOUNT:key/ID`). Its
/// credentials are read from the AWS environment variables or a private
/// file, never stored here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsKmsConfig {
    /// The provider name root-key references use (for example `aws`).
    pub name: String,
    /// Where every region's requests go instead of AWS's regional
    /// endpoints: an emulator, or one region's VPC endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// A file holding the credentials (mode 0600): one profile in the AWS
    /// shared credentials format. Without it, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// A PEM file of the CA certificate(s) that issued the endpoint's
    /// certificate, trusted besides the system's (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How long one call may take, in milliseconds (connecting and one
    /// retry included), before KMS counts as unavailable; the provider's
    /// defaults otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Where a deployment keeps its key metadata and its catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MetadataConfig {
    /// SQLite files in the deployment directory (the embedded default).
    Sqlite,
    /// A PostgreSQL database, shared by every instance.
    Postgres {
        /// A connection URL without a password
        /// (`postgresql://user@host:port/db`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// The environment variable holding the connection URL (which may
        /// hold a password: it is never written to the configuration).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url_env: Option<String>,
    },
}

/// The contents of `DIR/atrest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    pub(super) version: u32,
    /// A blob store URL; `None`: `DIR/blobs`.
    pub(super) blobs: Option<String>,
    /// Replica locations, each an `object_store` URL or an absolute local
    /// directory: every blob is written to each of them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) replicas: Vec<String>,
    /// How many locations (the primary and the replicas) must make a blob
    /// durable for a write to succeed; `None`: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) copies: Option<usize>,
    pub(super) tokens: Vec<TokenConfig>,
    /// Where key metadata and the catalog are; `None`: SQLite files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) metadata: Option<MetadataConfig>,
    /// Key services (transit engines) holding root keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) kms: Vec<KmsConfig>,
    /// AWS KMS providers holding root keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) aws_kms: Vec<AwsKmsConfig>,
    pub(super) audit_verifying_key: String,
    /// The directory the audit log publishes its checkpoints to (relative:
    /// to the deployment directory).
    #[serde(default)]
    pub(super) audit_witness: Option<PathBuf>,
}

impl Config {
    /// The audit witness directory of the deployment in `dir`.
    pub(super) fn audit_witness(&self, dir: &Path) -> Option<PathBuf> {
        self.audit_witness.as_ref().map(|w| dir.join(w))
    }
}

impl Config {
    /// Reads the configuration of the deployment in `dir`.
    pub(super) fn read(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(CONFIG);
        let text = fs::read_to_string(&path).map_err(|source| Error::NoDeployment {
            dir: dir.to_path_buf(),
            source,
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|source| Error::Config {
            path: path.clone(),
            source,
        })?;
        if config.version != 1 {
            return Err(Error::UnsupportedVersion {
                path,
                version: config.version,
            });
        }
        Ok(config)
    }

    /// Replaces the configuration of the deployment in `dir` (through a
    /// temporary file renamed into place).
    pub(super) fn write(&self, dir: &Path) -> Result<(), Error> {
        let path = dir.join(CONFIG);
        let text = serde_json::to_string_pretty(self).map_err(|source| Error::Config {
            path: path.clone(),
            source,
        })?;
        let tmp = dir.join(format!("{CONFIG}.tmp"));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_at(&tmp))?;
        file.write_all((text + "\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_at(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_at(&path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(dir))?;
        Ok(())
    }
}

/// Writes `bytes` to a new file `path` only its owner can read.
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_at(path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_at(path))
}
