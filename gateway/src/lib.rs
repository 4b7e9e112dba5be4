//! jitsh-gateway: the SSH daemon, Kubernetes streams, audit and the `jitsh` CLI.
//!
//! The modules follow a request (see `docs/architecture.md`): `ssh` (transport and a handler
//! that only translates) → `session` (one lifecycle; the words, the command line, the prompt,
//! attach, break-glass) → [`kube`] (every API call, as the user, with the permit for its mode).
//! Shared pieces live below their users: `gateway` (state), `limits`, `ids`, `audit`,
//! `recording`, `intent`.

mod admin;
mod audit;
mod broker;
pub mod cli;
pub mod config;
mod files;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod gateway;
mod ids;
mod intent;
pub mod issuer;
pub mod kube;
mod limits;
mod lineedit;
mod recording;
mod session;
mod ssh;
mod telemetry;
mod webhook;
