//! Starting a simulated cluster: [`SimBuilder`] and the [`RunningSim`] handle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::audit::AuditLog;
use crate::error::SimError;
use crate::fixture::{Fixture, FixtureUser, GATEWAY_USER};
use crate::object;
use crate::rbac::UserInfo;
use crate::resources;
use crate::runtime::{Runtime, RuntimeOptions, SandboxMode};
use crate::server::{self, Sim};
use crate::store::{Store, now_rfc3339};
use crate::tls::{ClientCert, ClusterTls};

/// Builds and starts a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimBuilder {
    fixture: Fixture,
    audit_log: Option<PathBuf>,
    container_exe: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    listen: SocketAddr,
    sandbox: SandboxMode,
}

impl Default for SimBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// A running simulated cluster. Dropping it stops the server and the pods' processes.
pub struct RunningSim {
    addr: SocketAddr,
    kubeconfig_yaml: String,
    users: Vec<FixtureUser>,
    audit_log: Option<PathBuf>,
    runtime: Runtime,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    _state: Option<tempfile::TempDir>,
}

impl SimBuilder {
    /// A builder with the demo fixture, no audit log and a fresh temporary state directory.
    pub fn new() -> Self {
        SimBuilder {
            fixture: Fixture::Demo,
            audit_log: None,
            container_exe: None,
            state_dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            sandbox: SandboxMode::Auto,
        }
    }
    /// The fixture to load.
    pub fn fixture(mut self, f: Fixture) -> Self {
        self.fixture = f;
        self
    }
    /// Writes the Kubernetes audit log (JSON lines) to this file.
    pub fn audit_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit_log = Some(path.into());
        self
    }
    /// The executable that runs built-in container images (default: the current executable,
    /// which must dispatch [`crate::runtime::CONTAINER_SUBCOMMAND`]).
    pub fn container_exe(mut self, path: impl Into<PathBuf>) -> Self {
        self.container_exe = Some(path.into());
        self
    }
    /// Where containers' filesystems and logs live (default: a fresh temporary directory).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }
    /// The address to listen on (default 127.0.0.1:0).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }
    /// The container sandbox (default: bubblewrap when it works, else none).
    pub fn sandbox(mut self, mode: SandboxMode) -> Self {
        self.sandbox = mode;
        self
    }

    /// Loads the fixture, starts the pods and serves the API.
    pub async fn start(self) -> Result<RunningSim, SimError> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let data = self.fixture.load()?;
        let tls = ClusterTls::generate()?;
        let admin = tls.client_cert("kube-admin", &["system:masters"])?;
        let (state, tmp) = match self.state_dir {
            Some(d) => {
                std::fs::create_dir_all(&d)
                    .map_err(|e| SimError::io(format!("creating {}", d.display()), e))?;
                (d, None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("kube-sim-")
                    .tempdir()
                    .map_err(|e| SimError::io("creating a state directory", e))?;
                (t.path().to_owned(), Some(t))
            }
        };
        let container_exe = match self.container_exe {
            Some(p) => p,
            None => std::env::current_exe()
                .map_err(|e| SimError::io("locating the current executable", e))?,
        };
        let runtime = Runtime::new(RuntimeOptions {
            container_exe,
            state_dir: state.clone(),
            sandbox: self.sandbox,
        })?;
        let crds = crate::crd::builtin().map_err(|reason| SimError::Fixture {
            path: PathBuf::from("embedded CustomResourceDefinition"),
            reason,
        })?;
        let store = Store::new();
        let crds: Vec<Value> = crds.iter().map(crate::crd::established).collect();
        load_objects(&store, &crds)?;
        load_objects(&store, &data.objects)?;
        start_pods(&store, &runtime).await?;

        let mut tokens = HashMap::new();
        for u in &data.users {
            tokens.insert(
                u.token.clone(),
                UserInfo::new(u.name.clone(), u.groups.clone()),
            );
        }
        tokens.insert(
            "gateway-token".to_owned(),
            UserInfo::new(
                GATEWAY_USER,
                [
                    "system:serviceaccounts".to_owned(),
                    "system:serviceaccounts:jitsh".to_owned(),
                ],
            ),
        );
        let mut client_certs = HashMap::new();
        client_certs.insert(
            admin.der.clone(),
            UserInfo::new("kube-admin", ["system:masters".to_owned()]),
        );
        let audit = match &self.audit_log {
            Some(p) => Some(
                AuditLog::open(p)
                    .map_err(|e| SimError::io(format!("opening audit log {}", p.display()), e))?,
            ),
            None => None,
        };
        let sim = Arc::new(Sim {
            store,
            runtime: runtime.clone(),
            tokens,
            client_certs: Mutex::new(client_certs),
            audit,
        });
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|e| SimError::io(format!("binding {}", self.listen), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| SimError::io("reading the bound address", e))?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(server::serve(
            listener,
            tls.server_config()?,
            sim,
            stop.clone(),
        ));
        Ok(RunningSim {
            addr,
            kubeconfig_yaml: kubeconfig_yaml(addr, &tls.ca_pem, &admin, &data.users),
            users: data.users,
            audit_log: self.audit_log,
            runtime,
            stop,
            task: Some(task),
            _state: tmp,
        })
    }
}

