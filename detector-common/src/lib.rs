//! The event ABI shared by the BPF programs and userspace.
//!
//! Every observation is one fixed-size [`Event`]. The programs send it
//! through the ring buffer as a shorter record that leaves out the fields
//! the probe did not fill ([`ring`]); the reader rebuilds the [`Event`].
//! The layout is part of the trace file format (v1 stores it as is): any
//! change to [`Event`] must bump [`ABI_VERSION`].
#![no_std]

pub mod ring;

/// Version of the [`Event`] layout and of the probe/kind numbering below.
/// v2 kept v1's layout and gave its reserved tail word a meaning
/// ([`Event::task_start`]) and added probes, so v1 files still decode.
pub const ABI_VERSION: u32 = 2;
/// Oldest ABI version whose events this code still decodes.
pub const ABI_VERSION_MIN: u32 = 1;

/// Marks an offset or bit number the running kernel does not have.
pub const ABSENT: u32 = u32::MAX;

/// One observation made by a probe. Plain old data, `#[repr(C)]`, no padding
/// holes (the trailing fields are sized so `size_of` is a multiple of 8).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    /// Address of the folio the probe concerns (0 when none).
    pub folio: u64,
    /// Swap entry as the arch-independent `swp_entry_t.val`: see [`swp_type`]
    /// and [`swp_offset`]. Valid when `valid & V_ENTRY`.
    pub entry: u64,
    /// Raw page-table entry the function saw (x86_64 encoding), `V_PTE`.
    pub pte: u64,
    /// Probe-specific address: user virtual address for faults and unmaps,
    /// the `address_space` pointer for a filemap lookup.
    pub addr: u64,
    /// Return value for exit probes (`V_RET`); pointers are returned as-is
    /// (an `ERR_PTR` shows up as a small negative number).
    pub ret: i64,
    /// Raw `folio->flags` word.
    pub f_flags: u64,
    /// `folio->swap.val`.
    pub f_swap: u64,
    /// Raw `folio->mapping` (the low bits say anon / movable / KSM).
    pub f_mapping: u64,
    /// `folio->index` (for a swap-cache folio on 6.1 this is the swap offset).
    pub f_index: u64,
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    /// Number of pages the call concerns (`nr` argument, or 1).
    pub nr: u32,
    /// `folio->_refcount`.
    pub f_refcount: i32,
    /// `folio->_mapcount + 1` (mapcount of the first page).
    pub f_mapcount: i32,
    /// `folio->_large_mapcount + 1` (total mappings of a large folio), or 0.
    pub f_large_mapcount: i32,
    /// `folio->_entire_mapcount + 1` (PMD mappings of a large folio), or 0.
    pub f_entire_mapcount: i32,
    /// `folio->_pincount` (large folios; small ones pin through `_refcount`).
    pub f_pincount: i32,
    /// Pages in the folio.
    pub f_nr_pages: u32,
    /// Decoded folio state, `FS_*` bits (decoded in the kernel with the bit
    /// numbers resolved from BTF, so userspace needs no layout to read it).
    pub f_state: u32,
    /// Probe-specific integer argument: GUP `flags`, `refs`, ...
    pub arg: u32,
    /// [`ProbeId`] as u16.
    pub probe: u16,
    /// [`EventKind`] as u8.
    pub kind: u8,
    /// `V_*` bits saying which fields carry data.
    pub valid: u8,
    /// `current->comm`.
    pub comm: [u8; 16],
    /// Low 32 bits of the current task's `start_time` (ns since boot): with
    /// `pid` it tells a task from a later one that was given the same tid.
    /// 0 when unknown (ABI v1 files, or the field could not be read).
    pub task_start: u32,
}

/// Size of one event in a v1 trace file and in userspace.
pub const EVENT_SIZE: usize = core::mem::size_of::<Event>();
const _: () = assert!(EVENT_SIZE == 152);
const _: () = assert!(EVENT_SIZE.is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<Layout>() == 152);

