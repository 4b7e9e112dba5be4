//! The command pattern DSL: `tail [-n <int>] [-f] <path:/var/log/**>`, `ls [-l|-la|-lah]
//! [<path:/var/log/**>]`, `ps aux`. Literals, optional groups `[…]` with alternatives `|`,
//! placeholders `<int>`, `<word>`, `<path:GLOB>`, and `...` (any remaining arguments).

use globset::{GlobBuilder, GlobMatcher};

/// One element of a pattern.
#[derive(Debug, Clone)]
enum Elem {
    Literal(String),
    Int,
    Word,
    Path(Box<GlobMatcher>),
    Optional(Vec<Vec<Elem>>),
    Rest,
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    program: String,
    elems: Vec<Elem>,
    long_options: Vec<String>,
}

fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_angle = false;
    for c in s.chars() {
        match c {
            '<' => {
                in_angle = true;
                cur.push(c);
            }
            '>' => {
                in_angle = false;
                cur.push(c);
            }
            '[' | ']' | '|' if !in_angle => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() && !in_angle => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Compiles a glob for absolute paths: `*` does not cross `/`; `/x/**` also matches `/x`.
pub fn path_glob(glob: &str) -> Result<GlobMatcher, String> {
    if !glob.starts_with('/') {
        return Err(format!("path glob {glob:?} must be absolute"));
    }
    if glob.split('/').any(|c| c == "..") {
        return Err(format!("path glob {glob:?} must not contain '..'"));
    }
    GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("bad glob {glob:?}: {e}"))
}

fn parse_seq(
    toks: &[String],
    pos: &mut usize,
    depth: usize,
    long: &mut Vec<String>,
) -> Result<Vec<Vec<Elem>>, String> {
    let mut alts = vec![Vec::new()];
    while *pos < toks.len() {
        let t = toks[*pos].as_str();
        *pos += 1;
        match t {
            "[" => {
                let inner = parse_seq(toks, pos, depth + 1, long)?;
                if inner.iter().any(Vec::is_empty) {
                    return Err("empty alternative in '[…]'".into());
                }
                alts.last_mut()
                    .ok_or("internal")?
                    .push(Elem::Optional(inner));
            }
            "]" => {
                if depth == 0 {
                    return Err("unbalanced ']'".into());
                }
                return Ok(alts);
            }
            "|" => {
                if depth == 0 {
                    return Err("'|' alternatives belong inside '[…]'".into());
                }
                alts.push(Vec::new());
            }
            "..." => alts.last_mut().ok_or("internal")?.push(Elem::Rest),
            "<int>" => alts.last_mut().ok_or("internal")?.push(Elem::Int),
            "<word>" => alts.last_mut().ok_or("internal")?.push(Elem::Word),
            t if t.starts_with("<path:") && t.ends_with('>') => {
                let glob = &t[6..t.len() - 1];
                alts.last_mut()
                    .ok_or("internal")?
                    .push(Elem::Path(Box::new(path_glob(glob)?)));
            }
            t if t.starts_with('<') => {
                return Err(format!(
                    "unknown placeholder {t} (use <int>, <word> or <path:GLOB>)"
                ));
            }
            t => {
                if t.chars()
                    .any(|c| c.is_control() || "\"'`$;&<>(){}*?\\".contains(c))
                {
                    return Err(format!(
                        "literal {t:?} has characters a pattern cannot hold"
                    ));
                }
                if t.starts_with("--") {
                    long.push(t.split('=').next().unwrap_or(t).to_owned());
                }
                alts.last_mut()
                    .ok_or("internal")?
                    .push(Elem::Literal(t.to_owned()));
            }
        }
    }
    if depth > 0 {
        return Err("unbalanced '['".into());
    }
    Ok(alts)
}

impl Pattern {
    /// Compiles a pattern.
    pub fn parse(source: &str) -> Result<Pattern, String> {
        let toks = tokens(source);
        let Some(program) = toks.first() else {
            return Err("empty pattern".into());
        };
        if program.starts_with(['<', '[', '-', '/']) || program == "..." || program.contains('/') {
            return Err(format!(
                "a pattern starts with a program name, not {program:?}"
            ));
        }
        let mut long = Vec::new();
        let mut pos = 1;
        let mut alts = parse_seq(&toks, &mut pos, 0, &mut long)?;
        let elems = alts.pop().unwrap_or_default();
        if let Some(i) = elems.iter().position(|e| matches!(e, Elem::Rest))
            && i + 1 != elems.len()
        {
            return Err("'...' must come last".into());
        }
        Ok(Pattern {
            source: source.to_owned(),
            program: program.clone(),
            elems,
            long_options: long,
        })
    }

    /// The program the pattern allows.
    pub fn program(&self) -> &str {
        &self.program
    }
    /// The pattern text.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// Whether it ends in `...` (lint flags it).
    pub fn has_rest(&self) -> bool {
        self.elems.iter().any(|e| matches!(e, Elem::Rest))
    }

    /// Matches a pipeline stage after the first: it reads the previous stage's output, so a
    /// trailing `<path:…>` may be left out (`grep ERROR /var/log/app.log | tail -n 5`).
    pub fn matches_downstream(&self, argv: &[String]) -> Option<Vec<String>> {
        self.matches(argv).or_else(|| {
            let mut elems = self.elems.clone();
            if !matches!(elems.last(), Some(Elem::Path(_))) {
                return None;
            }
            elems.pop();
            let shorter = Pattern {
                elems,
                ..self.clone()
            };
            shorter.matches(argv)
        })
    }

    /// Matches an argv; on success the argv to run (paths normalised).
    pub fn matches(&self, argv: &[String]) -> Option<Vec<String>> {
        let first = argv.first()?;
        if program_name(first)? != self.program {
            return None;
        }
        // `--opt=value` is `--opt value` where the pattern names `--opt`.
        let mut args = Vec::new();
        for a in &argv[1..] {
            match a.split_once('=') {
                Some((opt, v))
                    if opt.starts_with("--") && self.long_options.iter().any(|l| l == opt) =>
                {
                    args.push(opt.to_owned());
                    args.push(v.to_owned());
                }
                _ => args.push(a.clone()),
            }
        }
        let mut out = vec![first.clone()];
        match_elems(&self.elems, &args, &mut out).then_some(out)
    }
}

/// Directories an absolute program path may name.
const BIN_DIRS: &[&str] = &[
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
];

/// The program name of argv[0]: a bare name, or an absolute path in a standard bin directory
/// normalised to its last component (`/usr/bin/../bin/cat` → `cat`; `/tmp/cat` → none).
pub fn program_name(arg0: &str) -> Option<&str> {
    if !arg0.contains('/') {
        return (!arg0.is_empty()).then_some(arg0);
    }
    if !arg0.starts_with('/') {
        return None;
    }
    let norm = normalize_path(arg0)?;
    let (dir, name) = norm.rsplit_once('/')?;
    if !BIN_DIRS.contains(&dir) {
        return None;
    }
    // Return a slice of the input equal to the normalised name (`/usr/bin/../bin/cat` → `cat`).
    arg0.rsplit('/').find(|c| !c.is_empty() && *c == name)
}

/// Normalises an absolute path: `.`, `..` and `//` resolved; `None` for relative paths.
pub fn normalize_path(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn path_matches(g: &GlobMatcher, arg: &str) -> Option<String> {
    let norm = normalize_path(arg)?;
    if g.is_match(&norm) {
        return Some(norm);
    }
    // `/var/log/**` also matches `/var/log` itself.
    let glob = g.glob().glob();
    if let Some(base) = glob.strip_suffix("/**")
        && base == norm
    {
        return Some(norm);
    }
    None
}

fn match_elems(elems: &[Elem], args: &[String], out: &mut Vec<String>) -> bool {
    let Some((e, rest)) = elems.split_first() else {
        return args.is_empty();
    };
    let mark = out.len();
    let ok = match e {
        Elem::Rest => {
            out.extend(args.iter().cloned());
            true
        }
        Elem::Optional(alts) => {
            for alt in alts {
                let mut seq = alt.clone();
                seq.extend(rest.iter().cloned());
                if match_elems(&seq, args, out) {
                    return true;
                }
                out.truncate(mark);
            }
            return match_elems(rest, args, out);
        }
        single => {
            let Some((a, tail)) = args.split_first() else {
                return false;
            };
            let got = match single {
                Elem::Literal(l) => (a == l).then(|| a.clone()),
                Elem::Int => {
                    (!a.is_empty() && a.bytes().all(|b| b.is_ascii_digit())).then(|| a.clone())
                }
                Elem::Word => (!a.is_empty() && !a.starts_with('-')).then(|| a.clone()),
                Elem::Path(g) => path_matches(g, a),
                _ => None,
            };
            match got {
                Some(v) => {
                    out.push(v);
                    match_elems(rest, tail, out)
                }
                None => false,
            }
        }
    };
    if !ok {
        out.truncate(mark);
    }
    ok
}
