//! Synthetic, race-free event streams, to measure the reader and the
//! analyzer (throughput, memory under `--max-tracked`) without a kernel.
//!
//! [`Synth`] is an endless iterator over the events of a swap-heavy
//! workload on `objects` anonymous folios ("slots"). Round `r` is:
//!
//! 1. **swap-out** of slot `r % objects`, as `shrink_folio_list` starts it:
//!    `folio_alloc_swap` (`swap_entry_alloc` exit, folio locked, isolated and
//!    mapped) and `add_to_swap_cache` (`swap_cache_insert` exit, plus the
//!    swap cache's reference);
//! 2. **reclaim** of that folio: `try_to_unmap_one` entry and exit (returns
//!    true, the mapping and its reference are gone), then
//!    `__delete_from_swap_cache` (`swap_cache_delete` entry) under
//!    `__remove_mapping`, refcount frozen to 0;
//! 3. **swap-in** of the slot swapped out `objects / 2` rounds earlier, by
//!    the synchronous (`SWP_SYNCHRONOUS_IO`) path of `do_swap_page`:
//!    `swapcache_prepare` exit (0) by the faulting task, `swap_read` of a
//!    fresh locked folio outside the swap cache, then `swapcache_clear` and
//!    the `swap_entry_free` it triggers when the swap count reaches zero;
//! 4. **GUP-fast grab/drop** on that folio, now mapped and anon-exclusive:
//!    a FOLL_PIN `gup_grab_fast` exit (pin bias in the refcount) and the
//!    matching `gup_put`, as a short `pin_user_pages_fast` user would.
//!
//! That is 11 events a round once the first swap-ins start (5 before).
//! Half the slots are swapped out at any time, each holding its own swap
//! entry, so the analyzer sees about `2 * objects` distinct objects
//! (`objects` folios, `objects + 1` entries of which `objects / 2` are
//! allocated): an `objects` above `--max-tracked` drives eviction, down to
//! the allocated entries it cannot drop for free.
//!
//! [`Synth::storm`] is the same workload on a kernel whose synchronous
//! swap-in skips `swapcache_prepare()`: after the first swap-in (which takes
//! the pin, so the probe is known to work), swap-ins read without
//! SWAP_HAS_CACHE and without `swapcache_clear`, all on one worker thread.
//! Each one is a `swapin_without_cache_pin` violation with the same task
//! and cause: a finding storm, one finding per 9 events, to measure what a
//! storm costs the pipeline.
//!
//! The plain stream is race-free by construction, so the analyzer must report no
//! violation (in fact no finding at all), whatever `objects` and wherever
//! the stream is cut: an entry is freed `objects / 2` rounds after its
//! allocation and allocated again only `objects + 1` rounds after it (entry
//! offsets rotate, so a slot gets a different entry each time, as from the
//! kernel's allocator); a swap-in holds SWAP_HAS_CACHE through its own
//! `swapcache_prepare`; refcounts never drop below mapcounts; pins are
//! taken on anon-exclusive folios and dropped at once.

use detector_common::{
    swp_entry, Event, EventKind, ProbeId, FS_ANON, FS_ANON_EXCLUSIVE, FS_LOCKED, FS_LRU,
    FS_SWAPBACKED, FS_SWAPCACHE, FS_UPTODATE, V_ADDR, V_ENTRY, V_FOLIO, V_FOLIO_STATE, V_PIN,
    V_RET,
};

/// Slots when nothing else is asked for: about 400 000 tracked objects,
/// well below the analyzer's default bound.
pub const DEFAULT_OBJECTS: u64 = 200_000;
/// Most slots: 2^30 folios are 4 TiB of memory, and every derived address
/// (folio, user address, swap offset) stays in its range.
pub const MAX_OBJECTS: u64 = 1 << 30;
/// Time of the first event (a plausible CLOCK_MONOTONIC value).
pub const START_NS: u64 = 1_000_000_000;
/// Stream time between consecutive events.
const STEP_NS: u64 = 100;
/// Slot `i`'s folio is `FOLIO_BASE + i * 64`: struct folio addresses in
/// the vmemmap range.
const FOLIO_BASE: u64 = 0xffff_ea00_0000_0000;
/// Slot `i` is mapped at `ADDR_BASE + i * 4096` (below 2^47 for every slot).
const ADDR_BASE: u64 = 0x7000_0000_0000;
/// Swap type of every entry.
const SWAP_TYPE: u32 = 1;
/// Reclaim runs on this tid (kswapd).
const KSWAPD_TID: u32 = 90;
/// Faults and GUP run on `WORKERS` threads of one process, tid `WORKER_TID + slot % WORKERS`.
const WORKER_TID: u32 = 1000;
const WORKERS: u64 = 8;
/// Most events one round produces.
const ROUND_MAX: usize = 11;

