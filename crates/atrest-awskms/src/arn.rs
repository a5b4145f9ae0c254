//! Key ARNs: how a root key is pinned.

use core::fmt;

/// A KMS key named by its full ARN,
/// `arn:<partition>:kms:<region>:<account>:key/<key id>`: what the label of
/// an [`AwsKmsKeys`](crate::AwsKmsKeys) root-key reference must be.
///
/// Only a key ARN pins a key. A key id alone leaves the region and account
/// to the caller's configuration, and an alias (`alias/…`) can be pointed
/// at another key by whoever may update it; both are refused.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyArn {
    text: String,
    region: core::ops::Range<usize>,
}

/// Longest key id accepted (KMS key ids are 36 characters, 40 with a
/// multi-Region key's `mrk-`).
const MAX_KEY_ID: usize = 64;

impl KeyArn {
    /// Parses a key ARN.
    ///
    /// # Errors
    /// Why `text` is not the ARN of a KMS key, as a sentence.
    pub fn parse(text: &str) -> Result<Self, String> {
        let refuse = |why: &str| Err(format!("{text:?} is not a KMS key ARN: {why}"));
        let mut parts = text.splitn(6, ':');
        let (
            Some("arn"),
            Some(partition),
            Some("kms"),
            Some(region),
            Some(account),
            Some(resource),
        ) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        )
        else {
            return refuse("expected arn:PARTITION:kms:REGION:ACCOUNT:key/KEY-ID");
        };
        let lower_dash = |s: &str| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !partition.starts_with("aws") || !lower_dash(partition) {
            return refuse("invalid partition");
        }
        if !lower_dash(region) {
            return refuse("invalid region");
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return refuse("the account must be 12 digits");
        }
        if resource.starts_with("alias/") {
            return refuse(
                "an alias can be pointed at another key; name the key itself by its key ARN",
            );
        }
        let Some(id) = resource.strip_prefix("key/") else {
            return refuse("expected key/KEY-ID after the account");
        };
        if id.is_empty()
            || id.len() > MAX_KEY_ID
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return refuse("invalid key id");
        }
        let start = "arn:".len() + partition.len() + ":kms:".len();
        Ok(Self {
            text: text.to_owned(),
            region: start..start + region.len(),
        })
    }

    /// The region the key is in (its client's region).
    pub fn region(&self) -> &str {
        self.text.get(self.region.clone()).unwrap_or_default()
    }

    /// The ARN.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for KeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for KeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyArn({})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_key_arns_pin_a_key() {
        let arn = KeyArn::parse(
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        )
        .unwrap();
        assert_eq!(arn.region(), "eu-west-1");
        let mrk = KeyArn::parse(
            "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        )
        .unwrap();
        assert_eq!(mrk.region(), "us-gov-west-1");
        for bad in [
            "",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/atrest",
            "arn:aws:kms:eu-west-1:111122223333:alias/atrest",
            "arn:aws:kms:eu-west-1:11112222333:key/1234",
            "arn:aws:kms:eu-west-1:111122223333:key/",
            "arn:aws:kms:eu-west-1:111122223333:key/12/34",
            "arn:aws:kms:eu-west-1:111122223333:key/12 34",
            "arn:aws:kms::111122223333:key/1234",
            "arn:aws:kms:EU-WEST-1:111122223333:key/1234",
            "arn:aws:kms:eu-west-1/x:111122223333:key/1234",
            "arn:aws:s3:eu-west-1:111122223333:key/1234",
            "arn:gcp:kms:eu-west-1:111122223333:key/1234",
            "arn:aws:kms:eu-west-1:111122223333:key/1234:extra",
        ] {
            assert!(KeyArn::parse(bad).is_err(), "{bad:?}");
        }
        let alias = KeyArn::parse("arn:aws:kms:eu-west-1:111122223333:alias/atrest").unwrap_err();
        assert!(alias.contains("alias"), "{alias}");
    }
}
