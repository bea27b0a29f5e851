//! Every map and global the object exports, and the small accessors the
//! other modules share. The statics are named exactly as userspace looks
//! them up (`detector_common::MAP_*`, `GLOBAL_*`; `#[map]` takes the
//! static's identifier): the detector's `bpf_object_names` test checks.
//! aya-log-ebpf adds its own two (`AYA_LOGS`, `AYA_LOG_LEVEL`; `diag`).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use detector_common::{ArgSpec, Event, Filter, Layout, DIAG_KINDS, MAX_PROBES};

/// Resolved by userspace from the running kernel's BTF, written before any
/// probe attaches. A map rather than a global so programs read it in place
/// through a map-value pointer instead of copying it onto the 512-byte stack.
#[map]
pub(crate) static LAYOUT: Array<Layout> = Array::with_max_entries(1, 0);

/// Capture filters (zero = off), set by userspace before load.
#[no_mangle]
pub(crate) static FILTER: Filter = Filter {
    tgid: 0,
    _pad: 0,
    cgroup_id: 0,
};

/// Bytes of unread data at which a submit wakes the consumer. Below it
/// records go in silently and userspace drains on its own timer, so a busy
/// kernel path does not pay an irq_work and a consumer wakeup per event.
/// Set by userspace before load; 0 wakes on every record.
#[no_mangle]
pub(crate) static WAKEUP_BYTES: u64 = 0;

/// Resized by userspace (`--ring-size`) before load.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Per-probe count of events dropped because the ring buffer was full.
#[map]
pub(crate) static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_PROBES, 0);

/// Per-probe argument positions, filled by userspace from BTF.
#[map]
pub(crate) static ARGS: Array<ArgSpec> = Array::with_max_entries(MAX_PROBES, 0);

/// Threads currently inside `move_pages` (the UFFDIO_MOVE window).
#[map]
pub(crate) static IN_MOVE: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// kprobe mode only: arguments saved at entry for the matching kretprobe,
/// keyed by `tid << 16 | probe`.
#[map]
pub(crate) static STASH: HashMap<u64, [u64; 6]> = HashMap::with_max_entries(16384, 0);

/// Calls whose entry passed a `REL_LAZYFREE` filter, keyed like `STASH`,
/// so their exit is kept even though the call changed
/// the folio (try_to_unmap_one makes a re-dirtied folio swap-backed).
#[map]
pub(crate) static GATE: HashMap<u64, u8> = HashMap::with_max_entries(16384, 0);

/// Reports counted per kind and probe (`diag`), which rate-limits them.
/// Only written when `--bpf-log` is on.
#[map]
pub(crate) static DIAG: Array<u32> = Array::with_max_entries(DIAG_KINDS * MAX_PROBES, 0);

/// Where a program builds its event before packing it (`emit`), stamped
/// with the token of the call using it.
#[repr(C)]
pub(crate) struct Scratch {
    pub(crate) token: u64,
    pub(crate) ev: Event,
}

/// Scratch slots per CPU, picked by the tid's low bits.
pub(crate) const SCRATCH_SLOTS: u32 = 8;

#[map]
pub(crate) static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(SCRATCH_SLOTS, 0);

#[inline(always)]
pub(crate) fn layout() -> Option<&'static Layout> {
    LAYOUT.get(0)
}

/// One more event of `probe` lost.
#[inline(always)]
pub(crate) fn count_lost(probe: u32) {
    if let Some(p) = LOST.get_ptr_mut(probe) {
        // SAFETY: `p` points at this CPU's slot of a map value, valid while
        // the program runs. Another program on this CPU that preempts this
        // one between the load and the store can lose one count; nothing
        // else is at stake.
        unsafe { *p += 1 };
    }
}
