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
    /// Work with the gateway's hash-chained audit log.
    #[command(subcommand)]
    Audit(cli::audit::AuditCommand),
    /// Run the SSH gateway (`--dev` for the self-contained development mode).
    Serve(cli::serve::ServeArgs),
}

fn main() -> ExitCode {
    // kube-sim runs its containers as this binary (development builds only).
    #[cfg(feature = "dev")]
    {
        let args: Vec<String> = std::env::args().collect();
        if args.get(1).map(String::as_str) == Some(kube_sim::runtime::CONTAINER_SUBCOMMAND) {
            return kube_sim::runtime::container_main(args);
        }
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Ca(cmd) => cli::ca::run(cmd),
        Command::Issuer(args) => cli::login::run_issuer(args),
        Command::Login(args) => cli::login::run_login(args),
        Command::Policy(cmd) => cli::policy::run(cmd),
        Command::Audit(cmd) => cli::audit::run(cmd),
        Command::Serve(args) => cli::serve::run(args),
    }
}
