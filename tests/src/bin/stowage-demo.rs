//! `./dev demo`: everything on loopback, printing each command as a user would type it.
//! First the runner alone (inspect, backup, list, verify, restore against S3), then the
//! Kubernetes path: control plane, `kubectl apply -k deploy/`, the operator, and a
//! DatabaseBackup applied with kubectl whose Job backs up and reports in its status.

use std::time::{Duration, Instant};

use anyhow::Context;
use stowage_tests::cluster::{Cluster, NAMESPACE};
use stowage_tests::kube::kubectl;
use stowage_tests::stowage::command;

fn step(args: &[&str], env: &[(String, String)]) -> anyhow::Result<()> {
    println!("\n$ stowage {}", args.join(" "));
    let status = command(args, env)?.status().context("running stowage")?;
    anyhow::ensure!(status.success(), "stowage {} failed", args[0]);
    Ok(())
}

fn show(kubeconfig: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    println!("\n$ kubectl {}", args.join(" "));
    let output = kubectl(kubeconfig, args)?;
    print!("{output}");
    Ok(output)
}

const RESOURCE: &str = r#"apiVersion: stowage.dev/v1alpha1
kind: DatabaseBackup
metadata:
  name: orders
  namespace: shop
spec:
  repos:
  - name: local-s3
    type: s3
    secretName: s3
    serviceEndpoint: ENDPOINT
    bucket: backups
    prefix: k8s
  plugin:
    builtin: generator
  database:
    endpoint: 127.0.0.1:9
    name: orders
    options:
      artifacts: "3"
      size: "20000000"
  manualTrigger:
    enabled: true
    time: "2026-11-23T10:00:00Z"
    repo: local-s3
  retention:
    keepLast: 7
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("==> starting SeaweedFS (S3), etcd, kube-apiserver and kube-controller-manager on loopback");
    let cluster = Cluster::start().await?;
    let mut env = cluster.s3.env();
    env.push(("STOWAGE_LOG".into(), "info,cranelift_codegen=warn,wasmtime=warn,aws=warn".into()));
    println!("    S3 endpoint {}, bucket backups; API server {}", cluster.s3.endpoint, cluster.plane.server);

    println!("\n==> 1. the runner on its own");
    let config = ["--repo", "s3://backups/cli", "--namespace", "shop", "--name", "orders"];
    let data = ["--option", "artifacts=4", "--option", "size=50000000"];
    step(&["plugin", "inspect", "--plugin", "generator"], &env)?;
    step(&[&["backup", "--plugin", "generator", "--keep-last", "3"], &config[..], &data[..]].concat(), &env)?;
    step(&["list", "--repo", "s3://backups/cli"], &env)?;
    step(&[&["verify", "--backup", "latest"], &config[..]].concat(), &env)?;
    step(&[&["restore", "--plugin", "generator", "--backup", "latest"], &config[..], &data[..]].concat(), &env)?;

    println!("\n==> 2. the operator: deploy/ is applied, the operator runs as its ServiceAccount,");
    println!("       and a kubelet stand-in runs backup Pods with the stowage binary");
    let access = cluster.plane.access();
    let kubeconfig = access.write_kubeconfig("demo", access.admin_token())?;
    let resource = RESOURCE.replace("ENDPOINT", &cluster.s3.endpoint);
    let file = std::env::temp_dir().join(format!("stowage-demo-{}.yaml", std::process::id()));
    std::fs::write(&file, &resource)?;
    println!("\n$ cat databasebackup.yaml\n{resource}");
    show(&kubeconfig, &["apply", "-f", file.to_str().context("temp path")?])?;
    let backups = cluster.backups();
    let start = Instant::now();
    loop {
        let status = backups.get("orders").await?.status.unwrap_or_default();
        let done = status.conditions.iter().find(|c| c.type_ == "Succeeded" && c.status != "Unknown");
        if let Some(condition) = done {
            anyhow::ensure!(condition.status == "True", "the backup failed: {}", condition.message);
            break;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(120), "no backup within two minutes");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = std::fs::remove_file(&file);
    show(&kubeconfig, &["get", "databasebackups", "-n", NAMESPACE])?;
    show(&kubeconfig, &["get", "jobs,serviceaccounts,roles", "-n", NAMESPACE, "-l", "stowage.dev/backup=orders"])?;
    show(&kubeconfig, &["get", "databasebackup", "orders", "-n", NAMESPACE, "-o", "jsonpath={.status}"])?;
    println!();
    step(&["list", "--repo", "s3://backups/k8s"], &env)?;
    println!("\n==> done: backups stored, verified, restored, and made by a DatabaseBackup resource");
    Ok(())
}
