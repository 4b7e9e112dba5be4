//! `jitsh login` and `jitsh issuer` (owned by the certs work).

use std::process::ExitCode;

/// Arguments of `jitsh issuer`.
#[derive(Debug, clap::Args)]
pub struct IssuerArgs {
    /// Issuer configuration file (YAML).
    #[arg(long)]
    pub config: std::path::PathBuf,
}

/// Arguments of `jitsh login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Base URL of the certificate issuer.
    #[arg(long)]
    pub issuer: String,
}

/// Runs `jitsh issuer`.
pub fn run_issuer(args: IssuerArgs) -> ExitCode {
    eprintln!("jitsh: issuer: not implemented yet: {args:?}");
    ExitCode::from(2)
}

/// Runs `jitsh login`.
pub fn run_login(args: LoginArgs) -> ExitCode {
    eprintln!("jitsh: login: not implemented yet: {args:?}");
    ExitCode::from(2)
}
