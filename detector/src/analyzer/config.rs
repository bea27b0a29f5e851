//! What the analyzer is told (its settings) and what it counts.

use detector_common::{ProbeId, MAX_PROBES};
use serde::{Deserialize, Serialize};

/// Analyzer settings. `record` writes the ones it used into the trace header and
/// `replay` uses the header's (flags override them); `Default` is what a
/// trace without them gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Upper bound on tracked objects (entries, folios, tasks, side
    /// records); beyond it the least recently seen dead objects are evicted.
    pub max_tracked: usize,
    /// `swapcache_prepare` -EEXIST answers for one entry, within one holding
    /// window, that make an `eexist_storm` finding.
    pub eexist_threshold: u32,
    /// Lookups remembered per `move_pages` window (the oldest is dropped).
    pub lookups_per_window: usize,
    /// A task with an open window and no event for this long (stream time)
    /// is considered gone; its windows are closed without findings. Applied
    /// all along the stream, not only under memory pressure: a task whose
    /// exit was lost (or fell outside a trace segment) must not keep a window
    /// that a later task with the same tid could inherit.
    pub task_idle_ns: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_tracked: 1 << 20,
            eexist_threshold: 64,
            lookups_per_window: 16,
            task_idle_ns: 30_000_000_000,
        }
    }
}

/// Event and loss counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub items: u64,
    pub events: u64,
    /// Events with a probe id this build does not know.
    pub unknown_probe: u64,
    /// Total lost events, all probes (sum of the latest running totals).
    pub lost: u64,
    pub events_per_probe: Vec<u64>,
    /// Latest running lost total per probe.
    pub lost_per_probe: Vec<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            items: 0,
            events: 0,
            unknown_probe: 0,
            lost: 0,
            events_per_probe: vec![0; MAX_PROBES as usize],
            lost_per_probe: vec![0; MAX_PROBES as usize],
        }
    }
}

impl Stats {
    /// `(probe, events, lost)` for every probe that saw either.
    pub fn per_probe(&self) -> impl Iterator<Item = (ProbeId, u64, u64)> + '_ {
        ProbeId::ALL.iter().filter_map(move |p| {
            let i = *p as usize;
            let (e, l) = (self.events_per_probe[i], self.lost_per_probe[i]);
            (e != 0 || l != 0).then_some((*p, e, l))
        })
    }
}

/// What task lifetimes did to the analyzer's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLifetimes {
    /// `task_exit` events seen.
    pub exits: u64,
    /// Events of a tid whose thread group or start time differed from the
    /// tracked task's: the tid had been given to a new task.
    pub tid_reuses: u64,
    /// `move_pages` windows ended, without findings, by their task's exit,
    /// by `task_idle_ns` without an event, or by a new task taking the tid
    /// (the old task's exit was lost or outside the trace).
    pub windows_ended_by_exit: u64,
    pub windows_ended_idle: u64,
    pub windows_ended_by_new_task: u64,
}
