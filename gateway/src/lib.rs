//! jitsh-gateway: the SSH daemon, Kubernetes streams, audit and the `jitsh` CLI.

pub mod cli;
pub mod issuer;
