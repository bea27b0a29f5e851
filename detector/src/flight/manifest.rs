//! `<snapshot>.json`: what a snapshot holds and why it was written.
//!
//! Field order is the JSON's; only append fields. The schema is described
//! in `docs/flight-recorder.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::analyzer::{Config, Finding, Objects, RuleId, Severity};

use super::policy::{ns, FlightPolicy};

/// Version of this manifest's schema.
pub const MANIFEST_VERSION: u32 = 1;

/// How a snapshot ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// Still being written (or the recorder died while it was: the trace
    /// then has no footer and replays as cut off).
    Open,
    /// The after-window passed.
    Complete,
    /// Closed early at `snapshot_bytes`.
    CutSize,
    /// Closed early: the directory's byte budget was reached.
    CutBudget,
    /// The stream ended inside the after-window.
    StreamEnded,
}

/// Everything a snapshot's manifest says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    /// The trace file, in the same directory.
    pub trace: String,
    pub state: SnapshotState,
    /// The finding that started the snapshot, as `replay --format json`
    /// writes findings (its evidence indexes are the live stream's).
    pub trigger: Finding,
    /// Stream index of the item that completed the trigger (the last item
    /// when the analyzer's end-of-stream completed it).
    pub trigger_index: u64,
    pub trigger_ns: u64,
    /// The same finding (rule, severity, objects) firing again while the
    /// snapshot was open.
    pub merged: u64,
    /// Other findings that fired while it was open and whose evidence lies
    /// inside its window (at most [`COVERED_MAX`]; `covered_more` counts
    /// the rest).
    pub covered: Vec<Covered>,
    pub covered_more: u64,
    pub kernel_release: String,
    pub boot_id: String,
    pub hostname: String,
    pub detector_version: String,
    /// The analyzer configuration of the live stream, which the trace's
    /// header records too (`null`: the defaults).
    pub analyzer_config: Option<Config>,
    pub policy: PolicyRecord,
    pub window: Window,
    pub evidence: EvidenceCover,
    pub lost: Losses,
    /// Size of the trace file.
    pub trace_bytes: u64,
}

pub const COVERED_MAX: usize = 64;

/// A finding another snapshot's window holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Covered {
    pub id: u64,
    pub rule: RuleId,
    pub severity: Severity,
    pub objects: Objects,
    pub index: u64,
    pub ts_ns: u64,
}

impl Covered {
    pub(crate) fn of(f: &Finding, index: u64, ts_ns: u64) -> Self {
        Covered {
            id: f.id,
            rule: f.rule,
            severity: f.severity,
            objects: f.objects.clone(),
            index,
            ts_ns,
        }
    }
}

/// The flight recorder's settings, in ns and bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub keep_ns: u64,
    pub memory: u64,
    pub after_ns: u64,
    pub after_max_ns: u64,
    pub on: String,
    pub max_count: u32,
    pub max_bytes: u64,
    pub snapshot_bytes: u64,
    pub per_day: u32,
    pub cooldown_ns: u64,
}

impl PolicyRecord {
    pub(crate) fn of(p: &FlightPolicy) -> Self {
        PolicyRecord {
            keep_ns: ns(p.keep),
            memory: p.memory,
            after_ns: ns(p.after),
            after_max_ns: ns(p.after_max),
            on: p.on.name().to_string(),
            max_count: p.max_count,
            max_bytes: p.max_bytes,
            snapshot_bytes: p.snapshot_bytes,
            per_day: p.per_day,
            cooldown_ns: ns(p.cooldown),
        }
    }
}

/// The stretch of the stream the trace holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Timestamps of the first and last item written.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Where the after-window was to end (extensions included).
    pub planned_end_ns: u64,
    /// Live stream indexes of the first and last item written.
    pub first_index: u64,
    pub last_index: u64,
    /// Items and events written (not counting `baseline_records`).
    pub items: u64,
    pub events: u64,
    /// Lost-total records written before the first item, one per probe
    /// that had lost events before the window: a live index `i` is record
    /// `i - first_index + baseline_records` of the trace.
    pub baseline_records: u64,
    /// The ring held less than `keep` before the trigger (its memory bound
    /// was reached first).
    pub short_of_keep: bool,
}

/// Whether the window holds the trigger's whole evidence chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceCover {
    pub earliest_index: u64,
    pub earliest_ns: u64,
    pub complete: bool,
    /// Why not, when it does not.
    pub note: String,
}

/// Events lost inside the window, per probe (the growth of the running
/// totals between the window's start and its end), and the totals before
/// it (what the baseline records say).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Losses {
    pub total: u64,
    pub per_probe: BTreeMap<String, u64>,
    pub before_window: BTreeMap<String, u64>,
}
