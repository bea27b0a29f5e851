//! The agent's end of the pipeline: findings and lost-event lines to the
//! JSON-lines output, counters to the metrics, the heartbeat, and the
//! requests SIGHUP makes.
//!
//! Per item it looks at the findings the analyzer completed (usually
//! none) and at lost-event records (rare): no counting per event, no lock.
//! Everything else happens once per pull: the analyzer's own counters are
//! copied into the metrics, the window histograms once a second. The
//! flight recorder, when snapshots are on, is one more field: it sees
//! every item (it buffers them), and once per pull its clock is advanced,
//! its notices logged, a `snapshot` line written for each snapshot it
//! closed, and its statistics copied into the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use detector_common::{ProbeId, MAX_PROBES};

use super::jsonl::{JsonlOutput, LostLine, ProblemCounts, SnapshotLine, StatsLine};
use super::metrics::{AgentMetrics, WINDOW_BUCKETS_NS};
use super::recording::Requests;
use crate::analyzer::{Analyzer, Finding};
use crate::bpfstats::CostUpdate;
use crate::event::StreamItem;
use crate::flight::{FlightRecorder, NoticeLevel};
use crate::groups::SeverityCounts;
use crate::present::report::ProbeCount;
use crate::stream::{Ctx, Sink};

use std::sync::atomic::Ordering::Relaxed;

/// How often the window histograms and the analyzer's state size are
/// copied into the metrics (each walks a table), and the recording asked
/// to flush.
const SLOW_PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// A SIGHUP check: true once per signal.
pub type ReopenCheck = Box<dyn FnMut() -> bool + Send>;

pub struct AgentSink {
    metrics: Arc<AgentMetrics>,
    out: JsonlOutput,
    reopen: ReopenCheck,
    recording: Option<Requests>,
    heartbeat: Duration,
    next_heartbeat: Instant,
    next_slow: Instant,
    started: Instant,
    findings: SeverityCounts,
    /// Per probe, the lost total the last `lost` line said.
    lost_said: [u64; MAX_PROBES as usize],
    costs: CostUpdate,
    scratch: [u64; WINDOW_BUCKETS_NS.len()],
    /// Lost events not yet in a log message, and when the last one went
    /// out: a sustained loss logs one line per [`LOST_LOG_EVERY`].
    lost_unlogged: u64,
    next_lost_log: Instant,
    flight: Option<FlightRecorder>,
}

/// Least time between two log messages about lost events.
const LOST_LOG_EVERY: Duration = Duration::from_secs(10);

impl AgentSink {
    /// Findings to `out`, counters to `metrics`; `reopen` says when SIGHUP
    /// arrived, `recording` passes it (and flushes) to the recorder.
    pub fn new(
        metrics: Arc<AgentMetrics>,
        out: JsonlOutput,
        heartbeat: Duration,
        reopen: ReopenCheck,
        recording: Option<Requests>,
    ) -> AgentSink {
        let now = Instant::now();
        AgentSink {
            metrics,
            out,
            reopen,
            recording,
            heartbeat,
            next_heartbeat: now + heartbeat,
            next_slow: now,
            started: now,
            findings: SeverityCounts::default(),
            lost_said: [0; MAX_PROBES as usize],
            costs: CostUpdate::default(),
            scratch: [0; WINDOW_BUCKETS_NS.len()],
            lost_unlogged: 0,
            next_lost_log: now,
            flight: None,
        }
    }

    /// Snapshots: `recorder` sees every item and the findings.
    pub fn with_flight(mut self, recorder: FlightRecorder) -> AgentSink {
        self.metrics.publish_flight(recorder.stats());
        self.flight = Some(recorder);
        self
    }

    pub fn flight(&self) -> Option<&FlightRecorder> {
        self.flight.as_ref()
    }

    /// The recorder's notices to the log, its closed snapshots to the
    /// JSON lines, its statistics to the metrics.
    fn flight_report(&mut self) {
        let Some(fr) = self.flight.as_mut() else {
            return;
        };
        for n in fr.take_notices() {
            match n.level {
                NoticeLevel::Info => log::info!("{}", n.text),
                NoticeLevel::Warn => log::warn!("{}", n.text),
            }
        }
        for w in fr.take_written() {
            self.out.snapshot(&SnapshotLine {
                path: &w.trace,
                manifest: &w.manifest,
                finding_id: w.finding_id,
                rule: w.rule,
                severity: w.severity,
                state: w.state,
                trace_bytes: w.trace_bytes,
            });
        }
        self.metrics.publish_flight(fr.stats());
    }

    pub fn findings(&self) -> &SeverityCounts {
        &self.findings
    }

    fn found(&mut self, found: &[Finding]) {
        for f in found {
            self.metrics.finding(f.rule, f.severity);
            self.findings.add(f.severity);
            self.out.finding(f);
        }
    }

    fn lost(&mut self, ts_ns: u64, probe: u16, total: u64) {
        let Some(said) = self.lost_said.get_mut(probe as usize) else {
            return;
        };
        if total <= *said {
            return;
        }
        let new = total - *said;
        *said = total;
        let name = ProbeId::from_u16(probe).map_or("unknown", ProbeId::name);
        self.lost_unlogged += new;
        self.out.lost(&LostLine {
            probe: name,
            total,
            new,
            ts_ns,
        });
    }

