//! Kernel side of the detector: one small program per role and attach mode.
//!
//! Every program funnels into [`emit`], which reads the objects a role
//! concerns from the traced function's arguments at the positions userspace
//! resolved from BTF (map `ARGS`), snapshots the folio's state with the field
//! offsets userspace resolved (global `LAYOUT`), and writes one fixed-size
//! [`Event`] into the ring buffer. Rust BPF cannot emit CO-RE relocations,
//! which is why both tables come from userspace at load time.
#![no_std]
#![no_main]

use core::ffi::c_void;
use core::ptr::read_volatile;

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{bpf_get_func_arg, bpf_get_func_ret},
    },
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, map},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    EbpfContext,
};
use detector_common::{
    ArgSpec, Event, EventKind, Filter, Layout, ProbeId, ABSENT, FS_ANON, FS_ANON_EXCLUSIVE,
    FS_DIRTY, FS_KSM, FS_LARGE, FS_LOCKED, FS_LRU, FS_SWAPBACKED, FS_SWAPCACHE, FS_UPTODATE,
    FS_WRITEBACK, GUP_PIN_BIAS, MAX_PROBES, NO_ARG, REL_FAILED, REL_LAZYFREE, REL_MAYBE_PINNED,
    REL_OUTSIDE_MOVE, V_ADDR, V_ENTRY, V_ENTRY_PARTIAL, V_FOLIO, V_FOLIO_STATE, V_PIN, V_PTE,
    V_RET,
};

/// Resolved by userspace from the running kernel's BTF, written before any
/// probe attaches. A map rather than a global so programs read it in place
/// through a map-value pointer instead of copying it onto the 512-byte stack.
#[map]
static LAYOUT: Array<Layout> = Array::with_max_entries(1, 0);

/// Capture filters (zero = off), set by userspace before load.
#[no_mangle]
static FILTER: Filter = Filter {
    tgid: 0,
    _pad: 0,
    cgroup_id: 0,
};

/// Bytes of unread data at which a submit wakes the consumer. Below it
/// records go in silently and userspace drains on its own timer, so a busy
/// kernel path does not pay an irq_work and a consumer wakeup per event.
/// Set by userspace before load; 0 wakes on every record.
#[no_mangle]
static WAKEUP_BYTES: u64 = 0;

/// Resized by userspace (`--ring-size`) before load.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Per-probe count of events dropped because the ring buffer was full.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_PROBES, 0);

/// Per-probe argument positions, filled by userspace from BTF.
#[map]
static ARGS: Array<ArgSpec> = Array::with_max_entries(MAX_PROBES, 0);

/// Threads currently inside `move_pages` (the UFFDIO_MOVE window).
#[map]
static IN_MOVE: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// kprobe mode only: arguments saved at entry for the matching kretprobe,
/// keyed by `tid << 16 | probe`.
#[map]
static STASH: HashMap<u64, [u64; 6]> = HashMap::with_max_entries(16384, 0);

/// Calls whose entry passed a `REL_LAZYFREE` filter, keyed like `STASH`,
/// so their exit is kept even though the call changed
/// the folio (try_to_unmap_one makes a re-dirtied folio swap-backed).
#[map]
static GATE: HashMap<u64, u8> = HashMap::with_max_entries(16384, 0);

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

/// x86_64 `PTE_PFN_MASK` for 4-level and 5-level paging.
const PTE_PFN_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Where the arguments of the traced call come from.
trait Args {
    fn arg(&self, n: u8) -> Option<u64>;
    fn ret(&self) -> Option<u64>;
}

/// fentry / fexit: the trampoline's saved arguments, read with
/// `bpf_get_func_arg`, which bounds-checks a runtime index (a plain ctx load
/// needs a constant offset valid for the attach target's prototype).
struct Tramp {
    ctx: *mut c_void,
    exit: bool,
}