// `valid` bits.
pub const V_FOLIO: u8 = 1 << 0;
/// The folio fields (`f_*`) were read successfully.
pub const V_FOLIO_STATE: u8 = 1 << 1;
pub const V_ENTRY: u8 = 1 << 2;
pub const V_PTE: u8 = 1 << 3;
pub const V_RET: u8 = 1 << 4;
pub const V_ADDR: u8 = 1 << 5;
/// The swap entry is only partly known (a filemap lookup that returned no
/// folio: `addr` is the swap address space, `entry` its index in that space).
pub const V_ENTRY_PARTIAL: u8 = 1 << 6;
/// A GUP call made with FOLL_PIN (a pin, not a plain reference).
pub const V_PIN: u8 = 1 << 7;

// `f_state` bits.
pub const FS_LOCKED: u32 = 1 << 0;
/// `folio_test_swapcache()`: PG_swapcache and PG_swapbacked both set.
pub const FS_SWAPCACHE: u32 = 1 << 1;
pub const FS_SWAPBACKED: u32 = 1 << 2;
/// PG_anon_exclusive on the first page.
pub const FS_ANON_EXCLUSIVE: u32 = 1 << 3;
/// PG_head: a large folio.
pub const FS_LARGE: u32 = 1 << 4;
/// `folio->mapping & PAGE_MAPPING_ANON`.
pub const FS_ANON: u32 = 1 << 5;
/// Anon and movable bits both set: a KSM folio.
pub const FS_KSM: u32 = 1 << 6;
pub const FS_DIRTY: u32 = 1 << 7;
pub const FS_LRU: u32 = 1 << 8;
pub const FS_WRITEBACK: u32 = 1 << 9;
pub const FS_UPTODATE: u32 = 1 << 10;

/// Entry / exit of a function, or a tracepoint hit.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Enter = 0,
    Exit = 1,
    Tracepoint = 2,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Enter),
            1 => Some(Self::Exit),
            2 => Some(Self::Tracepoint),
            _ => None,
        }
    }
}

