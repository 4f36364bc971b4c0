//! `./dev demo`: everything on loopback, printing each command as a user would type it.
//! A throwaway PostgreSQL with sample data (every kind of schema object, awkward names,
//! NULLs, bytea, arrays, jsonb, partitions), SeaweedFS as S3, then: the runner on its own
//! (inspect, backup, list, verify, restore into a new database, compared with the source),
//! and the Kubernetes path: control plane, `kubectl apply -k deploy/`, the operator, and a
//! DatabaseBackup applied with kubectl whose Job backs up and reports in its status.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use stowage_tests::cluster::{Cluster, NAMESPACE};
use stowage_tests::kube::kubectl;
use stowage_tests::postgres::{PASSWORD, Postgres, SCRAM_USER};
use stowage_tests::stowage::command;

fn step(args: &[&str], env: &[(String, String)]) -> anyhow::Result<()> {
    println!("\n$ stowage {}", args.join(" "));
    let status = command(args, env)?.status().context("running stowage")?;
    anyhow::ensure!(status.success(), "stowage {} failed", args[0]);
    Ok(())
}

fn show(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
    println!("\n$ kubectl {}", args.join(" "));
    let output = kubectl(kubeconfig, args)?;
    print!("{output}");
    Ok(output)
}

fn sql(postgres: &Postgres, database: &str, query: &str) -> anyhow::Result<String> {
    println!("\n$ psql -d {database} -c \"{query}\"");
    let output = postgres.psql(database, query)?;
    print!("{output}");
    Ok(output)
}

/// Row counts of the sample's tables.
const COUNTS: &str = "SELECT 'customers', count(*) FROM shop.customers UNION ALL SELECT 'orders', count(*) FROM shop.orders \
                      UNION ALL SELECT 'events', count(*) FROM shop.events UNION ALL SELECT 'order_stats', count(*) FROM shop.order_stats";

const RESOURCE: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: shop-db
  namespace: shop
stringData:
  password: PASSWORD
---
apiVersion: stowage.dev/v1alpha1
kind: DatabaseBackup
metadata:
  name: shop
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
    builtin: postgres
  database:
    endpoint: 127.0.0.1:PORT
    name: shop
    user: postgres
    passwordSecret:
      name: shop-db
      key: password
  manualTrigger:
    enabled: true
    time: "2026-11-23T10:00:00Z"
    repo: local-s3
  retention:
    keepLast: 7
"#;

/// One line saying what failed and how to fix it; the backtrace only with RUST_BACKTRACE.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match demo().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if std::env::var_os("RUST_BACKTRACE").is_some() {
                eprintln!("{}", error.backtrace());
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn demo() -> anyhow::Result<()> {
    println!(
        "==> starting PostgreSQL 15, SeaweedFS (S3), etcd, kube-apiserver and kube-controller-manager on loopback"
    );
    let postgres = Postgres::start()?;
    postgres.psql("postgres", "CREATE DATABASE shop")?;
    postgres.psql_file("shop", &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/postgres/rich.sql"))?;
    let cluster = Cluster::start().await?;
    let mut env = cluster.s3.env();
    env.push(("STOWAGE_LOG".into(), "info,cranelift_codegen=warn,wasmtime=warn,aws=warn".into()));
    env.push(("STOWAGE_DATABASE_PASSWORD".into(), PASSWORD.into()));
    println!("    PostgreSQL 127.0.0.1:{} (database shop: tests/fixtures/postgres/rich.sql)", postgres.port);
    println!("    S3 endpoint {}, bucket backups; API server {}", cluster.s3.endpoint, cluster.plane.server);
    let source = postgres.url(SCRAM_USER, "shop");
    let restored = postgres.url(SCRAM_USER, "shop_restored");

    println!("\n==> 1. the runner on its own (password from STOWAGE_DATABASE_PASSWORD)");
    let config = ["--repo", "s3://backups/cli", "--namespace", "shop", "--name", "shop"];
    step(&["plugin", "inspect", "--plugin", "postgres"], &env)?;
    step(
        &[&["backup", "--plugin", "postgres", "--database", &source, "--keep-last", "3"], &config[..]].concat(),
        &env,
    )?;
    step(&["list", "--repo", "s3://backups/cli"], &env)?;
    step(&[&["verify", "--backup", "latest"], &config[..]].concat(), &env)?;
    step(
        &[&["restore", "--plugin", "postgres", "--database", &restored, "--backup", "latest"], &config[..]].concat(),
        &env,
    )?;
    let before = sql(&postgres, "shop", COUNTS)?;
    let after = sql(&postgres, "shop_restored", COUNTS)?;
    anyhow::ensure!(before == after, "the restored database differs");
    anyhow::ensure!(
        postgres.schema("shop")? == postgres.schema("shop_restored")?,
        "pg_dump --schema-only of the restored database differs"
    );
    println!("\n    shop_restored equals shop: same rows, and pg_dump --schema-only prints the same schema");

    println!("\n==> 2. the operator: deploy/ is applied, the operator runs as its ServiceAccount,");
    println!("       and a kubelet stand-in runs backup Pods with the stowage binary");
    let access = cluster.plane.access();
    let kubeconfig = access.write_kubeconfig("demo", access.admin_token())?;
    let resource = RESOURCE
        .replace("ENDPOINT", &cluster.s3.endpoint)
        .replace("PORT", &postgres.port.to_string())
        .replace("PASSWORD", PASSWORD);
    let file = std::env::temp_dir().join(format!("stowage-demo-{}.yaml", std::process::id()));
    std::fs::write(&file, &resource)?;
    println!("\n$ cat databasebackup.yaml\n{}", resource.replace(PASSWORD, "<the database password>"));
    show(&kubeconfig, &["apply", "-f", file.to_str().context("temp path")?])?;
    let backups = cluster.backups();
    let start = Instant::now();
    loop {
        let status = backups.get("shop").await?.status.unwrap_or_default();
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
    show(&kubeconfig, &["get", "jobs", "-n", NAMESPACE, "-l", "stowage.dev/backup=shop"])?;
    // The runner identity the namespace's backups share.
    show(&kubeconfig, &["get", "serviceaccounts,rolebindings", "-n", NAMESPACE, "-l", "app.kubernetes.io/managed-by"])?;
    show(&kubeconfig, &["get", "databasebackup", "shop", "-n", NAMESPACE, "-o", "jsonpath={.status}"])?;
    println!();
    step(&["list", "--repo", "s3://backups/k8s"], &env)?;
    println!("\n==> done: a PostgreSQL database backed up, verified, restored and compared, and backed up");
    println!("    again by a DatabaseBackup resource through the operator");
    Ok(())
}