impl Args for Tramp {
    #[inline(always)]
    fn arg(&self, n: u8) -> Option<u64> {
        if n == NO_ARG {
            return None;
        }
        let mut v = 0u64;
        // SAFETY: ctx is the tracing context the kernel passed in; the helper
        // checks `n` against the traced function's argument count.
        let r = unsafe { bpf_get_func_arg(self.ctx, n as u32, &mut v) };
        if r == 0 {
            Some(v)
        } else {
            None
        }
    }
    #[inline(always)]
    fn ret(&self) -> Option<u64> {
        if !self.exit {
            return None;
        }
        let mut v = 0u64;
        // SAFETY: only called from fexit programs, whose ctx carries the
        // return value.
        let r = unsafe { bpf_get_func_ret(self.ctx, &mut v) };
        if r == 0 {
            Some(v)
        } else {
            None
        }
    }
}

/// kprobe: the six argument registers of `pt_regs`, each read at its own
/// constant offset (the verifier refuses a computed offset into ctx, which
/// is what a runtime index would compile to).
#[inline(always)]
fn regs(ctx: &ProbeContext) -> Fixed {
    Fixed {
        a: [
            ctx.arg::<u64>(0).unwrap_or(0),
            ctx.arg::<u64>(1).unwrap_or(0),
            ctx.arg::<u64>(2).unwrap_or(0),
            ctx.arg::<u64>(3).unwrap_or(0),
            ctx.arg::<u64>(4).unwrap_or(0),
            ctx.arg::<u64>(5).unwrap_or(0),
        ],
        n: 6,
        ret: None,
    }
}

/// A typed tracepoint argument as a plain number: the verifier tracks
/// BTF pointers and refuses arithmetic on them, but the programs only ever
/// use them as addresses for `bpf_probe_read_kernel`.
#[inline(always)]
fn scalar(v: u64) -> u64 {
    // SAFETY: reads a u64 from our own stack slot.
    unsafe { bpf_probe_read_kernel(&v as *const u64) }.unwrap_or(0)
}

/// Arguments already copied out (kretprobe from the stash, tracepoints).
struct Fixed {
    a: [u64; 6],
    n: u8,
    ret: Option<u64>,
}

impl Args for Fixed {
    #[inline(always)]
    fn arg(&self, n: u8) -> Option<u64> {
        if n >= self.n {
            return None;
        }
        match n {
            0 => Some(self.a[0]),
            1 => Some(self.a[1]),
            2 => Some(self.a[2]),
            3 => Some(self.a[3]),
            4 => Some(self.a[4]),
            5 => Some(self.a[5]),
            _ => None,
        }
    }
    #[inline(always)]
    fn ret(&self) -> Option<u64> {
        self.ret
    }
}

#[inline(always)]
fn layout() -> Option<&'static Layout> {
    LAYOUT.get(0)
}

#[inline(always)]
fn bump(map: &PerCpuArray<u64>, probe: u32) {
    if let Some(p) = map.get_ptr_mut(probe) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn pass_filter() -> bool {
    // SAFETY: as in `layout`.
    let f = unsafe { read_volatile(&FILTER) };
    if f.tgid != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 != f.tgid {
        return false;
    }
    // SAFETY: helper has no preconditions in tracing programs.
    if f.cgroup_id != 0 && unsafe { bpf_get_current_cgroup_id() } != f.cgroup_id {
        return false;
    }
    true
}

#[inline(always)]
fn rd64(base: u64, off: u32) -> Option<u64> {
    if off == ABSENT || base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copes with any address (faults return
    // an error instead of oopsing).
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const u64) }.ok()
}

#[inline(always)]
fn rd32(base: u64, off: u32) -> Option<i32> {
    if off == ABSENT || base == 0 {
        return None;
    }
    // SAFETY: as in rd64.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const i32) }.ok()
}

/// Low 32 bits of the current task's `start_time`, 0 when unreadable.
#[inline(always)]
fn task_start(l: &Layout) -> u32 {
    // SAFETY: helper has no preconditions; the result is only used as an
    // address for bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    rd64(task, l.task_start_time).map_or(0, |v| v as u32)
}

#[inline(always)]
fn bit(word: u64, b: u32) -> bool {
    b < 64 && (word >> b) & 1 != 0
}

