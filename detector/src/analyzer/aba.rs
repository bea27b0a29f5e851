//! Rule (a): swap entry reuse inside a `move_pages` lookup window (ABA),
//! and the missed lookup. Also owns the swap-entry lifecycle bookkeeping
//! (allocation generations, free, swap-cache insert/delete) the other rules
//! read.
//!
//! Seed 000: UFFDIO_MOVE looks up the swap cache with no lock held. Between
//! that lookup and the PTE recheck the entry can be freed and allocated
//! again (possibly for the very PTE being moved), so `pte_same` passes on a
//! reused entry and the wrong folio is moved.

use detector_common::{Event, ProbeId, V_ADDR, V_ENTRY_PARTIAL, V_FOLIO, V_RET};

use super::ev::Ev;
use super::state::{eflags, Lookup, MoveWindow, CHAIN_MAX};
use super::windows::WindowKind;
use super::{full_entry, Analyzer, Finding, RuleId, Severity};

/// What happened to a watched entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Happened {
    Free,
    Realloc,
    Insert,
    Delete,
    /// A swap-in fault on the entry by the moving task's own process.
    SwapInHere,
}

/// `VM_FAULT_ERROR` bits of `vm_fault_t` (OOM, SIGBUS, SIGSEGV, HWPOISON*,
/// FALLBACK excluded): a fault with any of them did not map the page.
const VM_FAULT_ERROR: i64 = 0x0001 | 0x0002 | 0x0040 | 0x0010 | 0x0020 | 0x0800;

impl Analyzer {
    pub(super) fn on_alloc(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        let _ = out;
        if full_entry(e).is_none() || (e.valid & V_RET != 0 && e.ret < 0) {
            return;
        }
        // Only watched entries cite the event: build it on first use.
        let mut ev = None;
        let note = "entry allocated again for a folio being swapped out";
        let epoch = self.holder_epoch;
        for ent in Self::range(e) {
            self.alloc_seq += 1;
            let gen = self.alloc_seq;
            let s = self.entry_mut(ent);
            let freed_at = s.free_ts;
            s.free_ts = 0;
            s.gen = gen;
            s.folio = if e.valid & V_FOLIO != 0 { e.folio } else { 0 };
            s.holder = 0;
            s.prepare_ts = 0;
            s.flags = eflags::HAS_CACHE | eflags::TRUSTED;
            s.epoch = epoch;
            let watched = s.watchers > 0;
            if freed_at != 0 {
                self.windows
                    .record(WindowKind::EntryFreeToRealloc, freed_at, e.ts_ns);
            }
            self.end_storm(ent);
            if watched || self.unresolved > 0 {
                let ev = *ev.get_or_insert_with(|| self.ev(index, e, note));
                self.notify(ent, ev, Happened::Realloc);
            }
        }
    }

    pub(super) fn on_free(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        let _ = out;
        if full_entry(e).is_none() {
            return;
        }
        let mut ev = None;
        let note = "entry returned to the swap allocator (swap count reached zero)";
        let epoch = self.holder_epoch;
        for ent in Self::range(e) {
            let s = self.entry_mut(ent);
            s.free_ts = e.ts_ns.max(1);
            s.folio = 0;
            s.holder = 0;
            s.prepare_ts = 0;
            s.flags = eflags::FREE | eflags::TRUSTED;
            s.epoch = epoch;
            let watched = s.watchers > 0;
            self.end_storm(ent);
            if watched || self.unresolved > 0 {
                let ev = *ev.get_or_insert_with(|| self.ev(index, e, note));
                self.notify(ent, ev, Happened::Free);
            }
        }
    }

    pub(super) fn on_insert(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        let _ = out;
        if full_entry(e).is_none() || (e.valid & V_RET != 0 && e.ret != 0) {
            return;
        }
        let mut ev = None;
        let note = "folio added to the swap cache for the entry";
        for ent in Self::range(e) {
            let s = self.entry_mut(ent);
            s.folio = e.folio;
            s.flags |= eflags::HAS_CACHE;
            s.flags &= !eflags::FREE;
            // From here the swap-cache folio, not the preparing task, holds
            // SWAP_HAS_CACHE (the async swap-in path).
            s.holder = 0;
            s.prepare_ts = 0;
            let watched = s.watchers > 0;
            self.end_storm(ent);
            if watched || self.unresolved > 0 {
                let ev = *ev.get_or_insert_with(|| self.ev(index, e, note));
                self.notify(ent, ev, Happened::Insert);
            }
        }
    }

