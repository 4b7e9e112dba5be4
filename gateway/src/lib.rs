//! jitsh-gateway: the SSH daemon, Kubernetes streams, audit and the `jitsh` CLI.

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dev;
pub mod exec;
pub mod files;
pub mod intent;
pub mod issuer;
pub mod lineedit;
pub mod recording;
pub mod server;
