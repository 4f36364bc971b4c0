//! A stand-in for the kubelet, for Pods of backup Jobs: nothing here can run containers,
//! so Pods are run as local processes of the `stowage` binary with the environment a
//! kubelet would give them (values, Secret keys, field references) and their ConfigMap
//! volumes in local directories, authenticated with a token of the Pod's ServiceAccount;
//! their phase is then reported so that the real Job controller completes or fails the Job.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, PodSpec, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::Result;
use crate::kube::ClusterAccess;

/// Runs the Pods of the operator's Jobs (labelled `app.kubernetes.io/managed-by=stowage-operator`) until dropped.
#[derive(Debug)]
pub struct FakeKubelet {
    task: JoinHandle<()>,
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How Pods are run.
#[derive(Debug, Clone)]
pub struct PodRuntime {
    /// The image that "exists": Pods of any other image fail as if it could not be pulled.
    pub runner_image: String,
    /// The binary standing in for that image's entry point.
    pub binary: PathBuf,
    /// Environment added to every Pod (e.g. where the builtin plugins are).
    pub extra_env: Vec<(String, String)>,
}

impl FakeKubelet {
    pub fn start(access: ClusterAccess, client: Client, runtime: PodRuntime) -> Self {
        let task = tokio::spawn(async move {
            let pods: Api<Pod> = Api::all(client.clone());
            let mut handled = HashSet::new();
            loop {
                if let Ok(listed) =
                    pods.list(&ListParams::default().labels("app.kubernetes.io/managed-by=stowage-operator")).await
                {
                    for pod in listed.items {
                        let pending =
                            pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_none_or(|p| p == "Pending");
                        if pending
                            && handled.insert(pod.uid().unwrap_or_default())
                            && let Err(error) = run_pod(&access, &client, &runtime, &pod).await
                        {
                            eprintln!("fake kubelet: pod {}: {error:#}", pod.name_any());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        FakeKubelet { task }
    }
}

async fn set_phase(client: &Client, pod: &Pod, phase: &str, reason: Option<&str>) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let status = json!({"status": {"phase": phase, "reason": reason}});
    pods.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}

/// An env var's value as a kubelet resolves it; `None` for a missing optional key.
async fn resolve(client: &Client, namespace: &str, pod: &Pod, var: &EnvVar) -> Result<Option<String>> {
    if let Some(value) = &var.value {
        return Ok(Some(value.clone()));
    }
    let Some(source) = &var.value_from else { return Ok(Some(String::new())) };
    if let Some(field) = &source.field_ref {
        return Ok(match field.field_path.as_str() {
            "metadata.namespace" => Some(namespace.to_owned()),
            "metadata.name" => Some(pod.name_any()),
            other => match other.strip_prefix("metadata.labels['").and_then(|rest| rest.strip_suffix("']")) {
                Some(label) => Some(pod.labels().get(label).cloned().unwrap_or_default()),
                None => anyhow::bail!("field {other} is not supported by the fake kubelet"),
            },
        });
    }
    let key = source.secret_key_ref.as_ref().context("only values, fieldRef and secretKeyRef are supported")?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let value = secrets
        .get_opt(&key.name)
        .await?
        .and_then(|secret| secret.data)
        .and_then(|data| data.get(&key.key).map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned()));
    match value {
        Some(value) => Ok(Some(value)),
        None if key.optional == Some(true) => Ok(None),
        None => anyhow::bail!("secret {}/{} is missing and not optional", key.name, key.key),
    }
}

async fn run_pod(access: &ClusterAccess, client: &Client, runtime: &PodRuntime, pod: &Pod) -> Result<()> {
    let namespace = pod.namespace().unwrap_or_default();
    let spec = pod.spec.clone().context("pod without spec")?;
    let container = spec.containers.first().context("pod without containers")?;
    if container.image.as_deref() != Some(runtime.runner_image.as_str()) {
        return set_phase(client, pod, "Failed", Some("ErrImagePull")).await;
    }
    let volumes = tempfile::tempdir()?;
    let mounts = mount_config_maps(client, &namespace, &spec, container, volumes.path()).await?;
    let mut env = Vec::new();
    for var in container.env.clone().unwrap_or_default() {
        if let Some(value) = resolve(client, &namespace, pod, &var).await? {
            // A path inside a mount is that path in the mount's local directory.
            let local = mounts.iter().find_map(|(mount, dir)| {
                value.strip_prefix(mount.as_str()).map(|rest| format!("{}{rest}", dir.display()))
            });
            env.push((var.name, local.unwrap_or(value)));
        }
    }
    let account = spec.service_account_name.clone().unwrap_or_else(|| "default".into());
    let token = access.service_account_token(&namespace, &account).await?;
    let kubeconfig = access.write_kubeconfig(&format!("pod-{}", pod.name_any()), &token)?;
    env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    env.extend(runtime.extra_env.iter().cloned());
    set_phase(client, pod, "Running", None).await?;
    let (binary, args) = (runtime.binary.clone(), container.args.clone().unwrap_or_default());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .args(args)
            .output()
    })
    .await??;
    if !output.status.success() {
        eprintln!("fake kubelet: pod {} failed:\n{}", pod.name_any(), String::from_utf8_lossy(&output.stderr));
    }
    let phase = if output.status.success() { "Succeeded" } else { "Failed" };
    set_phase(client, pod, phase, None).await
}

/// Write the Pod's ConfigMap volumes under `root` as a kubelet does (the keys `items`
/// names, or all; a missing ConfigMap or key skipped where optional, else the Pod cannot
/// start); the container's mount points and their directories.
async fn mount_config_maps(
    client: &Client,
    namespace: &str,
    spec: &PodSpec,
    container: &Container,
    root: &std::path::Path,
) -> Result<Vec<(String, PathBuf)>> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut mounts = Vec::new();
    for volume in spec.volumes.iter().flatten() {
        let Some(source) = &volume.config_map else { continue };
        let optional = source.optional == Some(true);
        let dir = root.join(&volume.name);
        std::fs::create_dir_all(&dir)?;
        let map = maps.get_opt(&source.name).await?;
        anyhow::ensure!(map.is_some() || optional, "ConfigMap {} of volume {} is missing", source.name, volume.name);
        let map = map.unwrap_or_default();
        let value = |key: &str| {
            let binary = map.binary_data.as_ref().and_then(|data| data.get(key)).map(|bytes| bytes.0.clone());
            binary.or_else(|| map.data.as_ref().and_then(|data| data.get(key)).map(|text| text.clone().into_bytes()))
        };
        let keys: Vec<(String, String)> = match &source.items {
            Some(items) => items.iter().map(|item| (item.key.clone(), item.path.clone())).collect(),
            None => {
                let binary = map.binary_data.iter().flat_map(|data| data.keys());
                binary.chain(map.data.iter().flat_map(|data| data.keys())).map(|k| (k.clone(), k.clone())).collect()
            }
        };
        for (key, path) in keys {
            match value(&key) {
                Some(bytes) => std::fs::write(dir.join(path), bytes)?,
                None => anyhow::ensure!(optional, "ConfigMap {} has no key {key}", source.name),
            }
        }
        for mount in container.volume_mounts.iter().flatten().filter(|mount| mount.name == volume.name) {
            mounts.push((mount.mount_path.clone(), dir.clone()));
        }
    }
    Ok(mounts)
}

/// SIGKILL the runner processes of resource `name` (found by their environment), as a
/// node failure or the OOM killer would; returns how many there were.
pub fn kill_runners_of(name: &str) -> usize {
    let marker = format!("BACKUP_RESOURCE_NAME={name}");
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|pid| pid.parse::<u32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        if environ.split(|byte| *byte == 0).any(|var| var == marker.as_bytes())
            && std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().is_ok_and(|s| s.success())
        {
            killed += 1;
        }
    }
    killed
}
