//! Who a request is for, and its place among the requests in flight.

use std::sync::Arc;

use atrest::filekey::TenantId;
use atrest::tenant::Access;
use atrest_deployment::Principal;
use axum::extract::FromRequestParts;
use axum::http::{StatusCode, header, request::Parts};

use super::{ApiError, RequestId, Service};
use crate::oidc::{Provider, SignInError};
use crate::tokens::Refused;

/// The principal a request's bearer token stands for, holding its place
/// among the requests in flight for as long as it lives.
#[derive(Debug)]
pub(super) struct Caller {
    pub(super) principal: String,
    /// The tenant the token was made for (an access token's tenant claim,
    /// a service token's tenant when it was added); `None` for a service
    /// token made before tokens were bound.
    tenant: Option<TenantId>,
    _slot: Slot,
}

/// Requests in flight, per principal and in all.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    per_principal: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One request's place in [`InFlight`], given back when dropped.
#[derive(Debug)]
struct Slot {
    flights: Arc<InFlight>,
    principal: String,
}

impl InFlight {
    /// A place for a request of `principal`, if fewer than `per_principal`
    /// of theirs and fewer than `total` in all are in flight; `429`
    /// otherwise, so that one principal cannot take what others need.
    fn enter(
        self: &Arc<Self>,
        principal: &str,
        per_principal: usize,
        total: usize,
    ) -> Result<Slot, ApiError> {
        let mut counts = self
            .per_principal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let all: usize = counts.values().sum();
        let theirs = counts.get(principal).copied().unwrap_or(0);
        if theirs >= per_principal || all >= total {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                if theirs >= per_principal {
                    format!("{principal} has {theirs} requests in flight already")
                } else {
                    "the service has as many requests in flight as it takes".to_owned()
                },
            ));
        }
        *counts.entry(principal.to_owned()).or_default() += 1;
        Ok(Slot {
            flights: Arc::clone(self),
            principal: principal.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .flights
            .per_principal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.principal);
            }
        }
    }
}

impl Caller {
    /// Refuses a caller addressing another tenant than their own: by the
    /// principal's tenant name, and by the tenant the token was made for,
    /// which the name must (still) name, authentically — a tenant made
    /// again under the name of one purged, or a name a writer of the
    /// catalog pointed elsewhere, is another tenant.
    pub(super) async fn check_tenant(
        &self,
        service: &Service,
        tenant: &str,
        request: &RequestId,
    ) -> Result<(), ApiError> {
        let refused = || {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "refused",
                format!("{} may not use tenant {tenant:?}", self.principal),
            )
        };
        match Principal::parse(&self.principal) {
            Some(principal) if principal.tenant == tenant => {}
            _ => return Err(refused()),
        }
        let Some(bound) = self.tenant else {
            return Ok(());
        };
        match service.deployment.tenant_id(tenant).await {
            Ok(id) if id == bound => Ok(()),
            Ok(_) => Err(refused()),
            Err(error) => Err(ApiError::from_kind(
                error.kind(),
                &format!("the tenant {tenant:?}: {error}"),
                request,
            )),
        }
    }

    pub(super) fn access(&self) -> Access<'_> {
        Access::User {
            principal: &self.principal,
        }
    }
}

impl FromRequestParts<Arc<Service>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &Arc<Service>,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is needed",
            )
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            // The scheme's name is case-insensitive (RFC 9110 §11.1).
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(unauthorized)?;
        let (principal, tenant) = match &service.provider {
            Some(provider) if looks_like_jwt(token) => {
                let request = parts
                    .extensions
                    .get::<RequestId>()
                    .map_or("-", |id| id.0.as_str());
                signed_in(service, provider, token, request).await?
            }
            _ => {
                let bearer = match service.tokens.bearer(token) {
                    Ok(bearer) => bearer,
                    Err(Refused::Unknown) => return Err(unauthorized()),
                    // The service's own failure (logged where the file is
                    // read): a client must not drop a good token over it.
                    Err(Refused::Unreadable) => {
                        return Err(ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            "unavailable: the service cannot read its tokens; try again later",
                        ));
                    }
                };
                (bearer.principal, bearer.tenant)
            }
        };
        // Its connection is one of a signed-in client from now on (see
        // `listen::SignedIn`).
        if let Some(connection) = parts.extensions.get::<crate::listen::SignedIn>() {
            connection.mark();
        }
        let slot = service.in_flight.enter(
            &principal,
            service.limits.requests_per_principal,
            service.limits.requests,
        )?;
        Ok(Self {
            principal,
            tenant,
            _slot: slot,
        })
    }
}

/// Whether a bearer token is a compact JWS (three parts, two dots), for
/// the OpenID provider, rather than one of the service's own tokens.
fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

/// The principal a provider's access token stands for — its subject claim
/// in the tenant whose id its tenant claim holds, by that tenant's name —
/// and that tenant.
async fn signed_in(
    service: &Service,
    provider: &Provider,
    token: &str,
    request: &str,
) -> Result<(String, Option<TenantId>), ApiError> {
    let identity = match provider.identity(token).await {
        Ok(identity) => identity,
        Err(SignInError::Rejected(why)) => {
            // The reason may quote the token's header (its `kid`, say):
            // escaped, so that no client writes lines of its own into
            // the text log.
            tracing::info!(
                request_id = request,
                "access token refused: {}",
                why.to_string().escape_debug()
            );
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the access token is not valid",
            ));
        }
        Err(SignInError::Unavailable(why)) => {
            tracing::error!(request_id = request, "{why}");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!(
                    "unavailable: the identity provider's keys cannot be had; see the service log for request {request}"
                ),
            ));
        }
    };
    let named = match service
        .deployment
        .catalog()
        .tenant_name(identity.tenant)
        .await
    {
        // Only a name that authenticates as the tenant's.
        Ok(Some(named)) => service
            .deployment
            .authentic(&named)
            .await
            .map(|_| Some(named.name))
            .map_err(|error| (error.kind(), error.to_string())),
        Ok(None) => Ok(None),
        Err(error) => Err((error.kind(), error.to_string())),
    };
    match named {
        Ok(Some(tenant)) => Ok((
            format!("{}@{tenant}", identity.subject),
            Some(identity.tenant),
        )),
        Ok(None) => {
            tracing::info!(
                request_id = request,
                "access token of {} for tenant {}, which this deployment does not have",
                identity.subject.escape_debug(),
                identity.tenant
            );
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "refused",
                "the access token's tenant is not served here",
            ))
        }
        Err((kind, error)) => Err(ApiError::from_kind(
            kind,
            &format!("the name of the access token's tenant: {error}"),
            &RequestId(request.to_owned(), None),
        )),
    }
}
