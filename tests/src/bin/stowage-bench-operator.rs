//! `./dev bench`, second part: STOWAGE_BENCH_RESOURCES (default 10,000) DatabaseBackup
//! resources created against the test API server with the operator running. Nine in ten
//! are scheduled (a CronJob each); one in ten has a manual trigger, and the bench plays
//! the runner of its Job (whose Pod no kubelet starts), reporting progress every 30 s as a
//! real runner does. Prints how
//! long until every one is reconciled (`Ready` True for its generation, the runners'
//! shared RoleBinding in place, `Running` True for the running tenth), the
//! operator's memory (VmRSS, VmHWM) and its API requests, also while only progress
//! reports arrive. The resources are created once the garbage collector watches their
//! kind, as on a cluster where the operator is installed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use stowage_api::DatabaseBackup;
use stowage_operator::workloads::SHARED_RUNNER_IDENTITY;
use stowage_tests::cluster::{Cluster, NAMESPACE};
use tokio::task::JoinSet;

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Requests in flight, as a client applying many manifests would have.
const CONCURRENCY: usize = 16;
/// One resource in this many runs a backup during the bench.
const RUNNING_EVERY: usize = 10;
/// How often a runner reports progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(30);
/// How long progress reports alone are watched after steady state.
const QUIET_WINDOW: Duration = Duration::from_secs(30);
/// The garbage collector of kube-controller-manager finds new resource types on a
/// 30-second discovery resync; until it watches DatabaseBackups it looks up the owner of
/// every new CronJob with a GET (2,571 of them in one run), which no cluster that has had
/// the operator installed for a minute sees. The resources are created after this.
const GARBAGE_COLLECTOR_RESYNC: Duration = Duration::from_secs(35);
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

fn name(index: usize) -> String {
    format!("db-{index:05}")
}

fn running(index: usize) -> bool {
    index.is_multiple_of(RUNNING_EVERY)
}

/// The condition `kind` of `backup` is True.
fn condition(backup: &DatabaseBackup, kind: &str) -> bool {
    let status = backup.status.as_ref();
    status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// The operator's counters (reconciles, API requests).
async fn counters(cluster: &Cluster) -> anyhow::Result<(f64, f64)> {
    let metrics = cluster.operator.as_ref().context("operator")?.get("/metrics").await.context("metrics")?.1;
    let counter = |name: &str| {
        metrics.lines().find_map(|line| line.strip_prefix(name)).and_then(|v| v.trim().parse::<f64>().ok())
    };
    Ok((
        counter("stowage_reconciles_total").unwrap_or_default(),
        counter("stowage_api_requests_total").unwrap_or_default(),
    ))
}

/// Wait until the garbage collector watches DatabaseBackups ([`GARBAGE_COLLECTOR_RESYNC`]
/// after their CRD was created).
async fn wait_for_garbage_collector(cluster: &Cluster) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    let crd = crds.get("databasebackups.stowage.dev").await?;
    let created = crd.creation_timestamp().context("the CRD has no creation time")?.0;
    let age = Timestamp::now().duration_since(created).unsigned_abs();
    let wait = GARBAGE_COLLECTOR_RESYNC.saturating_sub(age);
    println!("==> waiting {:.0} s for the garbage collector to watch DatabaseBackups", wait.as_secs_f64());
    tokio::time::sleep(wait).await;
    Ok(())
}

