//! Operator subcommands of the `jitsh` binary. Each submodule owns its clap types and a `run`.

pub mod audit;
pub mod ca;
pub mod login;
pub mod policy;
pub mod serve;