macro_rules! probes {
    ($($(#[$m:meta])* $name:ident = $v:expr, $label:expr;)*) => {
        /// What a probe observes: a role, not a kernel symbol (the symbol
        /// that implements a role differs between kernels).
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ProbeId { $($(#[$m])* $name = $v,)* }

        impl ProbeId {
            pub const ALL: &'static [ProbeId] = &[$(ProbeId::$name,)*];
            pub fn from_u16(v: u16) -> Option<Self> {
                match v { $($v => Some(Self::$name),)* _ => None }
            }
            /// Stable short name used in text output, JSON and the trace header.
            pub fn name(self) -> &'static str {
                match self { $(Self::$name => $label,)* }
            }
            pub fn from_name(s: &str) -> Option<Self> {
                match s { $($label => Some(Self::$name),)* _ => None }
            }
        }
    };
}

probes! {
    /// Swap cache lookup (`swap_cache_get_folio`): entry in, folio out.
    SwapCacheLookup = 0, "swap_cache_lookup";
    /// Folio added to the swap cache under an entry.
    SwapCacheInsert = 1, "swap_cache_insert";
    /// Folio removed from the swap cache.
    SwapCacheDelete = 2, "swap_cache_delete";
    /// Swap entries allocated for a folio (`folio_alloc_swap`).
    SwapEntryAlloc = 3, "swap_entry_alloc";
    /// Swap count raised (`swap_duplicate`, fork / unmap of a swap PTE).
    SwapEntryDup = 4, "swap_entry_dup";
    /// Swap entries returned to the allocator (count reached zero).
    SwapEntryFree = 5, "swap_entry_free";
    /// `swapcache_prepare`: take SWAP_HAS_CACHE (0 or -EEXIST).
    SwapcachePrepare = 6, "swapcache_prepare";
    /// `swapcache_clear`: drop SWAP_HAS_CACHE taken by a sync swap-in.
    SwapcacheClear = 7, "swapcache_clear";
    /// `do_swap_page`: a fault on a swap PTE.
    DoSwapPage = 8, "do_swap_page";
    /// `folio_move_anon_rmap` (`page_move_anon_rmap` on 6.1).
    FolioMoveAnonRmap = 9, "folio_move_anon_rmap";
    /// `move_pages`: the UFFDIO_MOVE window.
    MovePages = 10, "move_pages";
    /// Swap-cache lookup made through `__filemap_get_folio` inside a
    /// `move_pages` window (only emitted while the task is in that window).
    MovePagesLookup = 11, "move_pages_lookup";
    /// `__remove_mapping`: reclaim freeing a folio from its mapping.
    RemoveMapping = 12, "remove_mapping";
    /// `try_to_unmap_one`: reclaim dropping one mapping of a folio.
    TryToUnmapOne = 13, "try_to_unmap_one";
    /// `madvise_free_pte_range`: MADV_FREE marking a range lazyfree.
    MadviseFree = 14, "madvise_free";
    /// `try_grab_folio` (slow GUP / `try_grab_page` on 6.1).
    GupGrab = 15, "gup_grab";
    /// `try_grab_folio_fast` (lockless GUP; `try_grab_folio` on 6.1).
    GupGrabFast = 16, "gup_grab_fast";
    /// `gup_put_folio`: a GUP reference or pin dropped.
    GupPut = 17, "gup_put";
    /// `unpin_user_page`.
    UnpinUserPage = 18, "unpin_user_page";
    /// `do_wp_page`: write fault on a write-protected PTE (COW / reuse).
    DoWpPage = 19, "do_wp_page";
    /// Swap read of a folio (`swap_read_folio`).
    SwapRead = 20, "swap_read";
    /// Tracepoint `sched:sched_process_exit`: a task (thread) exits; its
    /// windows close with it, and its tid may be given to a new task.
    TaskExit = 21, "task_exit";
    /// The present-PTE path of UFFDIO_MOVE: `ptep_clear_flush` returning
    /// the source PTE of a mapped folio inside a `move_pages` window (only
    /// emitted in the window). The swap-PTE path calls no such function
    /// before `folio_move_anon_rmap`, which is how the two are told apart.
    MovePresent = 22, "move_present";
    /// `folio_mark_lazyfree` (`mark_page_lazyfree` on 6.1): MADV_FREE made
    /// the folio lazyfree (where the seed-003 story starts).
    LazyfreeMark = 23, "lazyfree_mark";
    /// Tracepoint `vmscan:mm_vmscan_write_folio` (degraded mode: swap-out).
    TpWriteFolio = 32, "tp_vmscan_write_folio";
    /// Tracepoint `kmem:mm_page_free` (degraded mode: folio freed).
    TpPageFree = 33, "tp_page_free";
    /// Tracepoint `pagemap:mm_lru_insertion` (degraded mode: folio state).
    TpLruInsertion = 34, "tp_lru_insertion";
}

/// Number of slots in per-probe counter maps (indexed by `ProbeId as u32`).
pub const MAX_PROBES: u32 = 64;

// Names of the BPF object's maps and globals, which userspace looks up by
// name. aya-ebpf's `#[map]` names a map after its static (its `name = ..`
// takes only a literal), so the BPF crate's statics carry these exact
// identifiers; the detector's `bpf_object_names` test reads the built
// object and fails when the two disagree.

/// Ring buffer of [`ring`] records (resized by userspace before load).
pub const MAP_EVENTS: &str = "EVENTS";
/// Per-CPU, per-probe count of events lost to a full ring buffer or a
/// skipped kretprobe.
pub const MAP_LOST: &str = "LOST";
/// The running kernel's [`Layout`], one slot.
pub const MAP_LAYOUT: &str = "LAYOUT";
/// One [`ArgSpec`] per probe.
pub const MAP_ARGS: &str = "ARGS";
/// Threads inside a UFFDIO_MOVE window (BPF side only).
pub const MAP_IN_MOVE: &str = "IN_MOVE";
/// kprobe-mode arguments saved for the kretprobe (BPF side only).
pub const MAP_STASH: &str = "STASH";
/// Calls whose entry passed a lazyfree filter (BPF side only).
pub const MAP_GATE: &str = "GATE";
/// Diagnostic reports counted per kind and probe, to rate-limit them (BPF
/// side only).
pub const MAP_DIAG: &str = "DIAG";
/// Per-CPU slots where the programs build an event before packing it
/// (BPF side only).
pub const MAP_SCRATCH: &str = "SCRATCH";
/// aya-log's ring buffer of log records (aya-log-ebpf names it; userspace
/// reads it with aya-log's `EbpfLogger`).
pub const MAP_AYA_LOGS: &str = "AYA_LOGS";
/// Every map of the object.
pub const MAPS: &[&str] = &[
    MAP_EVENTS,
    MAP_LOST,
    MAP_LAYOUT,
    MAP_ARGS,
    MAP_IN_MOVE,
    MAP_STASH,
    MAP_GATE,
    MAP_DIAG,
    MAP_SCRATCH,
    MAP_AYA_LOGS,
];
/// The capture [`Filter`], a read-only global set before load.
pub const GLOBAL_FILTER: &str = "FILTER";
/// Unread ring-buffer bytes at which a submit wakes the consumer, a
/// read-only global set before load.
pub const GLOBAL_WAKEUP_BYTES: &str = "WAKEUP_BYTES";
/// The most verbose level the programs' diagnostics are sent at (aya-log's
/// `AYA_LOG_LEVEL`, a read-only `u8` global: 0 sends nothing, 1 errors ...
/// 5 trace), set before load from `--bpf-log`.
pub const GLOBAL_LOG_LEVEL: &str = "AYA_LOG_LEVEL";
/// Every global userspace sets.
pub const GLOBALS: &[&str] = &[GLOBAL_FILTER, GLOBAL_WAKEUP_BYTES, GLOBAL_LOG_LEVEL];

/// A diagnostic the BPF programs report through aya-log (`--bpf-log`),
/// numbered for the wire: the programs send the numbers (probe, kind, two
/// values, the occurrence count) and userspace writes the sentence, so a
/// program holds no message text (aya-log copies text byte by byte, which
/// the verifier would check at every call site).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiagKind {
    /// `bpf_get_func_arg` refused a position (a: the position, b: the error).
    ArgUnreadable = 0,
    /// `bpf_get_func_ret` refused (a: the error).
    RetUnreadable = 1,
    /// The first bytes of a folio could not be read; the event has the
    /// address without the state (a: the folio).
    FolioUnreadable = 2,
    /// A relevance filter could not read its folio and dropped the call
    /// (a: the folio).
    FolioDropped = 3,
    /// A field the event needs has no offset on this kernel (a: [`DiagField`]).
    OffsetUnknown = 4,
    /// Reading a field at a known offset failed (a: [`DiagField`], b: the
    /// address of the object read).
    ReadFailed = 5,
    /// The LAYOUT map could not be read; the event was dropped.
    LayoutUnreadable = 6,
    /// kprobe mode: an earlier call's arguments were still stashed.
    StashTaken = 7,
    /// kprobe mode: no room to stash this call's arguments.
    StashFull = 8,
    /// kprobe mode: the kretprobe found nothing stashed.
    NothingStashed = 9,
}

/// Number of [`DiagKind`]s: rows of the programs' `DIAG` counters.
pub const DIAG_KINDS: u32 = 10;

impl DiagKind {
    pub const ALL: [DiagKind; DIAG_KINDS as usize] = [
        DiagKind::ArgUnreadable,
        DiagKind::RetUnreadable,
        DiagKind::FolioUnreadable,
        DiagKind::FolioDropped,
        DiagKind::OffsetUnknown,
        DiagKind::ReadFailed,
        DiagKind::LayoutUnreadable,
        DiagKind::StashTaken,
        DiagKind::StashFull,
        DiagKind::NothingStashed,
    ];

    pub fn from_u32(v: u32) -> Option<DiagKind> {
        DiagKind::ALL.get(v as usize).copied()
    }

    /// The level it is reported at, in aya-log's numbering (1 error,
    /// 2 warn, 3 info, 4 debug, 5 trace): a layout the programs did not
    /// expect is an error, a failed read a warning, kprobe mode's lost
    /// exits (already counted as lost events) debug.
    pub const fn level(self) -> u8 {
        match self {
            DiagKind::OffsetUnknown | DiagKind::LayoutUnreadable => 1,
            DiagKind::ArgUnreadable
            | DiagKind::RetUnreadable
            | DiagKind::FolioUnreadable
            | DiagKind::FolioDropped
            | DiagKind::ReadFailed => 2,
            DiagKind::StashTaken | DiagKind::StashFull | DiagKind::NothingStashed => 4,
        }
    }
}

/// A kernel field (or size) a program needs, named in [`DiagKind::OffsetUnknown`]
/// and [`DiagKind::ReadFailed`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiagField {
    FolioFlags = 0,
    VmfOrigPte = 1,
    VmfAddress = 2,
    TaskStartTime = 3,
    PageCompoundHead = 4,
    PageSize = 5,
    VmemmapBase = 6,
    SwapInfoType = 7,
    SwapInfoClusterInfo = 8,
    SwapClusterGeometry = 9,
}

impl DiagField {
    pub const ALL: [DiagField; 10] = [
        DiagField::FolioFlags,
        DiagField::VmfOrigPte,
        DiagField::VmfAddress,
        DiagField::TaskStartTime,
        DiagField::PageCompoundHead,
        DiagField::PageSize,
        DiagField::VmemmapBase,
        DiagField::SwapInfoType,
        DiagField::SwapInfoClusterInfo,
        DiagField::SwapClusterGeometry,
    ];

    pub fn from_u64(v: u64) -> Option<DiagField> {
        usize::try_from(v)
            .ok()
            .and_then(|i| DiagField::ALL.get(i).copied())
    }

    pub fn name(self) -> &'static str {
        match self {
            DiagField::FolioFlags => "folio.flags",
            DiagField::VmfOrigPte => "vm_fault.orig_pte",
            DiagField::VmfAddress => "vm_fault.address",
            DiagField::TaskStartTime => "task_struct.start_time",
            DiagField::PageCompoundHead => "page.compound_head",
            DiagField::PageSize => "the size of struct page",
            DiagField::VmemmapBase => "vmemmap_base",
            DiagField::SwapInfoType => "swap_info_struct.type",
            DiagField::SwapInfoClusterInfo => "swap_info_struct.cluster_info",
            DiagField::SwapClusterGeometry => "the swap cluster geometry",
        }
    }
}

/// Field offsets and flag bits of the running kernel, resolved from BTF by
/// userspace and handed to the BPF programs in the `LAYOUT` map before any
/// probe attaches.
/// Offsets are bytes from the start of the struct; [`ABSENT`] when the field
/// does not exist on this kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub folio_flags: u32,
    pub folio_mapping: u32,
    pub folio_index: u32,
    pub folio_swap: u32,
    pub folio_mapcount: u32,
    pub folio_refcount: u32,
    pub folio_large_mapcount: u32,
    pub folio_entire_mapcount: u32,
    pub folio_pincount: u32,
    pub folio_nr_pages: u32,
    /// `struct vm_fault.orig_pte`.
    pub vmf_orig_pte: u32,
    /// `struct vm_fault.address` (`real_address` is not needed).
    pub vmf_address: u32,
    /// `enum pageflags` bit numbers.
    pub pg_locked: u32,
    pub pg_swapcache: u32,
    pub pg_swapbacked: u32,
    pub pg_anon_exclusive: u32,
    pub pg_head: u32,
    pub pg_dirty: u32,
    pub pg_lru: u32,
    pub pg_writeback: u32,
    pub pg_uptodate: u32,
    /// `FOLL_PIN` bit value in GUP `flags`.
    pub foll_pin: u32,
    /// `sizeof(struct page)`, to turn a PTE's pfn into a `struct page *`.
    pub page_size_of: u32,
    /// `struct page.compound_head` (bit 0 set on tail pages).
    pub page_compound_head: u32,
    /// `struct task_struct.start_time` (ns since boot, monotonic).
    pub task_start_time: u32,
    /// `struct swap_info_struct.type` (a `signed char`: the swap type).
    pub si_type: u32,
    /// `struct swap_info_struct.cluster_info` (the cluster array).
    pub si_cluster_info: u32,
    /// `sizeof(struct swap_cluster_info)`.
    pub ci_size_of: u32,
    /// Pages per swap cluster (`SWAPFILE_CLUSTER`).
    pub cluster_pages: u32,
    /// `struct vm_area_struct.vm_mm`.
    pub vma_mm: u32,
    /// `struct vm_area_struct.vm_flags`.
    pub vma_flags: u32,
    /// `VM_DROPPABLE`'s bit number in `vm_flags` ([`ABSENT`]: unknown).
    pub vm_droppable_bit: u32,
    /// `struct mm_struct.pgd`.
    pub mm_pgd: u32,
    pub _pad: u32,
    /// Address of the `vmemmap_base` variable (0: use the fixed default).
    pub vmemmap_base_sym: u64,
    /// Address of the `page_offset_base` variable, the direct map's base
    /// (0: hidden, and page tables are not walked).
    pub page_offset_base_sym: u64,
}

