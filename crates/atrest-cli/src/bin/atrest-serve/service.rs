//! The HTTP API.
//!
//! # API
//!
//! | request | answer |
//! |---|---|
//! | `PUT /v1/tenants/{tenant}/files/{name}` | `201`, the new version (JSON) and its `ETag`; the body is sealed as it arrives, its `Content-Type` kept; `412` if `If-Match` or `If-None-Match: *` does not hold; `411` without framing, `413` too large |
//! | `GET /v1/tenants/{tenant}/files/{name}[?version=N]` | `200`, or `206` for a `Range: bytes=…` (only the covering segments are decrypted), `416` for a range past the end |
//! | `HEAD` of the same | the headers of the `GET` |
//! | `DELETE` of the same `[?version=N]` | `200` and the versions deleted (JSON; every version without `?version`); the keys are erased for good shortly after ([`crate::eraser`]); `404` if there is none |
//! | `GET /readyz` | `200` if the catalog, key store, audit log, blob stores and disk work, else `503` saying which do not |
//! | `GET /v1/tenants/{tenant}/files[?prefix=P&limit=N&cursor=C&versions=all]` | a page of the tenant's files, the newest version of each (JSON, with `next`) |
//! | `GET /healthz` | `200` |
//! | `GET /metrics` | the service's metrics, Prometheus text format ([`crate::metrics`]) |
//! | `POST /v1/tenants/{tenant}/moves/{move}` | `201`: the end of a mailbox move, with its statistics, recorded in the audit trail as the source reports it ([`moves`]) |
//! | `/v1/tenants/{tenant}/meetings…` | meetings: their members, their items, each item's key delivered to a participant who decrypts it on their side ([`meetings`]) |
//!
//! Every request but `/healthz`, `/readyz` and `/metrics` needs `Authorization:
//! Bearer <token>`: one of the token file's, which stands for a principal
//! `user@tenant`, or an OpenID provider's JWT access token
//! ([`crate::oidc`]), whose claims give the tenant's id and the user. The
//! principal may address their own tenant only (`403` otherwise); the
//! deployment's release policy then judges them for each key. Library errors map to statuses by their kind:
//! `400` bad usage (a name the rules refuse), `403` refused (policy,
//! revoked customer key, purged tenant), `404`, `409` conflict, `503` a key
//! service or store unavailable, `500` integrity and I/O failures (details
//! only in the service's log, under the request id).
//!
//! Each request has an id: the client's `X-Request-Id` if it is 1–128 of
//! `A–Z a–z 0–9 . _ : -`, else a random one; it is echoed in the response
//! and carried by every audit record the request causes (key release,
//! seal, open), through [`atrest::audit::in_request`].
//!
//! Handlers await the files API directly: an upload is sealed as its body
//! arrives and a download decrypted as the client reads it, each holding a
//! task, not a thread, so slow or stalled clients hold nothing another
//! client needs.
//!
//! An upload is committed only once its body ended as its framing said and
//! its blob is durable: a client that goes away mid-upload (or an instance
//! killed mid-upload) leaves no record and no visible file; the abandoned
//! blob is removed by `atrest gc`.

use std::io;
use std::sync::Arc;

use atrest::audit::{Text, in_request};
use atrest::{ErrorKind, FileRecord};
use atrest_deployment::{self as deployment, Deployment, FileName};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::batch::Batcher;
use crate::bridge::{BodyLimits, BodyWriter, CHUNKS_IN_FLIGHT, watched};
use crate::conditional;
use crate::eraser::Eraser;
use crate::metrics::Metrics;
use crate::oidc::Provider;
use crate::range::{self, Requested};
use crate::tokens::Tokens;

mod caller;
mod listing;
mod meetings;
mod moves;
mod ready;
mod upload;

use self::caller::{Caller, InFlight};
use self::meetings::refuse_reserved;
use self::ready::{Readiness, ready};
use self::upload::{entity_tag, upload};

/// The request id header.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// What every request handler shares: the opened deployment and the
/// tokens.
#[derive(Debug)]
pub(crate) struct Service {
    deployment: Arc<Deployment>,
    tokens: Tokens,
    /// The OpenID provider whose access tokens are accepted too.
    provider: Option<Provider>,
    metrics: Arc<Metrics>,
    batcher: Arc<Batcher>,
    eraser: Arc<Eraser>,
    limits: Limits,
    in_flight: Arc<InFlight>,
    /// The last readiness check (see [`ready()`]).
    readiness: Readiness,
}

/// What the service allows a request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// What an upload's body may do.
    pub(crate) body: BodyLimits,
    /// How long a download's client may take to take the next chunk.
    pub(crate) write_timeout: std::time::Duration,
    /// Requests of one principal in flight at once (more: `429`).
    pub(crate) requests_per_principal: usize,
    /// Requests in flight at once in all (more: `429`).
    pub(crate) requests: usize,
}

