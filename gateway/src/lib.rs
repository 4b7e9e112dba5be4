//! jitsh-gateway: the SSH daemon, Kubernetes streams, audit and the `jitsh` CLI.

pub mod audit;
pub mod cli;
pub mod intent;
pub mod issuer;
