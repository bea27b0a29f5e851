//! Scenario scripts: readable, line-based event sequences compiled to the
//! same [`StreamItem`]s a capture produces, with the findings they must
//! produce declared inline. The format is documented in `docs/scenarios.md`.
//!
//! ```text
//! name aba_reuse_moved
//! seed 000
//! task mover tid=101 pid=100 comm=uffd_mover start=5000
//! 10 mover move_pages enter addr=0x7f0000000000
//! 12 mover move_pages_lookup exit entry=1:0x40 folio=B state=anon|swapbacked|swapcache swap=1:0x40 ref=3
//! expect swap_entry_aba violation entry=1:0x40 folio=B tid=mover confidence=full
//! ```

use std::collections::HashMap;

use detector_common::{
    swp_entry, Event, EventKind, ProbeId, V_ADDR, V_ENTRY, V_ENTRY_PARTIAL, V_FOLIO, V_FOLIO_STATE,
    V_PIN, V_PTE, V_RET,
};
use thiserror::Error;

use crate::analyzer::{parse_flags, ConfidenceLevel, Config, Finding, RuleId, Severity};
use crate::event::{fmt_entry, StreamItem};

/// Event times in a script are microseconds from this base (a plausible
/// CLOCK_MONOTONIC value, never zero).
pub const BASE_NS: u64 = 1_000_000_000;

/// Findings a script may expect in all (`expect ... xN` lines added up):
/// far beyond any scenario, and a bound on what a script can make the
/// parser allocate.
pub const MAX_EXPECTED: usize = 100_000;
/// Symbolic folios get addresses in the vmemmap range, 64 bytes apart.
const FOLIO_BASE: u64 = 0xffff_ea00_0010_0000;
/// Symbolic swap address spaces.
const SPACE_BASE: u64 = 0xffff_8880_0100_0000;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{path}:{line}: {msg}")]
pub struct ScenarioError {
    pub path: String,
    pub line: usize,
    pub msg: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Seed documents the scenario comes from (`000`, `003`, ...).
    pub seeds: Vec<String>,
    /// Exact findings expected: a multiset, one element per finding (an
    /// `xN` line gives N elements). See [`check_findings`].
    pub expect: Vec<Expectation>,
    /// `expect none` was given (a benign look-alike).
    pub expect_none: bool,
    /// Analyzer settings for this scenario (`config key=value` lines).
    pub config: Config,
    pub items: Vec<StreamItem>,
}

/// One expected finding: its rule and severity, and optionally the objects
/// it must name and its confidence. A field left `None` / empty is not
/// checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub rule: RuleId,
    pub severity: Severity,
    /// Swap entries the finding must list (`entry=`), raw values.
    pub entries: Vec<u64>,
    /// Folio addresses the finding must list (`folio=`).
    pub folios: Vec<u64>,
    /// Thread ids the finding must list (`tid=`).
    pub tids: Vec<u32>,
    pub confidence: Option<ConfidenceLevel>,
    /// `confidence.lost_events` (`lost=`).
    pub lost: Option<u64>,
    /// Line of the `expect` directive (1-based) and its text, for messages.
    pub line: usize,
    pub text: String,
}

impl Expectation {
    /// Only rule and severity, as the short form `expect RULE SEVERITY`.
    pub fn new(rule: RuleId, severity: Severity) -> Expectation {
        Expectation {
            rule,
            severity,
            entries: Vec::new(),
            folios: Vec::new(),
            tids: Vec::new(),
            confidence: None,
            lost: None,
            line: 0,
            text: String::new(),
        }
    }