impl Service {
    /// The service over `deployment`, accepting `tokens` and the access
    /// tokens of `provider`, counting into `metrics`, within `limits`.
    pub(crate) fn new(
        deployment: Deployment,
        (tokens, provider): (Tokens, Option<Provider>),
        metrics: Arc<Metrics>,
        limits: Limits,
    ) -> Self {
        let mut deployment = deployment;
        // The handlers hold the deployment: none of them may obtain a
        // system capability from it.
        deployment.give_up_administration();
        let deployment = Arc::new(deployment);
        metrics.watch(deployment.clone());
        Self {
            batcher: Arc::new(Batcher::new(deployment.clone(), metrics.clone())),
            eraser: Arc::new(Eraser::new(deployment.clone())),
            deployment,
            tokens,
            provider,
            metrics,
            limits,
            in_flight: Arc::new(InFlight::default()),
            readiness: Readiness::default(),
        }
    }

    /// The tenants whose deletions are not erased yet.
    pub(crate) fn erasures_pending(&self) -> Vec<String> {
        self.eraser.busy()
    }

    /// The HTTP routes.
    pub(crate) fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/tenants/{tenant}/files", get(listing::list))
            .route(
                "/v1/tenants/{tenant}/files/{*name}",
                put(upload).get(download).head(head).delete(remove),
            )
            .route("/v1/tenants/{tenant}/moves/{move}", post(moves::finish))
            .route("/v1/tenants/{tenant}/meetings", post(meetings::create))
            .route(
                "/v1/tenants/{tenant}/meetings/{id}",
                get(meetings::show).delete(meetings::end),
            )
            .route(
                "/v1/tenants/{tenant}/meetings/{id}/participants/{participant}",
                put(meetings::participant).delete(meetings::participant),
            )
            .route(
                "/v1/tenants/{tenant}/meetings/{id}/items/{*name}",
                put(meetings::upload_item).get(meetings::ciphertext),
            )
            .route(
                "/v1/tenants/{tenant}/meetings/{id}/keys/{*name}",
                get(meetings::key),
            )
            .route("/readyz", get(ready))
            .route("/metrics", get(metrics))
            .with_state(self.clone())
            .route("/healthz", get(|| async { "ok\n" }))
            .layer(middleware::from_fn_with_state(self, request_id))
    }
}

/// The id of the request being served, made by the service; and the
/// client's own (`X-Request-Id`), if it sent a valid one, kept beside it in
/// the audit trail and the log, never in its place.
#[derive(Clone, Debug)]
struct RequestId(String, Option<String>);

impl RequestId {
    /// The ids as audit records carry them.
    fn for_audit(&self) -> atrest::audit::RequestId {
        atrest::audit::RequestId {
            id: Text::lossy(&self.0),
            client: self.1.as_deref().map(Text::lossy),
        }
    }

    /// The client's id, for a log line (`-` if none).
    fn client(&self) -> &str {
        self.1.as_deref().unwrap_or("-")
    }
}

fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn new_request_id() -> String {
    let mut bytes = [0_u8; 16];
    // The OS generator; should it fail, a constant id beats refusing work.
    match getrandom::fill(&mut bytes) {
        Ok(()) => hex::encode(bytes),
        Err(_) => "unidentified".to_owned(),
    }
}

/// `/metrics`: the Prometheus text format ([`crate::metrics`]).
async fn metrics(State(service): State<Arc<Service>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        service.metrics.render(),
    )
        .into_response()
}

/// Gives each request its id, counts it and its body bytes, and makes
/// every error answer a problem document.
async fn request_id(
    State(service): State<Arc<Service>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let client = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| valid_request_id(id))
        .map(str::to_owned);
    let id = new_request_id();
    let ids = RequestId(id.clone(), client);
    request.extensions_mut().insert(ids.clone());
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let received = service.metrics.received().clone();
    let request = request.map(|body| {
        watched(body, move |bytes| {
            let _ = received.inc_by(bytes as u64);
        })
    });
    // Every audit record the handler's work makes carries the ids.
    let response = in_request(ids.for_audit(), next.run(request)).await;
    service.metrics.request(
        method.as_str(),
        &path,
        response.status().as_u16(),
        started.elapsed(),
    );
    let sent = service.metrics.sent().clone();
    let response = response.map(|body| {
        watched(body, move |bytes| {
            let _ = sent.inc_by(bytes as u64);
        })
    });
    let mut response = if response.status().is_client_error() || response.status().is_server_error()
    {
        problem(response, &id).await
    } else {
        response
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Every error answer in one form, a problem document (RFC 9457), whoever
/// made it — a handler ([`ApiError`]), the router (405) or an extractor (a
/// query that does not parse): `type`, `title`, `status`, `detail`, the
/// library's `kind` and the `request_id`.
async fn problem(response: Response, request_id: &str) -> Response {
    let (mut parts, body) = response.into_parts();
    let said = axum::body::to_bytes(body, 64 << 10)
        .await
        .unwrap_or_default();
    let from_handler = serde_json::from_slice::<serde_json::Value>(&said).ok();
    let field = |name: &str| {
        from_handler
            .as_ref()
            .and_then(|value| value.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let status = parts.status;
    let kind = field("kind").unwrap_or_else(|| {
        match status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "refused",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            status if status.is_server_error() => "failed",
            _ => "usage",
        }
        .to_owned()
    });
    let detail = field("error").unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&said).trim().to_owned();
        if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text
        }
    });
    let document = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "kind": kind,
        "request_id": request_id,
    });
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    Response::from_parts(parts, Body::from(document.to_string()))
}

