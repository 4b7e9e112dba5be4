//! The command pattern DSL: `tail [-n <int>] [-f] <path:/var/log/**>`, `ls [-l|-la|-lah]
//! <path:/var/log/**>`, `ps aux`. Literals, optional groups `[…]` with alternatives `|`,
//! placeholders `<int>`, `<word>`, `<path:GLOB>`, and `...` (any remaining arguments).

use std::borrow::Cow;

use globset::{GlobBuilder, GlobMatcher};

/// One element of a pattern.
#[derive(Debug, Clone)]
enum Elem {
    Literal(String),
    Int,
    Word,
    Path(Box<PathGlob>),
    Optional(Vec<Vec<Elem>>),
    Rest,
}

/// A compiled pattern: its optional groups expanded into linear sequences, so matching is one
/// pass without backtracking or allocation until a match.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    program: String,
    elems: Vec<Elem>,
    seqs: Vec<Vec<Elem>>,
    long_options: Vec<String>,
}

/// Most linear forms one pattern may expand to.
const MAX_FORMS: usize = 1024;

/// Expands optional groups into every linear sequence they allow.
fn expand(elems: &[Elem]) -> Result<Vec<Vec<Elem>>, String> {
    let mut forms: Vec<Vec<Elem>> = vec![Vec::new()];
    for e in elems {
        match e {
            Elem::Optional(alts) => {
                let mut choices: Vec<Vec<Elem>> = vec![Vec::new()];
                for alt in alts {
                    choices.extend(expand(alt)?);
                }
                let mut next = Vec::new();
                for f in &forms {
                    for c in &choices {
                        let mut g = f.clone();
                        g.extend(c.iter().cloned());
                        next.push(g);
                    }
                }
                if next.len() > MAX_FORMS {
                    return Err(format!("more than {MAX_FORMS} forms; split the pattern"));
                }
                forms = next;
            }
            e => forms.iter_mut().for_each(|f| f.push(e.clone())),
        }
    }
    Ok(forms)
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

/// A glob over absolute, normalised paths: `*` does not cross `/`; `/x/**` also matches `/x`.
/// Globs of the common shape `/literal/dir/**` are matched by prefix, without a regex.
#[derive(Debug, Clone)]
pub struct PathGlob {
    source: String,
    matcher: GlobMatcher,
    subtree: Option<String>,
}

impl PathGlob {
    /// The glob as written.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// Whether an already normalised absolute path matches.
    pub fn matches_normalized(&self, norm: &str) -> bool {
        match &self.subtree {
            Some(base) => {
                norm == base
                    || (norm.starts_with(base.as_str()) && norm[base.len()..].starts_with('/'))
            }
            None => {
                self.matcher.is_match(norm)
                    || self
                        .source
                        .strip_suffix("/**")
                        .is_some_and(|base| base == norm)
            }
        }
    }
}

/// Compiles a path glob; it must be absolute and free of `..`.
pub fn path_glob(glob: &str) -> Result<PathGlob, String> {
    if !glob.starts_with('/') {
        return Err(format!("path glob {glob:?} must be absolute"));
    }
    if glob.split('/').any(|c| c == "..") {
        return Err(format!("path glob {glob:?} must not contain '..'"));
    }
    let matcher = GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("bad glob {glob:?}: {e}"))?;
    let subtree = glob
        .strip_suffix("/**")
        .filter(|base| !base.contains(['*', '?', '[', ']', '{', '}', '\\']) && !base.ends_with('/'))
        .map(str::to_owned);
    Ok(PathGlob {
        source: glob.to_owned(),
        matcher,
        subtree,
    })
}

