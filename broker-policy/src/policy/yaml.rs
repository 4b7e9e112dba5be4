//! The YAML layer of loading: the document as a tree of nodes with their positions, and typed
//! reads from it that record every structural error (unknown or duplicate keys, missing keys,
//! values of the wrong type) instead of stopping at the first, so that `Policy::from_yaml` can
//! report them together with the semantic errors.
//!
//! Only YAML that cannot be parsed at all (bad indentation, an unclosed bracket, a document over
//! the parser's budget) stops loading early; that error is then reported alone.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::options::DuplicateKeyPolicy;
use serde_saphyr::{Location, Spanned};

use super::PolicyError;

/// A YAML node. Scalars are typed the way the YAML parser resolves them (`8080` is a number,
/// `true` a boolean, `~` null); where a string is expected, a plain number or boolean is read
/// as the text it was written as.
#[derive(Debug)]
pub(super) enum Node {
    Null,
    Bool(bool),
    Int(i128),
    /// A number with a fraction or exponent (no field takes one).
    Float,
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl Node {
    /// What the node is, for messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "empty",
            Node::Bool(_) => "a boolean",
            Node::Int(_) | Node::Float => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
        // Beyond i128: no field takes such a number; keep it a number for the message.
        Ok(i128::try_from(v).map_or(Node::Float, Node::Int))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Float)
    }
    fn visit_char<E>(self, v: char) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = a.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = a.next_key()? {
            entries.push((key, a.next_value()?));
        }
        Ok(Node::Map(entries))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<Node, A::Error> {
        Err(de::Error::custom(
            "tagged values are not supported in a policy",
        ))
    }
}

/// Parses the text into a node tree; a document that is not YAML at all gives its one error.
/// Repeated keys are passed through, so that they are reported with the other errors.
pub(super) fn parse(text: &str) -> Result<Spanned<Node>, PolicyError> {
    let options = serde_saphyr::options! { duplicate_keys: DuplicateKeyPolicy::PassThrough };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        // The first line is "error: line L column C: what"; the position is reported apart.
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        let what = first.strip_prefix("error: ").unwrap_or(first);
        let what = match what.split_once(": ") {
            Some((pos, rest)) if pos.starts_with("line ") => rest,
            _ => what,
        };
        PolicyError {
            line,
            column,
            message: format!("not valid YAML: {what}"),
        }
    })
}

/// Reads typed values out of nodes, recording an error for every value it cannot read.
pub(super) struct Reader<'t> {
    text: &'t str,
    pub(super) errors: Vec<PolicyError>,
}

/// The entries of a mapping whose keys have been checked.
pub(super) struct Fields<'n> {
    /// Where the mapping is (for "missing key" errors).
    pub(super) at: &'n Location,
    entries: Vec<(&'n str, &'n Spanned<Node>)>,
}

impl<'n> Fields<'n> {
    /// The value of a key (the first, if repeated).
    pub(super) fn get(&self, key: &str) -> Option<&'n Spanned<Node>> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }
}

/// The node, unless it is an empty value (`key:` or `key: ~`): for optional settings, where an
/// empty value means "not set".
pub(super) fn present(n: Option<&Spanned<Node>>) -> Option<&Spanned<Node>> {
    n.filter(|n| !matches!(n.value, Node::Null))
}

/// An error at a position.
pub(super) fn error_at(loc: &Location, message: impl Into<String>) -> PolicyError {
    PolicyError {
        line: loc.line(),
        column: loc.column(),
        message: message.into(),
    }
}

