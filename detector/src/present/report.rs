//! The report of an analysis (`detector replay`): one document, printed
//! for people or serialized as JSON.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::describe_config;
use super::finding::{group_line, render_finding, render_group};
use super::units::ns_whole;
use crate::analyzer::{Analyzer, Config, Finding, Severity, WindowSummary};
use crate::groups::{Group, Groups, Overflow, SeverityCounts};
use crate::trace::{EndState, TraceHeader};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeCount {
    pub probe: String,
    pub events: u64,
    pub lost: u64,
}

/// Version of the JSON document `detector replay --format json` prints.
/// 1 (no `report_version` key) listed every finding under `findings`; 2
/// lists groups, and every finding only with `--all`.
pub const REPORT_VERSION: u32 = 2;

/// Everything `detector replay` says about a trace, in one document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    #[serde(default = "v1")]
    pub report_version: u32,
    pub source: String,
    pub kernel_release: String,
    pub origin: String,
    /// `role=symbol(mode)` for every planned probe.
    pub plan: Vec<String>,
    pub first_event_ns: u64,
    pub last_event_ns: u64,
    pub items: u64,
    pub events: u64,
    pub lost: u64,
    pub probes: Vec<ProbeCount>,
    /// How the file ended (`complete`, or where reading stopped and why).
    pub end: String,
    pub complete: bool,
    /// The analyzer configuration used, and where it came from.
    #[serde(default)]
    pub config: Config,
    #[serde(default)]
    pub config_source: String,
    /// Every finding, counted by severity.
    #[serde(default)]
    pub by_severity: SeverityCounts,
    /// One group per (rule, severity, task, cause), in the order their
    /// first finding arrived, with complete examples.
    #[serde(default)]
    pub groups: Vec<Group<Finding>>,
    /// Findings of kinds first seen after the group limit was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_overflow: Option<Overflow<Finding>>,
    /// Every finding, in order: only with `--all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<Vec<Finding>>,
    pub windows: Vec<WindowSummary>,
    pub tracked_objects: u64,
    pub evictions: u64,
    pub state_bytes: u64,
}

fn v1() -> u32 {
    1
}

/// What an analysis found, for [`Report::build`].
pub struct Analysis {
    pub config: Config,
    pub config_source: String,
    pub groups: Groups<Finding>,
    /// Every finding, when they were kept.
    pub all: Option<Vec<Finding>>,
}

impl Report {
    pub fn build(
        source: &str,
        header: &TraceHeader,
        end: Option<&EndState>,
        span: (u64, u64),
        analyzer: &Analyzer,
        analysis: Analysis,
    ) -> Report {
        let st = analyzer.stats();
        let plan = header
            .plan
            .iter()
            .map(|p| {
                format!(
                    "{}={} ({})",
                    p.probe,
                    if p.target.is_empty() { "-" } else { &p.target },
                    p.mode.as_str()
                )
            })
            .collect();
        let (groups, groups_overflow, by_severity) = analysis.groups.into_parts();
        Report {
            report_version: REPORT_VERSION,
            source: source.to_string(),
            kernel_release: header.kernel_release.clone(),
            origin: header.origin.clone(),
            plan,
            first_event_ns: span.0,
            last_event_ns: span.1,
            items: st.items,
            events: st.events,
            lost: st.lost,
            probes: st
                .per_probe()
                .map(|(p, events, lost)| ProbeCount {
                    probe: p.name().to_string(),
                    events,
                    lost,
                })
                .collect(),
            end: end
                .map(ToString::to_string)
                .unwrap_or_else(|| "unknown".into()),
            complete: end.is_some_and(EndState::is_complete),
            config: analysis.config,
            config_source: analysis.config_source,
            by_severity,
            groups,
            groups_overflow,
            findings: analysis.all,
            windows: analyzer.windows().summaries().collect(),
            tracked_objects: analyzer.tracked_objects() as u64,
            evictions: analyzer.evictions(),
            state_bytes: analyzer.state_bytes() as u64,
        }
    }

