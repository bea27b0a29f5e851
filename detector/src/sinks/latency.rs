//! Kernel timestamp to analyzed (`record --analyze --latency`): for every
//! event, and for the events that completed a finding, how long after the
//! kernel stamped it the analyzer had processed it.

use std::io;

use crate::analyzer::Finding;
use crate::event::{monotonic_ns, StreamItem};
use crate::stream::{Ctx, Sink};

#[derive(Debug, thiserror::Error)]
#[error("creating the latency histogram failed: {0}")]
pub struct LatencyError(#[from] hdrhistogram::CreationError);

type Histogram = hdrhistogram::Histogram<u64>;

/// Wraps the sink that takes the findings; when on, measures before it
/// sees them.
pub struct Latency<S> {
    pub inner: S,
    /// Events, findings; `None` when off.
    hist: Option<(Histogram, Histogram)>,
    /// Timestamps of the current pull's events and findings.
    event_ts: Vec<u64>,
    finding_ts: Vec<u64>,
}

impl<S: Sink> Latency<S> {
    pub fn on(inner: S) -> Result<Self, LatencyError> {
        // Microseconds, three significant digits, up to an hour.
        let h = || Histogram::new_with_bounds(1, 3_600_000_000, 3);
        Ok(Latency {
            inner,
            hist: Some((h()?, h()?)),
            event_ts: Vec::with_capacity(8192),
            finding_ts: Vec::new(),
        })
    }

    /// Passes everything on, measuring nothing.
    pub fn off(inner: S) -> Self {
        Latency {
            inner,
            hist: None,
            event_ts: Vec::new(),
            finding_ts: Vec::new(),
        }
    }

    /// `latency events: n=... p50=... p99=... max=...`, and the same for
    /// findings; nothing when off.
    pub fn lines(&self) -> Vec<String> {
        let Some((events, findings)) = &self.hist else {
            return Vec::new();
        };
        [("events", events), ("findings", findings)]
            .into_iter()
            .map(|(what, h)| {
                if h.is_empty() {
                    format!("latency {what}: none")
                } else {
                    format!(
                        "latency {what}: n={} p50={:.2}ms p99={:.2}ms max={:.2}ms (kernel timestamp to analyzed)",
                        h.len(),
                        h.value_at_quantile(0.5) as f64 / 1000.0,
                        h.value_at_quantile(0.99) as f64 / 1000.0,
                        h.max() as f64 / 1000.0
                    )
                }
            })
            .collect()
    }
}

impl<S: Sink> Sink for Latency<S> {
    fn item(&mut self, index: u64, item: &StreamItem, found: &mut Vec<Finding>) -> io::Result<()> {
        if self.hist.is_none() {
            return self.inner.item(index, item, found);
        }
        if let StreamItem::Event(e) = item {
            self.event_ts.push(e.ts_ns);
        }
        for f in found.iter() {
            if let Some(last) = f.evidence.iter().map(|e| e.ts_ns).max() {
                self.finding_ts.push(last);
            }
        }
        self.inner.item(index, item, found)
    }

    fn pulled(&mut self, ctx: &mut Ctx<'_>) -> io::Result<()> {
        // One clock read per pull: every event of it became analyzed (and
        // its findings available) by now.
        if let Some((events, findings)) = self.hist.as_mut() {
            let now = monotonic_ns();
            for ts in self.event_ts.drain(..) {
                events.saturating_record(now.saturating_sub(ts) / 1000);
            }
            for ts in self.finding_ts.drain(..) {
                findings.saturating_record(now.saturating_sub(ts) / 1000);
            }
        }
        self.inner.pulled(ctx)
    }

    fn idle(&mut self, ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.inner.idle(ctx)
    }

    fn record_failed(&mut self, e: &crate::trace::TraceError) -> io::Result<()> {
        self.inner.record_failed(e)
    }

    fn before_finish(&mut self, analyzer: &crate::analyzer::Analyzer) {
        self.inner.before_finish(analyzer);
    }

    fn finish(&mut self, found: &mut Vec<Finding>, ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.inner.finish(found, ctx)
    }
}
