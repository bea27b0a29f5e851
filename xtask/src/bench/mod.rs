//! `cargo xtask bench`: what the detector costs and what it sustains.
//!
//! One 6.12 guest boot (QEMU TCG, the only place fentry runs here) measures,
//! so the figures are comparable with each other:
//!   1. overhead: the benign-soak workload's wall time untraced, under
//!      `detector record`, and under bpftrace printing a comparable record
//!      per hit from the same functions (`xtask/bench/comparable.bt`), runs
//!      alternating so emulator drift hits all alike;
//!   2. capacity: `probe-load` drives one probe at fixed rates under the
//!      default `detector record`; events and losses per rate;
//!   3. latency: `record --analyze --latency` during benign-soak, kernel
//!      timestamp to the moment the analyzer has the event;
//!   4. per-probe cost: the kernel's BPF run-time stats (`record --stats`)
//!      during benign-soak, and the whole cost (trampoline, program, ring
//!      buffer) as the per-call delta of a tight loop with and without the
//!      probes attached.
//!
//!   5. soak (only when asked for, `--phases soak`): the long-running
//!      capture under benign-soak in a loop for `--soak-minutes`, sampled
//!      every minute from outside (RSS, open fds, rotation files) and from
//!      its own heartbeat, and judged for leaks (`soak.rs`).
//!
//! The host measures the analyzer replaying a large synthetic trace file
//! through the real binary (events/s, peak RSS, with and without
//! `--max-tracked`, from a v2 and a v1 file). Bytes per event on disk are
//! measured in both trace formats, on that synthetic mix and on the
//! guest's benign-soak capture (converted to v1 by `export`).
//!
//! Results go to `target/bench/results.md`; without `--quick` they also
//! replace the generated parts of `docs/performance.md`: the main block
//! when every default phase ran, the soak's own block when the soak ran. A benchmark
//! reports: nothing here asserts a timing. `--quick` is the CI smoke run
//! (one repetition, small sizes) proving every phase still works.

mod guest;
mod host;
mod report;
mod soak;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::ebpf;
use crate::vm::vm_image::build_binaries;
use guest::boot_guest;
use host::{host_record, host_replay};
use report::{complete, render, splice_doc, DOC, MAIN_SECTION, SOAK_SECTION};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Smoke run: one repetition and small sizes; docs are not rewritten.
    #[arg(long)]
    pub quick: bool,
    /// Workload repetitions per tracer for the overhead figures.
    #[arg(long, default_value_t = 5)]
    pub iterations: u32,
    /// Leave bpftrace out even if it is installed.
    #[arg(long)]
    pub no_bpftrace: bool,
    /// Run only these parts (comma-separated); the main results block of
    /// the docs is rewritten only when all default ones run, the soak's
    /// block whenever the soak runs. The soak is not a default phase.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Phase::ALL)]
    pub phases: Vec<Phase>,
    /// How long the soak phase runs, in minutes.
    #[arg(long, default_value_t = 30)]
    pub soak_minutes: u32,
    /// Investigation: run this guest script instead of the benchmark (in
    /// the same guest, with the workloads and `detector` on PATH), leave
    /// its files on the results disk and report nothing.
    #[arg(long, hide = true)]
    pub guest_script: Option<PathBuf>,
    /// Investigation: extra host binaries (with their libraries) to put in
    /// the guest, e.g. perf or strace.
    #[arg(long, hide = true)]
    pub extra_bin: Vec<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub(crate) enum Phase {
    /// benign-soak untraced / detector / bpftrace.
    Overhead,
    /// Latency and BPF run-time stats under benign-soak.
    Stats,
    /// Tight-loop cost per call with and without the probes.
    Loop,
    /// Events and losses at fixed event rates.
    Capacity,
    /// Host: analyzer replay of a large synthetic trace.
    Replay,
    /// Host: `detector record` in this kernel's own attach mode, natively.
    Host,
    /// The long-running capture for `--soak-minutes`, judged for leaks
    /// (not in the default set).
    Soak,
}

impl Phase {
    pub(crate) const ALL: [Phase; 6] = [
        Phase::Overhead,
        Phase::Stats,
        Phase::Loop,
        Phase::Capacity,
        Phase::Replay,
        Phase::Host,
    ];
}

struct Plan {
    iterations: u32,
    soak_minutes: u32,
    soak: &'static str,
    rates: &'static [u64],
    /// Rings too small for the load, to show how loss grows past the
    /// sustained rate (the default ring is not driven to loss by one probe
    /// from two emulated CPUs).
    loss_rings: &'static [&'static str],
    loss_rates: &'static [u64],
    load_secs: u32,
    loop_secs: u32,
    synth_events: u64,
    bpftrace: bool,
    phases: Vec<Phase>,
}

impl Plan {
    /// Rows the capacity phase writes: the default ring at every rate, the
    /// two top-rate variants, and every small ring at every loss rate.
    fn capacity_rows(&self) -> usize {
        self.rates.len() + 2 + self.loss_rings.len() * self.loss_rates.len()
    }

