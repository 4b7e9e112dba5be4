#![no_main]
//! Fuzz target: policy documents never panic the parser; what parses can decide a request.
use std::collections::BTreeMap;

use jitsh_broker_policy::{Action, Mode, Policy, Request, Subject, Target, parse_command_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(policy) = Policy::from_yaml(text) {
        let subject = Subject { user: "alice".into(), groups: vec!["g".into()], grants: Vec::new() };
        let target = Target { namespace: "n".into(), pod: "p".into(), labels: BTreeMap::new(), container: "c".into() };
        if let Ok(line) = parse_command_line("cat /var/log/app.log | tail -n 5") {
            let _ = policy.decide(&Request { subject: &subject, target: &target, mode: Mode::Exec, action: Action::Command(&line) });
        }
    }
});
