//! The command-line corpus (tests/corpus/command_lines.tsv) and property tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed unwrap, expect or panic is a test failure"
)]

use jitsh_broker_policy::{parse_command_line, parse_command_line_bytes, quote};
use proptest::prelude::*;

/// Decodes `\n`, `\r`, `\t`, `\0`, `\\` and `\u{XXXX}` escapes used in the corpus file.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut cs = s.chars().peekable();
    while let Some(c) = cs.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match cs.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some('u') => {
                assert_eq!(cs.next(), Some('{'));
                let hex: String = cs.by_ref().take_while(|c| *c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            other => panic!("bad escape \\{other:?} in corpus"),
        }
    }
    out
}

#[test]
fn corpus() {
    let text = include_str!("corpus/command_lines.tsv");
    let mut n = 0;
    for (lineno, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        let (input, expect) = raw
            .split_once('\t')
            .unwrap_or_else(|| panic!("line {}: no tab", lineno + 1));
        let input = unescape(input);
        let got = parse_command_line(&input);
        let where_ = format!("corpus line {}: {input:?}", lineno + 1);
        if let Some(json) = expect.strip_prefix("ok ") {
            let want: Vec<Vec<String>> =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{where_}: {e}"));
            assert_eq!(
                got.as_ref()
                    .map(|c| c.stages().to_vec())
                    .map_err(ToString::to_string),
                Ok(want),
                "{where_}"
            );
        } else if let Some(rest) = expect.strip_prefix("err ") {
            let e = got.expect_err(&where_);
            let (construct, column) = rest.rsplit_once(" @").unwrap_or((rest, ""));
            assert!(e.construct.contains(construct), "{where_}: got {e}");
            if !column.is_empty() {
                assert_eq!(e.column.to_string(), column, "{where_}: got {e}");
            }
        } else {
            panic!("{where_}: expectation must start with 'ok ' or 'err '");
        }
        n += 1;
    }
    assert!(n >= 100, "corpus has {n} cases");
}

#[test]
fn non_utf8_and_caps() {
    let e = parse_command_line_bytes(b"cat \xff").unwrap_err();
    assert_eq!((e.construct.as_str(), e.column), ("non-UTF-8 byte", 5));
    assert!(
        parse_command_line(&"a".repeat(9000))
            .unwrap_err()
            .construct
            .contains("longer than")
    );
    assert!(
        parse_command_line(&"a ".repeat(300))
            .unwrap_err()
            .construct
            .contains("more than 256")
    );
}

const META: &[char] = &[
    ';', '&', '|', '>', '<', '$', '`', '(', ')', '{', '}', '!', '*', '?', '[', '\n', '\r', '\0',
];

proptest! {
    #[test]
    fn quoting_round_trips(argv in proptest::collection::vec("[^\\x00-\\x1f\\x7f\\u{200b}-\\u{200f}\\u{2028}-\\u{202e}\\u{2060}-\\u{206f}\\u{feff}\\u{ad}\\u{34f}\\u{61c}\\u{115f}\\u{1160}\\u{17b4}\\u{17b5}\\u{180e}\\u{fff9}-\\u{fffb}\\u{80}-\\u{9f}\\u{37e}\\u{1c0}\\u{2223}\\u{fe54}-\\u{fe6b}\\u{ff01}-\\u{ff60}\\u{ffe8}]{0,12}", 1..6)) {
        let line = quote(&argv);
        let parsed = parse_command_line(&line).map_err(|e| format!("{line:?}: {e}"));
        prop_assert_eq!(parsed.map(|c| c.stages().to_vec()), Ok(vec![argv]));
    }

    #[test]
    fn an_unquoted_metacharacter_is_never_accepted(prefix in "[a-z /.-]{0,10}", meta in proptest::sample::select(META), suffix in "[a-z /.-]{0,10}") {
        let line = format!("cat{prefix}{meta}{suffix}");
        prop_assert!(parse_command_line(&line).is_err() || (meta == '|' && !line.ends_with('|')), "{:?} was accepted", line);
        if meta == '|' && let Ok(c) = parse_command_line(&line) {
            prop_assert!(c.is_pipeline());
        }
    }
}