    pub(super) fn on_delete(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        let _ = out;
        let Some(_) = full_entry(e) else { return };
        let mut ev = None;
        let note = "folio removed from the swap cache (SWAP_HAS_CACHE dropped next)";
        let epoch = self.holder_epoch;
        for ent in Self::range(e) {
            let s = self.entry_mut(ent);
            if s.folio == e.folio || s.folio == 0 {
                s.folio = 0;
                s.flags &= !eflags::HAS_CACHE;
                s.flags |= eflags::TRUSTED;
                s.holder = 0;
                s.epoch = epoch;
            }
            let watched = s.watchers > 0;
            self.end_storm(ent);
            if watched || self.unresolved > 0 {
                let ev = *ev.get_or_insert_with(|| self.ev(index, e, note));
                self.notify(ent, ev, Happened::Delete);
            }
        }
    }

    /// `do_swap_page` exit: a successful swap-in by the moving process of an
    /// entry it looked up means a later move of that folio may be the
    /// legitimate present-PTE path of a retried `move_pages_pte`.
    pub(super) fn on_swap_fault_exit(&mut self, index: u64, e: &Event) {
        if self.open_windows.is_empty() {
            return;
        }
        let Some(ent) = crate::event::EventExt::swap_entry(e) else {
            return;
        };
        if e.valid & V_RET != 0 && e.ret & VM_FAULT_ERROR != 0 {
            return;
        }
        if self.entries.get(&ent).is_some_and(|s| s.watchers > 0) {
            let ev = self.ev(index, e, "swap-in fault on the entry mapped a folio");
            self.notify_from(ent, ev, Happened::SwapInHere, Some(e));
        }
    }

    fn notify(&mut self, ent: u64, ev: Ev, what: Happened) {
        self.notify_from(ent, ev, what, None);
    }

    fn notify_from(&mut self, ent: u64, ev: Ev, what: Happened, fault: Option<&Event>) {
        let mut resolved = 0usize;
        for &tid in &self.open_windows {
            let Some(w) = self.tasks.get_mut(&tid).and_then(|t| t.window.as_mut()) else {
                continue;
            };
            if let Some(f) = fault {
                // Only the moving process's own faults inside the moved range.
                if f.pid != w.open.folio as u32 || (f.valid & V_ADDR != 0 && f.addr < w.open.f_swap)
                {
                    continue;
                }
            }
            for l in w.lookups[..w.active].iter_mut() {
                if l.entry == 0 && l.space != 0 {
                    if let Some(m) = self.spaces.get(&l.space) {
                        let guess = detector_common::swp_entry(
                            m.ty,
                            m.base + (l.index & (super::SWAP_ADDRESS_SPACE_PAGES - 1)),
                        );
                        if guess == ent {
                            l.entry = ent;
                            resolved += 1;
                        }
                    }
                }
                if l.entry != ent {
                    continue;
                }
                match what {
                    Happened::Free => l.freed = true,
                    Happened::Realloc => l.reused = true,
                    Happened::Insert => {
                        if ev.folio != l.folio {
                            l.inserted = true;
                        }
                    }
                    Happened::Delete => {}
                    Happened::SwapInHere => l.swapped_in_here = true,
                }
                if l.chain.len() < CHAIN_MAX {
                    l.chain.push(ev);
                }
            }
        }
        if resolved > 0 {
            self.unresolved = self.unresolved.saturating_sub(resolved);
            if let Some(s) = self.entries.get_mut(&ent) {
                s.watchers = s.watchers.saturating_add(resolved as u16);
            }
        }
    }

