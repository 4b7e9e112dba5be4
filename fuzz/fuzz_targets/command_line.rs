#![no_main]
//! Fuzz target: the command-line parser never panics, and what it accepts round-trips through
//! `quote`.
use jitsh_broker_policy::{parse_command_line, parse_command_line_bytes, quote};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = parse_command_line_bytes(data) {
        for stage in line.stages() {
            let again = parse_command_line(&quote(stage));
            assert_eq!(again.map(|c| c.stages().to_vec()), Ok(vec![stage.clone()]));
        }
    }
});
