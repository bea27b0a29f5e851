//! Finding groups: many findings of one kind, read as one.
//!
//! A kernel that skips a guard on a hot path produces a finding per event:
//! tens of thousands with the same rule, severity, task and cause. Printed
//! one by one they bury everything else and cost memory without bound.
//! [`Groups`] folds them into one group per (rule, severity, task, cause)
//! holding the count, the first and last time, the range of finding ids and
//! the first few findings as complete examples.
//!
//! The task of a finding is the one whose event completed it (its last
//! evidence step): the task that moved the stale folio, kept spinning on
//! -EEXIST, or read without the pin. A finding without evidence has task 0.
//!
//! Memory is bounded: at most `max_groups` groups of at most `max_examples`
//! examples each; findings of a kind first seen after the group limit was
//! reached are counted (by severity, with times and ids) in one overflow
//! group, which keeps examples too. Once a group holds its examples, adding
//! a finding to it allocates nothing.
//!
//! Pure and generic over what an example is: the replay report keeps whole
//! [`Finding`]s, the TUI its formatted rows, `--plain` nothing.

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::analyzer::{Finding, RuleId, Severity};

/// Groups kept before new kinds go to the overflow group.
pub const MAX_GROUPS: usize = 1024;
/// Complete findings kept per group.
pub const MAX_EXAMPLES: usize = 3;

/// What grouping reads from a finding (borrowed, so looking a finding up
/// costs no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupInput<'a> {
    pub rule: RuleId,
    pub severity: Severity,
    /// Task whose event completed the finding.
    pub tid: u32,
    pub comm: &'a str,
    pub cause: &'a str,
    pub id: u64,
    /// When the finding became true: its latest evidence time.
    pub ts_ns: u64,
}

impl<'a> GroupInput<'a> {
    pub fn of(f: &'a Finding) -> Self {
        let last = f.evidence.iter().max_by_key(|e| e.index);
        GroupInput {
            rule: f.rule,
            severity: f.severity,
            tid: last.map_or(0, |e| e.tid),
            comm: last.map_or("", |e| e.comm.as_str()),
            cause: &f.cause,
            id: f.id,
            ts_ns: f.evidence.iter().map(|e| e.ts_ns).max().unwrap_or(0),
        }
    }
}

/// Findings counted per severity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityCounts {
    pub violation: u64,
    pub near_miss: u64,
    pub info: u64,
}

impl SeverityCounts {
    pub fn add(&mut self, s: Severity) {
        match s {
            Severity::Violation => self.violation += 1,
            Severity::NearMiss => self.near_miss += 1,
            Severity::Info => self.info += 1,
        }
    }

    pub fn get(&self, s: Severity) -> u64 {
        match s {
            Severity::Violation => self.violation,
            Severity::NearMiss => self.near_miss,
            Severity::Info => self.info,
        }
    }

    pub fn total(&self) -> u64 {
        self.violation + self.near_miss + self.info
    }

    /// Findings at or above `s` (`Info < NearMiss < Violation`).
    pub fn at_least(&self, s: Severity) -> u64 {
        [Severity::Info, Severity::NearMiss, Severity::Violation]
            .into_iter()
            .filter(|x| *x >= s)
            .map(|x| self.get(x))
            .sum()
    }
}

/// Time and id span of a set of findings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub count: u64,
    /// Earliest and latest time a finding of the set became true (ns,
    /// CLOCK_MONOTONIC like every event time).
    pub first_ns: u64,
    pub last_ns: u64,
    /// Lowest and highest finding id.
    pub first_id: u64,
    pub last_id: u64,
}

impl Span {
    fn add(&mut self, ts_ns: u64, id: u64) {
        if self.count == 0 {
            *self = Span {
                count: 1,
                first_ns: ts_ns,
                last_ns: ts_ns,
                first_id: id,
                last_id: id,
            };
            return;
        }
        self.count += 1;
        self.first_ns = self.first_ns.min(ts_ns);
        self.last_ns = self.last_ns.max(ts_ns);
        self.first_id = self.first_id.min(id);
        self.last_id = self.last_id.max(id);
    }
}

/// Findings of one rule, severity, task and cause.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group<T> {
    pub rule: RuleId,
    pub severity: Severity,
    pub tid: u32,
    /// Command name of the task in the group's first finding.
    pub comm: String,
    pub cause: String,
    #[serde(flatten)]
    pub span: Span,
    /// The first findings of the group, complete, in arrival order.
    pub examples: Vec<T>,
}

/// Findings of kinds first seen after the group limit was reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overflow<T> {
    #[serde(flatten)]
    pub span: Span,
    pub by_severity: SeverityCounts,
    /// The first of these findings, complete.
    pub examples: Vec<T>,
}

impl<T> Default for Overflow<T> {
    fn default() -> Self {
        Overflow {
            span: Span::default(),
            by_severity: SeverityCounts::default(),
            examples: Vec::new(),
        }
    }
}