    fn new(a: &Args) -> Plan {
        let bpftrace = !a.no_bpftrace && Path::new("/usr/bin/bpftrace").exists();
        if a.quick {
            Plan {
                iterations: 1,
                soak_minutes: a.soak_minutes.max(1),
                soak: "--mib 64 --iterations 1 --seconds 60",
                rates: &[20_000, 0],
                loss_rings: &["16K"],
                loss_rates: &[0],
                load_secs: 2,
                loop_secs: 1,
                synth_events: 2_000_000,
                bpftrace,
                phases: a.phases.clone(),
            }
        } else {
            Plan {
                iterations: a.iterations.max(1),
                soak_minutes: a.soak_minutes.max(1),
                soak: "--mib 64 --iterations 3 --seconds 600",
                rates: &[
                    10_000, 25_000, 50_000, 75_000, 100_000, 150_000, 200_000, 300_000, 0,
                ],
                loss_rings: &["16K", "64K", "256K"],
                loss_rates: &[10_000, 25_000, 50_000, 100_000, 0],
                load_secs: 5,
                loop_secs: 3,
                synth_events: 30_000_000,
                bpftrace,
                phases: a.phases.clone(),
            }
        }
    }
}

#[derive(Default)]
struct Guest {
    header: String,
    runs: BTreeMap<String, Vec<f64>>,
    /// The benign-soak capture's size in each trace format.
    sizes: Vec<TraceSize>,
    logs: Vec<String>,
    latency: Vec<String>,
    stats: Vec<String>,
    per_probe: Vec<String>,
    loops: Vec<(String, String, String)>,
    caps: Vec<Cap>,
    /// `detector agent` runs of the overhead phase, in order.
    agent: Vec<AgentRun>,
    soak: soak::Soak,
    done: bool,
}

/// One `detector agent` run on benign-soak, measured from outside.
#[derive(Default)]
struct AgentRun {
    /// CPU (user + system) from attached to the load's end, in USER_HZ
    /// (100 on x86) ticks of `/proc/PID/stat`.
    cpu_ticks: Option<u64>,
    /// Events the agent analyzed, from its final `stats` line.
    events: Option<u64>,
    rss_kb: Option<u64>,
    scrapes: Option<u32>,
    /// Wall time of all the scrapes together (centisecond clock).
    scrape_s: Option<f64>,
    /// `detector_` sample lines of the last scrape, and its size.
    series: Option<u64>,
    metrics_bytes: Option<u64>,
}

impl AgentRun {
    fn cpu_us_per_event(&self) -> Option<f64> {
        let (ticks, events) = (self.cpu_ticks?, self.events?);
        (events > 0).then(|| ticks as f64 * 10_000.0 / events as f64)
    }
}

struct Cap {
    cfg: String,
    target: u64,
    achieved: u64,
    events: u64,
    lost: u64,
}

/// Host side: a large synthetic trace replayed through the real binary.
struct HostReplay {
    cpu: String,
    rows: Vec<(String, String)>,
    /// `detector record` on the host itself: summary, CPU and stats lines.
    record: Vec<String>,
    /// The synthetic trace's size in each trace format.
    sizes: Vec<TraceSize>,
}

/// One capture written in one trace format: bytes on disk per event.
struct TraceSize {
    capture: String,
    format: String,
    bytes: u64,
    events: u64,
}

pub(crate) fn run(a: &Args) -> Result<()> {
    let plan = Plan::new(a);
    let root = ebpf::root();
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let mut bins = build_binaries(&root)?;
    if !plan.bpftrace {
        println!(
            "bpftrace not used (not installed or --no-bpftrace): the comparison column stays empty"
        );
    } else {
        bins.workloads.push(PathBuf::from("/usr/bin/bpftrace"));
    }

    bins.workloads.extend(a.extra_bin.iter().cloned());
    let guest_phases = [
        Phase::Overhead,
        Phase::Stats,
        Phase::Loop,
        Phase::Capacity,
        Phase::Soak,
    ];
    let (guest, took) =
        if a.guest_script.is_some() || plan.phases.iter().any(|p| guest_phases.contains(p)) {
            match boot_guest(a, &plan, &root, &bins)? {
                Some(g) => g,
                None => return Ok(()),
            }
        } else {
            (
                Guest {
                    done: true,
                    ..Guest::default()
                },
                Duration::ZERO,
            )
        };
    let host = if plan.phases.contains(&Phase::Replay) {
        host_replay(&root, &bins.detector, &out_dir, plan.synth_events)?
    } else {
        HostReplay {
            cpu: "not run".into(),
            rows: Vec::new(),
            record: Vec::new(),
            sizes: Vec::new(),
        }
    };
    let mut host = host;
    if plan.phases.contains(&Phase::Host) {
        let probe_load = bins
            .workloads
            .iter()
            .find(|p| p.ends_with("probe-load"))
            .context("probe-load was not built")?;
        host.record = host_record(&bins.detector, probe_load, &out_dir, plan.loop_secs + 2)?;
    }
    let main_ran = plan.phases.iter().any(|p| Phase::ALL.contains(p));
    let soak_ran = plan.phases.contains(&Phase::Soak);
    let md = if main_ran {
        render(&plan, &guest, &host, took)
    } else {
        String::new()
    };
    let soak_md = soak_ran.then(|| soak::render(&plan, &guest.soak));
    let results = out_dir.join("results.md");
    std::fs::write(
        &results,
        format!("{md}{}", soak_md.as_deref().unwrap_or_default()),
    )?;
    println!("{md}{}", soak_md.as_deref().unwrap_or_default());
    println!("results: {}", results.display());
    complete(&plan, &guest, &host)?;
    if !a.quick && Phase::ALL.iter().all(|p| plan.phases.contains(p)) {
        splice_doc(&root.join(DOC), MAIN_SECTION, &md)?;
        println!("updated {DOC} (main results)");
    }
    if let Some(s) = &soak_md {
        if !a.quick {
            splice_doc(&root.join(DOC), SOAK_SECTION, s)?;
            println!("updated {DOC} (soak)");
        }
    }
    if soak_ran {
        soak::judge(&guest.soak)?;
    }
    Ok(())
}