impl Layout {
    pub const EMPTY: Layout = Layout {
        folio_flags: ABSENT,
        folio_mapping: ABSENT,
        folio_index: ABSENT,
        folio_swap: ABSENT,
        folio_mapcount: ABSENT,
        folio_refcount: ABSENT,
        folio_large_mapcount: ABSENT,
        folio_entire_mapcount: ABSENT,
        folio_pincount: ABSENT,
        folio_nr_pages: ABSENT,
        vmf_orig_pte: ABSENT,
        vmf_address: ABSENT,
        pg_locked: ABSENT,
        pg_swapcache: ABSENT,
        pg_swapbacked: ABSENT,
        pg_anon_exclusive: ABSENT,
        pg_head: ABSENT,
        pg_dirty: ABSENT,
        pg_lru: ABSENT,
        pg_writeback: ABSENT,
        pg_uptodate: ABSENT,
        foll_pin: 0,
        page_size_of: ABSENT,
        page_compound_head: ABSENT,
        task_start_time: ABSENT,
        si_type: ABSENT,
        si_cluster_info: ABSENT,
        ci_size_of: ABSENT,
        cluster_pages: ABSENT,
        vma_mm: ABSENT,
        vma_flags: ABSENT,
        vm_droppable_bit: ABSENT,
        mm_pgd: ABSENT,
        _pad: 0,
        vmemmap_base_sym: 0,
        page_offset_base_sym: 0,
    };
}

