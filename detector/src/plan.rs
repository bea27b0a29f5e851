//! The probe plan: which kernel function implements each role on the running
//! kernel, and how it was attached (or why it was not).

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
}
