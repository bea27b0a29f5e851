//! Distributions of the windows the analyzer tracks: how long each race
//! window stayed open, so a user sees how close the system came.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The kinds of window measured, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// A lookup made inside `move_pages` until that call returned.
    MoveLookupToClose,
    /// A swap entry returned to the allocator until it was allocated again.
    EntryFreeToRealloc,
    /// `swapcache_prepare` success until `swapcache_clear` of the same entry.
    PrepareToClear,
    /// A GUP pin taken until it was dropped.
    GrabToPut,
}

impl WindowKind {
    pub const ALL: [WindowKind; 4] = [
        WindowKind::MoveLookupToClose,
        WindowKind::EntryFreeToRealloc,
        WindowKind::PrepareToClear,
        WindowKind::GrabToPut,
    ];

    /// The stable identifier, identical to the serialized form (metric
    /// labels, JSON).
    pub fn key(self) -> &'static str {
        match self {
            WindowKind::MoveLookupToClose => "move_lookup_to_close",
            WindowKind::EntryFreeToRealloc => "entry_free_to_realloc",
            WindowKind::PrepareToClear => "prepare_to_clear",
            WindowKind::GrabToPut => "grab_to_put",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WindowKind::MoveLookupToClose => "move_pages lookup->close",
            WindowKind::EntryFreeToRealloc => "swap entry free->realloc",
            WindowKind::PrepareToClear => "swapcache prepare->clear",
            WindowKind::GrabToPut => "gup pin grab->put",
        }
    }
}

/// Summary of one histogram, in nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSummary {
    pub name: String,
    pub count: u64,
    pub min_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// One histogram per [`WindowKind`], and the exact sum of each one's
/// samples (a histogram keeps values to three significant digits).
pub struct WindowStats {
    hists: [Option<Histogram<u64>>; 4],
    sums_ns: [u64; 4],
}

/// Three significant digits, auto-resizing: memory grows with the largest
/// value seen, not with the number of samples. `Histogram::new` only fails
/// for more than 5 significant digits, so `None` never happens in practice;
/// it keeps the constructor total without a panic path.
fn new_hist() -> Option<Histogram<u64>> {
    let mut h = Histogram::<u64>::new(3).ok()?;
    h.auto(true);
    Some(h)
}

impl Default for WindowStats {
    fn default() -> Self {
        WindowStats {
            hists: [new_hist(), new_hist(), new_hist(), new_hist()],
            sums_ns: [0; 4],
        }
    }
}

impl std::fmt::Debug for WindowStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.summaries()).finish()
    }
}

impl WindowStats {
    pub fn record(&mut self, kind: WindowKind, start_ns: u64, end_ns: u64) {
        let v = end_ns.saturating_sub(start_ns);
        if let Some(h) = &mut self.hists[kind as usize] {
            // Auto-resizing histograms only fail on u64 overflow of the counts.
            let _ = h.record(v);
        }
        let sum = &mut self.sums_ns[kind as usize];
        *sum = sum.saturating_add(v);
    }

    /// The sum of every sample of `kind`, in nanoseconds.
    pub fn sum_ns(&self, kind: WindowKind) -> u64 {
        self.sums_ns[kind as usize]
    }

    /// Samples of `kind`, and for each of `bounds_ns` (ascending) how many
    /// samples are at most that bound, into `out` (one slot per bound):
    /// the cumulative buckets of a Prometheus histogram. A sample counts
    /// under a bound when the value the histogram kept for it (three
    /// significant digits) is at most the bound.
    pub fn cumulative(&self, kind: WindowKind, bounds_ns: &[u64], out: &mut [u64]) -> u64 {
        out.iter_mut().for_each(|c| *c = 0);
        let Some(h) = self.histogram(kind) else {
            return 0;
        };
        for v in h.iter_recorded() {
            let value = h.highest_equivalent(v.value_iterated_to());
            let first = bounds_ns.partition_point(|b| *b < value);
            for c in out.iter_mut().skip(first) {
                *c += v.count_at_value();
            }
        }
        h.len()
    }

    pub fn histogram(&self, kind: WindowKind) -> Option<&Histogram<u64>> {
        self.hists[kind as usize].as_ref()
    }

    pub fn summary(&self, kind: WindowKind) -> WindowSummary {
        let mut s = WindowSummary {
            name: kind.name().to_string(),
            count: 0,
            min_ns: 0,
            p50_ns: 0,
            p90_ns: 0,
            p99_ns: 0,
            max_ns: 0,
        };
        if let Some(h) = self.histogram(kind).filter(|h| !h.is_empty()) {
            s.count = h.len();
            s.min_ns = h.min();
            s.p50_ns = h.value_at_quantile(0.50);
            s.p90_ns = h.value_at_quantile(0.90);
            s.p99_ns = h.value_at_quantile(0.99);
            s.max_ns = h.max();
        }
        s
    }

    /// Every window kind's summary, in [`WindowKind::ALL`] order.
    pub fn summaries(&self) -> impl Iterator<Item = WindowSummary> + '_ {
        WindowKind::ALL.iter().map(move |k| self.summary(*k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reports_percentiles() {
        let mut w = WindowStats::default();
        for i in 1..=100u64 {
            w.record(WindowKind::PrepareToClear, 1000, 1000 + i * 1000);
        }
        let s = w.summary(WindowKind::PrepareToClear);
        assert_eq!(s.count, 100);
        assert_eq!(s.min_ns, 1000);
        assert!(s.p50_ns >= 49_000 && s.p50_ns <= 51_000, "{s:?}");
        assert!(s.max_ns >= 99_900, "{s:?}");
        assert_eq!(w.summary(WindowKind::GrabToPut).count, 0);
        assert_eq!(w.sum_ns(WindowKind::PrepareToClear), 5050 * 1000);
    }

    #[test]
    fn keys_are_the_serialized_names() {
        for k in WindowKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.key());
        }
    }

    #[test]
    fn cumulative_buckets_count_samples_up_to_each_bound() {
        let mut w = WindowStats::default();
        for v in [500, 900, 5_000, 2_000_000, 3_000_000_000] {
            w.record(WindowKind::GrabToPut, 0, v);
        }
        let bounds = [1_000, 10_000, 1_000_000, 1_000_000_000];
        let mut out = [0; 4];
        let n = w.cumulative(WindowKind::GrabToPut, &bounds, &mut out);
        assert_eq!(n, 5);
        assert_eq!(out, [2, 3, 3, 4]);
        // A value on a bound counts under it.
        w.record(WindowKind::PrepareToClear, 0, 1_000);
        w.cumulative(WindowKind::PrepareToClear, &bounds, &mut out);
        assert_eq!(out, [1, 1, 1, 1]);
        assert_eq!(
            w.cumulative(WindowKind::MoveLookupToClose, &bounds, &mut out),
            0
        );
        assert_eq!(out, [0; 4]);
    }
}
