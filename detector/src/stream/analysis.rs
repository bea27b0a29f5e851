//! How the analyzer of a stream is configured and built: the configuration
//! comes from the trace header (a replay) or the defaults (a capture),
//! with the user's overrides over it, and the analyzer is told which
//! probes the source attached. [`analyzer_for`] is the one place an
//! analyzer is built for a stream.

use std::fmt::Write as _;
use std::time::Duration;

use crate::analyzer::{Analyzer, Config};
use crate::plan::PlanEntry;

use super::source::Source;

/// Settings given on the command line (`--max-tracked`, ...); each one
/// given overrides where the configuration starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub max_tracked: Option<usize>,
    pub eexist_threshold: Option<u32>,
    pub lookups_per_window: Option<usize>,
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

/// The configuration to analyze with, and one phrase saying where it came
/// from (printed with the results).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnalyzerSetup {
    pub config: Config,
    pub origin: String,
}

impl AnalyzerSetup {
    /// Exactly `config`, whatever the stream records.
    pub fn given(config: Config) -> Self {
        AnalyzerSetup {
            config,
            origin: String::from("given by the caller"),
        }
    }
}

impl Overrides {
    pub fn resolve(&self, base: Base<'_>) -> AnalyzerSetup {
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
        AnalyzerSetup { config: c, origin }
    }
}

/// Which analyzer configuration a stream is analyzed with.
#[derive(Clone, Debug)]
pub enum ConfigChoice {
    /// The trace header's (the defaults when it records none, or for a
    /// live capture), with these overrides over it: what the commands do.
    FromTrace(Overrides),
    /// Exactly this one, whatever the stream says.
    Given(Config),
}

impl ConfigChoice {
    /// The setup for `source`'s stream.
    pub fn setup(self, source: &dyn Source) -> AnalyzerSetup {
        match self {
            ConfigChoice::FromTrace(o) if source.info().live => o.resolve(Base::Defaults),
            ConfigChoice::FromTrace(o) => {
                o.resolve(Base::Trace(source.header().analyzer_config.as_ref()))
            }
            ConfigChoice::Given(c) => AnalyzerSetup::given(c),
        }
    }
}

/// The analyzer for a stream whose source attached `plan`: configured as
/// `setup` says and told which probes are attached, so that a rule whose
/// events cannot be seen does not read their absence as a race.
pub fn analyzer_for(plan: &[PlanEntry], setup: &AnalyzerSetup) -> Analyzer {
    let mut a = Analyzer::new(setup.config.clone());
    if let Some(p) = crate::plan::attached_probes(plan) {
        a.set_attached(p);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_the_base_and_say_so() {
        let trace = Config {
            eexist_threshold: 4,
            ..Config::default()
        };
        let none = Overrides::default();
        let s = none.resolve(Base::Trace(Some(&trace)));
        assert_eq!(s.config, trace);
        assert_eq!(s.origin, "from the trace header");
        let s = none.resolve(Base::Trace(None));
        assert_eq!(s.config, Config::default());
        assert!(
            s.origin.contains("records no configuration"),
            "{}",
            s.origin
        );

        let flags = Overrides {
            eexist_threshold: Some(9),
            task_idle: Some(Duration::from_secs(2)),
            ..Overrides::default()
        };
        let s = flags.resolve(Base::Trace(Some(&trace)));
        assert_eq!(s.config.eexist_threshold, 9);
        assert_eq!(s.config.task_idle_ns, 2_000_000_000);
        assert_eq!(s.config.max_tracked, trace.max_tracked);
        assert_eq!(
            s.origin,
            "from the trace header, overridden by --eexist-threshold, --task-idle"
        );
        let s = flags.resolve(Base::Defaults);
        assert!(s.origin.starts_with("defaults, overridden"), "{}", s.origin);
    }
}