/// Marks an argument a function does not have.
pub const NO_ARG: u8 = 0xff;

/// Where a probe finds its objects among the traced function's arguments.
/// Userspace fills one per probe (map `ARGS`, indexed by [`ProbeId`]) from
/// the BTF prototype of the symbol it attached, so one BPF program serves
/// every kernel's variant of a role (e.g. the folio is argument 0 of
/// `__delete_from_swap_cache` but argument 1 of `__swap_cache_del_folio`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgSpec {
    /// `struct folio *` argument.
    pub folio: u8,
    /// `struct page *` argument (resolved to its folio via `compound_head`).
    pub page: u8,
    /// `swp_entry_t` argument.
    pub entry: u8,
    /// Page count / refs argument (`nr`, `nr_pages`, `refs`, `order`).
    pub nr: u8,
    /// `struct vm_fault *` argument (PTE, address and, for wp faults, folio).
    pub vmf: u8,
    /// `struct vm_area_struct *` argument (only the lazyfree filter reads it).
    pub vma: u8,
    /// Address-like argument stored in `Event::addr`.
    pub addr: u8,
    /// GUP `flags` argument.
    pub gup_flags: u8,
    /// Page-cache index argument (filemap lookups).
    pub index: u8,
    /// The return value is a `struct folio *` (NULL / ERR_PTR = none).
    pub ret_folio: u8,
    /// The return value is a `swp_entry_t`.
    pub ret_entry: u8,
    /// Take the entry from `folio->swap` (read after the call on exit).
    pub entry_from_folio: u8,
    /// `nr` argument is an order: pages = 1 << nr.
    pub nr_is_order: u8,
    /// Resolve the folio from the PTE in `vmf->orig_pte` when present.
    pub folio_from_pte: u8,
    /// Whether the function returns a value at all (exit probes).
    pub has_ret: u8,
    /// Nonzero when the spec has been filled in (probe is planned).
    pub enabled: u8,
    /// In-kernel relevance filter (`REL_*`): calls no analyzer rule can
    /// use are dropped before they cost a ring-buffer record. 0 = every call.
    pub relevance: u8,
    /// The return value is a `pte_t` (stored in `Event::pte`); the folio it
    /// maps is resolved through the vmemmap.
    pub ret_pte: u8,
    /// With `entry_from_folio` and an `index` argument: the entry asked for
    /// is `folio->swap` with its low `entry_index_bits` bits replaced by the
    /// index (a swap address space covers 2^bits entries). A large folio's
    /// `folio->swap` is its first entry, not the one looked up.
    pub entry_index_bits: u8,
    /// The function concerns the whole folio and takes no count: `nr` is
    /// the folio's page count (a large folio covers `nr` swap entries).
    pub nr_from_folio: u8,
    /// The swap entry as (device, cluster, offset in the cluster), the way
    /// the swap-table kernels' cluster functions take it: a
    /// `struct swap_info_struct *` argument, a `struct swap_cluster_info *`
    /// argument and the offset argument. The entry is
    /// `swp_entry(si->type, (ci - si->cluster_info) * SWAPFILE_CLUSTER + off)`.
    pub si: u8,
    pub ci: u8,
    pub ci_off: u8,
    /// Width of the return type in bits when narrower than a register (8
    /// for `bool`, 32 for `int`), else 0. The x86-64 ABI leaves the upper
    /// bits of the return register undefined, and compilers differ (a
    /// kernel built with another configuration returned -EEXIST as
    /// 0xffffffef): the programs narrow, and sign-extend a signed type.
    pub ret_bits: u8,
    pub ret_signed: u8,
}

