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

mod events;
mod expect;

use std::collections::HashMap;

use thiserror::Error;

use crate::analyzer::{ConfidenceLevel, Config, RuleId, Severity};
use crate::event::StreamItem;
use events::{entry, num};

pub use events::swap_pte;
pub use expect::{check_findings, describe_finding, Expectation, Mismatch};

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
                                });
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

#[cfg(test)]
mod tests;
