//! Names of the ABI's values: errnos, return values, swap entries, probe
//! ids and event kinds. Every `Display` here writes without allocating.

use std::fmt;

use detector_common::{swp_offset, swp_type, EventKind, ProbeId};

use super::{is_kernel_pointer, ret_is_pointer, ret_may_be_pointer};

/// Errno names for the values memory-management paths return.
const ERRNO_NAMES: &[(i32, &str)] = &[
    (libc::EPERM, "EPERM"),
    (libc::ENOENT, "ENOENT"),
    (libc::EINTR, "EINTR"),
    (libc::EIO, "EIO"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EFAULT, "EFAULT"),
    (libc::EBUSY, "EBUSY"),
    (libc::EEXIST, "EEXIST"),
    (libc::EINVAL, "EINVAL"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::ERANGE, "ERANGE"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    // Kernel-internal (include/linux/errno.h), not in the C library.
    (512, "ERESTARTSYS"),
    (516, "EIOCBQUEUED"),
];

/// Name of a negative errno return (`-17` -> `EEXIST`).
pub fn errno_name(ret: i64) -> Option<&'static str> {
    ERRNO_NAMES
        .iter()
        .find(|(n, _)| -i64::from(*n) == ret)
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

impl fmt::Display for RetFmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.ret;
        // An errno from a role that may return either prints as an errno.
        let pointer =
            |p: ProbeId| ret_is_pointer(p) || (ret_may_be_pointer(p) && is_kernel_pointer(r));
        match self.probe.map(pointer) {
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

/// A swap entry as `type:offset`, offset in hex: the way the kernel prints
/// swap entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry(pub u64);

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:#x}", swp_type(self.0), swp_offset(self.0))
    }
}

/// [`Entry`] as a `String`.
pub fn fmt_entry(val: u64) -> String {
    Entry(val).to_string()
}

impl Entry {
    /// The entry `type:offset` names, offset in hex with or without `0x`
    /// (the form [`Entry`] prints and findings carry); `None` for anything
    /// else, a type beyond the swap type bits included.
    pub fn parse(s: &str) -> Option<u64> {
        let (ty, off) = s.trim().split_once(':')?;
        let ty: u32 = ty.trim().parse().ok()?;
        if ty >= 1 << detector_common::SWP_TYPE_BITS {
            return None;
        }
        let off = off.trim();
        let off = off
            .strip_prefix("0x")
            .or_else(|| off.strip_prefix("0X"))
            .unwrap_or(off);
        let off = u64::from_str_radix(off, 16).ok()?;
        Some(detector_common::swp_entry(ty, off))
    }
}

/// A probe id's name, or `probe_<n>` for an id this build does not know
/// (a trace from a newer build). Pads like a `str`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeName(pub u16);

impl fmt::Display for ProbeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ProbeId::from_u16(self.0) {
            Some(p) => f.pad(p.name()),
            None => f.pad(&format!("probe_{}", self.0)),
        }
    }
}

impl serde::Serialize for ProbeName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `enter`, `exit` or `tp` (a tracepoint); `?` for a kind this build does
/// not know.
pub fn kind_name(kind: u8) -> &'static str {
    match EventKind::from_u8(kind) {
        Some(EventKind::Enter) => "enter",
        Some(EventKind::Exit) => "exit",
        Some(EventKind::Tracepoint) => "tp",
        None => "?",
    }
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
    fn entries_parse_back_from_their_printed_form() {
        for val in [
            detector_common::swp_entry(0, 0),
            detector_common::swp_entry(1, 0x1f3),
            detector_common::swp_entry(31, detector_common::SWP_OFFSET_MASK),
        ] {
            assert_eq!(Entry::parse(&Entry(val).to_string()), Some(val));
        }
        assert_eq!(
            Entry::parse(" 2:ab "),
            Some(detector_common::swp_entry(2, 0xab))
        );
        for bad in ["32:0x1", "1:", "0x1f3", "1:0xzz", "-1:0x1"] {
            assert_eq!(Entry::parse(bad), None, "{bad}");
        }
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
    fn names_of_unknown_values() {
        assert_eq!(
            ProbeName(ProbeId::SwapCacheLookup as u16).to_string(),
            "swap_cache_lookup"
        );
        assert_eq!(format!("{:<8}|", ProbeName(999)), "probe_999|");
        assert_eq!(kind_name(EventKind::Exit as u8), "exit");
        assert_eq!(kind_name(200), "?");
        assert_eq!(
            Entry(detector_common::swp_entry(1, 0x1f3)).to_string(),
            "1:0x1f3"
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
}
