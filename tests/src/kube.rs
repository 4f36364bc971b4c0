//! A real Kubernetes control plane on loopback: etcd and kube-apiserver built from
//! Debian's source package (see `scripts/setup/kube.sh`), with TLS, token
//! authentication, RBAC and service-account tokens.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tempfile::TempDir;

use crate::{Result, cache_dir, free_port};

const ADMIN_TOKEN: &str = "stowage-test-admin-token";

/// etcd + kube-apiserver; stopped and deleted on drop.
#[derive(Debug)]
pub struct ControlPlane {
    processes: Vec<Child>,
    dir: TempDir,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new("openssl").current_dir(dir).args(args).output().context("running openssl")?;
    anyhow::ensure!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

fn spawn(dir: &Path, name: &str, command: &mut Command) -> Result<Child> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    command.stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log));
    command.spawn().with_context(|| format!("starting {name}"))
}

impl ControlPlane {
    /// The directory of the kube binaries installed by `./dev setup`.
    pub fn bin_dir() -> Result<PathBuf> {
        let bin = cache_dir().join("kube/bin");
        anyhow::ensure!(
            bin.join("kube-apiserver").is_file(),
            "{} has no kube-apiserver: run ./dev setup",
            bin.display()
        );
        Ok(bin)
    }

    /// Start etcd and the API server and wait until the API answers.
    pub async fn start() -> Result<Self> {
        Self::start_components(false).await
    }

    /// Also start kube-controller-manager (Job, CronJob, garbage collector, ...), without
    /// the node, cloud and volume controllers: nothing here runs Pods.
    pub async fn start_with_controllers() -> Result<Self> {
        Self::start_components(true).await
    }