#[inline(always)]
fn is_kptr(v: u64) -> bool {
    detector_common::is_kernel_ptr(v)
}

/// `page_folio()`: a tail page's first word has bit 0 set and holds either
/// its head's address (+1) or, on 7.x with the HugeTLB vmemmap optimization
/// and a power-of-two `struct page`, a mask of high bits that turns the tail
/// page's address into its head's. A mask is all ones down to some bit and
/// zeros below; no vmemmap address looks like that, so the value says which.
#[inline(always)]
fn page_to_folio(page: u64, l: &Layout) -> u64 {
    match rd64(page, l.page_compound_head) {
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
fn pte_to_folio(pte: u64, l: &Layout) -> u64 {
    if pte & 1 == 0 || l.page_size_of == ABSENT {
        return 0;
    }
    // Userspace only asks for this when it found `vmemmap_base`.
    let vmemmap = match rd64(l.vmemmap_base_sym, 0) {
        Some(v) => v,
        None => return 0,
    };
    let pfn = (pte & PTE_PFN_MASK) >> 12;
    page_to_folio(vmemmap + pfn * l.page_size_of as u64, l)
}

/// The first struct page of a folio, where every small-folio field lives:
/// one helper call instead of one per field.
struct Head([u64; 8]);

impl Head {
    /// The folio's first 64 bytes, in one helper call.
    #[inline(always)]
    fn read(folio: u64) -> Option<Head> {
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
    fn u64_at(&self, folio: u64, off: u32) -> Option<u64> {
        if off < 64 && off % 8 == 0 {
            Some(self.word(off / 8))
        } else {
            rd64(folio, off)
        }
    }
    #[inline(always)]
    fn i32_at(&self, folio: u64, off: u32) -> Option<i32> {
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

#[inline(always)]
fn read_folio(e: &mut Event, folio: u64, l: &Layout) {
    e.folio = folio;
    e.valid |= V_FOLIO;
    let Some(head) = Head::read(folio) else {
        return;
    };
    let flags = match head.u64_at(folio, l.folio_flags) {
        Some(f) => f,
        None => return,
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

#[inline(always)]
fn fill<A: Args>(
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
    if let Ok(c) = bpf_get_current_comm() {
        e.comm = c;
    }
    e.task_start = task_start(l);
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
        if let Some(pte) = rd64(vmf, l.vmf_orig_pte) {
            e.pte = pte;
            e.valid |= V_PTE;
            if spec.folio_from_pte != 0 {
                folio = pte_to_folio(pte, l);
            }
        }
        if let Some(addr) = rd64(vmf, l.vmf_address) {
            e.addr = addr;
            e.valid |= V_ADDR;
        }
    }
    if let Some(f) = a.arg(spec.folio) {
        folio = f;
    } else if let Some(pg) = a.arg(spec.page) {
        if is_kptr(pg) {
            folio = page_to_folio(pg, l);
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
            folio = pte_to_folio(r, l);
        }
    }
    if is_kptr(folio) {
        read_folio(e, folio, l);
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
    } else if let Some(en) = cluster_entry(a, spec, l) {
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
fn cluster_entry<A: Args>(a: &A, spec: &ArgSpec, l: &Layout) -> Option<u64> {
    let si = a.arg(spec.si)?;
    let ci = a.arg(spec.ci)?;
    // An `unsigned int` argument: the upper half of its register is not
    // defined by the calling convention.
    let off = a.arg(spec.ci_off)? & 0xffff_ffff;
    if l.ci_size_of == ABSENT || l.ci_size_of == 0 || l.cluster_pages == ABSENT {
        return None;
    }
    if !is_kptr(si) || !is_kptr(ci) || l.si_type == ABSENT {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copes with any address.
    let ty = unsafe { bpf_probe_read_kernel((si + l.si_type as u64) as *const u8) }.ok()?;
    let base = rd64(si, l.si_cluster_info)?;
    if ci < base {
        return None;
    }
    let cluster = (ci - base) / l.ci_size_of as u64;
    let offset = cluster * l.cluster_pages as u64 + off;
    Some(detector_common::swp_entry(ty as u32, offset))
}

/// The in-kernel relevance filter of a probe (`ArgSpec::relevance`): false
/// drops the call before it costs a ring-buffer record. Runs on every call
/// of a filtered probe, so it reads only the words it decides on.
#[inline(always)]
fn relevant<A: Args>(a: &A, spec: &ArgSpec, l: &Layout, probe: ProbeId, kind: EventKind) -> bool {
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
            // ... holding references beyond its mappings and the reclaim
            // isolation (refcount > 1 + mapcount; a FOLL_PIN adds 1024).
            // A large folio's mappings are not in its first page: kept.
            if !bit(flags, l.pg_head) {
                let refs = head.i32_at(folio, l.folio_refcount).unwrap_or(0);
                let mapcount = head.i32_at(folio, l.folio_mapcount).unwrap_or(0) + 1;
                if refs <= 1 + mapcount {
                    return false;
                }
            }
            let _ = GATE.insert(&key, &1, 0);
        }
    }
    if r & REL_MAYBE_PINNED != 0 && spec.folio_from_pte != 0 {
        let folio = match a.arg(spec.vmf).and_then(|vmf| rd64(vmf, l.vmf_orig_pte)) {
            Some(pte) => pte_to_folio(pte, l),
            None => 0,
        };
        if is_kptr(folio) {
            let head = Head::read(folio);
            let flags = head
                .as_ref()
                .and_then(|h| h.u64_at(folio, l.folio_flags))
                .unwrap_or(0);
            let refs = head
                .as_ref()
                .and_then(|h| h.i32_at(folio, l.folio_refcount))
                .unwrap_or(0);
            if !bit(flags, l.pg_head) && refs < GUP_PIN_BIAS {
                return false;
            }
        }
    }
    true
}

/// Looks up the probe's spec, applies the filters and writes one event.
/// Ring-buffer exhaustion is counted per probe, never silent.
#[inline(always)]
fn emit<A: Args>(a: &A, probe: ProbeId, kind: EventKind) {
    let p = probe as u32;
    let spec = match ARGS.get(p) {
        Some(s) if s.enabled != 0 => *s,
        _ => return,
    };
    let Some(l) = layout() else {
        return;
    };
    if !pass_filter() {
        return;
    }
    if spec.relevance != 0 && !relevant(a, &spec, l, probe, kind) {
        return;
    }
    let mut slot = match EVENTS.reserve::<Event>(0) {
        Some(s) => s,
        None => {
            bump(&LOST, p);
            return;
        }
    };
    let e = slot.as_mut_ptr();
    // SAFETY: `e` points at a reserved, exclusively owned ring-buffer slot
    // of size_of::<Event>() bytes; zeroing makes every field initialized.
    unsafe { core::ptr::write_bytes(e, 0, 1) };
    // SAFETY: initialized just above; nothing else aliases the slot.
    fill(unsafe { &mut *e }, a, &spec, l, probe, kind);
    slot.submit(wakeup_flag());
}

/// `BPF_RB_NO_WAKEUP` while the unread backlog is under the threshold,
/// `BPF_RB_FORCE_WAKEUP` past it (the default would wake only when this
/// record is the first unread one, which a batching consumer never sees).
#[inline(always)]
fn wakeup_flag() -> u64 {
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    const BPF_RB_AVAIL_DATA: u64 = 0;
    // SAFETY: a plain read of a global that userspace fixed before load.
    let threshold = unsafe { read_volatile(&WAKEUP_BYTES) };
    if threshold == 0 {
        return 0;
    }
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// Key of per-call state (`STASH`, `GATE`): the task and the probe.
#[inline(always)]
fn tid_probe_key(probe: ProbeId) -> u64 {
    ((current_tid() as u64) << 16) | probe as u64
}

/// Probes that only stash inside a `move_pages` window: their kretprobe
/// finds no stash on every other call, which is not a loss.
#[inline(always)]
fn in_window_only(probe: ProbeId) -> bool {
    matches!(probe, ProbeId::MovePagesLookup | ProbeId::MovePresent)
}

/// kprobe half of an exit probe: keep the arguments for the kretprobe.
#[inline(always)]
fn stash(args: &Fixed, probe: ProbeId) {
    match ARGS.get(probe as u32) {
        Some(s) if s.enabled != 0 => {}
        _ => return,
    }
    const BPF_NOEXIST: u64 = 1;
    let key = tid_probe_key(probe);
    if STASH.insert(&key, &args.a, BPF_NOEXIST).is_ok() {
        return;
    }
    // Either the previous call's kretprobe never ran (the kernel skipped it:
    // instance pool exhausted, recursion) and its exit event is lost, or the
    // map is full and this one's will be. Both are counted, never silent.
    bump(&LOST, probe as u32);
    if STASH.insert(&key, &args.a, 0).is_err() {
        bump(&LOST, probe as u32);
    }
}

/// kretprobe: the stashed arguments plus the return register.
#[inline(always)]
fn unstash(ctx: &RetProbeContext, probe: ProbeId) -> Option<Fixed> {
    let key = tid_probe_key(probe);
    // SAFETY: the value is copied out before the entry is removed.
    let Some(a) = unsafe { STASH.get(&key) }.copied() else {
        // The entry half never ran (the kernel skipped the kprobe, e.g.
        // recursion protection) or could not stash: the event is lost.
        if matches!(ARGS.get(probe as u32), Some(s) if s.enabled != 0) && !in_window_only(probe) {
            bump(&LOST, probe as u32);
        }
        return None;
    };
    let _ = STASH.remove(&key);
    Some(Fixed {
        a,
        n: 6,
        ret: Some(ctx.ret::<u64>()),
    })
}

/// A role observed at function entry.
macro_rules! enter_probe {
    ($fentry:ident, $kprobe:ident, $probe:expr) => {
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            emit(
                &Tramp {
                    ctx: ctx.as_ptr(),
                    exit: false,
                },
                $probe,
                EventKind::Enter,
            );
            0
        }

        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            emit(&regs(&ctx), $probe, EventKind::Enter);
            0
        }
    };
}

/// A role observed at function exit (arguments and return value).
macro_rules! exit_probe {
    ($fexit:ident, $kprobe:ident, $kretprobe:ident, $probe:expr) => {
        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            emit(
                &Tramp {
                    ctx: ctx.as_ptr(),
                    exit: true,
                },
                $probe,
                EventKind::Exit,
            );
            0
        }

        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            stash(&regs(&ctx), $probe);
            0
        }

        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            if let Some(a) = unstash(&ctx, $probe) {
                emit(&a, $probe, EventKind::Exit);
            }
            0
        }
    };
}

/// A role observed at both entry and exit.
macro_rules! enter_exit_probe {
    ($fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident, $probe:expr) => {
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            emit(
                &Tramp {
                    ctx: ctx.as_ptr(),
                    exit: false,
                },
                $probe,
                EventKind::Enter,
            );
            0
        }

        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            emit(
                &Tramp {
                    ctx: ctx.as_ptr(),
                    exit: true,
                },
                $probe,
                EventKind::Exit,
            );
            0
        }

        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            let a = regs(&ctx);
            stash(&a, $probe);
            emit(&a, $probe, EventKind::Enter);
            0
        }

        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            if let Some(a) = unstash(&ctx, $probe) {
                emit(&a, $probe, EventKind::Exit);
            }
            0
        }
    };
}

