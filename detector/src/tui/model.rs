//! What the UI shows, kept up to date by the worker from the stream and the
//! analyzer. Everything here is bounded; the render path only reads it.

use std::time::Instant;

use detector_common::MAX_PROBES;

use crate::bpfstats::{CostUpdate, ProbeCost};
use crate::event::StreamItem;
use crate::groups::{GroupInput, Groups};
use crate::plan::AttachMode;
use crate::present::row::FindingRow;
use crate::stream::SourceInfo;

use super::objects::ObjectIndex;

/// Seconds of per-probe rate history (sparklines).
pub const RATE_SECS: usize = 120;
pub const MAX_OBJECTS: usize = 8192;
pub const HISTORY_PER_OBJECT: usize = 32;

/// Per-second event counts of one probe over the last [`RATE_SECS`] seconds
/// of stream time, zeroed lazily as time moves on.
#[derive(Clone, Debug)]
pub struct RateRing {
    counts: [u32; RATE_SECS],
    /// Newest second written (stream seconds since the first event).
    last: u64,
}

impl Default for RateRing {
    fn default() -> Self {
        RateRing {
            counts: [0; RATE_SECS],
            last: 0,
        }
    }
}

impl RateRing {
    pub fn add(&mut self, sec: u64) {
        if sec > self.last {
            let gap = (sec - self.last).min(RATE_SECS as u64);
            for s in (sec - gap + 1)..=sec {
                self.counts[(s % RATE_SECS as u64) as usize] = 0;
            }
            self.last = sec;
        } else if self.last - sec >= RATE_SECS as u64 {
            // Too late to count in any visible second.
            return;
        }
        let slot = &mut self.counts[(sec % RATE_SECS as u64) as usize];
        *slot = slot.saturating_add(1);
    }

    /// Count in stream second `sec` (0 when outside the kept window).
    pub fn at(&self, sec: u64) -> u32 {
        if sec > self.last || self.last - sec >= RATE_SECS as u64 {
            0
        } else {
            self.counts[(sec % RATE_SECS as u64) as usize]
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ProbeStats {
    pub events: u64,
    /// Latest running total of events the kernel could not deliver.
    pub lost: u64,
    pub rate: RateRing,
    /// BPF run time per event from the kernel's statistics (live only;
    /// `None` without a reading).
    pub ns_per_event: Option<f64>,
}

/// One tracked window's distribution (nanoseconds).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowRow {
    pub name: String,
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    /// Counts per power-of-two bucket of the duration (bucket i holds
    /// durations in [2^i, 2^(i+1)) ns), for the histogram bars.
    pub log2_buckets: Vec<u64>,
}

/// Where the source stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceState {
    Running,
    /// Source finished; the note says how (a replay's end state).
    Ended(String),
    Failed(String),
}

#[derive(Clone, Debug)]
pub struct Model {
    pub info: SourceInfo,
    pub probes: Vec<ProbeStats>,
    pub items: u64,
    pub events: u64,
    pub lost: u64,
    pub first_ts: Option<u64>,
    pub last_ts: u64,
    pub started: Instant,
    /// Findings grouped by (rule, severity, task, cause): counts, times and
    /// the first few of each as formatted rows. Bounded whatever the rate.
    pub findings: Groups<FindingRow>,
    /// The analyzer configuration and where it came from.
    pub analysis_note: String,
    pub objects: ObjectIndex,
    pub windows: Vec<WindowRow>,
    /// Objects the analyzer tracks right now, and how many it had to drop.
    pub tracked_objects: u64,
    pub evictions: u64,
    pub state: SourceState,
    /// Bytes written by `--record`, when recording.
    pub recording: Option<(String, u64)>,
    /// A problem the user must see that does not stop the display (the
    /// recording failed).
    pub notice: Option<String>,
    /// Why the live capture has no per-probe run time.
    pub cost_note: Option<String>,
    /// Bumped on every change, so the UI redraws only when something moved.
    pub version: u64,
}

impl Model {
    pub fn new(info: SourceInfo) -> Self {
        Self::with_capacity(info, MAX_OBJECTS, HISTORY_PER_OBJECT)
    }

    pub fn with_capacity(info: SourceInfo, objects: usize, per_object: usize) -> Self {
        Model {
            info,
            probes: vec![ProbeStats::default(); MAX_PROBES as usize],
            items: 0,
            events: 0,
            lost: 0,
            first_ts: None,
            last_ts: 0,
            started: Instant::now(),
            findings: Groups::default(),
            analysis_note: String::new(),
            objects: ObjectIndex::new(objects, per_object),
            windows: Vec::new(),
            tracked_objects: 0,
            evictions: 0,
            state: SourceState::Running,
            recording: None,
            notice: None,
            cost_note: None,
            version: 0,
        }
    }