    /// Whether `f` satisfies every declared field. Objects are checked by
    /// inclusion: a finding lists every object of its evidence chain, and
    /// the expectation names the ones it must blame.
    pub fn matches(&self, f: &Finding) -> bool {
        f.rule == self.rule
            && f.severity == self.severity
            && self
                .entries
                .iter()
                .all(|e| f.objects.entries.contains(&fmt_entry(*e)))
            && self
                .folios
                .iter()
                .all(|x| f.objects.folios.contains(&format!("{x:#x}")))
            && self.tids.iter().all(|t| f.objects.tids.contains(t))
            && self.confidence.is_none_or(|c| f.confidence.level == c)
            && self.lost.is_none_or(|n| f.confidence.lost_events == n)
    }
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.text.is_empty() {
            return write!(f, "line {}: {}", self.line, self.text);
        }
        write!(f, "{} {}", self.rule, self.severity)?;
        for e in &self.entries {
            write!(f, " entry={}", fmt_entry(*e))?;
        }
        for x in &self.folios {
            write!(f, " folio={x:#x}")?;
        }
        for t in &self.tids {
            write!(f, " tid={t}")?;
        }
        if let Some(c) = self.confidence {
            write!(f, " confidence={}", confidence_name(c))?;
        }
        if let Some(n) = self.lost {
            write!(f, " lost={n}")?;
        }
        Ok(())
    }
}

fn confidence_name(c: ConfidenceLevel) -> &'static str {
    match c {
        ConfidenceLevel::Full => "full",
        ConfidenceLevel::Reduced => "reduced",
    }
}

/// One line describing a finding the way an `expect` line would.
pub fn describe_finding(f: &Finding) -> String {
    format!(
        "{} {} entries={:?} folios={:?} tids={:?} confidence={} lost={}",
        f.rule,
        f.severity,
        f.objects.entries,
        f.objects.folios,
        f.objects.tids,
        confidence_name(f.confidence.level),
        f.confidence.lost_events
    )
}

/// Checks `findings` against `expect` exactly: every expectation is met by
/// its own finding and every finding meets one expectation (a perfect
/// matching, so a loose expectation cannot steal the only finding a
/// stricter one accepts). Returns what is missing and what is unexpected.
pub fn check_findings(expect: &[Expectation], findings: &[Finding]) -> Result<(), String> {
    // Kuhn's augmenting paths: scenarios hold a handful of findings.
    let fits: Vec<Vec<usize>> = expect
        .iter()
        .map(|x| {
            (0..findings.len())
                .filter(|&j| x.matches(&findings[j]))
                .collect()
        })
        .collect();
    let mut owner: Vec<Option<usize>> = vec![None; findings.len()];
    fn augment(
        i: usize,
        fits: &[Vec<usize>],
        seen: &mut [bool],
        owner: &mut [Option<usize>],
    ) -> bool {
        for &j in &fits[i] {
            if seen[j] {
                continue;
            }
            seen[j] = true;
            if owner[j].is_none_or(|k| augment(k, fits, seen, owner)) {
                owner[j] = Some(i);
                return true;
            }
        }
        false
    }
    let mut missing = Vec::new();
    for i in 0..expect.len() {
        let mut seen = vec![false; findings.len()];
        if !augment(i, &fits, &mut seen, &mut owner) {
            missing.push(i);
        }
    }
    let extra: Vec<usize> = (0..findings.len())
        .filter(|&j| owner[j].is_none())
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return Ok(());
    }
    let mut msg = String::new();
    for i in missing {
        msg.push_str(&format!("\n  missing: {}", expect[i]));
    }
    for j in extra {
        msg.push_str(&format!(
            "\n  unexpected: #{} {}",
            findings[j].id,
            describe_finding(&findings[j])
        ));
    }
    Err(msg)
}

/// An `expect` line's object keys, resolved once every event is parsed
/// (folio names are defined by the events that use them).
struct PendingExpect {
    x: Expectation,
    times: usize,
    folios: Vec<String>,
}

struct Task {
    tid: u32,
    pid: u32,
    /// Low bits of the task's start time (0: not recorded, as in ABI v1).
    start: u32,
    comm: [u8; 16],
}

