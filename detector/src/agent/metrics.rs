//! What the agent exposes to Prometheus: every value lives in an atomic
//! that the pipeline thread stores into between pulls (never per event:
//! the analyzer already counts events and losses per probe, and its
//! counters are copied here when a pull ends), and a scrape reads them
//! through a `prometheus-client` collector, on the HTTP thread. Labels are
//! probe, attach mode, kernel target, rule, severity, window: never a pid,
//! folio or entry.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use detector_common::{ProbeId, MAX_PROBES};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeLabelSet, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::analyzer::{Analyzer, RuleId, Severity, WindowKind, WindowStats};
use crate::bpfstats::ProbeCost;
use crate::flight::FlightStats;
use crate::plan::{AttachMode, PlanEntry};

/// The OpenMetrics text format's content type.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format (0.0.4), for clients that do not ask for
/// OpenMetrics (and `promtool check metrics`).
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the window histograms' buckets, in nanoseconds: 1, 2.5
/// and 5 per decade from 100 ns (a lookup window on a fast machine) to 10 s
/// (an entry that stays free for a while), `+Inf` after.
pub const WINDOW_BUCKETS_NS: [u64; 25] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

const PROBES: usize = MAX_PROBES as usize;
const SEVERITIES: [Severity; 3] = [Severity::Violation, Severity::NearMiss, Severity::Info];

/// How long the pipeline loop may go without finishing a pull before
/// `/healthz` calls it stalled. A pull waits at most `--drain-every`; even
/// a full 64 MiB ring is analyzed in well under this.
pub const STALL_AFTER_MS: u64 = 30_000;

/// One planned probe and its labels.
#[derive(Debug)]
struct ProbeRow {
    id: ProbeId,
    mode: AttachMode,
    target: String,
}

#[derive(Debug, Default)]
struct WindowSeries {
    /// Cumulative counts, one per bound of [`WINDOW_BUCKETS_NS`].
    le: [AtomicU64; WINDOW_BUCKETS_NS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

/// Problems the agent counts and goes on after.
#[derive(Debug, Default)]
pub struct Problems {
    /// Writes of the findings output that failed.
    pub findings_write_errors: AtomicU64,
    /// Lines (findings, stats, lost) not written because the output was
    /// broken at the time.
    pub findings_lines_dropped: AtomicU64,
    /// Writes, rotations or restarts of the recording that failed.
    pub recording_errors: AtomicU64,
    /// Reopens of the findings output and the recording (SIGHUP, or after
    /// an error), by output: findings, recording.
    pub findings_reopens: AtomicU64,
    pub recording_reopens: AtomicU64,
}

/// Everything a scrape shows. Shared (`Arc`) between the pipeline thread,
/// which stores, and the HTTP thread, which reads.
#[derive(Debug)]
pub struct AgentMetrics {
    version: &'static str,
    kernel_release: String,
    started: Instant,
    start_unix: f64,
    plan: Vec<ProbeRow>,
    stats_on: bool,
    /// Per probe id.
    events: [AtomicU64; PROBES],
    lost: [AtomicU64; PROBES],
    bpf_runs: [AtomicU64; PROBES],
    bpf_ns: [AtomicU64; PROBES],
    /// Per rule (`RuleId::ALL` order) and severity (`SEVERITIES` order).
    findings: Vec<[AtomicU64; 3]>,
    coverage: Vec<(RuleId, bool)>,
    ready_rules: Vec<RuleId>,
    items: AtomicU64,
    tracked: AtomicU64,
    peak_tracked: AtomicU64,
    evictions: AtomicU64,
    open_windows: AtomicU64,
    state_bytes: AtomicU64,
    unknown_probe: AtomicU64,
    malformed: AtomicU64,
    windows: [WindowSeries; 4],
    recording_bytes: AtomicU64,
    /// JSON lines written, by type (finding, stats, lost, snapshot).
    pub lines: [AtomicU64; 4],
    /// The flight recorder's counters; shown only when it runs.
    flight_on: AtomicBool,
    flight: FlightSeries,
    pub problems: Problems,
    running: AtomicBool,
    /// Milliseconds after `started` when the loop last finished a pull.
    last_loop_ms: AtomicU64,
}

/// The JSON line types, in [`AgentMetrics::lines`] order.
pub const LINE_TYPES: [&str; 4] = ["finding", "stats", "lost", "snapshot"];

/// The flight recorder's statistics, copied once per pull.
#[derive(Debug, Default)]
struct FlightSeries {
    written: AtomicU64,
    merged: AtomicU64,
    /// By reason, in [`SUPPRESS_REASONS`] order.
    suppressed: [AtomicU64; 3],
    errors: AtomicU64,
    buffered_bytes: AtomicU64,
    buffered_ns: AtomicU64,
    on_disk_count: AtomicU64,
    on_disk_bytes: AtomicU64,
}

/// Why a snapshot was not written, in [`FlightSeries::suppressed`] order.
pub const SUPPRESS_REASONS: [&str; 3] = ["budget", "rate", "busy"];

/// What `/healthz` and `/readyz` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// The process and its pipeline loop are running.
    pub alive: bool,
    /// Alive, and the probes the ready rules need are attached.
    pub ready: bool,
    /// Why not, in one sentence (empty when both hold).
    pub reason: String,
}

/// Which text format a scrape gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Prometheus,
}

