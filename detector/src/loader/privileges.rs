//! Capabilities: what loading needs (checked up front, one sentence when
//! something is missing), and dropping everything else once the probes
//! are attached.
//!
//! Loading and attaching need CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on a
//! kernel older than CAP_BPF), turning BPF statistics on needs
//! CAP_SYS_ADMIN. After that a capture only reads what it already holds:
//! the ring buffer is memory mapped, and the lost counters and program
//! statistics are read through map and program fds. A kernel whose `bpf()`,
//! with unprivileged BPF off, refuses only map creation and program
//! loading to a caller without CAP_BPF allows those reads with no
//! capability at all (6.1 already does: measured in the 6.1 guest, with
//! `unprivileged_bpf_disabled` at 2); an older one refuses every command
//! and the reads need CAP_BPF. Which one this kernel wants is found by
//! trying each read with fewer capabilities, never by comparing version
//! numbers.
//!
//! Capabilities belong to threads: each thread that holds the probes or
//! may create files drops its own, and threads started afterwards inherit
//! the reduced sets.

use std::fmt;

use caps::{CapSet, Capability, CapsHashSet};

/// Something that still runs after the drop, and the capability sets it
/// may need, tried smallest first as the whole effective set.
pub struct Need<'a> {
    pub candidates: &'a [&'a [Capability]],
    /// Whether the operation works with the current effective set.
    pub check: &'a mut dyn FnMut() -> bool,
}

/// The capabilities a capture keeps after attaching, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kept(pub Vec<Capability>);

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot drop capabilities after attaching the probes ({0}); the capture stops rather than \
     run with privileges it does not need"
)]
pub struct PrivilegeError(String);

impl From<caps::errors::CapsError> for PrivilegeError {
    fn from(e: caps::errors::CapsError) -> Self {
        PrivilegeError(e.to_string())
    }
}

/// Reduces this thread to the capabilities `needs` require: permitted and
/// effective to that set, inheritable and ambient emptied, and (when this
/// thread may, with CAP_SETPCAP) the bounding set too, so nothing can be
/// regained by executing a program. A need no candidate satisfies but the
/// full set does keeps the full set; one that fails even with it is
/// broken for another reason and keeps nothing.
pub fn drop_privileges(needs: &mut [Need<'_>]) -> Result<Kept, PrivilegeError> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let effective = caps::read(None, CapSet::Effective)?;
    let mut keep = CapsHashSet::new();
    for need in needs.iter_mut() {
        let mut chosen = None;
        for cand in need.candidates {
            let set: CapsHashSet = cand.iter().copied().collect();
            if !set.is_subset(&permitted) {
                continue;
            }
            caps::set(None, CapSet::Effective, &set)?;
            if (need.check)() {
                chosen = Some(set);
                break;
            }
        }
        if chosen.is_none() {
            caps::set(None, CapSet::Effective, &effective)?;
            if (need.check)() {
                chosen = Some(effective.clone());
            }
        }
        keep.extend(chosen.unwrap_or_default());
    }
    caps::set(None, CapSet::Effective, &effective)?;
    if effective.contains(&Capability::CAP_SETPCAP) {
        for c in caps::read(None, CapSet::Bounding)?.difference(&keep) {
            caps::drop(None, CapSet::Bounding, *c)?;
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    let mut kept: Vec<Capability> = keep.into_iter().collect();
    kept.sort_by_key(caps::Capability::index);
    Ok(Kept(kept))
}

/// Drops every capability of this thread (one that needs none, such as
/// the one showing findings while another holds the probes).
pub fn drop_all() -> Result<Kept, PrivilegeError> {
    drop_privileges(&mut [])
}

/// Capabilities that reading BPF maps and program information may need
/// after attaching, fewest first: none (a kernel whose `bpf()` refuses only
/// object creation to the unprivileged, 6.1 included), CAP_BPF, or
/// CAP_SYS_ADMIN on a kernel that predates CAP_BPF.
pub const BPF_READ_CANDIDATES: &[&[Capability]] =
    &[&[], &[Capability::CAP_BPF], &[Capability::CAP_SYS_ADMIN]];

/// Capabilities a rotating recording may need to create, rename and
/// delete segments in its directory: none when the user may write there,
/// CAP_DAC_OVERRIDE when only root's override allows it (root recording
/// into another user's directory).
pub const DIRECTORY_CANDIDATES: &[&[Capability]] = &[&[], &[Capability::CAP_DAC_OVERRIDE]];

/// Whether a file can be created (and removed) in `dir` right now: the
/// check behind [`DIRECTORY_CANDIDATES`].
pub fn can_create_in(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join(format!(".detector-write-check-{}", std::process::id()));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .is_ok();
    created && std::fs::remove_file(&probe).is_ok()
}

/// The capability bits of this process's effective set (`CapEff` in
/// /proc/self/status: the thread group leader's).
pub(super) fn effective_bits() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// The highest capability number the running kernel knows: below
/// CAP_BPF's (39) the kernel predates it and BPF wants CAP_SYS_ADMIN.
pub(super) fn kernel_knows_cap_bpf() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .is_none_or(|last| last >= Capability::CAP_BPF.index().into())
}

/// The capabilities loading lacks, named, or `None` when it has them:
/// CAP_SYS_ADMIN covers everything; otherwise CAP_BPF and CAP_PERFMON on
/// a kernel that knows them, CAP_SYS_ADMIN on one that does not.
pub(super) fn missing_for_load(eff: u64, knows_cap_bpf: bool) -> Option<&'static str> {
    let has = |c: Capability| eff & (1u64 << c.index()) != 0;
    if has(Capability::CAP_SYS_ADMIN) {
        return None;
    }
    if !knows_cap_bpf {
        return Some("CAP_SYS_ADMIN");
    }
    match (has(Capability::CAP_BPF), has(Capability::CAP_PERFMON)) {
        (true, true) => None,
        (false, false) => Some("CAP_BPF and CAP_PERFMON"),
        (false, true) => Some("CAP_BPF"),
        (true, false) => Some("CAP_PERFMON"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_capabilities_are_named() {
        let bit = |c: Capability| 1u64 << c.index();
        let (bpf, perfmon, admin) = (
            bit(Capability::CAP_BPF),
            bit(Capability::CAP_PERFMON),
            bit(Capability::CAP_SYS_ADMIN),
        );
        assert_eq!(missing_for_load(0, true), Some("CAP_BPF and CAP_PERFMON"));
        assert_eq!(missing_for_load(bpf, true), Some("CAP_PERFMON"));
        assert_eq!(missing_for_load(perfmon, true), Some("CAP_BPF"));
        assert_eq!(missing_for_load(bpf | perfmon, true), None);
        assert_eq!(missing_for_load(admin, true), None);
        assert_eq!(
            missing_for_load(bpf | perfmon, false),
            Some("CAP_SYS_ADMIN")
        );
        assert_eq!(missing_for_load(admin, false), None);
    }

    #[test]
    fn kept_sets_print_as_a_list() {
        assert_eq!(Kept::default().to_string(), "none");
        assert_eq!(
            Kept(vec![Capability::CAP_DAC_OVERRIDE, Capability::CAP_BPF]).to_string(),
            "CAP_DAC_OVERRIDE, CAP_BPF"
        );
    }
}