#[derive(Default)]
struct Parser {
    tasks: HashMap<String, Task>,
    folios: HashMap<String, u64>,
    spaces: HashMap<String, u64>,
}

pub fn parse(text: &str, path: &str) -> Result<Scenario, ScenarioError> {
    let mut p = Parser::default();
    let mut sc = Scenario {
        name: String::new(),
        description: String::new(),
        seeds: Vec::new(),
        expect: Vec::new(),
        expect_none: false,
        config: Config::default(),
        items: Vec::new(),
    };
    let mut last_ts = 0u64;
    let mut pending_expect: Vec<PendingExpect> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |msg: String| ScenarioError {
            path: path.to_string(),
            line: n + 1,
            msg,
        };
        let mut words = line.split_whitespace();
        let head = words.next().unwrap_or("");
        match head {
            "name" => sc.name = words.collect::<Vec<_>>().join(" "),
            "description" => {
                if !sc.description.is_empty() {
                    sc.description.push(' ');
                }
                sc.description
                    .push_str(&words.collect::<Vec<_>>().join(" "));
            }
            "config" => {
                for kv in words {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| err(format!("expected key=value, got `{kv}`")))?;
                    let v = num(v).map_err(&err)?.max(1) as u64;
                    match k {
                        "eexist_threshold" => sc.config.eexist_threshold = v as u32,
                        "max_tracked" => sc.config.max_tracked = v as usize,
                        "lookups_per_window" => sc.config.lookups_per_window = v as usize,
                        "task_idle_ns" => sc.config.task_idle_ns = v,
                        _ => return Err(err(format!("unknown config key `{k}`"))),
                    }
                }
            }
            "seed" => sc.seeds.extend(words.map(str::to_string)),
            "task" => {
                let name = words
                    .next()
                    .ok_or_else(|| err("`task` needs a name".into()))?;
                let mut t = Task {
                    tid: 0,
                    pid: 0,
                    start: 0,
                    comm: [0; 16],
                };
                let mut comm = name.to_string();
                for kv in words {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| err(format!("expected key=value, got `{kv}`")))?;
                    match k {
                        "tid" => t.tid = num(v).map_err(&err)? as u32,
                        "pid" => t.pid = num(v).map_err(&err)? as u32,
                        "start" => t.start = num(v).map_err(&err)? as u32,
                        "comm" => comm = v.to_string(),
                        _ => return Err(err(format!("unknown task attribute `{k}`"))),
                    }
                }
                if t.tid == 0 {
                    return Err(err("a task needs tid=N (non-zero)".into()));
                }
                if t.pid == 0 {
                    t.pid = t.tid;
                }
                let b = comm.as_bytes();
                let l = b.len().min(15);
                t.comm[..l].copy_from_slice(&b[..l]);
                p.tasks.insert(name.to_string(), t);
            }
            "folio" => {
                let name = words
                    .next()
                    .ok_or_else(|| err("`folio` needs a name".into()))?;
                let addr = words
                    .next()
                    .ok_or_else(|| err("`folio NAME ADDR`".into()))?;
                let a = num(addr).map_err(&err)? as u64;
                p.folios.insert(name.to_string(), a);
            }
            "expect" => {
                let rule = words.next().ok_or_else(|| {
                    err("`expect RULE SEVERITY [xN] [key=value...]` or `expect none`".into())
                })?;
                if rule == "none" {
                    sc.expect_none = true;
                    continue;
                }
                let r =
                    RuleId::from_name(rule).ok_or_else(|| err(format!("unknown rule `{rule}`")))?;
                let sev = words
                    .next()
                    .ok_or_else(|| err("`expect RULE SEVERITY`".into()))?;
                let s = Severity::from_name(sev)
                    .ok_or_else(|| err(format!("unknown severity `{sev}`")))?;
                let mut x = Expectation::new(r, s);
                x.line = n + 1;
                x.text = line.to_string();
                let mut pending = PendingExpect {
                    x,
                    times: 1,
                    folios: Vec::new(),
                };
                for w in words {
                    if let Some(t) = w.strip_prefix('x').filter(|t| !t.contains('=')) {
                        pending.times = t
                            .parse::<usize>()
                            .map_err(|_| err(format!("expected xN, got `{w}`")))?;
                        if pending.times > MAX_EXPECTED {
                            return Err(err(format!(
                                "`{w}` expects more than {MAX_EXPECTED} findings"
                            )));
                        }
                        continue;
                    }
                    let (k, v) = w
                        .split_once('=')
                        .ok_or_else(|| err(format!("expected xN or key=value, got `{w}`")))?;
                    // A comma list names several objects the finding must list.
                    for v in v.split(',') {
                        match k {
                            "entry" => pending.x.entries.push(entry(v).map_err(&err)?),
                            "folio" => pending.folios.push(v.to_string()),
                            "tid" => pending.x.tids.push(match p.tasks.get(v) {
                                Some(t) => t.tid,
                                None => num(v).map_err(|_| {
                                    err(format!("`{v}` is neither a declared task nor a tid"))
                                })? as u32,
                            }),
                            "confidence" => {
                                pending.x.confidence = Some(match v {
                                    "full" => ConfidenceLevel::Full,
                                    "reduced" => ConfidenceLevel::Reduced,
                                    _ => {
                                        return Err(err(format!(
                                            "confidence is `full` or `reduced`, not `{v}`"
                                        )))
                                    }
                                })
                            }
                            "lost" => pending.x.lost = Some(num(v).map_err(&err)? as u64),
                            _ => {
                                return Err(err(format!(
                                    "unknown expect key `{k}` (entry, folio, tid, confidence, lost)"
                                )))
                            }
                        }
                    }
                }
                pending_expect.push(pending);
            }
            _ => {
                let us = num(head)
                    .map_err(|m| err(format!("expected a directive or a time in µs: {m}")))?;
                let ts = u64::try_from(us)
                    .ok()
                    .and_then(|us| us.checked_mul(1000))
                    .and_then(|ns| ns.checked_add(BASE_NS))
                    .ok_or_else(|| err(format!("time {us} µs is out of range")))?;
                if ts < last_ts {
                    return Err(err("event times must not go backwards".into()));
                }
                last_ts = ts;
                let rest: Vec<&str> = words.collect();
                let item = p.event(ts, &rest).map_err(&err)?;
                sc.items.push(item);
            }
        }
    }
    let expected: usize = pending_expect.iter().map(|pe| pe.times).sum();
    if expected > MAX_EXPECTED {
        return Err(ScenarioError {
            path: path.to_string(),
            line: 0,
            msg: format!(
                "the script expects {expected} findings; at most {MAX_EXPECTED} are supported"
            ),
        });
    }
    for mut pe in pending_expect {
        for name in &pe.folios {
            let addr =
                match name.strip_prefix("0x") {
                    Some(_) => num(name).map(|v| v as u64),
                    None => p.folios.get(name).copied().ok_or_else(|| {
                        format!("folio `{name}` appears in no event or `folio` line")
                    }),
                }
                .map_err(|msg| ScenarioError {
                    path: path.to_string(),
                    line: pe.x.line,
                    msg,
                })?;
            pe.x.folios.push(addr);
        }
        for _ in 0..pe.times {
            sc.expect.push(pe.x.clone());
        }
    }
    if sc.name.is_empty() {
        return Err(ScenarioError {
            path: path.to_string(),
            line: 0,
            msg: "the script has no `name` line".into(),
        });
    }
    if sc.expect_none && !sc.expect.is_empty() {
        return Err(ScenarioError {
            path: path.to_string(),
            line: 0,
            msg: "`expect none` cannot be combined with other expectations".into(),
        });
    }
    if !sc.expect_none && sc.expect.is_empty() {
        return Err(ScenarioError {
            path: path.to_string(),
            line: 0,
            msg: "declare what the scenario must produce (`expect RULE SEVERITY` or `expect none`)"
                .into(),
        });
    }
    Ok(sc)
}