    async fn start_components(controllers: bool) -> Result<Self> {
        let bin = Self::bin_dir()?;
        let dir = tempfile::tempdir()?;
        let path = dir.path();
        openssl(
            path,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=stowage-test-ca",
            ],
        )?;
        openssl(
            path,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "apiserver.key",
                "-out",
                "apiserver.csr",
                "-subj",
                "/CN=kube-apiserver",
            ],
        )?;
        std::fs::write(path.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n")?;
        openssl(
            path,
            &[
                "x509",
                "-req",
                "-in",
                "apiserver.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "apiserver.crt",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        )?;
        openssl(path, &["genrsa", "-out", "sa.key", "2048"])?;
        openssl(path, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
        std::fs::write(path.join("tokens.csv"), format!("{ADMIN_TOKEN},admin,admin,system:masters\n"))?;

        let (client_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd = spawn(
            path,
            "etcd",
            Command::new("etcd")
                .arg(format!("--data-dir={}", path.join("etcd").display()))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client_port}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client_port}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer_port}")),
        )?;
        let mut processes = vec![etcd];
        let file = |name: &str| path.join(name).display().to_string();
        let apiserver = spawn(
            path,
            "kube-apiserver",
            Command::new(bin.join("kube-apiserver"))
                .arg(format!("--etcd-servers=http://127.0.0.1:{client_port}"))
                .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--insecure-port=0"])
                .arg(format!("--secure-port={api_port}"))
                .arg(format!("--cert-dir={}", file("certs")))
                .arg(format!("--tls-cert-file={}", file("apiserver.crt")))
                .arg(format!("--tls-private-key-file={}", file("apiserver.key")))
                .arg(format!("--client-ca-file={}", file("ca.crt")))
                .arg(format!("--token-auth-file={}", file("tokens.csv")))
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!("--service-account-key-file={}", file("sa.pub")))
                .arg(format!("--service-account-signing-key-file={}", file("sa.key")))
                .args(["--service-cluster-ip-range=10.96.0.0/24", "--authorization-mode=RBAC"])
                .args(["--endpoint-reconciler-type=none", "--feature-gates=TTLAfterFinished=true"]),
        );
        match apiserver {
            Ok(child) => processes.push(child),
            Err(error) => {
                for mut process in processes {
                    let _ = process.kill();
                }
                return Err(error);
            }
        }
        let mut plane = ControlPlane { processes, dir, server: format!("https://127.0.0.1:{api_port}") };
        plane.wait_ready().await?;
        if controllers {
            let kubeconfig = plane.access().write_kubeconfig("controller-manager", ADMIN_TOKEN)?;
            let path = plane.dir.path().to_path_buf();
            let file = |name: &str| path.join(name).display().to_string();
            let manager = spawn(
                &path,
                "kube-controller-manager",
                Command::new(bin.join("kube-controller-manager"))
                    .arg(format!("--kubeconfig={}", kubeconfig.display()))
                    .args(["--leader-elect=false", "--port=0", "--secure-port=0", "--use-service-account-credentials=false"])
                    .arg(format!("--service-account-private-key-file={}", file("sa.key")))
                    .arg(format!("--root-ca-file={}", file("ca.crt")))
                    .arg(
                        "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-attachdetach,-route,-service,\
                         -persistentvolume-binder,-persistentvolume-expander,-pv-protection,-pvc-protection,-csrsigning,\
                         -csrapproving,-csrcleaner,-ttl",
                    )
                    .arg("--feature-gates=TTLAfterFinished=true,CronJobControllerV2=true"),
            )?;
            plane.processes.push(manager);
        }
        Ok(plane)
    }

    async fn wait_ready(&self) -> Result<()> {
        let client = self.client().await?;
        let mut last_error = String::new();
        for _ in 0..300 {
            match client.apiserver_version().await {
                Ok(_) => {
                    // RBAC bootstrap roles appear shortly after the API answers.
                    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
                    if roles.get_opt("admin").await.ok().flatten().is_some() {
                        return Ok(());
                    }
                }
                Err(error) => last_error = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the API server did not become ready: {last_error}\n{}", self.log_tail("kube-apiserver"))
    }

    /// The last lines of a component's log.
    pub fn log_tail(&self, name: &str) -> String {
        let log = std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// What it takes to reach the API server as anyone.
    pub fn access(&self) -> ClusterAccess {
        ClusterAccess { server: self.server.clone(), dir: self.dir.path().to_path_buf() }
    }

    /// A client with cluster-admin rights.
    pub async fn client(&self) -> Result<Client> {
        self.access().client().await
    }
}

/// The API server's address and CA, to build kubeconfigs and tokens; cheap to clone.
#[derive(Debug, Clone)]
pub struct ClusterAccess {
    pub server: String,
    dir: PathBuf,
}

impl ClusterAccess {
    /// A kubeconfig that authenticates with `token`.
    pub fn kubeconfig(&self, token: &str) -> Result<String> {
        let ca = std::fs::read(self.dir.join("ca.crt"))?;
        let ca = base64::engine::general_purpose::STANDARD.encode(ca);
        Ok(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n\
             users:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: user\n\
             current-context: test\n",
            self.server
        ))
    }

    /// Write a kubeconfig for `token` into the control plane's directory; returns its path.
    pub fn write_kubeconfig(&self, name: &str, token: &str) -> Result<PathBuf> {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, self.kubeconfig(token)?)?;
        Ok(path)
    }

    /// The token of a cluster administrator.
    pub fn admin_token(&self) -> &'static str {
        ADMIN_TOKEN
    }

    /// A client with cluster-admin rights.
    pub async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::from_yaml(&self.kubeconfig(ADMIN_TOKEN)?)?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// A token of a ServiceAccount, as the kubelet would mount into its Pods.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> Result<String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client().await?, namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec!["https://kubernetes.default.svc".into()]),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created: TokenRequest = accounts
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .context("creating a service account token")?;
        created.status.and_then(|status| status.token).context("the token request returned no token")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for process in self.processes.iter_mut().rev() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

/// Run kubectl in the repository's root with `kubeconfig`; returns its stdout.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .context("running kubectl")?;
    crate::checked(output, &format!("kubectl {args:?}"))
}

/// `kubectl apply -k deploy/`, the standard deployment. Without kubectl's client-side
/// validation: it checks against the test API server's (1.20) OpenAPI, which predates the
/// CRDs' CEL rules (`x-kubernetes-validations`, 1.25+); the server itself drops them.
pub fn apply_deployment(kubeconfig: &Path) -> Result<String> {
    kubectl(kubeconfig, &["apply", "-k", "deploy/", "--validate=false"])
}
