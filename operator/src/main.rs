//! `stowage-operator`: `run` the controller, or print the `crd`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kube::CustomResourceExt;
use stowage_api::{DatabaseBackup, DatabaseRestore, DatabaseSnapshot, DatabaseSnapshotImport};
use stowage_operator::controller::{Context, run};
use stowage_operator::leader::LeaderElection;
use stowage_operator::telemetry::{CountRequests, Telemetry};
use tracing_subscriber::EnvFilter;

/// The Stowage operator.
#[derive(Debug, Parser)]
#[command(name = "stowage-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reconcile DatabaseBackup, DatabaseRestore and DatabaseSnapshotImport resources until stopped.
    Run {
        /// The runner image for backup Jobs.
        #[arg(long, env = "STOWAGE_RUNNER_IMAGE", default_value = "stowage-runner:0.1.0")]
        runner_image: String,
        /// Further runner images resources may name in `runnerImage`, comma-separated
        /// (default: none, only --runner-image).
        #[arg(long, env = "STOWAGE_ALLOWED_RUNNER_IMAGES", value_delimiter = ',')]
        allowed_runner_images: Vec<String>,
        /// Address of the /healthz, /readyz and /metrics endpoints.
        #[arg(long, env = "STOWAGE_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// Namespace of the leader-election Lease (the operator's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "stowage-system")]
        lease_namespace: String,
        /// This replica's name in the Lease.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Watch only these namespaces, comma-separated (default: all). The operator then
        /// needs its rules only there: `deploy/namespaced/` binds them per namespace.
        #[arg(long, env = "STOWAGE_WATCH_NAMESPACES", value_delimiter = ',')]
        namespaces: Vec<String>,
    },
    /// Print the CustomResourceDefinitions (DatabaseBackup, DatabaseSnapshot, DatabaseRestore,
    /// DatabaseSnapshotImport) as YAML.
    Crd,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Run { runner_image, allowed_runner_images, listen, lease_namespace, identity, namespaces } =
        Cli::parse().command
    else {
        for crd in
            [DatabaseBackup::crd(), DatabaseSnapshot::crd(), DatabaseRestore::crd(), DatabaseSnapshotImport::crd()]
        {
            print!("---\n{}", serde_yaml::to_string(&crd)?);
        }
        return Ok(());
    };
    let filter = EnvFilter::try_from_env("STOWAGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let identity = identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("stowage-operator-{}", std::process::id()));
    let telemetry = Arc::new(Telemetry::default());
    let server = tokio::spawn(Arc::clone(&telemetry).serve(listen));

    let config = kube::Config::infer().await?;
    let client = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&CountRequests(telemetry.api_requests.clone()))
        .build();
    // One set of caches and controllers per watched namespace (or one for all): a watch
    // covers one namespace or every one.
    let mut scopes: Vec<Option<String>> =
        namespaces.into_iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).map(Some).collect();
    if scopes.is_empty() {
        scopes.push(None);
    }
    let mut contexts = Vec::new();
    for scope in scopes {
        let telemetry = Arc::clone(&telemetry);
        let (images, allowed) = (runner_image.clone(), allowed_runner_images.clone());
        contexts.push(Context::new(client.clone(), images, allowed, &identity, telemetry, scope).await?);
    }
    let cronjob_api = contexts.first().map(|c| c.cronjob_api.api_version.clone()).unwrap_or_default();
    let watched: Vec<String> = contexts.iter().filter_map(|c| c.namespace.clone()).collect();
    // Followers are healthy and ready too; only the leader reconciles.
    telemetry.set_ready(true);
    let election = LeaderElection::new(client, &lease_namespace, "stowage-operator", &identity);
    election.acquire().await;
    tracing::info!(cronjob = %cronjob_api, %identity, ?watched, "stowage-operator reconciling");
    tokio::select! {
        _ = futures::future::join_all(contexts.into_iter().map(run)) => Ok(()),
        () = election.keep() => anyhow::bail!("lost leadership; exiting so that a follower takes over"),
        result = server => anyhow::bail!("the telemetry server stopped: {result:?}"),
    }
}