exit_probe!(
    fexit_swap_cache_lookup,
    kprobe_swap_cache_lookup,
    kretprobe_swap_cache_lookup,
    ProbeId::SwapCacheLookup
);
exit_probe!(
    fexit_swap_cache_insert,
    kprobe_swap_cache_insert,
    kretprobe_swap_cache_insert,
    ProbeId::SwapCacheInsert
);
enter_probe!(
    fentry_swap_cache_delete,
    kprobe_swap_cache_delete,
    ProbeId::SwapCacheDelete
);
exit_probe!(
    fexit_swap_entry_alloc,
    kprobe_swap_entry_alloc,
    kretprobe_swap_entry_alloc,
    ProbeId::SwapEntryAlloc
);
exit_probe!(
    fexit_swap_entry_dup,
    kprobe_swap_entry_dup,
    kretprobe_swap_entry_dup,
    ProbeId::SwapEntryDup
);
enter_probe!(
    fentry_swap_entry_free,
    kprobe_swap_entry_free,
    ProbeId::SwapEntryFree
);
exit_probe!(
    fexit_swapcache_prepare,
    kprobe_swapcache_prepare,
    kretprobe_swapcache_prepare,
    ProbeId::SwapcachePrepare
);
enter_probe!(
    fentry_swapcache_clear,
    kprobe_swapcache_clear,
    ProbeId::SwapcacheClear
);
enter_exit_probe!(
    fentry_do_swap_page,
    fexit_do_swap_page,
    kprobe_do_swap_page,
    kretprobe_do_swap_page,
    ProbeId::DoSwapPage
);
enter_probe!(
    fentry_folio_move_anon_rmap,
    kprobe_folio_move_anon_rmap,
    ProbeId::FolioMoveAnonRmap
);
enter_exit_probe!(
    fentry_remove_mapping,
    fexit_remove_mapping,
    kprobe_remove_mapping,
    kretprobe_remove_mapping,
    ProbeId::RemoveMapping
);
enter_exit_probe!(
    fentry_try_to_unmap_one,
    fexit_try_to_unmap_one,
    kprobe_try_to_unmap_one,
    kretprobe_try_to_unmap_one,
    ProbeId::TryToUnmapOne
);
enter_probe!(
    fentry_madvise_free,
    kprobe_madvise_free,
    ProbeId::MadviseFree
);
exit_probe!(
    fexit_gup_grab,
    kprobe_gup_grab,
    kretprobe_gup_grab,
    ProbeId::GupGrab
);
exit_probe!(
    fexit_gup_grab_fast,
    kprobe_gup_grab_fast,
    kretprobe_gup_grab_fast,
    ProbeId::GupGrabFast
);
enter_probe!(fentry_gup_put, kprobe_gup_put, ProbeId::GupPut);
enter_probe!(
    fentry_unpin_user_page,
    kprobe_unpin_user_page,
    ProbeId::UnpinUserPage
);
enter_probe!(fentry_do_wp_page, kprobe_do_wp_page, ProbeId::DoWpPage);
enter_probe!(fentry_swap_read, kprobe_swap_read, ProbeId::SwapRead);
enter_probe!(
    fentry_lazyfree_mark,
    kprobe_lazyfree_mark,
    ProbeId::LazyfreeMark
);

