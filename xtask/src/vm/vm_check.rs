//! Host-side checks of what a guest sent back: the workload's own data
//! check, the kernel log, and the recorded trace replayed with the detector
//! library (probe coverage, cross-event consistency, lost events, windows
//! and findings).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Duration;

use detector::analyzer::{Analyzer, Config, Finding, RuleId, Severity, WindowKind};
use detector::event::StreamItem;
use detector::plan::{AttachMode, Hook, ROLES};
use detector::stream::{AnalyzerSetup, Ctx, FileSource, Pipeline, Sink, Speed};
use detector::trace::{existing_segments, EndState};
use detector_common::ProbeId;

use super::vm_kernel::KernelLine;
use super::vm_tally::Tally;
use super::vm_tests::{must_attach, Lost, VmTest};

/// Exit status a workload uses to say "this kernel cannot run me".
const SKIP_STATUS: i32 = 77;
/// Exit status a workload uses when its own data check failed.
const EXIT_CORRUPT: i32 = 1;

#[derive(Default)]
pub(crate) struct Verdict {
    pub(crate) failures: Vec<String>,
    pub(crate) notes: Vec<String>,
    pub(crate) skipped: Option<String>,
    /// A known kernel bug of this line that the workload caught.
    pub(crate) kernel_bug: Option<String>,
    pub(crate) stats: Stats,
}

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) events: u64,
    pub(crate) events_per_sec: f64,
    pub(crate) lost: u64,
    pub(crate) windows: Vec<String>,
    /// Findings per rule and severity, and their total.
    pub(crate) findings: Vec<String>,
    pub(crate) findings_total: usize,
    pub(crate) workload_secs: f64,
    pub(crate) pswpin: u64,
    pub(crate) pswpout: u64,
    /// `uname -r` of the guest, from the trace header (or version.txt).
    pub(crate) kernel: String,
}

