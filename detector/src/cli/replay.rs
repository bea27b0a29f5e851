//! `detector replay FILE`: analyze a trace file offline (no root, no BPF).
//!
//! `--stats` adds one line on standard error: how fast the file was
//! replayed, the process's peak RSS, the analyzer's peak tracked objects
//! against `--max-tracked` and the CPU time spent.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::analyzer::{Analyzer, Config, Finding, Severity};
use crate::cli::analysis::{AnalyzerArgs, Base};
use crate::event::StreamItem;
use crate::groups::{GroupInput, Groups};
use crate::present::events::{write_jsonl, write_text};
use crate::present::report::{Analysis, Report};
use crate::trace::TraceReader;

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

/// Which analyzer configuration a replay uses.
#[derive(Clone, Debug)]
pub enum ConfigChoice {
    /// The trace header's (the defaults when it records none), with these
    /// flags over it: what `detector replay` does.
    FromTrace(AnalyzerArgs),
    /// Exactly this one, whatever the trace says.
    Given(Config),
}

/// Runs the analyzer over a whole trace file with exactly `cfg` and builds
/// the report, with every finding kept. A truncated or damaged file is not
/// an error: what was read is analyzed and the report says where reading
/// stopped.
pub fn analyze_file(path: &std::path::Path, cfg: Config) -> anyhow::Result<Report> {
    analyze_file_with_stats(path, ConfigChoice::Given(cfg), true).map(|(report, _)| report)
}

/// Analyzes a file the way `detector replay` does: with the configuration
/// its header records unless flags override it. `keep_all` keeps every
/// finding besides the groups (memory grows with the findings).
pub fn analyze_file_with_stats(
    path: &std::path::Path,
    choice: ConfigChoice,
    keep_all: bool,
) -> anyhow::Result<(Report, ReplayStats)> {
    let start = Instant::now();
    let mut reader = TraceReader::open(path)?;
    let (cfg, config_source) = match choice {
        ConfigChoice::FromTrace(flags) => {
            flags.resolve(Base::Trace(reader.header().analyzer_config.as_ref()))
        }
        ConfigChoice::Given(c) => (c, String::from("given by the caller")),
    };
    let mut analyzer = Analyzer::new(cfg.clone());
    if let Some(p) = crate::plan::attached_probes(&reader.header().plan) {
        analyzer.set_attached(p);
    }
    let mut groups: Groups<Finding> = Groups::default();
    let mut all = keep_all.then(Vec::new);
    let mut found = Vec::new();
    let (mut first, mut last) = (u64::MAX, 0u64);
    let mut take = |found: &mut Vec<Finding>| {
        for f in found.drain(..) {
            groups.add(GroupInput::of(&f), || f.clone());
            if let Some(all) = all.as_mut() {
                all.push(f);
            }
        }
    };
    // Borrowed from the reader's decode slot: one copy per event, not two.
    while let Some((index, item)) = reader.next_ref() {
        if let StreamItem::Event(e) = item {
            first = first.min(e.ts_ns);
            last = last.max(e.ts_ns);
        }
        analyzer.process(index, item, &mut found);
        if !found.is_empty() {
            take(&mut found);
        }
    }
    analyzer.finish(&mut found);
    take(&mut found);
    let elapsed = start.elapsed();
    if first == u64::MAX {
        first = 0;
    }
    let stats = ReplayStats {
        events: analyzer.stats().events,
        elapsed,
        tracked: Some(TrackedPeak {
            peak: analyzer.peak_tracked_objects(),
            limit: analyzer.config().max_tracked,
        }),
    };
    let report = Report::build(
        &path.display().to_string(),
        reader.header(),
        reader.end_state(),
        (first, last),
        &analyzer,
        Analysis {
            config: cfg,
            config_source,
            groups,
            all,
        },
    );
    Ok((report, stats))
}

