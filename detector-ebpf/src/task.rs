//! The current task: its thread id, the key of per-call state, and the
//! start time that tells a recycled tid from its previous owner.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_current_task};
use detector_common::{DiagField, Layout, ProbeId};

use crate::kread::rd64_needed;

#[inline(always)]
pub(crate) fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// Key of per-call state (`STASH`, `GATE`): the task and the probe.
#[inline(always)]
pub(crate) fn tid_probe_key(probe: ProbeId) -> u64 {
    ((current_tid() as u64) << 16) | probe as u64
}

/// Low 32 bits of the current task's `start_time`, 0 when unreadable.
#[inline(always)]
pub(crate) fn task_start(l: &Layout, probe: ProbeId) -> u32 {
    // SAFETY: helper has no preconditions; the result is only used as an
    // address for bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    rd64_needed(task, l.task_start_time, probe, DiagField::TaskStartTime).map_or(0, |v| v as u32)
}
