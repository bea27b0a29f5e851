//! struct folio and struct page as this kernel lays them out: the field
//! offsets and flag bits come from userspace (`Layout`, resolved from BTF),
//! since Rust BPF cannot emit CO-RE relocations.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use detector_common::{
    DiagField, DiagKind, Event, Layout, ProbeId, ABSENT, FS_ANON, FS_ANON_EXCLUSIVE, FS_DIRTY,
    FS_KSM, FS_LARGE, FS_LOCKED, FS_LRU, FS_SWAPBACKED, FS_SWAPCACHE, FS_UPTODATE, FS_WRITEBACK,
    V_FOLIO, V_FOLIO_STATE,
};

use crate::diag;
use crate::kread::{bit, rd32, rd64, rd64_needed};

/// x86_64 `PTE_PFN_MASK` for 4-level and 5-level paging.
pub(crate) const PTE_PFN_MASK: u64 = 0x000f_ffff_ffff_f000;

/// `page_folio()`: a tail page's first word has bit 0 set and holds either
/// its head's address (+1) or, on 7.x with the HugeTLB vmemmap optimization
/// and a power-of-two `struct page`, a mask of high bits that turns the tail
/// page's address into its head's. A mask is all ones down to some bit and
/// zeros below; no vmemmap address looks like that, so the value says which.
#[inline(always)]
pub(crate) fn page_to_folio(page: u64, l: &Layout, probe: ProbeId) -> u64 {
    match rd64_needed(
        page,
        l.page_compound_head,
        probe,
        DiagField::PageCompoundHead,
    ) {
        Some(h) if h & 1 != 0 => {
            let low = !(h & !1);
            if low & low.wrapping_add(1) == 0 {
                page & h
            } else {
                h - 1
            }
        }
        _ => page,
    }
}

/// Folio mapped by a present PTE, through the vmemmap.
#[inline(always)]
pub(crate) fn pte_to_folio(pte: u64, l: &Layout, probe: ProbeId) -> u64 {
    if pte & 1 == 0 {
        return 0;
    }
    if l.page_size_of == ABSENT {
        diag::field_unreadable(probe, DiagField::PageSize, ABSENT, 0);
        return 0;
    }
    // Userspace only asks for this when it found `vmemmap_base`.
    let Some(vmemmap) = rd64_needed(l.vmemmap_base_sym, 0, probe, DiagField::VmemmapBase) else {
        return 0;
    };
    let pfn = (pte & PTE_PFN_MASK) >> 12;
    page_to_folio(vmemmap + pfn * l.page_size_of as u64, l, probe)
}

/// The first struct page of a folio, where every small-folio field lives:
/// one helper call instead of one per field.
pub(crate) struct Head([u64; 8]);

impl Head {
    /// The folio's first 64 bytes, in one helper call.
    #[inline(always)]
    pub(crate) fn read(folio: u64) -> Option<Head> {
        // SAFETY: bpf_probe_read_kernel copes with any address.
        unsafe { bpf_probe_read_kernel(folio as *const [u64; 8]) }
            .ok()
            .map(Head)
    }

    /// Word `i` of the block, selected among constant indices: the verifier
    /// refuses a stack load at a computed offset.
    #[inline(always)]
    fn word(&self, i: u32) -> u64 {
        let mut v = 0;
        let mut k = 0;
        while k < 8 {
            if k == i {
                v = self.0[k as usize];
            }
            k += 1;
        }
        v
    }
    #[inline(always)]
    pub(crate) fn u64_at(&self, folio: u64, off: u32) -> Option<u64> {
        if off < 64 && off % 8 == 0 {
            Some(self.word(off / 8))
        } else {
            rd64(folio, off)
        }
    }
    #[inline(always)]
    pub(crate) fn i32_at(&self, folio: u64, off: u32) -> Option<i32> {
        if off < 64 && off % 4 == 0 {
            let w = self.word(off / 8);
            Some(if off % 8 == 0 {
                w as u32
            } else {
                (w >> 32) as u32
            } as i32)
        } else {
            rd32(folio, off)
        }
    }
}

/// Snapshots the folio's identity, counts and state into `e`.
#[inline(always)]
pub(crate) fn read_folio(e: &mut Event, folio: u64, l: &Layout, probe: ProbeId) {
    e.folio = folio;
    e.valid |= V_FOLIO;
    let Some(head) = Head::read(folio) else {
        diag::report(probe, DiagKind::FolioUnreadable, folio, 0);
        return;
    };
    let Some(flags) = head.u64_at(folio, l.folio_flags) else {
        diag::field_unreadable(probe, DiagField::FolioFlags, l.folio_flags, folio);
        return;
    };
    e.f_flags = flags;
    let mapping = head.u64_at(folio, l.folio_mapping).unwrap_or(0);
    e.f_mapping = mapping;
    e.f_index = head.u64_at(folio, l.folio_index).unwrap_or(0);
    e.f_swap = head.u64_at(folio, l.folio_swap).unwrap_or(0);
    e.f_refcount = head.i32_at(folio, l.folio_refcount).unwrap_or(0);
    e.f_mapcount = head
        .i32_at(folio, l.folio_mapcount)
        .map(|v| v + 1)
        .unwrap_or(0);

    let mut st = 0u32;
    if bit(flags, l.pg_locked) {
        st |= FS_LOCKED;
    }
    let swapbacked = bit(flags, l.pg_swapbacked);
    if swapbacked {
        st |= FS_SWAPBACKED;
        // folio_test_swapcache(): PG_swapcache aliases PG_owner_priv_1, which
        // means something else on folios that are not swap-backed.
        if bit(flags, l.pg_swapcache) {
            st |= FS_SWAPCACHE;
        }
    }
    if bit(flags, l.pg_anon_exclusive) {
        st |= FS_ANON_EXCLUSIVE;
    }
    if bit(flags, l.pg_dirty) {
        st |= FS_DIRTY;
    }
    if bit(flags, l.pg_lru) {
        st |= FS_LRU;
    }
    if bit(flags, l.pg_writeback) {
        st |= FS_WRITEBACK;
    }
    if bit(flags, l.pg_uptodate) {
        st |= FS_UPTODATE;
    }
    if mapping & 1 != 0 {
        st |= FS_ANON;
        if mapping & 3 == 3 {
            st |= FS_KSM;
        }
    }
    e.f_nr_pages = 1;
    if bit(flags, l.pg_head) {
        st |= FS_LARGE;
        e.f_large_mapcount = rd32(folio, l.folio_large_mapcount)
            .map(|v| v + 1)
            .unwrap_or(0);
        e.f_entire_mapcount = rd32(folio, l.folio_entire_mapcount)
            .map(|v| v + 1)
            .unwrap_or(0);
        e.f_pincount = rd32(folio, l.folio_pincount).unwrap_or(0);
        if let Some(n) = rd32(folio, l.folio_nr_pages) {
            e.f_nr_pages = n as u32;
        }
    }
    e.f_state = st;
    e.valid |= V_FOLIO_STATE;
}
