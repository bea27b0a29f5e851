//! What the commands that analyze share: the analyzer flags, where the
//! configuration comes from, and how findings are printed as they arrive
//! (one group per kind of finding, so a storm stays readable).

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

use crate::analyzer::{Config, Finding};
use crate::groups::{is_decade, GroupInput, Groups, Placed};

/// Analyzer settings on the command line. Each one given overrides the
/// trace header's configuration (replay) or the default (capture).
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct AnalyzerArgs {
    /// Most objects the analyzer tracks before evicting dead ones
    /// (default: the trace's setting, else 1048576).
    #[arg(long, value_name = "N")]
    pub max_tracked: Option<usize>,
    /// swapcache_prepare -EEXIST answers per entry that make a storm
    /// (default: the trace's setting, else 64).
    #[arg(long, value_name = "N")]
    pub eexist_threshold: Option<u32>,
    /// Lookups remembered per move_pages window (default: the trace's
    /// setting, else 16).
    #[arg(long, value_name = "N")]
    pub lookups_per_window: Option<usize>,
    /// Stream time without an event after which a task's open windows are
    /// closed without findings, e.g. 30s (default: the trace's, else 30s).
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::record::parse_duration)]
    pub task_idle: Option<Duration>,
}

/// Where the configuration an analysis starts from comes from.
#[derive(Clone, Copy, Debug)]
pub enum Base<'a> {
    /// A trace file's header (`None`: the file records none).
    Trace(Option<&'a Config>),
    /// The built-in defaults (a live capture).
    Defaults,
}

impl AnalyzerArgs {
    /// The configuration to analyze with, and one phrase saying where it
    /// came from (printed with the results).
    pub fn resolve(&self, base: Base<'_>) -> (Config, String) {
        let (mut c, mut origin) = match base {
            Base::Trace(Some(c)) => (c.clone(), String::from("from the trace header")),
            Base::Trace(None) => (
                Config::default(),
                String::from("defaults (the trace records no configuration)"),
            ),
            Base::Defaults => (Config::default(), String::from("defaults")),
        };
        let mut given = Vec::new();
        if let Some(n) = self.max_tracked {
            c.max_tracked = n.max(16);
            given.push("--max-tracked");
        }
        if let Some(n) = self.eexist_threshold {
            c.eexist_threshold = n.max(1);
            given.push("--eexist-threshold");
        }
        if let Some(n) = self.lookups_per_window {
            c.lookups_per_window = n.max(1);
            given.push("--lookups-per-window");
        }
        if let Some(d) = self.task_idle {
            c.task_idle_ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
            given.push("--task-idle");
        }
        if !given.is_empty() {
            let _ = write!(origin, ", overridden by {}", given.join(", "));
        }
        (c, origin)
    }
}

/// Findings printed as they arrive, grouped: the first examples of each
/// group in full, then one line each time the group's count reaches 10,
/// 100, 1000, ... Memory stays bounded whatever the rate.
#[derive(Default)]
pub struct FindingStream {
    groups: Groups<()>,
}

impl FindingStream {
    /// Counts `f` and prints what a reader needs of it into `w`.
    pub fn push(&mut self, w: &mut dyn Write, f: &Finding) -> io::Result<Placed> {
        let g = GroupInput::of(f);
        let placed = self.groups.add(g, || ());
        if placed.example {
            crate::present::finding::render_finding(w, f)?;
        } else if is_decade(placed.count) {
            if placed.group.is_some() {
                writeln!(
                    w,
                    "\n... {} [{}] task {}/{}{}: {} findings so far (latest #{}); the first {} \
                     were shown, the rest are counted",
                    f.rule,
                    f.severity,
                    g.comm,
                    g.tid,
                    cause_suffix(g.cause),
                    placed.count,
                    f.id,
                    self.groups.max_examples()
                )?;
            } else {
                writeln!(
                    w,
                    "\n... {} findings of kinds beyond the {}-group limit so far (latest #{}); \
                     they are counted, not shown",
                    placed.count,
                    crate::groups::MAX_GROUPS,
                    f.id
                )?;
            }
        }
        Ok(placed)
    }

    pub fn groups(&self) -> &Groups<()> {
        &self.groups
    }

    /// One line per group: count, kind, task, cause, ids and times
    /// relative to `base_ns`.
    pub fn summary(&self, w: &mut dyn Write, base_ns: u64) -> io::Result<()> {
        let t = self.groups.totals();
        writeln!(
            w,
            "findings: {} ({} violation(s), {} near miss(es), {} info) in {} group(s)",
            t.total(),
            t.violation,
            t.near_miss,
            t.info,
            self.groups.len()
        )?;
        for g in self.groups.groups() {
            writeln!(
                w,
                "  {:>8} x [{}] {} task {}/{}{}: #{}..#{}, {} .. {}",
                g.span.count,
                g.severity,
                g.rule,
                g.comm,
                g.tid,
                cause_suffix(&g.cause),
                g.span.first_id,
                g.span.last_id,
                secs(g.span.first_ns, base_ns),
                secs(g.span.last_ns, base_ns),
            )?;
        }
        let o = self.groups.overflow();
        if o.span.count > 0 {
            writeln!(
                w,
                "  {:>8} x findings of other kinds beyond the {}-group limit: #{}..#{}",
                o.span.count,
                crate::groups::MAX_GROUPS,
                o.span.first_id,
                o.span.last_id
            )?;
        }
        Ok(())
    }
}

/// ` cause X`, or nothing when the rule gives none.
pub fn cause_suffix(cause: &str) -> String {
    if cause.is_empty() {
        String::new()
    } else {
        format!(" cause {cause}")
    }
}

/// Seconds since `base_ns`, as `12.345678s`.
pub fn secs(ts: u64, base_ns: u64) -> String {
    format!("{:.6}s", ts.saturating_sub(base_ns) as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_trace_and_say_so() {
        let trace = Config {
            eexist_threshold: 4,
            ..Config::default()
        };
        let none = AnalyzerArgs::default();
        let (c, why) = none.resolve(Base::Trace(Some(&trace)));
        assert_eq!(c, trace);
        assert_eq!(why, "from the trace header");
        let (c, why) = none.resolve(Base::Trace(None));
        assert_eq!(c, Config::default());
        assert!(why.contains("records no configuration"), "{why}");

        let flags = AnalyzerArgs {
            eexist_threshold: Some(9),
            task_idle: Some(Duration::from_secs(2)),
            ..AnalyzerArgs::default()
        };
        let (c, why) = flags.resolve(Base::Trace(Some(&trace)));
        assert_eq!(c.eexist_threshold, 9);
        assert_eq!(c.task_idle_ns, 2_000_000_000);
        assert_eq!(c.max_tracked, trace.max_tracked);
        assert_eq!(
            why,
            "from the trace header, overridden by --eexist-threshold, --task-idle"
        );
        let (_, why) = flags.resolve(Base::Defaults);
        assert!(why.starts_with("defaults, overridden"), "{why}");
    }
}
