//! Who is asking for a key, and whether they may have it.

use atrest_filekey::{FileId, TenantId};

/// On whose behalf a key operation runs. It decides the availability-key
/// rule and what the key-release policy and the audit trail see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// A user request (an upload, a download) by `principal`.
    ///
    /// The availability key is used only when the customer's root keys are
    /// *unavailable*, never when they refuse.
    User {
        /// Who is asking (user id, service account).
        principal: &'a str,
    },
    /// A system operation the service runs on its own account (re-wrap
    /// during a rotation, an anti-malware scan, a data move), named by
    /// `operation`.
    ///
    /// It may use the availability key whenever the customer's root keys
    /// cannot be used, including after a revocation (until the purge); each
    /// such use is audited. A TIK obtained this way is not cached, so user
    /// requests never benefit from it.
    System {
        /// What the operation is (for the policy and the audit trail).
        operation: &'a str,
    },
}

impl Access<'_> {
    /// How the principal appears in audit records: the user's principal, or
    /// `system:<operation>`.
    pub fn principal(&self) -> String {
        match self {
            Self::User { principal } => (*principal).to_owned(),
            Self::System { operation } => format!("system:{operation}"),
        }
    }

    pub(crate) fn is_system(&self) -> bool {
        matches!(self, Self::System { .. })
    }
}

/// A key-release policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Release the file key.
    Allow,
    /// Refuse, for this reason (recorded in the audit trail and returned in
    /// [`crate::Error::Denied`]).
    Deny(String),
}

/// Decides whether a file key may be released: the service's authorization
/// check ("may this principal read this file of this tenant?").
///
/// Closures `Fn(&Access, TenantId, FileId) -> Decision` implement it.
pub trait ReleasePolicy: Send + Sync {
    /// Whether `access` may have the key of `file` of `tenant`.
    fn decide(&self, access: &Access<'_>, tenant: TenantId, file: FileId) -> Decision;
}

impl<F> ReleasePolicy for F
where
    F: Fn(&Access<'_>, TenantId, FileId) -> Decision + Send + Sync,
{
    fn decide(&self, access: &Access<'_>, tenant: TenantId, file: FileId) -> Decision {
        self(access, tenant, file)
    }
}

/// A policy that refuses everything (the default, so that a hierarchy
/// built without a policy releases nothing).
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyAll;

impl ReleasePolicy for DenyAll {
    fn decide(&self, _: &Access<'_>, _: TenantId, _: FileId) -> Decision {
        Decision::Deny("no key-release policy is configured".into())
    }
}