/// Where [`Groups::add`] put a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The group's index in [`Groups::groups`]; `None` for the overflow
    /// group.
    pub group: Option<usize>,
    /// Findings in that group now, this one included (1: a new group).
    pub count: u64,
    /// The finding was kept as an example.
    pub example: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    rule: RuleId,
    severity: Severity,
    tid: u32,
    /// Index into `causes`.
    cause: u32,
}

/// Bounded grouping of findings; see the module documentation.
#[derive(Clone, Debug)]
pub struct Groups<T> {
    index: HashMap<Key, u32>,
    /// Interned cause strings: one is added only with a new group, so this
    /// is bounded by `max_groups` too.
    causes: HashMap<String, u32>,
    groups: Vec<Group<T>>,
    overflow: Overflow<T>,
    totals: SeverityCounts,
    max_groups: usize,
    max_examples: usize,
}

impl<T> Default for Groups<T> {
    fn default() -> Self {
        Groups::new(MAX_GROUPS, MAX_EXAMPLES)
    }
}

impl<T> Groups<T> {
    pub fn new(max_groups: usize, max_examples: usize) -> Self {
        Groups {
            index: HashMap::new(),
            causes: HashMap::new(),
            groups: Vec::new(),
            overflow: Overflow::default(),
            totals: SeverityCounts::default(),
            max_groups,
            max_examples,
        }
    }

    /// Counts one finding. `example` builds what is kept of it, and is only
    /// called when the finding becomes one of its group's examples.
    pub fn add(&mut self, f: GroupInput<'_>, example: impl FnOnce() -> T) -> Placed {
        self.totals.add(f.severity);
        let cause = self.causes.get(f.cause).copied();
        let key = cause.map(|cause| Key {
            rule: f.rule,
            severity: f.severity,
            tid: f.tid,
            cause,
        });
        if let Some(&i) = key.as_ref().and_then(|k| self.index.get(k)) {
            let i = i as usize;
            let g = &mut self.groups[i];
            g.span.add(f.ts_ns, f.id);
            let keep = g.examples.len() < self.max_examples;
            if keep {
                g.examples.push(example());
            }
            return Placed {
                group: Some(i),
                count: g.span.count,
                example: keep,
            };
        }
        if self.groups.len() < self.max_groups {
            let i = self.groups.len();
            let cause = match cause {
                Some(c) => c,
                None => {
                    let c = self.causes.len() as u32;
                    self.causes.insert(f.cause.to_owned(), c);
                    c
                }
            };
            self.index.insert(
                Key {
                    rule: f.rule,
                    severity: f.severity,
                    tid: f.tid,
                    cause,
                },
                i as u32,
            );
            let mut span = Span::default();
            span.add(f.ts_ns, f.id);
            let mut examples = Vec::with_capacity(self.max_examples.min(4));
            let keep = self.max_examples > 0;
            if keep {
                examples.push(example());
            }
            self.groups.push(Group {
                rule: f.rule,
                severity: f.severity,
                tid: f.tid,
                comm: f.comm.to_owned(),
                cause: f.cause.to_owned(),
                span,
                examples,
            });
            return Placed {
                group: Some(i),
                count: 1,
                example: keep,
            };
        }
        let o = &mut self.overflow;
        o.span.add(f.ts_ns, f.id);
        o.by_severity.add(f.severity);
        let keep = o.examples.len() < self.max_examples;
        if keep {
            o.examples.push(example());
        }
        Placed {
            group: None,
            count: o.span.count,
            example: keep,
        }
    }

    /// Groups in the order their first finding arrived.
    pub fn groups(&self) -> &[Group<T>] {
        &self.groups
    }

    pub fn get(&self, i: usize) -> Option<&Group<T>> {
        self.groups.get(i)
    }

    pub fn overflow(&self) -> &Overflow<T> {
        &self.overflow
    }

    /// Every finding counted, by severity (overflow included).
    pub fn totals(&self) -> SeverityCounts {
        self.totals
    }

    /// Every finding counted.
    pub fn total(&self) -> u64 {
        self.totals.total()
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.overflow.span.count == 0
    }

    pub fn max_examples(&self) -> usize {
        self.max_examples
    }

    /// The groups (and the overflow group, when it counted anything),
    /// taken apart.
    pub fn into_parts(self) -> (Vec<Group<T>>, Option<Overflow<T>>, SeverityCounts) {
        let o = (self.overflow.span.count > 0).then_some(self.overflow);
        (self.groups, o, self.totals)
    }
}

