//! Reading kernel memory: every read goes through `bpf_probe_read_kernel`,
//! which turns a bad address into an error instead of an oops, so an
//! offset that does not fit this kernel costs a missing field, never a
//! crash.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use detector_common::{DiagField, ProbeId, ABSENT};

use crate::diag;

/// The u64 at `base + off`; `None` for an absent field or a null base.
#[inline(always)]
pub(crate) fn rd64(base: u64, off: u32) -> Option<u64> {
    if off == ABSENT || base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copes with any address (faults return
    // an error instead of oopsing).
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const u64) }.ok()
}

/// [`rd64`] of a field the event needs: a failure is reported (`diag`)
/// as `field`.
#[inline(always)]
pub(crate) fn rd64_needed(base: u64, off: u32, probe: ProbeId, field: DiagField) -> Option<u64> {
    let v = rd64(base, off);
    if v.is_none() {
        diag::field_unreadable(probe, field, off, base);
    }
    v
}

/// The i32 at `base + off`, as [`rd64`].
#[inline(always)]
pub(crate) fn rd32(base: u64, off: u32) -> Option<i32> {
    if off == ABSENT || base == 0 {
        return None;
    }
    // SAFETY: as in rd64.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const i32) }.ok()
}

/// Bit `b` of `word`; false for an absent bit number.
#[inline(always)]
pub(crate) fn bit(word: u64, b: u32) -> bool {
    b < 64 && (word >> b) & 1 != 0
}

#[inline(always)]
pub(crate) fn is_kptr(v: u64) -> bool {
    detector_common::is_kernel_ptr(v)
}
