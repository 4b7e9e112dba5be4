//! `jitsh ca init|sign|sign-host|verify`: the SSH certificate authority for operators.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use jitsh_certs::ssh_key::{Certificate, LineEnding, PrivateKey, PublicKey};
use jitsh_certs::{
    HostCertOptions, Presented, RevocationList, UserCertOptions, Verifier, VerifierConfig,
};

/// Certificate authority subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Create an ed25519 user CA and host CA: DIR/user_ca(.pub) and DIR/host_ca(.pub). Refuses to overwrite.
    Init {
        /// Directory to write the CA keys into (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Sign a user's public key; writes KEY-cert.pub beside KEY.pub.
    Sign {
        /// The user CA private key.
        #[arg(long)]
        ca: PathBuf,
        /// Identity, stored as the key ID (e.g. alice@example.com).
        #[arg(long)]
        identity: String,
        /// Principal(s): the SSH user name(s), comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        principal: Vec<String>,
        /// Groups, comma-separated (extension groups@jitsh.dev).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Lifetime, e.g. 15m, 1h.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Serial number (default: random).
        #[arg(long)]
        serial: Option<u64>,
        /// Restrict use to these addresses/CIDRs (critical option source-address), comma-separated.
        #[arg(long, value_delimiter = ',')]
        source_address: Vec<String>,
        /// Mark as a break-glass certificate for this incident (extension break-glass@jitsh.dev).
        #[arg(long, value_name = "INCIDENT")]
        break_glass: Option<String>,
        /// Force this command (critical option force-command).
        #[arg(long)]
        force_command: Option<String>,
        /// The user's public key file (KEY.pub).
        key: PathBuf,
    },
    /// Sign the gateway's host key; writes KEY-cert.pub beside KEY.pub.
    SignHost {
        /// The host CA private key.
        #[arg(long)]
        ca: PathBuf,
        /// Host name(s) clients connect to, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        hostname: Vec<String>,
        /// Lifetime.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The host public key file.
        key: PathBuf,
    },
    /// Verify a user certificate as the gateway would; prints the identity or the reason (exit 0 or 1).
    Verify {
        /// Trusted user CA public key file(s), comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        trusted: Vec<PathBuf>,
        /// The SSH user name the certificate must be valid for.
        #[arg(long)]
        user: String,
        /// The client address (checked against source-address).
        #[arg(long)]
        source: Option<IpAddr>,
        /// Revocation list file (`serial:N` / `key-id:ID` lines).
        #[arg(long)]
        revoked: Option<PathBuf>,
        /// Longest accepted certificate lifetime.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        max_lifetime: Duration,
        /// The certificate file (KEY-cert.pub).
        cert: PathBuf,
    },
}

