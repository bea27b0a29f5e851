//! Roles checked against recorded kernels: what a line's BTF digest
//! attaches, and which roles need a UFFDIO_MOVE window.

use detector_common::ProbeId;
use serde::Deserialize;

use super::{resolve_with, Hook, Resolved, Role, ROLES};
use crate::btf::Proto;

/// Roles that only mean something inside a UFFDIO_MOVE window: the loader
/// attaches them only once `move_pages` attached (6.1 has the functions,
/// but no window to read them in).
pub fn needs_move_window(probe: ProbeId) -> bool {
    matches!(probe, ProbeId::MovePagesLookup | ProbeId::MovePresent)
}

/// A recorded digest of one kernel's BTF (`examples/btf_digest.rs`,
/// `detector/testdata/btf/`): the prototype of every candidate symbol and
/// the typed tracepoints' presence, so the role table can be checked
/// against real kernels without booting them.
#[derive(Clone, Debug, Deserialize)]
pub struct BtfDigest {
    /// `uname -r` of the kernel.
    pub kernel: String,
    /// Prototype per symbol; `None`: the kernel has no such function.
    pub functions: std::collections::BTreeMap<String, Option<Proto>>,
    /// Typed tracepoint (`group:name`) -> present.
    pub tracepoints: std::collections::BTreeMap<String, bool>,
}

impl BtfDigest {
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Candidates of the role table the digest has no record of (it
    /// predates them): regenerate it with `examples/btf_digest.rs`.
    pub fn unrecorded(&self) -> Vec<&'static str> {
        ROLES
            .iter()
            .flat_map(|r| r.candidates.iter().map(move |c| (r.hook, *c)))
            .filter(|(hook, c)| match hook {
                Hook::Tracepoint => !self.tracepoints.contains_key(*c),
                _ => !self.functions.contains_key(*c),
            })
            .map(|(_, c)| c)
            .collect()
    }

    /// [`resolve`](super::resolve) against the digest. An unrecorded symbol counts as
    /// absent; check [`BtfDigest::unrecorded`] first.
    pub fn resolve(&self, role: &Role) -> Result<Resolved, String> {
        if role.hook == Hook::Tracepoint {
            let absent: Vec<&str> = role
                .candidates
                .iter()
                .copied()
                .filter(|c| self.tracepoints.get(*c) != Some(&true))
                .collect();
            if !absent.is_empty() {
                return Err(format!("{}: not in this kernel", absent.join(", ")));
            }
        }
        resolve_with(|sym| self.functions.get(sym).cloned().flatten(), role)
            .map_err(|e| e.to_string())
    }

    /// The roles the loader attaches on this kernel when it allows
    /// function probes (not degraded mode): every function role that
    /// resolves (the move-window ones only with `move_pages`) and every
    /// tracepoint role the kernel has that is not degraded-only.
    pub fn attaches(&self) -> Vec<ProbeId> {
        let move_window = ROLES
            .iter()
            .any(|r| r.probe == ProbeId::MovePages && self.resolve(r).is_ok());
        ROLES
            .iter()
            .filter(|r| !r.degraded_only)
            .filter(|r| move_window || !needs_move_window(r.probe))
            .filter(|r| self.resolve(r).is_ok())
            .map(|r| r.probe)
            .collect()
    }
}
