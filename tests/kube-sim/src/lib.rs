//! kube-sim: a double of the Kubernetes API server that speaks the real wire protocols
//! (HTTPS, discovery, RBAC with impersonation, watches, pods/log, and the WebSocket
//! exec/attach/portforward streams), for jitsh's tests, benchmarks and `jitsh serve --dev`.
//!
//! Start one in-process with [`SimBuilder`]; see `docs/kube-sim.md` for what it implements and
//! how it differs from a real API server.

mod audit;
mod crd;
mod error;
mod fixture;
mod handlers;
mod object;
mod proto;
mod rbac;
mod resources;
pub mod runtime;
mod server;
mod sim;
mod status;
mod store;
pub mod streams;
mod table;
mod tls;

pub use error::SimError;
pub use fixture::{Fixture, FixtureUser, GATEWAY_USER};
pub use sim::{RunningSim, SimBuilder};
