//! The raw event ABI as the userspace side reads it: the stream item every
//! consumer (trace writer, analyzer, sinks) sees, accessors over an
//! [`Event`], and the names of the ABI's values ([`names`], [`flags`]):
//! what a probe id, an errno, a return value, a swap entry or a folio flag
//! is called. Those names are the vocabulary of every output; how the
//! outputs look is `crate::present`'s business.

pub mod flags;
pub mod names;

use detector_common::{
    x86_64_pte_to_swp_entry, Event, EventKind, ProbeId, FS_LARGE, V_ENTRY, V_ENTRY_PARTIAL, V_PTE,
};

pub use names::{errno_name, fmt_entry, is_errno, kind_name, Entry, ProbeName, RetFmt};

/// One item of the event stream, in the order the capture produced it.
/// Live capture, the trace file and the analyzer all use this order, which
/// is what makes replay produce exactly the live findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamItem {
    Event(Event),
    /// Running total of events a probe could not emit (ring buffer full),
    /// read from the kernel at `ts_ns`.
    Lost {
        ts_ns: u64,
        probe: u16,
        total: u64,
    },
}

impl StreamItem {
    /// When the item was observed (CLOCK_MONOTONIC ns).
    pub fn ts_ns(&self) -> u64 {
        match self {
            StreamItem::Event(e) => e.ts_ns,
            StreamItem::Lost { ts_ns, .. } => *ts_ns,
        }
    }
}

/// Reads a clock in nanoseconds; 0 if the clock cannot be read.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &raw mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// CLOCK_MONOTONIC now: the clock of every event timestamp
/// (`bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Pin bias of a small folio's refcount (`GUP_PIN_COUNTING_BIAS`), as the
/// BPF side uses it.
pub use detector_common::GUP_PIN_BIAS as GUP_PIN_COUNTING_BIAS;
/// `-EEXIST`, as a probe's return value.
pub const EEXIST: i64 = -(libc::EEXIST as i64);

/// Convenience accessors; all are cheap and allocation-free.
pub trait EventExt {
    fn probe_id(&self) -> Option<ProbeId>;
    fn event_kind(&self) -> Option<EventKind>;
    fn comm_str(&self) -> &str;
    /// The swap entry the event concerns: the explicit one, else the one in a
    /// swap PTE. `None` when the event names no entry or only part of one.
    fn swap_entry(&self) -> Option<u64>;
    /// Total mappings of the folio (`folio_mapcount()`).
    fn mapcount(&self) -> i32;
    /// `folio_maybe_dma_pinned()`.
    fn maybe_dma_pinned(&self) -> bool;
}

impl EventExt for Event {
    fn probe_id(&self) -> Option<ProbeId> {
        ProbeId::from_u16(self.probe)
    }
    fn event_kind(&self) -> Option<EventKind> {
        EventKind::from_u8(self.kind)
    }
    fn comm_str(&self) -> &str {
        let end = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        std::str::from_utf8(&self.comm[..end]).unwrap_or("?")
    }
    fn swap_entry(&self) -> Option<u64> {
        if self.valid & V_ENTRY != 0 && self.valid & V_ENTRY_PARTIAL == 0 {
            Some(self.entry)
        } else if self.valid & V_PTE != 0 {
            x86_64_pte_to_swp_entry(self.pte)
        } else {
            None
        }
    }
    fn mapcount(&self) -> i32 {
        if self.f_state & FS_LARGE != 0 && self.f_large_mapcount != 0 {
            self.f_large_mapcount
        } else {
            self.f_mapcount
        }
    }
    fn maybe_dma_pinned(&self) -> bool {
        if self.f_state & FS_LARGE != 0 {
            self.f_pincount > 0
        } else {
            self.f_refcount >= GUP_PIN_COUNTING_BIAS
        }
    }
}

/// Whether a probe's return value is a pointer (a folio, `NULL` or an
/// `ERR_PTR`) rather than an integer. These are exactly the roles whose
/// plan requires a function returning `struct folio *` (`ArgSpec.ret_folio`
/// in `plan::arg_spec`): the swap-cache lookups and the GUP-fast grab.
pub fn ret_is_pointer(probe: ProbeId) -> bool {
    matches!(
        probe,
        ProbeId::SwapCacheLookup | ProbeId::MovePagesLookup | ProbeId::GupGrabFast
    )
}

/// Roles whose function returns an integer on some kernels and a folio on
/// others: `swapcache_prepare` (0 or -EEXIST) became the swap-table
/// kernels' `swap_cache_alloc_folio` (the folio, or the one already
/// cached). Such a return is a pointer when its value is a kernel address.
pub fn ret_may_be_pointer(probe: ProbeId) -> bool {
    matches!(probe, ProbeId::SwapcachePrepare)
}

/// A value in the kernel half of the address space and not an errno. The
/// bound is 5-level paging's (the kernel half starts at
/// 0xff00_0000_0000_0000 with LA57, where the direct map and vmemmap sit at
/// 0xff11... and 0xffd4...); under 4-level paging the values between it and
/// 0xffff_8000_0000_0000 are not canonical, so no pointer is misread.
pub fn is_kernel_pointer(ret: i64) -> bool {
    (ret as u64) >= 0xff00_0000_0000_0000 && !names::is_errno(ret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_pointers_of_both_paging_depths_and_no_errno() {
        for p in [
            0xffff_8880_0123_4500u64,
            0xffff_ea00_0012_3400,
            0xff11_0000_0123_4500,
            0xffd4_0000_0012_3400,
        ] {
            assert!(is_kernel_pointer(p as i64), "{p:#x}");
        }
        for v in [0i64, 1, -17, -4095, 0x7fff_ffff_f000, 0x00ff_0000_0000_0000] {
            assert!(!is_kernel_pointer(v), "{v:#x}");
        }
    }

    #[test]
    fn pointer_probes_are_the_plan_roles_that_return_a_folio() {
        use crate::btf::{CType, Param, Proto};
        // A prototype that fits every role's argument needs and returns a
        // folio pointer: the plan accepts it (with ret_folio) exactly for
        // the roles printed as pointers.
        let ptr = |s: &str| CType::PtrTo(s.into());
        let param = |name: &str, ty: CType| Param {
            name: name.into(),
            ty,
        };
        let proto = |ret: CType| Proto {
            ret,
            params: vec![
                param("folio", ptr("folio")),
                param("entry", CType::Named("swp_entry_t".into())),
                param("vmf", ptr("vm_fault")),
                param("mapping", ptr("address_space")),
                param("index", CType::Other),
                param("flags", CType::Other),
                param("src_start", CType::Other),
                param("address", CType::Other),
                param("addr", CType::Other),
            ],
        };
        for p in ProbeId::ALL {
            // The swap-table kernels' one-argument lookup: the entry alone.
            let lookup = Proto {
                ret: ptr("folio"),
                params: vec![param("entry", CType::Named("swp_entry_t".into()))],
            };
            let folio_ret = [proto(ptr("folio")), lookup]
                .iter()
                .any(|pr| crate::plan::arg_spec(*p, pr).is_ok_and(|s| s.ret_folio != 0));
            assert_eq!(
                folio_ret,
                ret_is_pointer(*p) || ret_may_be_pointer(*p),
                "{p:?}"
            );
        }
    }
}
