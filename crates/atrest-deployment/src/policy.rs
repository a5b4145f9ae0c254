//! The deployment's default release policy: principals are written
//! `user@tenant`, and a user reads (and writes) the files of their own
//! tenant only. System operations (re-wrap, a data move) are allowed.
//!
//! Tenant names are looked up in the catalog (or among the names last
//! authenticated, [`crate::names`]), so a tenant created after the policy
//! was built is known to it at once, and each is authenticated (its tag
//! under the tenant's metadata key) before it is compared: a writer of the
//! database who swaps names between tenants gets every user of them
//! refused, never let into another tenant.

use std::sync::Arc;

use atrest::filekey::{FileId, TenantId};
use atrest::tenant::{Access, Decision, ReleasePolicy};

use atrest::{Catalog, CatalogError};

use crate::names::TenantNames;

/// A principal `user@tenant`: a user of a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Principal<'a> {
    /// The user.
    pub user: &'a str,
    /// The tenant's name.
    pub tenant: &'a str,
}

impl<'a> Principal<'a> {
    /// Parses `user@tenant`: exactly one `@`, with a user before it and a
    /// tenant after it. `None` for anything else (`@tenant`, `user@`,
    /// `a@b@c`, `user`).
    pub fn parse(text: &'a str) -> Option<Self> {
        let (user, tenant) = text.split_once('@')?;
        if user.is_empty() || tenant.is_empty() || tenant.contains('@') {
            return None;
        }
        Some(Self { user, tenant })
    }
}

/// The membership policy: a user may have the keys of the tenant the
/// catalog names as theirs.
struct Members {
    catalog: Arc<dyn Catalog>,
    names: Arc<TenantNames>,
}

#[async_trait::async_trait]
impl ReleasePolicy for Members {
    async fn decide(&self, access: &Access<'_>, tenant: TenantId, _: FileId) -> Decision {
        decide_member(self, access, tenant).await
    }

    /// Membership does not depend on the file: one look-up for the batch.
    async fn decide_writes(
        &self,
        access: &Access<'_>,
        tenant: TenantId,
        files: &[FileId],
    ) -> Vec<Decision> {
        if files.is_empty() {
            return Vec::new();
        }
        let decision = decide_member(self, access, tenant).await;
        vec![decision; files.len()]
    }
}

/// Whether `access` may have the keys of `tenant`, by the membership rule.
async fn decide_member(members: &Members, access: &Access<'_>, tenant: TenantId) -> Decision {
    let principal = match access {
        Access::System { .. } => return Decision::Allow,
        Access::User { principal } => *principal,
    };
    let Some(parsed) = Principal::parse(principal) else {
        return Decision::Deny(format!(
            "{principal:?} is not a principal of the form user@tenant"
        ));
    };
    let not_member = || Decision::Deny(format!("{principal} is not a member of this tenant"));
    if let Some(named) = members.names.by_tenant(tenant).await {
        return if named.name == parsed.tenant {
            Decision::Allow
        } else {
            not_member()
        };
    }
    let named = match members.catalog.tenant_name(tenant).await {
        Ok(Some(named)) if named.name == parsed.tenant => named,
        Ok(_) => return not_member(),
        Err(error) => {
            return Decision::Unavailable(format!("the tenant's name cannot be read: {error}"));
        }
    };
    let Some(keys) = members.names.keys() else {
        return Decision::Unavailable("the key hierarchy is not ready".into());
    };
    match atrest::authenticate_tenant_name(&keys, &named).await {
        Ok(()) => {
            members.names.authenticated(&named);
            Decision::Allow
        }
        Err(error @ atrest::Error::Catalog(CatalogError::NameTampered { .. })) => Decision::Deny(
            format!("{principal} is not a member of this tenant: {error}"),
        ),
        Err(error) if error.kind() == atrest::ErrorKind::Unavailable => {
            Decision::Unavailable(format!("the tenant's name cannot be checked: {error}"))
        }
        Err(error) => Decision::Deny(format!("the tenant's name cannot be checked: {error}")),
    }
}

/// The membership policy over `catalog`, authenticating names with the
/// hierarchy `names` is set to.
pub(super) fn members(
    catalog: Arc<dyn Catalog>,
    names: Arc<TenantNames>,
) -> Arc<dyn ReleasePolicy> {
    Arc::new(Members { catalog, names })
}

#[cfg(test)]
mod tests {
    use super::Principal;

    #[test]
    fn principals_have_exactly_one_at_between_two_names() {
        assert_eq!(
            Principal::parse("alice@contoso"),
            Some(Principal {
                user: "alice",
                tenant: "contoso"
            })
        );
        for bad in [
            "",
            "@",
            "alice",
            "@contoso",
            "alice@",
            "a@a@a",
            "alice@@contoso",
        ] {
            assert_eq!(Principal::parse(bad), None, "{bad:?}");
        }
    }
}
