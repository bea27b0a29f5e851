//! `detector replay FILE`: analyze a trace file offline (no root, no BPF).
//!
//! `--stats` adds one line on standard error: how fast the file was
//! replayed, the process's peak RSS, the analyzer's peak tracked objects
//! against `--max-tracked` and the CPU time spent.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::analyzer::Severity;
use crate::cli::args::AnalyzerArgs;
use crate::sinks::{analyze_file_with_stats, EventFormat, EventWriter, ReplayStats};
use crate::stream::{ConfigChoice, FileSource, Pipeline, PipelineError, Source, Speed};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Summary, findings with evidence, window histograms.
    Report,
    /// The whole report as one JSON document.
    Json,
    /// Decoded events, one per line (no analysis).
    Text,
    /// Decoded events as JSON lines (no analysis).
    Jsonl,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOn {
    Violation,
    #[value(name = "near_miss", alias = "near-miss")]
    NearMiss,
    Never,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trace file written by `detector record` or `detector simulate`.
    pub file: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Report)]
    pub format: Format,
    /// Exit with status 1 when a finding at or above this severity exists.
    #[arg(long, value_enum, default_value_t = FailOn::Violation)]
    pub fail_on: FailOn,
    /// List every finding (JSON: under `findings`, besides the groups;
    /// report: all of them in order), not only the first few of each group.
    #[arg(long)]
    pub all: bool,
    /// Analyzer settings; each one given overrides the trace header's.
    #[command(flatten)]
    pub analyzer: AnalyzerArgs,
    /// When done, print events per second, peak RSS, the analyzer's peak
    /// tracked objects and CPU time to standard error.
    #[arg(long)]
    pub stats: bool,
}

/// Output to a pipe that was closed (`| head`) ends the command quietly.
fn written(r: io::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let format = match args.format {
        Format::Text | Format::Jsonl => args.format,
        Format::Report | Format::Json => return report(args, &mut out),
    };
    let start = Instant::now();
    let mut source = FileSource::open(&args.file, Speed::Max)?;
    let format = match format {
        Format::Text => EventFormat::Text {
            base_ns: source.header().start_monotonic_ns,
        },
        _ => EventFormat::Jsonl,
    };
    let mut sink = EventWriter::new(&mut out, format, source.header())?;
    match Pipeline::new(&mut source).run(&mut sink) {
        Ok(_) => {}
        Err(PipelineError::Sink(e)) => return written(Err(e)).map(|()| ExitCode::SUCCESS),
        Err(e) => return Err(e.into()),
    }
    let events = sink.events;
    if let Some(end) = source.end_state().filter(|e| !e.is_complete()) {
        eprintln!("detector: {}: {end}", args.file.display());
    }
    if args.stats {
        let stats = ReplayStats {
            events,
            elapsed: start.elapsed(),
            tracked: None,
        };
        eprintln!("detector: {stats}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The report (text or JSON), and the exit status `--fail-on` asks for.
fn report(args: Args, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let (report, stats) = analyze_file_with_stats(
        &args.file,
        ConfigChoice::FromTrace(args.analyzer.overrides()),
        args.all,
    )?;
    let r = if args.format == Format::Json {
        serde_json::to_writer_pretty(&mut *out, &report)
            .map_err(io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        report.render(out)
    };
    written(r.and_then(|()| out.flush()))?;
    if args.stats {
        eprintln!("detector: {stats}");
    }
    let failing = match args.fail_on {
        FailOn::Violation => report.count(Severity::Violation),
        FailOn::NearMiss => report.count(Severity::NearMiss),
        FailOn::Never => 0,
    };
    Ok(if failing > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
