//! Who is asking for a key, and whether they may have it.

use std::sync::Arc;

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
    /// during a rotation, an anti-malware scan, a data move), with the
    /// capability that names it.
    ///
    /// It may use the availability key whenever the customer's root keys
    /// cannot be used, including after a revocation (until the purge); each
    /// such use is audited. A TIK obtained this way is not cached, so user
    /// requests never benefit from it. Only the holder of the hierarchy's
    /// [`Administration`] can make the [`SystemCapability`] this needs.
    System(&'a SystemCapability),
}

impl Access<'_> {
    /// How the principal appears in audit records: the user's principal, or
    /// `system:<operation>`.
    pub fn principal(&self) -> String {
        match self {
            Self::User { principal } => (*principal).to_owned(),
            Self::System(capability) => format!("system:{}", capability.operation),
        }
    }

    pub(crate) fn is_system(&self) -> bool {
        matches!(self, Self::System(_))
    }
}

/// Permission to run one system operation: what [`Access::System`] carries.
///
/// It cannot be made from outside this crate — not by a literal, not by a
/// constructor — only by [`Administration::capability`]; it is valid only
/// with the hierarchy whose administration issued it (another hierarchy
/// refuses it, so building a hierarchy of one's own mints nothing useful);
/// and the administration of a hierarchy exists once, returned by
/// [`Builder::build_with_administration`](crate::hierarchy::Builder::build_with_administration)
/// to the code that builds the hierarchy. Keep it in the service's
/// administrative jobs; request handlers get the hierarchy (or the files
/// API), never it.
///
/// ```compile_fail,E0451
/// use atrest_tenant::{Access, SystemCapability};
/// // A request handler cannot forge one:
/// let forged = SystemCapability { operation: "rewrap".into() };
/// let _ = Access::System(&forged);
/// ```
#[derive(Debug)]
pub struct SystemCapability {
    operation: String,
    issuer: Arc<Issuer>,
}

impl PartialEq for SystemCapability {
    fn eq(&self, other: &Self) -> bool {
        self.operation == other.operation && Arc::ptr_eq(&self.issuer, &other.issuer)
    }
}

impl Eq for SystemCapability {}

/// The identity of one hierarchy's administration (compared by address).
#[derive(Debug, Default)]
pub(crate) struct Issuer;

impl SystemCapability {
    /// A capability issued by `issuer` (the hierarchy's own operations use
    /// this too: re-wrap, root-key roll).
    pub(crate) fn issued(issuer: &Arc<Issuer>, operation: &str) -> Self {
        Self {
            operation: operation.to_owned(),
            issuer: issuer.clone(),
        }
    }

    /// Whether `issuer` issued it.
    pub(crate) fn issued_by(&self, issuer: &Arc<Issuer>) -> bool {
        Arc::ptr_eq(&self.issuer, issuer)
    }

    /// What the operation is (for the policy and the audit trail).
    pub fn operation(&self) -> &str {
        &self.operation
    }
}

/// The administrative side of a key hierarchy: the one source of
/// [`SystemCapability`]s. Not `Clone`; made only by
/// [`Builder::build_with_administration`](crate::hierarchy::Builder::build_with_administration).
#[derive(Debug)]
pub struct Administration {
    issuer: Arc<Issuer>,
}

impl Administration {
    pub(crate) fn new(issuer: Arc<Issuer>) -> Self {
        Self { issuer }
    }

    /// A capability to run the system operation `operation` (audited under
    /// that name) on this administration's hierarchy.
    pub fn capability(&self, operation: &str) -> SystemCapability {
        SystemCapability::issued(&self.issuer, operation)
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
    /// The policy could not decide: what it asks (a store, a service)
    /// could not answer. Nothing is released or written; the request fails
    /// as unavailable ([`crate::Error::PolicyUnavailable`]), not as a
    /// refusal, so that an outage is not mistaken for a decision.
    Unavailable(String),
}

/// Decides whether a file key may be released, and whether a file may be
/// written: the service's authorization checks ("may this principal read
/// this file of this tenant?", "… write a new version of it?").
///
/// Async, as a policy may ask a store or a service (a catalog of tenant
/// members, an authorization server) while the request waits.
/// Closures `Fn(&Access, TenantId, FileId) -> Decision` implement it, with
/// the same answer for both.
#[async_trait::async_trait]
pub trait ReleasePolicy: Send + Sync {
    /// Whether `access` may have the key of `file` of `tenant`.
    async fn decide(&self, access: &Access<'_>, tenant: TenantId, file: FileId) -> Decision;

    /// Whether `access` may write a new version of `file` of `tenant` (asked
    /// before its file key is made). By default, the same as
    /// [`ReleasePolicy::decide`]: whoever may read a file may write it.
    async fn decide_write(&self, access: &Access<'_>, tenant: TenantId, file: FileId) -> Decision {
        self.decide(access, tenant, file).await
    }

    /// [`ReleasePolicy::decide_write`] for several files of `tenant` at
    /// once (a batch of uploads): one decision per file, in order. By
    /// default one `decide_write` each; a policy that asks a store
    /// overrides it to ask once for the batch.
    async fn decide_writes(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        files: &[FileId],
    ) -> Vec<Decision> {
        let mut decisions = Vec::with_capacity(files.len());
        for file in files {
            decisions.push(self.decide_write(access, tenant, *file).await);
        }
        decisions
    }
}

#[async_trait::async_trait]
impl<F> ReleasePolicy for F
where
    F: Fn(&Access<'_>, TenantId, FileId) -> Decision + Send + Sync,
{
    async fn decide(&self, access: &Access<'_>, tenant: TenantId, file: FileId) -> Decision {
        self(access, tenant, file)
    }
}

/// A policy that refuses everything (the default, so that a hierarchy
/// built without a policy releases nothing).
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyAll;

#[async_trait::async_trait]
impl ReleasePolicy for DenyAll {
    async fn decide(&self, _: &Access<'_>, _: TenantId, _: FileId) -> Decision {
        Decision::Deny("no key-release policy is configured".into())
    }
}
