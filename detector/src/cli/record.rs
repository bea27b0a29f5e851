//! `detector record`: capture kernel events into a trace file.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use detector_common::ProbeId;

use crate::bpfstats::CostMeter;
use crate::cli::args::{parse_duration, parse_size, AnalyzerArgs, CaptureArgs};
use crate::cli::signals;
use crate::loader::privileges::{self, Need};
use crate::plan::AttachMode;
use crate::present::costs::write_span;
use crate::present::describe_setup;
use crate::sinks::{FindingPrinter, Latency, Style};
use crate::stream::{Base, End, KernelSource, OnRecordError, Pipeline, Source, TraceRecorder};
use crate::trace::{Redactor, RotationPolicy, TraceFormat};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trace file to write (replaced if it exists).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Stop after this long (e.g. 30s, 5m, 1h); default: until Ctrl-C / SIGTERM.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// Start a new file segment when the current one exceeds this size (e.g. 256M).
    #[arg(long, value_parser = parse_size)]
    pub rotate_size: Option<u64>,
    /// How many segments to keep on disk when rotating (oldest deleted).
    #[arg(long, default_value_t = 4, requires = "rotate_size")]
    pub rotate_keep: u32,
    /// Run the analyzer while recording: findings are printed as they
    /// happen and summarized at the end (the same findings `replay` gives).
    #[arg(long)]
    pub analyze: bool,
    /// Analyzer settings (with --analyze; written into the trace header
    /// either way, so `replay` analyzes the file with the same ones).
    #[command(flatten)]
    pub analyzer: AnalyzerArgs,
    /// With --analyze: measure, per event, the time from the kernel's
    /// timestamp to the moment the analyzer has processed it (when any
    /// finding it completes is available), and print percentiles at the end.
    #[arg(long, requires = "analyze")]
    pub latency: bool,
    /// Turn on the kernel's BPF run-time statistics for the run and print
    /// each probe's cost per event at the end (the kernel then times every
    /// program run, which itself costs a little).
    #[arg(long)]
    pub stats: bool,
    /// Write kernel addresses (folios and other kernel pointers, frame
    /// numbers of present PTEs) as keyed pseudonyms, stable within this
    /// capture and unrelated to any other; the header loses the kernel's
    /// layout addresses. What --analyze prints is not redacted.
    #[arg(long)]
    pub redact: bool,
    /// Trace file format: v2 (compressed blocks, about 5 bytes per event)
    /// or v1 (164 bytes per event, for tools that only read v1).
    #[arg(long, value_name = "v1|v2", default_value_t = TraceFormat::V2)]
    pub trace_format: TraceFormat,
}