/// `true` when a group's count just reached 10, 100, 1000, ...: the moments
/// a stream that prints only the first findings of a group says that it goes
/// on, so a storm costs a line per decade instead of one per finding.
pub fn is_decade(count: u64) -> bool {
    count >= 10 && {
        let mut c = count;
        while c.is_multiple_of(10) {
            c /= 10;
        }
        c == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(rule: RuleId, sev: Severity, tid: u32, cause: &str, id: u64) -> GroupInput<'_> {
        GroupInput {
            rule,
            severity: sev,
            tid,
            comm: "stress",
            cause,
            id,
            ts_ns: 1_000 * id,
        }
    }

    const PIN: RuleId = RuleId::SwapinWithoutCachePin;
    const V: Severity = Severity::Violation;

    #[test]
    fn identical_findings_make_one_group_with_count_times_and_examples() {
        let mut g: Groups<u64> = Groups::new(16, 3);
        let mut built = 0;
        for id in 1..=48_000 {
            let p = g.add(input(PIN, V, 7, "not_held", id), || {
                built += 1;
                id
            });
            assert_eq!(p.group, Some(0));
            assert_eq!(p.count, id);
            assert_eq!(p.example, id <= 3);
        }
        assert_eq!(built, 3, "examples are built only when kept");
        assert_eq!(g.len(), 1);
        let grp = &g.groups()[0];
        assert_eq!(grp.span.count, 48_000);
        assert_eq!((grp.span.first_id, grp.span.last_id), (1, 48_000));
        assert_eq!((grp.span.first_ns, grp.span.last_ns), (1_000, 48_000_000));
        assert_eq!(grp.examples, vec![1, 2, 3]);
        assert_eq!((grp.tid, grp.comm.as_str()), (7, "stress"));
        assert_eq!(grp.cause, "not_held");
        assert_eq!(g.totals().violation, 48_000);
        assert!(g.overflow().examples.is_empty());
    }

    #[test]
    fn rule_severity_task_and_cause_each_split_groups() {
        let mut g: Groups<()> = Groups::new(16, 3);
        g.add(input(PIN, V, 7, "not_held", 1), || ());
        g.add(input(PIN, V, 8, "not_held", 2), || ());
        g.add(input(PIN, V, 7, "held_by_other_task", 3), || ());
        g.add(input(PIN, Severity::NearMiss, 7, "not_held", 4), || ());
        g.add(input(RuleId::EexistStorm, V, 7, "not_held", 5), || ());
        assert_eq!(g.len(), 5);
        // Back to the first kind.
        let p = g.add(input(PIN, V, 7, "not_held", 6), || ());
        assert_eq!((p.group, p.count), (Some(0), 2));
        assert_eq!(g.total(), 6);
        assert_eq!(g.totals().near_miss, 1);
    }

    #[test]
    fn the_group_limit_sends_new_kinds_to_overflow() {
        let mut g: Groups<u64> = Groups::new(2, 2);
        g.add(input(PIN, V, 1, "", 1), || 1);
        g.add(input(PIN, V, 2, "", 2), || 2);
        for id in 3..=10 {
            let p = g.add(input(PIN, Severity::Info, 100 + id as u32, "", id), || id);
            assert_eq!(p.group, None);
            assert_eq!(p.example, id <= 4);
        }
        // Known kinds still find their group.
        assert_eq!(g.add(input(PIN, V, 2, "", 11), || 11).group, Some(1));
        assert_eq!(g.len(), 2);
        let o = g.overflow();
        assert_eq!(o.span.count, 8);
        assert_eq!((o.span.first_id, o.span.last_id), (3, 10));
        assert_eq!(o.by_severity.info, 8);
        assert_eq!(o.examples, vec![3, 4]);
        assert_eq!(g.total(), 11);
        let (groups, overflow, totals) = g.into_parts();
        assert_eq!(groups.len(), 2);
        assert_eq!(overflow.map(|o| o.span.count), Some(8));
        assert_eq!(totals.at_least(Severity::NearMiss), 3);
    }

    #[test]
    fn groups_of_real_findings_use_the_completing_task() {
        use crate::analyzer::{Confidence, Evidence, Objects, StateSnapshot};
        let step = |index, tid: u32, comm: &str| Evidence {
            index,
            ts_ns: 100 + index,
            probe: "swap_read".into(),
            kind: "enter".into(),
            tid,
            comm: comm.into(),
            note: String::new(),
            state: StateSnapshot::default(),
        };
        let f = Finding {
            id: 9,
            rule: RuleId::SwapEntryAba,
            severity: V,
            objects: Objects::default(),
            explanation: String::new(),
            evidence: vec![
                step(3, 1, "mover"),
                step(5, 2, "kswapd0"),
                step(8, 1, "mover"),
            ],
            confidence: Confidence::full(),
            cause: "reused".into(),
        };
        let i = GroupInput::of(&f);
        assert_eq!(
            (i.tid, i.comm, i.cause, i.id, i.ts_ns),
            (1, "mover", "reused", 9, 108)
        );
    }

    #[test]
    fn decades() {
        let d: Vec<u64> = (1..=20_000).filter(|&c| is_decade(c)).collect();
        assert_eq!(d, vec![10, 100, 1000, 10_000]);
    }
}