fn num(s: &str) -> Result<i64, String> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let v = if let Some(h) = body.strip_prefix("0x") {
        u64::from_str_radix(h, 16).map(|v| v as i64)
    } else {
        body.parse::<i64>()
    }
    .map_err(|_| format!("`{s}` is not a number"))?;
    if neg {
        v.checked_neg()
            .ok_or_else(|| format!("`{s}` is out of range"))
    } else {
        Ok(v)
    }
}

/// `type:offset`, offset decimal or 0x-hex.
fn entry(s: &str) -> Result<u64, String> {
    let (t, o) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not a swap entry (type:offset)"))?;
    Ok(swp_entry(num(t)? as u32, num(o)? as u64))
}

/// x86_64 swap PTE encoding of an entry (inverse of
/// `x86_64_pte_to_swp_entry`).
pub fn swap_pte(val: u64) -> u64 {
    let ty = detector_common::swp_type(val) as u64;
    let off = detector_common::swp_offset(val);
    ((!off) << 14 >> 5) & !0x1ff & !(0x1f << 59) | (ty << 59) | 0b10
}

impl Parser {
    fn folio(&mut self, name: &str) -> Result<u64, String> {
        if name.starts_with("0x") {
            return num(name).map(|v| v as u64);
        }
        let n = self.folios.len() as u64;
        Ok(*self
            .folios
            .entry(name.to_string())
            .or_insert(FOLIO_BASE + (n + 1) * 0x40))
    }