/// Runs a `jitsh ca` subcommand.
pub fn run(cmd: CaCommand) -> ExitCode {
    let result = match cmd {
        CaCommand::Verify {
            trusted,
            user,
            source,
            revoked,
            max_lifetime,
            cert,
        } => {
            return match verify(
                &trusted,
                &user,
                source,
                revoked.as_deref(),
                max_lifetime,
                &cert,
            ) {
                Ok(Ok(summary)) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Ok(Err(reason)) => {
                    eprintln!("jitsh: certificate refused: {reason}");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("jitsh: ca verify: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        CaCommand::Init { dir } => init(&dir),
        CaCommand::Sign {
            ca,
            identity,
            principal,
            groups,
            ttl,
            serial,
            source_address,
            break_glass,
            force_command,
            key,
        } => {
            let opts = UserCertOptions {
                identity,
                principals: principal,
                groups,
                ttl,
                serial,
                source_address,
                break_glass,
                force_command,
                valid_after: None,
            };
            sign(&ca, &key, &opts)
        }
        CaCommand::SignHost {
            ca,
            hostname,
            ttl,
            key,
        } => sign_host(
            &ca,
            &key,
            &HostCertOptions {
                hostnames: hostname,
                ttl,
                key_id: None,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jitsh: ca: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Writes a new file with the given mode; refuses to overwrite.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("refusing to overwrite or cannot create {}", path.display()))?;
    f.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))
}

fn init(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in ["user_ca", "host_ca"] {
        for f in [name.to_owned(), format!("{name}.pub")] {
            if dir.join(&f).exists() {
                bail!(
                    "{} already exists; refusing to overwrite",
                    dir.join(f).display()
                );
            }
        }
    }
    for name in ["user_ca", "host_ca"] {
        let key = jitsh_certs::generate_ca_key(&format!("jitsh {name}"))?;
        let private = key
            .to_openssh(LineEnding::LF)
            .context("encoding the private key")?;
        write_new(&dir.join(name), private.as_bytes(), 0o600)?;
        let public = key
            .public_key()
            .to_openssh()
            .context("encoding the public key")?;
        write_new(
            &dir.join(format!("{name}.pub")),
            format!("{public}\n").as_bytes(),
            0o644,
        )?;
        println!(
            "wrote {} and {}.pub ({})",
            dir.join(name).display(),
            dir.join(name).display(),
            key.fingerprint(Default::default())
        );
    }
    Ok(())
}

fn read_ca(path: &Path) -> anyhow::Result<PrivateKey> {
    let key = PrivateKey::read_openssh_file(path)
        .with_context(|| format!("reading CA key {}", path.display()))?;
    if key.is_encrypted() {
        bail!(
            "{}: encrypted CA keys are not supported; decrypt it with ssh-keygen -p",
            path.display()
        );
    }
    Ok(key)
}

/// `dir/id_ed25519.pub` → `dir/id_ed25519-cert.pub`, as OpenSSH looks for it.
pub fn cert_path_for(key: &Path) -> PathBuf {
    let name = key
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".pub").unwrap_or(&name);
    key.with_file_name(format!("{stem}-cert.pub"))
}

fn write_cert(key: &Path, cert: &Certificate) -> anyhow::Result<PathBuf> {
    let out = cert_path_for(key);
    let text = cert.to_openssh().context("encoding the certificate")?;
    std::fs::write(&out, format!("{text}\n"))
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

fn sign(ca: &Path, key: &Path, opts: &UserCertOptions) -> anyhow::Result<()> {
    let ca = read_ca(ca)?;
    let public =
        PublicKey::read_openssh_file(key).with_context(|| format!("reading {}", key.display()))?;
    let cert = jitsh_certs::sign_user_certificate(&ca, &public, opts)?;
    let out = write_cert(key, &cert)?;
    println!(
        "wrote {}: identity {}, principals {}, groups {}, serial {}, valid for {}",
        out.display(),
        cert.key_id(),
        cert.valid_principals().join(","),
        if opts.groups.is_empty() {
            "-".to_owned()
        } else {
            opts.groups.join(",")
        },
        cert.serial(),
        humantime::format_duration(opts.ttl)
    );
    Ok(())
}

fn sign_host(ca: &Path, key: &Path, opts: &HostCertOptions) -> anyhow::Result<()> {
    let ca = read_ca(ca)?;
    let public =
        PublicKey::read_openssh_file(key).with_context(|| format!("reading {}", key.display()))?;
    let cert = jitsh_certs::sign_host_certificate(&ca, &public, opts)?;
    let out = write_cert(key, &cert)?;
    println!(
        "wrote {}: host certificate for {}",
        out.display(),
        opts.hostnames.join(",")
    );
    println!("clients trust it with this known_hosts line:");
    println!(
        "@cert-authority {} {}",
        opts.hostnames.join(","),
        ca.public_key()
            .to_openssh()
            .context("encoding the CA key")?
    );
    Ok(())
}

fn verify(
    trusted: &[PathBuf],
    user: &str,
    source: Option<IpAddr>,
    revoked: Option<&Path>,
    max_lifetime: Duration,
    cert: &Path,
) -> anyhow::Result<Result<String, jitsh_certs::Rejection>> {
    let mut cas = Vec::new();
    for p in trusted {
        cas.push(
            PublicKey::read_openssh_file(p)
                .with_context(|| format!("reading trusted CA {}", p.display()))?,
        );
    }
    let revocations = match revoked {
        Some(p) => RevocationList::parse(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?,
        None => RevocationList::empty(),
    };
    let text =
        std::fs::read_to_string(cert).with_context(|| format!("reading {}", cert.display()))?;
    let certificate = Certificate::from_openssh(text.trim())
        .with_context(|| format!("{} is not an OpenSSH certificate", cert.display()))?;
    let verifier = Verifier::new(VerifierConfig {
        trusted_cas: cas,
        revocations,
        max_lifetime,
        ..VerifierConfig::default()
    });
    // Offline there is no session to prove possession of the key: the certificate's own key stands in.
    let presented = Presented {
        certificate: &certificate,
        username: user,
        peer: source,
        proven_key: certificate.public_key(),
        now: SystemTime::now(),
    };
    Ok(verifier.verify(&presented).map(|id| {
        let remaining = id
            .valid_before()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        format!(
            "ok: identity {} user {} groups {} serial {}{} expires in {}",
            id.identity(),
            id.username(),
            if id.groups().is_empty() {
                "-".to_owned()
            } else {
                id.groups().join(",")
            },
            id.serial(),
            id.break_glass()
                .map(|i| format!(" break-glass {i}"))
                .unwrap_or_default(),
            humantime::format_duration(Duration::from_secs(remaining.as_secs()))
        )
    }))
}