/// Endless iterator over a race-free swap-heavy event stream (see the
/// module documentation). Allocation-free: a round is built into a fixed
/// buffer and handed out event by event.
#[derive(Clone, Debug)]
pub struct Synth {
    objects: u64,
    /// Rounds between a slot's swap-out and its swap-in.
    lag: u64,
    round: u64,
    ts: u64,
    buf: [Event; ROUND_MAX],
    len: usize,
    pos: usize,
    /// Swap-ins skip the pin ([`Synth::storm`]).
    storm: bool,
}

impl Synth {
    /// A stream over `objects` slots, clamped to `1..=MAX_OBJECTS`.
    pub fn new(objects: u64) -> Self {
        let objects = objects.clamp(1, MAX_OBJECTS);
        Synth {
            objects,
            lag: objects / 2,
            round: 0,
            ts: START_NS,
            buf: [Event::default(); ROUND_MAX],
            len: 0,
            pos: 0,
            storm: false,
        }
    }

    /// The same stream on a kernel that skips the swap-in pin: one
    /// `swapin_without_cache_pin` violation per swap-in but the first (see
    /// the module documentation).
    pub fn storm(objects: u64) -> Self {
        Synth {
            storm: true,
            ..Synth::new(objects)
        }
    }

    pub fn objects(&self) -> u64 {
        self.objects
    }

    /// Time of the last event handed out ([`START_NS`] before the first).
    pub fn last_ts(&self) -> u64 {
        self.ts
    }

    fn folio(slot: u64) -> u64 {
        FOLIO_BASE + slot * 0x40
    }

    /// The entry allocated in round `r`. Offsets rotate through
    /// `objects + 1` values, one more than the slots, so that an entry
    /// comes back only after its swap-in freed it.
    fn entry(&self, r: u64) -> u64 {
        swp_entry(SWAP_TYPE, 1 + r % (self.objects + 1))
    }

    fn worker(slot: u64) -> u32 {
        WORKER_TID + (slot % WORKERS) as u32
    }

    /// Appends an event with everything common filled in; the caller adds
    /// folio state where the probe reports one.
    fn push(&mut self, probe: ProbeId, kind: EventKind, tid: u32, entry: u64) -> &mut Event {
        self.ts += STEP_NS;
        let (pid, comm) = if tid == KSWAPD_TID {
            (KSWAPD_TID, *b"kswapd0\0\0\0\0\0\0\0\0\0")
        } else {
            (WORKER_TID, *b"synth\0\0\0\0\0\0\0\0\0\0\0")
        };
        let e = &mut self.buf[self.len];
        self.len += 1;
        *e = Event {
            ts_ns: self.ts,
            entry,
            pid,
            tid,
            cpu: tid % 2,
            nr: 1,
            probe: probe as u16,
            kind: kind as u8,
            valid: if entry != 0 { V_ENTRY } else { 0 },
            comm,
            ..Event::default()
        };
        e
    }

