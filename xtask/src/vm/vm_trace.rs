//! The recorded trace replayed through the detector's pipeline for one
//! VM test: the plan against the line's must-attach list, the stream's
//! tallies, the segments of a rotated capture, lost events, task
//! lifetimes, probe coverage and the cross-event consistency checks.

use std::path::Path;

use detector::analyzer::{Analyzer, Config, Finding};
use detector::event::StreamItem;
use detector::plan::{AttachMode, Hook, ROLES};
use detector::stream::{AnalyzerSetup, Ctx, FileSource, Pipeline, Sink, Speed};
use detector::trace::{existing_segments, EndState};
use detector_common::ProbeId;

use super::vm_kernel::KernelLine;
use super::vm_tally::Tally;
use super::vm_tests::{must_attach, Lost, VmTest};

use super::vm_check::*;
use super::vm_findings::{check_analysis, check_injections, skipped_from_record_log};

/// Roles observed through a kernel function (kprobe-able), not a tracepoint.
pub(crate) fn is_function_role(p: ProbeId) -> bool {
    ROLES
        .iter()
        .any(|r| r.probe == p && r.hook != Hook::Tracepoint)
}

/// Every probe the kernel line must have is attached; under `--attach
/// kprobe` every function probe went through kprobes and none through
/// fentry.
pub(crate) fn check_plan(
    t: &VmTest,
    line: KernelLine,
    plan: &[detector::plan::PlanEntry],
    v: &mut Verdict,
) {
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
pub(crate) struct Check {
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

pub(crate) fn check_trace(t: &VmTest, line: KernelLine, dir: &Path, path: &Path, v: &mut Verdict) {
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
    if t.setup.agent {
        super::vm_agent::check_agent(dir, &findings, v);
        super::vm_agent::check_agent_snapshots(dir, v);
    }
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
