//! The probe plan: which kernel function implements each role on the running
//! kernel, and how it was attached (or why it was not).
//!
//! `roles` is the table of roles and their candidate functions, `spec`
//! reads a candidate's BTF prototype into the argument positions the BPF
//! programs use, `resolve` picks the first candidate that fits. This module
//! holds the plan as recorded (`PlanEntry`) and the program names.

mod digest;
mod resolve;
mod roles;
mod spec;

pub use digest::{needs_move_window, BtfDigest};

pub use resolve::{resolve, resolve_with, Resolved, SkipReason, Skipped, Unresolved};
pub use roles::{Hook, Role, ROLES};
pub use spec::{arg_spec, tracepoint_spec, Unfit};

use serde::{Deserialize, Serialize};

/// How a role ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    Fentry,
    Kprobe,
    Tracepoint,
    Unavailable,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Fentry => "fentry",
            AttachMode::Kprobe => "kprobe",
            AttachMode::Tracepoint => "tracepoint",
            AttachMode::Unavailable => "unavailable",
        }
    }
}

/// One line of the plan, as stored in the trace header and shown by `doctor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    /// `ProbeId::name()` of the role.
    pub probe: String,
    /// Kernel symbol or `category:tracepoint` the role is attached to
    /// (empty when unavailable).
    pub target: String,
    pub mode: AttachMode,
    /// Whether an entry and/or exit program is attached.
    pub entry: bool,
    pub exit: bool,
    /// Why this mode (fallback reason, or why unavailable).
    pub note: String,
    /// The in-kernel relevance filter in effect (empty: every call).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
}

use detector_common::{ProbeId, REL_FAILED, REL_LAZYFREE, REL_MAYBE_PINNED, REL_OUTSIDE_MOVE};

/// The probes a plan attached, for `Analyzer::set_attached`. `None` when
/// the plan is empty (a simulated stream that records no plan): then the
/// analyzer assumes every probe, as the scenario was written for.
pub fn attached_probes(plan: &[PlanEntry]) -> Option<Vec<ProbeId>> {
    if plan.is_empty() {
        return None;
    }
    Some(
        plan.iter()
            .filter(|p| p.mode != AttachMode::Unavailable)
            .filter_map(|p| ProbeId::from_name(&p.probe))
            .collect(),
    )
}

/// What a probe's in-kernel relevance filter keeps, for the plan and docs.
pub fn relevance_text(relevance: u8) -> String {
    let mut parts = Vec::new();
    if relevance & REL_LAZYFREE != 0 {
        parts.push(
            "only clean lazyfree folios (still swap-backed: with extra references; small and at a normal count: not written again through this mapping)",
        );
    }
    if relevance & REL_MAYBE_PINNED != 0 {
        parts.push("only maybe-pinned folios (refcount >= 1024 or large)");
    }
    if relevance & REL_FAILED != 0 {
        parts.push("only failed calls");
    }
    if relevance & REL_OUTSIDE_MOVE != 0 {
        parts.push("only calls outside a UFFDIO_MOVE window (move_pages_lookup has those)");
    }
    parts.join(", ")
}

/// Base name of the BPF programs implementing a role (`fentry_<base>`,
/// `fexit_<base>`, `kprobe_<base>`, `kretprobe_<base>`, or the tracepoint
/// program itself).
pub fn program_base(probe: ProbeId) -> &'static str {
    match probe {
        ProbeId::TpWriteFolio => "tp_vmscan_write_folio",
        ProbeId::TpPageFree => "tp_page_free",
        ProbeId::TpLruInsertion => "tp_lru_insertion",
        ProbeId::TaskExit => "tp_task_exit",
        other => other.name(),
    }
}

#[cfg(test)]
mod tests;
