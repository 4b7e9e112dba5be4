#![no_main]
//! Fuzz target: the gateway's parser of a port-forward destination returns for any input (see
//! `gateway/src/fuzzing.rs`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| jitsh_gateway::fuzzing::forward_destination(data));
