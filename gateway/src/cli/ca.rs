//! `jitsh ca …`: certificate authority commands (owned by the certs work).

use std::process::ExitCode;

/// Certificate authority subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Create a user CA and a host CA.
    Init {
        /// Directory to write the CA keys into.
        #[arg(long)]
        dir: std::path::PathBuf,
    },
}

/// Runs a `jitsh ca` subcommand.
pub fn run(cmd: CaCommand) -> ExitCode {
    eprintln!("jitsh: ca: not implemented yet: {cmd:?}");
    ExitCode::from(2)
}
