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
//! Sampling is one `BPF_OBJ_GET_INFO_BY_FD` per attached program into rows
//! the caller owns: no allocation once the rows exist and no other I/O, so
//! the live capture can poll it every second.

use std::fmt::Write as _;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use aya::Ebpf;
use detector_common::ProbeId;

use crate::loader::Loaded;
use crate::plan::{self, AttachMode, PlanEntry};

/// How often the live view's costs are refreshed.
pub const LIVE_EVERY: Duration = Duration::from_secs(1);

/// Printed under every cost table: the number is easy to over-read.
pub const BODY_ONLY_NOTE: &str = "note: run time is the BPF program body as timed by the kernel \
     (bpf_stats); the fentry trampoline or kprobe/kretprobe entry and exit around it is not included";

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("the kernel did not enable BPF run-time statistics: {0}")]
    Enable(String),
    #[error("cannot read the run-time statistics of BPF program {program}: {reason}")]
    Read { program: String, reason: String },
}

/// Keeps BPF run-time statistics enabled for as long as it lives.
#[derive(Debug)]
pub struct StatsEnabled {
    _fd: OwnedFd,
}

/// Turns BPF run-time statistics on until the returned guard is dropped.
pub fn enable() -> Result<StatsEnabled, StatsError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map(|fd| StatsEnabled { _fd: fd })
        .map_err(|e| StatsError::Enable(enable_refusal(&e.io_error)))
}

