//! Host-side checks of what a guest sent back: the workload's own data
//! check, the kernel log, and the recorded trace replayed with the detector
//! library (probe coverage, cross-event consistency, lost events, windows
//! and findings).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Duration;

use detector::analyzer::{Analyzer, Config, Finding, Severity, WindowKind};
use detector::event::{fmt_entry, EventExt, StreamItem};
use detector::plan::AttachMode;
use detector::trace::{EndState, TraceReader};
use detector_common::{Event, EventKind, ProbeId, FS_SWAPCACHE, V_FOLIO, V_FOLIO_STATE, V_RET};

use super::vm_kernel::KernelLine;
use super::vm_tests::{Lost, VmTest};

/// Exit status a workload uses to say "this kernel cannot run me".
const SKIP_STATUS: i32 = 77;

#[derive(Default)]
pub struct Verdict {
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    pub skipped: Option<String>,
    /// A known kernel bug of this line that the workload caught.
    pub kernel_bug: Option<String>,
    pub stats: Stats,
}

#[derive(Default)]
pub struct Stats {
    pub events: u64,
    pub events_per_sec: f64,
    pub lost: u64,
    pub windows: Vec<String>,
    /// Findings per rule and severity, and their total.
    pub findings: Vec<String>,
    pub findings_total: usize,
    pub workload_secs: f64,
    pub pswpin: u64,
    pub pswpout: u64,
    /// `uname -r` of the guest, from the trace header (or version.txt).
    pub kernel: String,
}

impl Verdict {
    pub fn error(msg: String) -> Verdict {
        Verdict {
            failures: vec![msg],
            ..Verdict::default()
        }
    }
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
    pub fn status(&self) -> &'static str {
        match (self.passed(), &self.skipped, &self.kernel_bug) {
            (false, _, _) => "FAIL",
            (true, Some(_), _) => "SKIP",
            (true, None, Some(_)) => "KBUG",
            (true, None, None) => "ok",
        }
    }
    /// The guest kernel's exact release, as it reported it.
    pub fn kernel_release(&self) -> &str {
        if self.stats.kernel.is_empty() {
            "-"
        } else {
            &self.stats.kernel
        }
    }
    pub fn headline(&self) -> String {
        if let Some(s) = &self.skipped {
            return s.clone();
        }
        let s = &self.stats;
        format!(
            "{} events ({:.0}/s), {} lost, {} windows, {} findings, workload {:.1}s, pswpin {} pswpout {}",
            s.events,
            s.events_per_sec,
            s.lost,
            s.windows.len(),
            s.findings_total,
            s.workload_secs,
            s.pswpin,
            s.pswpout
        )
    }
    pub fn print(&self, label: &str, took: Duration) {
        println!(
            "   {label} ({}): {} in {took:.1?}: {}",
            self.kernel_release(),
            self.status(),
            self.headline()
        );
        if let Some(b) = &self.kernel_bug {
            println!("   known kernel bug: {b}");
        }
        for n in &self.notes {
            println!("   note: {n}");
        }
        for w in &self.stats.windows {
            println!("   window: {w}");
        }
        for f in &self.stats.findings {
            println!("   finding: {f}");
        }
        for f in &self.failures {
            println!("   FAILED: {f}");
        }
    }
}

fn read_trim(dir: &Path, name: &str) -> Option<String> {
    fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n      ")
}

