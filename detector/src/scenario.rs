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
//! expect swap_entry_aba violation
//! ```

use std::collections::HashMap;

use detector_common::{
    swp_entry, Event, EventKind, ProbeId, V_ADDR, V_ENTRY, V_ENTRY_PARTIAL, V_FOLIO, V_FOLIO_STATE,
    V_PIN, V_PTE, V_RET,
};
use thiserror::Error;

use crate::analyzer::{parse_flags, Config, RuleId, Severity};
use crate::event::StreamItem;

/// Event times in a script are microseconds from this base (a plausible
/// CLOCK_MONOTONIC value, never zero).
pub const BASE_NS: u64 = 1_000_000_000;
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
    /// Exact findings expected, as a multiset of (rule, severity).
    pub expect: Vec<(RuleId, Severity)>,
    /// `expect none` was given (a benign look-alike).
    pub expect_none: bool,
    /// Analyzer settings for this scenario (`config key=value` lines).
    pub config: Config,
    pub items: Vec<StreamItem>,
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
                let rule = words
                    .next()
                    .ok_or_else(|| err("`expect RULE SEVERITY` or `expect none`".into()))?;
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
                let times = match words.next() {
                    Some(x) => x
                        .strip_prefix('x')
                        .and_then(|x| x.parse::<usize>().ok())
                        .ok_or_else(|| err(format!("expected xN, got `{x}`")))?,
                    None => 1,
                };
                for _ in 0..times {
                    sc.expect.push((r, s));
                }
            }
            _ => {
                let us = num(head)
                    .map_err(|m| err(format!("expected a directive or a time in µs: {m}")))?;
                let ts = BASE_NS + us as u64 * 1000;
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
    Ok(if neg { -v } else { v })
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
        assert_eq!(
            s.expect,
            vec![(RuleId::SwapEntryAba, Severity::NearMiss); 2]
        );
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