    pub(super) fn open_window(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        if self.tasks.get(&e.tid).is_some_and(|t| t.window.is_some()) {
            // The exit of the previous call was lost: close it without
            // claiming anything about its end.
            self.close_window(e.tid, None, out);
        }
        let mut open = self.ev(index, e, "move_pages (UFFDIO_MOVE) starts");
        // Reuse two fields of the opening record to remember the process
        // and the source start, which fault filtering needs.
        open.folio = e.pid as u64;
        open.f_swap = if e.valid & V_ADDR != 0 { e.addr } else { 0 };
        let t = self.task(e.tid, e.ts_ns);
        let lookups = std::mem::take(&mut t.pool);
        t.window = Some(MoveWindow {
            open,
            lookups,
            active: 0,
            next: 0,
        });
        self.open_windows.push(e.tid);
    }

    pub(super) fn on_lookup(&mut self, index: u64, e: &Event) {
        let partial = e.valid & V_ENTRY_PARTIAL != 0;
        let folio = if e.valid & V_FOLIO != 0 { e.folio } else { 0 };
        if e.probe == ProbeId::MovePagesLookup as u16
            && !partial
            && folio != 0
            && e.valid & V_ADDR != 0
        {
            if let Some(ent) = full_entry(e) {
                self.learn_space(e.addr, ent);
            }
        }
        if self.tasks.get(&e.tid).is_none_or(|t| t.window.is_none()) {
            return;
        }
        let (entry, space, idx) = if partial {
            let ent = self.resolve_space(e.addr, e.entry).unwrap_or(0);
            (ent, e.addr, e.entry)
        } else {
            match full_entry(e) {
                Some(ent) => (ent, 0, 0),
                None => return,
            }
        };
        let note = if folio != 0 {
            "lookup inside move_pages found a swap-cache folio (no lock held)"
        } else {
            "lookup inside move_pages found no folio"
        };
        let ev = self.ev(index, e, note);
        let gen = if entry != 0 {
            let s = self.entry_mut(entry);
            s.watchers = s.watchers.saturating_add(1);
            s.gen
        } else {
            self.unresolved += 1;
            0
        };
        let cap = self.cfg.lookups_per_window.max(1);
        let mut retired: Option<(u64, u64)> = None;
        if let Some(w) = self.tasks.get_mut(&e.tid).and_then(|t| t.window.as_mut()) {
            let slot = if w.active < cap {
                w.active += 1;
                if w.lookups.len() < w.active {
                    w.lookups.push(Lookup::empty(ev));
                }
                w.active - 1
            } else {
                let s = w.next;
                w.next = (w.next + 1) % cap;
                retired = Some((w.lookups[s].entry, w.lookups[s].ev.ts));
                s
            };
            let l = &mut w.lookups[slot];
            l.ev = ev;
            l.entry = entry;
            l.space = space;
            l.index = idx;
            l.folio = folio;
            l.gen = gen;
            l.freed = false;
            l.reused = false;
            l.inserted = false;
            l.moved = false;
            l.swapped_in_here = false;
            l.chain.clear();
        }
        if let Some((old, ts)) = retired {
            self.unwatch(old);
            self.windows
                .record(WindowKind::MoveLookupToClose, ts, e.ts_ns);
        }
    }

    fn unwatch(&mut self, entry: u64) {
        if entry == 0 {
            self.unresolved = self.unresolved.saturating_sub(1);
        } else if let Some(s) = self.entries.get_mut(&entry) {
            s.watchers = s.watchers.saturating_sub(1);
        }
    }

