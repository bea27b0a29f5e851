//! Host-side checks of what a guest sent back: the workload's own data
//! check, the kernel log, and the recorded trace replayed with the detector
//! library (probe coverage, cross-event consistency, lost events, windows
//! and findings).

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use super::vm_kernel::KernelLine;
use super::vm_tests::{BpfLogRun, VmTest};
use super::vm_trace::check_trace;

/// Exit status a workload uses to say "this kernel cannot run me".
pub(crate) const SKIP_STATUS: i32 = 77;
/// Exit status a workload uses when its own data check failed.
pub(crate) const EXIT_CORRUPT: i32 = 1;

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

pub(crate) fn read_trim(dir: &Path, name: &str) -> Option<String> {
    fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

pub(crate) fn tail(text: &str, n: usize) -> String {
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

pub(crate) fn vmstat_delta(dir: &Path, key: &str) -> Option<u64> {
    let before = parse_vmstat(&fs::read_to_string(dir.join("vmstat.before")).ok()?);
    let after = parse_vmstat(&fs::read_to_string(dir.join("vmstat.after")).ok()?);
    Some(after.get(key)?.saturating_sub(*before.get(key)?))
}

/// Non-zero deltas of the per-size mTHP counters the guest saved around
/// the workload (`mthp.before`, `mthp.after`), for the swap and fault
/// counters that show large folios being made and swapped.
pub(crate) fn mthp_deltas(dir: &Path) -> Option<String> {
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

pub(crate) fn uptime_secs(dir: &Path, name: &str) -> Option<f64> {
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
    if let Some(run) = &t.setup.bpf_log {
        check_bpf_log(run, &record_log, &mut v);
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

/// With `--bpf-log`: each expected report of the programs reached
/// `record`'s stderr, its first line is its first occurrence, and the rate
/// limit held (a report is sent at its 1st, 2nd, 4th... occurrence, so a
/// run prints a few dozen lines per report at most, not one per event).
pub(crate) fn check_bpf_log(run: &BpfLogRun, record_log: &str, v: &mut Verdict) {
    let occurrence = |l: &str| -> Option<u64> {
        let (_, n) = l.rsplit_once("(occurrence ")?;
        n.trim_end().strip_suffix(')')?.parse().ok()
    };
    for want in run.reports {
        let counts: Vec<Option<u64>> = record_log
            .lines()
            .filter(|l| l.contains(want))
            .map(occurrence)
            .collect();
        let Some(first) = counts.first() else {
            v.failures.push(format!(
                "--bpf-log {}: the programs' report `{want}` never reached record's stderr",
                run.level
            ));
            continue;
        };
        if *first != Some(1) {
            v.failures.push(format!(
                "--bpf-log: the first `{want}` line is not its first occurrence ({first:?})"
            ));
        }
        if let Some(bad) = counts.iter().find(|n| !n.is_some_and(u64::is_power_of_two)) {
            v.failures.push(format!(
                "--bpf-log: a `{want}` line was sent at occurrence {bad:?}: the rate limit sends \
                 powers of two only"
            ));
        }
        let last = counts.iter().flatten().max().copied().unwrap_or(0);
        v.notes.push(format!(
            "bpf-log: `{want}`: {} lines, up to occurrence {last}",
            counts.len()
        ));
    }
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
pub(crate) fn check_effort(t: &VmTest, result_line: Option<&str>, v: &mut Verdict) {
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

#[cfg(test)]
mod tests {
    use super::super::vm_findings::skipped_from_record_log;
    use super::super::vm_tests::{must_attach, Lost};
    use super::super::vm_trace::is_function_role;
    use super::*;
    use detector::analyzer::{RuleId, Severity};
    use detector::plan::AttachMode;
    use detector_common::ProbeId;

    #[test]
    fn vmstat_parses() {
        let m = parse_vmstat("pswpin 12\npswpout 7\nbogus\n");
        assert_eq!(m.get("pswpin"), Some(&12));
        assert_eq!(m.get("pswpout"), Some(&7));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn bpf_log_reports_must_arrive_first_at_occurrence_one_and_rate_limited() {
        use super::super::vm_tests::BpfLogRun;
        const RUN: BpfLogRun = BpfLogRun {
            level: "debug",
            selftest: true,
            reports: &["swap_read: argument 11", "do_swap_page: unexpected layout"],
        };
        let check = |log: &str| {
            let mut v = Verdict::default();
            check_bpf_log(&RUN, log, &mut v);
            v
        };
        let good = "detector: attached 25 probes\n\
            detector: bpf: warn: swap_read: argument 11 is unreadable (occurrence 1)\n\
            detector: bpf: error: do_swap_page: unexpected layout: x (occurrence 1)\n\
            detector: bpf: warn: swap_read: argument 11 is unreadable (occurrence 2)\n\
            detector: bpf: warn: swap_read: argument 11 is unreadable (occurrence 4)\n";
        let v = check(good);
        assert!(v.passed(), "{:?}", v.failures);
        assert!(v
            .notes
            .iter()
            .any(|n| n.contains("3 lines, up to occurrence 4")));
        // A report that never arrived.
        let v = check(&good.replace("do_swap_page", "do_wp_page"));
        assert!(v.failures[0].contains("never reached"), "{:?}", v.failures);
        // Every occurrence sent: the rate limit is broken.
        let v = check(&format!(
            "{good}detector: bpf: warn: swap_read: argument 11 is unreadable (occurrence 5)\n"
        ));
        assert!(v.failures[0].contains("powers of two"), "{:?}", v.failures);
        // The first line seen is not the first report.
        let v = check(&good.replacen("(occurrence 1)", "(occurrence 8)", 1));
        assert!(v.failures[0].contains("not its first"), "{:?}", v.failures);
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
            "no lazyfree_extra_refs violation (or fast_pin_dropped near miss) names this folio",
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