fn parse_seq(
    toks: &[String],
    pos: &mut usize,
    depth: usize,
    long: &mut Vec<String>,
) -> Result<Vec<Vec<Elem>>, String> {
    let mut alts = vec![Vec::new()];
    while let Some(t) = toks.get(*pos) {
        let t = t.as_str();
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
        let seqs = expand(&elems)?;
        Ok(Pattern {
            source: source.to_owned(),
            program: program.clone(),
            elems,
            seqs,
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

    /// A `<path:…>` inside an optional group: the form without it works on the working
    /// directory, which the glob does not bound (`ls [<path:/var/log/**>]` lists `/`).
    pub fn has_optional_path(&self) -> bool {
        fn path_in(elems: &[Elem]) -> bool {
            elems.iter().any(|e| match e {
                Elem::Path(_) => true,
                Elem::Optional(alts) => alts.iter().any(|a| path_in(a)),
                _ => false,
            })
        }
        self.elems.iter().any(|e| match e {
            Elem::Optional(alts) => alts.iter().any(|a| path_in(a)),
            _ => false,
        })
    }

    /// Matches a pipeline stage after the first: it reads the previous stage's output, so a
    /// trailing `<path:…>` may be left out (`grep ERROR /var/log/app.log | tail -n 5`).
    pub fn matches_downstream(&self, argv: &[String]) -> Option<Vec<String>> {
        if program_name(argv.first()?)? != self.program {
            return None;
        }
        self.match_args_downstream(&Args::new(argv)).map(|m| m.argv)
    }

    /// Matches an argv; on success the argv to run (paths normalised).
    pub fn matches(&self, argv: &[String]) -> Option<Vec<String>> {
        if program_name(argv.first()?)? != self.program {
            return None;
        }
        self.match_args(&Args::new(argv)).map(|m| m.argv)
    }

    /// [`Pattern::matches`] for a stage whose program the caller has already found to be this
    /// pattern's.
    pub(crate) fn match_args(&self, a: &Args<'_>) -> Option<Matched> {
        if self.long_options.is_empty() {
            // Nothing to split: match the argv as it is, without allocating.
            let seq = self.find(a.rest(), &a.norm)?;
            return Some(render(seq, a.argv, &a.norm));
        }
        let args = self.split_long_options(a.argv);
        let rest = args.get(1..).unwrap_or_default();
        let norm = norms(rest);
        let seq = self.find(rest, &norm)?;
        Some(render(seq, &args, &norm))
    }

    /// Whether the stage matches, without building the argv to run (for `deny`).
    pub(crate) fn is_match_args(&self, a: &Args<'_>) -> bool {
        if self.long_options.is_empty() {
            return self.find(a.rest(), &a.norm).is_some();
        }
        let args = self.split_long_options(a.argv);
        let rest = args.get(1..).unwrap_or_default();
        self.find(rest, &norms(rest)).is_some()
    }

    /// [`Pattern::matches_downstream`] for a stage whose program is already known to match.
    pub(crate) fn match_args_downstream(&self, a: &Args<'_>) -> Option<Matched> {
        if let Some(m) = self.match_args(a) {
            return Some(m);
        }
        if self.long_options.is_empty() {
            let front = self.seqs.iter().find_map(|seq| {
                front_of(seq).filter(|front| match_linear(front, a.rest(), &a.norm))
            })?;
            return Some(render(front, a.argv, &a.norm));
        }
        let args = self.split_long_options(a.argv);
        let rest = args.get(1..).unwrap_or_default();
        let norm = norms(rest);
        let front = self
            .seqs
            .iter()
            .find_map(|seq| front_of(seq).filter(|front| match_linear(front, rest, &norm)))?;
        Some(render(front, &args, &norm))
    }

    /// The first linear form that matches the arguments after the program.
    fn find<S: AsRef<str>>(&self, args: &[S], norm: &[Option<Cow<'_, str>>]) -> Option<&[Elem]> {
        self.seqs
            .iter()
            .find(|seq| match_linear(seq, args, norm))
            .map(Vec::as_slice)
    }

    /// `argv` with `--opt=value` split where the pattern names `--opt`.
    fn split_long_options<'a>(&self, argv: &'a [String]) -> Vec<&'a str> {
        let mut args: Vec<&str> = Vec::with_capacity(argv.len() + 1);
        for (i, a) in argv.iter().enumerate() {
            match a.split_once('=') {
                Some((opt, v))
                    if i > 0
                        && opt.starts_with("--")
                        && self.long_options.iter().any(|l| l == opt) =>
                {
                    args.push(opt);
                    args.push(v);
                }
                _ => args.push(a),
            }
        }
        args
    }
}

/// One stage's argv with every argument after the program normalised as a path once (borrowed
/// when it already is normal), so that the patterns of every rule compare against it without
/// normalising again. `norm` stays empty (no allocation) when no argument is absolute.
#[derive(Debug)]
pub(crate) struct Args<'a> {
    argv: &'a [String],
    norm: Vec<Option<Cow<'a, str>>>,
}

impl<'a> Args<'a> {
    /// The arguments after the program.
    fn rest(&self) -> &'a [String] {
        self.argv.get(1..).unwrap_or_default()
    }

    /// Prepares a non-empty argv.
    pub(crate) fn new(argv: &'a [String]) -> Args<'a> {
        let args = argv.get(1..).unwrap_or_default();
        let norm = if args.iter().any(|a| a.starts_with('/')) {
            norms(args)
        } else {
            Vec::new()
        };
        Args { argv, norm }
    }
}

/// The form without its trailing `<path:…>`, if it has one.
fn front_of(seq: &[Elem]) -> Option<&[Elem]> {
    match seq.split_last() {
        Some((Elem::Path(_), front)) => Some(front),
        _ => None,
    }
}

/// Each argument normalised as an absolute path (`None` for anything else).
fn norms<S: AsRef<str>>(args: &[S]) -> Vec<Option<Cow<'_, str>>> {
    args.iter().map(|a| normalized(a.as_ref())).collect()
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
    let mut out = String::with_capacity(p.len());
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                let parent = out.rfind('/').unwrap_or(0);
                out.truncate(parent);
            }
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// Whether an absolute path is already normal (no empty, `.` or `..` components).
fn is_normal(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    rest.is_empty()
        || rest
            .as_bytes()
            .split(|b| *b == b'/')
            .all(|c| !matches!(c, b"" | b"." | b".."))
}