/// This process's CPU time so far (user, system) in seconds: what the
/// reader, the file and the analyzer cost, apart from the probes.
fn cpu_times() -> Option<(f64, f64)> {
    crate::usage::self_usage().map(|u| (u.user.as_secs_f64(), u.sys.as_secs_f64()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = args.capture.load_options()?;
    crate::cli::logging::init(log::LevelFilter::Off, opts.bpf_log.filter());
    if args.rotate_keep == 0 {
        bail!("--rotate-keep must be at least 1");
    }
    let mut source = KernelSource::start(&opts)?;
    let meter = args.stats.then(|| CostMeter::start(source.loaded()));
    let plan = source.header().plan.clone();
    let count = |m: AttachMode| plan.iter().filter(|p| p.mode == m).count();
    eprintln!(
        "detector: attached {} probes ({} fentry, {} kprobe, {} tracepoint), {} unavailable; ring buffer {} KiB",
        plan.len() - count(AttachMode::Unavailable),
        count(AttachMode::Fentry),
        count(AttachMode::Kprobe),
        count(AttachMode::Tracepoint),
        count(AttachMode::Unavailable),
        opts.ring_bytes / 1024
    );
    if let Some(s) = source.info().degraded {
        eprintln!("detector: {s}");
    }

    // Recorded with or without --analyze: a later replay then analyzes
    // with what this run did (or would have).
    let setup = args.analyzer.overrides().resolve(Base::Defaults);
    let mut header = source.header().clone();
    header.analyzer_config = Some(setup.config.clone());
    if args.analyze {
        eprintln!(
            "detector: analyzer config {}",
            describe_setup(&setup.origin, &setup.config)
        );
    }
    let rotation = args.rotate_size.map(|max_bytes| RotationPolicy {
        max_bytes,
        keep: args.rotate_keep,
    });
    let redact = args.redact.then(Redactor::new).transpose()?;
    let recorder =
        TraceRecorder::create_format(&args.output, &header, rotation, redact, args.trace_format)
            .with_context(|| format!("cannot create {}", args.output.display()))?;

    // Attached, statistics on, the file open: from here the capture reads
    // the ring and the maps, and a rotating one creates files next to the
    // first.
    let dir = match args.output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut can_rotate = || privileges::can_create_in(&dir);
    let rotating = rotation.map(|_| Need {
        candidates: privileges::DIRECTORY_CANDIDATES,
        check: &mut can_rotate,
    });
    let kept = source.drop_privileges(rotating)?;
    eprintln!("detector: capabilities kept after attaching: {kept}");

    signals::catch_stop_signals();
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    // Loading and verifying the programs costs seconds of system time on a
    // slow machine; the per-event figure is the reader's, from here on.
    let cpu_at_attach = cpu_times();
    let mut pipeline = Pipeline::new(&mut source)
        .record(Box::new(recorder), OnRecordError::Fail)
        .wait(args.capture.drain_every)
        .stop_when(|| {
            signals::caught().or_else(|| {
                deadline
                    .is_some_and(|d| Instant::now() >= d)
                    .then(|| String::from("duration elapsed"))
            })
        });
    if args.analyze {
        pipeline = pipeline.analyze(&setup);
    }
    // Findings go to stderr as they happen; without --analyze nothing
    // reads the events and they go to the file undecoded.
    let mut sink = match (args.analyze, args.latency) {
        (false, _) => None,
        (true, latency) => {
            let p = FindingPrinter::new(std::io::stderr(), std::io::stderr(), Style::Block);
            Some(if latency {
                Latency::on(p)?
            } else {
                Latency::off(p)
            })
        }
    };
    let outcome = pipeline.run(&mut sink).context("the capture failed")?;
    let stop_reason = outcome.end.reason().to_owned();
    if let End::Failed(e) = outcome.end {
        return Err(e).context("the capture failed");
    }
    let summary = match outcome.recording {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            return Err(e).with_context(|| format!("finishing {}", args.output.display()))
        }
        None => bail!("the recording was not finished"),
    };

    let lost: BTreeMap<&str, u64> = ProbeId::ALL
        .iter()
        .map(|p| (p.name(), source.lost_totals()[*p as usize]))
        .filter(|(_, v)| *v > 0)
        .collect();
    let skipped_total: u64 = source.skipped_totals().iter().sum();
    let mut costs = Vec::new();
    if let Some(m) = &meter {
        let _ = write_span(&mut costs, &m.span(source.loaded()));
    }
    let malformed = source.malformed();
    let ring_bytes = source.ring_bytes();
    drop(meter);
    drop(source);

    let events = summary.totals.events;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let lost_total: u64 = lost.values().sum();
    eprintln!(
        "detector: {stop_reason}: {events} events in {secs:.1}s ({:.0} events/s), lost {lost_total}, {} bytes in {} file(s): {}",
        events as f64 / secs,
        summary.bytes,
        summary.files.len(),
        args.output.display()
    );
    if events > 0 {
        eprintln!(
            "detector: ring records averaged {:.1} bytes plus the ring's 8-byte header (a whole event is {})",
            ring_bytes as f64 / events as f64,
            detector_common::EVENT_SIZE
        );
    }
    if let (Some((u0, s0)), Some((u1, s1))) = (cpu_at_attach, cpu_times()) {
        let (user, sys) = (u1 - u0, s1 - s0);
        eprintln!(
            "detector: CPU since attach {:.2}s user + {:.2}s system ({:.2} µs per event)",
            user,
            sys,
            (user + sys) * 1e6 / events.max(1) as f64
        );
    }
    for p in ProbeId::ALL {
        let n = summary
            .totals
            .events_per_probe
            .get(p.name())
            .copied()
            .unwrap_or(0);
        let l = lost.get(p.name()).copied().unwrap_or(0);
        if n > 0 || l > 0 {
            eprintln!("  {:<22} {:>10} events {:>8} lost", p.name(), n, l);
        }
    }
    if malformed > 0 {
        eprintln!("detector: {malformed} ring-buffer records could not be read and were skipped");
    }
    if lost_total > 0 {
        eprintln!(
            "detector: events were lost (the ring buffer filled, or in kprobe mode the kernel skipped a probe); a larger --ring-size or a --pid/--cgroup filter reduces ring-buffer loss"
        );
    }
    if skipped_total > 0 {
        eprintln!(
            "detector: {skipped_total} of the lost events are calls the kernel did not trace because the probe was already running on that CPU (a preempted probe on a preemptible kernel, or kprobe recursion), not ring-buffer overflow"
        );
    }
    for line in sink.iter().flat_map(Latency::lines) {
        eprintln!("{line}");
    }
    if !costs.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&costs));
    }
    if args.analyze {
        let _ = writeln!(
            std::io::stderr(),
            "detector: `detector replay {}` gives the full report",
            args.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
