#![no_main]
//! Fuzz target: the gateway's parser of a virtual file-tree path returns for any input (see
//! `gateway/src/fuzzing.rs`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| jitsh_gateway::fuzzing::tree_path(data));