    /// `folio_move_anon_rmap` by a task inside its window.
    pub(super) fn on_move(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        if e.valid & V_FOLIO == 0 || e.folio == 0 {
            return;
        }
        let Some(w) = self.tasks.get_mut(&e.tid).and_then(|t| t.window.as_mut()) else {
            return;
        };
        // The most recent lookup that returned this folio.
        let Some(i) = (0..w.active)
            .filter(|&i| w.lookups[i].folio == e.folio)
            .max_by_key(|&i| w.lookups[i].ev.index)
        else {
            return;
        };
        w.lookups[i].moved = true;
        let l = w.lookups[i].clone();
        let move_ev = Ev::new(
            index,
            e,
            self.stats.lost,
            "folio_move_anon_rmap moves the looked-up folio",
        );
        let cur = self.entries.get(&l.entry).copied().unwrap_or_default();
        let reused = l.entry != 0 && (l.reused || cur.gen != l.gen);
        if reused {
            let mut chain = Vec::with_capacity(l.chain.len() + 2);
            chain.push(l.ev);
            chain.extend_from_slice(&l.chain);
            chain.push(move_ev);
            let snapshot_ok = super::stale_move::folio_still_names(e, l.entry);
            if snapshot_ok {
                let msg = format!(
                    "swap entry {} was freed and allocated again while move_pages held its lookup, \
                     but the moved folio {:#x} is again the swap-cache folio of that entry: the move is consistent",
                    crate::event::fmt_entry(l.entry),
                    e.folio
                );
                self.emit(out, RuleId::SwapEntryAba, Severity::Info, msg, &chain);
            } else if l.swapped_in_here {
                // A present-PTE retry of move_pages_pte moving the folio the
                // same process faulted in: legitimate.
            } else {
                let msg = format!(
                    "move_pages looked up swap entry {} and got folio {:#x}; the entry was then freed and \
                     allocated again (generation changed) and the stale folio was still moved by \
                     folio_move_anon_rmap: the PTE recheck passed on a reused entry",
                    crate::event::fmt_entry(l.entry),
                    e.folio
                );
                self.emit(out, RuleId::SwapEntryAba, Severity::Violation, msg, &chain);
            }
            return;
        }
        self.check_stale_move(&l, move_ev, e, out);
    }