/// Entry: only clean anon folios (not dirty; swap-backed or not, since
/// MADV_FREE clears PG_swapbacked from a per-CPU batch the call itself may
/// drain) holding references beyond 1 + mapcount (large folios kept);
/// exit: only the calls whose entry passed. What the lazyfree rules, the
/// only consumers of `try_to_unmap_one`, start from.
pub const REL_LAZYFREE: u8 = 1;
/// Only folios that may be DMA-pinned: refcount at least
/// `GUP_PIN_COUNTING_BIAS`, or large (whose pins are counted apart), or
/// not resolvable (kept, since nothing can be said). What `cow_of_pinned`
/// needs of `do_wp_page`.
pub const REL_MAYBE_PINNED: u8 = 2;
/// Only calls that returned nonzero (an error): `swap_duplicate` succeeds
/// on every fork of a swapped range, and no rule needs the successes.
pub const REL_FAILED: u8 = 4;
/// Only calls made outside a UFFDIO_MOVE window: where the move's own
/// swap-cache lookup is the same function, the `move_pages_lookup` role
/// reports the calls inside the window and this one the rest, so each
/// call is one event.
pub const REL_OUTSIDE_MOVE: u8 = 8;
/// `GUP_PIN_COUNTING_BIAS` (include/linux/mm.h).
pub const GUP_PIN_BIAS: i32 = 1024;