impl Verdict {
    pub(crate) fn error(msg: String) -> Verdict {
        Verdict {
            failures: vec![msg],
            ..Verdict::default()
        }
    }
    pub(crate) fn passed(&self) -> bool {
        self.failures.is_empty()
    }
    pub(crate) fn status(&self) -> &'static str {
        match (self.passed(), &self.skipped, &self.kernel_bug) {
            (false, _, _) => "FAIL",
            (true, Some(_), _) => "SKIP",
            (true, None, Some(_)) => "KBUG",
            (true, None, None) => "ok",
        }
    }
    /// The guest kernel's exact release, as it reported it.
    pub(crate) fn kernel_release(&self) -> &str {
        if self.stats.kernel.is_empty() {
            "-"
        } else {
            &self.stats.kernel
        }
    }
    pub(crate) fn headline(&self) -> String {
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
    pub(crate) fn print(&self, label: &str, took: Duration) {
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
pub(crate) fn parse_vmstat(text: &str) -> HashMap<String, u64> {
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

/// Non-zero deltas of the per-size mTHP counters the guest saved around
/// the workload (`mthp.before`, `mthp.after`), for the swap and fault
/// counters that show large folios being made and swapped.
fn mthp_deltas(dir: &Path) -> Option<String> {
    let before = parse_vmstat(&fs::read_to_string(dir.join("mthp.before")).ok()?);
    let after = parse_vmstat(&fs::read_to_string(dir.join("mthp.after")).ok()?);
    const SHOWN: &[&str] = &[
        "anon_fault_alloc",
        "anon_fault_fallback",
        "swpout",
        "swpout_fallback",
        "swpin",
        "split",
    ];
    let mut keys: Vec<&String> = after.keys().collect();
    keys.sort();
    let parts: Vec<String> = keys
        .into_iter()
        .filter(|k| SHOWN.iter().any(|s| k.ends_with(&format!("/{s}"))))
        .filter_map(|k| {
            let d = after[k].saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| format!("{}={d}", k.trim_start_matches("hugepages-")))
        })
        .collect();
    Some(if parts.is_empty() {
        "all zero".to_string()
    } else {
        parts.join(" ")
    })
}

fn uptime_secs(dir: &Path, name: &str) -> Option<f64> {
    read_trim(dir, name)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Kernel log lines that mean the kernel itself complained.
pub(crate) fn kernel_complaints(dmesg: &str) -> Vec<String> {
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
        .map(std::string::ToString::to_string)
        .collect()
}

pub(crate) fn check(t: &VmTest, line: KernelLine, dir: &Path) -> Verdict {
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
        // The injected race corrupts the workload's data by design: its own
        // check failing is the race observed, compared with the findings
        // below (check_injections).
        Some(EXIT_CORRUPT) if t.injected.is_some() => v.notes.push(format!(
            "workload {}'s own data check failed, as the injected race makes it: {}",
            t.workload[0],
            tail(&wl_log, 1)
        )),
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
    let result_line = wl_log.lines().rev().find(|l| l.starts_with("result:"));
    if let Some(last) = result_line {
        v.notes.push(format!("{}: {last}", t.workload[0]));
    }
    let ran = read_trim(dir, "workload.rc").as_deref() == Some("0");
    if ran {
        check_effort(t, result_line, &mut v);
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

/// The `key=value` counters of a workload's `result:` line.
pub(crate) fn parse_result(line: &str) -> HashMap<String, String> {
    line.strip_prefix("result:")
        .unwrap_or(line)
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The workload finished the work it was given (`timed_out=0`) and its
/// counters reach the test's floors.
fn check_effort(t: &VmTest, result_line: Option<&str>, v: &mut Verdict) {
    let Some(line) = result_line else {
        v.failures.push(format!(
            "workload {} printed no `result:` line: its effort cannot be checked",
            t.workload[0]
        ));
        return;
    };
    let kv = parse_result(line);
    match kv.get("timed_out").map(String::as_str) {
        Some("0") => {}
        Some("1") => v.failures.push(format!(
            "workload {} ran out of its --seconds budget before finishing its iterations: \
             it did less than the test declares (raise the budget or shrink the work)",
            t.workload[0]
        )),
        other => v.failures.push(format!(
            "workload {}'s result line has no timed_out=0|1 field (got {other:?}): \
             every workload must say whether its time budget cut it short",
            t.workload[0]
        )),
    }
    for e in t.expect.effort {
        match kv.get(e.key).map(|x| x.parse::<u64>()) {
            Some(Ok(n)) if n >= e.min => {}
            Some(Ok(n)) => v.failures.push(format!(
                "workload {} did too little: {}={n}, the test needs at least {}",
                t.workload[0], e.key, e.min
            )),
            _ => v.failures.push(format!(
                "workload {}'s result line has no numeric {}= counter (the test needs at least {})",
                t.workload[0], e.key, e.min
            )),
        }
    }
}

/// Roles observed through a kernel function (kprobe-able), not a tracepoint.
fn is_function_role(p: ProbeId) -> bool {
    ROLES
        .iter()
        .any(|r| r.probe == p && r.hook != Hook::Tracepoint)
}

/// Every probe the kernel line must have is attached; under `--attach
/// kprobe` every function probe went through kprobes and none through
/// fentry.
fn check_plan(t: &VmTest, line: KernelLine, plan: &[detector::plan::PlanEntry], v: &mut Verdict) {
    let Some(required) = must_attach(line) else {
        v.failures.push(format!(
            "no list of probes that must attach is declared for kernel line {} (vm_tests::MUST_ATTACH)",
            line.as_str()
        ));
        return;
    };
    let kprobe_only = t.attach == Some("kprobe");
    let mut missing = Vec::new();
    let mut wrong_mode = Vec::new();
    for p in required {
        match plan.iter().find(|e| e.probe == p.name()) {
            None => missing.push(format!("{} (not in the plan)", p.name())),
            Some(e) if e.mode == AttachMode::Unavailable => {
                missing.push(format!("{} ({})", p.name(), e.note));
            }
            Some(e) if kprobe_only && is_function_role(*p) && e.mode != AttachMode::Kprobe => {
                wrong_mode.push(format!(
                    "{} ({} on {})",
                    p.name(),
                    e.mode.as_str(),
                    e.target
                ));
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        v.failures.push(format!(
            "{} probe(s) that must attach on {} did not:\n      {}",
            missing.len(),
            line.as_str(),
            missing.join("\n      ")
        ));
    }
    if !wrong_mode.is_empty() {
        v.failures.push(format!(
            "--attach kprobe left {} function probe(s) in another mode:\n      {}",
            wrong_mode.len(),
            wrong_mode.join("\n      ")
        ));
    }
    if kprobe_only {
        let fentry: Vec<&str> = plan
            .iter()
            .filter(|e| e.mode == AttachMode::Fentry)
            .map(|e| e.probe.as_str())
            .collect();
        if !fentry.is_empty() {
            v.failures.push(format!(
                "--attach kprobe still attached through fentry: {}",
                fentry.join(", ")
            ));
        }
    }
}

/// The pipeline's sink for a check: raw tallies, every finding, when each
/// loss was reported, and the windows still open when the stream ended.
#[derive(Default)]
struct Check {
    tally: Tally,
    findings: Vec<Finding>,
    /// When each loss was reported (the poll after it happened).
    losses: Vec<u64>,
    open_at_end: usize,
}

impl Sink for Check {
    fn item(&mut self, _: u64, item: &StreamItem, found: &mut Vec<Finding>) -> std::io::Result<()> {
        match *item {
            StreamItem::Event(ref ev) => self.tally.event(ev),
            StreamItem::Lost {
                probe,
                total,
                ts_ns,
            } => {
                self.tally.lost_records += 1;
                let e = self.tally.lost_by_probe.entry(probe).or_default();
                if total > *e {
                    self.losses.push(ts_ns);
                }
                *e = (*e).max(total);
            }
        }
        self.findings.append(found);
        Ok(())
    }

    // Before `finish`, which closes what is still open as "trace ended".
    fn before_finish(&mut self, a: &Analyzer) {
        self.open_at_end = a.open_windows();
    }

    fn finish(&mut self, found: &mut Vec<Finding>, _: &mut Ctx<'_>) -> std::io::Result<()> {
        self.findings.append(found);
        Ok(())
    }
}

fn check_trace(t: &VmTest, line: KernelLine, dir: &Path, path: &Path, v: &mut Verdict) {
    // A rotated capture is several files (FILE.N oldest .. FILE newest);
    // they are one stream and go through one pipeline, oldest first.
    let segments = existing_segments(path);
    if segments.is_empty() {
        v.failures
            .push("the guest sent back no trace file".to_string());
        return;
    }
    let mut source = match FileSource::open_segments(&segments, Speed::Max) {
        Ok(s) => s,
        Err(e) => {
            v.failures.push(format!(
                "a trace segment of {} cannot be opened: {e}",
                path.display()
            ));
            return;
        }
    };
    let numbers: Vec<u32> = source.segment_headers().map(|h| h.segment).collect();
    if numbers[0] != 0 {
        v.failures.push(format!(
            "the oldest kept trace segment is number {}: segments 0..{} were deleted during the run \
             (--rotate-keep too small for the run), so the analysis would start mid-stream",
            numbers[0],
            numbers[0] - 1
        ));
    }
    if numbers.windows(2).any(|w| w[1] != w[0] + 1) {
        v.failures.push(format!(
            "the kept trace segments are not consecutive: {numbers:?}"
        ));
    }
    if numbers.len() > 1 {
        v.notes.push(format!(
            "analyzed {} rotated segments ({}..={}) as one stream",
            numbers.len(),
            numbers[0],
            numbers[numbers.len() - 1]
        ));
    }
    let (plan, kernel) = match source.segment_headers().next() {
        Some(h) => (h.plan.clone(), h.kernel_release.clone()),
        None => return,
    };
    v.stats.kernel = kernel;
    check_plan(t, line, &plan, v);
    // The same pipeline and analyzer `detector replay` runs.
    let mut cfg = Config::default();
    if let Some(n) = t.expect.eexist_threshold {
        cfg.eexist_threshold = n;
    }
    let mut check = Check::default();
    let analyzer = match Pipeline::new(&mut source)
        .analyze(&AnalyzerSetup::given(cfg))
        .run(&mut check)
    {
        Ok(out) => out.analyzer,
        Err(e) => {
            v.failures.push(format!("the analysis failed: {e}"));
            return;
        }
    };
    let Some(analyzer) = analyzer else {
        v.failures.push("the pipeline ran no analyzer".to_string());
        return;
    };
    let Check {
        tally,
        findings,
        losses,
        open_at_end,
    } = check;
    let mut footer: Option<detector::trace::TraceFooter> = None;
    let mut segments_complete = true;
    for seg in source.segment_ends() {
        match &seg.end {
            Some(EndState::Complete { footer: f }) => {
                // Lost totals run across segments; events are per file.
                footer = Some(match footer.take() {
                    None => f.clone(),
                    Some(mut all) => {
                        all.events += f.events;
                        all.lost_total = all.lost_total.max(f.lost_total);
                        all
                    }
                });
            }
            Some(other) => {
                segments_complete = false;
                v.failures.push(format!(
                    "the trace (segment {}) did not end cleanly: {other}",
                    seg.segment
                ));
            }
            None => segments_complete = false,
        }
    }
    if source.segment_ends().len() < numbers.len() {
        segments_complete = false;
    }
    let footer = footer.filter(|_| segments_complete);
    check_analysis(t, line, &analyzer, &findings, &losses, v);
    if let Some(inj) = &t.injected {
        check_injections(t, inj, dir, &findings, &tally.fast_dropped_last, v);
    }
    let events: u64 = tally.per_probe.values().sum::<u64>() + tally.unknown_probe;
    let lost_stream: u64 = tally.lost_by_probe.values().sum();
    v.stats.events = events;
    let span = tally.last_ns.saturating_sub(tally.first_ns) as f64 / 1e9;
    v.stats.events_per_sec = if span > 0.0 {
        events as f64 / span
    } else {
        0.0
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

    // ---- No window outlives its task. ----
    // Every workload's threads (and the workload itself) exit before the
    // recorder stops, so the exit probe must have fired; the raw events must
    // show no move_pages call open at its task's exit or when a new task
    // took the tid; and the analyzer, which follows task identities, must
    // end the stream with no window open.
    let exit_attached = plan
        .iter()
        .any(|e| e.probe == ProbeId::TaskExit.name() && e.mode != AttachMode::Unavailable);
    let life = analyzer.lifetimes().clone();
    v.notes.push(format!(
        "task lifetimes: {} exits, {} recycled tids seen by the analyzer; windows ended by exit {}, idle {}, \
         by a new task on the tid {}; {} windows open at the end",
        life.exits,
        life.tid_reuses,
        life.windows_ended_by_exit,
        life.windows_ended_idle,
        life.windows_ended_by_new_task,
        open_at_end
    ));
    if exit_attached && tally.lives.exits == 0 {
        v.failures
            .push("the task_exit probe is attached but no task exit was recorded".to_string());
    }
    if !tally.lives.outlived.is_empty() {
        v.failures.push(format!(
            "move_pages windows outlived their task:\n      {}",
            tally.lives.outlived.join("\n      ")
        ));
    }
    if open_at_end > 0 && lost == 0 {
        v.failures.push(format!(
            "{open_at_end} move_pages window(s) were still open in the analyzer when the trace ended, \
             after every workload task had exited"
        ));
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
    // A lost insert or delete leaves the entry -> folio map stale, so each
    // lost event may explain one mismatch, no more.
    if tally.lookup_mismatches > lost {
        v.failures.push(format!(
            "{} of {} swap-cache lookups returned a folio other than the one inserted under that entry \
             ({lost} lost events can explain at most {lost}):\n      {}",
            tally.lookup_mismatches,
            tally.lookups_checked,
            tally.lookup_mismatch.join("\n      ")
        ));
    } else if tally.lookup_mismatches > 0 {
        v.notes.push(format!(
            "{} of {} lookups disagreed with the last recorded insert, within the {lost} lost events",
            tally.lookup_mismatches, tally.lookups_checked
        ));
    }
    // The comparison above only covers lookups whose entry's insert was
    // recorded: it must cover most of them, or it checks nothing.
    let compared = if tally.lookup_folios > 0 {
        tally.lookups_checked as f64 / tally.lookup_folios as f64
    } else {
        1.0
    };
    if compared < t.expect.min_lookups_compared {
        v.failures.push(format!(
            "only {} of {} swap-cache lookups that returned a folio ({:.1}%) could be compared with the \
             insert that named it; the test needs {:.0}%",
            tally.lookups_checked,
            tally.lookup_folios,
            compared * 100.0,
            t.expect.min_lookups_compared * 100.0
        ));
    }
    if tally.bad_returns > 0 {
        v.failures.push(format!(
            "{} exit(s) of int-returning functions recorded a negative errno as an unsigned 32-bit value \
             (the return is not sign-extended: rules comparing with -EEXIST never fire):\n      {}",
            tally.bad_returns,
            tally.bad_return.join("\n      ")
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
    let m = &tally.moves;
    if m.calls > 0 {
        v.notes.push(format!(
            "move_pages: {} calls, {} swap-cache lookups inside them ({} unresolved); {} of those \
             lookups saw their entry freed and {} saw it allocated again before the call returned",
            m.calls, m.lookups, m.unresolved, m.freed, m.reused
        ));
    }
    if tally.large_inserts > 0 || !t.setup.mthp.is_empty() {
        v.notes.push(format!(
            "large folios: {} swap-cache inserts of large folios covering {} pages; {} lookups returned a \
             large folio, {} of them for an entry past its first page, each inside folio->swap .. +nr_pages",
            tally.large_inserts,
            tally.large_insert_pages,
            tally.large_lookups,
            tally.large_lookups_inner
        ));
        if let Some(d) = mthp_deltas(dir) {
            v.notes
                .push(format!("mTHP counters (delta over the workload): {d}"));
        }
    }
    if !t.setup.mthp.is_empty() && tally.large_inserts == 0 {
        v.failures.push(
            "mTHP was enabled but no large folio (FS_LARGE, more than one page) was inserted into the swap cache: \
             large-folio swap-out did not happen (see the mTHP counters and the guest's mTHP settings in the console)"
                .to_string(),
        );
    }
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
    // writes, and the kernel counts each of its pages as pswpout (or
    // swpout_zero for a zero-filled page on 6.12, which never reaches the
    // device): a large folio counts as its page count.
    let write_tp_attached = plan
        .iter()
        .any(|e| e.probe == ProbeId::TpWriteFolio.name() && e.mode != AttachMode::Unavailable);
    if t.expect.pswpin_matches && write_tp_attached {
        let pswpout = vmstat_delta(dir, "pswpout").unwrap_or(0)
            + vmstat_delta(dir, "swpout_zero").unwrap_or(0);
        let folios = tally
            .per_probe
            .get(&ProbeId::TpWriteFolio)
            .copied()
            .unwrap_or(0);
        let traced = tally.write_folio_pages;
        v.notes.push(format!(
            "swap writes: traced {folios} folios = {traced} pages, /proc/vmstat pswpout(+swpout_zero) delta {pswpout}"
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

/// The fault-injected kernel's own account of the races it let happen
/// (`detector-inject:` lines in its log) against the findings, one for one
/// (`vm_inject::match_injections`), and for seed 003 the workload's own
/// zeroed pages against the violations on their address and task.
fn check_injections(
    t: &VmTest,
    want: &super::vm_tests::Injected,
    dir: &Path,
    findings: &[Finding],
    fast_dropped_last: &HashMap<u64, bool>,
    v: &mut Verdict,
) {
    use super::vm_inject::{counts, match_injections, parse_injections, Injection};
    let dmesg = fs::read_to_string(dir.join("dmesg.txt")).unwrap_or_default();
    let (mut inj, malformed) = parse_injections(&dmesg);
    for m in malformed.iter().take(3) {
        v.failures
            .push(format!("an injection line the check cannot read: {m}"));
    }
    let c = counts(&inj);
    v.notes.push(format!(
        "injected races the kernel logged: {} seed-003 lazyfree discards, {} seed-000 stale moves, {} seed-000 missed lookups",
        c.lazyfree_discard, c.stale_folio, c.missed_lookup
    ));
    for (what, got, min) in [
        (
            "seed-003 lazyfree discard",
            c.lazyfree_discard as u64,
            want.lazyfree_discards,
        ),
        (
            "seed-000 stale move",
            c.stale_folio as u64,
            want.stale_moves,
        ),
    ] {
        if got < min {
            v.failures.push(format!(
                "the kernel logged {got} injected {what}(s), the test needs at least {min}: \
                 the race never happened, so the run proves nothing about its detection"
            ));
        }
    }
    // A discard whose folio's last GUP event was GUP-fast's re-check
    // dropping its grab: the read went to a page faulted afresh (no data
    // lost), and reclaim may have entered try_to_unmap_one before the
    // grab, when the folio held no extra reference for the probe's filter
    // to keep. No finding is owed; the zeroed-page check still holds.
    let before = inj.len();
    inj.retain(|i| match i {
        Injection::LazyfreeDiscard { folio, .. } => {
            fast_dropped_last.get(folio) != Some(&true)
                || findings
                    .iter()
                    .any(|f| f.objects.folios.iter().any(|x| *x == format!("{folio:#x}")))
        }
        _ => true,
    });
    if inj.len() < before {
        v.notes.push(format!(
            "{} logged discard(s) hit a folio whose GUP-fast grab its re-check then dropped: no data lost, no finding owed",
            before - inj.len()
        ));
    }
    let disagreements = match_injections(&inj, findings);
    if !disagreements.is_empty() {
        v.failures.push(format!(
            "{} disagreement(s) between the kernel's injection log and the findings:\n      {}",
            disagreements.len(),
            disagreements
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n      ")
        ));
    }
    let log = fs::read_to_string(dir.join("workload.log")).unwrap_or_default();
    if want.lazyfree_discards > 0 {
        check_zeroed_pages(t, &log, findings, v);
    }
    if want.stale_moves > 0 {
        // The mover's own check: words of a destination page that are not
        // what its source held.
        let bad = log
            .lines()
            .rev()
            .find(|l| l.starts_with("result:"))
            .and_then(|l| parse_result(l).get("bad")?.parse::<u64>().ok())
            .unwrap_or(0);
        let moves = findings
            .iter()
            .filter(|f| {
                f.severity == Severity::Violation
                    && matches!(f.rule, RuleId::SwapEntryAba | RuleId::StaleFolioMove)
            })
            .count();
        v.notes.push(format!(
            "{} saw {bad} wrong word(s) in moved pages; the detector {moves} stale-move violation(s)",
            t.workload[0]
        ));
        if bad > 0 && moves == 0 {
            v.failures.push(format!(
                "{} saw wrong data in moved pages, but no swap_entry_aba or stale_folio_move violation was reported",
                t.workload[0]
            ));
        }
        // A workload that stages the race reports each stale move it saw.
        let seen = log
            .lines()
            .rev()
            .find(|l| l.starts_with("result:"))
            .and_then(|l| parse_result(l).get("stale_moves_seen")?.parse::<u64>().ok());
        if let Some(seen) = seen {
            let d = super::vm_inject::match_observed_stale_moves(&log, seen, &inj, findings);
            v.notes.push(format!(
                "{} observed {seen} stale move(s) (a folio moved away from a page still mapping it)",
                t.workload[0]
            ));
            if !d.is_empty() {
                v.failures.push(format!(
                    "{} disagreement(s) between the stale moves the workload observed, the kernel log and the findings:\n      {}",
                    d.len(),
                    d.iter().take(10).cloned().collect::<Vec<_>>().join("\n      ")
                ));
            }
        }
    }
}

/// Every page madvfree-dio found zeroed after a read (`zeroed: addr=A
/// tid=T ...`) has a `lazyfree_extra_refs` violation whose evidence
/// unmapped address A and whose objects name T (the reader whose direct
/// I/O pinned it), one violation per zeroed page.
fn check_zeroed_pages(t: &VmTest, log: &str, findings: &[Finding], v: &mut Verdict) {
    let mut zeroed: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for l in log.lines().filter_map(|l| l.strip_prefix("zeroed: ")) {
        let kv = parse_result(l);
        let (Some(addr), Some(tid)) = (
            kv.get("addr").cloned(),
            kv.get("tid").and_then(|x| x.parse::<u32>().ok()),
        ) else {
            v.failures
                .push(format!("a zeroed-page line without addr= and tid=: {l}"));
            continue;
        };
        *zeroed.entry((addr, tid)).or_default() += 1;
    }
    let mut found: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for f in findings
        .iter()
        .filter(|f| f.rule == RuleId::LazyfreeExtraRefs && f.severity == Severity::Violation)
    {
        let addrs: std::collections::BTreeSet<&String> = f
            .evidence
            .iter()
            .filter_map(|e| e.state.addr.as_ref())
            .collect();
        for a in addrs {
            for &tid in &f.objects.tids {
                *found.entry((a.clone(), tid)).or_default() += 1;
            }
        }
    }
    let pages: u64 = zeroed.values().sum();
    let mut unexplained = Vec::new();
    for ((addr, tid), n) in &zeroed {
        let have = found.get(&(addr.clone(), *tid)).copied().unwrap_or(0);
        if have < *n {
            unexplained.push(format!(
                "{addr} (task {tid}): zeroed {n} time(s), {have} violation(s)"
            ));
        }
    }
    let violations = findings
        .iter()
        .filter(|f| f.rule == RuleId::LazyfreeExtraRefs && f.severity == Severity::Violation)
        .count();
    v.notes.push(format!(
        "{} reported {pages} zeroed page(s); the detector {violations} lazyfree_extra_refs violation(s)",
        t.workload[0]
    ));
    if !unexplained.is_empty() {
        v.failures.push(format!(
            "{} zeroed page(s) have no lazyfree_extra_refs violation on their address and task:\n      {}",
            unexplained.len(),
            unexplained
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n      ")
        ));
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
        if let Some(x) = &st.addr {
            let _ = write!(s, " addr={x}");
        }
        if let Some(x) = e.ret_display() {
            let _ = write!(s, " ret={x}");
        }
    }
    s
}

/// Windows and findings from the analyzer: the expected windows must have
/// been observed often enough, every required finding must be reported
/// often enough, and nothing outside the declaration may appear (a
/// violation on a stock kernel is either a kernel bug or a false positive;
/// the evidence is printed either way). A violation whose evidence spans a
/// counted loss is noted, not taken as proven.
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
                "window \"{}\" was observed {n} times (at least {} expected)",
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
        f.severity == Severity::Violation
            && (f.confidence.lost_events > 0
                || losses
                    .iter()
                    .any(|&l| l >= first && l <= last + LOSS_REPORT_LAG_NS))
    };
    let unsure: Vec<&Finding> = findings.iter().filter(|f| unconfirmed(f)).collect();
    if !unsure.is_empty() {
        v.notes.push(format!(
            "{} violation finding(s) span counted lost events and are not taken as proven: {}",
            unsure.len(),
            format_finding(unsure[0])
        ));
    }
    let decl = t.expect.findings_for(line);
    let count = |r: RuleId, sev: Severity| {
        findings
            .iter()
            .filter(|f| f.rule == r && f.severity == sev)
            .count() as u64
    };
    for req in decl.required {
        let n = count(req.rule, req.severity);
        if n < req.min {
            let msg = format!(
                "required finding {} [{}] was reported {n} time(s), at least {} expected on {}: \
                 the rule no longer fires on the workload built to drive it",
                req.rule,
                req.severity,
                req.min,
                line.as_str()
            );
            // A workload stopped by a known kernel bug did not do the work
            // the requirement was measured on.
            if v.kernel_bug.is_some() {
                v.notes
                    .push(format!("{msg} (the workload stopped at the kernel bug)"));
            } else {
                v.failures.push(msg);
            }
        }
    }
    let declared = |f: &Finding| {
        unconfirmed(f)
            || decl
                .required
                .iter()
                .any(|r| r.rule == f.rule && r.severity == f.severity)
            || decl
                .allowed
                .iter()
                .any(|&(r, sev)| r == f.rule && sev == f.severity)
    };
    let mut unexpected: BTreeMap<(&str, &str), Vec<&Finding>> = BTreeMap::new();
    for f in findings.iter().filter(|f| !declared(f)) {
        unexpected
            .entry((f.rule.name(), f.severity.name()))
            .or_default()
            .push(f);
    }
    for ((rule, sev), list) in unexpected {
        let why = if sev == Severity::Violation.name() {
            "a kernel bug or a false positive: investigate the evidence"
        } else {
            "not declared for this test and kernel line: a new false positive, or declare it"
        };
        v.failures.push(format!(
            "{} unexpected {rule} [{sev}] finding(s) ({why}):\n      {}",
            list.len(),
            list.iter()
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

    // ---- The verdict logic on small synthetic results ----
    //
    // A fixture is the directory a guest sends back, built in code: a
    // trace written with the detector's own writer from a scenario script,
    // the workload's log and exit status, vmstat snapshots. The good one
    // passes; every broken variant must fail with the reason it is broken.

    use crate::vm::vm_tests::{
        effort, needs, Effort, Expect, Findings, Required, Swap, NO_FINDINGS,
    };
    use detector::plan::PlanEntry;
    use detector::scenario;
    use detector::trace::{TraceEnd, TraceHeader, TraceWriter};

    const REQUIRED: &[Required] = &[needs(RuleId::LazyfreeExtraRefs, Severity::NearMiss, 1)];
    const EFFORT: &[Effort] = &[effort("reads", 10)];

    const fn fixture_test(attach: Option<&'static str>) -> VmTest {
        VmTest {
            name: "fixture",
            about: "synthetic results",
            kernels: &[KernelLine::V6_12],
            ci: &[KernelLine::V6_12],
            skips_on: &[],
            swap: Swap::Disk,
            memory_max: "64M",
            workload: &["fixture-load"],
            ring_size: None,
            attach,
            unfiltered: false,
            expect: Expect {
                probes: &[ProbeId::SwapCacheLookup, ProbeId::SwapRead],
                lost: Lost::Rare,
                pswpin_matches: true,
                windows: &[],
                findings: Findings {
                    required: REQUIRED,
                    allowed: &[],
                },
                findings_on: &[(KernelLine::V6_1, NO_FINDINGS)],
                eexist_threshold: None,
                effort: EFFORT,
                min_lookups_compared: 0.9,
            },
            kernel_bugs: &[],
            injected: None,
            timeout_secs: 1,
            swap_mib: None,
            setup: crate::vm::vm_tests::GuestSetup::PLAIN,
        }
    }
    const FIXTURE: VmTest = fixture_test(None);
    const FIXTURE_KPROBE: VmTest = fixture_test(Some("kprobe"));
    /// The fixture on the injected kernel: the discard is a violation the
    /// kernel's log must account for.
    const FIXTURE_INJ: VmTest = VmTest {
        name: "inj-fixture",
        expect: Expect {
            findings: Findings {
                required: &[needs(RuleId::LazyfreeExtraRefs, Severity::Violation, 1)],
                allowed: &[(RuleId::LazyfreeExtraRefs, Severity::NearMiss)],
            },
            ..fixture_test(None).expect
        },
        injected: Some(crate::vm::vm_tests::Injected {
            lazyfree_discards: 1,
            stale_moves: 0,
        }),
        ..fixture_test(None)
    };

    /// What a fixture run got wrong (all `false`: a clean pass).
    #[derive(Default)]
    struct Broken {
        violation: bool,
        lost: bool,
        lookup_mismatch: bool,
        pswpin_off: bool,
        missing_probe: bool,
        no_required_finding: bool,
        unexpected_finding: bool,
        little_effort: bool,
        timed_out: bool,
        fentry_mode: bool,
        unsigned_return: bool,
        /// A pinned lazyfree page discarded (seed 003 injected), with the
        /// kernel's log line and the workload's zeroed page, each of which
        /// may be wrong.
        discard: Option<Discard>,
    }

    #[derive(Clone, Copy, Default)]
    struct Discard {
        /// The kernel logged a different folio.
        wrong_folio_logged: bool,
        /// The kernel logged nothing.
        not_logged: bool,
        /// The workload found a second page zeroed, which nothing explains.
        extra_zeroed: bool,
    }

    const TASKS: &str = "name fixture\ntask k tid=90 comm=kswapd0\ntask app tid=300 comm=app\n";

    fn fixture(b: &Broken) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut script = String::from(TASKS);
        let mut t = 10;
        let mut line = |s: &mut String, l: &str| {
            s.push_str(&format!("{t} {l}\n"));
            t += 1;
        };
        // 20 pages swapped out and looked up again, each read back once.
        for i in 0..20 {
            line(&mut script, &format!(
                "k swap_cache_insert exit entry=1:{i} folio=F{i} state=anon|swapbacked|swapcache|locked swap=1:{i} ref=3 map=0 ret=0"
            ));
            line(&mut script, &format!(
                "k swap_cache_lookup exit entry=1:{i} folio=F{i} state=anon|swapbacked|swapcache swap=1:{i} ref=3 map=0"
            ));
            line(&mut script, &format!(
                "k swap_read enter entry=1:{i} folio=F{i} state=anon|swapbacked|swapcache|locked swap=1:{i} ref=2 map=0"
            ));
        }
        if b.lookup_mismatch {
            // Another folio, with no state to vouch for it.
            line(&mut script, "k swap_cache_lookup exit entry=1:3 folio=G");
        }
        if b.unsigned_return {
            // -EEXIST as a zero-extended 32-bit value.
            line(
                &mut script,
                "k swapcache_prepare exit entry=1:5 nr=1 ret=4294967279",
            );
        }
        if !b.no_required_finding {
            // Seed 003 on a fixed kernel: the pinned lazyfree folio is kept.
            line(&mut script, "app madvise_free enter addr=0x7f1000000000");
            line(&mut script, "app gup_grab exit folio=L state=anon|anon_exclusive ref=1025 map=1 nr=1 foll_pin ret=0");
            line(
                &mut script,
                "k try_to_unmap_one enter folio=L state=anon|anon_exclusive ref=1026 map=1",
            );
            line(&mut script, "k try_to_unmap_one exit folio=L state=anon|swapbacked|anon_exclusive ref=1026 map=1 ret=0");
            line(&mut script, "app gup_put enter folio=L state=anon|swapbacked|anon_exclusive ref=1025 map=1 nr=1 foll_pin");
        }
        if b.violation {
            line(
                &mut script,
                "app gup_grab exit folio=V state=anon|lru ref=1026 map=2 nr=1 foll_pin ret=0",
            );
        }
        if b.unexpected_finding {
            // A COW of a folio carrying the pin bias, no pin seen: near miss.
            line(
                &mut script,
                "app do_wp_page enter folio=W state=anon|lru ref=1026 map=2 addr=0x7f2000000000",
            );
        }
        if b.lost {
            line(&mut script, "lost gup_put 300");
        }
        if b.discard.is_some() {
            line(&mut script, "app gup_grab exit folio=D state=anon|anon_exclusive|lru ref=1025 map=1 nr=1 foll_pin ret=0");
            line(&mut script, "k try_to_unmap_one enter folio=D state=anon|anon_exclusive ref=1026 map=1 addr=0x7f3000000000");
            line(
                &mut script,
                "k try_to_unmap_one exit folio=D state=anon ref=1025 map=0 ret=1",
            );
        }
        // The workload's task exits before the recorder stops.
        line(&mut script, "app task_exit tp");
        script.push_str("expect none\n");
        let sc = scenario::parse(&script, "fixture").unwrap();

        let mut header = TraceHeader::new("fixture");
        header.plan = must_attach(KernelLine::V6_12)
            .unwrap()
            .iter()
            .map(|p| {
                let tp = !is_function_role(*p);
                let mut mode = match (tp, b.fentry_mode) {
                    (true, _) => AttachMode::Tracepoint,
                    (false, true) => AttachMode::Fentry,
                    (false, false) => AttachMode::Kprobe,
                };
                let mut note = String::new();
                if b.missing_probe && *p == ProbeId::DoWpPage {
                    mode = AttachMode::Unavailable;
                    note = "do_wp_page: not in this kernel".into();
                }
                PlanEntry {
                    probe: p.name().to_string(),
                    target: p.name().to_string(),
                    mode,
                    entry: true,
                    exit: true,
                    note,
                    filter: String::new(),
                }
            })
            .collect();
        let mut w = TraceWriter::create(d.join("trace.dtr"), &header).unwrap();
        for it in &sc.items {
            w.write_item(it).unwrap();
        }
        w.finish(TraceEnd::at(scenario::BASE_NS + 1_000_000, "signal"))
            .unwrap();

        let mut dmesg = String::from("[0.1] booted\n");
        let mut zeroed = String::new();
        if let Some(x) = b.discard {
            let folio = sc
                .items
                .iter()
                .find_map(|it| match it {
                    detector::event::StreamItem::Event(e)
                        if e.probe == ProbeId::TryToUnmapOne as u16 && e.ret == 1 =>
                    {
                        Some(e.folio)
                    }
                    _ => None,
                })
                .unwrap();
            let logged = if x.wrong_folio_logged {
                folio + 0x40
            } else {
                folio
            };
            if !x.not_logged {
                dmesg.push_str(&format!(
                    "[2.0] detector-inject: seed003 lazyfree-discard folio={logged:x} addr=7f3000000000 ref=1026 map=1 comm=inj-fixture pid=300\n"
                ));
            }
            zeroed.push_str("zeroed: addr=0x7f3000000000 iter=0 tid=300 reader=0 device_page=1\n");
            if x.extra_zeroed {
                zeroed.push_str(
                    "zeroed: addr=0x7f3000001000 iter=0 tid=300 reader=0 device_page=2\n",
                );
            }
        }
        let reads = if b.little_effort { 3 } else { 40 };
        let timed_out = u8::from(b.timed_out);
        let pswpin = if b.pswpin_off { 200 } else { 20 };
        let files = [
            ("workload.rc", "0".to_string()),
            (
                "workload.log",
                format!("fixture-load: starting\n{zeroed}result: reads={reads} pswpin={pswpin} secs=1.0 timed_out={timed_out}\n"),
            ),
            ("record.rc", "0".to_string()),
            ("record.log", "recorded\n".to_string()),
            ("dmesg.txt", dmesg),
            ("vmstat.before", "pswpin 100\npswpout 7\n".to_string()),
            ("vmstat.after", format!("pswpin {}\npswpout 7\n", 100 + pswpin)),
            ("uptime.before", "10.0 1.0".to_string()),
            ("uptime.after", "11.0 2.0".to_string()),
        ];
        for (name, text) in files {
            fs::write(d.join(name), text).unwrap();
        }
        dir
    }

    fn verdict(t: &VmTest, b: Broken) -> Verdict {
        let dir = fixture(&b);
        check(t, KernelLine::V6_12, dir.path())
    }

    /// The run fails, and one of its failures says `why`.
    fn fails(t: &VmTest, b: Broken, why: &str) {
        let v = verdict(t, b);
        assert!(
            !v.passed(),
            "expected a failure mentioning {why:?}; notes: {:#?}",
            v.notes
        );
        assert!(
            v.failures.iter().any(|f| f.contains(why)),
            "no failure mentions {why:?}: {:#?}",
            v.failures
        );
    }

    #[test]
    fn injected_races_are_matched_with_the_kernel_log_and_the_workload() {
        let ok = Broken {
            discard: Some(Discard::default()),
            ..Broken::default()
        };
        let v = verdict(&FIXTURE_INJ, ok);
        assert!(v.passed(), "{:#?}\n{:#?}", v.failures, v.notes);
        // The same run on a stock line: a violation there fails.
        let v = verdict(
            &FIXTURE,
            Broken {
                discard: Some(Discard::default()),
                ..Broken::default()
            },
        );
        assert!(!v.passed());
        let broken = |d: Discard| Broken {
            discard: Some(d),
            ..Broken::default()
        };
        fails(
            &FIXTURE_INJ,
            broken(Discard {
                wrong_folio_logged: true,
                ..Discard::default()
            }),
            "no lazyfree_extra_refs violation names this folio",
        );
        fails(
            &FIXTURE_INJ,
            broken(Discard {
                not_logged: true,
                ..Discard::default()
            }),
            "the race never happened",
        );
        fails(
            &FIXTURE_INJ,
            broken(Discard {
                extra_zeroed: true,
                ..Discard::default()
            }),
            "zeroed page(s) have no lazyfree_extra_refs violation",
        );
        // No discard at all: nothing proves the rule.
        fails(&FIXTURE_INJ, Broken::default(), "the race never happened");
    }

    #[test]
    fn a_clean_run_passes() {
        let v = verdict(&FIXTURE, Broken::default());
        assert!(v.passed(), "{:#?}\n{:#?}", v.failures, v.notes);
        assert_eq!(v.stats.findings_total, 1);
        let v = verdict(&FIXTURE_KPROBE, Broken::default());
        assert!(v.passed(), "{:#?}", v.failures);
    }

    #[test]
    fn a_violation_fails() {
        let b = Broken {
            violation: true,
            ..Broken::default()
        };
        fails(&FIXTURE, b, "unexpected pin_not_exclusive [violation]");
    }

    #[test]
    fn unexplained_loss_fails() {
        let b = Broken {
            lost: true,
            ..Broken::default()
        };
        fails(&FIXTURE, b, "the ring buffer did not keep up");
    }

    #[test]
    fn count_mismatches_fail() {
        let b = Broken {
            lookup_mismatch: true,
            ..Broken::default()
        };
        fails(&FIXTURE, b, "returned a folio other than the one inserted");
        let b = Broken {
            pswpin_off: true,
            ..Broken::default()
        };
        fails(&FIXTURE, b, "do not match the pswpin delta");
        let b = Broken {
            unsigned_return: true,
            ..Broken::default()
        };
        fails(&FIXTURE, b, "not sign-extended");
    }

    #[test]
    fn a_missing_probe_fails() {
        let b = Broken {
            missing_probe: true,
            ..Broken::default()
        };
        fails(&FIXTURE, b, "do_wp_page (do_wp_page: not in this kernel)");
        // Under --attach kprobe a function probe left on fentry fails.
        let b = Broken {
            fentry_mode: true,
            ..Broken::default()
        };
        fails(&FIXTURE_KPROBE, b, "--attach kprobe left");
        let v = verdict(
            &FIXTURE,
            Broken {
                fentry_mode: true,
                ..Broken::default()
            },
        );
        assert!(v.passed(), "{:#?}", v.failures);
    }

    #[test]
    fn a_missing_required_finding_fails() {
        let b = Broken {
            no_required_finding: true,
            ..Broken::default()
        };
        fails(
            &FIXTURE,
            b,
            "required finding lazyfree_extra_refs [near_miss] was reported 0 time(s)",
        );
    }

    #[test]
    fn an_undeclared_finding_fails() {
        let b = Broken {
            unexpected_finding: true,
            ..Broken::default()
        };
        fails(&FIXTURE, b, "unexpected cow_of_pinned [near_miss]");
    }

    #[test]
    fn too_little_effort_fails() {
        let b = Broken {
            little_effort: true,
            ..Broken::default()
        };
        fails(&FIXTURE, b, "reads=3, the test needs at least 10");
    }

    #[test]
    fn a_timed_out_workload_fails() {
        let b = Broken {
            timed_out: true,
            ..Broken::default()
        };
        fails(&FIXTURE, b, "ran out of its --seconds budget");
    }

    #[test]
    fn a_kernel_line_uses_its_own_declaration() {
        // On 6.1 the fixture test declares no finding: the near miss that
        // 6.12 requires is unexpected there.
        let dir = fixture(&Broken::default());
        let v = check(&FIXTURE, KernelLine::V6_1, dir.path());
        assert!(
            v.failures
                .iter()
                .any(|f| f.contains("unexpected lazyfree_extra_refs")),
            "{:#?}",
            v.failures
        );
    }

    #[test]
    fn result_lines_parse() {
        let kv = parse_result("result: reads=2000 pageout_calls=5 secs=40.0 timed_out=0");
        assert_eq!(kv.get("reads").map(String::as_str), Some("2000"));
        assert_eq!(kv.get("timed_out").map(String::as_str), Some("0"));
        assert_eq!(kv.len(), 4);
    }
}
