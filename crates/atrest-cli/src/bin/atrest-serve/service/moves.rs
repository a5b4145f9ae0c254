//! `POST /v1/tenants/{tenant}/moves/{move}`: the end of a mailbox move, as
//! its source reports it (`mailbox-move --to`). The service records the
//! move and its statistics in its own audit trail (`mailbox_move`, side
//! `service`), naming the source and the principal that reported it;
//! each item's seal is in the trail already, with the move's request id
//! (`MOVE:ITEM`) beside it. `atrest audit check-move` compares the two
//! trails.

use std::sync::Arc;

use atrest_cli::moves::{MoveStats, is_move_id};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, Caller, RequestId, Service, api_error};

/// Longest description of the source, in characters.
const MAX_SOURCE: usize = 512;

/// What the source reports.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Reported {
    /// How the source names itself (host and directory).
    source: String,
    items: u64,
    bytes: u64,
    failures: u64,
    skipped: u64,
    duration_ms: u64,
}

pub(super) async fn finish(
    State(service): State<Arc<Service>>,
    Extension(request): Extension<RequestId>,
    caller: Caller,
    Path((tenant, move_id)): Path<(String, String)>,
    Json(reported): Json<Reported>,
) -> Result<Response, ApiError> {
    caller.check_tenant(&service, &tenant, &request).await?;
    if !is_move_id(&move_id) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "usage",
            "a move id is 32 lower-case hex digits",
        ));
    }
    if reported.source.chars().count() > MAX_SOURCE || reported.source.chars().any(char::is_control)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "usage",
            format!("source: at most {MAX_SOURCE} characters, no control characters"),
        ));
    }
    let stats = MoveStats {
        items: reported.items,
        bytes: reported.bytes,
        failures: reported.failures,
        skipped: reported.skipped,
        duration_ms: reported.duration_ms,
    };
    let peer = format!("{} (reported by {})", reported.source, caller.principal);
    api_error(
        service
            .deployment
            .record_event(stats.event(&move_id, "service", &peer), Some(&tenant), None)
            .await,
        &request,
    )?;
    let answer = serde_json::json!({ "move": move_id, "recorded": stats });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}