    /// Stream second of `ts` (seconds since the first item).
    pub fn sec_of(&self, ts: u64) -> u64 {
        ts.saturating_sub(self.first_ts.unwrap_or(ts)) / 1_000_000_000
    }

    /// Current stream second (that of the newest item or clock tick).
    pub fn now_sec(&self) -> u64 {
        self.sec_of(self.last_ts)
    }

    /// Stream time covered so far.
    pub fn stream_ns(&self) -> u64 {
        self.last_ts
            .saturating_sub(self.first_ts.unwrap_or(self.last_ts))
    }

    /// Applies one stream item; `index` is its position in the stream.
    /// Allocation-free except when an object is first seen.
    pub fn ingest(&mut self, index: u64, item: &StreamItem) {
        self.items += 1;
        match item {
            StreamItem::Event(ev) => {
                self.observe_ts(ev.ts_ns);
                self.events += 1;
                let sec = self.sec_of(ev.ts_ns);
                if let Some(p) = self.probes.get_mut(usize::from(ev.probe)) {
                    p.events += 1;
                    p.rate.add(sec);
                }
                self.objects.ingest(index, ev);
            }
            StreamItem::Lost {
                ts_ns,
                probe,
                total,
            } => {
                self.observe_ts(*ts_ns);
                if let Some(p) = self.probes.get_mut(usize::from(*probe)) {
                    // Totals only grow; an older reading arriving late must
                    // not make the number go down.
                    if *total > p.lost {
                        self.lost += total - p.lost;
                        p.lost = *total;
                    }
                }
            }
        }
        self.version += 1;
    }

    fn observe_ts(&mut self, ts: u64) {
        if self.first_ts.is_none() {
            self.first_ts = Some(ts);
        }
        if ts > self.last_ts {
            self.last_ts = ts;
        }
    }

    /// Moves the stream clock forward without an event (a quiet live
    /// system still has time passing, and its rates must drop to zero).
    pub fn tick(&mut self, now_ts: u64) {
        if self.first_ts.is_some() && now_ts > self.last_ts {
            let before = self.now_sec();
            self.last_ts = now_ts;
            if self.now_sec() != before {
                self.version += 1;
            }
        }
    }

    /// Counts a finding into its group; `row` formats it, and is called
    /// only when the finding is kept as one of the group's examples.
    pub fn add_finding(&mut self, g: GroupInput<'_>, row: impl FnOnce() -> FindingRow) {
        self.findings.add(g, row);
        self.version += 1;
    }

    /// Takes a run-time reading from the live capture. Each probe shows its
    /// cost over the last interval; one that did not run in it keeps its
    /// average since the start, since a quiet second says nothing new about
    /// what an event costs.
    pub fn apply_costs(&mut self, u: &CostUpdate) {
        for p in &mut self.probes {
            p.ns_per_event = None;
        }
        for (i, total) in u.total.iter().enumerate() {
            let recent = u
                .recent
                .get(i)
                .filter(|r| r.probe == total.probe)
                .and_then(ProbeCost::ns_per_event);
            if let Some(p) = self.probes.get_mut(total.probe as usize) {
                p.ns_per_event = recent.or_else(|| total.ns_per_event());
            }
        }
        if self.cost_note != u.unavailable {
            self.cost_note.clone_from(&u.unavailable);
        }
        self.version += 1;
    }

    /// Last complete second's count of a probe (the "events/s" figure).
    pub fn rate(&self, probe: usize) -> u32 {
        let now = self.now_sec();
        match self.probes.get(probe) {
            Some(p) if now > 0 => p.rate.at(now - 1),
            Some(p) => p.rate.at(0),
            None => 0,
        }
    }

    /// Events per second over the last complete second, all probes.
    pub fn total_rate(&self) -> u64 {
        (0..self.probes.len())
            .map(|p| u64::from(self.rate(p)))
            .sum()
    }

    /// Fills `out` with a probe's per-second counts, oldest first, ending
    /// with the current (partial) second.
    pub fn series(&self, probe: usize, out: &mut [u64]) {
        let now = self.now_sec();
        let n = out.len() as u64;
        for (i, slot) in out.iter_mut().enumerate() {
            let back = n - 1 - i as u64;
            *slot = match (self.probes.get(probe), now.checked_sub(back)) {
                (Some(p), Some(sec)) => u64::from(p.rate.at(sec)),
                _ => 0,
            };
        }
    }