impl<'t> Reader<'t> {
    pub(super) fn new(text: &'t str) -> Reader<'t> {
        Reader {
            text,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, loc: &Location, message: impl Into<String>) {
        self.errors.push(error_at(loc, message));
    }

    /// The text a scalar stands for: a string as is, a plain number or boolean as written.
    fn text_of<'n>(&self, n: &'n Spanned<Node>) -> Option<Cow<'n, str>>
    where
        't: 'n,
    {
        match &n.value {
            Node::Str(s) => Some(Cow::Borrowed(s)),
            Node::Bool(_) | Node::Int(_) | Node::Float => {
                let span = n.defined.span();
                let start = usize::try_from(span.byte_offset()?).ok()?;
                let len = usize::try_from(span.byte_len()?).ok()?;
                let raw = self.text.get(start..start.checked_add(len)?)?;
                Some(Cow::Borrowed(raw))
            }
            Node::Null | Node::Seq(_) | Node::Map(_) => None,
        }
    }

    /// A mapping with the given keys. Unknown and repeated keys are errors; `what` names the
    /// mapping in messages ("a rule").
    pub(super) fn map<'n>(
        &mut self,
        n: &'n Spanned<Node>,
        what: &str,
        known: &[&str],
    ) -> Option<Fields<'n>>
    where
        't: 'n,
    {
        let Node::Map(entries) = &n.value else {
            self.error(
                &n.referenced,
                format!("{what} must be a mapping, not {}", n.value.kind()),
            );
            return None;
        };
        let mut fields = Fields {
            at: &n.referenced,
            entries: Vec::with_capacity(entries.len()),
        };
        for (k, v) in entries {
            let Some(key) = (match &k.value {
                Node::Str(s) => Some(s.as_str()),
                _ => None,
            }) else {
                self.error(
                    &k.referenced,
                    format!("{what} cannot have {} as a key", k.value.kind()),
                );
                continue;
            };
            if !known.contains(&key) {
                let hint = match known.iter().find(|c| close(key, c)) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!("expected one of: {}", known.join(", ")),
                };
                self.error(
                    &k.referenced,
                    format!("unknown key `{key}` in {what} ({hint})"),
                );
                continue;
            }
            if fields.get(key).is_some() {
                self.error(&k.referenced, format!("repeated key `{key}` in {what}"));
                continue;
            }
            fields.entries.push((key, v));
        }
        Some(fields)
    }

    /// A key that must be present.
    pub(super) fn required<'n>(
        &mut self,
        f: &Fields<'n>,
        key: &str,
        what: &str,
    ) -> Option<&'n Spanned<Node>> {
        let v = f.get(key);
        if v.is_none() {
            self.error(f.at, format!("missing `{key}` in {what}"));
        }
        v
    }

    /// A string (`what` names it in messages).
    pub(super) fn string(&mut self, n: &Spanned<Node>, what: &str) -> Option<Spanned<String>> {
        match self.text_of(n) {
            Some(s) => Some(Spanned::new(s.into_owned(), n.referenced, n.defined)),
            None => {
                self.error(
                    &n.referenced,
                    format!("{what} must be a string, not {}", n.value.kind()),
                );
                None
            }
        }
    }

    /// The items of a list; absent means none (an empty value is an error: `deny:` with its
    /// entries commented out is more likely a mistake than a wish for no `deny`).
    pub(super) fn list<'n>(
        &mut self,
        n: Option<&'n Spanned<Node>>,
        what: &str,
    ) -> &'n [Spanned<Node>] {
        match n.map(|n| (n, &n.value)) {
            None => &[],
            Some((_, Node::Seq(items))) => items,
            Some((n, other)) => {
                self.error(
                    &n.referenced,
                    format!("{what} must be a list, not {}", other.kind()),
                );
                &[]
            }
        }
    }

    /// A list of strings; absent means none.
    pub(super) fn strings(
        &mut self,
        n: Option<&Spanned<Node>>,
        what: &str,
    ) -> Vec<Spanned<String>> {
        let items = self.list(n, what);
        let item = format!("each entry of {what}");
        items.iter().filter_map(|i| self.string(i, &item)).collect()
    }

    /// A mapping of strings to strings (labels); absent means none.
    pub(super) fn string_map(
        &mut self,
        n: Option<&Spanned<Node>>,
        what: &str,
    ) -> Vec<(Spanned<String>, String)> {
        let Some(n) = n else {
            return Vec::new();
        };
        match &n.value {
            Node::Map(entries) => entries
                .iter()
                .filter_map(|(k, v)| {
                    let k = self.string(k, &format!("each key of {what}"));
                    let v = self.string(v, &format!("each value of {what}"));
                    Some((k?, v?.value))
                })
                .collect(),
            other => {
                self.error(
                    &n.referenced,
                    format!("{what} must be a mapping, not {}", other.kind()),
                );
                Vec::new()
            }
        }
    }

    /// A boolean (`true`/`false`, also quoted); absent means unset.
    pub(super) fn flag(&mut self, n: Option<&Spanned<Node>>, what: &str) -> Option<bool> {
        let n = n?;
        match &n.value {
            Node::Bool(b) => Some(*b),
            Node::Str(s) if s == "true" => Some(true),
            Node::Str(s) if s == "false" => Some(false),
            other => {
                self.error(
                    &n.referenced,
                    format!("{what} must be true or false, not {}", other.kind()),
                );
                None
            }
        }
    }

    /// A whole number that fits `T` (`range` says which, for messages); quoted digits are read
    /// as the number.
    pub(super) fn number<T: TryFrom<i128>>(
        &mut self,
        n: &Spanned<Node>,
        what: &str,
        range: &str,
    ) -> Option<T> {
        let value = match &n.value {
            Node::Int(i) => Some(*i),
            Node::Str(s) => s.trim().parse::<i128>().ok(),
            _ => None,
        };
        let v = value.and_then(|v| T::try_from(v).ok());
        if v.is_none() {
            let shown = self
                .text_of(n)
                .map_or_else(|| n.value.kind().to_owned(), |t| format!("{t:?}"));
            self.error(
                &n.referenced,
                format!("{what} must be {range}, not {shown}"),
            );
        }
        v
    }

    /// A humantime duration (`30m`, `1h`); absent means unset.
    pub(super) fn duration(&mut self, n: Option<&Spanned<Node>>, what: &str) -> Option<Duration> {
        let n = n?;
        let s = self.string(n, what)?;
        match humantime::parse_duration(&s.value) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    &n.referenced,
                    format!(
                        "{what} must be a duration like 30m or 1h, not {:?}: {e}",
                        s.value
                    ),
                );
                None
            }
        }
    }
}

/// Whether `typo` is one edit (insertion, deletion, substitution or swap) away from `key`
/// (ASCII-case-insensitively), for "did you mean".
fn close(typo: &str, key: &str) -> bool {
    let a: Vec<char> = typo.to_ascii_lowercase().chars().collect();
    let b: Vec<char> = key.to_ascii_lowercase().chars().collect();
    if a == b {
        return true;
    }
    let (short, long) = if a.len() <= b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    match long.len() - short.len() {
        0 => {
            // The positions where the two differ, with the characters there.
            let diff: Vec<(usize, (&char, &char))> = a
                .iter()
                .zip(&b)
                .enumerate()
                .filter(|(_, (x, y))| x != y)
                .collect();
            match diff.as_slice() {
                // One substitution.
                [_] => true,
                // Two neighbours swapped.
                [(i, (a_i, b_i)), (j, (a_j, b_j))] => *j == i + 1 && a_i == b_j && a_j == b_i,
                _ => false,
            }
        }
        1 => {
            let i = short
                .iter()
                .zip(long.iter())
                .take_while(|(x, y)| x == y)
                .count();
            // One insertion: after the common prefix, `long` skips one character.
            short.iter().skip(i).eq(long.iter().skip(i + 1))
        }
        _ => false,
    }
}
