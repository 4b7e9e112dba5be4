//! Evaluation: the rules that apply to a request, and the decision with its reasons.
//!
//! The hot path is built at load time: an index from each granted user or group to the rules
//! that name it, per namespace; every program a pattern names interned as a number (in sorted
//! order, so sorting numbers sorts names); and, per decision, each argument normalised as a path
//! once. A decision then hashes the requester's names and the program once, compares numbers to
//! skip patterns for other programs, and allocates only the argv it permits. Reason text is
//! built only for denials.

use std::fmt::{self, Write as _};

use rustc_hash::FxHashMap;

use super::{
    Action, BreakGlassAsk, Decision, Effect, Fact, Limits, Mode, Policy, Request, Rule, Subject,
    Target,
};
use crate::command_line::CommandLine;
use crate::pattern::{Args, Matched, Pattern, normalize_path, program_name};

// The maps are keyed by names from the policy and only looked up with names from a request, so
// a request cannot grow a bucket: the unkeyed Fx hash is safe here and several times cheaper
// than SipHash on short names.

/// Rule indices by granted subject and namespace, and the programs the patterns name.
#[derive(Debug, Clone, Default)]
pub(super) struct Index {
    users: FxHashMap<Box<str>, Grants>,
    groups: FxHashMap<Box<str>, Grants>,
    programs: FxHashMap<Box<str>, u32>,
    program_names: Vec<Box<str>>,
}

/// The rules that grant one subject: in every namespace (`*`), and per namespace.
#[derive(Debug, Clone, Default)]
struct Grants {
    any_namespace: Vec<u32>,
    by_namespace: FxHashMap<Box<str>, Vec<u32>>,
}

impl Grants {
    fn add(&mut self, rule: u32, namespaces: &[&str]) {
        for ns in namespaces {
            let v = if *ns == "*" {
                &mut self.any_namespace
            } else {
                self.by_namespace.entry((*ns).into()).or_default()
            };
            if v.last() != Some(&rule) {
                v.push(rule);
            }
        }
    }
}

/// A rule's patterns as interned numbers: each pattern's program and the pattern itself (by
/// its text), in the order of the rule's lists.
#[derive(Debug, Clone, Default)]
pub(crate) struct RulePrograms {
    commands: Vec<Key>,
    deny: Vec<Key>,
    approval_required: Vec<Key>,
    /// Distinct programs of `commands`, sorted.
    allowed: Vec<u32>,
}

/// A pattern's program and the pattern's own number (equal texts, equal numbers).
#[derive(Debug, Clone, Copy)]
struct Key {
    program: u32,
    pattern: u32,
}

/// `namespace/pod`, for reasons.
struct Place<'a>(&'a Target);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.namespace, self.0.pod)
    }
}

impl Policy {
    pub(super) fn indexed(mut rules: Vec<Rule>) -> Policy {
        let mut names: Vec<&str> = rules
            .iter()
            .flat_map(|r| r.commands.iter().chain(&r.deny).chain(&r.approval_required))
            .map(Pattern::program)
            .collect();
        names.sort_unstable();
        names.dedup();
        let program_names: Vec<Box<str>> = names.into_iter().map(Box::from).collect();
        let programs: FxHashMap<Box<str>, u32> = program_names
            .iter()
            .zip(0u32..)
            .map(|(n, i)| (n.clone(), i))
            .collect();
        let mut patterns: FxHashMap<String, u32> = FxHashMap::default();
        let mut key = |p: &Pattern| {
            let next = u32::try_from(patterns.len()).unwrap_or(u32::MAX);
            Key {
                program: programs.get(p.program()).copied().unwrap_or(u32::MAX),
                pattern: *patterns.entry(p.source().to_owned()).or_insert(next),
            }
        };
        let mut index = Index::default();
        for (i, r) in (0u32..).zip(rules.iter_mut()) {
            let commands: Vec<Key> = r.commands.iter().map(&mut key).collect();
            let mut allowed: Vec<u32> = commands.iter().map(|k| k.program).collect();
            allowed.sort_unstable();
            allowed.dedup();
            r.ids = RulePrograms {
                commands,
                deny: r.deny.iter().map(&mut key).collect(),
                approval_required: r.approval_required.iter().map(&mut key).collect(),
                allowed,
            };
            let mut namespaces: Vec<&str> = r
                .targets
                .iter()
                .flat_map(|t| t.namespaces.iter().map(String::as_str))
                .collect();
            namespaces.sort_unstable();
            namespaces.dedup();
            for g in &r.groups {
                index
                    .groups
                    .entry(g.as_str().into())
                    .or_default()
                    .add(i, &namespaces);
            }
            for u in &r.users {
                index
                    .users
                    .entry(u.as_str().into())
                    .or_default()
                    .add(i, &namespaces);
            }
        }
        index.programs = programs;
        index.program_names = program_names;
        Policy { rules, index }
    }