impl ArgSpec {
    pub const NONE: ArgSpec = ArgSpec {
        folio: NO_ARG,
        page: NO_ARG,
        entry: NO_ARG,
        nr: NO_ARG,
        vmf: NO_ARG,
        vma: NO_ARG,
        addr: NO_ARG,
        gup_flags: NO_ARG,
        index: NO_ARG,
        ret_folio: 0,
        ret_entry: 0,
        entry_from_folio: 0,
        nr_is_order: 0,
        folio_from_pte: 0,
        has_ret: 0,
        enabled: 0,
        relevance: 0,
        ret_pte: 0,
        entry_index_bits: 0,
        nr_from_folio: 0,
        si: NO_ARG,
        ci: NO_ARG,
        ci_off: NO_ARG,
        ret_bits: 0,
        ret_signed: 0,
    };
}

/// Capture filters, set as a global before load. Zero means "no filter".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only tasks of this thread group (tgid).
    pub tgid: u32,
    pub _pad: u32,
    /// Only tasks in this cgroup v2 (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
}

// SAFETY: both are #[repr(C)], consist only of integers and have no padding
// holes, so any byte pattern is a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Layout {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Filter {}
// SAFETY: as above (bytes only).
#[cfg(feature = "user")]
unsafe impl aya::Pod for ArgSpec {}

/// Lowest x86_64 kernel address with 5-level paging (LA57); with 4-level
/// paging the kernel half starts higher, at 0xffff_8000_0000_0000, so this
/// bound holds for both.
pub const KERNEL_ADDR_MIN: u64 = 0xff00_0000_0000_0000;
/// `MAX_ERRNO`: the last 4095 values of the address space are `ERR_PTR`s.
pub const MAX_ERRNO: u64 = 4095;