    fn space(&mut self, name: &str) -> Result<u64, String> {
        if name.starts_with("0x") {
            return num(name).map(|v| v as u64);
        }
        let n = self.spaces.len() as u64;
        Ok(*self
            .spaces
            .entry(name.to_string())
            .or_insert(SPACE_BASE + (n + 1) * 0x1000))
    }

    fn event(&mut self, ts: u64, w: &[&str]) -> Result<StreamItem, String> {
        let task = w
            .first()
            .ok_or("an event line needs TIME TASK PROBE KIND")?;
        if *task == "lost" {
            let probe = w.get(1).ok_or("`TIME lost PROBE TOTAL`")?;
            let probe =
                ProbeId::from_name(probe).ok_or_else(|| format!("unknown probe `{probe}`"))?;
            let total = num(w.get(2).ok_or("`TIME lost PROBE TOTAL`")?)? as u64;
            return Ok(StreamItem::Lost {
                ts_ns: ts,
                probe: probe as u16,
                total,
            });
        }
        let t = self
            .tasks
            .get(*task)
            .ok_or_else(|| format!("unknown task `{task}` (declare it with `task`)"))?;
        let probe = w.get(1).ok_or("missing probe")?;
        let probe = ProbeId::from_name(probe).ok_or_else(|| format!("unknown probe `{probe}`"))?;
        let kind = match *w.get(2).ok_or("missing kind (enter, exit or tp)")? {
            "enter" => EventKind::Enter,
            "exit" => EventKind::Exit,
            "tp" => EventKind::Tracepoint,
            k => return Err(format!("unknown kind `{k}` (enter, exit or tp)")),
        };
        let mut e = Event {
            ts_ns: ts,
            pid: t.pid,
            tid: t.tid,
            cpu: t.tid % 2,
            comm: t.comm,
            task_start: t.start,
            probe: probe as u16,
            kind: kind as u8,
            nr: 1,
            ..Default::default()
        };
        for kv in &w[3..] {
            if *kv == "foll_pin" {
                e.valid |= V_PIN;
                continue;
            }
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, got `{kv}`"))?;
            match k {
                "folio" => {
                    e.folio = self.folio(v)?;
                    e.valid |= V_FOLIO;
                }
                "state" => {
                    e.f_state =
                        parse_flags(v).ok_or_else(|| format!("unknown folio flag in `{v}`"))?;
                    e.valid |= V_FOLIO_STATE;
                }
                "ref" => {
                    e.f_refcount = num(v)? as i32;
                    e.valid |= V_FOLIO_STATE;
                }
                "map" => {
                    e.f_mapcount = num(v)? as i32;
                    e.valid |= V_FOLIO_STATE;
                }
                "largemap" => {
                    e.f_large_mapcount = num(v)? as i32;
                    e.valid |= V_FOLIO_STATE;
                }
                "pincount" => {
                    e.f_pincount = num(v)? as i32;
                    e.valid |= V_FOLIO_STATE;
                }
                "pages" => {
                    e.f_nr_pages = num(v)? as u32;
                    e.valid |= V_FOLIO_STATE;
                }
                "swap" => {
                    e.f_swap = entry(v)?;
                    e.valid |= V_FOLIO_STATE;
                }
                "entry" => {
                    e.entry = entry(v)?;
                    e.valid |= V_ENTRY;
                }
                "index" => {
                    e.entry = num(v)? as u64;
                    e.valid |= V_ENTRY | V_ENTRY_PARTIAL;
                }
                "space" => {
                    e.addr = self.space(v)?;
                    e.valid |= V_ADDR;
                }
                "addr" => {
                    e.addr = num(v)? as u64;
                    e.valid |= V_ADDR;
                }
                "pte" => {
                    e.pte = match v.strip_prefix("swap:") {
                        Some(ent) => swap_pte(entry(ent)?),
                        None => num(v)? as u64,
                    };
                    e.valid |= V_PTE;
                }
                "ret" => {
                    e.ret = match v {
                        "EEXIST" => -17,
                        "EAGAIN" => -11,
                        "EBUSY" => -16,
                        "ENOENT" => -2,
                        _ => num(v)?,
                    };
                    e.valid |= V_RET;
                }
                "nr" => e.nr = num(v)? as u32,
                "arg" => e.arg = num(v)? as u32,
                "cpu" => e.cpu = num(v)? as u32,
                _ => return Err(format!("unknown event attribute `{k}`")),
            }
        }
        Ok(StreamItem::Event(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventExt;

    #[test]
    fn parses_tasks_events_and_expectations() {
        let s = parse(
            "name t\nseed 000\ntask m tid=7 pid=5 comm=mover\n\
             1 m move_pages enter addr=0x1000\n\
             2 m move_pages_lookup exit index=0x40 space=S1\n\
             3 m do_swap_page exit pte=swap:1:0x40 ret=0\n\
             4 lost swap_entry_free 3\n\
             expect swap_entry_aba near_miss x2\n",
            "t",
        )
        .unwrap();
        assert_eq!(s.items.len(), 4);
        let mut want = Expectation::new(RuleId::SwapEntryAba, Severity::NearMiss);
        want.line = 8;
        want.text = "expect swap_entry_aba near_miss x2".into();
        assert_eq!(s.expect, vec![want; 2]);
        let StreamItem::Event(e) = s.items[2] else {
            panic!()
        };
        assert_eq!(e.swap_entry(), Some(swp_entry(1, 0x40)));
        assert_eq!((e.tid, e.pid), (7, 5));
        let StreamItem::Event(l) = s.items[1] else {
            panic!()
        };
        assert_ne!(l.valid & V_ENTRY_PARTIAL, 0);
    }

    fn finding(folios: &[u64], tids: &[u32], level: ConfidenceLevel) -> Finding {
        Finding {
            id: 1,
            rule: RuleId::SwapEntryAba,
            severity: Severity::Violation,
            objects: crate::analyzer::Objects {
                entries: vec!["1:0x40".into()],
                folios: folios.iter().map(|f| format!("{f:#x}")).collect(),
                tids: tids.to_vec(),
            },
            explanation: String::new(),
            cause: String::new(),
            evidence: Vec::new(),
            confidence: crate::analyzer::Confidence {
                level,
                lost_events: u64::from(level == ConfidenceLevel::Reduced) * 12,
                note: String::new(),
            },
        }
    }

    #[test]
    fn expectations_name_objects_and_confidence() {
        let s = parse(
            "name t\ntask m tid=7\ntask k tid=9\n\
             1 m move_pages_lookup exit entry=1:0x40 folio=B\n\
             2 k swap_entry_alloc exit entry=1:0x40 folio=A\n\
             expect swap_entry_aba violation entry=1:0x40 folio=B,A tid=m confidence=full\n\
             expect swap_entry_aba violation x2 tid=9 lost=12\n",
            "t",
        )
        .unwrap();
        assert_eq!(s.expect.len(), 3);
        let (a, b) = (FOLIO_BASE + 0x40, FOLIO_BASE + 0x80);
        assert_eq!(s.expect[0].folios, vec![a, b]);
        assert_eq!(s.expect[0].tids, vec![7]);
        assert_eq!(s.expect[0].confidence, Some(ConfidenceLevel::Full));
        assert_eq!(s.expect[1].tids, vec![9]);
        assert_eq!(s.expect[1].lost, Some(12));
        assert!(s.expect[0].matches(&finding(&[b, a], &[7, 9], ConfidenceLevel::Full)));
        assert!(!s.expect[0].matches(&finding(&[a], &[7], ConfidenceLevel::Full)));
        assert!(!s.expect[0].matches(&finding(&[a, b], &[7], ConfidenceLevel::Reduced)));
        // A folio name no event defines is a typo, not a silent mismatch.
        let e = parse(
            "name t\ntask m tid=7\n1 m gup_grab exit folio=F\nexpect pin_not_exclusive violation folio=G\n",
            "f.scn",
        )
        .unwrap_err();
        assert_eq!(e.line, 4);
        let e = parse(
            "name t\nexpect pin_not_exclusive violation tid=nobody\n",
            "f",
        )
        .unwrap_err();
        assert!(e.to_string().contains("nobody"), "{e}");
        let e = parse(
            "name t\nexpect pin_not_exclusive violation confidence=high\n",
            "f",
        );
        assert!(e.is_err());
    }

    #[test]
    fn matching_is_exact_and_finds_a_perfect_assignment() {
        let (a, b) = (0x1000, 0x2000);
        let loose = Expectation::new(RuleId::SwapEntryAba, Severity::Violation);
        let mut strict = loose.clone();
        strict.folios = vec![a];
        let fa = finding(&[a], &[1], ConfidenceLevel::Full);
        let fb = finding(&[b], &[1], ConfidenceLevel::Full);
        // The loose expectation comes first and could take `fa`; the
        // matching must still give `fa` to the strict one.
        assert!(
            check_findings(&[loose.clone(), strict.clone()], &[fa.clone(), fb.clone()]).is_ok()
        );
        let err =
            check_findings(std::slice::from_ref(&strict), std::slice::from_ref(&fb)).unwrap_err();
        assert!(
            err.contains("missing") && err.contains("unexpected"),
            "{err}"
        );
        let err = check_findings(std::slice::from_ref(&loose), &[fa.clone(), fb]).unwrap_err();
        assert!(
            err.contains("unexpected") && !err.contains("missing"),
            "{err}"
        );
        let err = check_findings(&[loose.clone(), loose], &[fa]).unwrap_err();
        assert!(
            err.contains("missing") && !err.contains("unexpected"),
            "{err}"
        );
        assert!(check_findings(&[], &[]).is_ok());
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse(
            "name t\ntask m tid=1\n1 m bogus enter\nexpect none\n",
            "f.scn",
        )
        .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().contains("unknown probe"));
        assert!(parse("name t\n", "f").is_err());
    }
}