    /// The rules that grant `mode` to the subject on the target, in policy order.
    fn applicable(&self, subject: &Subject, target: &Target, mode: Mode) -> Vec<&Rule> {
        let mut out: Vec<&Rule> = Vec::with_capacity(16);
        let mut add = |g: &Grants| {
            let by_ns = g.by_namespace.get(target.namespace.as_str());
            for &i in g.any_namespace.iter().chain(by_ns.into_iter().flatten()) {
                out.extend(self.rules.get(i as usize));
            }
        };
        if let Some(g) = self.index.users.get(subject.user.as_str()) {
            add(g);
        }
        for group in &subject.groups {
            if let Some(g) = self.index.groups.get(group.as_str()) {
                add(g);
            }
        }
        // Policy order: the rules live in one Vec, so address order is index order.
        out.sort_unstable_by_key(|r| std::ptr::from_ref::<Rule>(r).addr());
        out.dedup_by(|a, b| std::ptr::eq(*a, *b));
        out.retain(|r| applies(r, target, mode) && holds(subject, r));
        out
    }

    /// Programs allowed for `mode` on the target (for `help` and reasons).
    pub fn allowed_summary(&self, subject: &Subject, target: &Target, mode: Mode) -> Vec<String> {
        let rules = self.applicable(subject, target, mode);
        self.allowed_programs(&rules).map(str::to_owned).collect()
    }