    /// Findings at or above a severity.
    pub fn count(&self, at_least: Severity) -> u64 {
        self.by_severity.at_least(at_least)
    }

    /// The human-readable report.
    pub fn render(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "trace      {}", self.source)?;
        writeln!(
            w,
            "kernel     {}   origin {}",
            or_dash(&self.kernel_release),
            or_dash(&self.origin)
        )?;
        let dur = self.last_event_ns.saturating_sub(self.first_event_ns);
        writeln!(
            w,
            "events     {} in {}   lost {}",
            self.events,
            ns_whole(dur),
            self.lost
        )?;
        writeln!(w, "file       {}", self.end)?;
        if !self.plan.is_empty() {
            writeln!(w, "plan       {} probe(s)", self.plan.len())?;
        }
        writeln!(
            w,
            "config     {}: {}",
            self.config_source,
            describe_config(&self.config)
        )?;
        writeln!(w)?;
        writeln!(w, "{:<24} {:>12} {:>10}", "probe", "events", "lost")?;
        for p in &self.probes {
            writeln!(w, "{:<24} {:>12} {:>10}", p.probe, p.events, p.lost)?;
        }
        writeln!(w)?;
        let t = &self.by_severity;
        let overflow = self.groups_overflow.as_ref().map_or(0, |o| o.span.count);
        write!(
            w,
            "findings   {} violation(s), {} near miss(es), {} info",
            t.violation, t.near_miss, t.info
        )?;
        if t.total() > 0 {
            write!(w, " in {} group(s)", self.groups.len())?;
            if overflow > 0 {
                write!(w, " and {overflow} beyond the group limit")?;
            }
        }
        writeln!(w)?;
        // Violations first: they are what a reader acts on.
        let mut order: Vec<&Group<Finding>> = self.groups.iter().collect();
        order.sort_by_key(|g| (std::cmp::Reverse(g.severity), g.span.first_id));
        if let Some(all) = &self.findings {
            for g in order {
                writeln!(w, "  {}", group_line(g, self.first_event_ns))?;
            }
            if let Some(o) = &self.groups_overflow {
                writeln!(
                    w,
                    "  {} x findings of kinds beyond the group limit: #{}..#{}",
                    o.span.count, o.span.first_id, o.span.last_id
                )?;
            }
            for f in all {
                render_finding(w, f)?;
            }
            return self.render_tail(w);
        }
        let mut hidden = false;
        for g in order {
            hidden |= render_group(w, g, self.first_event_ns)?;
        }
        if let Some(o) = &self.groups_overflow {
            writeln!(w)?;
            writeln!(
                w,
                "== {} finding(s) of kinds beyond the group limit: {} violation(s), {} near miss(es), \
                 {} info; #{}..#{}",
                o.span.count,
                o.by_severity.violation,
                o.by_severity.near_miss,
                o.by_severity.info,
                o.span.first_id,
                o.span.last_id
            )?;
            for f in &o.examples {
                render_finding(w, f)?;
            }
            hidden |= o.span.count > o.examples.len() as u64;
        }
        if hidden && self.findings.is_none() {
            writeln!(
                w,
                "\n(only the first {} findings of each group are shown; `--all` lists every \
                 finding)",
                crate::groups::MAX_EXAMPLES
            )?;
        }
        self.render_tail(w)
    }

    /// Window histograms and the analyzer's state, after the findings.
    fn render_tail(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w)?;
        writeln!(
            w,
            "{:<28} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "window", "count", "min", "p50", "p90", "p99", "max"
        )?;
        for s in &self.windows {
            writeln!(
                w,
                "{:<28} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
                s.name,
                s.count,
                ns_whole(s.min_ns),
                ns_whole(s.p50_ns),
                ns_whole(s.p90_ns),
                ns_whole(s.p99_ns),
                ns_whole(s.max_ns)
            )?;
        }
        writeln!(
            w,
            "\nanalyzer   {} object(s) tracked at end, {} evicted, {} bytes of state",
            self.tracked_objects, self.evictions, self.state_bytes
        )?;
        Ok(())
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}
