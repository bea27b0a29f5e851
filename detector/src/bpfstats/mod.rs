//! What each probe costs, measured by the kernel itself: the `run_time_ns`
//! and `run_cnt` of every attached BPF program (`bpf_prog_info`).
//!
//! The kernel only accumulates those counters while BPF statistics are
//! enabled, because timing every run costs two clock reads per run. They
//! are switched on through `BPF_ENABLE_STATS` (Linux 5.8+), which returns a
//! file descriptor: statistics stay on while it is open and go off when the
//! last holder closes it, so the detector never leaves the
//! `kernel.bpf_stats_enabled` sysctl behind, however it exits.
//!
//! The figures cover the program body only. The fentry trampoline or the
//! kprobe/kretprobe machinery around it is paid by the traced function too
//! but is not in `run_time_ns`.
//!
//! Sampling ([`sample`]) is one `BPF_OBJ_GET_INFO_BY_FD` per attached
//! program into rows the caller owns: no allocation once the rows exist and
//! no other I/O, so the live capture can poll it every second. This module
//! holds the rows and their arithmetic; the table is `present::costs`.

mod sample;

use detector_common::ProbeId;

use crate::plan::{self, AttachMode, PlanEntry};

pub use sample::{
    enable, recursion_misses, CostMeter, LiveCosts, Sampler, SpanCosts, StatsEnabled, StatsError,
    LIVE_EVERY,
};

/// The kind of BPF program, which fixes its name in the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgKind {
    Fentry,
    Fexit,
    Kprobe,
    Kretprobe,
    Tracepoint,
}

impl ProgKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProgKind::Fentry => "fentry",
            ProgKind::Fexit => "fexit",
            ProgKind::Kprobe => "kprobe",
            ProgKind::Kretprobe => "kretprobe",
            ProgKind::Tracepoint => "tp_btf",
        }
    }

    /// The program's name in the BPF object (as the loader attaches it).
    pub fn program_name(self, probe: ProbeId) -> String {
        let base = plan::program_base(probe);
        match self {
            // Tracepoint programs are named after the tracepoint alone.
            ProgKind::Tracepoint => base.to_string(),
            k => format!("{}_{base}", k.as_str()),
        }
    }
}

/// The programs the loader attached for one plan entry: (entry side, exit
/// side). Follows `loader::load`: a kprobe-mode role always has its kprobe
/// attached, even an exit-only one, because the kretprobe needs the
/// arguments the kprobe saves.
pub fn programs_of(e: &PlanEntry) -> (Option<ProgKind>, Option<ProgKind>) {
    match e.mode {
        AttachMode::Fentry => (
            e.entry.then_some(ProgKind::Fentry),
            e.exit.then_some(ProgKind::Fexit),
        ),
        AttachMode::Kprobe => (
            Some(ProgKind::Kprobe),
            e.exit.then_some(ProgKind::Kretprobe),
        ),
        AttachMode::Tracepoint => (Some(ProgKind::Tracepoint), None),
        AttachMode::Unavailable => (None, None),
    }
}

/// Cumulative counters of one program (or a sum of programs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

impl RunStats {
    /// Average run time; `None` before the first run.
    pub fn ns_per_event(self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }

    /// What accumulated after `earlier`, a reading of the same program.
    /// Saturating, so a counter that went backwards (the program was
    /// reloaded) reads as nothing rather than as a wrapped huge number.
    pub fn since(self, earlier: RunStats) -> RunStats {
        RunStats {
            run_cnt: self.run_cnt.saturating_sub(earlier.run_cnt),
            run_time_ns: self.run_time_ns.saturating_sub(earlier.run_time_ns),
        }
    }

    /// Both together (saturating).
    pub fn plus(self, o: RunStats) -> RunStats {
        RunStats {
            run_cnt: self.run_cnt.saturating_add(o.run_cnt),
            run_time_ns: self.run_time_ns.saturating_add(o.run_time_ns),
        }
    }
}

