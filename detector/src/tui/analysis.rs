//! The analyzer as the worker runs it: findings turned into the rows the
//! UI keeps (formatted once, on arrival), window histograms into bars.

use crate::analyzer::{self, Analyzer, Finding, WindowKind};
use crate::event::StreamItem;
use crate::present::describe_config;

use super::model::WindowRow;
use super::worker::{Analysis, AnalysisStats};

pub struct AnalyzerAnalysis {
    analyzer: Analyzer,
    /// Where the configuration came from, for the overview and `--plain`.
    note: String,
}

impl AnalyzerAnalysis {
    pub fn new(cfg: analyzer::Config) -> Self {
        AnalyzerAnalysis {
            analyzer: Analyzer::new(cfg),
            note: String::new(),
        }
    }

    /// See [`Analyzer::set_attached`].
    pub fn set_attached(&mut self, probes: Vec<detector_common::ProbeId>) {
        self.analyzer.set_attached(probes);
    }

    /// As [`new`](Self::new), saying where `cfg` came from.
    pub fn with_note(cfg: analyzer::Config, note: String) -> Self {
        AnalyzerAnalysis {
            analyzer: Analyzer::new(cfg),
            note,
        }
    }
}

impl Analysis for AnalyzerAnalysis {
    #[inline]
    fn process(&mut self, index: u64, item: &StreamItem, out: &mut Vec<Finding>) {
        self.analyzer.process(index, item, out);
    }

    fn finish(&mut self, out: &mut Vec<Finding>) {
        self.analyzer.finish(out);
    }

    fn describe(&self) -> String {
        let c = describe_config(self.analyzer.config());
        if self.note.is_empty() {
            c
        } else {
            format!("{}: {c}", self.note)
        }
    }

    fn stats(&self, out: &mut AnalysisStats) {
        out.tracked_objects = self.analyzer.tracked_objects() as u64;
        out.evictions = self.analyzer.evictions();
        let w = self.analyzer.windows();
        out.windows
            .resize_with(WindowKind::ALL.len(), WindowRow::default);
        for (row, kind) in out.windows.iter_mut().zip(WindowKind::ALL) {
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
}
