//! The analyzer as the worker runs it: findings turned into the rows the
//! UI keeps (formatted once, on arrival), window histograms into bars.

use std::fmt::Write as _;

use crate::analyzer::{self, Analyzer, ConfidenceLevel, Finding, StateSnapshot, WindowKind};
use crate::event::StreamItem;

use super::model::{EvidenceRow, FindingRow, Severity, WindowRow};
use super::worker::{Analysis, AnalysisStats, EventMeta};
use crate::cli::analysis::describe_config;

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

pub fn severity(s: analyzer::Severity) -> Severity {
    match s {
        analyzer::Severity::Violation => Severity::Violation,
        analyzer::Severity::NearMiss => Severity::NearMiss,
        analyzer::Severity::Info => Severity::Info,
    }
}

/// Formats a finding for the list and the drill-down.
pub fn finding_row(f: &Finding, meta: &EventMeta) -> FindingRow {
    let mut objects = String::new();
    for e in &f.objects.entries {
        sep(&mut objects);
        let _ = write!(objects, "entry {e}");
    }
    for a in &f.objects.folios {
        sep(&mut objects);
        let _ = write!(objects, "folio {a}");
    }
    let confidence = match f.confidence.level {
        ConfidenceLevel::Full => String::from("full"),
        ConfidenceLevel::Reduced => {
            format!(
                "reduced ({} events lost in the window)",
                f.confidence.lost_events
            )
        }
    };
    let evidence = f
        .evidence
        .iter()
        .map(|e| {
            let m = meta.get(e.index);
            EvidenceRow {
                index: e.index,
                ts_ns: e.ts_ns,
                probe: if e.kind.is_empty() {
                    e.probe.clone()
                } else {
                    format!("{} {}", e.probe, e.kind)
                },
                pid: m.map_or(0, |(_, pid)| pid),
                tid: e.tid,
                cpu: m.map(|(cpu, _)| cpu),
                comm: e.comm.clone(),
                note: e.note.clone(),
                state: state_text(&e.state, e.ret_display()),
            }
        })
        .collect::<Vec<_>>();
    FindingRow {
        seq: f.id,
        cause: f.cause.clone(),
        rule: f.rule.name().to_owned(),
        severity: severity(f.severity),
        objects,
        explanation: f.explanation.clone(),
        ts_ns: evidence.iter().map(|e| e.ts_ns).max().unwrap_or(0),
        confidence,
        evidence,
    }
}

fn sep(s: &mut String) {
    if !s.is_empty() {
        s.push_str(", ");
    }
}

/// `folio F entry E swap S [flags] ref R map M pin P ret V`, fields left
/// out when the step did not see them; `ret` as [`Evidence::ret_display`]
/// gives it.
///
/// [`Evidence::ret_display`]: crate::analyzer::Evidence::ret_display
pub fn state_text(s: &StateSnapshot, ret: Option<String>) -> String {
    let mut t = String::with_capacity(64);
    if let Some(f) = &s.folio {
        let _ = write!(t, "folio {f} ");
    }
    if let Some(e) = &s.entry {
        let _ = write!(t, "entry {e} ");
    }
    if let Some(w) = &s.folio_swap {
        let _ = write!(t, "swap {w} ");
    }
    if let Some(fl) = s.flags.as_deref().filter(|f| !f.is_empty()) {
        let _ = write!(t, "[{fl}] ");
    }
    if let Some(r) = s.refcount {
        let _ = write!(t, "ref {r} ");
    }
    if let Some(m) = s.mapcount {
        let _ = write!(t, "map {m} ");
    }
    if let Some(p) = s.pincount.filter(|&p| p != 0) {
        let _ = write!(t, "pin {p} ");
    }
    if let Some(r) = ret {
        let _ = write!(t, "ret {r} ");
    }
    t.truncate(t.trim_end().len());
    t
}