/// `/proc/vmstat` as name -> value.
pub fn parse_vmstat(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn vmstat_delta(dir: &Path, key: &str) -> Option<u64> {
    let before = parse_vmstat(&fs::read_to_string(dir.join("vmstat.before")).ok()?);
    let after = parse_vmstat(&fs::read_to_string(dir.join("vmstat.after")).ok()?);
    Some(after.get(key)?.saturating_sub(*before.get(key)?))
}

fn uptime_secs(dir: &Path, name: &str) -> Option<f64> {
    read_trim(dir, name)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Kernel log lines that mean the kernel itself complained.
pub fn kernel_complaints(dmesg: &str) -> Vec<String> {
    const BAD: &[&str] = &[
        "BUG:",
        "WARNING:",
        "Oops",
        "general protection fault",
        "kernel BUG",
        "Call Trace:",
        "bad page state",
        "Bad page",
        "refcount_t:",
    ];
    dmesg
        .lines()
        .filter(|l| BAD.iter().any(|b| l.contains(b)))
        .map(|l| l.to_string())
        .collect()
}

pub fn check(t: &VmTest, line: KernelLine, dir: &Path) -> Verdict {
    let mut v = Verdict::default();
    // The workload's own data check.
    let wl_log = fs::read_to_string(dir.join("workload.log")).unwrap_or_default();
    match read_trim(dir, "workload.rc").and_then(|s| s.parse::<i32>().ok()) {
        Some(0) if t.skips_on.contains(&line) => v.failures.push(format!(
            "workload {} ran on {}, where its kernel feature should not exist",
            t.workload[0],
            line.as_str()
        )),
        Some(0) => {}
        Some(SKIP_STATUS) if t.skips_on.contains(&line) => {
            v.skipped = Some(format!(
                "workload skipped on {} as expected: {}",
                line.as_str(),
                tail(&wl_log, 1)
            ));
        }
        Some(SKIP_STATUS) => v.failures.push(format!(
            "workload {} skipped on {}, which should support it: {}",
            t.workload[0],
            line.as_str(),
            tail(&wl_log, 1)
        )),
        Some(rc) => match t
            .kernel_bugs
            .iter()
            .find(|b| b.line == line && wl_log.contains(b.signature))
        {
            Some(b) => {
                v.notes.push(format!(
                    "known kernel bug of {}: workload {} exited {rc}: {}",
                    line.as_str(),
                    t.workload[0],
                    tail(&wl_log, 2)
                ));
                v.kernel_bug = Some(b.what.to_string());
            }
            None => v.failures.push(format!(
                "workload {} exited {rc}:\n      {}",
                t.workload[0],
                tail(&wl_log, 15)
            )),
        },
        None => v
            .failures
            .push("the guest left no workload exit status".to_string()),
    }
    if let Some(last) = wl_log.lines().rev().find(|l| l.starts_with("result:")) {
        v.notes.push(format!("{}: {last}", t.workload[0]));
    }
    if let (Some(a), Some(b)) = (
        uptime_secs(dir, "uptime.before"),
        uptime_secs(dir, "uptime.after"),
    ) {
        v.stats.workload_secs = b - a;
    }
    v.stats.pswpin = vmstat_delta(dir, "pswpin").unwrap_or(0);
    v.stats.pswpout = vmstat_delta(dir, "pswpout").unwrap_or(0);
    let complaints =
        kernel_complaints(&fs::read_to_string(dir.join("dmesg.txt")).unwrap_or_default());
    if !complaints.is_empty() {
        v.failures.push(format!(
            "the kernel logged {} warning line(s):\n      {}",
            complaints.len(),
            complaints
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n      ")
        ));
    }
    let record_log = fs::read_to_string(dir.join("record.log")).unwrap_or_default();
    match read_trim(dir, "record.rc").as_deref() {
        Some("0") => {}
        other => v.failures.push(format!(
            "`detector record` exited {}:\n      {}\n      doctor said:\n      {}",
            other.unwrap_or("without a status"),
            tail(&record_log, 10),
            tail(
                &fs::read_to_string(dir.join("doctor.txt")).unwrap_or_default(),
                40
            )
        )),
    }
    if let Some(s) = record_log.lines().rev().find(|l| !l.trim().is_empty()) {
        v.notes.push(format!("record: {}", s.trim()));
    }
    let trace = dir.join("trace.dtr");
    if !trace.exists() {
        v.failures
            .push("the guest sent back no trace file".to_string());
        return v;
    }
    if v.skipped.is_some() {
        return v;
    }
    check_trace(t, line, dir, &trace, &mut v);
    v
}

/// Per-probe counters and consistency tallies gathered in one pass.
#[derive(Default)]
struct Tally {
    per_probe: BTreeMap<ProbeId, u64>,
    unknown_probe: u64,
    lost_by_probe: BTreeMap<u16, u64>,
    lost_records: u64,
    swap_read_pages: u64,
    /// entry -> folio named by the last insert (removed on delete).
    cache: HashMap<u64, u64>,
    lookups_checked: u64,
    lookup_mismatch: Vec<String>,
    /// Lookups that found a different folio than the recorded insert, one
    /// that carries the entry in folio->swap (replaced by migration/split).
    lookup_replaced: u64,
    lookup_swap_field_checked: u64,
    lookup_swap_field_bad: Vec<String>,
    refcount_checked: u64,
    /// Lookup exits that returned a folio, and events with folio state.
    lookup_folios: u64,
    with_folio_state: u64,
    refcount_bad: Vec<String>,
    first_ns: u64,
    last_ns: u64,
}

fn describe(ev: &Event) -> String {
    let probe = ev.probe_id().map(|p| p.name()).unwrap_or("?");
    let kind = match ev.event_kind() {
        Some(EventKind::Enter) => "enter",
        Some(EventKind::Exit) => "exit",
        _ => "tp",
    };
    let mut s = format!(
        "t={} cpu={} {}:{} {probe}/{kind} folio={:#x}",
        ev.ts_ns,
        ev.cpu,
        ev.comm_str(),
        ev.tid,
        ev.folio
    );
    if let Some(e) = ev.swap_entry() {
        let _ = write!(s, " entry={}", fmt_entry(e));
    }
    if ev.valid & V_FOLIO_STATE != 0 {
        let _ = write!(
            s,
            " ref={} map={} state={:#x} swap={}",
            ev.f_refcount,
            ev.mapcount(),
            ev.f_state,
            fmt_entry(ev.f_swap)
        );
    }
    if ev.valid & V_RET != 0 {
        let _ = write!(s, " ret={:#x}", ev.ret);
    }
    s
}

const MAX_EVIDENCE: usize = 5;

/// The folio a lookup returned: the decoded one, else the raw return value
/// (a pointer; NULL on a miss).
fn lookup_result(ev: &Event) -> u64 {
    if ev.valid & V_FOLIO != 0 {
        ev.folio
    } else if ev.valid & V_RET != 0 && detector_common::is_kernel_ptr(ev.ret as u64) {
        ev.ret as u64
    } else {
        0
    }
}

fn push_evidence(list: &mut Vec<String>, s: String) {
    if list.len() < MAX_EVIDENCE {
        list.push(s);
    }
}

impl Tally {
    fn event(&mut self, ev: &Event) {
        if self.first_ns == 0 {
            self.first_ns = ev.ts_ns;
        }
        self.last_ns = self.last_ns.max(ev.ts_ns);
        let Some(p) = ev.probe_id() else {
            self.unknown_probe += 1;
            return;
        };
        *self.per_probe.entry(p).or_default() += 1;
        let kind = ev.event_kind();
        let has_state = ev.valid & V_FOLIO_STATE != 0;
        if has_state {
            self.with_folio_state += 1;
        }
        // A folio handed to a function (or returned by a lookup) is
        // referenced by the caller: a live folio never has refcount 0.
        let folio_held = match (p, kind) {
            // __remove_mapping deletes from the swap cache after freezing
            // the refcount to 0 (folio_ref_freeze): 0 is expected there.
            (ProbeId::SwapCacheDelete, _) => false,
            (_, Some(EventKind::Enter)) => true,
            (ProbeId::SwapCacheLookup, Some(EventKind::Exit)) => lookup_result(ev) != 0,
            _ => false,
        };
        if has_state && ev.folio != 0 && folio_held {
            self.refcount_checked += 1;
            if ev.f_refcount < 1 {
                push_evidence(&mut self.refcount_bad, describe(ev));
            }
        }
        match (p, kind) {
            (ProbeId::SwapRead, Some(EventKind::Enter)) => {
                self.swap_read_pages += u64::from(ev.nr.max(1));
            }
            // Recorded at entry, or at exit where 0 means it was inserted.
            (ProbeId::SwapCacheInsert, Some(EventKind::Enter))
            | (ProbeId::SwapCacheInsert, Some(EventKind::Exit))
                if kind == Some(EventKind::Enter) || ev.valid & V_RET == 0 || ev.ret == 0 =>
            {
                if let (Some(e), true) = (ev.swap_entry(), ev.valid & V_FOLIO != 0) {
                    for i in 0..u64::from(ev.nr.max(1)) {
                        self.cache.insert(e + i, ev.folio);
                    }
                }
            }
            (ProbeId::SwapCacheDelete, Some(EventKind::Enter)) => {
                if let Some(e) = ev.swap_entry() {
                    for i in 0..u64::from(ev.nr.max(1)) {
                        self.cache.remove(&(e + i));
                    }
                }
            }
            (ProbeId::SwapCacheLookup, Some(EventKind::Exit)) if lookup_result(ev) != 0 => {
                self.lookup_folios += 1;
                let folio = lookup_result(ev);
                let Some(e) = ev.swap_entry() else { return };
                if let Some(&named) = self.cache.get(&e) {
                    self.lookups_checked += 1;
                    let covers = has_state
                        && ev.f_state & FS_SWAPCACHE != 0
                        && ev.f_swap <= e
                        && e < ev.f_swap + u64::from(ev.f_nr_pages.max(1));
                    if named != folio && covers {
                        // Page migration (compaction) and large-folio splits
                        // replace a swap-cache folio in place, without an
                        // insert; the new folio carries the entry.
                        self.lookup_replaced += 1;
                        self.cache.insert(e, folio);
                    } else if named != folio {
                        push_evidence(
                            &mut self.lookup_mismatch,
                            format!(
                                "{} (last insert of this entry named folio {named:#x})",
                                describe(ev)
                            ),
                        );
                    }
                }
                // A folio still in the swap cache carries the entry it is
                // cached under: the looked-up entry must be one of its pages.
                // folio->swap reads 0 when the folio is being deleted from the
                // cache right now (the entry is cleared before the flag, and
                // the snapshot is not atomic): only a different entry is wrong.
                if has_state && ev.f_state & FS_SWAPCACHE != 0 && ev.f_swap != 0 {
                    self.lookup_swap_field_checked += 1;
                    let n = u64::from(ev.f_nr_pages.max(1));
                    if !(ev.f_swap <= e && e < ev.f_swap + n) {
                        push_evidence(&mut self.lookup_swap_field_bad, describe(ev));
                    }
                }
            }
            _ => {}
        }
    }
}

fn check_trace(t: &VmTest, line: KernelLine, dir: &Path, path: &Path, v: &mut Verdict) {
    let mut reader = match TraceReader::open(path) {
        Ok(r) => r,
        Err(e) => {
            v.failures.push(format!("the trace cannot be opened: {e}"));
            return;
        }
    };
    let plan = reader.header().plan.clone();
    v.stats.kernel = reader.header().kernel_release.clone();
    if t.attach == Some("kprobe") {
        let fentry = plan.iter().filter(|p| p.mode == AttachMode::Fentry).count();
        let kprobes = plan.iter().filter(|p| p.mode == AttachMode::Kprobe).count();
        if fentry > 0 || kprobes < t.expect.probes.len() {
            v.failures.push(format!(
                "--attach kprobe gave {kprobes} kprobe and {fentry} fentry probes; \
                 expected every function probe through kprobes"
            ));
        }
    }
    let mut tally = Tally::default();
    // The same analyzer `detector replay` runs, fed in stream order.
    let mut analyzer = Analyzer::new(Config::default());
    let mut findings: Vec<Finding> = Vec::new();
    // When each loss was reported (the poll after it happened).
    let mut losses: Vec<u64> = Vec::new();
    for (index, item) in reader.by_ref() {
        analyzer.process(index, &item, &mut findings);
        match item {
            StreamItem::Event(ev) => tally.event(&ev),
            StreamItem::Lost {
                probe,
                total,
                ts_ns,
            } => {
                tally.lost_records += 1;
                let e = tally.lost_by_probe.entry(probe).or_default();
                if total > *e {
                    losses.push(ts_ns);
                }
                *e = (*e).max(total);
            }
        }
    }
    analyzer.finish(&mut findings);
    check_analysis(t, line, &analyzer, &findings, &losses, v);
    let events: u64 = tally.per_probe.values().sum::<u64>() + tally.unknown_probe;
    let lost_stream: u64 = tally.lost_by_probe.values().sum();
    v.stats.events = events;
    let span = tally.last_ns.saturating_sub(tally.first_ns) as f64 / 1e9;
    v.stats.events_per_sec = if span > 0.0 {
        events as f64 / span
    } else {
        0.0
    };
    let footer = match reader.end_state() {
        Some(EndState::Complete { footer }) => Some(footer.clone()),
        Some(other) => {
            v.failures
                .push(format!("the trace did not end cleanly: {other}"));
            None
        }
        None => None,
    };
    let lost = footer
        .as_ref()
        .map(|f| f.lost_total)
        .unwrap_or(0)
        .max(lost_stream);
    v.stats.lost = lost;
    if let Some(f) = &footer {
        if f.events != events {
            v.failures.push(format!(
                "the footer counts {} events but {} were read",
                f.events, events
            ));
        }
    }

    // (a) every attached probe the workload drives fired.
    let counts: Vec<String> = tally
        .per_probe
        .iter()
        .map(|(p, n)| format!("{}={n}", p.name()))
        .collect();
    v.notes.push(format!("per probe: {}", counts.join(" ")));
    for p in t.expect.probes {
        let entry = plan.iter().find(|e| e.probe == p.name());
        let attached = entry.is_some_and(|e| e.mode != AttachMode::Unavailable);
        let n = tally.per_probe.get(p).copied().unwrap_or(0);
        if !attached {
            let why = entry.map(|e| e.note.as_str()).unwrap_or("not in the plan");
            v.notes
                .push(format!("{} not attached on this kernel: {why}", p.name()));
        } else if n == 0 {
            let msg = format!(
                "probe {} is attached ({}) but recorded no event under this workload",
                p.name(),
                entry.map(|e| e.target.as_str()).unwrap_or("?")
            );
            if v.kernel_bug.is_some() {
                v.notes
                    .push(format!("{msg} (the workload stopped at the kernel bug)"));
            } else {
                v.failures.push(msg);
            }
        }
    }

    // (b) decoded fields agree across events.
    if tally.lookup_replaced > 0 {
        v.notes.push(format!(
            "{} lookups found a folio that replaced the inserted one in the swap cache \
             (page migration or a large-folio split; folio->swap agrees): migration is not probed",
            tally.lookup_replaced
        ));
    }
    if !tally.lookup_mismatch.is_empty() && lost > 0 {
        // A lost insert or delete leaves the entry -> folio map stale.
        v.notes.push(format!(
            "{} of {} lookups disagreed with the last recorded insert, but {lost} events were lost",
            tally.lookup_mismatch.len(),
            tally.lookups_checked
        ));
    } else if !tally.lookup_mismatch.is_empty() {
        v.failures.push(format!(
            "{} of {} swap-cache lookups returned a folio other than the one inserted under that entry:\n      {}",
            tally.lookup_mismatch.len(),
            tally.lookups_checked,
            tally.lookup_mismatch.join("\n      ")
        ));
    }
    if !tally.lookup_swap_field_bad.is_empty() {
        v.failures.push(format!(
            "swap-cache lookups returned folios whose folio->swap does not cover the entry:\n      {}",
            tally.lookup_swap_field_bad.join("\n      ")
        ));
    }
    if !tally.refcount_bad.is_empty() {
        v.failures.push(format!(
            "live folios with refcount < 1:\n      {}",
            tally.refcount_bad.join("\n      ")
        ));
    }
    // The checks above are vacuous if no event carried a folio: that is a
    // decoding failure, not a pass.
    let lookups = tally
        .per_probe
        .get(&ProbeId::SwapCacheLookup)
        .copied()
        .unwrap_or(0);
    v.notes.push(format!(
        "swap-cache lookups: {lookups}, of which {} returned a folio",
        tally.lookup_folios
    ));
    if events > 0 && tally.with_folio_state == 0 {
        v.failures.push(
            "no event carried folio state (refcount, mapcount, flags): the folio reads failed on this kernel"
                .to_string(),
        );
    }
    v.notes.push(format!(
        "consistency: {} lookups matched their insert, {} lookups matched folio->swap, {} refcounts checked",
        tally.lookups_checked, tally.lookup_swap_field_checked, tally.refcount_checked
    ));
    let swap_read_attached = plan
        .iter()
        .any(|e| e.probe == ProbeId::SwapRead.name() && e.mode != AttachMode::Unavailable);
    if t.expect.pswpin_matches && swap_read_attached {
        // 6.12 does not count all-zero pages in pswpin (they never reach
        // the device): those are swpin_zero.
        let pswpin =
            vmstat_delta(dir, "pswpin").unwrap_or(0) + vmstat_delta(dir, "swpin_zero").unwrap_or(0);
        let traced = tally.swap_read_pages;
        let diff = traced.abs_diff(pswpin);
        v.notes.push(format!(
            "swap reads: traced {traced} pages, /proc/vmstat pswpin(+swpin_zero) delta {pswpin}"
        ));
        // The trace also covers the second before and after the vmstat
        // snapshots; nothing else in the guest swaps then.
        if traced < pswpin.saturating_sub(lost) || diff > lost + pswpin / 100 + 16 {
            v.failures.push(format!(
                "swap reads traced ({traced}) do not match the pswpin delta ({pswpin}) within the {lost} lost events"
            ));
        }
    }

    // Swap-outs: the write_folio tracepoint fires once per folio pageout()
    // writes; the workloads map no huge pages, so that is once per page,
    // counted by the kernel as pswpout (or swpout_zero for a zero-filled
    // page on 6.12, which never reaches the device).
    let write_tp_attached = plan
        .iter()
        .any(|e| e.probe == ProbeId::TpWriteFolio.name() && e.mode != AttachMode::Unavailable);
    if t.expect.pswpin_matches && write_tp_attached {
        let pswpout = vmstat_delta(dir, "pswpout").unwrap_or(0)
            + vmstat_delta(dir, "swpout_zero").unwrap_or(0);
        let traced = tally
            .per_probe
            .get(&ProbeId::TpWriteFolio)
            .copied()
            .unwrap_or(0);
        v.notes.push(format!(
            "swap writes: traced {traced} folios, /proc/vmstat pswpout(+swpout_zero) delta {pswpout}"
        ));
        if traced.abs_diff(pswpout) > lost + pswpout / 100 + 16 {
            v.failures.push(format!(
                "swap writes traced ({traced}) do not match the pswpout delta ({pswpout}) within the {lost} lost events"
            ));
        }
    }

    // (c) lost events.
    match t.expect.lost {
        Lost::Positive => {
            if lost == 0 {
                v.failures
                    .push("a tiny ring buffer lost no events: loss accounting is suspect".into());
            }
            if tally.lost_records == 0 {
                v.failures
                    .push("events were lost but the file holds no lost-event record".into());
            }
            match &footer {
                Some(f) if f.lost_total == 0 => v
                    .failures
                    .push("the footer reports no lost events on a tiny ring buffer".into()),
                Some(f) if f.lost_total < lost_stream => v.failures.push(format!(
                    "the footer's lost total {} is below the stream's {lost_stream}",
                    f.lost_total
                )),
                _ => {}
            }
        }
        Lost::Rare => {
            // Calls the kernel did not trace because the probe program was
            // already running on that CPU are counted by the kernel and
            // reported apart by `record`; the rest must be rare (kprobe-mode
            // stash misses), not a flood: more than one in ten thousand
            // means the ring buffer did not keep up.
            let skipped = skipped_from_record_log(dir).min(lost);
            if skipped > 0 {
                v.notes.push(format!(
                    "{skipped} of the {lost} lost events are calls the kernel did not trace (probe \
                     already running on that CPU: preempted on a preemptible kernel)"
                ));
            }
            let other = lost - skipped;
            if other > v.stats.events / 10_000 + 16 {
                v.failures.push(format!(
                    "{other} events lost besides the calls the kernel skipped: the ring buffer did not keep up"
                ));
            }
            if lost > 0 && tally.lost_records == 0 {
                v.failures
                    .push("events were lost but the file holds no lost-event record".into());
            }
            if let Some(f) = &footer {
                if f.lost_total < lost_stream {
                    v.failures.push(format!(
                        "the footer's lost total {} is below the stream's {lost_stream}",
                        f.lost_total
                    ));
                }
            }
        }
    }
}

/// How long after a loss its report may come: `record` polls the counters
/// every 250 ms, and the guest under TCG can be slower.
const LOSS_REPORT_LAG_NS: u64 = 1_000_000_000;

/// The lost events `record` reported as calls the kernel did not trace.
fn skipped_from_record_log(dir: &Path) -> u64 {
    fs::read_to_string(dir.join("record.log"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("detector: ")?;
            let (n, tail) = rest.split_once(' ')?;
            tail.starts_with("of the lost events are calls the kernel did not trace")
                .then(|| n.parse().ok())
                .flatten()
        })
        .unwrap_or(0)
}

fn format_finding(f: &Finding) -> String {
    let mut s = format!(
        "#{} {} [{}] entries={:?} folios={:?} tids={:?}: {}",
        f.id,
        f.rule.name(),
        f.severity.name(),
        f.objects.entries,
        f.objects.folios,
        f.objects.tids,
        f.explanation
    );
    if !f.confidence.note.is_empty() {
        let _ = write!(s, " ({})", f.confidence.note);
    }
    for e in f.evidence.iter().take(12) {
        let st = &e.state;
        let _ = write!(
            s,
            "\n        item {} t={} {}/{} {}:{} {}",
            e.index, e.ts_ns, e.probe, e.kind, e.comm, e.tid, e.note
        );
        if let Some(x) = &st.folio {
            let _ = write!(s, " folio={x}");
        }
        if let Some(x) = &st.entry {
            let _ = write!(s, " entry={x}");
        }
        if let Some(x) = &st.folio_swap {
            let _ = write!(s, " folio->swap={x}");
        }
        if let (Some(r), Some(m)) = (st.refcount, st.mapcount) {
            let _ = write!(s, " ref={r} map={m}");
        }
        if let Some(x) = &st.flags {
            let _ = write!(s, " flags={x}");
        }
        if let Some(x) = st.ret {
            let _ = write!(s, " ret={x}");
        }
    }
    s
}

/// Windows and findings from the analyzer: the expected windows must have
/// been observed, and no violation may appear (each one is either a kernel
/// bug or a false positive; the evidence is printed either way).
fn check_analysis(
    t: &VmTest,
    line: KernelLine,
    a: &Analyzer,
    findings: &[Finding],
    losses: &[u64],
    v: &mut Verdict,
) {
    for k in WindowKind::ALL {
        let s = a.windows().summary(k);
        if s.count > 0 {
            v.stats.windows.push(format!(
                "{}: n={} min={}ns p50={}ns p90={}ns p99={}ns max={}ns",
                s.name, s.count, s.min_ns, s.p50_ns, s.p90_ns, s.p99_ns, s.max_ns
            ));
        }
    }
    for w in t.expect.windows {
        if let Some((_, why)) = w.not_on.iter().find(|(l, _)| *l == line) {
            v.notes.push(format!(
                "window \"{}\" not expected on {}: {why}",
                w.name,
                line.as_str()
            ));
            continue;
        }
        let n: u64 = WindowKind::ALL
            .iter()
            .filter(|k| k.name().contains(w.name))
            .map(|k| a.windows().summary(*k).count)
            .sum();
        if n < w.min_samples {
            let msg = format!(
                "window \"{}\" was observed {n} times (at least {} expected): its histogram is empty",
                w.name, w.min_samples
            );
            if v.kernel_bug.is_some() {
                v.notes
                    .push(format!("{msg} (the workload stopped at the kernel bug)"));
            } else {
                v.failures.push(msg);
            }
        }
    }
    let mut per_rule: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for f in findings {
        *per_rule
            .entry((f.rule.name(), f.severity.name()))
            .or_default() += 1;
    }
    v.stats.findings_total = findings.len();
    v.stats.findings = per_rule
        .iter()
        .map(|((r, s), n)| format!("{r} [{s}] x{n}"))
        .collect();
    // A violation whose evidence spans a counted loss cannot stand on its
    // own: the lost event may be the one that closed it (a release, a
    // free). Losses are reported by the next poll (every 250 ms), so one
    // reported up to a second after the last evidence counts too.
    let unconfirmed = |f: &Finding| {
        let ts = f.evidence.iter().map(|e| e.ts_ns);
        let (Some(first), Some(last)) = (ts.clone().min(), ts.max()) else {
            return false;
        };
        f.confidence.lost_events > 0
            || losses
                .iter()
                .any(|&l| l >= first && l <= last + LOSS_REPORT_LAG_NS)
    };
    let (unsure, violations): (Vec<&Finding>, Vec<&Finding>) = findings
        .iter()
        .filter(|f| f.severity == Severity::Violation)
        .partition(|f| unconfirmed(f));
    if !unsure.is_empty() {
        v.notes.push(format!(
            "{} violation finding(s) span counted lost events and are not taken as proven: {}",
            unsure.len(),
            format_finding(unsure[0])
        ));
    }
    if !violations.is_empty() {
        v.failures.push(format!(
            "{} violation finding(s) (a kernel bug or a false positive: investigate the evidence):\n      {}",
            violations.len(),
            violations
                .iter()
                .take(3)
                .map(|f| format_finding(f))
                .collect::<Vec<_>>()
                .join("\n      ")
        ));
    }
    for f in findings
        .iter()
        .filter(|f| f.severity == Severity::NearMiss)
        .take(3)
    {
        v.notes.push(format!("near miss: {}", format_finding(f)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmstat_parses() {
        let m = parse_vmstat("pswpin 12\npswpout 7\nbogus\n");
        assert_eq!(m.get("pswpin"), Some(&12));
        assert_eq!(m.get("pswpout"), Some(&7));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn skipped_calls_are_read_from_the_record_log() {
        let d = tempfile_dir("skipped");
        fs::write(
            d.join("record.log"),
            "detector: interrupted (SIGINT): 10 events in 1s, lost 7\n\
             detector: 5 of the lost events are calls the kernel did not trace because ...\n",
        )
        .unwrap();
        assert_eq!(skipped_from_record_log(&d), 5);
        fs::write(d.join("record.log"), "detector: lost 7\n").unwrap();
        assert_eq!(skipped_from_record_log(&d), 0);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_known_kernel_bug_is_reported_only_on_its_line_and_signature() {
        let t = super::super::vm_tests::TESTS
            .iter()
            .find(|t| t.name == "uffd-move-swap")
            .unwrap();
        let d = tempfile_dir("kbug");
        fs::write(d.join("workload.rc"), "2\n").unwrap();
        let log =
            "uffd-move-swap: UFFDIO_MOVE 0x1000 -> 0x2000 failed: File exists (os error 17)\n";
        fs::write(d.join("workload.log"), log).unwrap();
        let on_618 = check(t, KernelLine::V6_18, &d);
        assert!(on_618.kernel_bug.is_some());
        assert!(!on_618
            .failures
            .iter()
            .any(|f| f.contains("workload uffd-move-swap exited")));
        let on_72 = check(t, KernelLine::V7_2, &d);
        assert!(on_72.kernel_bug.is_none());
        assert!(on_72.failures.iter().any(|f| f.contains("exited 2")));
        fs::write(d.join("workload.log"), "something else\n").unwrap();
        assert!(check(t, KernelLine::V6_18, &d).kernel_bug.is_none());
        let _ = fs::remove_dir_all(&d);
    }

    fn tempfile_dir(test: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vm-check-{}-{test}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn kernel_warnings_are_found() {
        let log = "[1.0] ok\n[2.0] WARNING: CPU: 1 PID: 5 at mm/swap.c:10\n[3.0] fine\n";
        assert_eq!(kernel_complaints(log).len(), 1);
        assert!(kernel_complaints("[1.0] all good\n").is_empty());
    }

    fn lookup(entry: u64, folio: u64, f_swap: u64) -> Event {
        Event {
            ts_ns: 10,
            folio,
            entry,
            probe: ProbeId::SwapCacheLookup as u16,
            kind: EventKind::Exit as u8,
            valid: detector_common::V_ENTRY | V_FOLIO | V_FOLIO_STATE,
            f_state: FS_SWAPCACHE,
            f_swap,
            f_refcount: 2,
            f_nr_pages: 1,
            ..Event::default()
        }
    }

    #[test]
    fn lookup_of_another_folio_is_caught() {
        let mut t = Tally::default();
        let mut ins = lookup(5, 0x1000, 5);
        ins.probe = ProbeId::SwapCacheInsert as u16;
        ins.kind = EventKind::Enter as u8;
        t.event(&ins);
        t.event(&lookup(5, 0x1000, 5));
        assert!(t.lookup_mismatch.is_empty());
        // A different folio that carries the entry replaced the inserted
        // one (migration, split): noted, not a mismatch.
        t.event(&lookup(5, 0x2000, 5));
        assert!(t.lookup_mismatch.is_empty());
        assert_eq!(t.lookup_replaced, 1);
        // A different folio with no state to vouch for it is a mismatch.
        let mut other = lookup(5, 0x6000, 5);
        other.valid &= !V_FOLIO_STATE;
        t.event(&other);
        assert_eq!(t.lookup_mismatch.len(), 1);
        // A raw kernel pointer return (negative as i64) counts as a hit.
        let mut raw = lookup(5, 0, 5);
        raw.valid = detector_common::V_ENTRY | V_RET;
        raw.ret = 0xffff_8880_0000_1000u64 as i64;
        assert_eq!(lookup_result(&raw), 0xffff_8880_0000_1000);
        raw.ret = -17;
        assert_eq!(lookup_result(&raw), 0);
        t.event(&lookup(6, 0x3000, 5));
        assert_eq!(t.lookup_swap_field_bad.len(), 1);
        // Mid-delete snapshot: swapcache flag still set, folio->swap cleared.
        t.event(&lookup(9, 0x5000, 0));
        assert_eq!(t.lookup_swap_field_bad.len(), 1);
        let mut dead = lookup(7, 0x4000, 7);
        dead.f_refcount = 0;
        t.event(&dead);
        assert_eq!(t.refcount_bad.len(), 1);
    }
}
