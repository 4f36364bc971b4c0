//! `stowage-operator`: `run` the controller, or print the `crd`.

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use kube::CustomResourceExt;
use stowage_api::DatabaseBackup;
use stowage_operator::controller::{Context, run};
use stowage_operator::workloads::WorkloadSettings;
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
    /// Reconcile DatabaseBackup resources until stopped.
    Run {
        /// The runner image for backup Jobs.
        #[arg(long, env = "STOWAGE_RUNNER_IMAGE", default_value = "stowage-runner:0.1.0")]
        runner_image: String,
    },
    /// Print the DatabaseBackup CustomResourceDefinition as YAML.
    Crd,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", serde_yaml::to_string(&DatabaseBackup::crd())?),
        Command::Run { runner_image } => {
            let filter = EnvFilter::try_from_env("STOWAGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .init();
            let client = kube::Client::try_default().await?;
            let context = Context::new(client, WorkloadSettings { runner_image }).await?;
            tracing::info!(cronjob = %context.cronjob_api.api_version, "stowage-operator started");
            run(context).await;
        }
    }
    Ok(())
}