    /// The heartbeat's content, from the analyzer's counters.
    pub fn stats_line(&self, a: Option<&Analyzer>, last: bool) -> StatsLine {
        let m = &self.metrics;
        let p = &m.problems;
        let (items, events, lost, probes) = match a {
            Some(a) => {
                let st = a.stats();
                let probes = st
                    .per_probe()
                    .map(|(p, events, lost)| ProbeCount {
                        probe: p.name().to_string(),
                        events,
                        lost,
                    })
                    .collect();
                (st.items, st.events, st.lost, probes)
            }
            None => (0, 0, 0, Vec::new()),
        };
        StatsLine {
            last,
            uptime_s: self.started.elapsed().as_secs_f64(),
            items,
            events,
            lost,
            probes,
            tracked_objects: a.map_or(0, |a| a.tracked_objects() as u64),
            peak_tracked_objects: a.map_or(0, |a| a.peak_tracked_objects() as u64),
            evictions: a.map_or(0, Analyzer::evictions),
            open_windows: a.map_or(0, |a| a.open_windows() as u64),
            rss_bytes: crate::usage::current_rss(),
            open_fds: crate::usage::open_fds(),
            findings: self.findings,
            findings_total: self.findings.total(),
            problems: ProblemCounts {
                findings_write_errors: p.findings_write_errors.load(Relaxed),
                findings_lines_dropped: p.findings_lines_dropped.load(Relaxed),
                recording_errors: p.recording_errors.load(Relaxed),
                malformed_events: m.malformed_total(),
            },
        }
    }

    /// Between pulls: counters to the metrics, SIGHUP, retries, the
    /// heartbeat, and the output flushed.
    fn tick(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        if let Some(fr) = self.flight.as_mut() {
            // A quiet stream's snapshot closes by the source's clock.
            if let Some(t) = ctx.source.clock_ns() {
                fr.tick_at(t);
            }
        }
        self.flight_report();
        let m = &self.metrics;
        m.loop_alive();
        if let Some(a) = ctx.analyzer {
            m.publish_analyzer(a);
        }
        m.set_malformed(ctx.source.malformed());
        m.set_recording_bytes(ctx.recording.map_or(0, |(_, b)| b));
        if ctx.source.take_costs(&mut self.costs) {
            match &self.costs.unavailable {
                None => m.publish_costs(&self.costs.total),
                Some(why) => log::warn!("per-probe BPF run time unavailable: {why}"),
            }
        }
        if now >= self.next_slow {
            self.next_slow = now + SLOW_PUBLISH_EVERY;
            if let Some(a) = ctx.analyzer {
                m.publish_windows(a.windows(), &mut self.scratch);
                m.publish_state_bytes(a);
            }
            if let Some(r) = &self.recording {
                r.flush();
            }
        }
        if (self.reopen)() {
            log::info!("SIGHUP: reopening the findings output and the recording");
            self.out.reopen();
            if let Some(r) = &self.recording {
                r.reopen();
            }
        }
        self.out.retry_if_due(now);
        if self.lost_unlogged > 0 && now >= self.next_lost_log {
            log::warn!(
                "{} event(s) lost ({} in all): the ring buffer filled or the kernel skipped probe \
                 runs; a larger ring_size or a pid/cgroup filter reduces ring-buffer loss",
                self.lost_unlogged,
                m.lost_total()
            );
            self.lost_unlogged = 0;
            self.next_lost_log = now + LOST_LOG_EVERY;
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.heartbeat;
            let line = self.stats_line(ctx.analyzer, false);
            self.out.stats(&line);
        }
        self.out.flush();
    }
}

impl Sink for AgentSink {
    fn item(
        &mut self,
        index: u64,
        item: &StreamItem,
        found: &mut Vec<Finding>,
    ) -> std::io::Result<()> {
        if let Some(fr) = self.flight.as_mut() {
            fr.item(index, item, found);
        }
        if let StreamItem::Lost {
            ts_ns,
            probe,
            total,
        } = item
        {
            self.lost(*ts_ns, *probe, *total);
        }
        if !found.is_empty() {
            self.found(found);
        }
        Ok(())
    }

    fn pulled(&mut self, ctx: &mut Ctx<'_>) -> std::io::Result<()> {
        self.tick(ctx, Instant::now());
        Ok(())
    }

    fn idle(&mut self, ctx: &mut Ctx<'_>) -> std::io::Result<()> {
        self.tick(ctx, Instant::now());
        Ok(())
    }

    fn finish(&mut self, found: &mut Vec<Finding>, ctx: &mut Ctx<'_>) -> std::io::Result<()> {
        // What the analyzer's finish completed (windows still open).
        self.found(found);
        // A stop (SIGTERM) closes the snapshots still open, cut short.
        if let Some(fr) = self.flight.as_mut() {
            fr.finish(found);
        }
        self.flight_report();
        let m = &self.metrics;
        if let Some(a) = ctx.analyzer {
            m.publish_analyzer(a);
            m.publish_windows(a.windows(), &mut self.scratch);
            m.publish_state_bytes(a);
        }
        m.set_malformed(ctx.source.malformed());
        let line = self.stats_line(ctx.analyzer, true);
        self.out.stats(&line);
        self.out.flush();
        if let Some(e) = ctx.record_error {
            log::error!("the recording ended with an error: {e}");
        }
        Ok(())
    }
}