/// Play the runners of the running resources: once each has its Job, report progress
/// on its status every [`PROGRESS_INTERVAL`] (merge patches, field manager
/// `stowage-runner`, as `stowage job` does), until dropped; counts the reports refused.
fn report_progress(
    backups: Api<DatabaseBackup>,
    jobs: Store<Job>,
    count: usize,
    refused: Arc<AtomicU64>,
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let started = Timestamp::now().to_string();
        let mut round = 0u64;
        loop {
            let next = tokio::time::Instant::now() + PROGRESS_INTERVAL;
            round += 1;
            let by_resource: HashMap<String, (String, String)> = jobs
                .state()
                .iter()
                .filter_map(|job| {
                    let resource = job.labels().get("stowage.dev/backup")?.clone();
                    Some((resource, (job.name_any(), job.uid()?)))
                })
                .collect();
            let mut reports = JoinSet::new();
            for index in (0..count).filter(|index| running(*index)) {
                let Some((job, uid)) = by_resource.get(&name(index)).cloned() else { continue };
                if reports.len() >= CONCURRENCY {
                    reports.join_next().await;
                }
                let (api, resource, started, refused) =
                    (backups.clone(), name(index), started.clone(), refused.clone());
                reports.spawn(async move {
                    let attempt = json!({"status": {"latestAttempt": {
                        "job": job, "jobUid": uid, "pod": format!("{job}-pod"), "generation": 1,
                        "phase": "Running", "reason": "BackupRunning", "message": "backing up",
                        "startedAt": started, "bytes": round * (64 << 20), "updated": Timestamp::now().to_string(),
                    }}});
                    let params = PatchParams { field_manager: Some("stowage-runner".into()), ..Default::default() };
                    if api.patch_status(&resource, &params, &Patch::Merge(&attempt)).await.is_err() {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            while reports.join_next().await.is_some() {}
            tokio::time::sleep_until(next).await;
        }
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::var("STOWAGE_BENCH_RESOURCES").ok().map(|v| v.parse()).transpose()?.unwrap_or(10_000);
    println!("==> etcd, kube-apiserver, kube-controller-manager, SeaweedFS and the operator on loopback");
    // Without the kubelet stand-in, which runs Pods one at a time: their Jobs stay active
    // and the bench reports progress for them, as their runners would.
    let cluster = Cluster::without_kubelet().await?;
    let pid = cluster.operator.as_ref().context("operator")?.pid();
    let backups = cluster.backups();

    // The resources and the Jobs are watched, not listed every round: a list of thousands
    // of objects twice a second would load the API server more than the operator does.
    let (store, writer) = reflector::store();
    let watch = watcher(backups.clone(), watcher::Config::default()).reflect(writer).for_each(|_| async {});
    let _watch = AbortOnDrop(tokio::spawn(watch));
    let (jobs, writer) = reflector::store();
    let jobs_api: Api<Job> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let job_watch = watcher(jobs_api, watcher::Config::default()).reflect(writer).for_each(|_| async {});
    let _job_watch = AbortOnDrop(tokio::spawn(job_watch));
    let refused = Arc::new(AtomicU64::new(0));
    wait_for_garbage_collector(&cluster).await?;
    let _runners = report_progress(backups.clone(), jobs, count, Arc::clone(&refused));

    println!(
        "==> creating {count} DatabaseBackups ({CONCURRENCY} at a time): 1 in {RUNNING_EVERY} backs up now and \
         reports progress every {}s, the others are scheduled",
        PROGRESS_INTERVAL.as_secs()
    );
    let started = Instant::now();
    let mut creations = JoinSet::new();
    for index in 0..count {
        if creations.len() >= CONCURRENCY {
            creations.join_next().await.context("creation task")???;
        }
        let trigger = if running(index) {
            json!({"manualTrigger": {"enabled": true, "time": "t1", "repo": "s3"}})
        } else {
            json!({"scheduledTrigger": {"schedule": "0 3 * * *", "repo": "s3"}})
        };
        let (api, resource) = (backups.clone(), cluster.resource(&name(index), trigger));
        creations.spawn(async move { api.create(&PostParams::default(), &resource).await.map(drop) });
    }
    while let Some(created) = creations.join_next().await {
        created??;
    }
    let created = started.elapsed();
    println!("    created in {:.1} s", created.as_secs_f64());

    let bindings: Api<RoleBinding> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let mut peak_rss = 0u64;
    let steady = loop {
        peak_rss = peak_rss.max(memory(pid, "VmRSS:"));
        let ready = store
            .state()
            .iter()
            .filter(|backup| {
                let generation = backup.status.as_ref().and_then(|s| s.observed_generation);
                let runs = backup.spec.manual_trigger.is_some();
                generation == backup.metadata.generation
                    && condition(backup, "Ready")
                    && (!runs || condition(backup, "Running"))
            })
            .count();
        if ready == count && bindings.get_opt(SHARED_RUNNER_IDENTITY).await?.is_some() {
            break started.elapsed();
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(900), "only {ready} of {count} reconciled in 15 min");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (reconciles, requests) = counters(&cluster).await?;
    println!(
        "\n{count} resources reconciled to steady state in {:.1} s (created in {:.1} s)",
        steady.as_secs_f64(),
        created.as_secs_f64()
    );
    println!(
        "{reconciles} reconciles, {requests} API requests by the operator ({:.1} per reconcile, watches and \
         leader election included)",
        requests / reconciles.max(1.0)
    );
    tokio::time::sleep(QUIET_WINDOW).await;
    peak_rss = peak_rss.max(memory(pid, "VmRSS:"));
    let (quiet_reconciles, quiet_requests) = counters(&cluster).await?;
    println!(
        "then {}s of progress reports from {} runners: {} reconciles, {} API requests",
        QUIET_WINDOW.as_secs(),
        count.div_ceil(RUNNING_EVERY),
        quiet_reconciles - reconciles,
        quiet_requests - requests
    );
    println!("progress reports refused by the API server: {}", refused.load(Ordering::Relaxed));
    println!(
        "operator RSS: {:.1} MiB now, {:.1} MiB sampled peak, {:.1} MiB VmHWM",
        memory(pid, "VmRSS:") as f64 / MIB,
        peak_rss as f64 / MIB,
        memory(pid, "VmHWM:") as f64 / MIB
    );
    Ok(())
}
