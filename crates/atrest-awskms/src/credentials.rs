//! Where the provider's AWS credentials come from.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{
    ProvideCredentials, SharedCredentialsProvider, future as provider_future,
};
use zeroize::Zeroizing;

/// How long credentials read from the environment or a file are used
/// before they are read again: a file rewritten by an agent that renews
/// temporary credentials is followed within this time.
pub const CREDENTIALS_REFRESH: Duration = Duration::from_secs(300);

/// The AWS environment variables [`AwsCredentials::FromEnv`] reads.
pub const ACCESS_KEY_VARIABLE: &str = "AWS_ACCESS_KEY_ID";
/// See [`ACCESS_KEY_VARIABLE`].
pub const SECRET_KEY_VARIABLE: &str = "AWS_SECRET_ACCESS_KEY";
/// See [`ACCESS_KEY_VARIABLE`]; optional.
pub const SESSION_TOKEN_VARIABLE: &str = "AWS_SESSION_TOKEN";

/// Where to get the credentials that sign requests to AWS KMS.
///
/// A configuration names a source, never the secrets. They are read when
/// the provider is built (so that a missing or malformed source is
/// reported at once) and again every [`CREDENTIALS_REFRESH`]; the SDK keeps
/// them in memory that is zeroized when dropped, and never prints them.
#[derive(Clone)]
#[non_exhaustive]
pub enum AwsCredentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, if set,
    /// `AWS_SESSION_TOKEN`.
    FromEnv,
    /// A file in the form of one profile of the AWS shared credentials
    /// file: `aws_access_key_id = …`, `aws_secret_access_key = …` and
    /// optionally `aws_session_token = …` lines, with `#` or `;` comments
    /// and at most a `[default]` header. The file must not be readable or
    /// writable by group or others (mode 0600 or 0400).
    FromFile(PathBuf),
    /// Any credentials provider of the AWS SDK, for example the default
    /// chain of `aws-config` (instance and task roles, web identity, SSO).
    Provider(SharedCredentialsProvider),
}

impl core::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::FromEnv => f.write_str("FromEnv"),
            Self::FromFile(path) => f.debug_tuple("FromFile").field(path).finish(),
            Self::Provider(_) => f.write_str("Provider(..)"),
        }
    }
}

impl AwsCredentials {
    /// The SDK credentials provider for this source, its credentials read
    /// once now to report a bad source at once.
    pub(crate) fn provider(&self) -> Result<SharedCredentialsProvider, String> {
        match self {
            Self::Provider(provider) => Ok(provider.clone()),
            Self::FromEnv | Self::FromFile(_) => {
                let reader = Reader(self.clone());
                reader.read()?;
                Ok(SharedCredentialsProvider::new(reader))
            }
        }
    }
}

/// Reads [`AwsCredentials::FromEnv`] or [`AwsCredentials::FromFile`] each
/// time the SDK's cache asks.
#[derive(Debug)]
struct Reader(AwsCredentials);

impl Reader {
    fn read(&self) -> Result<Credentials, String> {
        let (access_key, secret_key, session_token) = match &self.0 {
            AwsCredentials::FromEnv => {
                let var = |name: &str| {
                    std::env::var_os(name).map(|v| Zeroizing::new(v.into_encoded_bytes()))
                };
                (
                    var(ACCESS_KEY_VARIABLE).ok_or(format!(
                        "{ACCESS_KEY_VARIABLE} is not set in the environment"
                    ))?,
                    var(SECRET_KEY_VARIABLE).ok_or(format!(
                        "{SECRET_KEY_VARIABLE} is not set in the environment"
                    ))?,
                    var(SESSION_TOKEN_VARIABLE),
                )
            }
            AwsCredentials::FromFile(path) => {
                let fail = |e: &dyn core::fmt::Display| {
                    format!("credentials file {}: {e}", path.display())
                };
                let mode = std::fs::metadata(path)
                    .map_err(|e| fail(&e))?
                    .permissions()
                    .mode()
                    & 0o777;
                if mode & 0o077 != 0 {
                    return Err(fail(&format!(
                        "permissions {mode:03o} let others read it; it must be 600 (chmod 600)"
                    )));
                }
                let text = Zeroizing::new(std::fs::read(path).map_err(|e| fail(&e))?);
                parse_file(&text).map_err(|e| fail(&e))?
            }
            AwsCredentials::Provider(_) => return Err("not a source to read".into()),
        };
        let text = |bytes: &[u8], what: &str| -> Result<String, String> {
            let trimmed = bytes.trim_ascii();
            if trimmed.is_empty() || !trimmed.iter().all(u8::is_ascii_graphic) {
                return Err(format!(
                    "the {what} is empty or holds characters it cannot have"
                ));
            }
            Ok(String::from_utf8_lossy(trimmed).into_owned())
        };
        let access_key = text(&access_key, "access key id")?;
        let secret_key = Zeroizing::new(text(&secret_key, "secret access key")?);
        let session_token = session_token
            .map(|token| text(&token, "session token").map(Zeroizing::new))
            .transpose()?;
        Ok(Credentials::new(
            access_key,
            secret_key.as_str(),
            session_token.as_ref().map(|t| t.as_str().to_owned()),
            Some(SystemTime::now() + CREDENTIALS_REFRESH),
            "atrest-awskms",
        ))
    }
}

