//! What the operator tells the outside: Prometheus metrics and the health and readiness
//! endpoints for kubelet probes, served over plain HTTP.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The operator's metrics and readiness.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    pub reconciles: Counter,
    pub reconcile_errors: Family<Labels, Counter>,
    pub jobs_created: Family<Labels, Counter>,
    /// 1 when the latest backup of a resource succeeded, 0 when it failed.
    pub backup_succeeded: Family<Labels, Gauge>,
    /// Unix time of the latest successful backup of a resource.
    pub last_success: Family<Labels, Gauge<i64, AtomicI64>>,
    ready: AtomicBool,
}

impl Default for Telemetry {
    fn default() -> Self {
        let (reconciles, reconcile_errors, jobs_created) = (Counter::default(), Family::default(), Family::default());
        let (backup_succeeded, last_success) = (Family::default(), Family::default());
        let mut registry = Registry::with_prefix("stowage");
        registry.register("reconciles", "Reconciles of DatabaseBackup resources", reconciles.clone());
        registry.register("reconcile_errors", "Failed reconciles by error", reconcile_errors.clone());
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
        Telemetry {
            registry,
            reconciles,
            reconcile_errors,
            jobs_created,
            backup_succeeded,
            last_success,
            ready: AtomicBool::new(false),
        }
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
    }
}