// move_pages opens and closes the per-thread UFFDIO_MOVE window that gates
// the `__filemap_get_folio` probe below.

#[inline(always)]
fn move_window_open() {
    let _ = IN_MOVE.insert(&current_tid(), &1, 0);
}

#[inline(always)]
fn move_window_close() {
    let _ = IN_MOVE.remove(&current_tid());
}

#[inline(always)]
fn in_move_window() -> bool {
    // SAFETY: only presence is checked; the value is not dereferenced.
    unsafe { IN_MOVE.get(&current_tid()) }.is_some()
}

#[fentry]
pub fn fentry_move_pages(ctx: FEntryContext) -> u32 {
    move_window_open();
    emit(
        &Tramp {
            ctx: ctx.as_ptr(),
            exit: false,
        },
        ProbeId::MovePages,
        EventKind::Enter,
    );
    0
}

#[fexit]
pub fn fexit_move_pages(ctx: FExitContext) -> u32 {
    move_window_close();
    emit(
        &Tramp {
            ctx: ctx.as_ptr(),
            exit: true,
        },
        ProbeId::MovePages,
        EventKind::Exit,
    );
    0
}

#[kprobe]
pub fn kprobe_move_pages(ctx: ProbeContext) -> u32 {
    move_window_open();
    let a = regs(&ctx);
    stash(&a, ProbeId::MovePages);
    emit(&a, ProbeId::MovePages, EventKind::Enter);
    0
}