impl ProvideCredentials for Reader {
    fn provide_credentials<'a>(&'a self) -> provider_future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider_future::ProvideCredentials::ready(
            self.read().map_err(CredentialsError::invalid_configuration),
        )
    }
}

type Secret = Zeroizing<Vec<u8>>;

/// The three values of a credentials file.
fn parse_file(text: &[u8]) -> Result<(Secret, Secret, Option<Secret>), String> {
    let (mut access_key, mut secret_key, mut session_token) = (None, None, None);
    let mut sections = 0;
    for (number, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") || line.starts_with(b";") {
            continue;
        }
        if line.starts_with(b"[") {
            sections += 1;
            if line != b"[default]" || sections > 1 {
                return Err(format!(
                    "line {}: one profile only, at most under [default]",
                    number + 1
                ));
            }
            continue;
        }
        let Some(equals) = line.iter().position(|&b| b == b'=') else {
            return Err(format!("line {}: expected NAME = VALUE", number + 1));
        };
        let (name, value) = line.split_at(equals);
        let value = Zeroizing::new(value.get(1..).unwrap_or_default().trim_ascii().to_vec());
        let slot = match name.trim_ascii() {
            b"aws_access_key_id" => &mut access_key,
            b"aws_secret_access_key" => &mut secret_key,
            b"aws_session_token" => &mut session_token,
            _ => {
                // The name only: the line may hold a secret.
                return Err(format!(
                    "line {}: unknown setting {:?}",
                    number + 1,
                    String::from_utf8_lossy(name.trim_ascii())
                ));
            }
        };
        if slot.replace(value).is_some() {
            return Err(format!("line {}: set twice", number + 1));
        }
    }
    Ok((
        access_key.ok_or("no aws_access_key_id")?,
        secret_key.ok_or("no aws_secret_access_key")?,
        session_token,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credentials_file_holds_one_profile() {
        let (id, secret, token) = parse_file(
            b"# made by the renewal agent\n[default]\naws_access_key_id = AKIAEXAMPLE\n\
              aws_secret_access_key=s3cr3t/+x\n",
        )
        .unwrap();
        assert_eq!(&id[..], b"AKIAEXAMPLE");
        assert_eq!(&secret[..], b"s3cr3t/+x");
        assert!(token.is_none());
        for bad in [
            &b"aws_access_key_id = A\n"[..],
            b"aws_secret_access_key = s\n",
            b"[default]\naws_access_key_id = A\n[other]\naws_secret_access_key = s\n",
            b"[prod]\naws_access_key_id = A\naws_secret_access_key = s\n",
            b"aws_access_key_id = A\naws_access_key_id = B\naws_secret_access_key = s\n",
            b"aws_access_key_id = A\nsecret s\n",
            b"aws_access_key_id = A\naws_secret_access_kye = s\n",
        ] {
            assert!(
                parse_file(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // An error names a bad setting, never its value.
        let error = parse_file(b"aws_secret_access_kye = hunter2\n").unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let dir = std::env::temp_dir().join(format!("atrest-awskms-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credentials");
        std::fs::write(&path, "aws_access_key_id = A\naws_secret_access_key = s\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = AwsCredentials::FromFile(path.clone())
            .provider()
            .unwrap_err();
        assert!(error.contains("600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        AwsCredentials::FromFile(path).provider().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
