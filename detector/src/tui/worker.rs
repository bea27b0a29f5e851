//! The worker path: pulls items from the source, runs the analyzer, writes
//! `--record`, and applies each batch to the shared model under one short
//! lock. The UI thread never does any of this.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::bpfstats::CostUpdate;
use crate::event::StreamItem;

use super::model::{Model, SourceState, WindowRow};
use super::source::{Pull, Source};
use crate::analyzer::Finding;
use crate::groups::GroupInput;
use crate::present::row::{finding_row, EventMeta};

/// How often the analyzer's window histograms are copied into the model.
const WINDOWS_EVERY: Duration = Duration::from_millis(250);
/// How long one pull may wait before the worker looks at the stop flag.
const PULL_WAIT: Duration = Duration::from_millis(50);

/// Counters the analyzer exposes besides findings.
#[derive(Clone, Debug, Default)]
pub struct AnalysisStats {
    pub windows: Vec<WindowRow>,
    pub tracked_objects: u64,
    pub evictions: u64,
}

/// The analysis the worker runs: the analyzer, behind a trait so the
/// worker can be driven without one.
pub trait Analysis: Send {
    fn process(&mut self, index: u64, item: &StreamItem, out: &mut Vec<Finding>);
    /// End of stream: windows still open are closed, late findings emitted.
    fn finish(&mut self, out: &mut Vec<Finding>);
    fn stats(&self, out: &mut AnalysisStats);
    /// The configuration in use and where it came from (one line).
    fn describe(&self) -> String {
        String::new()
    }
}

/// Something `--record` writes into (the trace writer).
pub trait Recorder: Send {
    fn write(&mut self, item: &StreamItem) -> Result<(), String>;
    fn bytes(&self) -> u64;
    fn path(&self) -> String;
    /// Writes the footer. Called once, when the worker stops.
    fn finish(self: Box<Self>, reason: &str) -> Result<(), String>;
}

pub type Shared = Arc<Mutex<Model>>;

/// Locks the model; a panic elsewhere while holding the lock leaves data
/// that is still fine to display.
pub fn lock(m: &Mutex<Model>) -> MutexGuard<'_, Model> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the worker did, for the last line printed after the UI closes.
#[derive(Debug, Default)]
pub struct WorkerReport {
    pub items: u64,
    pub record_error: Option<String>,
}

pub struct Worker {
    pub source: Box<dyn Source>,
    pub analysis: Box<dyn Analysis>,
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
        let mut report = WorkerReport::default();
        let mut buf: Vec<(u64, StreamItem)> = Vec::with_capacity(super::source::BATCH);
        // Findings of the current batch; only the first few of each group
        // are turned into rows (under the lock, when applied), the rest
        // are counted and dropped.
        let mut found: Vec<Finding> = Vec::new();
        let mut meta = EventMeta::new(18);
        let mut stats = AnalysisStats::default();
        let mut last_stats = Instant::now() - WINDOWS_EVERY;
        // Per-probe run time: read by the live capture about once a second,
        // applied here so the render path only formats it.
        let mut costs = CostUpdate::default();
        lock(&self.model).analysis_note = self.analysis.describe();
        let end_state;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                end_state = SourceState::Ended(String::from("stopped"));
                break;
            }
            buf.clear();
            let pulled = self.source.pull(&mut buf, PULL_WAIT);
            let new_costs = self.source.take_costs(&mut costs);
            match pulled {
                Ok(Pull::Items) => {}
                Ok(Pull::Idle) => {
                    let now = self.source.clock_ns();
                    if now.is_some() || new_costs {
                        let mut m = lock(&self.model);
                        if let Some(now) = now {
                            m.tick(now);
                        }
                        if new_costs {
                            m.apply_costs(&costs);
                        }
                    }
                    continue;
                }
                Ok(Pull::End(how)) => {
                    end_state = SourceState::Ended(how);
                    break;
                }
                Err(e) => {
                    end_state = SourceState::Failed(e.to_string());
                    break;
                }
            }
            found.clear();
            for (index, item) in &buf {
                meta.record(*index, item);
                self.analysis.process(*index, item, &mut found);
                if let Some(rec) = self.recorder.as_mut() {
                    if let Err(e) = rec.write(item) {
                        // The display goes on; the recording is over and
                        // the title bar says so.
                        report.record_error = Some(e);
                        self.recorder = None;
                    }
                }
            }
            report.items += buf.len() as u64;
            let refresh = last_stats.elapsed() >= WINDOWS_EVERY;
            if refresh {
                self.analysis.stats(&mut stats);
                last_stats = Instant::now();
            }
            let mut m = lock(&self.model);
            for (index, item) in &buf {
                m.ingest(*index, item);
            }
            for f in found.drain(..) {
                m.add_finding(GroupInput::of(&f), || finding_row(&f, &meta));
            }
            if new_costs {
                m.apply_costs(&costs);
            }
            if refresh {
                m.windows.clone_from(&stats.windows);
                m.tracked_objects = stats.tracked_objects;
                m.evictions = stats.evictions;
            }
            m.recording = self.recorder.as_ref().map(|r| (r.path(), r.bytes()));
            if let Some(e) = &report.record_error {
                if m.notice.is_none() {
                    m.notice = Some(format!("recording stopped: {e}"));
                }
            }
        }
        found.clear();
        self.analysis.finish(&mut found);
        self.analysis.stats(&mut stats);
        if let Some(rec) = self.recorder.take() {
            let reason = match &end_state {
                SourceState::Failed(_) => "source failed",
                _ => "live UI closed",
            };
            if let Err(e) = rec.finish(reason) {
                report.record_error = Some(e);
            }
        }
        let mut m = lock(&self.model);
        for f in found.drain(..) {
            m.add_finding(GroupInput::of(&f), || finding_row(&f, &meta));
        }
        m.windows = std::mem::take(&mut stats.windows);
        m.tracked_objects = stats.tracked_objects;
        m.evictions = stats.evictions;
        m.recording = None;
        m.state = match (&report.record_error, end_state) {
            (Some(e), SourceState::Ended(how)) => {
                SourceState::Ended(format!("{how}; recording failed: {e}"))
            }
            (_, s) => s,
        };
        m.version += 1;
        report
    }
}
