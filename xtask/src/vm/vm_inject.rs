//! The `6.12-inject` kernel's log contract and what the detector must say
//! about it.
//!
//! The injection patches (`xtask/kernel/patches/`) log one line each time an
//! injection changed the kernel's outcome for an opted-in (`inj-*`) task:
//!
//! ```text
//! detector-inject: seed003 lazyfree-discard folio=%px addr=%lx ref=%d map=%d comm=%s pid=%d
//! detector-inject: seed000 stale-folio folio=%px entry=%lx swapcache=%d folio_swap=%lx pid=%d
//! detector-inject: seed000 missed-lookup entry=%lx pid=%d
//! ```
//!
//! [`parse_injections`] reads them out of a `dmesg` text and
//! [`match_injections`] compares them with the analyzer's findings: every
//! real race must be reported, and every violation on this kernel must be a
//! real race.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use detector::analyzer::{Finding, RuleId, Severity};
use detector::event::fmt_entry;

/// The marker every injection line starts with (after the printk prefix).
pub(crate) const MARKER: &str = "detector-inject: ";

/// One injection line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Injection {
    /// Seed 003: reclaim discarded a clean lazyfree folio whose refcount the
    /// stock kernel would have refused (`ref != 1 + map`).
    LazyfreeDiscard {
        folio: u64,
        addr: u64,
        refcount: i32,
        mapcount: i32,
        comm: String,
        pid: u32,
    },
    /// Seed 000: UFFDIO_MOVE moved a folio that was no longer the swap-cache
    /// folio of the entry the PTE held (the stock guard returns -EAGAIN).
    StaleFolio {
        folio: u64,
        /// `swp_entry_t.val` of the source PTE.
        entry: u64,
        swapcache: bool,
        folio_swap: u64,
        pid: u32,
    },
    /// Seed 000: an empty swap-cache lookup, yet the entry had a cache
    /// folio (SWAP_HAS_CACHE) by the time the PTEs were locked; the move
    /// went ahead. Harmless here: a near miss, not a violation.
    MissedLookup { entry: u64, pid: u32 },
}

impl Injection {
    fn describe(&self) -> String {
        match self {
            Injection::LazyfreeDiscard {
                folio,
                addr,
                refcount,
                mapcount,
                pid,
                ..
            } => format!(
                "seed003 discard of folio {folio:#x} (addr {addr:#x}, ref {refcount}, map {mapcount}, pid {pid})"
            ),
            Injection::StaleFolio {
                folio,
                entry,
                swapcache,
                folio_swap,
                pid,
            } => format!(
                "seed000 stale-folio move of folio {folio:#x} for entry {} (swapcache {}, folio->swap {}, pid {pid})",
                fmt_entry(*entry),
                u8::from(*swapcache),
                fmt_entry(*folio_swap)
            ),
            Injection::MissedLookup { entry, pid } => {
                format!("seed000 missed lookup of entry {} (pid {pid})", fmt_entry(*entry))
            }
        }
    }
}

/// Per-kind counts of injection lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) lazyfree_discard: usize,
    pub(crate) stale_folio: usize,
    pub(crate) missed_lookup: usize,
}

pub(crate) fn counts(inj: &[Injection]) -> Counts {
    let mut c = Counts::default();
    for i in inj {
        match i {
            Injection::LazyfreeDiscard { .. } => c.lazyfree_discard += 1,
            Injection::StaleFolio { .. } => c.stale_folio += 1,
            Injection::MissedLookup { .. } => c.missed_lookup += 1,
        }
    }
    c
}

