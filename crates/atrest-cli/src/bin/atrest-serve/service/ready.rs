//! `/readyz`: whether every part the service needs works, from a check
//! made at most once a second whoever asks (it needs no token).

use std::sync::Arc;
use std::time::Duration;

use atrest_deployment::Deployment;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::Service;

/// What a readiness check found: each part that does not work, and why.
type Problems = Vec<(&'static str, String)>;

/// How long a readiness check answers `/readyz` before the next is made.
const READINESS_TTL: Duration = Duration::from_secs(1);

/// The last readiness check and when it was made.
#[derive(Debug, Default)]
pub(super) struct Readiness {
    last: Arc<tokio::sync::Mutex<Option<(tokio::time::Instant, Problems)>>>,
}

impl Readiness {
    /// The parts of `deployment` that do not work, from a check at most
    /// [`READINESS_TTL`] old. One check runs at a time; callers that come
    /// during it wait for its answer, so however often `/readyz` is asked
    /// the catalog and key store see one check a second. The check runs in
    /// a task of its own, so a caller that goes away (a request reset at
    /// once) does not cut it short and leave the next to start another.
    async fn check(&self, deployment: &Arc<Deployment>) -> Problems {
        let (last, deployment) = (Arc::clone(&self.last), Arc::clone(deployment));
        let checking = tokio::spawn(async move {
            let mut last = last.lock_owned().await;
            if let Some((at, problems)) = last.as_ref()
                && at.elapsed() < READINESS_TTL
            {
                return problems.clone();
            }
            let problems = deployment.readiness().await;
            for (part, why) in &problems {
                tracing::warn!(part, "not ready: {part}: {why}");
            }
            *last = Some((tokio::time::Instant::now(), problems.clone()));
            problems
        });
        checking
            .await
            .unwrap_or_else(|_| vec![("service", "the readiness check stopped".to_owned())])
    }
}

/// `/readyz`: `200` when every part the service needs works — catalog, key
/// store, audit log, blob stores, room on the disk — else `503` naming
/// those that do not. (`/healthz` only says the process answers.) The
/// answer is at most a second old ([`Readiness::check`]).
pub(super) async fn ready(State(service): State<Arc<Service>>) -> Response {
    let problems = service.readiness.check(&service.deployment).await;
    if problems.is_empty() {
        return Json(serde_json::json!({ "ready": true })).into_response();
    }
    // Unauthenticated: the parts only; why, in the service's log.
    let parts: Vec<&str> = problems.iter().map(|(part, _)| *part).collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({
            "error": format!("not ready: {}", parts.join(", ")),
            "kind": "unavailable",
        })),
    )
        .into_response()
}