/// One program of a probe and its counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgCost {
    pub kind: ProgKind,
    pub stats: RunStats,
}

/// The cost of one probe role: its entry-side program (fentry, kprobe or
/// the tracepoint) and its exit-side program (fexit, kretprobe).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeCost {
    pub probe: ProbeId,
    pub mode: AttachMode,
    pub entry: Option<ProgCost>,
    pub exit: Option<ProgCost>,
}

impl ProbeCost {
    /// Entry and exit programs together: one event is one program run, so
    /// a role hooked at entry and exit counts two runs per call.
    pub fn total(&self) -> RunStats {
        let s = |p: Option<ProgCost>| p.map_or(RunStats::default(), |p| p.stats);
        s(self.entry).plus(s(self.exit))
    }

    pub fn ns_per_event(&self) -> Option<f64> {
        self.total().ns_per_event()
    }

    /// The counters accumulated after `earlier`, a reading of the same
    /// probe; a side `earlier` lacks counts in full.
    pub fn since(&self, earlier: &ProbeCost) -> ProbeCost {
        let side = |now: Option<ProgCost>, then: Option<ProgCost>| {
            now.map(|n| match then {
                Some(t) if t.kind == n.kind => ProgCost {
                    kind: n.kind,
                    stats: n.stats.since(t.stats),
                },
                _ => n,
            })
        };
        ProbeCost {
            probe: self.probe,
            mode: self.mode,
            entry: side(self.entry, earlier.entry),
            exit: side(self.exit, earlier.exit),
        }
    }
}

/// `cur - prev` row by row into `out` (cleared first). Rows are matched by
/// probe, so the two readings need not come from the same sampler.
pub fn delta(prev: &[ProbeCost], cur: &[ProbeCost], out: &mut Vec<ProbeCost>) {
    out.clear();
    for (i, c) in cur.iter().enumerate() {
        // Same sampler, same order: the index is the common case.
        let p = prev
            .get(i)
            .filter(|p| p.probe == c.probe)
            .or_else(|| prev.iter().find(|p| p.probe == c.probe));
        out.push(match p {
            Some(p) => c.since(p),
            None => *c,
        });
    }
}

/// What the live view receives about once a second.
#[derive(Debug, Default, PartialEq)]
pub struct CostUpdate {
    /// Since the live capture enabled statistics.
    pub total: Vec<ProbeCost>,
    /// Over the last interval only (same rows as `total`).
    pub recent: Vec<ProbeCost>,
    /// Why there are no numbers, when there are none.
    pub unavailable: Option<String>,
}

impl Clone for CostUpdate {
    fn clone(&self) -> Self {
        CostUpdate {
            total: self.total.clone(),
            recent: self.recent.clone(),
            unavailable: self.unavailable.clone(),
        }
    }