/// One sentence for a refused `BPF_ENABLE_STATS`: the errno alone does not
/// tell a user whether to upgrade the kernel or add a capability.
fn enable_refusal(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EINVAL) => {
            "this kernel has no BPF_ENABLE_STATS (it needs Linux 5.8 or later)".into()
        }
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "permission denied (BPF_ENABLE_STATS needs CAP_SYS_ADMIN)".into()
        }
        _ => e.to_string(),
    }
}

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

    fn plus(self, o: RunStats) -> RunStats {
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

/// Reads the counters of every attached program of a plan.
#[derive(Clone, Debug)]
pub struct Sampler {
    /// Attached probes in plan order, counters zero.
    template: Vec<ProbeCost>,
    /// Program names of each row (entry side, exit side), resolved once so
    /// that sampling only looks them up.
    names: Vec<(Option<String>, Option<String>)>,
}

impl Sampler {
    pub fn new(plan: &[PlanEntry]) -> Sampler {
        let mut template = Vec::with_capacity(plan.len());
        let mut names = Vec::with_capacity(plan.len());
        for e in plan {
            let Some(probe) = ProbeId::from_name(&e.probe) else {
                continue;
            };
            let (entry, exit) = programs_of(e);
            if entry.is_none() && exit.is_none() {
                continue;
            }
            let zero = |kind: ProgKind| ProgCost {
                kind,
                stats: RunStats::default(),
            };
            template.push(ProbeCost {
                probe,
                mode: e.mode,
                entry: entry.map(zero),
                exit: exit.map(zero),
            });
            names.push((
                entry.map(|k| k.program_name(probe)),
                exit.map(|k| k.program_name(probe)),
            ));
        }
        Sampler { template, names }
    }

    /// One row per attached probe, counters zero.
    pub fn rows(&self) -> &[ProbeCost] {
        &self.template
    }

    /// Fills `out` with the current cumulative counters, one row per
    /// attached probe in plan order. Allocates only the first time `out`
    /// is used (or on error).
    pub fn sample(&self, ebpf: &Ebpf, out: &mut Vec<ProbeCost>) -> Result<(), StatsError> {
        out.clear();
        out.extend_from_slice(&self.template);
        for (row, (entry, exit)) in out.iter_mut().zip(&self.names) {
            if let (Some(p), Some(name)) = (row.entry.as_mut(), entry) {
                p.stats = read_program(ebpf, name)?;
            }
            if let (Some(p), Some(name)) = (row.exit.as_mut(), exit) {
                p.stats = read_program(ebpf, name)?;
            }
        }
        Ok(())
    }
}

fn read_program(ebpf: &Ebpf, name: &str) -> Result<RunStats, StatsError> {
    let fail = |reason: String| StatsError::Read {
        program: name.to_string(),
        reason,
    };
    let prog = ebpf
        .program(name)
        .ok_or_else(|| fail("not in the loaded object".into()))?;
    let info = prog
        .info()
        .map_err(|e| fail(crate::loader::error_chain(&e)))?;
    Ok(RunStats {
        run_cnt: info.run_count(),
        // Duration holds the kernel's u64 nanoseconds exactly; the
        // conversion back cannot exceed u64 but saturate anyway.
        run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
    })
}

/// Runs of program `name` the kernel skipped because the same program was
/// already running on that CPU (`bpf_prog_info.recursion_misses`, Linux
/// 5.12+; kprobes count theirs there too on recent kernels). On a
/// preemptible kernel a task preempted inside a probe leaves it "running",
/// so another task hitting the same function on that CPU is not traced:
/// each miss is a lost event. `None` when the kernel does not report it.
/// Counted whether or not run-time statistics are enabled.
pub fn recursion_misses(ebpf: &Ebpf, name: &str) -> Option<u64> {
    use std::os::fd::{AsFd, AsRawFd};
    // `struct bpf_prog_info` up to and including `recursion_misses`, which
    // sits at byte 208 (include/uapi/linux/bpf.h); the kernel fills what
    // it knows of the first `info_len` bytes and reports how many.
    const MISSES_AT: usize = 208;
    let fd = ebpf.program(name)?.fd().ok()?.as_fd().as_raw_fd();
    let mut info = [0u64; MISSES_AT / 8 + 1];
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = [0u64; 16];
    let req = InfoByFd {
        bpf_fd: fd as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` is larger than `InfoByFd` and 8-byte aligned; the
    // write stays inside it.
    unsafe { std::ptr::write(attr.as_mut_ptr().cast::<InfoByFd>(), req) };
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: BPF_OBJ_GET_INFO_BY_FD reads `attr` (the fd, the buffer's
    // length and address) and writes at most `info_len` bytes into `info`,
    // which lives until the call returns, and the written length into
    // `attr`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    // SAFETY: same layout as written above; the kernel updated info_len.
    let got = unsafe { std::ptr::read(attr.as_ptr().cast::<InfoByFd>()) };
    if r != 0 || (got.info_len as usize) < MISSES_AT + 8 {
        return None;
    }
    Some(info[MISSES_AT / 8])
}

/// Statistics switched on for one measured span (a `doctor --stats` wait, a
/// `record` run), with the counters read at its start.
#[derive(Debug)]
pub struct CostMeter {
    sampler: Sampler,
    /// The guard keeping statistics on and the counters at the start; or
    /// why there will be no numbers.
    state: Result<(StatsEnabled, Vec<ProbeCost>), StatsError>,
    started: Instant,
}

impl CostMeter {
    /// Enables statistics and reads the starting counters. Never fails:
    /// a refusal is kept and reported when the costs are asked for.
    pub fn start(loaded: &Loaded) -> CostMeter {
        let sampler = Sampler::new(&loaded.plan);
        let state = enable().and_then(|guard| {
            // The baseline matters when statistics were already on (the
            // sysctl, another tool): counts from before the span are not ours.
            let mut base = Vec::with_capacity(sampler.rows().len());
            sampler.sample(&loaded.ebpf, &mut base)?;
            Ok((guard, base))
        });
        CostMeter {
            sampler,
            state,
            started: Instant::now(),
        }
    }

    /// Why there are no costs, when there are none.
    pub fn unavailable(&self) -> Option<&StatsError> {
        self.state.as_ref().err()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Costs accumulated since [`CostMeter::start`], one row per attached
    /// probe, into `out` (reused).
    pub fn read(&self, loaded: &Loaded, out: &mut Vec<ProbeCost>) -> Result<(), StatsError> {
        let base = match &self.state {
            Ok((_, base)) => base,
            Err(e) => return Err(clone_error(e)),
        };
        let mut now = Vec::with_capacity(base.len());
        self.sampler.sample(&loaded.ebpf, &mut now)?;
        delta(base, &now, out);
        Ok(())
    }
}

fn clone_error(e: &StatsError) -> StatsError {
    match e {
        StatsError::Enable(s) => StatsError::Enable(s.clone()),
        StatsError::Read { program, reason } => StatsError::Read {
            program: program.clone(),
            reason: reason.clone(),
        },
    }
}

/// Prints the per-probe cost table of the span `meter` measured (since
/// [`CostMeter::start`]), or one sentence saying why there is none. What
/// `doctor --stats` prints, and what `record` prints at the end of a run.
pub fn write_probe_costs(
    meter: &CostMeter,
    loaded: &Loaded,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut rows = Vec::new();
    let mut text = String::new();
    match meter.read(loaded, &mut rows) {
        Ok(()) => format_table(&rows, meter.elapsed(), &mut text),
        Err(e) => format_unavailable(&e, &mut text),
    }
    out.write_all(text.as_bytes())
}

/// The one sentence shown instead of the numbers.
pub fn format_unavailable(e: &StatsError, out: &mut String) {
    let _ = writeln!(out, "per-probe run time unavailable: {e}");
}

/// `1.23ms`-style run time.
pub fn fmt_run_time(ns: u64, out: &mut String) {
    let _ = if ns < 1_000 {
        write!(out, "{ns}ns")
    } else if ns < 1_000_000 {
        write!(out, "{:.2}µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        write!(out, "{:.2}ms", ns as f64 / 1e6)
    } else {
        write!(out, "{:.2}s", ns as f64 / 1e9)
    };
}

/// Nanoseconds per event in at most 7 columns (`-` without runs).
pub fn fmt_ns_per_event(v: Option<f64>, out: &mut String) {
    let _ = match v {
        None => write!(out, "-"),
        Some(v) if v < 100.0 => write!(out, "{v:.1}"),
        Some(v) if v < 1e6 => write!(out, "{v:.0}"),
        Some(v) => write!(out, "{:.0}µs", v / 1e3),
    };
}

/// The cost table: one line per probe with the entry and exit programs
/// summed, and under a probe with both, one line per program.
pub fn format_table(rows: &[ProbeCost], span: Duration, out: &mut String) {
    let _ = writeln!(
        out,
        "per-probe BPF run time over {:.1}s (kernel bpf_stats):",
        span.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "{:<22} {:<11} {:<30} {:>10} {:>11} {:>9}",
        "probe", "mode", "program", "hits", "run time", "ns/event"
    );
    let mut cell = String::new();
    let mut line = |out: &mut String, probe: &str, mode: &str, prog: &str, s: RunStats| {
        let _ = write!(out, "{probe:<22} {mode:<11} {prog:<30} {:>10} ", s.run_cnt);
        cell.clear();
        fmt_run_time(s.run_time_ns, &mut cell);
        let _ = write!(out, "{cell:>11} ");
        cell.clear();
        fmt_ns_per_event(s.ns_per_event(), &mut cell);
        let _ = writeln!(out, "{cell:>9}");
    };
    let mut sum = RunStats::default();
    for r in rows {
        let total = r.total();
        sum = sum.plus(total);
        let name = r.probe.name();
        match (r.entry, r.exit) {
            (Some(e), Some(x)) => {
                line(out, name, r.mode.as_str(), "entry+exit", total);
                for p in [e, x] {
                    let prog = p.kind.program_name(r.probe);
                    line(out, "", "", &format!("  {prog}"), p.stats);
                }
            }
            (Some(p), None) | (None, Some(p)) => {
                let prog = p.kind.program_name(r.probe);
                line(out, name, r.mode.as_str(), &prog, p.stats);
            }
            (None, None) => {}
        }
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no probe attached)");
    } else {
        line(out, "all probes", "", "", sum);
    }
    let _ = writeln!(out, "{BODY_ONLY_NOTE}");
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

/// The live capture's cost feed: enables statistics at start and, when
/// polled, reads the counters once per [`LIVE_EVERY`]. No allocation once
/// the first reading is made.
#[derive(Debug)]
pub struct LiveCosts {
    meter: CostMeter,
    /// Raw counters at the previous and the current reading.
    prev: Vec<ProbeCost>,
    cur: Vec<ProbeCost>,
    update: CostUpdate,
    last: Instant,
}

impl LiveCosts {
    pub fn start(loaded: &Loaded) -> LiveCosts {
        let meter = CostMeter::start(loaded);
        let mut update = CostUpdate::default();
        let prev = match &meter.state {
            Ok((_, base)) => base.clone(),
            Err(e) => {
                update.unavailable = Some(e.to_string());
                Vec::new()
            }
        };
        LiveCosts {
            cur: Vec::with_capacity(prev.len()),
            prev,
            meter,
            update,
            last: Instant::now(),
        }
    }

    /// A new reading when one is due; `None` in between. A read error
    /// turns into the "unavailable" sentence and sampling stops.
    pub fn poll(&mut self, loaded: &Loaded) -> Option<&CostUpdate> {
        if self.last.elapsed() < LIVE_EVERY {
            return None;
        }
        self.last = Instant::now();
        let Ok((_, base)) = &self.meter.state else {
            // Said at start; there is nothing new to say.
            return None;
        };
        if self.update.unavailable.is_some() {
            return None;
        }
        match self.meter.sampler.sample(&loaded.ebpf, &mut self.cur) {
            Ok(()) => {
                delta(&self.prev, &self.cur, &mut self.update.recent);
                delta(base, &self.cur, &mut self.update.total);
                std::mem::swap(&mut self.prev, &mut self.cur);
            }
            Err(e) => {
                self.update.total.clear();
                self.update.recent.clear();
                self.update.unavailable = Some(e.to_string());
            }
        }
        Some(&self.update)
    }

    /// What to show before the first reading: empty rows, or the sentence
    /// saying why there will be none.
    pub fn initial(&self) -> &CostUpdate {
        &self.update
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(probe: ProbeId, mode: AttachMode, entry: bool, exit: bool) -> PlanEntry {
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

    fn cost(
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
    fn sampler_rows_skip_unattached_probes() {
        let plan = [
            entry(ProbeId::SwapCacheLookup, AttachMode::Fentry, false, true),
            entry(ProbeId::GupGrab, AttachMode::Unavailable, false, false),
            entry(ProbeId::TpPageFree, AttachMode::Tracepoint, true, false),
        ];
        let s = Sampler::new(&plan);
        let probes: Vec<_> = s.rows().iter().map(|r| r.probe).collect();
        assert_eq!(probes, [ProbeId::SwapCacheLookup, ProbeId::TpPageFree]);
        assert_eq!(
            s.names[0],
            (None, Some("fexit_swap_cache_lookup".to_string()))
        );
        assert_eq!(s.rows()[0].total(), RunStats::default());
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
    fn table_text() {
        let rows = [
            cost(
                ProbeId::DoSwapPage,
                AttachMode::Fentry,
                Some((ProgKind::Fentry, 100, 12_000)),
                Some((ProgKind::Fexit, 100, 8_000)),
            ),
            cost(
                ProbeId::TpPageFree,
                AttachMode::Tracepoint,
                Some((ProgKind::Tracepoint, 3_000_000, 2_450_000_000)),
                None,
            ),
            cost(
                ProbeId::TpLruInsertion,
                AttachMode::Tracepoint,
                Some((ProgKind::Tracepoint, 0, 0)),
                None,
            ),
        ];
        let mut s = String::new();
        format_table(&rows, Duration::from_millis(2000), &mut s);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[0],
            "per-probe BPF run time over 2.0s (kernel bpf_stats):"
        );
        assert!(lines[1].starts_with("probe "), "{s}");
        assert!(lines[1].ends_with("ns/event"), "{s}");
        let words = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            words(lines[2]),
            [
                "do_swap_page",
                "fentry",
                "entry+exit",
                "200",
                "20.00µs",
                "100"
            ]
        );
        assert_eq!(
            words(lines[3]),
            ["fentry_do_swap_page", "100", "12.00µs", "120"]
        );
        assert_eq!(
            words(lines[4]),
            ["fexit_do_swap_page", "100", "8.00µs", "80.0"]
        );
        assert_eq!(
            words(lines[5]),
            [
                "tp_page_free",
                "tracepoint",
                "tp_page_free",
                "3000000",
                "2.45s",
                "817"
            ]
        );
        // No runs: no average, not a division by zero.
        assert_eq!(
            words(lines[6]),
            [
                "tp_lru_insertion",
                "tracepoint",
                "tp_lru_insertion",
                "0",
                "0ns",
                "-"
            ]
        );
        assert_eq!(
            words(lines[7]),
            ["all", "probes", "3000200", "2.45s", "817"]
        );
        assert_eq!(lines[8], BODY_ONLY_NOTE);
        assert_eq!(lines.len(), 9);
        // Columns line up: every number ends where its header does.
        let end = lines[1].len();
        for l in &lines[2..8] {
            assert_eq!(l.chars().count(), end, "{l:?}");
        }
    }

    #[test]
    fn unavailable_is_one_sentence() {
        let mut s = String::new();
        let e = StatsError::Enable(enable_refusal(&std::io::Error::from_raw_os_error(
            libc::EINVAL,
        )));
        format_unavailable(&e, &mut s);
        assert_eq!(
            s,
            "per-probe run time unavailable: the kernel did not enable BPF run-time statistics: \
             this kernel has no BPF_ENABLE_STATS (it needs Linux 5.8 or later)\n"
        );
        assert!(
            enable_refusal(&std::io::Error::from_raw_os_error(libc::EPERM))
                .contains("CAP_SYS_ADMIN")
        );
    }

    #[test]
    fn ns_per_event_fits_the_column() {
        let f = |v| {
            let mut s = String::new();
            fmt_ns_per_event(v, &mut s);
            s
        };
        assert_eq!(f(None), "-");
        assert_eq!(f(Some(42.24)), "42.2");
        assert_eq!(f(Some(152.6)), "153");
        assert_eq!(f(Some(999_999.0)), "999999");
        assert_eq!(f(Some(12_345_678.0)), "12346µs");
        assert!(
            f(Some(1e12)).chars().count() > 7,
            "only absurd values overflow"
        );
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