#[kretprobe]
pub fn kretprobe_move_pages(ctx: RetProbeContext) -> u32 {
    move_window_close();
    if let Some(a) = unstash(&ctx, ProbeId::MovePages) {
        emit(&a, ProbeId::MovePages, EventKind::Exit);
    }
    0
}

// `__filemap_get_folio` runs for every page-cache lookup in the system, so
// the in-window test comes before anything else.

#[fexit]
pub fn fexit_move_pages_lookup(ctx: FExitContext) -> u32 {
    if in_move_window() {
        emit(
            &Tramp {
                ctx: ctx.as_ptr(),
                exit: true,
            },
            ProbeId::MovePagesLookup,
            EventKind::Exit,
        );
    }
    0
}

#[kprobe]
pub fn kprobe_move_pages_lookup(ctx: ProbeContext) -> u32 {
    if in_move_window() {
        stash(&regs(&ctx), ProbeId::MovePagesLookup);
    }
    0
}

#[kretprobe]
pub fn kretprobe_move_pages_lookup(ctx: RetProbeContext) -> u32 {
    if let Some(a) = unstash(&ctx, ProbeId::MovePagesLookup) {
        emit(&a, ProbeId::MovePagesLookup, EventKind::Exit);
    }
    0
}

// `ptep_clear_flush` runs on every COW, migration and reclaim unmap; only
// calls inside a move window (the present-PTE path of UFFDIO_MOVE, just
// before `folio_move_anon_rmap`) are recorded.

