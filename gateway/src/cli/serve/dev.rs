//! `jitsh serve --dev`: kube-sim in-process, ephemeral CAs, demo policy and users, an ssh_config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jitsh_certs::{
    HostCertOptions, RevocationList, UserCertOptions, Verifier, VerifierConfig, generate_ca_key,
    sign_host_certificate, sign_user_certificate,
};
use russh::keys::ssh_key::{Algorithm, LineEnding, PrivateKey};

use super::daemon::{Prepared, Watched};
use crate::audit::{AuditLog, Redactor};
use crate::config::LimitsConfig;
use crate::gateway::{Gateway, Settings};
use crate::kube::KubeAccess;

/// The demo policy.
pub const DEMO_POLICY: &str = include_str!("../../../../deploy/policy/demo.yaml");

/// Runs the development gateway until the process is stopped.
pub async fn run(dir: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    crate::recording::private_dir(&dir.join("users")).context("creating the dev dir")?;
    crate::recording::private_dir(&dir.join("recordings"))?;
    let dir = dir.canonicalize()?;
    let exe = std::env::current_exe()?;
    let sim = kube_sim::SimBuilder::new()
        .fixture(kube_sim::Fixture::Demo)
        .audit_log(dir.join("kube-audit.jsonl"))
        .container_exe(exe)
        .state_dir(dir.join("kube-sim"))
        .start()
        .await
        .context("starting kube-sim")?;
    let kubeconfig = dir.join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig)?;
    let kcfg = kube::Config::from_custom_kubeconfig(
        sim.kubeconfig(),
        &kube::config::KubeConfigOptions {
            context: Some("gateway".into()),
            ..Default::default()
        },
    )
    .await
    .context("gateway kubeconfig")?;

    let user_ca = generate_ca_key("jitsh-dev user CA")?;
    let host_ca = generate_ca_key("jitsh-dev host CA")?;
    let host_key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .map_err(|e| anyhow::anyhow!("host key: {e}"))?;
    let host_cert = sign_host_certificate(
        &host_ca,
        host_key.public_key(),
        &HostCertOptions {
            hostnames: vec!["jitsh".into(), "127.0.0.1".into(), "localhost".into()],
            ttl: Duration::from_secs(24 * 3600),
            key_id: None,
        },
    )?;
    let mut matches = String::new();
    for u in sim.users() {
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .map_err(|e| anyhow::anyhow!("user key: {e}"))?;
        let groups: Vec<&str> = u.groups.iter().map(String::as_str).collect();
        let cert = sign_user_certificate(
            &user_ca,
            key.public_key(),
            &UserCertOptions::new(&u.name, &u.name, &groups, Duration::from_secs(3600)),
        )?;
        let kp = dir.join("users").join(&u.name);
        write_private(&kp, key.to_openssh(LineEnding::LF)?.as_bytes())?;
        std::fs::write(
            dir.join("users").join(format!("{}.pub", u.name)),
            key.public_key().to_openssh()?,
        )?;
        let cp = dir.join("users").join(format!("{}-cert.pub", u.name));
        std::fs::write(&cp, cert.to_openssh()?)?;
        matches.push_str(&format!(
            "\nMatch originalhost jitsh user {}\n  IdentityFile {}\n  CertificateFile {}\n",
            u.name,
            kp.display(),
            cp.display()
        ));
    }
    write_private(
        &dir.join("user_ca"),
        user_ca.to_openssh(LineEnding::LF)?.as_bytes(),
    )?;
    std::fs::write(dir.join("user_ca.pub"), user_ca.public_key().to_openssh()?)?;
    let known_hosts = dir.join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("@cert-authority * {}\n", host_ca.public_key().to_openssh()?),
    )?;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let ssh_config = dir.join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!(
            "Host jitsh\n  HostName {}\n  Port {}\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  HostKeyAlias jitsh\n  IdentitiesOnly yes\n  IdentityAgent none\n  PreferredAuthentications publickey\n  BatchMode yes\n  LogLevel ERROR\n{matches}",
            addr.ip(),
            addr.port(),
            known_hosts.display()
        ),
    )?;

    let policy_file = dir.join("policy.yaml");
    std::fs::write(&policy_file, DEMO_POLICY)?;
    let policy = jitsh_broker_policy::Policy::from_yaml(DEMO_POLICY)
        .map_err(|e| anyhow::anyhow!("demo policy: {e}"))?;
    let limits = LimitsConfig::default();
    let gateway = Arc::new(Gateway::new(
        Verifier::new(VerifierConfig {
            trusted_cas: vec![user_ca.public_key().clone()],
            revocations: RevocationList::empty(),
            ..Default::default()
        }),
        policy,
        AuditLog::open(&dir.join("audit.jsonl"))?,
        KubeAccess::new(kcfg),
        Settings {
            default_namespace: "payments".into(),
            limits: limits.clone(),
            recordings: Some(dir.join("recordings")),
            broker: crate::config::BrokerConfig::default(),
        },
        Redactor::default(),
    ));
    let admin = super::daemon::bind(SocketAddr::new(listen.ip(), 0), "admin").await?;
    let admin_addr = admin.local_addr()?;
    let prepared = Prepared {
        gateway,
        ssh: Arc::new(crate::ssh::ssh_config(host_key, Some(host_cert), &limits)),
        listener,
        admin: Some(admin),
        watched: Watched {
            policy: Some(policy_file.clone()),
            revocations: None,
            interval: Duration::from_secs(1),
            policy_loaded: Some(DEMO_POLICY.as_bytes().to_vec()),
            revocations_loaded: None,
        },
    };
    let f = ssh_config.display();
    println!("jitsh dev gateway listening on {addr}");
    println!("  files in {}", dir.display());
    println!("  admin on http://{admin_addr} (/metrics, /healthz, /readyz)");
    println!(
        "  policy {} (edit it: the gateway reloads it)",
        policy_file.display()
    );
    println!("try:");
    println!("  ssh -F {f} alice@jitsh payments/api-0 -- tail -n 5 /var/log/app.log");
    println!("  ssh -F {f} alice@jitsh payments/api-0 ps aux");
    println!("  ssh -F {f} alice@jitsh payments/api-0 -- rm -rf /      # denied");
    println!("  ssh -F {f} alice@jitsh pods");
    println!("  ssh -F {f} alice@jitsh logs payments/api-0 --tail 5");
    println!("  scp -F {f} alice@jitsh:/payments/api-0/app/fs/var/log/app.log .   # also scp -O");
    println!(
        "  sftp -F {f} alice@jitsh                                       # read-only file tree"
    );
    println!("  ssh -F {f} -N -L 8080:api-0.payments:8080 alice@jitsh          # port-forward");
    println!("  ssh -F {f} alice@jitsh whoami");
    println!(
        "  KUBECONFIG={} kubectl --context admin get pods -A",
        kubeconfig.display()
    );
    println!("  jitsh audit verify {}", dir.join("audit.jsonl").display());
    println!("jitsh dev gateway ready");
    let served = super::daemon::run(prepared).await;
    sim.shutdown().await;
    served
}

fn write_private(p: &PathBuf, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(p);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(p)?;
    f.write_all(bytes)?;
    Ok(())
}