/// What a replay cost, for `--stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayStats {
    /// Event records read (lost-event records not included).
    pub events: u64,
    /// Opening, reading and analyzing the file (not printing the report).
    pub elapsed: Duration,
    /// `None` when nothing was analyzed (`--format text` or `jsonl`).
    pub tracked: Option<TrackedPeak>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackedPeak {
    /// [`Analyzer::peak_tracked_objects`].
    pub peak: usize,
    /// The `max_tracked` in effect.
    pub limit: usize,
}

impl ReplayStats {
    pub fn events_per_sec(&self) -> f64 {
        // A zero duration (an empty file on a coarse clock) is not a rate.
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `replayed N events in S s: R events/s; peak RSS M MiB; tracked objects
/// peak P (limit L); cpu U s user + K s sys`. RSS and CPU times are read
/// when formatting: the process's so far. The CPU times tell a replay that
/// waited for the disk or for another process (wall time well above user +
/// sys) from one that computed.
impl fmt::Display for ReplayStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} events in {:.2} s: {:.1}M events/s",
            if self.tracked.is_some() {
                "replayed"
            } else {
                "decoded"
            },
            self.events,
            self.elapsed.as_secs_f64(),
            self.events_per_sec() / 1e6
        )?;
        let usage = self_usage();
        match usage {
            Some(u) => write!(f, "; peak RSS {} MiB", (u.max_rss + (1 << 19)) >> 20)?,
            None => write!(f, "; peak RSS unknown")?,
        }
        match self.tracked {
            Some(t) => write!(f, "; tracked objects peak {} (limit {})", t.peak, t.limit)?,
            None => write!(f, "; not analyzed")?,
        }
        if let Some(u) = usage {
            write!(
                f,
                "; cpu {:.2} s user + {:.2} s sys",
                u.user.as_secs_f64(),
                u.sys.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

/// Resources this process used so far (`getrusage(RUSAGE_SELF)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Peak resident set size, bytes.
    pub max_rss: u64,
    pub user: Duration,
    pub sys: Duration,
}

pub fn self_usage() -> Option<Usage> {
    // SAFETY: `rusage` is integers and `timeval`s of integers, for which
    // all-zero bytes are a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a live, writable `rusage`; getrusage only writes
    // into it, and RUSAGE_SELF is always a valid target.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Some(Usage {
        // Linux reports kibibytes.
        max_rss: u64::try_from(ru.ru_maxrss)
            .unwrap_or(0)
            .saturating_mul(1024),
        user: time(ru.ru_utime),
        sys: time(ru.ru_stime),
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match args.format {
        Format::Text | Format::Jsonl => {
            let start = Instant::now();
            let mut reader = TraceReader::open(&args.file)?;
            let base = reader.header().start_monotonic_ns;
            let mut events = 0u64;
            while let Some((index, item)) = reader.next_item() {
                events += u64::from(matches!(item, StreamItem::Event(_)));
                let r = if args.format == Format::Text {
                    write_text(&mut out, base, index, &item)
                } else {
                    write_jsonl(&mut out, index, &item)
                };
                if let Err(e) = r {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Ok(ExitCode::SUCCESS);
                    }
                    return Err(e).context("cannot write to standard output");
                }
            }
            let _ = out.flush();
            if let Some(end) = reader.end_state().filter(|e| !e.is_complete()) {
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
        Format::Report | Format::Json => {
            let (report, stats) = analyze_file_with_stats(
                &args.file,
                ConfigChoice::FromTrace(args.analyzer.clone()),
                args.all,
            )?;
            let r = if args.format == Format::Json {
                serde_json::to_writer_pretty(&mut out, &report)
                    .map_err(io::Error::other)
                    .and_then(|_| writeln!(out))
            } else {
                report.render(&mut out)
            };
            match r.and_then(|_| out.flush()) {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                    return Err(e).context("cannot write to standard output")
                }
                _ => {}
            }
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
    }
}