/// Whether a pointer-sized value returned by the kernel is a real kernel
/// pointer (not NULL, not an `ERR_PTR`, not a user address).
pub const fn is_kernel_ptr(v: u64) -> bool {
    v >= KERNEL_ADDR_MIN && v < 0u64.wrapping_sub(MAX_ERRNO)
}

/// Bits of the swap type in the arch-independent `swp_entry_t`
/// (`MAX_SWAPFILES_SHIFT`).
pub const SWP_TYPE_BITS: u32 = 5;
/// `SWP_TYPE_SHIFT` = `BITS_PER_XA_VALUE - MAX_SWAPFILES_SHIFT` on 64-bit.
pub const SWP_TYPE_SHIFT: u32 = 63 - SWP_TYPE_BITS;
pub const SWP_OFFSET_MASK: u64 = (1u64 << SWP_TYPE_SHIFT) - 1;

pub const fn swp_type(val: u64) -> u32 {
    (val >> SWP_TYPE_SHIFT) as u32
}
pub const fn swp_offset(val: u64) -> u64 {
    val & SWP_OFFSET_MASK
}
pub const fn swp_entry(ty: u32, offset: u64) -> u64 {
    ((ty as u64) << SWP_TYPE_SHIFT) | (offset & SWP_OFFSET_MASK)
}

/// x86_64 swap PTE decoding (`__pte_to_swp_entry`): type in the top
/// `SWP_TYPE_BITS`, offset stored inverted from bit 9 (L1TF mitigation).
/// Returns the arch-independent entry value, or `None` for a present / empty PTE.
pub const fn x86_64_pte_to_swp_entry(pte: u64) -> Option<u64> {
    const PAGE_PRESENT: u64 = 1;
    const PAGE_PROTNONE: u64 = 1 << 8;
    if pte == 0 || pte & (PAGE_PRESENT | PAGE_PROTNONE) != 0 {
        return None;
    }
    let ty = (pte >> (64 - SWP_TYPE_BITS)) as u32;
    let offset = (!pte) << SWP_TYPE_BITS >> (9 + SWP_TYPE_BITS);
    Some(swp_entry(ty, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swp_entry_round_trip() {
        let v = swp_entry(3, 0x1234_5678);
        assert_eq!(swp_type(v), 3);
        assert_eq!(swp_offset(v), 0x1234_5678);
    }

    #[test]
    fn x86_pte_decodes_type_and_offset() {
        // __swp_entry(type, offset): (~offset << SWP_OFFSET_SHIFT >> SWP_TYPE_BITS) | (type << (64 - SWP_TYPE_BITS))
        let ty = 1u64;
        let off = 0x4242u64;
        let pte = ((!off) << 14 >> 5) | (ty << 59);
        // Flag bits below bit 9 (soft-dirty, exclusive, uffd-wp) must not leak in.
        let pte = pte & !0x1ff | 0b10;
        assert_eq!(x86_64_pte_to_swp_entry(pte), Some(swp_entry(1, 0x4242)));
        assert_eq!(x86_64_pte_to_swp_entry(0x8000_0000_0000_0067), None);
        assert_eq!(x86_64_pte_to_swp_entry(0), None);
    }

    #[test]
    fn kernel_pointers_under_both_paging_modes() {
        assert!(is_kernel_ptr(0xffff_ea00_0010_0040)); // 4-level vmemmap
        assert!(is_kernel_ptr(0xffd4_0000_0010_0040)); // 5-level vmemmap
        assert!(!is_kernel_ptr(0));
        assert!(!is_kernel_ptr(0x7fff_ffff_f000));
        assert!(!is_kernel_ptr((-11i64) as u64)); // ERR_PTR(-EAGAIN)
    }

    #[test]
    fn probe_ids_round_trip() {
        for p in ProbeId::ALL {
            assert_eq!(ProbeId::from_u16(*p as u16), Some(*p));
            assert_eq!(ProbeId::from_name(p.name()), Some(*p));
            assert!((*p as u32) < MAX_PROBES);
        }
    }
}
