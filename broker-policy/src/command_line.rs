//! Command-line parsing with POSIX quoting. The accepted grammar is deliberately tiny — words
//! made of plain characters, `'single'` and `"double"` quotes and backslash escapes, and `|`
//! between stages — and everything a shell would interpret beyond that is refused with the
//! construct and its column named. argv is then run as argv, never through a shell.

use std::fmt;

/// Longest command line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// Most arguments accepted across all stages.
pub const MAX_ARGS: usize = 256;

/// A parsed command line: one argv per pipeline stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    stages: Vec<Vec<String>>,
}

impl CommandLine {
    /// A single-stage command line from an argv (as given by a client that sent argv, not text).
    pub fn from_argv(argv: Vec<String>) -> Self {
        CommandLine { stages: vec![argv] }
    }
    /// A command line of the given stages (each a non-empty argv), as if typed and parsed.
    pub fn from_stages(stages: Vec<Vec<String>>) -> Self {
        CommandLine { stages }
    }
    /// The stages (more than one for a pipeline).
    pub fn stages(&self) -> &[Vec<String>] {
        &self.stages
    }
    /// Whether this is a pipeline.
    pub fn is_pipeline(&self) -> bool {
        self.stages.len() > 1
    }
}

/// Why a command line was refused: the construct and where it starts (1-based character column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What was found, e.g. `command substitution '$('`.
    pub construct: String,
    /// 1-based column (in characters) where it starts; 0 when it is about the whole line.
    pub column: usize,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column == 0 {
            write!(f, "{} is not allowed", self.construct)
        } else {
            write!(
                f,
                "{} at column {} is not allowed",
                self.construct, self.column
            )
        }
    }
}

impl std::error::Error for SyntaxError {}

fn err<T>(construct: impl Into<String>, column: usize) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        construct: construct.into(),
        column,
    })
}

/// Characters that are invisible or separate lines in some renderers: refused everywhere, so
/// what the audit log shows is what runs.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Characters that render like a shell operator (fullwidth, small and Greek forms): refused so
/// that a reviewer reading the audit log never sees a `;` or `|` that did not separate anything.
fn look_alike(c: char) -> Option<char> {
    Some(match c {
        '\u{037E}' | '\u{FF1B}' | '\u{FE54}' => ';',
        '\u{FF5C}' | '\u{01C0}' | '\u{2223}' | '\u{FFE8}' => '|',
        '\u{FF06}' | '\u{FE60}' => '&',
        '\u{FF04}' | '\u{FE69}' => '$',
        '\u{FF1C}' | '\u{FE64}' => '<',
        '\u{FF1E}' | '\u{FE65}' => '>',
        '\u{FF40}' => '`',
        '\u{FF08}' | '\u{FE59}' => '(',
        '\u{FF09}' | '\u{FE5A}' => ')',
        _ => return None,
    })
}

/// Why a character is refused anywhere in a line (quoted or not), if it is.
#[inline]
fn control(c: char) -> Option<String> {
    // Printable ASCII and tab: none of the below (the common case, so checked inline first).
    if matches!(c, ' '..='~' | '\t') {
        None
    } else {
        unusual(c)
    }
}

/// [`control`] for characters other than printable ASCII and tab.
fn unusual(c: char) -> Option<String> {
    if let Some(op) = look_alike(c) {
        return Some(format!("look-alike of '{op}' (U+{:04X})", u32::from(c)));
    }
    match c {
        '\n' => Some("newline".into()),
        '\r' => Some("carriage return".into()),
        '\0' => Some("NUL character".into()),
        c if c.is_control() && c != '\t' => {
            Some(format!("control character U+{:04X}", u32::from(c)))
        }
        c if is_invisible(c) => Some(format!("invisible character U+{:04X}", u32::from(c))),
        _ => None,
    }
}

