//! `./dev demo`: a real backup, listing, verification and restore through the `stowage`
//! binary against a local S3 server, printing each command as a user would type it.

use anyhow::Context;
use stowage_tests::seaweedfs::SeaweedFs;
use stowage_tests::stowage::command;

fn step(args: &[&str], env: &[(String, String)]) -> anyhow::Result<()> {
    println!("\n$ stowage {}", args.join(" "));
    let status = command(args, env)?.status().context("running stowage")?;
    anyhow::ensure!(status.success(), "stowage {} failed", args[0]);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    println!("==> starting SeaweedFS, an S3-compatible server, on loopback");
    let server = SeaweedFs::start()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(server.create_bucket("demo"))?;
    let mut env = server.env();
    env.push(("STOWAGE_LOG".into(), "info,cranelift_codegen=warn,wasmtime=warn,aws=warn".into()));
    println!("    endpoint {} (AWS_ENDPOINT_URL), bucket demo", server.endpoint);

    let config = ["--repo", "s3://demo/backups", "--namespace", "shop", "--name", "orders"];
    let data = ["--option", "artifacts=4", "--option", "size=50000000"];
    step(&["plugin", "inspect", "--plugin", "generator"], &env)?;
    step(&[&["backup", "--plugin", "generator", "--keep-last", "3"], &config[..], &data[..]].concat(), &env)?;
    step(&["list", "--repo", "s3://demo/backups"], &env)?;
    step(&[&["verify", "--backup", "latest"], &config[..]].concat(), &env)?;
    step(&[&["restore", "--plugin", "generator", "--backup", "latest"], &config[..], &data[..]].concat(), &env)?;
    println!("\n==> done: the backup was stored, verified and restored byte for byte");
    Ok(())
}
