//! The report of a trace file: every finding grouped (and, when asked,
//! kept), then [`Report`] built from the analyzer's state at the end. What
//! `detector replay` prints and what the scenario tests read.

use std::fmt;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::analyzer::{Config, Finding};
use crate::event::StreamItem;
use crate::groups::{GroupInput, Groups};
use crate::present::report::{Analysis, Report};
use crate::stream::{
    ConfigChoice, Ctx, FileSource, Pipeline, PipelineError, Sink, Source, SourceError, Speed,
};

#[derive(Debug, Error)]
pub enum AnalyzeError {
    #[error(transparent)]
    Open(#[from] SourceError),
    #[error(transparent)]
    Run(#[from] PipelineError),
}

/// Findings grouped (and kept, with `all`), and the span of event times.
pub struct ReportSink {
    pub groups: Groups<Finding>,
    pub all: Option<Vec<Finding>>,
    first: u64,
    last: u64,
}

impl ReportSink {
    /// `keep_all` keeps every finding besides the groups (memory grows
    /// with the findings).
    pub fn new(keep_all: bool) -> Self {
        ReportSink {
            groups: Groups::default(),
            all: keep_all.then(Vec::new),
            first: u64::MAX,
            last: 0,
        }
    }

    /// Earliest and latest event time (0, 0 without events).
    pub fn span(&self) -> (u64, u64) {
        if self.first == u64::MAX {
            (0, self.last)
        } else {
            (self.first, self.last)
        }
    }

    fn take(&mut self, found: &mut Vec<Finding>) {
        for f in found.drain(..) {
            self.groups.add(GroupInput::of(&f), || f.clone());
            if let Some(all) = self.all.as_mut() {
                all.push(f);
            }
        }
    }
}

impl Sink for ReportSink {
    #[inline]
    fn item(&mut self, _index: u64, item: &StreamItem, found: &mut Vec<Finding>) -> io::Result<()> {
        if let StreamItem::Event(e) = item {
            self.first = self.first.min(e.ts_ns);
            self.last = self.last.max(e.ts_ns);
        }
        if !found.is_empty() {
            self.take(found);
        }
        Ok(())
    }

    fn finish(&mut self, found: &mut Vec<Finding>, _ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.take(found);
        Ok(())
    }
}

/// Runs the analyzer over a whole trace file with exactly `cfg` and builds
/// the report, with every finding kept. A truncated or damaged file is not
/// an error: what was read is analyzed and the report says where reading
/// stopped.
pub fn analyze_file(path: &Path, cfg: Config) -> Result<Report, AnalyzeError> {
    analyze_file_with_stats(path, ConfigChoice::Given(cfg), true).map(|(report, _)| report)
}

/// Analyzes a file the way `detector replay` does: with the configuration
/// its header records unless overridden. `keep_all` keeps every finding
/// besides the groups.
pub fn analyze_file_with_stats(
    path: &Path,
    choice: ConfigChoice,
    keep_all: bool,
) -> Result<(Report, ReplayStats), AnalyzeError> {
    let start = Instant::now();
    let mut source = FileSource::open(path, Speed::Max)?;
    let setup = choice.setup(&source);
    let mut sink = ReportSink::new(keep_all);
    let outcome = Pipeline::new(&mut source).analyze(&setup).run(&mut sink)?;
    let elapsed = start.elapsed();
    // The pipeline hands back the analyzer it was given; an empty one
    // stands in should it ever not.
    let analyzer = outcome
        .analyzer
        .unwrap_or_else(|| crate::stream::analyzer_for(&source.header().plan, &setup));
    let stats = ReplayStats {
        events: analyzer.stats().events,
        elapsed,
        tracked: Some(TrackedPeak {
            peak: analyzer.peak_tracked_objects(),
            limit: analyzer.config().max_tracked,
        }),
    };
    let span = sink.span();
    let report = Report::build(
        &path.display().to_string(),
        source.header(),
        source.end_state(),
        span,
        &analyzer,
        Analysis {
            config: setup.config,
            config_source: setup.origin,
            groups: sink.groups,
            all: sink.all,
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
    /// [`Analyzer::peak_tracked_objects`](crate::analyzer::Analyzer::peak_tracked_objects).
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
        let usage = crate::usage::self_usage();
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
