//! The worker: runs the stream's pipeline (source, `--record`, analyzer)
//! on its own thread and applies each pull to the shared model under one
//! short lock. The UI thread never does any of this.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::analyzer::{Analyzer, Finding, WindowKind};
use crate::bpfstats::CostUpdate;
use crate::event::StreamItem;
use crate::groups::GroupInput;
use crate::present::describe_setup;
use crate::present::row::{finding_row, EventMeta};
use crate::stream::{
    AnalyzerSetup, Ctx, End, OnRecordError, Pipeline, Recorder, Sink, Source, BATCH,
};

use super::model::{Model, SourceState, WindowRow};

/// How often the analyzer's window histograms are copied into the model.
const WINDOWS_EVERY: Duration = Duration::from_millis(250);
/// How long one pull may wait before the worker looks at the stop flag.
const PULL_WAIT: Duration = Duration::from_millis(50);

pub type Shared = Arc<Mutex<Model>>;

/// Locks the model; a panic elsewhere while holding the lock leaves data
/// that is still fine to display.
pub fn lock(m: &Mutex<Model>) -> MutexGuard<'_, Model> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the worker did, for the last line printed after the UI closes.
#[derive(Debug, Default)]
pub struct WorkerReport {
    pub items: u64,
    pub record_error: Option<String>,
}

pub struct Worker {
    pub source: Box<dyn Source>,
    /// The analyzer's configuration; `None` runs without one.
    pub setup: Option<AnalyzerSetup>,
    pub recorder: Option<Box<dyn Recorder>>,
    pub model: Shared,
    pub stop: Arc<AtomicBool>,
}

impl Worker {
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<WorkerReport>> {
        std::thread::Builder::new()
            .name("detector-live-worker".into())
            .spawn(move || self.run())
    }

    pub fn run(mut self) -> WorkerReport {
        if let Some(s) = &self.setup {
            lock(&self.model).analysis_note = describe_setup(&s.origin, &s.config);
        }
        let stop = Arc::clone(&self.stop);
        let mut pipeline = Pipeline::new(&mut *self.source)
            .wait(PULL_WAIT)
            .stop_when(move || {
                stop.load(Ordering::Relaxed)
                    .then(|| String::from("live UI closed"))
            });
        if let Some(s) = &self.setup {
            pipeline = pipeline.analyze(s);
        }
        if let Some(r) = self.recorder.take() {
            pipeline = pipeline.record(r, OnRecordError::Continue);
        }
        let mut sink = ModelSink::new(Arc::clone(&self.model));
        match pipeline.run(&mut sink) {
            Ok(outcome) => WorkerReport {
                items: outcome.items,
                record_error: sink.record_error,
            },
            // The model sink writes nothing that can fail, and a failed
            // recording goes on without it; should the run fail anyway,
            // the title bar says so.
            Err(e) => {
                let mut m = lock(&self.model);
                m.state = SourceState::Failed(e.to_string());
                m.version += 1;
                WorkerReport {
                    items: sink.items,
                    record_error: sink.record_error,
                }
            }
        }
    }
}

/// Counters the analyzer exposes besides findings.
#[derive(Clone, Debug, Default)]
struct AnalysisStats {
    windows: Vec<WindowRow>,
    tracked_objects: u64,
    evictions: u64,
}

impl AnalysisStats {
    /// Window histograms as the UI's bars (power-of-two buckets).
    fn read(&mut self, a: &Analyzer) {
        self.tracked_objects = a.tracked_objects() as u64;
        self.evictions = a.evictions();
        let w = a.windows();
        self.windows
            .resize_with(WindowKind::ALL.len(), WindowRow::default);
        for (row, kind) in self.windows.iter_mut().zip(WindowKind::ALL) {
            let s = w.summary(kind);
            row.name = s.name;
            row.count = s.count;
            row.min = s.min_ns;
            row.p50 = s.p50_ns;
            row.p90 = s.p90_ns;
            row.p99 = s.p99_ns;
            row.max = s.max_ns;
            row.log2_buckets.clear();
            if let Some(h) = w.histogram(kind) {
                for v in h.iter_recorded() {
                    let b = 63 - v.value_iterated_to().max(1).leading_zeros() as usize;
                    if row.log2_buckets.len() <= b {
                        row.log2_buckets.resize(b + 1, 0);
                    }
                    row.log2_buckets[b] += v.count_at_value();
                }
            }
        }
    }

