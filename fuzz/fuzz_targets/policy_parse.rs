#![no_main]
//! Fuzz target policy_parse (filled in by its owner).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = data;
});
