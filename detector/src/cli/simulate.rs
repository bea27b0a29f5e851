//! `detector simulate SCRIPT -o FILE`: compile a scenario script into a
//! real trace file (origin `simulate:<path>`), replayable like a capture.
//!
//! `detector simulate --synthetic N -o FILE [--objects K] [--storm]`: write
//! N events of the race-free swap-heavy mix of [`crate::synth`] instead
//! (origin `synthetic`), streamed, for throughput and memory runs of
//! `replay`; `--storm` makes every swap-in skip the pin (a finding storm).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::scenario::{self, Scenario};
use crate::synth::{self, Synth};
use crate::trace::{TraceEnd, TraceFormat, TraceHeader, TraceSummary, TraceWriter};

#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("source")
        .required(true)
        .args(["script", "synthetic"])
))]
pub struct Args {
    /// Scenario script (see docs/scenarios.md).
    pub script: Option<PathBuf>,
    /// Instead of a script, write N events of a synthetic, race-free
    /// swap-out / reclaim / swap-in / GUP mix (for replay throughput and
    /// memory measurements).
    #[arg(long, value_name = "N")]
    pub synthetic: Option<u64>,
    /// Folios the synthetic mix cycles through (default 200000); the
    /// analyzer tracks about twice as many objects (folios and swap entries).
    // `conflicts_with`, not `requires = "synthetic"`: clap lets any member
    // of the `source` group satisfy a `requires` (clap-rs/clap#4707).
    #[arg(long, value_name = "K", conflicts_with = "script",
          value_parser = clap::value_parser!(u64).range(1..=synth::MAX_OBJECTS))]
    pub objects: Option<u64>,
    /// With --synthetic: swap-ins skip the SWAP_HAS_CACHE pin, as on a
    /// kernel without it: one swapin_without_cache_pin violation per
    /// swap-in, all by one task (a finding storm).
    #[arg(long, conflicts_with = "script")]
    pub storm: bool,
    /// Trace file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Trace file format: v2 (compressed blocks, about 5 bytes per event)
    /// or v1 (164 bytes per event, for tools that only read v1).
    #[arg(long, value_name = "v1|v2", default_value_t = TraceFormat::V2)]
    pub trace_format: TraceFormat,
}

pub fn load(path: &Path) -> anyhow::Result<Scenario> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read scenario {}", path.display()))?;
    Ok(scenario::parse(&text, &path.display().to_string())?)
}

/// Writes the scenario's items as a trace file.
pub fn write_trace(sc: &Scenario, origin_path: &Path, out: &Path) -> anyhow::Result<()> {
    write_trace_as(sc, origin_path, out, TraceFormat::default())
}

/// As [`write_trace`], in the given trace format.
pub fn write_trace_as(
    sc: &Scenario,
    origin_path: &Path,
    out: &Path,
    format: TraceFormat,
) -> anyhow::Result<()> {
    let mut header = TraceHeader::new(format!("simulate:{}", origin_path.display()));
    header.start_monotonic_ns = scenario::BASE_NS;
    header.kernel_release = "simulated".to_string();
    // The scenario's `config` lines: replay analyzes with them, so it
    // gives the findings the scenario declares.
    header.analyzer_config = Some(sc.config.clone());
    let mut w = TraceWriter::create_format(out, &header, format)
        .with_context(|| format!("cannot create trace {}", out.display()))?;
    for item in &sc.items {
        w.write_item(item)
            .with_context(|| format!("cannot write trace {}", out.display()))?;
    }
    let end_ns = sc
        .items
        .last()
        .map(crate::event::StreamItem::ts_ns)
        .unwrap_or(scenario::BASE_NS);
    w.finish(TraceEnd::at(end_ns, "end of scenario"))
        .with_context(|| format!("cannot finish trace {}", out.display()))?;
    Ok(())
}

/// Streams `events` synthetic events over `objects` folios to `out` (see
/// [`crate::synth`]); nothing proportional to `events` is held in memory.
pub fn write_synthetic(out: &Path, events: u64, objects: u64) -> anyhow::Result<TraceSummary> {
    write_synthetic_stream(out, events, objects, false)
}

/// As [`write_synthetic`]; `storm` selects [`Synth::storm`].
pub fn write_synthetic_stream(
    out: &Path,
    events: u64,
    objects: u64,
    storm: bool,
) -> anyhow::Result<TraceSummary> {
    write_synthetic_as(out, events, objects, storm, TraceFormat::default())
}

/// As [`write_synthetic_stream`], in the given trace format.
pub fn write_synthetic_as(
    out: &Path,
    events: u64,
    objects: u64,
    storm: bool,
    format: TraceFormat,
) -> anyhow::Result<TraceSummary> {
    let mut header = TraceHeader::new("synthetic");
    header.start_monotonic_ns = synth::START_NS;
    header.kernel_release = "simulated".to_string();
    // What regenerates this exact file: the stream is deterministic.
    header.command_line = [
        "detector",
        "simulate",
        "--synthetic",
        &events.to_string(),
        "--objects",
        &objects.to_string(),
    ]
    .map(String::from)
    .to_vec();
    if storm {
        header.command_line.push("--storm".into());
    }
    if format != TraceFormat::default() {
        header
            .command_line
            .extend(["--trace-format".to_string(), format.to_string()]);
    }
    let mut w = TraceWriter::create_format(out, &header, format)
        .with_context(|| format!("cannot create trace {}", out.display()))?;
    let mut gen = if storm {
        Synth::storm(objects)
    } else {
        Synth::new(objects)
    };
    for e in gen
        .by_ref()
        .take(usize::try_from(events).unwrap_or(usize::MAX))
    {
        w.write_event(&e)
            .with_context(|| format!("cannot write trace {}", out.display()))?;
    }
    w.finish(TraceEnd::at(gen.last_ts(), "end of synthetic stream"))
        .with_context(|| format!("cannot finish trace {}", out.display()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let script = match (args.script, args.synthetic) {
        (Some(script), None) => script,
        (None, Some(n)) => {
            let t = Instant::now();
            let objects = args.objects.unwrap_or(synth::DEFAULT_OBJECTS);
            let s = write_synthetic_as(&args.output, n, objects, args.storm, args.trace_format)?;
            eprintln!(
                "detector: wrote {} synthetic event(s) over {} folio(s) to {} ({:.1} MiB in {:.2} s)",
                s.totals.events,
                objects,
                args.output.display(),
                s.bytes as f64 / (1024.0 * 1024.0),
                t.elapsed().as_secs_f64()
            );
            return Ok(ExitCode::SUCCESS);
        }
        _ => anyhow::bail!("give exactly one of a scenario script or --synthetic N"),
    };
    let sc = load(&script)?;
    write_trace_as(&sc, &script, &args.output, args.trace_format)?;
    eprintln!(
        "detector: wrote {} item(s) of scenario `{}` to {}",
        sc.items.len(),
        sc.name,
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
