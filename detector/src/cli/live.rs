//! `detector live`: the terminal UI, driven by the running kernel or, with
//! `--replay`, by a trace file (no root, no BPF).

use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use crate::cli::analysis::{AnalyzerArgs, Base};
use crate::event::StreamItem;
use crate::loader::{AttachPolicy, LoadOptions};
use crate::trace::{TraceEnd, TraceHeader, TraceWriter};
use crate::tui::analysis::AnalyzerAnalysis;
use crate::tui::source::{ReplaySource, Source, Speed};
use crate::tui::worker::Recorder;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Drive the UI from a trace file instead of the kernel.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Replay speed: 1 is real time, 10 ten times faster, 0 or `max` as
    /// fast as possible.
    #[arg(long, value_name = "X", default_value = "1", requires = "replay")]
    pub speed: Speed,
    /// Also write everything watched to this trace file (replay it later
    /// with `detector live --replay` or `detector replay`).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// No UI: print one line per finding on stdout (works without a terminal).
    #[arg(long)]
    pub plain: bool,
    /// Live capture: only this process (thread group id).
    #[arg(long, value_name = "PID", conflicts_with = "replay")]
    pub pid: Option<u32>,
    /// Live capture: which attach modes the loader may use.
    #[arg(long, value_enum, default_value = "auto", conflicts_with = "replay")]
    pub attach: AttachPolicy,
    /// Only tasks in this cgroup v2 directory (live capture).
    #[arg(long, value_name = "DIR", conflicts_with = "replay")]
    pub cgroup: Option<PathBuf>,
    /// Ring buffer size in bytes, power of two (live capture; e.g. 16M).
    #[arg(long, value_parser = crate::cli::record::parse_size, conflicts_with = "replay")]
    pub ring_size: Option<u64>,
    /// Turn off the in-kernel relevance filters (docs/probes.md).
    #[arg(long, conflicts_with = "replay")]
    pub unfiltered: bool,
    /// Analyzer settings; each one given overrides the replayed trace's
    /// (or the default, live).
    #[command(flatten)]
    pub analyzer: AnalyzerArgs,
}

/// `--record` into a trace file.
struct TraceRecorder {
    writer: TraceWriter<File>,
    path: String,
}

impl Recorder for TraceRecorder {
    fn write(&mut self, item: &StreamItem) -> Result<(), String> {
        self.writer.write_item(item).map_err(|e| e.to_string())
    }
    fn bytes(&self) -> u64 {
        self.writer.bytes_written()
    }
    fn path(&self) -> String {
        self.path.clone()
    }
    fn finish(self: Box<Self>, reason: &str) -> Result<(), String> {
        self.writer
            .finish(TraceEnd::now(reason))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn recorder(path: &Path, header: &TraceHeader) -> anyhow::Result<Box<dyn Recorder>> {
    let writer = TraceWriter::create(path, header)
        .with_context(|| format!("cannot record to {}", path.display()))?;
    Ok(Box::new(TraceRecorder {
        writer,
        path: path.display().to_string(),
    }))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let terminal = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if !args.plain && !terminal {
        anyhow::bail!(
            "`detector live` needs a terminal; without one use `detector record` to capture \
             to a file or `detector live --plain` for one line per finding"
        );
    }
    let Some(path) = args.replay.as_deref() else {
        let mut opts = LoadOptions {
            policy: args.attach,
            unfiltered: args.unfiltered,
            ..LoadOptions::default()
        };
        opts.filter.tgid = args.pid.unwrap_or(0);
        if let Some(dir) = &args.cgroup {
            opts.filter.cgroup_id = crate::cli::record::cgroup_id(dir)?;
        }
        if let Some(bytes) = args.ring_size {
            opts.ring_bytes = crate::cli::record::ring_bytes(bytes)?;
        }
        let live = crate::tui::kernel::start(opts).map_err(anyhow::Error::msg)?;
        let (cfg, note) = args.analyzer.resolve(Base::Defaults);
        let rec = match &args.record {
            Some(out) => {
                let mut header = live.header.clone();
                header.analyzer_config = Some(cfg.clone());
                Some(recorder(out, &header)?)
            }
            None => None,
        };
        let analysis = AnalyzerAnalysis::with_note(cfg, note);
        return drive(Box::new(live.source), analysis, rec, args.plain);
    };
    let source = ReplaySource::open(path, args.speed)
        .with_context(|| format!("cannot replay {}", path.display()))?;
    let (cfg, note) = args
        .analyzer
        .resolve(Base::Trace(source.header().analyzer_config.as_ref()));
    let rec = match &args.record {
        Some(out) => {
            let mut header = source.header().clone();
            header.origin = format!("live --replay {}", path.display());
            header.command_line = std::env::args().collect();
            header.analyzer_config = Some(cfg.clone());
            Some(recorder(out, &header)?)
        }
        None => None,
    };
    let analysis = AnalyzerAnalysis::with_note(cfg, note);
    drive(Box::new(source), analysis, rec, args.plain)
}

/// Set by SIGINT in `--plain` mode (the UI reads Ctrl-C as a key instead).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The first Ctrl-C ends the stream cleanly (summary printed, recording
/// finished); the handler then resets, so a second one kills at once.
fn catch_sigint() {
    // SAFETY: a zeroed sigaction is a valid starting value; the handler only
    // performs an atomic store, which is async-signal-safe; the pointers
    // passed are valid for the duration of the calls.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigint as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
}

/// Runs the plain stream or the UI over any source.
fn drive(
    source: Box<dyn Source>,
    mut analysis: AnalyzerAnalysis,
    rec: Option<Box<dyn Recorder>>,
    plain: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(p) = crate::plan::attached_probes(&source.info().plan) {
        analysis.set_attached(p);
    }
    let analysis = Box::new(analysis);
    if plain {
        catch_sigint();
        let sum = crate::tui::plain::run_plain(
            source,
            analysis,
            rec,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
            &INTERRUPTED,
        )
        .context("cannot write the finding stream")?;
        if let Some(e) = sum.record_error {
            anyhow::bail!("the recording failed: {e}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = crate::tui::run_terminal(source, analysis, rec)?;
    if let Some(e) = report.record_error {
        anyhow::bail!("the recording failed: {e}");
    }
    Ok(ExitCode::SUCCESS)
}