    /// Closes `tid`'s window: `close` is the `move_pages` exit, or `None`
    /// when the exit was lost or the trace ended.
    pub(super) fn close_window(&mut self, tid: u32, close: Option<Ev>, out: &mut Vec<Finding>) {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        let Some(mut w) = t.window.take() else { return };
        self.open_windows.retain(|&x| x != tid);
        let end_ts = close.map(|c| c.ts).unwrap_or(self.last_ts);
        for i in 0..w.active {
            let l = &w.lookups[i];
            self.windows
                .record(WindowKind::MoveLookupToClose, l.ev.ts, end_ts);
            let cur_gen = self.entries.get(&l.entry).map(|s| s.gen).unwrap_or(l.gen);
            let reused = l.entry != 0 && (l.reused || cur_gen != l.gen);
            let mut chain: Vec<Ev> = Vec::new();
            let ending = match close {
                Some(c) => c.with_note(if c.ret < 0 {
                    "move_pages returned an error: the move of this page did not complete"
                } else {
                    "move_pages returned"
                }),
                None => l
                    .ev
                    .with_note("trace ended (or the move_pages exit was lost) inside the window"),
            };
            if l.folio != 0 && reused && !l.moved {
                chain.push(l.ev);
                chain.extend_from_slice(&l.chain);
                chain.push(ending);
                let msg = format!(
                    "swap entry {} was freed and allocated again while move_pages held its lookup of folio {:#x}; \
                     the stale folio was not moved (a recheck or an error path caught it)",
                    crate::event::fmt_entry(l.entry),
                    l.folio
                );
                self.emit(out, RuleId::SwapEntryAba, Severity::NearMiss, msg, &chain);
            } else if l.folio == 0 && l.inserted {
                chain.push(l.ev);
                chain.extend_from_slice(&l.chain);
                chain.push(ending);
                let msg = format!(
                    "move_pages found no swap-cache folio for entry {}, but a folio was added to the swap cache \
                     for it before the call returned: the move decided on a stale miss (kernels with the \
                     SWAP_HAS_CACHE recheck retry; the per-page outcome is not visible)",
                    crate::event::fmt_entry(l.entry)
                );
                self.emit(
                    out,
                    RuleId::MissedSwapcacheLookup,
                    Severity::NearMiss,
                    msg,
                    &chain,
                );
            }
        }
        let entries: Vec<u64> = w.lookups[..w.active].iter().map(|l| l.entry).collect();
        for ent in entries {
            self.unwatch(ent);
        }
        w.active = 0;
        w.next = 0;
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.pool = std::mem::take(&mut w.lookups);
        }
        self.drop_task_if_idle(tid);
    }

    /// A task that went away with a window open: forget it, no findings.
    pub(super) fn abandon_window(&mut self, tid: u32) {
        let Some(w) = self.tasks.get_mut(&tid).and_then(|t| t.window.take()) else {
            return;
        };
        self.open_windows.retain(|&x| x != tid);
        for l in &w.lookups[..w.active] {
            let ent = l.entry;
            self.unwatch(ent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{RuleId, Severity};
    use detector_common::{swp_entry, FS_ANON, FS_LOCKED, FS_SWAPBACKED, FS_SWAPCACHE};

    const SC: u32 = FS_ANON | FS_SWAPBACKED | FS_SWAPCACHE;

    fn reuse(t: &mut T, s: u64) {
        t.lookup(1, s, 0xb0, SC);
        t.delete(2, s, 0xb0);
        t.free(2, s);
        t.alloc(3, s, 0xa0);
        t.insert(3, s, 0xa0);
    }

    #[test]
    fn stale_folio_moved_after_reuse_is_a_violation() {
        let mut t = T::new();
        let s = swp_entry(1, 0x40);
        t.move_enter(1);
        reuse(&mut t, s);
        t.move_rmap(1, 0xb0, FS_ANON | FS_SWAPBACKED | FS_LOCKED, 0);
        t.move_exit(1, 4096);
        assert_eq!(t.kinds(), vec![(RuleId::SwapEntryAba, Severity::Violation)]);
        assert_eq!(
            t.a.windows()
                .summary(super::WindowKind::EntryFreeToRealloc)
                .count,
            1
        );
    }

    #[test]
    fn reuse_without_move_is_a_near_miss_and_reuse_after_close_is_nothing() {
        let mut t = T::new();
        let s = swp_entry(1, 0x40);
        t.move_enter(1);
        reuse(&mut t, s);
        t.move_exit(1, -16);
        assert_eq!(t.kinds(), vec![(RuleId::SwapEntryAba, Severity::NearMiss)]);

        let mut t = T::new();
        t.move_enter(1);
        t.lookup(1, s, 0xb0, SC);
        t.move_rmap(1, 0xb0, SC | FS_LOCKED, s);
        t.move_exit(1, 4096);
        t.delete(2, s, 0xb0);
        t.free(2, s);
        t.alloc(3, s, 0xa0);
        assert!(t.kinds().is_empty());
    }

    #[test]
    fn own_process_swap_in_then_present_move_is_benign() {
        let mut t = T::new();
        let s = swp_entry(1, 0x40);
        t.move_enter(1);
        t.lookup(1, s, 0xb0, SC);
        t.swap_fault_exit(4, 1, s);
        t.delete(4, s, 0xb0);
        t.free(4, s);
        t.alloc(3, s, 0xa0);
        t.move_rmap(1, 0xb0, FS_ANON | FS_SWAPBACKED | FS_LOCKED, 0);
        t.move_exit(1, 4096);
        assert!(t.kinds().is_empty());
    }

    #[test]
    fn missed_lookup_then_insert_is_a_near_miss() {
        let mut t = T::new();
        let s = swp_entry(1, 0x80);
        t.move_enter(1);
        t.lookup(1, s, 0, 0);
        t.insert(2, s, 0xc0);
        t.move_exit(1, 4096);
        assert_eq!(
            t.kinds(),
            vec![(RuleId::MissedSwapcacheLookup, Severity::NearMiss)]
        );
        assert_eq!(
            t.a.tracked_objects(),
            3,
            "entry, folio and the task keeping its pooled lookup slots"
        );
    }

    #[test]
    fn lost_events_reduce_confidence() {
        let mut t = T::new();
        let s = swp_entry(1, 0x40);
        t.move_enter(1);
        t.lookup(1, s, 0xb0, SC);
        t.lost(detector_common::ProbeId::SwapEntryFree, 3);
        t.free(2, s);
        t.alloc(3, s, 0xa0);
        t.move_exit(1, -11);
        t.kinds();
        assert_eq!(t.out[0].confidence.lost_events, 3);
    }
}