impl Format {
    /// OpenMetrics unless the client's `Accept` asks for plain text only
    /// (Prometheus asks for OpenMetrics first; `promtool` reads the older
    /// text format).
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if !a.contains("application/openmetrics-text") && a.contains("text/plain") => {
                Format::Prometheus
            }
            _ => Format::OpenMetrics,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
        }
    }
}

fn rule_index(r: RuleId) -> usize {
    RuleId::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

fn severity_index(s: Severity) -> usize {
    SEVERITIES.iter().position(|x| *x == s).unwrap_or(0)
}

impl AgentMetrics {
    /// The series of a capture whose probes are `plan`, on kernel
    /// `kernel_release`; `/readyz` waits for `ready_rules`; per-probe costs
    /// are shown when `stats_on`.
    pub fn new(
        kernel_release: &str,
        plan: &[PlanEntry],
        ready_rules: &[RuleId],
        stats_on: bool,
    ) -> AgentMetrics {
        let rows: Vec<ProbeRow> = plan
            .iter()
            .filter_map(|p| {
                Some(ProbeRow {
                    id: ProbeId::from_name(&p.probe)?,
                    mode: p.mode,
                    target: p.target.clone(),
                })
            })
            .collect();
        let attached = |probe: ProbeId| {
            rows.iter()
                .any(|r| r.id == probe && r.mode != AttachMode::Unavailable)
        };
        let coverage = RuleId::ALL
            .iter()
            .map(|r| (*r, r.covered_by(attached)))
            .collect();
        AgentMetrics {
            version: env!("CARGO_PKG_VERSION"),
            kernel_release: kernel_release.to_string(),
            started: Instant::now(),
            start_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            plan: rows,
            stats_on,
            events: std::array::from_fn(|_| AtomicU64::new(0)),
            lost: std::array::from_fn(|_| AtomicU64::new(0)),
            bpf_runs: std::array::from_fn(|_| AtomicU64::new(0)),
            bpf_ns: std::array::from_fn(|_| AtomicU64::new(0)),
            findings: RuleId::ALL.iter().map(|_| Default::default()).collect(),
            coverage,
            ready_rules: ready_rules.to_vec(),
            items: AtomicU64::new(0),
            tracked: AtomicU64::new(0),
            peak_tracked: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            open_windows: AtomicU64::new(0),
            state_bytes: AtomicU64::new(0),
            unknown_probe: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            windows: Default::default(),
            recording_bytes: AtomicU64::new(0),
            lines: Default::default(),
            flight_on: AtomicBool::new(false),
            flight: FlightSeries::default(),
            problems: Problems::default(),
            running: AtomicBool::new(false),
            last_loop_ms: AtomicU64::new(0),
        }
    }

    /// Whether `rule` can report its top severity with the plan's probes.
    pub fn covers(&self, rule: RuleId) -> bool {
        self.coverage.iter().any(|(r, c)| *r == rule && *c)
    }

    /// A finding was reported (findings are rare next to events: one
    /// atomic add each).
    pub fn finding(&self, rule: RuleId, severity: Severity) {
        self.findings[rule_index(rule)][severity_index(severity)].fetch_add(1, Relaxed);
    }

    pub fn findings_of(&self, rule: RuleId, severity: Severity) -> u64 {
        self.findings[rule_index(rule)][severity_index(severity)].load(Relaxed)
    }

    /// The analyzer's counters and table sizes, copied after a pull.
    pub fn publish_analyzer(&self, a: &Analyzer) {
        let st = a.stats();
        for (slot, v) in self.events.iter().zip(&st.events_per_probe) {
            slot.store(*v, Relaxed);
        }
        for (slot, v) in self.lost.iter().zip(&st.lost_per_probe) {
            slot.store(*v, Relaxed);
        }
        self.items.store(st.items, Relaxed);
        self.unknown_probe.store(st.unknown_probe, Relaxed);
        self.tracked.store(a.tracked_objects() as u64, Relaxed);
        self.peak_tracked
            .store(a.peak_tracked_objects() as u64, Relaxed);
        self.evictions.store(a.evictions(), Relaxed);
        self.open_windows.store(a.open_windows() as u64, Relaxed);
    }

    /// The analyzer's state size: it walks the tables' capacities, cheap
    /// but not per pull.
    pub fn publish_state_bytes(&self, a: &Analyzer) {
        self.state_bytes.store(a.state_bytes() as u64, Relaxed);
    }

    /// The window histograms, rebinned into [`WINDOW_BUCKETS_NS`]
    /// (`scratch` holds one count per bound).
    pub fn publish_windows(&self, w: &WindowStats, scratch: &mut [u64; WINDOW_BUCKETS_NS.len()]) {
        for (kind, series) in WindowKind::ALL.iter().zip(&self.windows) {
            let n = w.cumulative(*kind, &WINDOW_BUCKETS_NS, scratch);
            for (slot, v) in series.le.iter().zip(scratch.iter()) {
                slot.store(*v, Relaxed);
            }
            series.count.store(n, Relaxed);
            series.sum_ns.store(w.sum_ns(*kind), Relaxed);
        }
    }

    /// Per-probe BPF run time since statistics were turned on.
    pub fn publish_costs(&self, rows: &[ProbeCost]) {
        for r in rows {
            let t = r.total();
            let i = r.probe as usize;
            if i < PROBES {
                self.bpf_runs[i].store(t.run_cnt, Relaxed);
                self.bpf_ns[i].store(t.run_time_ns, Relaxed);
            }
        }
    }

    /// Ring-buffer records that did not parse, so far.
    pub fn set_malformed(&self, n: u64) {
        self.malformed.store(n, Relaxed);
    }

    /// The flight recorder's statistics (once per pull); the first call
    /// makes its series appear.
    pub fn publish_flight(&self, st: &FlightStats) {
        let f = &self.flight;
        f.written.store(st.written, Relaxed);
        f.merged.store(st.merged, Relaxed);
        for (slot, n) in
            f.suppressed
                .iter()
                .zip([st.suppressed_budget, st.suppressed_rate, st.suppressed_busy])
        {
            slot.store(n, Relaxed);
        }
        f.errors.store(st.errors, Relaxed);
        f.buffered_bytes.store(st.buffered_bytes, Relaxed);
        f.buffered_ns.store(st.buffered_span_ns, Relaxed);
        f.on_disk_count.store(st.on_disk_count, Relaxed);
        f.on_disk_bytes.store(st.on_disk_bytes, Relaxed);
        self.flight_on.store(true, Relaxed);
    }

    pub fn set_recording_bytes(&self, n: u64) {
        self.recording_bytes.store(n, Relaxed);
    }

    /// Events that could not be used: ring-buffer records of the wrong
    /// size and events of unknown probes.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.load(Relaxed) + self.unknown_probe.load(Relaxed)
    }

    /// Lost events over every probe.
    pub fn lost_total(&self) -> u64 {
        self.lost.iter().map(|l| l.load(Relaxed)).sum()
    }

    /// The pipeline started (`true`) or ended.
    pub fn set_running(&self, running: bool) {
        self.loop_alive();
        self.running.store(running, Relaxed);
    }

    /// The pipeline loop finished a pull.
    pub fn loop_alive(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_loop_ms.store(ms, Relaxed);
    }

    fn loop_age_ms(&self) -> u64 {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(self.last_loop_ms.load(Relaxed))
    }

    /// `/healthz` and `/readyz`.
    pub fn health(&self) -> Health {
        let running = self.running.load(Relaxed);
        let age = self.loop_age_ms();
        let alive = running && age < STALL_AFTER_MS;
        let uncovered: Vec<String> = self
            .ready_rules
            .iter()
            .filter(|r| !self.covers(**r))
            .map(|r| {
                let attached = |p: ProbeId| {
                    self.plan
                        .iter()
                        .any(|x| x.id == p && x.mode != AttachMode::Unavailable)
                };
                format!("{r} (needs {})", r.missing_probes(attached).join(", "))
            })
            .collect();
        let reason = if !running {
            "the pipeline is not running".to_string()
        } else if !alive {
            format!(
                "the pipeline loop has not finished a pull for {:.1}s",
                age as f64 / 1000.0
            )
        } else if !uncovered.is_empty() {
            format!(
                "rules this agent is configured to rely on cannot fire, their probes are not \
                 attached: {}",
                uncovered.join("; ")
            )
        } else {
            String::new()
        };
        Health {
            alive,
            ready: alive && uncovered.is_empty(),
            reason,
        }
    }

    /// The exposition text in `format`.
    pub fn render(self: &Arc<Self>, format: Format) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(Arc::clone(self))));
        let mut out = String::with_capacity(16 << 10);
        let r = match format {
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            }
        };
        if r.is_err() {
            // Writing into a String fails only on a label the encoder
            // refuses; say so rather than serve half a document.
            out = String::from("# the metrics could not be encoded\n");
        }
        out
    }
}