    /// Probes that attached in a degraded mode or not at all.
    pub fn degraded(&self) -> (usize, usize) {
        let tp = self
            .info
            .plan
            .iter()
            .filter(|p| p.mode == AttachMode::Tracepoint)
            .count();
        let missing = self
            .info
            .plan
            .iter()
            .filter(|p| p.mode == AttachMode::Unavailable)
            .count();
        (tp, missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use detector_common::{Event, ProbeId};

    fn at(ts: u64, probe: ProbeId) -> StreamItem {
        StreamItem::Event(Event {
            ts_ns: ts,
            probe: probe as u16,
            ..Default::default()
        })
    }

    #[test]
    fn rates_follow_stream_time() {
        let mut m = Model::new(SourceInfo::default());
        let base = 5_000_000_000;
        for i in 0..10 {
            m.ingest(i, &at(base + i * 1000, ProbeId::SwapCacheLookup));
        }
        for i in 0..3 {
            m.ingest(
                10 + i,
                &at(base + 1_500_000_000 + i, ProbeId::SwapCacheLookup),
            );
        }
        assert_eq!(m.now_sec(), 1);
        assert_eq!(m.rate(ProbeId::SwapCacheLookup as usize), 10);
        let mut s = [0u64; 4];
        m.series(ProbeId::SwapCacheLookup as usize, &mut s);
        assert_eq!(s, [0, 0, 10, 3]);
        // A quiet second passes: the rate drops.
        m.tick(base + 3_100_000_000);
        assert_eq!(m.rate(ProbeId::SwapCacheLookup as usize), 0);
    }

    #[test]
    fn lost_totals_never_go_down() {
        let mut m = Model::new(SourceInfo::default());
        let p = ProbeId::GupGrab as u16;
        m.ingest(
            0,
            &StreamItem::Lost {
                ts_ns: 1,
                probe: p,
                total: 5,
            },
        );
        m.ingest(
            1,
            &StreamItem::Lost {
                ts_ns: 2,
                probe: p,
                total: 3,
            },
        );
        m.ingest(
            2,
            &StreamItem::Lost {
                ts_ns: 3,
                probe: p,
                total: 9,
            },
        );
        assert_eq!(m.probes[p as usize].lost, 9);
        assert_eq!(m.lost, 9);
    }

    #[test]
    fn costs_show_the_last_interval_or_the_average_when_quiet() {
        use crate::bpfstats::{ProgCost, ProgKind, RunStats};
        let row = |probe, run_cnt, run_time_ns| ProbeCost {
            probe,
            mode: AttachMode::Tracepoint,
            entry: Some(ProgCost {
                kind: ProgKind::Tracepoint,
                stats: RunStats {
                    run_cnt,
                    run_time_ns,
                },
            }),
            exit: None,
        };
        let mut m = Model::new(SourceInfo::default());
        let v0 = m.version;
        m.apply_costs(&CostUpdate {
            total: vec![
                row(ProbeId::TpPageFree, 1000, 500_000),
                row(ProbeId::TpLruInsertion, 10, 4_000),
            ],
            recent: vec![
                row(ProbeId::TpPageFree, 100, 30_000),
                row(ProbeId::TpLruInsertion, 0, 0),
            ],
            unavailable: None,
        });
        assert!(m.version > v0);
        assert_eq!(
            m.probes[ProbeId::TpPageFree as usize].ns_per_event,
            Some(300.0)
        );
        assert_eq!(
            m.probes[ProbeId::TpLruInsertion as usize].ns_per_event,
            Some(400.0)
        );
        assert_eq!(m.probes[ProbeId::GupGrab as usize].ns_per_event, None);
        // A failed reading clears the numbers and says why.
        m.apply_costs(&CostUpdate {
            unavailable: Some("no BPF_ENABLE_STATS".into()),
            ..CostUpdate::default()
        });
        assert_eq!(m.probes[ProbeId::TpPageFree as usize].ns_per_event, None);
        assert_eq!(m.cost_note.as_deref(), Some("no BPF_ENABLE_STATS"));
    }

    #[test]
    fn ring_zeroes_skipped_seconds() {
        let mut r = RateRing::default();
        r.add(0);
        r.add(0);
        r.add(RATE_SECS as u64 + 2);
        assert_eq!(r.at(0), 0);
        assert_eq!(r.at(RATE_SECS as u64 + 2), 1);
        assert_eq!(r.at(RATE_SECS as u64 + 1), 0);
    }
}
