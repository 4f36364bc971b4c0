//! `./dev bench`, second part: STOWAGE_BENCH_RESOURCES (default 1,000) DatabaseBackup
//! resources created against the test API server with the operator running; prints how
//! long until every one is reconciled (`Ready` True for its generation, runner
//! ServiceAccount/Role/RoleBinding in place) and the operator's memory (VmRSS, VmHWM).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use kube::api::{ListParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use stowage_tests::cluster::{Cluster, NAMESPACE};
use tokio::task::JoinSet;

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Creations in flight, as a client applying many manifests would have.
const CONCURRENCY: usize = 16;
const MIB: f64 = (1 << 20) as f64;

/// A `/proc/<pid>/status` field in bytes.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::var("STOWAGE_BENCH_RESOURCES").ok().map(|v| v.parse()).transpose()?.unwrap_or(1000);
    println!("==> etcd, kube-apiserver, kube-controller-manager, SeaweedFS and the operator on loopback");
    let cluster = Cluster::start().await?;
    let pid = cluster.operator.as_ref().context("operator")?.pid();
    let backups = cluster.backups();

    println!("==> creating {count} DatabaseBackups ({CONCURRENCY} at a time)");
    let started = Instant::now();
    let mut creations = JoinSet::new();
    for index in 0..count {
        if creations.len() >= CONCURRENCY {
            creations.join_next().await.context("creation task")???;
        }
        let (api, resource) = (backups.clone(), cluster.resource(&format!("db-{index:04}"), json!({})));
        creations.spawn(async move { api.create(&PostParams::default(), &resource).await.map(drop) });
    }
    while let Some(created) = creations.join_next().await {
        created??;
    }
    let created = started.elapsed();
    println!("    created in {:.1} s", created.as_secs_f64());

    let bindings: Api<RoleBinding> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    // The resources are watched, not listed every round: a list of thousands of objects
    // twice a second would load the API server more than the operator does.
    let (store, writer) = reflector::store();
    let watch = watcher(backups.clone(), watcher::Config::default()).reflect(writer).for_each(|_| async {});
    let _watch = AbortOnDrop(tokio::spawn(watch));
    let mut peak_rss = 0u64;
    let steady = loop {
        peak_rss = peak_rss.max(memory(pid, "VmRSS:"));
        let ready = store
            .state()
            .iter()
            .filter(|backup| {
                let status = backup.status.as_ref();
                status.and_then(|s| s.observed_generation) == backup.metadata.generation
                    && status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready == count && bindings.list(&ListParams::default()).await?.items.len() >= count {
            break started.elapsed();
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(900), "only {ready} of {count} reconciled in 15 min");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let metrics = cluster.operator.as_ref().context("operator")?.get("/metrics").await.context("metrics")?.1;
    let counter = |name: &str| {
        metrics.lines().find_map(|line| line.strip_prefix(name)).and_then(|v| v.trim().parse::<f64>().ok())
    };
    let (reconciles, requests) = (counter("stowage_reconciles_total"), counter("stowage_api_requests_total"));
    println!(
        "\n{count} resources reconciled to steady state in {:.1} s (created in {:.1} s)",
        steady.as_secs_f64(),
        created.as_secs_f64()
    );
    println!(
        "operator RSS: {:.1} MiB now, {:.1} MiB sampled peak, {:.1} MiB VmHWM",
        memory(pid, "VmRSS:") as f64 / MIB,
        peak_rss as f64 / MIB,
        memory(pid, "VmHWM:") as f64 / MIB
    );
    if let (Some(reconciles), Some(requests)) = (reconciles, requests) {
        println!(
            "{reconciles} reconciles, {requests} API requests by the operator ({:.1} per reconcile, watches and \
             leader election included)",
            requests / reconciles.max(1.0)
        );
    }
    Ok(())
}