#[fexit]
pub fn fexit_move_present(ctx: FExitContext) -> u32 {
    if in_move_window() {
        emit(
            &Tramp {
                ctx: ctx.as_ptr(),
                exit: true,
            },
            ProbeId::MovePresent,
            EventKind::Exit,
        );
    }
    0
}

#[kprobe]
pub fn kprobe_move_present(ctx: ProbeContext) -> u32 {
    if in_move_window() {
        stash(&regs(&ctx), ProbeId::MovePresent);
    }
    0
}

#[kretprobe]
pub fn kretprobe_move_present(ctx: RetProbeContext) -> u32 {
    if let Some(a) = unstash(&ctx, ProbeId::MovePresent) {
        emit(&a, ProbeId::MovePresent, EventKind::Exit);
    }
    0
}

// A task exits: tracepoints work everywhere, the host's degraded mode
// included. Everything the event needs is `current`'s.

#[btf_tracepoint(function = "sched_process_exit")]
pub fn tp_task_exit(_ctx: BtfTracePointContext) -> u32 {
    let a = Fixed {
        a: [0; 6],
        n: 0,
        ret: None,
    };
    emit(&a, ProbeId::TaskExit, EventKind::Tracepoint);
    0
}

// Degraded mode: typed tracepoints, which the kernel allows where function
// tracing is blocked. Their arguments are fixed by the tracepoint, so they
// are read at constant offsets and handed over like stashed arguments.

#[btf_tracepoint(function = "mm_vmscan_write_folio")]
pub fn tp_vmscan_write_folio(ctx: BtfTracePointContext) -> u32 {
    let a = Fixed {
        a: [scalar(ctx.arg::<u64>(0)), 0, 0, 0, 0, 0],
        n: 1,
        ret: None,
    };
    emit(&a, ProbeId::TpWriteFolio, EventKind::Tracepoint);
    0
}

#[btf_tracepoint(function = "mm_page_free")]
pub fn tp_page_free(ctx: BtfTracePointContext) -> u32 {
    let a = Fixed {
        a: [scalar(ctx.arg::<u64>(0)), ctx.arg::<u64>(1), 0, 0, 0, 0],
        n: 2,
        ret: None,
    };
    emit(&a, ProbeId::TpPageFree, EventKind::Tracepoint);
    0
}

#[btf_tracepoint(function = "mm_lru_insertion")]
pub fn tp_lru_insertion(ctx: BtfTracePointContext) -> u32 {
    let a = Fixed {
        a: [scalar(ctx.arg::<u64>(0)), 0, 0, 0, 0, 0],
        n: 1,
        ret: None,
    };
    emit(&a, ProbeId::TpLruInsertion, EventKind::Tracepoint);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