fn load_objects(store: &Store, objects: &[Value]) -> Result<(), SimError> {
    for obj in objects {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let def = resources::all()
            .iter()
            .find(|r| r.kind == kind && r.api_version() == api_version && r.stored())
            .ok_or_else(|| SimError::Fixture {
                path: PathBuf::from("fixture"),
                reason: format!("unsupported object kind {api_version}/{kind}"),
            })?;
        let ns = if def.namespaced {
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_owned()
        } else {
            String::new()
        };
        let mut obj = obj.clone();
        if let Some(o) = obj.as_object_mut() {
            o.remove("apiVersion");
            o.remove("kind");
        }
        // The namespace strategy's PrepareForCreate: a new namespace is Active.
        if def.plural == "namespaces"
            && obj
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .is_none()
        {
            object::set(&mut obj, &["status", "phase"], "Active".into());
        }
        store
            .create(&def.qualified(), &ns, obj)
            .map_err(|e| SimError::Fixture {
                path: PathBuf::from("fixture"),
                reason: e.message,
            })?;
    }
    Ok(())
}

async fn start_pods(store: &Store, runtime: &Runtime) -> Result<(), SimError> {
    let (pods, _) = store.list("pods", None);
    for pod_json in pods {
        let pod: Pod = serde_json::from_value(pod_json.clone()).map_err(|e| SimError::Fixture {
            path: PathBuf::from("fixture"),
            reason: format!("pod: {e}"),
        })?;
        runtime.start_pod(&pod).await?;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let statuses = runtime.container_statuses(&ns, &name).unwrap_or_default();
        let now = now_rfc3339();
        let status = json!({
            "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "hostIP": "127.0.0.1", "startTime": now, "qosClass": "BestEffort",
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": serde_json::to_value(statuses).unwrap_or(Value::Null),
        });
        let _ = store.update("pods", &ns, &name, |cur| {
            let mut next = cur.clone();
            object::set(&mut next, &["status"], status.clone());
            if let Some(m) = next.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            object::set(&mut next, &["spec", "nodeName"], "kube-sim".into());
            Ok(next)
        });
    }
    Ok(())
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn kubeconfig_yaml(
    addr: SocketAddr,
    ca_pem: &str,
    admin: &ClientCert,
    users: &[FixtureUser],
) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n- name: gateway\n  user:\n    token: gateway-token\n",
        b64(ca_pem),
        b64(&admin.cert_pem),
        b64(&admin.key_pem)
    );
    for u in users {
        y.push_str(&format!(
            "- name: {}\n  user:\n    token: {}\n",
            u.name, u.token
        ));
    }
    y.push_str("contexts:\n");
    let mut ctx = |name: &str, ns: &str| {
        y.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: kube-sim\n    user: {name}\n    namespace: {ns}\n"
        ));
    };
    ctx("admin", "default");
    ctx("gateway", "default");
    for u in users {
        ctx(&u.name, "payments");
    }
    y.push_str("current-context: admin\n");
    y
}

impl RunningSim {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The kubeconfig: contexts `admin` (client certificate, cluster-admin), `gateway`
    /// (a ServiceAccount that may only impersonate) and one per fixture user; current context `admin`.
    pub fn kubeconfig(&self) -> kube::config::Kubeconfig {
        kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml).unwrap_or_default()
    }
    /// The kubeconfig as YAML text.
    pub fn kubeconfig_yaml(&self) -> &str {
        &self.kubeconfig_yaml
    }
    /// Writes the kubeconfig (mode 0600).
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), SimError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| SimError::io(format!("writing {}", path.display()), e))?;
        f.write_all(self.kubeconfig_yaml.as_bytes())
            .map_err(|e| SimError::io(format!("writing {}", path.display()), e))
    }
    /// A kube-rs client for one kubeconfig context.
    pub async fn client(&self, context: &str) -> Result<kube::Client, SimError> {
        let err = |reason: String| SimError::Client {
            context: context.to_owned(),
            reason,
        };
        let options = kube::config::KubeConfigOptions {
            context: Some(context.to_owned()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(self.kubeconfig(), &options)
            .await
            .map_err(|e| err(e.to_string()))?;
        kube::Client::try_from(config).map_err(|e| err(e.to_string()))
    }
    /// The fixture's users (name, token, groups).
    pub fn users(&self) -> &[FixtureUser] {
        &self.users
    }
    /// The Kubernetes audit log file, if one is written.
    pub fn audit_log_path(&self) -> Option<&Path> {
        self.audit_log.as_deref()
    }
    /// The container runtime (for tests that write to a container's stdin, for example).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
    /// Stops serving and stops every container process.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.runtime.shutdown().await;
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