/// Parses raw bytes (refusing non-UTF-8), then the line.
pub fn parse_command_line_bytes(bytes: &[u8]) -> Result<CommandLine, SyntaxError> {
    let line = std::str::from_utf8(bytes).map_err(|e| SyntaxError {
        construct: "non-UTF-8 byte".into(),
        // `valid_up_to` is at most the length; the fallback only keeps this panic-free.
        column: String::from_utf8_lossy(bytes.get(..e.valid_up_to()).unwrap_or_default())
            .chars()
            .count()
            + 1,
    })?;
    parse_command_line(line)
}

/// Parses a command line as a POSIX shell would tokenize it, refusing everything the shell would
/// interpret: `;` `&` `&&` `||` `|&` redirections, `$…` expansions and substitutions, backticks,
/// `( )` `{ }`, `!`, unquoted globs `* ? [`, leading `NAME=value`, leading `~` and `#`,
/// newlines and other control or invisible characters. `|` splits stages (whether a pipeline
/// is allowed is the policy's decision).
#[expect(
    unused_assignments,
    reason = "the word-ending macro resets state that its final expansion leaves unread"
)]
pub fn parse_command_line(line: &str) -> Result<CommandLine, SyntaxError> {
    if line.len() > MAX_LINE_BYTES {
        return err(
            format!("a command line longer than {MAX_LINE_BYTES} bytes"),
            0,
        );
    }
    let chars: Vec<char> = line.chars().collect();
    let mut stages: Vec<Vec<String>> = vec![Vec::with_capacity(8)];
    // Scratch for the current word (no word is longer than the line); each word is copied out.
    let mut word = String::with_capacity(line.len());
    let mut in_word = false;
    // The word's length when its first quoted or escaped character came (for `NAME=value`).
    let mut quoted_at: Option<usize> = None;
    let mut word_start = 0usize;
    let mut args = 0usize;
    let mut i = 0usize;
    let col = |i: usize| i + 1;

    macro_rules! end_word {
        () => {
            if in_word {
                let stage = stages.last_mut();
                if let Some(stage) = stage {
                    if stage.is_empty() && is_assignment(&word, quoted_at) {
                        return err("variable assignment 'NAME=value'", col(word_start));
                    }
                    // One exact allocation per word; `word` keeps its buffer for the next.
                    stage.push(word.clone());
                    word.clear();
                }
                args += 1;
                if args > MAX_ARGS {
                    return err(format!("more than {MAX_ARGS} arguments"), 0);
                }
                in_word = false;
                quoted_at = None;
            }
        };
    }

    while let Some(&c) = chars.get(i) {
        if let Some(what) = control(c) {
            return err(what, col(i));
        }
        let next = chars.get(i + 1).copied();
        match c {
            ' ' | '\t' => {
                end_word!();
                i += 1;
                continue;
            }
            '\'' => {
                if !in_word {
                    in_word = true;
                    word_start = i;
                }
                quoted_at = quoted_at.or(Some(word.len()));
                let start = i;
                i += 1;
                loop {
                    let Some(&q) = chars.get(i) else {
                        return err("unterminated single quote", col(start));
                    };
                    if let Some(what) = control(q) {
                        return err(what, col(i));
                    }
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                    i += 1;
                }
                i += 1;
                continue;
            }
            '"' => {
                if !in_word {
                    in_word = true;
                    word_start = i;
                }
                quoted_at = quoted_at.or(Some(word.len()));
                let start = i;
                i += 1;
                loop {
                    let Some(&q) = chars.get(i) else {
                        return err("unterminated double quote", col(start));
                    };
                    if let Some(what) = control(q) {
                        return err(what, col(i));
                    }
                    match q {
                        '"' => break,
                        '$' => {
                            let next = chars
                                .get(i + 1)
                                .copied()
                                .filter(|n| !matches!(n, '"' | '\''));
                            return err(dollar(next), col(i));
                        }
                        '`' => return err("command substitution '`'", col(i)),
                        '\\' => match chars.get(i + 1).copied() {
                            Some(e @ ('$' | '`' | '"' | '\\')) => {
                                word.push(e);
                                i += 1;
                            }
                            Some('\n') | None => return err("backslash-newline", col(i)),
                            Some(_) => word.push('\\'),
                        },
                        q => word.push(q),
                    }
                    i += 1;
                }
                i += 1;
                continue;
            }
            '\\' => {
                match next {
                    None => return err("trailing backslash", col(i)),
                    Some(n) => {
                        if let Some(what) = control(n) {
                            return err(what, col(i + 1));
                        }
                        if !in_word {
                            in_word = true;
                            word_start = i;
                        }
                        quoted_at = quoted_at.or(Some(word.len()));
                        word.push(n);
                        i += 2;
                    }
                }
                continue;
            }
            ';' => return err("command separator ';'", col(i)),
            '&' => {
                return match next {
                    Some('&') => err("and-list '&&'", col(i)),
                    Some('>') => err("redirection '&>'", col(i)),
                    _ => err("background '&'", col(i)),
                };
            }
            '|' => {
                match next {
                    Some('|') => return err("or-list '||'", col(i)),
                    Some('&') => return err("pipe with stderr '|&'", col(i)),
                    _ => {}
                }
                end_word!();
                if stages.last().is_none_or(Vec::is_empty) {
                    return err("empty pipeline stage before '|'", col(i));
                }
                stages.push(Vec::with_capacity(8));
                i += 1;
                continue;
            }
            '>' => {
                return match next {
                    Some('>') => err("redirection '>>'", col(i)),
                    Some('(') => err("process substitution '>('", col(i)),
                    Some('|') => err("redirection '>|'", col(i)),
                    Some('&') => err("redirection '>&'", col(i)),
                    _ => err("redirection '>'", col(i)),
                };
            }
            '<' => {
                return match (next, chars.get(i + 2).copied()) {
                    (Some('<'), Some('<')) => err("here-string '<<<'", col(i)),
                    (Some('<'), _) => err("here-document '<<'", col(i)),
                    (Some('('), _) => err("process substitution '<('", col(i)),
                    (Some('>'), _) => err("redirection '<>'", col(i)),
                    (Some('&'), _) => err("redirection '<&'", col(i)),
                    _ => err("redirection '<'", col(i)),
                };
            }
            '$' => return err(dollar(next), col(i)),
            '`' => return err("command substitution '`'", col(i)),
            '(' => return err("subshell '('", col(i)),
            ')' => return err("')'", col(i)),
            '{' | '}' => return err(format!("brace '{c}' (group or expansion)"), col(i)),
            '!' => return err("history expansion or negation '!'", col(i)),
            '*' | '?' | '[' => return err(format!("unquoted glob character '{c}'"), col(i)),
            '~' if !in_word => return err("tilde expansion '~'", col(i)),
            '#' if !in_word => return err("comment '#'", col(i)),
            c => {
                if !in_word {
                    in_word = true;
                    word_start = i;
                }
                word.push(c);
                i += 1;
                continue;
            }
        }
    }
    end_word!();
    if stages.last().is_some_and(Vec::is_empty) {
        if stages.len() > 1 {
            return err("empty pipeline stage after '|'", col(chars.len()));
        }
        return err("an empty command line", 0);
    }
    Ok(CommandLine { stages })
}

fn dollar(next: Option<char>) -> String {
    match next {
        Some('(') => "command substitution '$('".into(),
        Some('{') => "parameter expansion '${'".into(),
        Some('\'') => "ANSI-C quoting '$''".into(),
        Some('"') => "locale quoting '$\"'".into(),
        Some(c) if c.is_ascii_alphanumeric() || "_@*#?$!-".contains(c) => {
            format!("variable expansion '${c}'")
        }
        _ => "dollar sign '$'".into(),
    }
}

/// Whether a shell would take the word as `NAME=value`: a valid name and an unquoted `=`.
fn is_assignment(word: &str, quoted_at: Option<usize>) -> bool {
    let Some(eq) = word.find('=') else {
        return false;
    };
    if quoted_at.is_some_and(|q| q <= eq) {
        return false;
    }
    let name = &word[..eq];
    let mut cs = name.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Quotes an argv so that [`parse_command_line`] gives it back (single quotes, `'\''` for quotes).
pub fn quote(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+,".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