    /// Builds the next round into `buf`.
    fn fill(&mut self) {
        self.len = 0;
        self.pos = 0;
        let r = self.round;
        self.round += 1;

        // Swap-out and reclaim of slot r % objects on a fresh entry.
        let slot = r % self.objects;
        let folio = Self::folio(slot);
        let addr = ADDR_BASE + slot * 4096;
        let ent = self.entry(r);
        let anon = FS_ANON | FS_SWAPBACKED | FS_UPTODATE;
        let cached = anon | FS_SWAPCACHE;
        let k = KSWAPD_TID;
        // Isolated from the LRU and mapped once: two references.
        let e = self.push(ProbeId::SwapEntryAlloc, EventKind::Exit, k, ent);
        set_folio(e, folio, anon | FS_LOCKED, 2, 1, ent);
        let e = self.push(ProbeId::SwapCacheInsert, EventKind::Exit, k, ent);
        set_folio(e, folio, cached | FS_LOCKED, 3, 1, ent);
        set_ret(e, 0);
        let e = self.push(ProbeId::TryToUnmapOne, EventKind::Enter, k, 0);
        set_folio(e, folio, cached | FS_LOCKED, 3, 1, ent);
        set_addr(e, addr);
        let e = self.push(ProbeId::TryToUnmapOne, EventKind::Exit, k, 0);
        set_folio(e, folio, cached | FS_LOCKED, 2, 0, ent);
        set_addr(e, addr);
        set_ret(e, 1);
        // __remove_mapping froze the refcount before deleting.
        let e = self.push(ProbeId::SwapCacheDelete, EventKind::Enter, k, ent);
        set_folio(e, folio, cached | FS_LOCKED, 0, 0, ent);

        // Swap-in of the slot swapped out `lag` rounds ago, on the worker
        // thread that owns it, then a GUP-fast pin of the mapped result.
        let Some(then) = r.checked_sub(self.lag) else {
            return;
        };
        let slot = then % self.objects;
        let folio = Self::folio(slot);
        let ent = self.entry(then);
        let pinned = !self.storm || then == 0;
        let tid = if self.storm {
            WORKER_TID
        } else {
            Self::worker(slot)
        };
        if pinned {
            let e = self.push(ProbeId::SwapcachePrepare, EventKind::Exit, tid, ent);
            set_ret(e, 0);
        }
        // A fresh folio, locked and charged, not in the swap cache: the sync
        // path reads straight into it with folio->swap set to the entry.
        let e = self.push(ProbeId::SwapRead, EventKind::Enter, tid, ent);
        set_folio(e, folio, anon | FS_LOCKED, 1, 0, ent);
        if pinned {
            self.push(ProbeId::SwapcacheClear, EventKind::Enter, tid, ent);
        }
        self.push(ProbeId::SwapEntryFree, EventKind::Enter, tid, ent);
        // do_swap_page maps it exclusive (the sync path is for entries with
        // a single user), so the pin needs no unshare.
        let mapped = anon | FS_ANON_EXCLUSIVE | FS_LRU;
        for (probe, kind) in [
            (ProbeId::GupGrabFast, EventKind::Exit),
            (ProbeId::GupPut, EventKind::Enter),
        ] {
            let e = self.push(probe, kind, tid, 0);
            set_folio(
                e,
                folio,
                mapped,
                1 + crate::event::GUP_PIN_COUNTING_BIAS,
                1,
                0,
            );
            set_addr(e, ADDR_BASE + slot * 4096);
            e.valid |= V_PIN;
        }
    }
}

/// Folio snapshot fields of an event.
fn set_folio(e: &mut Event, folio: u64, state: u32, refs: i32, maps: i32, swap: u64) {
    e.folio = folio;
    e.f_state = state;
    e.f_refcount = refs;
    e.f_mapcount = maps;
    e.f_swap = swap;
    e.f_nr_pages = 1;
    e.valid |= V_FOLIO | V_FOLIO_STATE;
}

fn set_ret(e: &mut Event, ret: i64) {
    e.ret = ret;
    e.valid |= V_RET;
}

fn set_addr(e: &mut Event, addr: u64) {
    e.addr = addr;
    e.valid |= V_ADDR;
}

impl Iterator for Synth {
    type Item = Event;