/// A failed request: its status and what the client is told.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    /// The answer to a library error, logged with the request id; server
    /// faults are not described to the client.
    fn from_deployment(error: &deployment::Error, request: &RequestId) -> Self {
        Self::from_kind(error.kind(), &error.to_string(), request)
    }

    /// The answer to a failure of kind `kind` described by `error`.
    fn from_kind(kind: ErrorKind, error: &str, request: &RequestId) -> Self {
        let (status, kind) = match kind {
            ErrorKind::Usage => (StatusCode::BAD_REQUEST, "usage"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Refused => (StatusCode::FORBIDDEN, "refused"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorKind::Integrity => (StatusCode::INTERNAL_SERVER_ERROR, "integrity"),
            ErrorKind::Io => (StatusCode::INTERNAL_SERVER_ERROR, "failed"),
        };
        if status.is_server_error() {
            tracing::error!(
                request_id = %request.0,
                client_request_id = %request.client(),
                status = status.as_u16(),
                "{error}"
            );
        } else {
            tracing::info!(
                request_id = %request.0,
                client_request_id = %request.client(),
                status = status.as_u16(),
                "{error}"
            );
        }
        // A refusal or an outage may come from a customer's key service or
        // a store, whose words are for the operator: the client gets the
        // kind, the log the details.
        let message = if status.is_server_error() || status == StatusCode::FORBIDDEN {
            format!("{kind}: see the service log for request {}", request.0)
        } else {
            error.to_owned()
        };
        Self::new(status, kind, message)
    }

    fn internal(what: &str, request: &RequestId) -> Self {
        tracing::error!(
            request_id = %request.0,
            client_request_id = %request.client(),
            "{what}"
        );
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed",
            format!("failed: see the service log for request {}", request.0),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "kind": self.kind });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"atrest\""),
            );
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The answer to a library error.
fn api_error<T>(result: Result<T, deployment::Error>, request: &RequestId) -> Result<T, ApiError> {
    result.map_err(|error| ApiError::from_deployment(&error, request))
}

/// `?version=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    version: Option<u64>,
}

/// What `GET` and `HEAD` learn before opening: the version and its size.
struct Target {
    version: u64,
    len: u64,
    /// Strong: a version never changes.
    etag: String,
    /// When the version was sealed (`Last-Modified`).
    sealed: std::time::SystemTime,
    /// The media type it was uploaded with, if any.
    media_type: Option<String>,
}

/// `304 Not Modified` if the request's `If-None-Match` lists the version's
/// tag: the client's copy is current.
fn not_modified(request_headers: &HeaderMap, target: &Target) -> Option<Response> {
    let listed = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())?;
    if !conditional::none_match(listed, &target.etag) {
        return None;
    }
    let mut headers = headers_of(target);
    headers.remove(header::CONTENT_TYPE);
    Some((StatusCode::NOT_MODIFIED, headers).into_response())
}

/// What `HEAD` tells the client of `file`: its authenticated record.
async fn target(
    service: &Arc<Service>,
    request: &RequestId,
    (tenant, name): (&str, &str),
    version: Option<u64>,
) -> Result<Target, ApiError> {
    let file = FileName {
        tenant,
        name,
        version,
    };
    let record = api_error(service.deployment.record(&file).await, request)?;
    Ok(Target::of(&record))
}

impl Target {
    fn of(record: &FileRecord) -> Self {
        Self {
            version: u64::from(record.version),
            len: record.plaintext_len,
            etag: entity_tag(record),
            sealed: record.sealed_time(),
            media_type: record.media_type.clone(),
        }
    }
}