/// The normalised path, borrowed when it already is normal.
fn normalized(p: &str) -> Option<Cow<'_, str>> {
    if is_normal(p) {
        Some(Cow::Borrowed(p))
    } else {
        normalize_path(p).map(Cow::Owned)
    }
}

/// Whether one linear form matches the arguments after the program (no allocation). `norm`
/// holds each argument normalised as a path, or is empty when none is absolute.
fn match_linear<S: AsRef<str>>(seq: &[Elem], args: &[S], norm: &[Option<Cow<'_, str>>]) -> bool {
    let (fixed, rest) = match seq.split_last() {
        Some((Elem::Rest, front)) => (front, true),
        _ => (seq, false),
    };
    if args.len() < fixed.len() || (!rest && args.len() != fixed.len()) {
        return false;
    }
    // Not `zip(norm)`: `norm` is empty when no argument is absolute.
    fixed.iter().zip(args).enumerate().all(|(i, (e, a))| {
        let a = a.as_ref();
        match e {
            Elem::Literal(l) => l == a,
            Elem::Int => !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()),
            Elem::Word => !a.is_empty() && !a.starts_with('-'),
            Elem::Path(g) => norm
                .get(i)
                .and_then(Option::as_deref)
                .is_some_and(|n| g.matches_normalized(n)),
            Elem::Rest | Elem::Optional(_) => false,
        }
    })
}

/// A matched stage: the argv to run, and which of its arguments a `<path:…>` matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Matched {
    /// The argv to run (program as given, paths normalised).
    pub(crate) argv: Vec<String>,
    /// Indexes into `argv` of the arguments matched by `<path:…>`.
    pub(crate) paths: Vec<usize>,
}

/// The argv to run for a matched form: program as given, paths normalised.
fn render<S: AsRef<str>>(seq: &[Elem], args: &[S], norm: &[Option<Cow<'_, str>>]) -> Matched {
    let mut out = Vec::with_capacity(args.len());
    let mut paths = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let a = a.as_ref();
        let path = match i.checked_sub(1).map(|j| (seq.get(j), norm.get(j))) {
            Some((Some(Elem::Path(_)), Some(Some(n)))) => Some(n),
            _ => None,
        };
        if path.is_some() {
            paths.push(i);
        }
        out.push(path.map_or_else(|| a.to_owned(), |n| n.as_ref().to_owned()));
    }
    Matched { argv: out, paths }
}
