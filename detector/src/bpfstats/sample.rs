//! Reading the counters: turning BPF statistics on, sampling every
//! attached program, a measured span ([`CostMeter`]) and the live view's
//! once-a-second feed ([`LiveCosts`]).

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use aya::Ebpf;
use detector_common::ProbeId;

use super::{delta, programs_of, CostUpdate, ProbeCost, ProgCost, ProgKind, RunStats};
use crate::loader::Loaded;
use crate::plan::PlanEntry;

/// How often the live view's costs are refreshed.
pub const LIVE_EVERY: Duration = Duration::from_secs(1);

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

/// The costs of the span a [`CostMeter`] measured: one row per attached
/// probe and the span's length, or why there are none.
pub type SpanCosts = Result<(Vec<ProbeCost>, Duration), StatsError>;

impl CostMeter {
    /// Everything accumulated since [`CostMeter::start`], for
    /// [`crate::present::costs::write_span`].
    pub fn span(&self, loaded: &Loaded) -> SpanCosts {
        let mut rows = Vec::new();
        self.read(loaded, &mut rows)?;
        Ok((rows, self.elapsed()))
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
    use super::super::tests::entry;
    use super::*;
    use crate::plan::AttachMode;

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
    fn unavailable_is_one_sentence() {
        let mut s = String::new();
        let e = StatsError::Enable(enable_refusal(&std::io::Error::from_raw_os_error(
            libc::EINVAL,
        )));
        crate::present::costs::format_unavailable(&e, &mut s);
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
}
