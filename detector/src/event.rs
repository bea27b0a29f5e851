//! Decoding helpers over the raw event ABI, and the stream item every
//! consumer (trace writer, analyzer, TUI) sees.

use detector_common::{
    swp_offset, swp_type, x86_64_pte_to_swp_entry, Event, EventKind, ProbeId, FS_LARGE, V_ENTRY,
    V_ENTRY_PARTIAL, V_PTE,
};

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

/// Pin bias of a small folio's refcount (`GUP_PIN_COUNTING_BIAS`).
pub const GUP_PIN_COUNTING_BIAS: i32 = 1024;
/// `-EEXIST`.
pub const EEXIST: i64 = -17;

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

/// Errno names for the values memory-management paths return.
const ERRNO_NAMES: &[(i64, &str)] = &[
    (1, "EPERM"),
    (2, "ENOENT"),
    (4, "EINTR"),
    (5, "EIO"),
    (11, "EAGAIN"),
    (12, "ENOMEM"),
    (14, "EFAULT"),
    (16, "EBUSY"),
    (17, "EEXIST"),
    (22, "EINVAL"),
    (28, "ENOSPC"),
    (34, "ERANGE"),
    (38, "ENOSYS"),
    (95, "EOPNOTSUPP"),
    (512, "ERESTARTSYS"),
    (516, "EIOCBQUEUED"),
];

/// Name of a negative errno return (`-17` -> `EEXIST`).
pub fn errno_name(ret: i64) -> Option<&'static str> {
    ERRNO_NAMES
        .iter()
        .find(|(n, _)| -n == ret)
        .map(|(_, name)| *name)
}

/// Values in `-4095..=-1` are errnos (`IS_ERR_VALUE`).
pub fn is_errno(ret: i64) -> bool {
    (-4095..=-1).contains(&ret)
}

/// A probe's return value as a person reads it; `Display` allocates
/// nothing. For a probe returning a pointer ([`ret_is_pointer`]): the
/// address in hex, `NULL`, or `ERR(-ENOENT)` / `ERR(-4000)`. For one
/// returning an integer: `-EEXIST` for a known errno, decimal otherwise.
/// With no probe known, errnos by name, values beyond 32 bits in hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetFmt {
    pub probe: Option<ProbeId>,
    pub ret: i64,
}

impl std::fmt::Display for RetFmt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.ret;
        match self.probe.map(ret_is_pointer) {
            Some(true) if r == 0 => f.write_str("NULL"),
            Some(true) if is_errno(r) => match errno_name(r) {
                Some(name) => write!(f, "ERR(-{name})"),
                None => write!(f, "ERR({r})"),
            },
            Some(true) => write!(f, "{:#x}", r as u64),
            _ if errno_name(r).is_some() => write!(f, "-{}", errno_name(r).unwrap_or("")),
            Some(false) => write!(f, "{r}"),
            None if is_errno(r) || r.unsigned_abs() < 1 << 32 => write!(f, "{r}"),
            None => write!(f, "{:#x}", r as u64),
        }
    }
}

/// `type:offset` in hex, the way the kernel prints swap entries.
pub fn fmt_entry(val: u64) -> String {
    format!("{}:{:#x}", swp_type(val), swp_offset(val))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ret(probe: ProbeId, ret: i64) -> String {
        RetFmt {
            probe: Some(probe),
            ret,
        }
        .to_string()
    }

    #[test]
    fn pointer_returns_print_as_address_null_or_err() {
        let folio = 0xffff_ea00_0010_0040u64 as i64;
        for p in [
            ProbeId::SwapCacheLookup,
            ProbeId::MovePagesLookup,
            ProbeId::GupGrabFast,
        ] {
            assert_eq!(ret(p, folio), "0xffffea0000100040");
            assert_eq!(ret(p, 0), "NULL");
            assert_eq!(ret(p, -2), "ERR(-ENOENT)");
            assert_eq!(ret(p, -11), "ERR(-EAGAIN)");
            assert_eq!(ret(p, -4000), "ERR(-4000)");
        }
        // The value from the issue: a 5-level direct-map pointer that
        // printed as a large negative decimal.
        assert_eq!(
            ret(ProbeId::GupGrabFast, -22_116_464_863_339_712),
            "0xffb16d3140221b40"
        );
    }

    #[test]
    fn integer_returns_stay_decimal() {
        assert_eq!(ret(ProbeId::SwapcachePrepare, -17), "-EEXIST");
        assert_eq!(ret(ProbeId::SwapcachePrepare, 0), "0");
        assert_eq!(ret(ProbeId::TryToUnmapOne, 1), "1");
        assert_eq!(ret(ProbeId::GupGrab, -4000), "-4000");
        // An integer probe never turns a large value into an address.
        assert_eq!(ret(ProbeId::RemoveMapping, 1 << 40), "1099511627776");
        let unknown = |r| {
            RetFmt {
                probe: None,
                ret: r,
            }
            .to_string()
        };
        assert_eq!(unknown(-17), "-EEXIST");
        assert_eq!(unknown(5), "5");
        assert_eq!(
            unknown(0xffff_ea00_0000_0040u64 as i64),
            "0xffffea0000000040"
        );
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
            let with_folio_ret = crate::plan::arg_spec(*p, &proto(ptr("folio")));
            let folio_ret = with_folio_ret.is_ok_and(|s| s.ret_folio != 0);
            assert_eq!(folio_ret, ret_is_pointer(*p), "{p:?}");
        }
    }
}