/// `key=value` fields of one line; `comm=` runs up to ` pid=` because a
/// task name may hold spaces.
fn fields(rest: &str) -> HashMap<&str, &str> {
    let mut out = HashMap::new();
    let (head, comm_tail) = match rest.find(" comm=") {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    for tok in head.split_whitespace() {
        if let Some((k, v)) = tok.split_once('=') {
            out.insert(k, v);
        }
    }
    if let Some(t) = comm_tail {
        let t = t.strip_prefix("comm=").unwrap_or(t);
        match t.rfind(" pid=") {
            Some(at) => {
                out.insert("comm", &t[..at]);
                out.insert("pid", t[at + 5..].trim());
            }
            None => {
                out.insert("comm", t);
            }
        }
    }
    out
}

fn hex(f: &HashMap<&str, &str>, k: &str) -> Option<u64> {
    let v = f.get(k)?;
    u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()
}

fn dec<T: std::str::FromStr>(f: &HashMap<&str, &str>, k: &str) -> Option<T> {
    f.get(k)?.parse().ok()
}

fn parse_line(body: &str) -> Option<Injection> {
    let (kind, rest) = body.split_once(' ').unwrap_or((body, ""));
    let (what, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let f = fields(rest);
    match (kind, what) {
        ("seed003", "lazyfree-discard") => Some(Injection::LazyfreeDiscard {
            folio: hex(&f, "folio")?,
            addr: hex(&f, "addr")?,
            refcount: dec(&f, "ref")?,
            mapcount: dec(&f, "map")?,
            comm: f.get("comm")?.to_string(),
            pid: dec(&f, "pid")?,
        }),
        ("seed000", "stale-folio") => Some(Injection::StaleFolio {
            folio: hex(&f, "folio")?,
            entry: hex(&f, "entry")?,
            swapcache: dec::<u8>(&f, "swapcache")? != 0,
            folio_swap: hex(&f, "folio_swap")?,
            pid: dec(&f, "pid")?,
        }),
        ("seed000", "missed-lookup") => Some(Injection::MissedLookup {
            entry: hex(&f, "entry")?,
            pid: dec(&f, "pid")?,
        }),
        _ => None,
    }
}

/// The injection lines of a `dmesg` text (any printk prefix before the
/// marker is skipped), and the marked lines that break the contract.
pub(crate) fn parse_injections(dmesg: &str) -> (Vec<Injection>, Vec<String>) {
    let mut found = Vec::new();
    let mut malformed = Vec::new();
    for line in dmesg.lines() {
        let Some(at) = line.find(MARKER) else {
            continue;
        };
        match parse_line(line[at + MARKER.len()..].trim_end()) {
            Some(i) => found.push(i),
            None => malformed.push(line.to_string()),
        }
    }
    (found, malformed)
}

fn folio_of(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

pub(crate) fn names_folio(f: &Finding, folio: u64) -> bool {
    f.objects.folios.iter().any(|s| folio_of(s) == Some(folio))
}

fn headline(f: &Finding) -> String {
    format!(
        "{} {} #{} (folios {}, entries {})",
        f.rule,
        f.severity,
        f.id,
        f.objects.folios.join(" "),
        f.objects.entries.join(" ")
    )
}

/// Pairs each line with a distinct finding that `fits` it, in order; returns
/// the unpaired line indexes and which findings were used.
fn assign(
    lines: &[&Injection],
    cands: &[&Finding],
    fits: impl Fn(&Injection, &Finding) -> bool,
) -> (Vec<usize>, Vec<bool>) {
    let mut used = vec![false; cands.len()];
    let mut unpaired = Vec::new();
    for (li, l) in lines.iter().enumerate() {
        match (0..cands.len()).find(|&ci| !used[ci] && fits(l, cands[ci])) {
            Some(ci) => used[ci] = true,
            None => unpaired.push(li),
        }
    }
    (unpaired, used)
}

/// The cause of a lazyfree near miss whose GUP-fast pin was dropped by the
/// fast path's re-check (`analyzer/lazyfree.rs`).
const FAST_PIN_DROPPED: &str = "fast_pin_dropped";

/// Compares the injection log with the analyzer's findings; one sentence
/// per disagreement, empty when they agree:
///
/// - every seed003 line under a pin has exactly one `lazyfree_extra_refs`
///   violation naming its folio (or a `fast_pin_dropped` near miss, when
///   GUP-fast dropped the pin), and every such violation has its line;
/// - every seed000 stale-folio line has a `stale_folio_move` or
///   `swap_entry_aba` violation naming its folio; such a violation naming
///   no folio of a stale-folio line is a failure (one race may yield both
///   findings);
/// - every seed000 missed-lookup line has a `missed_swapcache_lookup` near
///   miss naming its entry, and none is reported as a violation.
pub(crate) fn match_injections(inj: &[Injection], findings: &[Finding]) -> Vec<String> {
    let mut out = Vec::new();
    let violations = |rules: &[RuleId]| -> Vec<&Finding> {
        findings
            .iter()
            .filter(|f| f.severity == Severity::Violation && rules.contains(&f.rule))
            .collect()
    };
    let folio = |i: &Injection| match i {
        Injection::LazyfreeDiscard { folio, .. } | Injection::StaleFolio { folio, .. } => {
            Some(*folio)
        }
        Injection::MissedLookup { .. } => None,
    };

    // Seed 003: one line, one violation, for every discard under a DMA pin
    // (the pin bias in the logged refcount). The injected kernel also drops
    // folios whose only extra reference is transient (the per-CPU LRU
    // batch MADV_FREE queued them on): no data is lost there, and a near
    // miss or nothing is the right answer, so those lines need no
    // violation; a violation naming one still pairs with it.
    let pinned = |i: &Injection| match i {
        Injection::LazyfreeDiscard {
            refcount, mapcount, ..
        } => refcount - mapcount > detector::event::GUP_PIN_COUNTING_BIAS,
        _ => false,
    };
    let optional: Vec<&Injection> = inj
        .iter()
        .filter(|i| matches!(i, Injection::LazyfreeDiscard { .. }) && !pinned(i))
        .collect();
    let lines: Vec<&Injection> = inj.iter().filter(|i| pinned(i)).collect();
    let mut cands = violations(&[RuleId::LazyfreeExtraRefs]);
    let violations_seen = cands.len();
    // A discard under a GUP-fast pin that the fast path's re-check then
    // dropped (the PTE it grabbed through was gone) loses no data: the
    // kernel logs the pin bias it saw at the discard, the detector a
    // `fast_pin_dropped` near miss on the folio. It pairs with the line as
    // a violation would, and is never required.
    cands.extend(findings.iter().filter(|f| {
        f.rule == RuleId::LazyfreeExtraRefs
            && f.severity == Severity::NearMiss
            && f.cause == FAST_PIN_DROPPED
    }));
    let (unpaired, used) = assign(&lines, &cands, |l, f| {
        folio(l).is_some_and(|x| names_folio(f, x))
    });
    for li in unpaired {
        out.push(format!(
            "{}: no lazyfree_extra_refs violation (or fast_pin_dropped near miss) names this folio",
            lines[li].describe()
        ));
    }
    for (f, _) in cands
        .iter()
        .zip(&used)
        .take(violations_seen)
        .filter(|(_, u)| !**u)
    {
        let logged = optional
            .iter()
            .any(|l| folio(l).is_some_and(|x| names_folio(f, x)));
        if !logged {
            out.push(format!("{} matches no seed003 injection line", headline(f)));
        }
    }

    // Seed 000, stale folio.
    let lines: Vec<&Injection> = inj
        .iter()
        .filter(|i| matches!(i, Injection::StaleFolio { .. }))
        .collect();
    let cands = violations(&[RuleId::StaleFolioMove, RuleId::SwapEntryAba]);
    let (unpaired, used) = assign(&lines, &cands, |l, f| {
        folio(l).is_some_and(|x| names_folio(f, x))
    });
    for li in unpaired {
        out.push(format!(
            "{}: no stale_folio_move or swap_entry_aba violation names this folio",
            lines[li].describe()
        ));
    }
    for (f, _) in cands.iter().zip(&used).filter(|(_, u)| !**u) {
        let explained = lines
            .iter()
            .any(|l| folio(l).is_some_and(|x| names_folio(f, x)));
        if !explained {
            out.push(format!(
                "{} matches no seed000 stale-folio injection line",
                headline(f)
            ));
        }
    }

    // Seed 000, missed lookup: a near miss, never a violation.
    let lines: Vec<&Injection> = inj
        .iter()
        .filter(|i| matches!(i, Injection::MissedLookup { .. }))
        .collect();
    let names_entry = |l: &Injection, f: &Finding| match l {
        Injection::MissedLookup { entry, .. } => {
            let e = fmt_entry(*entry);
            f.rule == RuleId::MissedSwapcacheLookup && f.objects.entries.contains(&e)
        }
        _ => false,
    };
    let near: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.rule == RuleId::MissedSwapcacheLookup && f.severity == Severity::NearMiss)
        .collect();
    let (unpaired, _) = assign(&lines, &near, names_entry);
    for li in unpaired {
        out.push(format!(
            "{}: no missed_swapcache_lookup near miss names this entry",
            lines[li].describe()
        ));
    }
    for f in violations(&[RuleId::MissedSwapcacheLookup]) {
        if lines.iter().any(|l| names_entry(l, f)) {
            out.push(format!(
                "{} is a violation, but the injected missed lookup it reports is harmless (a near miss)",
                headline(f)
            ));
        }
    }
    out
}

/// A workload that stages the seed-000 race itself (inj-uffd-aba) prints
/// one `stale: entry=T:0xOFF ...` line per stale move it observed (the
/// other page whose folio was moved can no longer be reclaimed), and
/// `stale_moves_seen=N` in its result line. One sentence per disagreement,
/// empty when:
///
/// - the log holds exactly `seen` such lines;
/// - each observed move is one kernel `seed000 stale-folio` line on that
///   entry, and each such line one observed move (one for one);
/// - each observed move has its own `swap_entry_aba` or `stale_folio_move`
///   violation naming that entry.
pub(crate) fn match_observed_stale_moves(
    workload_log: &str,
    seen: u64,
    inj: &[Injection],
    findings: &[Finding],
) -> Vec<String> {
    let mut out = Vec::new();
    let mut observed = Vec::new();
    for l in workload_log
        .lines()
        .filter_map(|l| l.strip_prefix("stale: "))
    {
        match l
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("entry="))
        {
            Some(e) => observed.push(e.to_string()),
            None => out.push(format!("a stale-move line without entry=: {l}")),
        }
    }
    if observed.len() as u64 != seen {
        out.push(format!(
            "the workload counts {seen} observed stale move(s) but printed {} `stale:` line(s)",
            observed.len()
        ));
    }
    let mut logged: Vec<Option<String>> = inj
        .iter()
        .filter_map(|i| match i {
            Injection::StaleFolio { entry, .. } => Some(Some(fmt_entry(*entry))),
            _ => None,
        })
        .collect();
    let cands: Vec<&Finding> = findings
        .iter()
        .filter(|f| {
            f.severity == Severity::Violation
                && matches!(f.rule, RuleId::SwapEntryAba | RuleId::StaleFolioMove)
        })
        .collect();
    let mut used = vec![false; cands.len()];
    for e in &observed {
        match logged.iter_mut().find(|l| l.as_deref() == Some(e.as_str())) {
            Some(l) => *l = None,
            None => out.push(format!(
                "the workload observed a stale move on entry {e}, but the kernel logged no stale-folio move of it"
            )),
        }
        match (0..cands.len()).find(|&i| !used[i] && cands[i].objects.entries.contains(e)) {
            Some(i) => used[i] = true,
            None => out.push(format!(
                "the workload observed a stale move on entry {e}, but no swap_entry_aba or stale_folio_move violation names it"
            )),
        }
    }
    for e in logged.into_iter().flatten() {
        out.push(format!(
            "the kernel logged a stale-folio move on entry {e} that the workload did not observe"
        ));
    }
    out
}

/// `cargo xtask inject-match`: a guest run's dmesg against its trace.
#[derive(clap::Args)]
pub(crate) struct MatchArgs {
    /// Results directory of a run (holds dmesg.txt and trace.dtr), e.g.
    /// target/vm/6.12-inject/run/out.
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// The guest's dmesg (default: DIR/dmesg.txt).
    #[arg(long)]
    pub(crate) dmesg: Option<PathBuf>,
    /// The recorded trace (default: DIR/trace.dtr).
    #[arg(long)]
    pub(crate) trace: Option<PathBuf>,
}

/// The findings `detector replay` would print for a trace: the same
/// library call, with the configuration the trace records.
pub(crate) fn analyze(trace: &Path) -> Result<Vec<Finding>> {
    let (report, _) = detector::sinks::analyze_file_with_stats(
        trace,
        detector::stream::ConfigChoice::FromTrace(detector::stream::Overrides::default()),
        true,
    )
    .with_context(|| format!("analyzing the trace {}", trace.display()))?;
    Ok(report.findings.unwrap_or_default())
}

pub(crate) fn run_match(a: &MatchArgs) -> Result<()> {
    let pick = |given: &Option<PathBuf>, name: &str| -> Result<PathBuf> {
        match (given, &a.dir) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(d)) => Ok(d.join(name)),
            (None, None) => bail!("give --dir, or both --dmesg and --trace"),
        }
    };
    let dmesg_path = pick(&a.dmesg, "dmesg.txt")?;
    let trace = pick(&a.trace, "trace.dtr")?;
    let dmesg = std::fs::read_to_string(&dmesg_path)
        .with_context(|| format!("reading {}", dmesg_path.display()))?;
    let (inj, malformed) = parse_injections(&dmesg);
    let c = counts(&inj);
    println!(
        "injection lines: {} seed003 lazyfree-discard, {} seed000 stale-folio, {} seed000 missed-lookup",
        c.lazyfree_discard, c.stale_folio, c.missed_lookup
    );
    let findings = analyze(&trace)?;
    let mut by_rule: BTreeMap<(RuleId, Severity), usize> = BTreeMap::new();
    for f in &findings {
        *by_rule.entry((f.rule, f.severity)).or_default() += 1;
    }
    println!("findings:");
    for ((rule, sev), n) in &by_rule {
        println!("  {rule:<26} {sev:<10} {n}");
    }
    let mut failures: Vec<String> = malformed
        .iter()
        .map(|l| format!("an injection line breaks the log contract: {l}"))
        .collect();
    failures.extend(match_injections(&inj, &findings));
    if failures.is_empty() {
        println!("every injection is reported and every violation is an injection");
        return Ok(());
    }
    println!("{} disagreement(s):", failures.len());
    for f in &failures {
        println!("  {f}");
    }
    bail!(
        "the detector's findings and the injection log disagree in {} place(s)",
        failures.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use detector::analyzer::{Confidence, Objects};

    const DMESG: &str = "\
[    1.000000] Linux version 6.12.117-detector-inject
[   12.345678] detector-inject: seed003 lazyfree-discard folio=ff1e3f0000123400 addr=7f0012345000 ref=1027 map=1 comm=inj-madvfree-di pid=301
[   13.000001] detector-inject: seed000 stale-folio folio=ff1e3f0000abc000 entry=1a2 swapcache=0 folio_swap=0 pid=402
[   13.000002] detector-inject: seed000 missed-lookup entry=40000000000001f pid=402
[   14.000000] detector-inject: seed003 lazyfree-discard folio=ff1e3f0000123400 addr=7f0012346000 ref=1026 map=0 comm=inj- a b pid=305
[   15.000000] detector-inject: seed000 stale-folio folio=zz entry=1 swapcache=0 folio_swap=0 pid=1
";

    fn finding(
        id: u64,
        rule: RuleId,
        severity: Severity,
        folios: &[&str],
        entries: &[&str],
    ) -> Finding {
        Finding {
            id,
            rule,
            severity,
            objects: Objects {
                entries: entries
                    .iter()
                    .map(std::string::ToString::to_string)
                    .collect(),
                folios: folios
                    .iter()
                    .map(std::string::ToString::to_string)
                    .collect(),
                tids: vec![],
            },
            explanation: String::new(),
            cause: String::new(),
            evidence: vec![],
            confidence: Confidence::full(),
        }
    }

    #[test]
    fn lines_parse_into_records() {
        let (inj, bad) = parse_injections(DMESG);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("folio=zz"));
        assert_eq!(inj.len(), 4);
        assert_eq!(
            inj[0],
            Injection::LazyfreeDiscard {
                folio: 0xff1e_3f00_0012_3400,
                addr: 0x7f00_1234_5000,
                refcount: 1027,
                mapcount: 1,
                comm: "inj-madvfree-di".into(),
                pid: 301,
            }
        );
        assert_eq!(
            inj[1],
            Injection::StaleFolio {
                folio: 0xff1e_3f00_00ab_c000,
                entry: 0x1a2,
                swapcache: false,
                folio_swap: 0,
                pid: 402,
            }
        );
        assert_eq!(
            inj[2],
            Injection::MissedLookup {
                entry: 0x0400_0000_0000_001f,
                pid: 402
            }
        );
        // A comm with spaces is kept whole.
        assert!(
            matches!(&inj[3], Injection::LazyfreeDiscard { comm, pid: 305, .. } if comm == "inj- a b")
        );
        assert_eq!(
            counts(&inj),
            Counts {
                lazyfree_discard: 2,
                stale_folio: 1,
                missed_lookup: 1
            }
        );
    }

    #[test]
    fn every_line_matched_and_every_violation_explained_is_clean() {
        let (inj, _) = parse_injections(DMESG);
        let f = vec![
            finding(
                1,
                RuleId::LazyfreeExtraRefs,
                Severity::Violation,
                &["0xff1e3f0000123400"],
                &[],
            ),
            finding(
                2,
                RuleId::LazyfreeExtraRefs,
                Severity::Violation,
                &["0xff1e3f0000123400"],
                &[],
            ),
            // A near miss on another folio (the stock guard held) is fine.
            finding(
                3,
                RuleId::LazyfreeExtraRefs,
                Severity::NearMiss,
                &["0xff1e3f0000999000"],
                &[],
            ),
            // One stale move may be reported under both rules.
            finding(
                4,
                RuleId::StaleFolioMove,
                Severity::Violation,
                &["0xff1e3f0000abc000"],
                &["0:0x1a2"],
            ),
            finding(
                5,
                RuleId::SwapEntryAba,
                Severity::Violation,
                &["0xff1e3f0000abc000"],
                &["0:0x1a2"],
            ),
            finding(
                6,
                RuleId::MissedSwapcacheLookup,
                Severity::NearMiss,
                &[],
                &["1:0x1f"],
            ),
        ];
        assert_eq!(match_injections(&inj, &f), Vec::<String>::new());
    }

    #[test]
    fn a_discard_without_a_pin_needs_no_violation() {
        // The per-CPU LRU batch's reference: the injected kernel drops the
        // folio, no data is lost.
        let dmesg = "[ 2.0] detector-inject: seed003 lazyfree-discard folio=ff1e3f0000999000 addr=7f0012345000 ref=3 map=1 comm=inj-madvfree-di pid=301\n";
        let (inj, _) = parse_injections(dmesg);
        assert_eq!(inj.len(), 1);
        assert_eq!(match_injections(&inj, &[]), Vec::<String>::new());
        // A violation naming it still pairs with it.
        let f = [finding(
            1,
            RuleId::LazyfreeExtraRefs,
            Severity::Violation,
            &["0xff1e3f0000999000"],
            &[],
        )];
        assert_eq!(match_injections(&inj, &f), Vec::<String>::new());
    }

    #[test]
    fn a_pinned_discard_whose_fast_pin_was_dropped_pairs_with_that_near_miss() {
        let dmesg = "[ 2.0] detector-inject: seed003 lazyfree-discard folio=ff1e3f0000999000 addr=7f0012345000 ref=1026 map=1 comm=inj-madvfree-di pid=301\n";
        let (inj, _) = parse_injections(dmesg);
        let mut dropped = finding(
            1,
            RuleId::LazyfreeExtraRefs,
            Severity::NearMiss,
            &["0xff1e3f0000999000"],
            &[],
        );
        dropped.cause = FAST_PIN_DROPPED.into();
        assert_eq!(
            match_injections(&inj, std::slice::from_ref(&dropped)),
            Vec::<String>::new()
        );
        // Any other near miss does not stand for the violation.
        let mut other = dropped.clone();
        other.cause = "discarded_extra_refs".into();
        let out = match_injections(&inj, &[other]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("no lazyfree_extra_refs violation"));
        // An unpaired fast_pin_dropped near miss is not an accusation.
        assert_eq!(match_injections(&[], &[dropped]), Vec::<String>::new());
    }

    #[test]
    fn missing_and_unexplained_findings_are_named() {
        let (inj, _) = parse_injections(DMESG);
        let f = vec![
            // Only one of the two discards of the folio is reported.
            finding(
                1,
                RuleId::LazyfreeExtraRefs,
                Severity::Violation,
                &["0xff1e3f0000123400"],
                &[],
            ),
            // A lazyfree violation on a folio no line names.
            finding(
                2,
                RuleId::LazyfreeExtraRefs,
                Severity::Violation,
                &["0xff1e3f0000777000"],
                &[],
            ),
            // The stale move is reported as a near miss only: not enough.
            finding(
                3,
                RuleId::StaleFolioMove,
                Severity::NearMiss,
                &["0xff1e3f0000abc000"],
                &[],
            ),
            // An ABA violation nobody injected.
            finding(
                4,
                RuleId::SwapEntryAba,
                Severity::Violation,
                &["0xff1e3f0000555000"],
                &[],
            ),
            // The missed lookup reported as a violation.
            finding(
                5,
                RuleId::MissedSwapcacheLookup,
                Severity::Violation,
                &[],
                &["1:0x1f"],
            ),
        ];
        let m = match_injections(&inj, &f);
        assert_eq!(m.len(), 6, "{m:#?}");
        assert!(
            m[0].contains("seed003 discard of folio 0xff1e3f0000123400 (addr 0x7f0012346000"),
            "{}",
            m[0]
        );
        assert!(
            m[1].contains("lazyfree_extra_refs violation #2"),
            "{}",
            m[1]
        );
        assert!(
            m[2].contains("seed000 stale-folio move of folio 0xff1e3f0000abc000"),
            "{}",
            m[2]
        );
        assert!(m[3].contains("swap_entry_aba violation #4"), "{}", m[3]);
        assert!(
            m[4].contains("seed000 missed lookup of entry 1:0x1f"),
            "{}",
            m[4]
        );
        assert!(
            m[5].contains("missed_swapcache_lookup violation #5"),
            "{}",
            m[5]
        );
    }

    #[test]
    fn observed_stale_moves_match_the_log_and_the_violations_one_for_one() {
        let dmesg = "\
[ 5.0] detector-inject: seed000 stale-folio folio=ff1e3f0000abc000 entry=1a2 swapcache=0 folio_swap=0 pid=402
[ 6.0] detector-inject: seed000 stale-folio folio=ff1e3f0000abd000 entry=1a3 swapcache=0 folio_swap=0 pid=402
";
        let (inj, _) = parse_injections(dmesg);
        let wl = "round 0: ...\nstale: entry=0:0x1a2 q=0x7f00 dst=0x7f10 round=0\n\
                  stale: entry=0:0x1a3 q=0x7f20 dst=0x7f30 round=1\nresult: stale_moves_seen=2\n";
        let v = |id, rule, folio: &str, entry: &str| {
            finding(id, rule, Severity::Violation, &[folio], &[entry])
        };
        let both = vec![
            v(1, RuleId::SwapEntryAba, "0xff1e3f0000abc000", "0:0x1a2"),
            v(2, RuleId::StaleFolioMove, "0xff1e3f0000abc000", "0:0x1a2"),
            v(3, RuleId::SwapEntryAba, "0xff1e3f0000abd000", "0:0x1a3"),
        ];
        assert!(match_observed_stale_moves(wl, 2, &inj, &both).is_empty());

        // One observed move without its violation.
        let m = match_observed_stale_moves(wl, 2, &inj, &both[..2]);
        assert_eq!(m.len(), 1, "{m:#?}");
        assert!(m[0].contains("0:0x1a3") && m[0].contains("no swap_entry_aba"));

        // A kernel line the workload did not observe, and a miscount.
        let one = "stale: entry=0:0x1a2 q=0x7f00 dst=0x7f10 round=0\n";
        let m = match_observed_stale_moves(one, 2, &inj, &both);
        assert_eq!(m.len(), 2, "{m:#?}");
        assert!(m[0].contains("printed 1"));
        assert!(m[1].contains("0:0x1a3") && m[1].contains("did not observe"));

        // An observed move the kernel never logged.
        let m = match_observed_stale_moves(wl, 2, &inj[..1], &both);
        assert_eq!(m.len(), 1, "{m:#?}");
        assert!(m[0].contains("logged no stale-folio move"));

        // A near miss does not count.
        let near = vec![finding(
            1,
            RuleId::SwapEntryAba,
            Severity::NearMiss,
            &["0xff1e3f0000abc000"],
            &["0:0x1a2"],
        )];
        assert_eq!(
            match_observed_stale_moves(one, 1, &inj[..1], &near).len(),
            1
        );
    }

    #[test]
    fn a_clean_log_and_no_violations_agree() {
        assert!(parse_injections("[ 1.0] nothing here\n").0.is_empty());
        let near = finding(
            1,
            RuleId::LazyfreeExtraRefs,
            Severity::NearMiss,
            &["0x1"],
            &[],
        );
        assert!(match_injections(&[], &[near]).is_empty());
        let v = finding(
            2,
            RuleId::StaleFolioMove,
            Severity::Violation,
            &["0x1"],
            &[],
        );
        assert_eq!(match_injections(&[], &[v]).len(), 1);
    }
}
