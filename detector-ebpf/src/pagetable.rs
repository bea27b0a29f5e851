//! Reading one PTE of a user mapping by walking its page table, for the
//! lazyfree filter. x86_64 only, 4- or 5-level paging. Every step is a
//! `bpf_probe_read_kernel` without the page-table lock, so the answer is a
//! snapshot: callers use it only to drop calls the kernel is about to
//! decide the same way, and any read that fails means "don't know".

use detector_common::{Layout, ProbeId};

use crate::folio::{pte_to_folio, PTE_PFN_MASK};
use crate::kread::{bit, rd64};

const PRESENT: u64 = 1 << 0;
/// `_PAGE_PSE`: a huge page at the PUD or PMD level.
const PSE: u64 = 1 << 7;
const DIRTY: u64 = 1 << 6;
/// With 5-level paging the direct map lies below this (4-level puts the
/// whole kernel half above it).
const FOUR_LEVEL_KERNEL_START: u64 = 0xffff_8000_0000_0000;

/// The entry of `table` (a table's direct-map address) that translates
/// `addr` at the level whose index starts at bit `shift`.
#[inline(always)]
fn entry(table: u64, addr: u64, shift: u32) -> Option<u64> {
    let e = rd64(table + ((addr >> shift) & 511) * 8, 0)?;
    (e & PRESENT != 0).then_some(e)
}

/// The next table an entry points to, through the direct map (every
/// level's entry keeps the physical address in the PTE's pfn bits).
#[inline(always)]
fn next(e: u64, direct_map: u64) -> u64 {
    direct_map + (e & PTE_PFN_MASK)
}

/// Whether the PTE mapping `addr` in `vma` is present, dirty and maps
/// `folio`: a small anon folio the kernel will then find written again
/// (`try_to_unmap_one` moves the PTE's dirty bit to the folio before it
/// decides). False whenever anything could not be read, or the address is
/// mapped by a huge page, or the mapping is `VM_DROPPABLE` (whose folios
/// the kernel discards dirty or not).
#[inline(always)]
pub(crate) fn written_again(vma: u64, addr: u64, folio: u64, l: &Layout, probe: ProbeId) -> bool {
    if l.page_offset_base_sym == 0 || l.vmemmap_base_sym == 0 {
        return false;
    }
    match rd64(vma, l.vma_flags) {
        Some(f) if !bit(f, l.vm_droppable_bit) => {}
        _ => return false,
    }
    let Some(mm) = rd64(vma, l.vma_mm) else {
        return false;
    };
    let Some(pgd) = rd64(mm, l.mm_pgd) else {
        return false;
    };
    let Some(dm) = rd64(l.page_offset_base_sym, 0) else {
        return false;
    };
    let mut table = pgd;
    if dm < FOUR_LEVEL_KERNEL_START {
        let Some(e) = entry(table, addr, 48) else {
            return false;
        };
        table = next(e, dm);
    }
    // With 4-level paging the p4d level is folded into the pgd.
    let Some(e) = entry(table, addr, 39) else {
        return false;
    };
    let Some(pud) = entry(next(e, dm), addr, 30) else {
        return false;
    };
    if pud & PSE != 0 {
        return false;
    }
    let Some(pmd) = entry(next(pud, dm), addr, 21) else {
        return false;
    };
    if pmd & PSE != 0 {
        return false;
    }
    let Some(pte) = entry(next(pmd, dm), addr, 12) else {
        return false;
    };
    pte & DIRTY != 0 && pte_to_folio(pte, l, probe) == folio
}
