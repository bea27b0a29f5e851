//! Filters that drop a call before it costs a ring-buffer record: the
//! capture filter (a task or cgroup) and each probe's relevance filter
//! (`ArgSpec::relevance`, chosen by userspace per role).

use core::ptr::read_volatile;

use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid};
use detector_common::{
    ArgSpec, DiagKind, EventKind, Layout, ProbeId, GUP_PIN_BIAS, REL_FAILED, REL_LAZYFREE,
    REL_MAYBE_PINNED, REL_OUTSIDE_MOVE,
};

use crate::args::Args;
use crate::diag;
use crate::folio::{pte_to_folio, Head};
use crate::kread::{bit, is_kptr, rd64};
use crate::maps::{FILTER, GATE};
use crate::move_window::in_move_window;
use crate::pagetable::written_again;
use crate::task::tid_probe_key;

/// The capture filter (`--pid`, `--cgroup`): false drops the event.
#[inline(always)]
pub(crate) fn pass_filter() -> bool {
    // SAFETY: a valid, aligned pointer to a static; the volatile read only
    // keeps the compiler from folding in the initial zeros, which userspace
    // replaces before load.
    let f = unsafe { read_volatile(&raw const FILTER) };
    if f.tgid != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 != f.tgid {
        return false;
    }
    // SAFETY: helper has no preconditions in tracing programs.
    if f.cgroup_id != 0 && unsafe { bpf_get_current_cgroup_id() } != f.cgroup_id {
        return false;
    }
    true
}

/// The in-kernel relevance filter of a probe (`ArgSpec::relevance`): false
/// drops the call before it costs a ring-buffer record. Runs on every call
/// of a filtered probe, so it reads only the words it decides on.
#[inline(always)]
pub(crate) fn relevant<A: Args>(
    a: &A,
    spec: &ArgSpec,
    l: &Layout,
    probe: ProbeId,
    kind: EventKind,
) -> bool {
    let r = spec.relevance;
    if r & REL_OUTSIDE_MOVE != 0 && in_move_window() {
        return false;
    }
    if r & REL_FAILED != 0 {
        // The filtered functions return int: the low half is the result.
        if let Some(v) = a.ret() {
            if v as u32 == 0 {
                return false;
            }
        }
    }
    if r & REL_LAZYFREE != 0 {
        let key = tid_probe_key(probe);
        if kind == EventKind::Exit {
            // SAFETY: only presence is checked; the value is not used.
            if unsafe { GATE.get(&key) }.is_none() {
                return false;
            }
            let _ = GATE.remove(&key);
        } else {
            let folio = a.arg(spec.folio).unwrap_or(0);
            if !is_kptr(folio) {
                return false;
            }
            let Some(head) = Head::read(folio) else {
                diag::report(probe, DiagKind::FolioDropped, folio, 0);
                return false;
            };
            let flags = head.u64_at(folio, l.folio_flags).unwrap_or(0);
            let mapping = head.u64_at(folio, l.folio_mapping).unwrap_or(0);
            // The lazyfree rules start from a clean anon folio that is, or is
            // about to be, lazyfree: MADV_FREE clears PG_swapbacked from a
            // per-CPU batch, which this very call can drain before its own
            // check, so a folio still swap-backed here may be discarded (seen
            // on the injected kernel: a pinned page dropped without an event
            // while this test skipped swap-backed folios). The exit keeps
            // what entered; the analyzer judges the state at exit ...
            if mapping & 1 == 0 || bit(flags, l.pg_dirty) {
                return false;
            }
            // ... and, while still swap-backed, holding references beyond
            // its mappings and the reclaim isolation (refcount > 1 +
            // mapcount; a FOLL_PIN adds 1024). A folio already lazyfree
            // (PG_swapbacked clear) is kept whatever its count: a GUP-fast
            // pin can land during this very call, after this check and
            // before the kernel's own (seen on the injected kernel: a page
            // entered with refcount 1 + mapcount, was pinned, and was
            // discarded without an event). Only MADV_FREE makes such
            // folios, so they are few. A large folio's mappings are not in
            // its first page: kept.
            if !bit(flags, l.pg_head) {
                let refs = head.i32_at(folio, l.folio_refcount).unwrap_or(0);
                let mapcount = head.i32_at(folio, l.folio_mapcount).unwrap_or(0) + 1;
                let normal = refs <= 1 + mapcount;
                if bit(flags, l.pg_swapbacked) {
                    if normal {
                        return false;
                    }
                } else if normal {
                    // Most lazyfree folios reclaim meets were written again
                    // after MADV_FREE (benign-soak: 98% of the kept calls).
                    // The kernel moves the PTE's dirty bit to the folio and
                    // keeps it whatever the counts, so nothing can be lost
                    // to a pin: a dirty PTE that maps this folio drops the
                    // call. Only at a normal count, so the extra-reference
                    // calls the lazyfree rules report on stay.
                    let vma = a.arg(spec.vma).unwrap_or(0);
                    let addr = a.arg(spec.addr).unwrap_or(0);
                    if is_kptr(vma) && written_again(vma, addr, folio, l, probe) {
                        return false;
                    }
                }
            }
            let _ = GATE.insert(&key, &1, 0);
        }
    }
    if r & REL_MAYBE_PINNED != 0 && spec.folio_from_pte != 0 {
        let folio = match a.arg(spec.vmf).and_then(|vmf| rd64(vmf, l.vmf_orig_pte)) {
            Some(pte) => pte_to_folio(pte, l, probe),
            None => 0,
        };
        if is_kptr(folio) {
            let Some(head) = Head::read(folio) else {
                diag::report(probe, DiagKind::FolioDropped, folio, 0);
                return false;
            };
            let flags = head.u64_at(folio, l.folio_flags).unwrap_or(0);
            let refs = head.i32_at(folio, l.folio_refcount).unwrap_or(0);
            if !bit(flags, l.pg_head) && refs < GUP_PIN_BIAS {
                return false;
            }
        }
    }
    true
}