    #[inline]
    fn next(&mut self) -> Option<Event> {
        if self.pos == self.len {
            self.fill();
        }
        let e = self.buf[self.pos];
        self.pos += 1;
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyzer::{Analyzer, Config};
    use crate::event::StreamItem;
    use std::collections::HashSet;

    fn run(
        objects: u64,
        n: usize,
        max_tracked: usize,
    ) -> (Analyzer, Vec<crate::analyzer::Finding>) {
        let mut a = Analyzer::new(Config {
            max_tracked,
            ..Config::default()
        });
        let mut out = Vec::new();
        for (i, e) in Synth::new(objects).take(n).enumerate() {
            a.process(i as u64, &StreamItem::Event(e), &mut out);
        }
        a.finish(&mut out);
        (a, out)
    }

    #[test]
    fn no_finding_for_any_object_count_or_cut() {
        // Small counts hit the edge cases of the rotation (lag 0, lag 1).
        for objects in [1, 2, 3, 4, 7, 64, 1000] {
            for n in [1, 5, 6, 10, 11, 12, 997, 20_000] {
                let (a, out) = run(objects, n, 1 << 20);
                assert!(out.is_empty(), "objects {objects}, {n} events: {out:#?}");
                assert_eq!(a.stats().events, n as u64);
            }
        }
    }

    #[test]
    fn storm_is_one_violation_per_unpinned_swap_in_of_one_kind() {
        use crate::analyzer::{RuleId, Severity};
        let objects = 100;
        let n = 20_000;
        let mut a = Analyzer::new(Config::default());
        let mut out = Vec::new();
        let mut reads = 0;
        for (i, e) in Synth::storm(objects).take(n).enumerate() {
            reads += u64::from(e.probe == ProbeId::SwapRead as u16);
            a.process(i as u64, &StreamItem::Event(e), &mut out);
        }
        a.finish(&mut out);
        // Every swap-in but the first, pinned one.
        assert_eq!(out.len() as u64, reads - 1);
        assert!(out.len() > 2000);
        assert!(out.iter().all(|f| f.rule == RuleId::SwapinWithoutCachePin
            && f.severity == Severity::Violation
            && f.cause == "not_held"
            && f.evidence.last().map(|e| e.tid) == Some(WORKER_TID)));
    }

    #[test]
    fn object_count_is_clamped() {
        assert_eq!(Synth::new(0).objects(), 1);
        let mut huge = Synth::new(u64::MAX);
        assert_eq!(huge.objects(), MAX_OBJECTS);
        let last = huge.nth(100).unwrap_or_default();
        assert!(last.addr < 1 << 47 || last.addr == 0);
    }

    #[test]
    fn entries_are_freed_before_reuse_and_times_increase() {
        let objects = 5;
        let mut allocated = HashSet::new();
        let mut last = 0;
        let mut rounds_with_swapin = 0;
        for e in Synth::new(objects).take(2000) {
            assert!(e.ts_ns > last);
            last = e.ts_ns;
            match ProbeId::from_u16(e.probe) {
                Some(ProbeId::SwapEntryAlloc) => {
                    assert!(allocated.insert(e.entry), "{:#x} allocated twice", e.entry);
                }
                Some(ProbeId::SwapEntryFree) => {
                    assert!(allocated.remove(&e.entry), "{:#x} not allocated", e.entry);
                    rounds_with_swapin += 1;
                }
                _ => {}
            }
            // Half the slots (rounded down) stay swapped out.
            assert!(allocated.len() as u64 <= objects / 2 + 1);
        }
        assert!(rounds_with_swapin > 100);
    }

    #[test]
    fn objects_drive_the_tracked_set() {
        let objects = 3000;
        let (a, _) = run(objects, 11 * 2 * objects as usize, 1 << 20);
        // Every folio and every entry offset were seen; half the entries
        // are still allocated, none can have been evicted.
        let n = a.tracked_objects() as u64;
        assert!(n >= 2 * objects && n <= 2 * objects + 16, "{n}");
        assert_eq!(a.evictions(), 0);
    }

    #[test]
    fn bounded_analyzer_stays_under_its_limit_without_findings() {
        // 6000 objects, ~3000 of them allocated entries: more than the
        // bound even after dead objects go, so the LRU cut runs too.
        let (a, out) = run(6000, 200_000, 2000);
        assert!(out.is_empty(), "{out:#?}");
        assert!(a.evictions() > 0);
        assert!(
            a.peak_tracked_objects() <= 2000,
            "{}",
            a.peak_tracked_objects()
        );
        assert!(a.peak_tracked_objects() >= a.tracked_objects());
        assert!(a.peak_tracked_objects() > 1500);
    }
}
