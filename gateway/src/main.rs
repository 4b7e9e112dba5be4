//! The `jitsh` binary: the gateway daemon and its operator commands.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
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
    /// Print the shell completion script for `bash`, `zsh` or `fish` (see docs/cli.md).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on standard output (see docs/cli.md).
    Man,
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
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "jitsh", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("jitsh: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
