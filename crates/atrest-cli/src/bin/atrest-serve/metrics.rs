//! `/metrics`: the service's metrics in the Prometheus text format
//! (OpenMetrics), through the `prometheus-client` crate.
//!
//! | metric | what |
//! |---|---|
//! | `atrest_http_requests_total{route,method,status}` | requests answered |
//! | `atrest_http_request_duration_seconds{route,method}` | until the response's head |
//! | `atrest_http_received_bytes_total`, `atrest_http_sent_bytes_total` | body bytes in and out |
//! | `atrest_audit_events_total{event,outcome}` | audit records made durable: key releases (`file_key_released`, `release_denied`), fallbacks (`availability_key_fallback`), seals, opens, … |
//! | `atrest_audit_commit_duration_seconds` | audit commits |
//! | `atrest_blob_operation_duration_seconds{operation,result}` | blob store writes, flushes, opens, reads |
//! | `atrest_tik_cache_lookups_total{result}` | TIKs found cached (`hit`) or unwrapped (`miss`) |
//! | `atrest_upload_batch_items` | uploads per batch of small uploads |
//!
//! Routes are the API's patterns (`/v1/tenants/{tenant}/files/{name}`),
//! never the names in a request: no label carries a tenant, file or
//! principal.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use atrest_deployment::Deployment;
use atrest_deployment::observe::{BlobOperation, Observer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BlobLabels {
    operation: &'static str,
    result: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets: 100 µs to about 100 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 4.0, 11))
}

/// The service's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Histograms<RouteLabels>,
    received: Counter,
    sent: Counter,
    audited: Family<EventLabels, Counter>,
    audit_commits: Histogram,
    blob_operations: Histograms<BlobLabels>,
    batch_items: Histogram,
    /// The deployment, once opened, for what it counts itself.
    deployment: Arc<OnceLock<Arc<Deployment>>>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Histograms::<RouteLabels>::new_with_constructor(latency);
        let (received, sent) = (Counter::default(), Counter::default());
        let audited = Family::<EventLabels, Counter>::default();
        let audit_commits = latency();
        let blob_operations = Histograms::<BlobLabels>::new_with_constructor(latency);
        let batch_items = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register(
            "atrest_http_requests",
            "HTTP requests answered",
            requests.clone(),
        );
        registry.register(
            "atrest_http_request_duration_seconds",
            "Time until the response's head",
            durations.clone(),
        );
        registry.register(
            "atrest_http_received_bytes",
            "Request body bytes received",
            received.clone(),
        );
        registry.register(
            "atrest_http_sent_bytes",
            "Response body bytes sent",
            sent.clone(),
        );
        registry.register(
            "atrest_audit_events",
            "Audit records made durable, by event type and outcome",
            audited.clone(),
        );
        registry.register(
            "atrest_audit_commit_duration_seconds",
            "Audit log commits",
            audit_commits.clone(),
        );
        registry.register(
            "atrest_blob_operation_duration_seconds",
            "Blob store operations",
            blob_operations.clone(),
        );
        registry.register(
            "atrest_upload_batch_items",
            "Uploads sealed per batch of small uploads",
            batch_items.clone(),
        );
        let deployment = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(TikCache(Arc::clone(&deployment))));
        Self {
            registry,
            requests,
            durations,
            received,
            sent,
            audited,
            audit_commits,
            blob_operations,
            batch_items,
            deployment,
        }
    }

    /// From now on, the metrics the deployment keeps itself are read from
    /// `deployment`.
    pub(crate) fn watch(&self, deployment: Arc<Deployment>) {
        let _ = self.deployment.set(deployment);
    }

    /// The text a scrape gets.
    pub(crate) fn render(&self) -> String {
        let mut text = String::with_capacity(16 << 10);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// A request to `path` answered with `status` after `elapsed`.
    pub(crate) fn request(&self, method: &str, path: &str, status: u16, elapsed: Duration) {
        let (route, method) = (route(path), method_label(method));
        let _ = self
            .requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels { route, method })
            .observe(elapsed.as_secs_f64());
    }

    /// Body bytes received.
    pub(crate) fn received(&self) -> &Counter {
        &self.received
    }

    /// Body bytes sent.
    pub(crate) fn sent(&self) -> &Counter {
        &self.sent
    }

    /// A batch of `items` small uploads was sealed.
    pub(crate) fn batch(&self, items: usize) {
        self.batch_items.observe(items as f64);
    }
}

/// The API route a path is a request to (bounded: a pattern, never a
/// name from the request).
fn route(path: &str) -> &'static str {
    let mut parts = path.split('/').skip(1);
    let mut next = || parts.next();
    match (next(), next(), next(), next(), next()) {
        (Some("healthz"), None, ..) => "/healthz",
        (Some("readyz"), None, ..) => "/readyz",
        (Some("metrics"), None, ..) => "/metrics",
        (Some("v1"), Some("tenants"), Some(_), Some("files"), None) => "/v1/tenants/{tenant}/files",
        (Some("v1"), Some("tenants"), Some(_), Some("files"), Some(_)) => {
            "/v1/tenants/{tenant}/files/{name}"
        }
        _ => "other",
    }
}

/// A request's method as a label: one of the methods the API answers, or
/// `other` (a method is any token a client cares to send: as a label of
/// its own, each would hold memory for as long as the service runs).
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

impl Observer for Metrics {
    fn audited(&self, event: &'static str, outcome: &'static str) {
        let _ = self
            .audited
            .get_or_create(&EventLabels { event, outcome })
            .inc();
    }

    fn audit_commit(&self, _records: usize, elapsed: Duration, _ok: bool) {
        self.audit_commits.observe(elapsed.as_secs_f64());
    }

    fn blob_operation(&self, operation: BlobOperation, elapsed: Duration, ok: bool) {
        self.blob_operations
            .get_or_create(&BlobLabels {
                operation: operation.name(),
                result: if ok { "ok" } else { "error" },
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// The TIK cache's counts, read from the deployment at each scrape.
#[derive(Debug)]
struct TikCache(Arc<OnceLock<Arc<Deployment>>>);

impl Collector for TikCache {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(deployment) = self.0.get() else {
            return Ok(());
        };
        let counts = deployment.tik_cache_counts();
        let mut family = encoder.encode_descriptor(
            "atrest_tik_cache_lookups",
            "TIKs found in the cache (hit) or unwrapped through their root keys (miss)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (result, count) in [("hit", counts.hits), ("miss", counts.misses)] {
            ConstCounter::new(count).encode(family.encode_family(&[("result", result)])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{method_label, route};

    #[test]
    fn methods_are_a_fixed_set() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("DELETE"), "DELETE");
        assert_eq!(method_label("get"), "other");
        assert_eq!(method_label(&"X".repeat(100_000)), "other");
    }

    #[test]
    fn routes_are_patterns_never_names() {
        assert_eq!(
            route("/v1/tenants/acme/files"),
            "/v1/tenants/{tenant}/files"
        );
        assert_eq!(
            route("/v1/tenants/acme/files/a/b/c.txt"),
            "/v1/tenants/{tenant}/files/{name}"
        );
        assert_eq!(route("/readyz"), "/readyz");
        assert_eq!(route("/secret-probe/acme"), "other");
    }
}
