//! The probe set: each role, how it is observed, and the kernel functions
//! (or tracepoints) that implement it, newest kernel first.

use detector_common::ProbeId;

/// How a role is observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Function entry only.
    Enter,
    /// Function exit only (arguments and return value).
    Exit,
    /// Both.
    Both,
    /// A typed (BTF) tracepoint.
    Tracepoint,
}

/// One role of the probe set: its candidates in order of preference.
pub struct Role {
    pub probe: ProbeId,
    pub hook: Hook,
    /// Kernel symbols (or tracepoint names) that implement the role on some
    /// kernel, newest first. The first one whose BTF prototype fits is used.
    pub candidates: &'static [&'static str],
    /// Tracepoints are hot or redundant when function probes work: they are
    /// only attached in degraded mode.
    pub degraded_only: bool,
}

/// The probe set. Alternates cover 6.1, 6.12, 6.18 and the swap-table
/// kernels (7.x), where the swap cache lives in per-cluster swap tables,
/// SWAP_HAS_CACHE and `swapcache_prepare` are gone and the swap-cache folio
/// itself pins an entry during swap-in (see docs/probes.md for what each
/// 7.x function stands for).
pub const ROLES: &[Role] = &[
    Role {
        probe: ProbeId::SwapCacheLookup,
        hook: Hook::Exit,
        candidates: &["swap_cache_get_folio"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapCacheInsert,
        hook: Hook::Exit,
        // 7.x: the one place both the swap-out allocator
        // (__swap_cache_add_folio) and the swap-in allocation
        // (swap_cache_alloc_folio) put a folio into the swap table.
        candidates: &[
            "__swap_cache_do_add_folio",
            "swap_cache_add_folio",
            "add_to_swap_cache",
        ],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapCacheDelete,
        hook: Hook::Enter,
        // 7.x: __swap_cache_del_folio and the swap-in allocation's roll
        // back (a failed memcg charge) both end here.
        candidates: &[
            "__swap_cache_do_del_folio",
            "__swap_cache_del_folio",
            "__delete_from_swap_cache",
        ],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapEntryAlloc,
        hook: Hook::Exit,
        candidates: &["folio_alloc_swap"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapEntryDup,
        hook: Hook::Exit,
        // 7.x: swap_dup_entry_direct is fork's copy of a swap PTE (what
        // swap_duplicate did); the unmap side became folio_dup_swap.
        candidates: &[
            "swap_duplicate",
            "__swap_duplicate",
            "swap_dup_entry_direct",
        ],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapEntryFree,
        hook: Hook::Enter,
        // 7.x: every slot whose count and cache are both gone is freed by
        // __swap_cluster_free_entries(si, ci, ci_start, nr_pages).
        candidates: &[
            "swap_entries_free",
            "swap_entry_range_free",
            "free_swap_slot",
            "__swap_cluster_free_entries",
        ],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapcachePrepare,
        hook: Hook::Exit,
        // 7.x: the swap-in pin is taken by allocating the folio straight
        // into the swap cache: a folio back (pinned, locked) or -EEXIST
        // (another folio already holds the entry), as swapcache_prepare's
        // 0 or -EEXIST.
        candidates: &["swapcache_prepare", "swap_cache_alloc_folio"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapcacheClear,
        hook: Hook::Enter,
        // 7.x: the pin ends when the folio leaves the swap cache outside
        // reclaim (swap-in done: folio_free_swap; back-outs; zswap
        // writeback). Reclaim's own removal is __swap_cache_del_folio.
        candidates: &["swapcache_clear", "swap_cache_del_folio"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::DoSwapPage,
        hook: Hook::Both,
        candidates: &["do_swap_page"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::FolioMoveAnonRmap,
        hook: Hook::Enter,
        candidates: &["folio_move_anon_rmap", "page_move_anon_rmap"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::MovePages,
        hook: Hook::Both,
        // The per-PMD worker move_pages_ptes (6.18, 7.x; 7.x inlines
        // move_pages) holds the whole lookup -> lock -> recheck -> move
        // sequence of a page, and gives up with -EAGAIN once the source PTE
        // it looked up changes: a retry is a new call. Its present path
        // clears PTEs inline, so per-call windows are what keep a retry's
        // present-path move apart from the lookup before it (the analyzer's
        // "which path a move took"). 6.12 inlines move_pages_pte into
        // move_pages, whose window spans retries; ptep_clear_flush
        // (move_present) marks the present path there.
        candidates: &["move_pages_ptes", "move_pages"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::MovePagesLookup,
        hook: Hook::Exit,
        // 6.18 and 7.x look up with the one-argument swap_cache_get_folio;
        // 6.12 with filemap_get_folio (its swap_cache_get_folio takes a vma
        // and address for readahead accounting, which UFFDIO_MOVE avoids).
        candidates: &["swap_cache_get_folio", "__filemap_get_folio"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::RemoveMapping,
        hook: Hook::Both,
        candidates: &["__remove_mapping"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::TryToUnmapOne,
        hook: Hook::Both,
        candidates: &["try_to_unmap_one"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::MadviseFree,
        hook: Hook::Enter,
        candidates: &["madvise_free_pte_range"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::GupGrab,
        hook: Hook::Exit,
        candidates: &["try_grab_folio", "try_grab_page"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::GupGrabFast,
        hook: Hook::Exit,
        candidates: &["try_grab_folio_fast", "try_grab_folio"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::GupPut,
        hook: Hook::Enter,
        candidates: &["gup_put_folio"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::UnpinUserPage,
        hook: Hook::Enter,
        // Direct I/O releases its pins with unpin_user_folio(folio, npages)
        // (bio_release_pages). 7.x inlines gup_put_folio into it, so the
        // gup_put role no longer sees those releases there.
        candidates: &["unpin_user_folio", "unpin_user_page"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::DoWpPage,
        hook: Hook::Enter,
        candidates: &["do_wp_page"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapRead,
        hook: Hook::Enter,
        candidates: &["swap_read_folio", "swap_readpage"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::MovePresent,
        hook: Hook::Exit,
        candidates: &["ptep_clear_flush"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::LazyfreeMark,
        hook: Hook::Enter,
        candidates: &["folio_mark_lazyfree", "mark_page_lazyfree"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::TaskExit,
        hook: Hook::Tracepoint,
        candidates: &["sched:sched_process_exit"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::TpWriteFolio,
        hook: Hook::Tracepoint,
        candidates: &["vmscan:mm_vmscan_write_folio"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::TpPageFree,
        hook: Hook::Tracepoint,
        candidates: &["kmem:mm_page_free"],
        degraded_only: true,
    },
    Role {
        probe: ProbeId::TpLruInsertion,
        hook: Hook::Tracepoint,
        candidates: &["pagemap:mm_lru_insertion"],
        degraded_only: true,
    },
];
