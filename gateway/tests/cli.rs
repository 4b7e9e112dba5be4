//! `jitsh completions` and `jitsh man`: clap's own generators, checked by the shells' parsers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed assertion is the report"
)]

use std::process::Command;

const JITSH: &str = env!("CARGO_BIN_EXE_jitsh");

fn out(args: &[&str]) -> String {
    let o = Command::new(JITSH).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn completions_parse_in_their_shells_and_the_manual_renders() {
    let dir = tempfile::tempdir().unwrap();
    let bash = dir.path().join("jitsh.bash");
    std::fs::write(&bash, out(&["completions", "bash"])).unwrap();
    let st = Command::new("bash").arg("-n").arg(&bash).status().unwrap();
    assert!(st.success(), "bash -n refused the completion script");
    assert!(std::fs::read_to_string(&bash).unwrap().contains("serve"));
    for shell in ["zsh", "fish"] {
        let script = out(&["completions", shell]);
        assert!(
            script.contains("jitsh") && script.contains("serve"),
            "{shell}"
        );
    }
    let man = out(&["man"]);
    assert!(man.contains(".TH jitsh 1"), "{man}");
    assert!(man.contains("completions"));
    // An unknown shell is a usage error.
    let o = Command::new(JITSH)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
