//! `jitsh login` (exchange an OIDC ID token for a short-lived SSH certificate) and
//! `jitsh issuer` (run the issuer on its own).

use crate::issuer::{BreakGlassRequest, IssueReply, IssueRequest};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use jitsh_certs::ssh_key::{Algorithm, Certificate, LineEnding, PrivateKey};

/// Arguments of `jitsh issuer`.
#[derive(Debug, clap::Args)]
pub struct IssuerArgs {
    /// Issuer configuration file (YAML; see docs/certificates.md).
    #[arg(long)]
    pub config: PathBuf,
}

/// Arguments of `jitsh login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Base URL of the certificate issuer, e.g. https://gw:8443.
    #[arg(long)]
    pub issuer: String,
    /// Read the OIDC ID token from this file.
    #[arg(long, conflicts_with = "token_command")]
    pub token_file: Option<PathBuf>,
    /// Run this command (with `sh -c`, on your own machine) and use its output as the ID token.
    #[arg(long)]
    pub token_command: Option<String>,
    /// The SSH private key to certify (generated if missing); the certificate goes to KEY-cert.pub.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Requested lifetime (the issuer caps it).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// CA certificate (PEM) that signed the issuer's TLS certificate.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Ask for a break-glass certificate for this incident.
    #[arg(long, value_name = "INCIDENT", requires = "reason")]
    pub break_glass: Option<String>,
    /// Why break-glass is needed.
    #[arg(long)]
    pub reason: Option<String>,
}

/// Runs `jitsh issuer`.
pub fn run_issuer(args: IssuerArgs) -> ExitCode {
    // Issuance events are log lines on stderr until the gateway's audit sink exists.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
    let result = (|| -> anyhow::Result<()> {
        let cfg = crate::issuer::IssuerConfig::load(&args.config)?;
        let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
        rt.block_on(async {
            let running = crate::issuer::start(cfg).await?;
            println!("jitsh issuer listening on https://{}", running.addr);
            tokio::select! {
                () = running.wait() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(())
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jitsh: issuer: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs `jitsh login`.
pub fn run_login(args: LoginArgs) -> ExitCode {
    match login(args) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jitsh: login: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn id_token(args: &LoginArgs) -> anyhow::Result<String> {
    let token = if let Some(f) = &args.token_file {
        std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
    } else if let Some(cmd) = &args.token_command {
        let out = std::process::Command::new("sh")
            .args(["-c", cmd])
            .output()
            .context("running --token-command")?;
        if !out.status.success() {
            bail!("--token-command exited with {}", out.status);
        }
        String::from_utf8(out.stdout).context("--token-command printed non-UTF-8")?
    } else {
        std::env::var("JITSH_ID_TOKEN")
            .context("no ID token: use --token-file, --token-command or JITSH_ID_TOKEN")?
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("the ID token is empty");
    }
    Ok(token)
}

fn default_key() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set; pass --key")?;
    Ok(Path::new(&home).join(".ssh").join("id_ed25519"))
}

/// Loads the key, or makes an ed25519 key there (0600) with its .pub.
fn ensure_key(path: &Path) -> anyhow::Result<PrivateKey> {
    if path.exists() {
        return PrivateKey::read_openssh_file(path)
            .with_context(|| format!("reading {}", path.display()));
    }
    if let Some(dir) = path.parent() {
        // ~/.ssh and the like: the gateway's user only (0700), as ssh expects.
        crate::recording::private_dir(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let key =
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).context("generating a key")?;
    let text = key.to_openssh(LineEnding::LF).context("encoding the key")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    std::fs::write(
        path.with_extension("pub"),
        format!("{}\n", key.public_key().to_openssh()?),
    )?;
    eprintln!("jitsh: generated {}", path.display());
    Ok(key)
}

fn login(args: LoginArgs) -> anyhow::Result<String> {
    let token = id_token(&args)?;
    let key_path = match &args.key {
        Some(k) => k.clone(),
        None => default_key()?,
    };
    let key = ensure_key(&key_path)?;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(ca) = &args.ca_cert {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{}: not PEM certificates", ca.display()))?;
        http = http.tls_certs_only(certs);
    }
    let http = http.build().context("building the HTTPS client")?;
    let body = IssueRequest {
        public_key: key.public_key().to_openssh()?,
        ttl: args.ttl,
        break_glass: args.break_glass.as_ref().map(|incident| BreakGlassRequest {
            incident: incident.clone(),
            reason: args.reason.clone().unwrap_or_default(),
        }),
    };
    let url = format!("{}/v1/certificates", args.issuer.trim_end_matches('/'));
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let (status, reply): (reqwest::StatusCode, IssueReply) = rt.block_on(async {
        let resp = http
            .post(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let reply = resp.json().await.context("decoding the issuer's answer")?;
        anyhow::Ok((status, reply))
    })?;
    if !status.is_success() {
        bail!(
            "the issuer refused ({}): {}: {}",
            status.as_u16(),
            reply.error.as_deref().unwrap_or("error"),
            reply.detail.as_deref().unwrap_or("")
        );
    }
    let text = reply
        .certificate
        .as_deref()
        .context("the issuer's answer has no certificate")?;
    let cert =
        Certificate::from_openssh(text).context("the issuer returned an invalid certificate")?;
    if cert.public_key() != key.public_key().key_data() {
        bail!("the issuer certified a different key");
    }
    let out = crate::cli::ca::cert_path_for(&key_path.with_extension("pub"));
    std::fs::write(&out, format!("{text}\n"))
        .with_context(|| format!("writing {}", out.display()))?;
    let groups = cert
        .extensions()
        .get(jitsh_certs::GROUPS_EXTENSION)
        .cloned()
        .unwrap_or_default();
    Ok(format!(
        "wrote {}\nidentity:  {}\nprincipal: {}\ngroups:    {}\nexpires:   {}",
        out.display(),
        cert.key_id(),
        cert.valid_principals().join(","),
        if groups.is_empty() { "-" } else { &groups },
        reply.valid_before.as_deref().unwrap_or("?")
    ))
}
