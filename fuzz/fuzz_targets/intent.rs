#![no_main]
//! Fuzz target: the gateway's parser of the exec string returns for any input (see
//! `gateway/src/fuzzing.rs`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| jitsh_gateway::fuzzing::intent(data));
