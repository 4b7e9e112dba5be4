//! `jitsh policy check|test|lint` (owned by the broker-policy work).

use std::process::ExitCode;

/// Policy subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Lint a policy for risky grants.
    Lint {
        /// The policy file.
        #[arg(long)]
        policy: std::path::PathBuf,
    },
}

/// Runs a `jitsh policy` subcommand.
pub fn run(cmd: PolicyCommand) -> ExitCode {
    eprintln!("jitsh: policy: not implemented yet: {cmd:?}");
    ExitCode::from(2)
}
