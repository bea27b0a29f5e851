//! `detector live`: the terminal UI, driven by the running kernel or, with
//! `--replay`, by a trace file (no root, no BPF); `--plain` prints the
//! findings instead.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli::args::{AnalyzerArgs, CaptureArgs};
use crate::cli::signals;
use crate::loader::privileges::{self, Kept};
use crate::loader::BpfLog;
use crate::present::describe_setup;
use crate::sinks::{FindingPrinter, Style};
use crate::stream::{
    spawn_capture, ConfigChoice, FileSource, OnRecordError, Pipeline, Recorder, Source, Speed,
    TraceRecorder,
};
use crate::trace::{Redactor, TraceFormat};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Drive the UI from a trace file instead of the kernel.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["pid", "cgroup", "ring_size", "attach", "unfiltered", "drain_every", "wakeup_bytes", "bpf_log"]
    )]
    pub replay: Option<PathBuf>,
    /// Replay speed: 1 is real time, 10 ten times faster, 0 or `max` as
    /// fast as possible.
    #[arg(long, value_name = "X", default_value = "1", requires = "replay")]
    pub speed: Speed,
    /// Also write everything watched to this trace file (replay it later
    /// with `detector live --replay` or `detector replay`).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Write kernel addresses into the --record file as keyed pseudonyms
    /// (see `detector record --redact`); the screen shows the real ones.
    #[arg(long, requires = "record")]
    pub redact: bool,
    /// Format of the --record file (see `detector record --trace-format`).
    #[arg(long, value_name = "v1|v2", default_value_t = TraceFormat::V2, requires = "record")]
    pub trace_format: TraceFormat,
    /// No UI: print one line per finding on stdout (works without a terminal).
    #[arg(long)]
    pub plain: bool,
    /// Live capture (not with --replay).
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// Analyzer settings; each one given overrides the replayed trace's
    /// (or the default, live).
    #[command(flatten)]
    pub analyzer: AnalyzerArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let terminal = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if !args.plain && !terminal {
        anyhow::bail!(
            "`detector live` needs a terminal; without one use `detector record` to capture \
             to a file or `detector live --plain` for one line per finding"
        );
    }
    // The capture thread drops its capabilities once the probes are
    // attached; `kept` is what it still needs to read the maps.
    let (mut source, kept): (Box<dyn Source>, Option<Kept>) = match &args.replay {
        Some(path) => (
            Box::new(
                FileSource::open(path, args.speed)
                    .with_context(|| format!("cannot replay {}", path.display()))?,
            ),
            None,
        ),
        None => {
            let opts = args.capture.load_options()?;
            if opts.bpf_log != BpfLog::Off && !args.plain && std::io::stderr().is_terminal() {
                anyhow::bail!(
                    "--bpf-log writes to stderr, which is the terminal the live view draws on; \
                     send it elsewhere (2>bpf.log) or use --plain"
                );
            }
            crate::cli::logging::init(log::LevelFilter::Off, opts.bpf_log.filter());
            let s = spawn_capture(opts, args.capture.drain_every)?;
            let kept = s.capabilities_kept().clone();
            (Box::new(s), Some(kept))
        }
    };
    let setup = ConfigChoice::FromTrace(args.analyzer.overrides()).setup(&*source);
    let recorder = match &args.record {
        Some(out) => {
            let mut header = source.header().clone();
            if let Some(path) = &args.replay {
                header.origin = format!("live --replay {}", path.display());
                header.command_line = std::env::args().collect();
            }
            header.analyzer_config = Some(setup.config.clone());
            let redact = args.redact.then(Redactor::new).transpose()?;
            let r = TraceRecorder::create_format(out, &header, None, redact, args.trace_format)
                .with_context(|| format!("cannot record to {}", out.display()))?;
            Some(Box::new(r) as Box<dyn Recorder>)
        }
        None => None,
    };
    // This thread (and the UI's worker, started from it) holds no probe
    // and creates no file from here on.
    privileges::drop_all()?;
    let record_error = if args.plain {
        signals::catch_stop_signals();
        eprintln!(
            "detector: analyzer config {}",
            describe_setup(&setup.origin, &setup.config)
        );
        if let Some(kept) = &kept {
            eprintln!("detector: capabilities kept after attaching: {kept}");
        }
        let mut printer = FindingPrinter::new(
            std::io::stdout().lock(),
            std::io::stderr().lock(),
            Style::Line,
        );
        let mut pipeline = Pipeline::new(&mut *source)
            .analyze(&setup)
            .wait(Duration::from_millis(100))
            .stop_when(signals::caught);
        if let Some(r) = recorder {
            pipeline = pipeline.record(r, OnRecordError::Continue);
        }
        pipeline
            .run(&mut printer)
            .context("cannot write the finding stream")?;
        printer.into_summary().record_error
    } else {
        crate::tui::run_terminal(source, &setup, recorder)?.record_error
    };
    if let Some(e) = record_error {
        anyhow::bail!("the recording failed: {e}");
    }
    Ok(ExitCode::SUCCESS)
}
