//! `PUT`: an upload sealed as its body arrives (small ones in batches),
//! under the preconditions its headers set, with its media type.

use std::sync::Arc;

use atrest::catalog::MEDIA_TYPE_RULE;
use atrest::filekey::FileVersion;
use atrest::{ErrorKind, MediaType, NewVersion, Precondition};
use atrest_deployment::{self as deployment, FileName};
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::meetings::refuse_reserved;
use super::{ApiError, Caller, RequestId, Service, api_error};
use crate::batch::{Failed, SMALL_UPLOAD};
use crate::bridge::{body_reader, body_status, paced};
use crate::conditional::{self, WriteCondition};

/// The answer to an upload.
#[derive(Debug, Serialize)]
struct Uploaded {
    tenant: String,
    name: String,
    version: u64,
    bytes: u64,
}

pub(super) async fn upload(
    State(service): State<Arc<Service>>,
    Extension(request): Extension<RequestId>,
    caller: Caller,
    Path((tenant, name)): Path<(String, String)>,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.check_tenant(&service, &tenant, &request).await?;
    refuse_reserved(&name)?;
    store(
        &service,
        &request,
        caller,
        (tenant, name),
        version,
        &headers,
        body,
    )
    .await
}

/// Seals an upload's body as a new version of file `name` of `tenant`, for
/// a caller whose tenant was checked: the `PUT` of a file, and of a
/// meeting's item.
pub(super) async fn store(
    service: &Arc<Service>,
    request: &RequestId,
    caller: Caller,
    (tenant, name): (String, String),
    version: axum::http::Version,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // HTTP/1 without Content-Length or chunked framing has no body to
    // read: refused, rather than an empty version.
    if version < axum::http::Version::HTTP_2
        && !headers.contains_key(header::CONTENT_LENGTH)
        && !headers.contains_key(header::TRANSFER_ENCODING)
    {
        return Err(ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "usage",
            "an upload needs Content-Length or chunked Transfer-Encoding",
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let limits = service.limits.body;
    if declared.is_some_and(|len| len > limits.max_bytes) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "usage",
            format!("the upload is larger than {} bytes", limits.max_bytes),
        ));
    }
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| MediaType::new(text).ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "usage",
                        format!("Content-Type: {MEDIA_TYPE_RULE}"),
                    )
                })
        })
        .transpose()?;
    let precondition = write_precondition(service, request, (&tenant, &name), headers).await?;
    let body = paced(body, limits);
    // Conditional uploads go one by one: a batch commits all or nothing.
    if declared.is_some_and(|len| len <= SMALL_UPLOAD) && precondition == Precondition::Any {
        return upload_small(service, request, caller, (tenant, name), media_type, body).await;
    }
    let version = NewVersion {
        media_type,
        precondition,
    };
    let sealed = service
        .deployment
        .put_version(
            &caller.access(),
            &tenant,
            &name,
            body_reader(body),
            &version,
        )
        .await;
    match sealed {
        Err(error) if body_status(&error).is_some() => {
            let status = body_status(&error).unwrap_or(StatusCode::BAD_REQUEST);
            Err(ApiError::new(status, "usage", error.to_string()))
        }
        Err(error) if precondition_failed(&error) => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition",
            error.to_string(),
        )),
        sealed => Ok(uploaded(api_error(sealed, request)?)),
    }
}

/// The precondition an upload's `If-Match` or `If-None-Match` sets on the
/// file's newest version. Entity tags name a version of this file (its
/// id and number); those of another file, or weak ones, never match.
async fn write_precondition(
    service: &Arc<Service>,
    request: &RequestId,
    (tenant, name): (&str, &str),
    headers: &HeaderMap,
) -> Result<Precondition, ApiError> {
    let text = |name| headers.get(name).and_then(|value| value.to_str().ok());
    let condition =
        conditional::write_condition(text(header::IF_MATCH), text(header::IF_NONE_MATCH))
            .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, "usage", why))?;
    let tags = match condition {
        WriteCondition::None => return Ok(Precondition::Any),
        WriteCondition::Absent => return Ok(Precondition::Absent),
        WriteCondition::Present => return Ok(Precondition::Present),
        WriteCondition::Tags(tags) => tags,
    };
    let file = FileName {
        tenant,
        name,
        version: None,
    };
    let current = match service.deployment.record_to_open(&file).await {
        Ok(record) => Some(record.file.to_string()),
        Err(error) if error.kind() == ErrorKind::NotFound => None,
        Err(error) => return Err(ApiError::from_deployment(&error, request)),
    };
    let versions = tags
        .iter()
        .filter_map(|tag| tag.strip_prefix('"')?.strip_suffix('"')?.rsplit_once('.'))
        .filter(|(file, _)| current.as_deref() == Some(*file))
        .filter_map(|(_, version)| version.parse::<u64>().ok())
        .filter_map(|version| FileVersion::try_from(version).ok())
        .collect();
    Ok(Precondition::NewestAmong(versions))
}

/// Whether `error` is an upload's precondition that did not hold.
fn precondition_failed(error: &deployment::Error) -> bool {
    let library = match error {
        deployment::Error::Library(error) => error,
        deployment::Error::InTenant { source, .. } => source.as_ref(),
        _ => return false,
    };
    matches!(
        library,
        atrest::Error::Catalog(atrest::CatalogError::PreconditionFailed { .. })
    )
}

/// A small upload (its `Content-Length` at most [`SMALL_UPLOAD`]): read
/// whole, then sealed in a batch with the uploads of the same principal
/// that arrive meanwhile ([`crate::batch`]).
async fn upload_small(
    service: &Arc<Service>,
    request: &RequestId,
    caller: Caller,
    (tenant, name): (String, String),
    media_type: Option<MediaType>,
    body: Body,
) -> Result<Response, ApiError> {
    // The limit holds whatever the header said (hyper also refuses a body
    // longer than its Content-Length).
    let limit = usize::try_from(SMALL_UPLOAD).unwrap_or(usize::MAX);
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(error) => {
            // The body did not arrive whole: nothing was begun.
            return Err(ApiError::new(
                body_status(&error).unwrap_or(StatusCode::BAD_REQUEST),
                "usage",
                format!("the upload's body failed: {error}"),
            ));
        }
    };
    let id = request.for_audit();
    let sealed = service
        .batcher
        .put(tenant, caller.principal, (name, media_type), body, id)
        .await;
    match sealed {
        Some(Ok(report)) => Ok(uploaded(report)),
        Some(Err(Failed { kind, message })) => Err(ApiError::from_kind(kind, &message, request)),
        None => Err(ApiError::internal("the batch stopped", request)),
    }
}

/// The answer to an upload: `201`, the new version and its `ETag` (for a
/// later `If-Match`).
fn uploaded(report: deployment::PutReport) -> Response {
    let etag = entity_tag(&report.record);
    let uploaded = Uploaded {
        tenant: report.tenant,
        name: report.name,
        version: report.version,
        bytes: report.record.plaintext_len,
    };
    let mut response = (StatusCode::CREATED, Json(uploaded)).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// A version's strong entity tag: its file id and version (a version
/// never changes).
pub(super) fn entity_tag(record: &atrest::FileRecord) -> String {
    format!("\"{}.{}\"", record.file, u64::from(record.version))
}
