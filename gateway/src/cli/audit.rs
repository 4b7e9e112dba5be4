//! `jitsh audit verify FILE`: checks an audit file's hash chain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

/// Audit log commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain of an audit file (exit 1 on any edit, reorder or truncation).
    Verify {
        /// The audit JSON-lines file.
        file: PathBuf,
    },
}

/// Runs an audit command.
pub fn run(cmd: AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify { file } => match std::fs::read_to_string(&file) {
            Err(e) => {
                eprintln!("jitsh: cannot read {}: {e}", file.display());
                ExitCode::from(2)
            }
            Ok(text) => match crate::audit::verify(&text) {
                Ok(n) => {
                    println!("ok: {n} events, chain intact");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("jitsh: audit verification failed: {e}");
                    ExitCode::from(1)
                }
            },
        },
    }
}
