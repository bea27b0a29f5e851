//! One [`Event`] from a traced call: the task and time, then the objects
//! the role concerns (folio, swap entry, PTE, address) read from the
//! arguments at the positions in the probe's [`ArgSpec`].

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
    generated::bpf_get_current_comm,
};
use detector_common::{
    ArgSpec, DiagField, Event, EventKind, Layout, ProbeId, ABSENT, NO_ARG, V_ADDR, V_ENTRY,
    V_ENTRY_PARTIAL, V_FOLIO_STATE, V_PIN, V_PTE, V_RET,
};

use crate::args::Args;
use crate::diag;
use crate::folio::{page_to_folio, pte_to_folio, read_folio};
use crate::kread::{is_kptr, rd64_needed};
use crate::task::task_start;

/// Fills `e` (zeroed) from the call: who, when, and the objects `spec`
/// says where to find.
#[inline(always)]
pub(crate) fn fill<A: Args>(
    e: &mut Event,
    a: &A,
    spec: &ArgSpec,
    l: &Layout,
    probe: ProbeId,
    kind: EventKind,
) {
    // SAFETY: helper has no preconditions.
    e.ts_ns = unsafe { bpf_ktime_get_ns() };
    let pt = bpf_get_current_pid_tgid();
    e.pid = (pt >> 32) as u32;
    e.tid = pt as u32;
    // SAFETY: helper has no preconditions.
    e.cpu = unsafe { bpf_get_smp_processor_id() };
    // Straight into the event: aya's wrapper zeroes a stack copy first,
    // which LLVM may turn into a call to `memset`, a global function 6.1's
    // verifier refuses to pass a stack pointer to. On failure the helper
    // zeroes the buffer itself.
    // SAFETY: the helper writes at most its size argument, 16 bytes, into
    // `comm`, which is 16 bytes.
    unsafe { bpf_get_current_comm(e.comm.as_mut_ptr().cast(), e.comm.len() as u32) };
    e.task_start = task_start(l, probe);
    e.probe = probe as u16;
    e.kind = kind as u8;

    let ret = a.ret();
    if spec.has_ret != 0 {
        if let Some(r) = ret {
            e.ret = narrow_ret(r, spec);
            e.valid |= V_RET;
        }
    }
    e.nr = 1;
    if let Some(n) = a.arg(spec.nr) {
        e.nr = if spec.nr_is_order != 0 {
            1u32 << (n & 31)
        } else {
            n as u32
        };
    }
    if let Some(x) = a.arg(spec.addr) {
        e.addr = x;
        e.valid |= V_ADDR;
    }
    if let Some(f) = a.arg(spec.gup_flags) {
        e.arg = f as u32;
        if l.foll_pin != 0 && (f as u32) & l.foll_pin != 0 {
            e.valid |= V_PIN;
        }
    }
    let mut folio = 0u64;
    if let Some(vmf) = a.arg(spec.vmf) {
        if let Some(pte) = rd64_needed(vmf, l.vmf_orig_pte, probe, DiagField::VmfOrigPte) {
            e.pte = pte;
            e.valid |= V_PTE;
            if spec.folio_from_pte != 0 {
                folio = pte_to_folio(pte, l, probe);
            }
        }
        if let Some(addr) = rd64_needed(vmf, l.vmf_address, probe, DiagField::VmfAddress) {
            e.addr = addr;
            e.valid |= V_ADDR;
        }
    }
    if let Some(f) = a.arg(spec.folio) {
        folio = f;
    } else if let Some(pg) = a.arg(spec.page) {
        if is_kptr(pg) {
            folio = page_to_folio(pg, l, probe);
        }
    } else if spec.ret_folio != 0 {
        if let Some(r) = ret {
            if is_kptr(r) {
                folio = r;
            }
        }
    } else if spec.ret_pte != 0 {
        if let Some(r) = ret {
            e.pte = r;
            e.valid |= V_PTE;
            folio = pte_to_folio(r, l, probe);
        }
    }
    if is_kptr(folio) {
        read_folio(e, folio, l, probe);
        if spec.nr_from_folio != 0 && spec.nr == NO_ARG && e.valid & V_FOLIO_STATE != 0 {
            e.nr = e.f_nr_pages.max(1);
        }
    }
    if let Some(en) = a.arg(spec.entry) {
        e.entry = en;
        e.valid |= V_ENTRY;
    } else if spec.ret_entry != 0 {
        if let Some(r) = ret {
            if r != 0 {
                e.entry = r;
                e.valid |= V_ENTRY;
            }
        }
    } else if spec.entry_from_folio != 0 && e.valid & V_FOLIO_STATE != 0 && e.f_swap != 0 {
        e.entry = e.f_swap;
        // A lookup by index in a swap address space asked for one entry of
        // the folio, not necessarily its first.
        if spec.entry_index_bits != 0 && spec.entry_index_bits < 32 {
            if let Some(ix) = a.arg(spec.index) {
                let mask = (1u64 << spec.entry_index_bits) - 1;
                e.entry = (e.entry & !mask) | (ix & mask);
            }
        }
        e.valid |= V_ENTRY;
    } else if let Some(en) = cluster_entry(a, spec, l, probe) {
        e.entry = en;
        e.valid |= V_ENTRY;
    } else if let Some(ix) = a.arg(spec.index) {
        e.entry = ix;
        e.valid |= V_ENTRY_PARTIAL;
    }
}

/// The swap entry a (device, cluster, offset in cluster) argument triple
/// names: `swp_entry(si->type, cluster index * SWAPFILE_CLUSTER + off)`.
#[inline(always)]
fn cluster_entry<A: Args>(a: &A, spec: &ArgSpec, l: &Layout, probe: ProbeId) -> Option<u64> {
    let si = a.arg(spec.si)?;
    let ci = a.arg(spec.ci)?;
    // An `unsigned int` argument: the upper half of its register is not
    // defined by the calling convention.
    let off = a.arg(spec.ci_off)? & 0xffff_ffff;
    if l.ci_size_of == ABSENT || l.ci_size_of == 0 || l.cluster_pages == ABSENT {
        diag::field_unreadable(probe, DiagField::SwapClusterGeometry, ABSENT, 0);
        return None;
    }
    if !is_kptr(si) || !is_kptr(ci) {
        return None;
    }
    if l.si_type == ABSENT {
        diag::field_unreadable(probe, DiagField::SwapInfoType, ABSENT, 0);
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copes with any address.
    let Ok(ty) = (unsafe { bpf_probe_read_kernel((si + l.si_type as u64) as *const u8) }) else {
        diag::field_unreadable(probe, DiagField::SwapInfoType, l.si_type, si);
        return None;
    };
    let base = rd64_needed(si, l.si_cluster_info, probe, DiagField::SwapInfoClusterInfo)?;
    if ci < base {
        return None;
    }
    let cluster = (ci - base) / l.ci_size_of as u64;
    let offset = cluster * l.cluster_pages as u64 + off;
    Some(detector_common::swp_entry(ty as u32, offset))
}

/// The return register as the function's type means it: only the type's
/// low bits are defined by the ABI (userspace decides the width from BTF).
#[inline(always)]
fn narrow_ret(r: u64, spec: &ArgSpec) -> i64 {
    match (spec.ret_bits, spec.ret_signed != 0) {
        (8, true) => r as u8 as i8 as i64,
        (8, false) => (r & 0xff) as i64,
        (16, true) => r as u16 as i16 as i64,
        (16, false) => (r & 0xffff) as i64,
        (32, true) => r as u32 as i32 as i64,
        (32, false) => (r & 0xffff_ffff) as i64,
        _ => r as i64,
    }
}
