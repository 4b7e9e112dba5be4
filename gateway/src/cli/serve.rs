//! `jitsh serve`: run the gateway.

pub mod daemon;
#[cfg(feature = "dev")]
pub mod dev;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `jitsh serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Development mode: in-process kube-sim, ephemeral CAs, demo policy and users.
    #[arg(long)]
    pub dev: bool,
    /// Where development mode writes ssh_config, keys, certificates and the audit log.
    #[arg(long, default_value = ".jitsh-dev")]
    pub dev_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2222")]
    pub listen: SocketAddr,
    /// Configuration file (see docs/configuration.md); its `listen` is the address.
    #[arg(long, conflicts_with_all = ["dev", "dev_dir", "listen"])]
    pub config: Option<PathBuf>,
    /// The gateway's own log on stderr: `text` or `json` (one object per line).
    #[arg(long, value_enum, env = "JITSH_LOG_FORMAT", default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,
}

/// Runs `jitsh serve`.
pub fn run(args: ServeArgs) -> ExitCode {
    if !args.dev && args.config.is_none() {
        eprintln!("jitsh: serve needs --config FILE, or --dev for the development gateway");
        return ExitCode::from(2);
    }
    crate::telemetry::init(args.log_format);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jitsh: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let res = match &args.config {
        Some(path) => rt.block_on(async {
            let prepared = daemon::prepare_from_config(path).await?;
            eprintln!(
                "jitsh gateway listening on {}",
                prepared.listener.local_addr()?
            );
            if let Some(admin) = &prepared.admin {
                eprintln!("jitsh admin listening on {}", admin.local_addr()?);
            }
            daemon::run(prepared).await
        }),
        #[cfg(feature = "dev")]
        None => rt.block_on(dev::run(&args.dev_dir, args.listen)),
        #[cfg(not(feature = "dev"))]
        None => Err(anyhow::anyhow!(
            "serve --dev needs the `dev` feature (its in-process Kubernetes double); this build \
             has none: use serve --config FILE, or build with default features"
        )),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jitsh: {e:#}");
            ExitCode::FAILURE
        }
    }
}
