//! Findings against a test's declaration: windows, required and allowed
//! findings, violations spanning counted losses, and on the injected
//! kernel the races it logged and the pages the workload saw corrupted.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use detector::analyzer::{Analyzer, Finding, RuleId, Severity, WindowKind};

use super::vm_kernel::KernelLine;
use super::vm_tests::VmTest;

use super::vm_check::*;

/// The fault-injected kernel's own account of the races it let happen
/// (`detector-inject:` lines in its log) against the findings, one for one
/// (`vm_inject::match_injections`), and for seed 003 the workload's own
/// zeroed pages against the violations on their address and task.
pub(crate) fn check_injections(
    t: &VmTest,
    want: &super::vm_tests::Injected,
    dir: &Path,
    findings: &[Finding],
    fast_dropped_last: &HashMap<u64, bool>,
    v: &mut Verdict,
) {
    use super::vm_inject::{counts, match_injections, names_folio, parse_injections, Injection};
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
                || findings.iter().any(|f| names_folio(f, *folio))
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
pub(crate) fn check_zeroed_pages(t: &VmTest, log: &str, findings: &[Finding], v: &mut Verdict) {
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
pub(crate) const LOSS_REPORT_LAG_NS: u64 = 1_000_000_000;

/// The lost events `record` reported as calls the kernel did not trace.
pub(crate) fn skipped_from_record_log(dir: &Path) -> u64 {
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

pub(crate) fn format_finding(f: &Finding) -> String {
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
pub(crate) fn check_analysis(
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