    /// The distinct programs the rules' `commands` name, sorted (program numbers are in name
    /// order, so a bit set gives them sorted without sorting).
    fn allowed_programs<'a>(&'a self, rules: &[&Rule]) -> impl Iterator<Item = &'a str> + 'a {
        let mut set = vec![0u64; self.index.program_names.len().div_ceil(64)];
        for id in rules.iter().flat_map(|r| &r.ids.allowed) {
            if let Some(w) = set.get_mut((id / 64) as usize) {
                *w |= 1 << (id % 64);
            }
        }
        self.index
            .program_names
            .iter()
            .enumerate()
            .filter(move |(i, _)| set.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0))
            .map(|(_, n)| &**n)
    }

    /// Session limits for the subject on the target: the strictest of the applicable rules.
    pub fn session_limits(&self, subject: &Subject, target: &Target) -> Limits {
        let mut out: Option<Limits> = None;
        for r in self.rules.iter().filter(|r| {
            (r.users.contains(&subject.user) || r.groups.iter().any(|g| subject.groups.contains(g)))
                && holds(subject, r)
        }) {
            let _ = target;
            out = Some(match out {
                None => r.limits,
                Some(l) => Limits {
                    max_session: l.max_session.min(r.limits.max_session),
                    idle_timeout: l.idle_timeout.min(r.limits.idle_timeout),
                    recording: l.recording || r.limits.recording,
                },
            });
        }
        out.unwrap_or_default()
    }

    /// Decides a request. Default deny; explicit `deny` patterns win; each pipeline stage is
    /// decided on its own.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        let rules = self.applicable(req.subject, req.target, req.mode);
        let place = Place(req.target);
        let Some(first) = rules.first() else {
            return Decision::deny(
                None,
                format!(
                    "no rule grants {} on {place} to {}",
                    req.mode.as_str(),
                    req.subject.user
                ),
            );
        };
        match req.action {
            Action::Session if req.mode == Mode::BreakGlass => Decision::unmet(
                first,
                "break-glass is asked for with its facts: break-glass TARGET --incident ID --reason TEXT"
                    .to_owned(),
            ),
            Action::Session => Decision::allow(first, Vec::new()),
            Action::BreakGlass(ask) => break_glass(&rules, first, ask),
            Action::Port(p) => match rules.iter().find(|r| r.ports.contains(&p)) {
                Some(r) => Decision::allow(r, Vec::new()),
                None => Decision::deny(Some(first), format!("port {p} is not allowed on {place}")),
            },
            Action::Path(path) => {
                let Some(norm) = normalize_path(path) else {
                    return Decision::deny(
                        Some(first),
                        format!("'{path}' is not an absolute path"),
                    );
                };
                match rules
                    .iter()
                    .find(|r| r.files.iter().any(|g| g.matches_normalized(&norm)))
                {
                    Some(r) => Decision::allow(r, vec![vec![norm]]),
                    None => Decision::deny(
                        Some(first),
                        format!("'{norm}' is not an allowed file on {place}"),
                    ),
                }
            }
            Action::Command(line) => self.decide_command(&rules, line, &place),
        }
    }

    fn decide_command(&self, rules: &[&Rule], line: &CommandLine, place: &Place<'_>) -> Decision {
        let pipeline = line.is_pipeline();
        let mut out = Vec::with_capacity(line.stages().len());
        let mut paths = Vec::with_capacity(line.stages().len());
        let mut chosen: Option<&Rule> = None;
        let mut needs_approval = false;
        for (i, stage) in line.stages().iter().enumerate() {
            let name = stage.first().and_then(|a| program_name(a));
            // A program no pattern names can match nothing, `deny` included.
            let id = name.and_then(|n| self.index.programs.get(n).copied());
            let hit = id.and_then(|id| {
                let mut m = StageMatch {
                    args: Args::new(stage),
                    misses: Misses::default(),
                };
                if let Some(r) = rules
                    .iter()
                    .find(|r| of(&r.ids.deny, &r.deny, id).any(|(k, p)| m.is_match(k, p)))
                {
                    return Some(Err(*r));
                }
                rules.iter().find_map(|r| {
                    if pipeline && !r.pipelines {
                        return None;
                    }
                    if let Some(a) = of(&r.ids.approval_required, &r.approval_required, id)
                        .find_map(|(k, p)| m.matches(k, p, false))
                    {
                        return Some(Ok((*r, a, true)));
                    }
                    of(&r.ids.commands, &r.commands, id)
                        .find_map(|(k, p)| m.matches(k, p, i > 0))
                        .map(|a| Ok((*r, a, false)))
                })
            });
            match hit {
                Some(Ok((r, m, approval))) => {
                    chosen.get_or_insert(r);
                    needs_approval |= approval;
                    paths.push(m.paths);
                    out.push(normalized_program(m.argv));
                }
                Some(Err(r)) => {
                    let program = name.unwrap_or_default();
                    return Decision::deny_naming(
                        Some(r),
                        format!(
                            "'{program}' with these arguments is denied on {place} (rule {})",
                            r.name
                        ),
                    );
                }
                None => {
                    let program = stage.first().map(|a| name.unwrap_or(a)).unwrap_or_default();
                    return self.refuse(rules, line, program, id, place);
                }
            }
        }
        let Some(rule) = chosen else {
            return Decision::deny(None, "an empty command line is not allowed".to_owned());
        };
        let mut d = Decision::allow(rule, out);
        d.paths = paths;
        if needs_approval {
            d.effect = Effect::NeedsApproval;
            d.reasons
                .push(format!("this command needs approval (rule {})", rule.name));
            d.fact = Fact::NamesRule;
        }
        d
    }

    /// The denial of a stage no rule allows, saying what is allowed instead.
    fn refuse(
        &self,
        rules: &[&Rule],
        line: &CommandLine,
        program: &str,
        id: Option<u32>,
        place: &Place<'_>,
    ) -> Decision {
        let rule = rules.first().map_or("-", |r| r.name.as_str());
        let allowed_here = |id: u32| rules.iter().any(|r| r.ids.allowed.contains(&id));
        let mut why = String::with_capacity(128);
        // Writing to a String cannot fail.
        let _ = if line.is_pipeline() && !rules.iter().any(|r| r.pipelines) {
            write!(why, "pipelines are not allowed on {place} (rule {rule})")
        } else if let Some(id) = id.filter(|id| allowed_here(*id)) {
            let _ = write!(why, "'{program}' is allowed on {place} only as: ");
            let mut forms: Vec<&str> = Vec::new();
            for (_, p) in rules
                .iter()
                .flat_map(|r| of(&r.ids.commands, &r.commands, id))
            {
                if !forms.contains(&p.source()) {
                    let sep = if forms.is_empty() { "" } else { ", " };
                    let _ = write!(why, "{sep}'{}'", p.source());
                    forms.push(p.source());
                }
            }
            write!(why, " (rule {rule})")
        } else {
            let _ = write!(why, "'{program}' is not allowed on {place}; allowed here: ");
            for (i, name) in self.allowed_programs(rules).enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(why, "{sep}{name}");
            }
            write!(why, " (rule {rule})")
        };
        Decision::deny_naming(rules.first().copied(), why)
    }
}

/// The patterns of `pats` whose program is `id` (`keys` holds the numbers of each).
fn of<'p>(
    keys: &'p [Key],
    pats: &'p [Pattern],
    id: u32,
) -> impl Iterator<Item = (Key, &'p Pattern)> {
    keys.iter()
        .copied()
        .zip(pats)
        .filter(move |(k, _)| k.program == id)
}

/// One stage being decided: its arguments, and the patterns already found not to match it.
/// Rules often share patterns (a team's template repeated per namespace), and a pattern's answer
/// depends only on its text, so each is tried once per stage.
struct StageMatch<'a> {
    args: Args<'a>,
    misses: Misses,
}

