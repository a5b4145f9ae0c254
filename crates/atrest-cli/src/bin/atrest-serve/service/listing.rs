//! `GET /v1/tenants/{tenant}/files`: the listing, in pages.

use std::sync::Arc;

use atrest_deployment as deployment;
use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, Caller, RequestId, Service, api_error};

/// One file version in a listing.
#[derive(Debug, Serialize)]
struct Listed {
    name: String,
    version: u64,
    bytes: u64,
    sealed: String,
    readable: bool,
}

/// `GET …/files` query: which part of the listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Only names that begin with this.
    prefix: Option<String>,
    /// Entries per page (default [`LIST_PAGE`], at most [`LIST_PAGE_MAX`]).
    limit: Option<usize>,
    /// Where the previous page ended (its `next`).
    cursor: Option<String>,
    /// `all` for every version; the newest of each file otherwise.
    versions: Option<String>,
}

/// Entries of a listing page by default, and at most.
const LIST_PAGE: usize = 1000;
const LIST_PAGE_MAX: usize = 10_000;

/// A cursor: where a page ended (a name and a version), hex-encoded so it
/// is one opaque token in a URL.
fn cursor_of(name: &str, version: u64) -> String {
    hex::encode(format!("{version}:{name}"))
}

fn position_of(cursor: &str) -> Option<(String, u64)> {
    let text = String::from_utf8(hex::decode(cursor).ok()?).ok()?;
    let (version, name) = text.split_once(':')?;
    Some((name.to_owned(), version.parse().ok()?))
}

pub(super) async fn list(
    State(service): State<Arc<Service>>,
    Extension(request): Extension<RequestId>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    caller.check_tenant(&service, &tenant, &request).await?;
    let all_versions = match query.versions.as_deref() {
        None | Some("latest") => false,
        Some("all") => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "usage",
                format!("versions={other:?}: give all or latest"),
            ));
        }
    };
    let limit = query.limit.unwrap_or(LIST_PAGE);
    if !(1..=LIST_PAGE_MAX).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "usage",
            format!("limit={limit}: give 1 to {LIST_PAGE_MAX}"),
        ));
    }
    let after = match query.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(position_of(cursor).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "usage",
                "cursor: not one this service gave",
            )
        })?),
    };
    let prefix = query.prefix.as_deref().map(atrest::normalize_name);
    let listed = api_error(service.deployment.list(Some(&tenant)).await, &request)?;
    let mut selected: Vec<deployment::Listing> = listed
        .into_iter()
        .filter(|listing| {
            prefix
                .as_deref()
                .is_none_or(|prefix| listing.name.starts_with(prefix))
                // The meetings' files are theirs alone.
                && !super::meetings::is_reserved(&listing.name)
        })
        .collect();
    if !all_versions {
        selected = deployment::newest_of_each(selected);
    }
    let start = after.map_or(0, |(name, version)| {
        selected.partition_point(|l| (l.name.as_str(), l.version) <= (name.as_str(), version))
    });
    let page: Vec<_> = selected.iter().skip(start).take(limit).collect();
    let next = (start + page.len() < selected.len())
        .then(|| page.last().map(|l| cursor_of(&l.name, l.version)))
        .flatten();
    let files: Vec<Listed> = page
        .into_iter()
        .map(|listing| Listed {
            name: listing.name.clone(),
            version: listing.version,
            bytes: listing.bytes,
            sealed: listing.sealed.clone(),
            readable: listing.readable,
        })
        .collect();
    Ok(Json(serde_json::json!({ "files": files, "next": next })).into_response())
}
