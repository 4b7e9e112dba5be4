//! The `jitsh` binary: the gateway daemon and its operator commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jitsh_gateway::cli;

/// jitsh — a just-in-time SSH gateway for production debugging on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "jitsh", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the SSH user and host certificate authorities.
    #[command(subcommand)]
    Ca(cli::ca::CaCommand),
    /// Run the OIDC → SSH certificate issuer on its own.
    Issuer(cli::login::IssuerArgs),
    /// Exchange an OIDC ID token for a short-lived SSH user certificate.
    Login(cli::login::LoginArgs),
    /// Check, test and lint policy documents.
    #[command(subcommand)]
    Policy(cli::policy::PolicyCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Ca(cmd) => cli::ca::run(cmd),
        Command::Issuer(args) => cli::login::run_issuer(args),
        Command::Login(args) => cli::login::run_login(args),
        Command::Policy(cmd) => cli::policy::run(cmd),
    }
}
