//! `jitsh serve`: run the gateway.

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
    /// Configuration file (production mode; not implemented yet).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs `jitsh serve`.
pub fn run(args: ServeArgs) -> ExitCode {
    if !args.dev {
        eprintln!("jitsh: serve --config is not implemented yet; use 'jitsh serve --dev'");
        return ExitCode::from(2);
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jitsh: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(crate::dev::run(&args.dev_dir, args.listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jitsh: {e:#}");
            ExitCode::FAILURE
        }
    }
}
