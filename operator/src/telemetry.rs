//! What the operator tells the outside: Prometheus metrics and the health and readiness
//! endpoints for kubelet probes, served over plain HTTP.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The labels of one series.
pub type Labels = Vec<(String, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// How long a deleted resource's UID is remembered: longer than any reconcile that began
/// before its deletion can still run (the client's requests time out well before).
const GONE_MEMORY: Duration = Duration::from_secs(900);

/// Backup durations: ten seconds to a day.
fn duration_histogram() -> Histogram {
    Histogram::new([10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0])
}

/// Stored backup sizes: 1 MiB to 4 TiB, by fours.
fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1_048_576.0, 4.0, 12))
}

/// The operator's metrics and readiness.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    pub reconciles: Counter,
    /// Every request the operator's client sends (watches, applies, status, Events, Lease).
    pub api_requests: Counter,
    pub reconcile_errors: Family<Labels, Counter>,
    pub jobs_created: Family<Labels, Counter>,
    /// 1 when the latest backup of a resource succeeded, 0 when it failed.
    pub backup_succeeded: Family<Labels, Gauge>,
    /// Unix time of the latest successful backup of a resource.
    pub last_success: Family<Labels, Gauge<i64, AtomicI64>>,
    /// The longest time between two scheduled runs of a resource.
    pub schedule_interval: Family<Labels, Gauge<i64, AtomicI64>>,
    /// Unix time of the latest restore drill of a resource that passed.
    pub last_verified: Family<Labels, Gauge<i64, AtomicI64>>,
    /// How long successful backups took, and what they stored.
    pub backup_duration: Histograms,
    pub backup_stored_bytes: Histograms,
    ready: AtomicBool,
    /// Resources deleted or being deleted, by UID, with when this process learned it:
    /// their series are removed, and a reconcile that began before must not bring them back.
    gone: Mutex<HashMap<String, Instant>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        let (reconciles, reconcile_errors, jobs_created) = (Counter::default(), Family::default(), Family::default());
        let api_requests = Counter::default();
        let (backup_succeeded, last_success, schedule_interval, last_verified) =
            (Family::default(), Family::default(), Family::default(), Family::default());
        let backup_duration: Histograms = Family::new_with_constructor(duration_histogram);
        let backup_stored_bytes: Histograms = Family::new_with_constructor(size_histogram);
        let mut registry = Registry::with_prefix("stowage");
        registry.register("reconciles", "Reconciles of DatabaseBackup resources", reconciles.clone());
        registry.register("reconcile_errors", "Failed reconciles by error", reconcile_errors.clone());
        registry.register("api_requests", "Requests sent to the Kubernetes API", api_requests.clone());
        registry.register("backup_jobs_created", "Backup Jobs created by trigger", jobs_created.clone());
        registry.register(
            "backup_succeeded",
            "Whether the latest backup of a resource succeeded (1) or failed (0)",
            backup_succeeded.clone(),
        );
        registry.register(
            "last_successful_backup_timestamp_seconds",
            "Unix time of the latest successful backup of a resource",
            last_success.clone(),
        );
        registry.register(
            "backup_schedule_interval_seconds",
            "The longest time between two scheduled runs of a resource",
            schedule_interval.clone(),
        );
        registry.register(
            "backup_last_verified_timestamp_seconds",
            "Unix time of the latest restore drill of a resource that passed",
            last_verified.clone(),
        );
        registry.register("backup_duration_seconds", "How long successful backups took", backup_duration.clone());
        registry.register("backup_stored_bytes", "Bytes stored by successful backups", backup_stored_bytes.clone());
        Telemetry {
            registry,
            reconciles,
            api_requests,
            reconcile_errors,
            jobs_created,
            backup_succeeded,
            last_success,
            schedule_interval,
            last_verified,
            backup_duration,
            backup_stored_bytes,
            ready: AtomicBool::new(false),
            gone: Mutex::default(),
        }
    }
}

/// A client layer that counts every request into a counter.
#[derive(Debug, Clone)]
pub struct CountRequests(pub Counter);

impl<S> tower::Layer<S> for CountRequests {
    type Service = CountedService<S>;

    fn layer(&self, inner: S) -> CountedService<S> {
        CountedService { inner, requests: self.0.clone() }
    }
}

/// See [`CountRequests`].
#[derive(Debug, Clone)]
pub struct CountedService<S> {
    inner: S,
    requests: Counter,
}

impl<S, B> tower::Service<http::Request<B>> for CountedService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.requests.inc();
        self.inner.call(request)
    }
}

/// Labels naming one resource.
pub fn resource_labels(namespace: &str, name: &str) -> Labels {
    vec![("namespace".into(), namespace.into()), ("name".into(), name.into())]
}

impl Telemetry {
    /// Readiness: true once the controller runs (and, with several replicas, leads).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Write series of the resource with `uid` unless it is gone. [`Telemetry::bury`] takes
    /// the same lock, so no series is written after its resource's series were removed.
    pub fn export(&self, uid: &str, namespace: &str, name: &str, write: impl FnOnce(&Telemetry, &Labels)) {
        let Ok(gone) = self.gone.lock() else { return };
        if !gone.contains_key(uid) {
            write(self, &resource_labels(namespace, name));
        }
    }

