//! kube-sim: a double of the Kubernetes API server that speaks the real wire protocols.

pub mod runtime;
pub mod streams;