    fn apply(&self, m: &mut Model) {
        m.windows.clone_from(&self.windows);
        m.tracked_objects = self.tracked_objects;
        m.evictions = self.evictions;
    }
}

/// The pipeline's sink: items and findings of one pull are collected, then
/// applied to the model under one lock.
struct ModelSink {
    model: Shared,
    items: u64,
    buf: Vec<(u64, StreamItem)>,
    /// Findings of the current pull; only the first few of each group are
    /// turned into rows (under the lock, when applied), the rest are
    /// counted and dropped.
    found: Vec<Finding>,
    meta: EventMeta,
    stats: AnalysisStats,
    last_stats: Instant,
    /// Per-probe run time: read by the live capture about once a second,
    /// applied here so the render path only formats it.
    costs: CostUpdate,
    record_error: Option<String>,
}

impl ModelSink {
    fn new(model: Shared) -> Self {
        ModelSink {
            model,
            items: 0,
            buf: Vec::with_capacity(BATCH),
            found: Vec::new(),
            meta: EventMeta::new(18),
            stats: AnalysisStats::default(),
            last_stats: Instant::now() - WINDOWS_EVERY,
            costs: CostUpdate::default(),
            record_error: None,
        }
    }

    fn add_findings(&mut self, m: &mut Model) {
        for f in self.found.drain(..) {
            m.add_finding(GroupInput::of(&f), || finding_row(&f, &self.meta));
        }
    }
}

impl Sink for ModelSink {
    #[inline]
    fn item(
        &mut self,
        index: u64,
        item: &StreamItem,
        found: &mut Vec<Finding>,
    ) -> std::io::Result<()> {
        self.items += 1;
        self.meta.record(index, item);
        self.buf.push((index, *item));
        self.found.append(found);
        Ok(())
    }

    fn pulled(&mut self, ctx: &mut Ctx<'_>) -> std::io::Result<()> {
        let new_costs = ctx.source.take_costs(&mut self.costs);
        let refresh = self.last_stats.elapsed() >= WINDOWS_EVERY;
        if let Some(a) = ctx.analyzer.filter(|_| refresh) {
            self.stats.read(a);
            self.last_stats = Instant::now();
        }
        let model = Arc::clone(&self.model);
        let mut m = lock(&model);
        for (index, item) in self.buf.drain(..) {
            m.ingest(index, &item);
        }
        self.add_findings(&mut m);
        if new_costs {
            m.apply_costs(&self.costs);
        }
        if refresh {
            self.stats.apply(&mut m);
        }
        m.recording = ctx
            .recording
            .map(|(path, bytes)| (path.display().to_string(), bytes));
        if let Some(e) = ctx.record_error {
            if m.notice.is_none() {
                // The display goes on; the recording is over and the title
                // bar says so.
                m.notice = Some(format!("recording stopped: {e}"));
            }
        }
        Ok(())
    }

    fn idle(&mut self, ctx: &mut Ctx<'_>) -> std::io::Result<()> {
        let new_costs = ctx.source.take_costs(&mut self.costs);
        let now = ctx.source.clock_ns();
        if now.is_some() || new_costs {
            let mut m = lock(&self.model);
            if let Some(now) = now {
                m.tick(now);
            }
            if new_costs {
                m.apply_costs(&self.costs);
            }
        }
        Ok(())
    }

    fn finish(&mut self, found: &mut Vec<Finding>, ctx: &mut Ctx<'_>) -> std::io::Result<()> {
        self.found.append(found);
        if let Some(a) = ctx.analyzer {
            self.stats.read(a);
        }
        self.record_error = ctx.record_error.map(ToString::to_string);
        let model = Arc::clone(&self.model);
        let mut m = lock(&model);
        for (index, item) in self.buf.drain(..) {
            m.ingest(index, &item);
        }
        self.add_findings(&mut m);
        self.stats.apply(&mut m);
        m.recording = None;
        m.state = match (ctx.end, &self.record_error) {
            (Some(End::Failed(e)), _) => SourceState::Failed(e.to_string()),
            (Some(End::Finished(how) | End::Stopped(how)), Some(e)) => {
                SourceState::Ended(format!("{how}; recording failed: {e}"))
            }
            (Some(End::Finished(how) | End::Stopped(how)), None) => SourceState::Ended(how.clone()),
            (None, _) => SourceState::Ended(String::new()),
        };
        m.version += 1;
        Ok(())
    }
}
