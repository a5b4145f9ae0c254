//! A meeting's items: uploaded by its participants, and their keys and
//! ciphertext delivered to its participants only (see the parent module).

use std::sync::Arc;

use atrest::audit::{Event, FileRef, Outcome, Text};
use atrest::tenant::Access;
use atrest_deployment::FileName;
use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::super::upload::store;
use super::super::{ApiError, Caller, RequestId, Service, VersionQuery, api_error};
use super::{Membership, items_prefix, load, members_only, not_a_participant};

/// Meeting `id` of `tenant` as `caller` may see it, and the file name of
/// its item `item`.
async fn meeting_item(
    service: &Service,
    request: &RequestId,
    caller: &Caller,
    (tenant, id, item): (&str, &str, &str),
) -> Result<(Membership, String), ApiError> {
    caller.check_tenant(service, tenant, request).await?;
    let (membership, _) = load(service, request, &caller.access(), (tenant, id)).await?;
    Ok((membership, format!("{}{item}", items_prefix(id))))
}

/// `PUT …/items/{name}`: an item, sealed under a fresh file key as any
/// upload is.
pub(in crate::service) async fn upload_item(
    State(service): State<Arc<Service>>,
    Extension(request): Extension<RequestId>,
    caller: Caller,
    Path((tenant, id, item)): Path<(String, String, String)>,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (membership, name) =
        meeting_item(&service, &request, &caller, (&tenant, &id, &item)).await?;
    members_only(&membership, &caller)?;
    let principal = caller.principal.clone();
    let stored = store(
        &service,
        &request,
        caller,
        (tenant.clone(), name.clone()),
        version,
        &headers,
        body,
    )
    .await?;
    // Ended while the body came: `end` marks the meeting before it lists
    // its items, so an item committed after that listing is seen here and
    // deleted, never left behind with its key.
    let access = Access::User {
        principal: &principal,
    };
    match load(&service, &request, &access, (&tenant, &id)).await {
        Ok(_) => Ok(stored),
        Err(error) if error.status == StatusCode::NOT_FOUND => {
            let file = FileName {
                tenant: &tenant,
                name: &name,
                version: None,
            };
            match service.deployment.delete(&access, &file).await {
                Ok(_) => service.eraser.erase_soon(&tenant),
                Err(error) if error.kind() == atrest::ErrorKind::NotFound => {}
                Err(error) => return Err(ApiError::from_deployment(&error, &request)),
            }
            Err(error)
        }
        Err(error) => Err(error),
    }
}

/// Audits a refused key request of a caller who is not (or no longer) in
/// the meeting, naming the item if there is one.
async fn audit_refusal(
    service: &Service,
    request: &RequestId,
    caller: &Caller,
    tenant: &str,
    (name, version): (&str, Option<u64>),
) -> Result<(), ApiError> {
    let file = FileName {
        tenant,
        name,
        version,
    };
    let file = match service.deployment.record_to_open(&file).await {
        Ok(record) => FileRef {
            file: Text::lossy(record.file.to_string()),
            version: u64::from(record.version),
        },
        Err(_) => FileRef {
            file: Text::lossy(name),
            version: version.unwrap_or(0),
        },
    };
    let event = Event::ReleaseDenied {
        file,
        principal: Text::lossy(&caller.principal),
    };
    let outcome = Outcome::Denied {
        reason: Text::lossy("not a participant of the meeting"),
    };
    api_error(
        service
            .deployment
            .record_outcome(event, outcome, Some(tenant), None)
            .await,
        request,
    )
}

/// `GET …/keys/{name}`: the item's key, delivered to a participant.
pub(in crate::service) async fn key(
    State(service): State<Arc<Service>>,
    Extension(request): Extension<RequestId>,
    caller: Caller,
    Path((tenant, id, item)): Path<(String, String, String)>,
    Query(query): Query<VersionQuery>,
) -> Result<Response, ApiError> {
    let (membership, name) =
        meeting_item(&service, &request, &caller, (&tenant, &id, &item)).await?;
    if !membership.admits(&caller.principal) {
        audit_refusal(&service, &request, &caller, &tenant, (&name, query.version)).await?;
        return Err(not_a_participant());
    }
    let file = FileName {
        tenant: &tenant,
        name: &name,
        version: query.version,
    };
    let (record, delivered) = api_error(
        service
            .deployment
            .deliver_key(&caller.access(), &file)
            .await,
        &request,
    )?;
    let mut wire = delivered.expose_to_wire();
    drop(delivered);
    let body = bytes::Bytes::from_owner(zeroize::Zeroizing::new(
        std::mem::take(&mut *wire).into_bytes(),
    ));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // A key: never kept by a cache on the way.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-atrest-version",
        HeaderValue::from(u64::from(record.version)),
    );
    Ok((StatusCode::OK, headers, Body::from(body)).into_response())
}

/// `GET …/items/{name}?version=N`: the item's ciphertext, as stored.
pub(in crate::service) async fn ciphertext(
    State(service): State<Arc<Service>>,
    Extension(request): Extension<RequestId>,
    caller: Caller,
    Path((tenant, id, item)): Path<(String, String, String)>,
    Query(query): Query<VersionQuery>,
) -> Result<Response, ApiError> {
    let (membership, name) =
        meeting_item(&service, &request, &caller, (&tenant, &id, &item)).await?;
    members_only(&membership, &caller)?;
    let file = FileName {
        tenant: &tenant,
        name: &name,
        version: query.version,
    };
    let (record, reader) = api_error(service.deployment.ciphertext(&file).await, &request)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(record.blob_len));
    headers.insert(
        "x-atrest-version",
        HeaderValue::from(u64::from(record.version)),
    );
    let log_id = request.0.clone();
    // The caller's place among the requests in flight (its principal's and
    // the service's) is held until the body is sent or given up, as a
    // download's is: a slow reader of many items is still one principal.
    let stream = futures_util::stream::unfold((Some(reader), caller), move |(reader, caller)| {
        let log_id = log_id.clone();
        async move {
            let mut reader = reader?;
            match reader.next_chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), (Some(reader), caller))),
                Ok(None) => None,
                Err(error) => {
                    tracing::error!(request_id = %log_id, "ciphertext cut short: {error}");
                    Some((
                        Err(std::io::Error::other(error.to_string())),
                        (None, caller),
                    ))
                }
            }
        }
    });
    // A client that stops reading lets go of the blob after the write
    // timeout, as a download does.
    let body = crate::bridge::timed_body(stream, service.limits.write_timeout);
    Ok((StatusCode::OK, headers, body).into_response())
}