    /// Remove every series of a resource deleted or being deleted, for good.
    pub fn bury(&self, uid: &str, namespace: &str, name: &str) {
        let Ok(mut gone) = self.gone.lock() else { return };
        let now = Instant::now();
        gone.retain(|_, since| now.duration_since(*since) < GONE_MEMORY);
        gone.entry(uid.to_owned()).or_insert(now);
        let labels = resource_labels(namespace, name);
        self.backup_succeeded.remove(&labels);
        self.last_success.remove(&labels);
        self.schedule_interval.remove(&labels);
        self.last_verified.remove(&labels);
        self.backup_duration.remove(&labels);
        self.backup_stored_bytes.remove(&labels);
    }

    /// The metrics in Prometheus' text format.
    pub fn metrics_text(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    fn respond(&self, path: &str) -> Response<Full<Bytes>> {
        let (status, body) = match path {
            "/healthz" => (StatusCode::OK, "ok".to_owned()),
            "/readyz" if self.ready.load(Ordering::Relaxed) => (StatusCode::OK, "ready".to_owned()),
            "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not ready".to_owned()),
            "/metrics" => match self.metrics_text() {
                Ok(text) => (StatusCode::OK, text),
                Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics".to_owned()),
            },
            _ => (StatusCode::NOT_FOUND, "not found".to_owned()),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    }

    /// Serve `/healthz`, `/readyz` and `/metrics` on `address` until the task is dropped.
    pub async fn serve(self: Arc<Self>, address: SocketAddr) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        tracing::info!(%address, "serving /healthz, /readyz and /metrics");
        loop {
            let (stream, _) = listener.accept().await?;
            let telemetry = Arc::clone(&self);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let response = telemetry.respond(request.uri().path());
                    async move { Ok::<_, Infallible>(response) }
                });
                if let Err(error) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                    tracing::debug!(%error, "telemetry connection failed");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_answer_and_metrics_are_exposed() {
        let telemetry = Telemetry::default();
        assert_eq!(telemetry.respond("/healthz").status(), StatusCode::OK);
        assert_eq!(telemetry.respond("/readyz").status(), StatusCode::SERVICE_UNAVAILABLE);
        telemetry.set_ready(true);
        assert_eq!(telemetry.respond("/readyz").status(), StatusCode::OK);
        telemetry.reconciles.inc();
        telemetry.last_success.get_or_create(&resource_labels("shop", "orders")).set(1_700_000_000);
        assert_eq!(telemetry.respond("/metrics").status(), StatusCode::OK);
        let text = telemetry.metrics_text().expect("metrics");
        assert!(text.contains("stowage_reconciles_total 1"), "{text}");
        let last = r#"stowage_last_successful_backup_timestamp_seconds{namespace="shop",name="orders"} 1700000000"#;
        assert!(text.contains(last), "{text}");
        telemetry.bury("uid-1", "shop", "orders");
        let text = telemetry.metrics_text().expect("metrics");
        assert!(!text.contains(r#"name="orders""#), "series of a deleted resource: {text}");
        // A reconcile that began before the deletion writes nothing; a new resource of the
        // same name does.
        telemetry.export("uid-1", "shop", "orders", |t, labels| {
            t.backup_succeeded.get_or_create(labels).set(1);
        });
        let text = telemetry.metrics_text().expect("metrics");
        assert!(!text.contains(r#"name="orders""#), "series of a deleted resource came back: {text}");
        telemetry.export("uid-2", "shop", "orders", |t, labels| {
            t.backup_succeeded.get_or_create(labels).set(1);
        });
        let text = telemetry.metrics_text().expect("metrics");
        assert!(text.contains(r#"stowage_backup_succeeded{namespace="shop",name="orders"} 1"#), "{text}");
    }

    /// The sample alerts in deploy/ use only metrics the operator exports.
    #[test]
    fn the_sample_alerts_use_exported_metrics() {
        let rules = include_str!("../../deploy/monitoring/prometheusrule.yaml");
        let telemetry = Telemetry::default();
        let labels = resource_labels("shop", "orders");
        telemetry.reconcile_errors.get_or_create(&vec![("error".into(), "apply".into())]).inc();
        telemetry.jobs_created.get_or_create(&vec![("trigger".into(), "manual".into())]).inc();
        telemetry.backup_succeeded.get_or_create(&labels).set(1);
        telemetry.last_success.get_or_create(&labels).set(1);
        telemetry.schedule_interval.get_or_create(&labels).set(3600);
        telemetry.backup_duration.get_or_create(&labels).observe(12.0);
        telemetry.backup_stored_bytes.get_or_create(&labels).observe(1e6);
        let exported = telemetry.metrics_text().expect("metrics");
        let mut used = 0;
        for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("stowage_") {
                used += 1;
                let family = word.trim_end_matches("_total");
                assert!(exported.contains(&format!("# TYPE {family} ")), "{word} is not exported:\n{exported}");
            }
        }
        assert!(used >= 3, "{rules}");
    }
}