fn headers_of(target: &Target) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let media_type = target
        .media_type
        .as_deref()
        .and_then(|text| HeaderValue::from_str(text).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, media_type);
    // The type the uploader gave, never one a browser guesses.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(etag) = HeaderValue::from_str(&target.etag) {
        headers.insert(header::ETAG, etag);
    }
    if let Ok(date) = HeaderValue::from_str(&conditional::http_date(target.sealed)) {
        headers.insert(header::LAST_MODIFIED, date);
    }
    headers.insert("x-atrest-version", HeaderValue::from(target.version));
    headers
}

async fn head(
    State(service): State<Arc<Service>>,
    Extension(request): Extension<RequestId>,
    caller: Caller,
    Path((tenant, name)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.check_tenant(&service, &tenant, &request).await?;
    refuse_reserved(&name)?;
    let target = target(&service, &request, (&tenant, &name), query.version).await?;
    if let Some(response) = not_modified(&request_headers, &target) {
        return Ok(response);
    }
    let mut headers = headers_of(&target);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(target.len));
    Ok((StatusCode::OK, headers).into_response())
}

async fn download(
    State(service): State<Arc<Service>>,
    Extension(request): Extension<RequestId>,
    caller: Caller,
    Path((tenant, name)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.check_tenant(&service, &tenant, &request).await?;
    refuse_reserved(&name)?;
    // The record as the catalog holds it picks the version and the range;
    // the open authenticates it before a byte is released (and audits a
    // refusal), without reading it again.
    let file = FileName {
        tenant: &tenant,
        name: &name,
        version: query.version,
    };
    let record = api_error(service.deployment.record_to_open(&file).await, &request)?;
    let target = Target::of(&record);
    if let Some(response) = not_modified(&request_headers, &target) {
        return Ok(response);
    }
    // A range of the version the client holds: with an `If-Range` that
    // does not name this version (or cannot be read), the whole current
    // one (never half of each).
    let same_version = request_headers.get(header::IF_RANGE).is_none_or(|value| {
        value
            .to_str()
            .is_ok_and(|validator| conditional::range_applies(validator, &target.etag))
    });
    let asked = request_headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .filter(|_| same_version);
    let mut headers = headers_of(&target);
    let (status, range) = match range::requested(asked, target.len) {
        Requested::Whole => (StatusCode::OK, None),
        Requested::Part(range) => {
            let content_range = format!("bytes {}-{}/{}", range.start, range.end - 1, target.len);
            if let Ok(value) = HeaderValue::from_str(&content_range) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            (StatusCode::PARTIAL_CONTENT, Some(range))
        }
        Requested::Unsatisfiable => {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", target.len)) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            let error = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range",
                format!("the file has {} bytes", target.len),
            );
            return Ok((headers, error).into_response());
        }
    };
    let len = range.as_ref().map_or(target.len, |r| r.end - r.start);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));

    // The open runs in a task of its own, which the response body drains;
    // the first plaintext (or the failure before it) decides the status.
    let (chunks, body) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let (started, start) = oneshot::channel();
    let deployment = service.deployment.clone();
    let version = Some(target.version);
    let write_timeout = service.limits.write_timeout;
    let log_id = request.clone();
    let opening = async move {
        let mut out = BodyWriter::new(chunks, started, write_timeout);
        let file = FileName {
            tenant: &tenant,
            name: &name,
            version,
        };
        let result = deployment
            .get_record(&caller.access(), &file, record, range, &mut out)
            .await;
        out.finish(result.map(|_| ()), |error: &deployment::Error| {
            tracing::error!(request_id = %log_id.0, "cut short: {error}");
            format!("the download failed: {error}")
        })
        .await;
    };
    drop(tokio::spawn(in_request(request.for_audit(), opening)));
    match start.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(ApiError::from_deployment(&error, &request)),
        Err(_) => return Err(ApiError::internal("the open stopped", &request)),
    }
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        body.recv()
            .await
            .map(|chunk: io::Result<bytes::Bytes>| (chunk, body))
    });
    Ok((status, headers, Body::from_stream(stream)).into_response())
}

/// `DELETE`: the version (or every version) of a file, for a caller the
/// write decision allows; its key erased for good shortly after.
async fn remove(
    State(service): State<Arc<Service>>,
    Extension(request): Extension<RequestId>,
    caller: Caller,
    Path((tenant, name)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> Result<Response, ApiError> {
    caller.check_tenant(&service, &tenant, &request).await?;
    refuse_reserved(&name)?;
    let file = FileName {
        tenant: &tenant,
        name: &name,
        version: query.version,
    };
    let deleted = api_error(
        service.deployment.delete(&caller.access(), &file).await,
        &request,
    )?;
    service.eraser.erase_soon(&tenant);
    let versions: Vec<u64> = deleted.iter().map(|r| u64::from(r.version)).collect();
    let answer = serde_json::json!({
        "tenant": tenant,
        "name": name,
        "deleted_versions": versions,
        "erasure": "scheduled",
    });
    Ok((StatusCode::OK, Json(answer)).into_response())
}
