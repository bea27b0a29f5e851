//! Human and JSON reports of an analysis.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::analyzer::{Analyzer, Finding, Severity, WindowSummary};
use crate::trace::{EndState, TraceHeader};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeCount {
    pub probe: String,
    pub events: u64,
    pub lost: u64,
}

/// Everything `detector replay` says about a trace, in one document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
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
    pub findings: Vec<Finding>,
    pub windows: Vec<WindowSummary>,
    pub tracked_objects: u64,
    pub evictions: u64,
    pub state_bytes: u64,
}

impl Report {
    pub fn build(
        source: &str,
        header: &TraceHeader,
        end: Option<&EndState>,
        span: (u64, u64),
        analyzer: &Analyzer,
        findings: Vec<Finding>,
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
        Report {
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
                .map(|e| e.to_string())
                .unwrap_or_else(|| "unknown".into()),
            complete: end.is_some_and(EndState::is_complete),
            findings,
            windows: analyzer.windows().summaries().collect(),
            tracked_objects: analyzer.tracked_objects() as u64,
            evictions: analyzer.evictions(),
            state_bytes: analyzer.state_bytes() as u64,
        }
    }

    pub fn count(&self, at_least: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity >= at_least)
            .count()
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
            fmt_ns(dur),
            self.lost
        )?;
        writeln!(w, "file       {}", self.end)?;
        if !self.plan.is_empty() {
            writeln!(w, "plan       {} probe(s)", self.plan.len())?;
        }
        writeln!(w)?;
        writeln!(w, "{:<24} {:>12} {:>10}", "probe", "events", "lost")?;
        for p in &self.probes {
            writeln!(w, "{:<24} {:>12} {:>10}", p.probe, p.events, p.lost)?;
        }
        writeln!(w)?;
        let v = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Violation)
            .count();
        let n = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::NearMiss)
            .count();
        let i = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Info)
            .count();
        writeln!(
            w,
            "findings   {v} violation(s), {n} near miss(es), {i} info"
        )?;
        for f in &self.findings {
            render_finding(w, f)?;
        }
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
                fmt_ns(s.min_ns),
                fmt_ns(s.p50_ns),
                fmt_ns(s.p90_ns),
                fmt_ns(s.p99_ns),
                fmt_ns(s.max_ns)
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

pub fn render_finding(w: &mut dyn Write, f: &Finding) -> io::Result<()> {
    writeln!(w)?;
    writeln!(w, "#{} [{}] {}", f.id, f.severity, f.rule)?;
    writeln!(w, "  {}", f.explanation)?;
    if !f.objects.entries.is_empty() || !f.objects.folios.is_empty() {
        writeln!(
            w,
            "  objects: entries [{}] folios [{}] tids {:?}",
            f.objects.entries.join(", "),
            f.objects.folios.join(", "),
            f.objects.tids
        )?;
    }
    if !f.confidence.note.is_empty() {
        writeln!(w, "  confidence reduced: {}", f.confidence.note)?;
    }
    for e in &f.evidence {
        let s = &e.state;
        let mut st = String::new();
        if let Some(x) = &s.folio {
            st.push_str(&format!(" folio={x}"));
        }
        if let Some(x) = &s.entry {
            st.push_str(&format!(" entry={x}"));
        }
        if let Some(x) = &s.flags {
            st.push_str(&format!(" [{x}]"));
        }
        if let (Some(r), Some(m)) = (s.refcount, s.mapcount) {
            st.push_str(&format!(" ref={r} map={m}"));
        }
        if let Some(x) = &s.folio_swap {
            st.push_str(&format!(" swap={x}"));
        }
        if let Some(x) = s.ret {
            st.push_str(&format!(" ret={x}"));
        }
        writeln!(
            w,
            "    #{:<8} {:>16}ns {:<20} {:<5} {}/{}: {}{}",
            e.index, e.ts_ns, e.probe, e.kind, e.tid, e.comm, e.note, st
        )?;
    }
    Ok(())
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// Nanoseconds in the largest unit that keeps three digits.
pub fn fmt_ns(ns: u64) -> String {
    if ns >= 10_000_000_000 {
        format!("{}s", ns / 1_000_000_000)
    } else if ns >= 10_000_000 {
        format!("{}ms", ns / 1_000_000)
    } else if ns >= 10_000 {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}
