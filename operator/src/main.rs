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
    },
    /// Print the CustomResourceDefinitions (DatabaseBackup, DatabaseSnapshot, DatabaseRestore,
    /// DatabaseSnapshotImport) as YAML.
    Crd,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Run { runner_image, allowed_runner_images, listen, lease_namespace, identity } = Cli::parse().command
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
    let context =
        Context::new(client.clone(), runner_image, allowed_runner_images, &identity, Arc::clone(&telemetry)).await?;
    // Followers are healthy and ready too; only the leader reconciles.
    telemetry.set_ready(true);
    let election = LeaderElection::new(client, &lease_namespace, "stowage-operator", &identity);
    election.acquire().await;
    tracing::info!(cronjob = %context.cronjob_api.api_version, %identity, "stowage-operator reconciling");
    tokio::select! {
        () = run(context) => Ok(()),
        () = election.keep() => anyhow::bail!("lost leadership; exiting so that a follower takes over"),
        result = server => anyhow::bail!("the telemetry server stopped: {result:?}"),
    }
}