    // Handed between threads every second: reuse the buffers.
    fn clone_from(&mut self, src: &Self) {
        self.total.clone_from(&src.total);
        self.recent.clone_from(&src.recent);
        self.unavailable.clone_from(&src.unavailable);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plan row of `probe` with these hooks attached.
    pub(crate) fn entry(probe: ProbeId, mode: AttachMode, entry: bool, exit: bool) -> PlanEntry {
        PlanEntry {
            probe: probe.name().into(),
            target: "t".into(),
            mode,
            entry,
            exit,
            note: String::new(),
            filter: String::new(),
        }
    }

    /// A probe's cost from (kind, runs, ns) per attached program.
    pub(crate) fn cost(
        probe: ProbeId,
        mode: AttachMode,
        entry: Option<(ProgKind, u64, u64)>,
        exit: Option<(ProgKind, u64, u64)>,
    ) -> ProbeCost {
        let p = |(kind, run_cnt, run_time_ns)| ProgCost {
            kind,
            stats: RunStats {
                run_cnt,
                run_time_ns,
            },
        };
        ProbeCost {
            probe,
            mode,
            entry: entry.map(p),
            exit: exit.map(p),
        }
    }

    #[test]
    fn programs_follow_the_loader() {
        use AttachMode::*;
        let both = entry(ProbeId::DoSwapPage, Fentry, true, true);
        assert_eq!(
            programs_of(&both),
            (Some(ProgKind::Fentry), Some(ProgKind::Fexit))
        );
        // An exit-only role in kprobe mode still runs its kprobe.
        let exit_kp = entry(ProbeId::SwapCacheLookup, Kprobe, false, true);
        assert_eq!(
            programs_of(&exit_kp),
            (Some(ProgKind::Kprobe), Some(ProgKind::Kretprobe))
        );
        let tp = entry(ProbeId::TpPageFree, Tracepoint, true, false);
        assert_eq!(programs_of(&tp), (Some(ProgKind::Tracepoint), None));
        assert_eq!(
            programs_of(&entry(ProbeId::GupGrab, Unavailable, false, false)),
            (None, None)
        );
        assert_eq!(
            ProgKind::Kretprobe.program_name(ProbeId::SwapCacheLookup),
            "kretprobe_swap_cache_lookup"
        );
        assert_eq!(
            ProgKind::Tracepoint.program_name(ProbeId::TpWriteFolio),
            "tp_vmscan_write_folio"
        );
    }

    #[test]
    fn entry_and_exit_are_summed() {
        let c = cost(
            ProbeId::DoSwapPage,
            AttachMode::Fentry,
            Some((ProgKind::Fentry, 100, 10_000)),
            Some((ProgKind::Fexit, 100, 30_000)),
        );
        assert_eq!(
            c.total(),
            RunStats {
                run_cnt: 200,
                run_time_ns: 40_000
            }
        );
        assert_eq!(c.ns_per_event(), Some(200.0));
        assert_eq!(RunStats::default().ns_per_event(), None);
    }

    #[test]
    fn delta_shows_the_recent_rate() {
        let a = [
            cost(
                ProbeId::SwapCacheLookup,
                AttachMode::Fentry,
                None,
                Some((ProgKind::Fexit, 1000, 1_000_000)),
            ),
            cost(
                ProbeId::TpPageFree,
                AttachMode::Tracepoint,
                Some((ProgKind::Tracepoint, 10, 500)),
                None,
            ),
        ];
        let mut b = a;
        b[0].exit = Some(ProgCost {
            kind: ProgKind::Fexit,
            stats: RunStats {
                run_cnt: 1100,
                run_time_ns: 1_050_000,
            },
        });
        let mut d = Vec::new();
        delta(&a, &b, &mut d);
        // Since load the lookup costs 954.5 ns/event; the last 100 runs
        // cost 500 each, and that is what the live view must show.
        assert_eq!(d[0].ns_per_event(), Some(500.0));
        assert_eq!(d[1].total(), RunStats::default());
        assert_eq!(d[1].ns_per_event(), None);
        // Out of order and a probe the earlier reading lacks.
        let mut d2 = Vec::new();
        delta(&b[1..], &b, &mut d2);
        assert_eq!(d2[0], b[0]);
        assert_eq!(d2[1].total(), RunStats::default());
        // Counters that went backwards read as zero, not as 2^64 - x.
        delta(&b, &a, &mut d2);
        assert_eq!(d2[0].total().run_cnt, 0);
    }

    #[test]
    fn update_clone_from_reuses_buffers() {
        let src = CostUpdate {
            total: vec![cost(ProbeId::GupPut, AttachMode::Kprobe, None, None); 4],
            recent: vec![cost(ProbeId::GupPut, AttachMode::Kprobe, None, None); 4],
            unavailable: None,
        };
        let mut dst = src.clone();
        let ptr = dst.total.as_ptr();
        dst.clone_from(&src);
        assert_eq!(dst, src);
        assert_eq!(dst.total.as_ptr(), ptr);
    }
}