/// The collector a scrape runs.
#[derive(Debug)]
struct Scrape(Arc<AgentMetrics>);

type R = Result<(), std::fmt::Error>;

fn gauge_vec<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl IntoIterator<Item = (L, f64)>,
) -> R {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter_vec<L: EncodeLabelSet, V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl IntoIterator<Item = (L, V)>,
) -> R {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: f64,
) -> R {
    let m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: u64,
) -> R {
    let m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> R {
        let m = &*self.0;
        let e = &mut enc;
        let version = m.version;
        gauge_vec(
            e,
            "detector_build_info",
            "The detector's version and the kernel it runs on (always 1).",
            None,
            [(
                [
                    ("version", version),
                    ("kernel_release", m.kernel_release.as_str()),
                ],
                1.0,
            )],
        )?;

        let probe_labels = |r: &'_ ProbeRow| {
            [
                ("probe", r.id.name().to_string()),
                ("mode", r.mode.as_str().to_string()),
                ("target", r.target.clone()),
            ]
        };
        gauge_vec(
            e,
            "detector_probe_attached",
            "Whether the probe is attached (1) or unavailable on this kernel (0).",
            None,
            m.plan.iter().map(|r| {
                let up = if r.mode == AttachMode::Unavailable {
                    0.0
                } else {
                    1.0
                };
                (probe_labels(r), up)
            }),
        )?;
        let attached: Vec<&ProbeRow> = m
            .plan
            .iter()
            .filter(|r| r.mode != AttachMode::Unavailable)
            .collect();
        counter_vec(
            e,
            "detector_probe_events",
            "Events the probe delivered.",
            None,
            attached
                .iter()
                .map(|r| (probe_labels(r), m.events[r.id as usize].load(Relaxed))),
        )?;
        counter_vec(
            e,
            "detector_probe_lost_events",
            "Events of the probe the kernel dropped (ring buffer full, or a run it skipped).",
            None,
            attached
                .iter()
                .map(|r| (probe_labels(r), m.lost[r.id as usize].load(Relaxed))),
        )?;
        if m.stats_on {
            let cost_labels = |r: &&ProbeRow| [("probe", r.id.name()), ("mode", r.mode.as_str())];
            counter_vec(
                e,
                "detector_probe_bpf_runs",
                "Runs of the probe's BPF programs since statistics were turned on (--stats).",
                None,
                attached
                    .iter()
                    .map(|r| (cost_labels(r), m.bpf_runs[r.id as usize].load(Relaxed))),
            )?;
            counter_vec(
                e,
                "detector_probe_bpf_run",
                "Time the probe's BPF programs ran since statistics were turned on (--stats).",
                Some(&Unit::Seconds),
                attached.iter().map(|r| {
                    let ns = m.bpf_ns[r.id as usize].load(Relaxed);
                    (cost_labels(r), ns as f64 / 1e9)
                }),
            )?;
            gauge_vec(
                e,
                "detector_probe_bpf_seconds_per_run",
                "Average BPF run time per program run since statistics were turned on \
                 (x 1e9: the ns/event of `detector doctor --stats`).",
                None,
                attached.iter().map(|r| {
                    let i = r.id as usize;
                    let runs = m.bpf_runs[i].load(Relaxed);
                    let ns = m.bpf_ns[i].load(Relaxed);
                    let avg = if runs == 0 {
                        0.0
                    } else {
                        ns as f64 / runs as f64 / 1e9
                    };
                    (cost_labels(r), avg)
                }),
            )?;
        }
        counter(
            e,
            "detector_events",
            "Events analyzed, every probe.",
            None,
            m.events.iter().map(|v| v.load(Relaxed)).sum(),
        )?;
        counter(
            e,
            "detector_lost_events",
            "Events lost, every probe.",
            None,
            m.lost_total(),
        )?;
        counter_vec(
            e,
            "detector_malformed_events",
            "Events that could not be used: ring-buffer records that did not parse, events of a \
             probe this build does not know.",
            None,
            [
                ([("reason", "wrong_size")], m.malformed.load(Relaxed)),
                ([("reason", "unknown_probe")], m.unknown_probe.load(Relaxed)),
            ],
        )?;

        counter_vec(
            e,
            "detector_findings",
            "Findings reported, by rule and severity.",
            None,
            RuleId::ALL.iter().flat_map(|r| {
                SEVERITIES.iter().map(move |s| {
                    (
                        [("rule", r.name()), ("severity", s.name())],
                        m.findings_of(*r, *s),
                    )
                })
            }),
        )?;
        gauge_vec(
            e,
            "detector_rule_coverage",
            "Whether the rule can report its most severe finding with the probes attached on \
             this kernel (1) or not (0).",
            None,
            m.coverage
                .iter()
                .map(|(r, c)| ([("rule", r.name())], if *c { 1.0 } else { 0.0 })),
        )?;

        gauge(
            e,
            "detector_analyzer_tracked_objects",
            "Objects the analyzer tracks now (entries, folios, pins, tasks, side records).",
            None,
            m.tracked.load(Relaxed) as f64,
        )?;
        gauge(
            e,
            "detector_analyzer_tracked_objects_peak",
            "Most objects the analyzer tracked at once.",
            None,
            m.peak_tracked.load(Relaxed) as f64,
        )?;
        counter(
            e,
            "detector_analyzer_evictions",
            "Objects evicted to stay within max_tracked.",
            None,
            m.evictions.load(Relaxed),
        )?;
        gauge(
            e,
            "detector_analyzer_open_windows",
            "move_pages (UFFDIO_MOVE) windows open now.",
            None,
            m.open_windows.load(Relaxed) as f64,
        )?;
        gauge(
            e,
            "detector_analyzer_state",
            "Memory the analyzer's tables hold.",
            Some(&Unit::Bytes),
            m.state_bytes.load(Relaxed) as f64,
        )?;
        {
            let mut h = e.encode_descriptor(
                "detector_window",
                "How long each race window the analyzer measures stayed open.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            let mut buckets = [(0.0, 0u64); WINDOW_BUCKETS_NS.len() + 1];
            for (kind, s) in WindowKind::ALL.iter().zip(&m.windows) {
                let count = s.count.load(Relaxed);
                let mut below = 0;
                for (i, bound) in WINDOW_BUCKETS_NS.iter().enumerate() {
                    let cum = s.le[i].load(Relaxed).max(below);
                    buckets[i] = (*bound as f64 / 1e9, cum - below);
                    below = cum;
                }
                buckets[WINDOW_BUCKETS_NS.len()] = (f64::INFINITY, count.saturating_sub(below));
                let labels = [("window", kind.key())];
                h.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    s.sum_ns.load(Relaxed) as f64 / 1e9,
                    count.max(below),
                    &buckets,
                    None,
                )?;
            }
        }

        let p = &m.problems;
        counter(
            e,
            "detector_findings_write_errors",
            "Writes of the findings output that failed (it is reopened after a backoff or on SIGHUP).",
            None,
            p.findings_write_errors.load(Relaxed),
        )?;
        counter(
            e,
            "detector_findings_lines_dropped",
            "JSON lines not written because the findings output was broken.",
            None,
            p.findings_lines_dropped.load(Relaxed),
        )?;
        counter(
            e,
            "detector_recording_errors",
            "Failed writes, rotations or restarts of the recording (--record).",
            None,
            p.recording_errors.load(Relaxed),
        )?;
        counter_vec(
            e,
            "detector_reopens",
            "Outputs reopened (SIGHUP, or after an error).",
            None,
            [
                ([("output", "findings")], p.findings_reopens.load(Relaxed)),
                ([("output", "recording")], p.recording_reopens.load(Relaxed)),
            ],
        )?;
        gauge(
            e,
            "detector_recording",
            "Bytes the recording wrote (every segment, this run).",
            Some(&Unit::Bytes),
            m.recording_bytes.load(Relaxed) as f64,
        )?;
        counter_vec(
            e,
            "detector_jsonl_lines",
            "JSON lines written to the findings output, by type.",
            None,
            LINE_TYPES
                .iter()
                .zip(&m.lines)
                .map(|(t, n)| ([("type", *t)], n.load(Relaxed))),
        )?;

        if m.flight_on.load(Relaxed) {
            let f = &m.flight;
            counter(
                e,
                "detector_snapshots_written",
                "Flight-recorder snapshots closed on disk.",
                None,
                f.written.load(Relaxed),
            )?;
            counter(
                e,
                "detector_snapshots_merged",
                "Triggers that repeated a finding already in a snapshot (open, or closed within \
                 the cool-down).",
                None,
                f.merged.load(Relaxed),
            )?;
            counter_vec(
                e,
                "detector_snapshots_suppressed",
                "Snapshots not written, by reason: the directory's budget, the daily rate, too \
                 many open.",
                None,
                SUPPRESS_REASONS
                    .iter()
                    .zip(&f.suppressed)
                    .map(|(r, n)| ([("reason", *r)], n.load(Relaxed))),
            )?;
            counter(
                e,
                "detector_snapshot_write_errors",
                "Snapshots that failed to write (their files removed).",
                None,
                f.errors.load(Relaxed),
            )?;
            gauge(
                e,
                "detector_flight_buffered",
                "Bytes the flight recorder's in-memory buffer holds.",
                Some(&Unit::Bytes),
                f.buffered_bytes.load(Relaxed) as f64,
            )?;
            gauge(
                e,
                "detector_flight_buffered_span",
                "Stream time between the oldest and the newest item the buffer holds.",
                Some(&Unit::Seconds),
                f.buffered_ns.load(Relaxed) as f64 / 1e9,
            )?;
            gauge(
                e,
                "detector_snapshots_on_disk",
                "Snapshots of this recorder in the directory (as last counted).",
                None,
                f.on_disk_count.load(Relaxed) as f64,
            )?;
            gauge(
                e,
                "detector_snapshots_on_disk_size",
                "Bytes those snapshots (traces and manifests) take.",
                Some(&Unit::Bytes),
                f.on_disk_bytes.load(Relaxed) as f64,
            )?;
        }

        let health = m.health();
        gauge(
            e,
            "detector_pipeline_up",
            "Whether the pipeline loop is running and finished a pull recently.",
            None,
            if health.alive { 1.0 } else { 0.0 },
        )?;
        gauge(
            e,
            "detector_ready",
            "What /readyz answers: 1 when the probes the ready rules need are attached and the \
             pipeline is up.",
            None,
            if health.ready { 1.0 } else { 0.0 },
        )?;
        counter(
            e,
            "detector_stream_items",
            "Items the pipeline carried (events and lost-event records).",
            None,
            m.items.load(Relaxed),
        )?;

        // The conventional process series (client_golang's names).
        if let Some(rss) = crate::usage::current_rss() {
            gauge(
                e,
                "process_resident_memory",
                "Resident memory size.",
                Some(&Unit::Bytes),
                rss as f64,
            )?;
        }
        if let Some(fds) = crate::usage::open_fds() {
            gauge(
                e,
                "process_open_fds",
                "Open file descriptors.",
                None,
                fds as f64,
            )?;
        }
        if let Some(u) = crate::usage::self_usage() {
            let m2 = e.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            ConstCounter::new((u.user + u.sys).as_secs_f64()).encode(m2)?;
        }
        gauge(
            e,
            "process_start_time",
            "Start time of the process since the Unix epoch.",
            Some(&Unit::Seconds),
            m.start_unix,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyzer::Config;
    use crate::event::StreamItem;
    use detector_common::{Event, EventKind};

    fn plan() -> Vec<PlanEntry> {
        let e = |p: ProbeId, target: &str, mode| PlanEntry {
            probe: p.name().into(),
            target: target.into(),
            mode,
            entry: true,
            exit: false,
            note: String::new(),
            filter: String::new(),
        };
        vec![
            e(
                ProbeId::SwapcachePrepare,
                "swapcache_prepare",
                AttachMode::Fentry,
            ),
            e(
                ProbeId::SwapcacheClear,
                "swapcache_clear",
                AttachMode::Kprobe,
            ),
            e(ProbeId::SwapRead, "swap_read_folio", AttachMode::Fentry),
            e(ProbeId::MovePages, "", AttachMode::Unavailable),
        ]
    }

    /// An analyzer that saw prepare/clear pairs (one window each) and a
    /// loss on `swapcache_clear`.
    fn analyzer() -> Analyzer {
        let mut a = Analyzer::new(Config::default());
        let mut out = Vec::new();
        let mut ev = |i: u64, probe: ProbeId, kind: EventKind, ts: u64| {
            let e = Event {
                probe: probe as u16,
                kind: kind as u8,
                tid: 5,
                pid: 5,
                ts_ns: ts,
                entry: detector_common::swp_entry(1, 0x10 + i),
                valid: detector_common::V_ENTRY | detector_common::V_RET,
                ..Event::default()
            };
            a.process(i, &StreamItem::Event(e), &mut out);
        };
        for i in 0..3u64 {
            ev(
                i,
                ProbeId::SwapcachePrepare,
                EventKind::Exit,
                1_000_000 * (i + 1),
            );
            ev(
                i,
                ProbeId::SwapcacheClear,
                EventKind::Enter,
                1_000_000 * (i + 1) + 3_000,
            );
        }
        a.process(
            9,
            &StreamItem::Lost {
                ts_ns: 1,
                probe: ProbeId::SwapcacheClear as u16,
                total: 4,
            },
            &mut out,
        );
        a
    }

    fn metrics(ready: &[RuleId]) -> Arc<AgentMetrics> {
        let m = Arc::new(AgentMetrics::new("6.12.0-test", &plan(), ready, true));
        let a = analyzer();
        m.publish_analyzer(&a);
        m.publish_windows(a.windows(), &mut [0; WINDOW_BUCKETS_NS.len()]);
        m.finding(RuleId::EexistStorm, Severity::Info);
        m
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn the_exposition_has_every_series_with_low_cardinality_labels() {
        let m = metrics(RuleId::ALL);
        let text = m.render(Format::OpenMetrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        let s = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}\n{text}"));
        assert_eq!(
            s("detector_build_info{version=\"0.1.0\",kernel_release=\"6.12.0-test\"}"),
            1.0
        );
        assert_eq!(
            s("detector_probe_events_total{probe=\"swapcache_prepare\",mode=\"fentry\",target=\"swapcache_prepare\"}"),
            3.0
        );
        assert_eq!(
            s("detector_probe_lost_events_total{probe=\"swapcache_clear\",mode=\"kprobe\",target=\"swapcache_clear\"}"),
            4.0
        );
        // An unavailable probe: said so, and no event series.
        assert_eq!(
            s("detector_probe_attached{probe=\"move_pages\",mode=\"unavailable\",target=\"\"}"),
            0.0
        );
        assert!(!text.contains("detector_probe_events_total{probe=\"move_pages\""));
        assert_eq!(
            s("detector_findings_total{rule=\"eexist_storm\",severity=\"info\"}"),
            1.0
        );
        assert_eq!(
            s("detector_findings_total{rule=\"swap_entry_aba\",severity=\"violation\"}"),
            0.0
        );
        // Coverage follows the plan: the storm rule has its prepare, the
        // move rules lack move_pages.
        assert_eq!(s("detector_rule_coverage{rule=\"eexist_storm\"}"), 1.0);
        assert_eq!(
            s("detector_rule_coverage{rule=\"swapin_without_cache_pin\"}"),
            1.0
        );
        assert_eq!(s("detector_rule_coverage{rule=\"swap_entry_aba\"}"), 0.0);
        // The prepare->clear window: three samples of 3 us, cumulative
        // buckets, +Inf equal to the count, the sum in seconds.
        let w = |le: &str| {
            s(&format!(
                "detector_window_seconds_bucket{{le=\"{le}\",window=\"prepare_to_clear\"}}"
            ))
        };
        assert_eq!(w("0.0000025"), 0.0);
        assert_eq!(w("0.000005"), 3.0);
        assert_eq!(w("10.0"), 3.0);
        assert_eq!(w("+Inf"), 3.0);
        assert_eq!(
            s("detector_window_seconds_count{window=\"prepare_to_clear\"}"),
            3.0
        );
        assert!(
            (s("detector_window_seconds_sum{window=\"prepare_to_clear\"}") - 9e-6).abs() < 1e-12
        );
        assert_eq!(
            s("detector_window_seconds_count{window=\"grab_to_put\"}"),
            0.0
        );
        assert_eq!(s("detector_lost_events_total"), 4.0);
        assert!(s("process_resident_memory_bytes") > 0.0);
        // With --stats, per-probe costs (zero until the first reading).
        assert_eq!(
            s("detector_probe_bpf_runs_total{probe=\"swap_read\",mode=\"fentry\"}"),
            0.0
        );

        // No label may carry a pid, a folio, an entry or a path.
        let allowed = [
            "version",
            "kernel_release",
            "probe",
            "mode",
            "target",
            "rule",
            "severity",
            "window",
            "le",
            "reason",
            "output",
            "type",
        ];
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some(labels) = l.split_once('{').map(|(_, r)| r.split('}').next().unwrap()) {
                for kv in labels.split("\",") {
                    let key = kv.split('=').next().unwrap();
                    assert!(allowed.contains(&key), "label {key} in {l}");
                }
            }
        }
    }

    #[test]
    fn the_prometheus_text_format_is_served_to_who_asks_for_it() {
        let m = metrics(RuleId::ALL);
        let text = m.render(Format::Prometheus);
        assert!(!text.contains("# EOF"));
        assert!(
            text.contains("# TYPE detector_probe_events_total counter"),
            "{text}"
        );
        assert_eq!(Format::negotiate(None), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
    }

    #[test]
    fn health_and_readiness() {
        let m = metrics(&[RuleId::EexistStorm]);
        let h = m.health();
        assert!(!h.alive && !h.ready);
        assert_eq!(h.reason, "the pipeline is not running");
        m.set_running(true);
        assert_eq!(
            m.health(),
            Health {
                alive: true,
                ready: true,
                reason: String::new()
            }
        );
        // A ready rule whose probes are missing: alive, not ready, and the
        // reason names the rule and the probe.
        let m = metrics(&[RuleId::EexistStorm, RuleId::StaleFolioMove]);
        m.set_running(true);
        let h = m.health();
        assert!(h.alive && !h.ready);
        assert!(
            h.reason.contains("stale_folio_move (needs move_pages, "),
            "{}",
            h.reason
        );
        assert!(m
            .render(Format::OpenMetrics)
            .contains("\ndetector_ready 0.0\n"));
        m.set_running(false);
        assert!(!m.health().alive);
    }
}