impl StageMatch<'_> {
    /// The argv to run if the pattern matches (as a later pipeline stage when `downstream`).
    fn matches(&mut self, k: Key, p: &Pattern, downstream: bool) -> Option<Matched> {
        let bit = k.pattern as usize * 2 + usize::from(downstream);
        if self.misses.get(bit) {
            return None;
        }
        let hit = if downstream {
            p.match_args_downstream(&self.args)
        } else {
            p.match_args(&self.args)
        };
        if hit.is_none() {
            self.misses.set(bit);
        }
        hit
    }

    /// Whether the pattern matches, without building the argv (for `deny`).
    fn is_match(&mut self, k: Key, p: &Pattern) -> bool {
        let bit = k.pattern as usize * 2;
        if self.misses.get(bit) {
            return false;
        }
        let hit = p.is_match_args(&self.args);
        if !hit {
            self.misses.set(bit);
        }
        hit
    }
}

/// A bit set, inline up to 256 bits.
#[derive(Default)]
struct Misses {
    inline: [u64; 4],
    more: Vec<u64>,
}

impl Misses {
    fn get(&self, bit: usize) -> bool {
        let (w, b) = (bit / 64, bit % 64);
        let word = match w.checked_sub(self.inline.len()) {
            None => self.inline.get(w),
            Some(i) => self.more.get(i),
        };
        word.is_some_and(|x| x & (1 << b) != 0)
    }
    fn set(&mut self, bit: usize) {
        let (w, b) = (bit / 64, bit % 64);
        let word = match w.checked_sub(self.inline.len()) {
            None => self.inline.get_mut(w),
            Some(i) => {
                if self.more.len() <= i {
                    self.more.resize(i + 1, 0);
                }
                self.more.get_mut(i)
            }
        };
        if let Some(x) = word {
            *x |= 1 << b;
        }
    }
}

/// Whether a candidate rule (one the index found for the target's namespace) grants `mode` on
/// the target.
/// A grant-only rule is in effect only while the subject holds a grant for it.
pub(super) fn holds(subject: &Subject, r: &Rule) -> bool {
    !r.requires_grant || subject.grants.contains(&r.name)
}

fn applies(r: &Rule, target: &Target, mode: Mode) -> bool {
    // The index found the namespace (or `*`) in some target; with one target, in that one.
    let one = r.targets.len() == 1;
    r.modes.contains(mode)
        && r.targets.iter().any(|t| {
            (one || t
                .namespaces
                .iter()
                .any(|n| n == "*" || *n == target.namespace))
                && (t.pods.is_empty() || t.pods.iter().any(|g| g.is_match(&target.pod)))
                && (t.containers.is_empty()
                    || t.containers.iter().any(|g| g.is_match(&target.container)))
                && t.labels
                    .iter()
                    .all(|(k, v)| target.labels.get(k) == Some(v))
        })
}

/// A break-glass request on the first applicable rule that has break-glass settings: a reason
/// always, an incident and a break-glass certificate when the rule says so. The permit's
/// longest session is the rule's `maxDuration`.
fn break_glass(rules: &[&Rule], first: &Rule, ask: BreakGlassAsk<'_>) -> Decision {
    let rule = rules
        .iter()
        .copied()
        .find(|r| r.break_glass.is_some())
        .unwrap_or(first);
    let Some(grant) = rule.break_glass.as_ref() else {
        return Decision::unmet(
            rule,
            format!("rule {} grants break-glass without its settings", rule.name),
        );
    };
    let given = |s: Option<&str>| s.map(str::trim).is_some_and(|s| !s.is_empty());
    if !given(ask.reason) {
        return Decision::unmet(
            rule,
            "break-glass needs a reason: --reason \"what is broken\"".to_owned(),
        );
    }
    if grant.incident_required && !given(ask.incident) {
        return Decision::unmet(
            rule,
            format!("rule {} requires an incident: --incident ID", rule.name),
        );
    }
    if grant.certificate_required && !ask.certificate {
        return Decision::unmet(
            rule,
            format!(
                "rule {} requires a break-glass certificate (extension break-glass@jitsh.dev)",
                rule.name
            ),
        );
    }
    let mut d = Decision::allow(rule, Vec::new());
    d.limits.max_session = grant.max_duration;
    d
}

/// The argv that runs is the argv decided: a program named by path runs by its normalised path
/// (`/tmp/l/../../usr/bin/cat` is decided as `/usr/bin/cat`; the kernel would follow `..`
/// through a symbolic link the lexical check never saw).
fn normalized_program(mut argv: Vec<String>) -> Vec<String> {
    if let Some(first) = argv.first_mut()
        && first.contains('/')
        && let Some(norm) = normalize_path(first)
    {
        *first = norm;
    }
    argv
}
