//! Rule (a): swap entry reuse inside a `move_pages` lookup window (ABA),
//! and the missed lookup. The swap-entry lifecycle it watches is kept in
//! `entries`.
//!
//! Seed 000: UFFDIO_MOVE looks up the swap cache with no lock held. Between
//! that lookup and the PTE recheck the entry can be freed and allocated
//! again (possibly for the very PTE being moved), so `pte_same` passes on a
//! reused entry and the wrong folio is moved.

use detector_common::{Event, ProbeId, V_ADDR, V_ENTRY_PARTIAL, V_FOLIO};

use super::ev::Ev;
use super::state::{Lookup, MoveWindow, CHAIN_MAX};
use super::windows::WindowKind;
use super::{full_entry, Analyzer, Finding, RuleId, Severity};

/// What happened to a watched entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Happened {
    Free,
    Realloc,
    Insert,
    Delete,
}

impl Analyzer {
    /// An entry some open window may have looked up changed: its lookups
    /// record what happened, and a lookup known only by (address space,
    /// index) learns its entry.
    pub(super) fn notify(&mut self, ent: u64, ev: Ev, what: Happened) {
        let mut resolved = 0usize;
        for &tid in &self.open_windows {
            let Some(w) = self.tasks.get_mut(&tid).and_then(|t| t.window.as_mut()) else {
                continue;
            };
            for l in &mut w.lookups[..w.active] {
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
        let open = self.ev(index, e, "move_pages (UFFDIO_MOVE) starts");
        let t = self.task(e);
        let lookups = std::mem::take(&mut t.pool);
        t.window = Some(MoveWindow {
            open,
            lookups,
            active: 0,
            next: 0,
            present: None,
            latest: usize::MAX,
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
            l.chain.clear();
            // A swap-PTE move acts on this lookup; a present-PTE signal seen
            // before it concerned an earlier page.
            w.latest = slot;
            w.present = None;
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

    /// `ptep_clear_flush` inside the task's window: the present-PTE path is
    /// about to move the folio that PTE mapped.
    pub(super) fn on_move_present(&mut self, index: u64, e: &Event) {
        if self.tasks.get(&e.tid).is_none_or(|t| t.window.is_none()) {
            return;
        }
        let ev = self.ev(
            index,
            e,
            "move_pages cleared a present source PTE (present-page path)",
        );
        if let Some(w) = self.tasks.get_mut(&e.tid).and_then(|t| t.window.as_mut()) {
            w.present = Some(ev);
        }
    }

    /// `folio_move_anon_rmap` by a task inside its window.
    ///
    /// Which folio the kernel moves depends on the path it took for this
    /// PTE. The present-PTE path moves the folio mapped at the source address
    /// (announced by the `move_present` event just before; the PTE was
    /// re-read under both PTLs, so a folio a sibling swapped in, out and in
    /// again is moved correctly). The swap-PTE path moves the folio its
    /// latest swap-cache lookup returned, with nothing but the lookup's own
    /// guard between that lookup and the move: only that path can move a
    /// stale folio.
    pub(super) fn on_move(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        if e.valid & V_FOLIO == 0 || e.folio == 0 {
            return;
        }
        let path_probe = self.is_attached(ProbeId::MovePresent);
        let Some(w) = self.tasks.get_mut(&e.tid).and_then(|t| t.window.as_mut()) else {
            return;
        };
        if let Some(p) = w.present.take() {
            if p.folio == e.folio || p.folio == 0 {
                return;
            }
        }
        let latest =
            (w.latest < w.active && w.lookups[w.latest].folio == e.folio).then_some(w.latest);
        let Some(i) = latest.or_else(|| {
            (0..w.active)
                .filter(|&i| w.lookups[i].folio == e.folio)
                .max_by_key(|&i| w.lookups[i].ev.index)
        }) else {
            return;
        };
        w.lookups[i].moved = true;
        let l = w.lookups[i].clone();
        let open = w.open;
        // The swap path is known only when the present path could have been
        // seen and this is the lookup a swap-PTE move acts on.
        let swap_path = path_probe && latest.is_some();
        let move_ev = Ev::new(
            index,
            e,
            self.stats.lost,
            if swap_path {
                "folio_move_anon_rmap moves the looked-up folio (swap-PTE path)"
            } else {
                "folio_move_anon_rmap moves a folio this window looked up (path not observed)"
            },
        );
        let cur = self.entries.get(&l.entry).copied().unwrap_or_default();
        let reused = l.entry != 0 && (l.reused || cur.gen != l.gen);
        let consistent = super::stale_move::folio_still_names(e, l.entry);
        let mut chain = Vec::with_capacity(l.chain.len() + 3);
        chain.push(open);
        chain.push(l.ev);
        chain.extend_from_slice(&l.chain);
        chain.push(move_ev);
        let entry = crate::event::fmt_entry(l.entry);
        if reused && consistent {
            let msg = format!(
                "swap entry {entry} was freed and allocated again while move_pages held its lookup, \
                 but the moved folio {:#x} is again the swap-cache folio of that entry: the move is consistent",
                e.folio
            );
            self.emit(
                out,
                RuleId::SwapEntryAba,
                Severity::Info,
                "consistent_again",
                msg,
                &chain,
            );
        } else if reused && swap_path {
            let msg = format!(
                "move_pages looked up swap entry {entry} and got folio {:#x}; the entry was then freed and \
                 allocated again (generation changed) and the stale folio was still moved by \
                 folio_move_anon_rmap on the swap-PTE path: the PTE recheck passed on a reused entry",
                e.folio
            );
            self.emit(
                out,
                RuleId::SwapEntryAba,
                Severity::Violation,
                "reused_entry_moved",
                msg,
                &chain,
            );
        } else if reused {
            let msg = format!(
                "move_pages looked up swap entry {entry} and got folio {:#x}; the entry was freed and \
                 allocated again before folio_move_anon_rmap moved that folio, but this kernel does not \
                 show which path the move took (the present-PTE path moving a folio mapped at the \
                 source again is correct), so this is not proof of a stale move",
                e.folio
            );
            self.emit(
                out,
                RuleId::SwapEntryAba,
                Severity::NearMiss,
                "path_not_observed",
                msg,
                &chain,
            );
        } else if !consistent {
            self.check_stale_move(&l, &chain, e, swap_path, out);
        }
    }

    /// Closes `tid`'s window: `close` is the `move_pages` exit, or `None`
    /// when the exit was lost or the trace ended. Several lookups of one
    /// entry in one call (the kernel retrying a page) make one finding.
    pub(super) fn close_window(&mut self, tid: u32, close: Option<Ev>, out: &mut Vec<Finding>) {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        let Some(mut w) = t.window.take() else { return };
        self.open_windows.retain(|&x| x != tid);
        let end_ts = close.map(|c| c.ts).unwrap_or(self.last_ts);
        let ending = |first: Ev| match close {
            Some(c) => c.with_note(if c.ret < 0 {
                "move_pages returned an error: the move of this page did not complete"
            } else {
                "move_pages returned"
            }),
            None => {
                first.with_note("trace ended (or the move_pages exit was lost) inside the window")
            }
        };
        // (rule, entry, lookups in window order); a window holds at most
        // `lookups_per_window` lookups, so this stays small.
        let mut groups: Vec<(RuleId, u64, Vec<usize>)> = Vec::new();
        for i in 0..w.active {
            let l = &w.lookups[i];
            self.windows
                .record(WindowKind::MoveLookupToClose, l.ev.ts, end_ts);
            let cur_gen = self.entries.get(&l.entry).map(|s| s.gen).unwrap_or(l.gen);
            let reused = l.entry != 0 && (l.reused || cur_gen != l.gen);
            let rule = if l.folio != 0 && reused && !l.moved {
                RuleId::SwapEntryAba
            } else if l.folio == 0 && l.inserted {
                RuleId::MissedSwapcacheLookup
            } else {
                continue;
            };
            match groups.iter_mut().find(|g| g.0 == rule && g.1 == l.entry) {
                Some(g) => g.2.push(i),
                None => groups.push((rule, l.entry, vec![i])),
            }
        }
        // Report in the order the races began.
        groups.sort_by_key(|g| w.lookups[g.2[0]].ev.index);
        for (rule, entry, idx) in groups {
            let first = w.lookups[idx[0]].ev;
            let mut chain: Vec<Ev> = vec![w.open];
            for &i in &idx {
                let l = &w.lookups[i];
                for ev in std::iter::once(&l.ev).chain(l.chain.iter()) {
                    if chain.len() < 4 * CHAIN_MAX && !chain.iter().any(|c| c.index == ev.index) {
                        chain.push(*ev);
                    }
                }
            }
            chain.push(ending(first));
            let ent = crate::event::fmt_entry(entry);
            let n = idx.len();
            let times = if n > 1 {
                format!(" ({n} lookups of it in this call)")
            } else {
                String::new()
            };
            if rule == RuleId::SwapEntryAba {
                let folios: Vec<String> = idx
                    .iter()
                    .map(|&i| format!("{:#x}", w.lookups[i].folio))
                    .fold(Vec::new(), |mut v, f| {
                        if !v.contains(&f) {
                            v.push(f);
                        }
                        v
                    });
                let msg = format!(
                    "swap entry {ent} was freed and allocated again while move_pages held its lookup{times} \
                     of folio {}; the stale folio was not moved (the kernel's recheck or an error path \
                     caught it, and a retry took the page's current state)",
                    folios.join(", ")
                );
                self.emit(
                    out,
                    rule,
                    Severity::NearMiss,
                    "reuse_not_moved",
                    msg,
                    &chain,
                );
            } else {
                let msg = format!(
                    "move_pages found no swap-cache folio for entry {ent}{times}, but a folio was added to the \
                     swap cache for it before the call returned: the move decided on a stale miss (kernels \
                     with the SWAP_HAS_CACHE recheck retry; the per-page outcome is not visible)"
                );
                self.emit(
                    out,
                    rule,
                    Severity::NearMiss,
                    "insert_after_miss",
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
    /// Returns whether there was a window.
    pub(super) fn abandon_window(&mut self, tid: u32) -> bool {
        let Some(w) = self.tasks.get_mut(&tid).and_then(|t| t.window.take()) else {
            return false;
        };
        self.open_windows.retain(|&x| x != tid);
        for l in &w.lookups[..w.active] {
            let ent = l.entry;
            self.unwatch(ent);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{RuleId, Severity};
    #[allow(unused_imports)]
    use detector_common::V_ADDR;
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
    fn retried_move_of_the_present_page_is_a_near_miss_not_a_violation() {
        // The mover looked up S and got F; a sibling swapped F in and S was
        // freed and given to another folio; the retry found the page
        // present and moved it on the present-PTE path.
        let mut t = T::new();
        let s = swp_entry(1, 0x40);
        t.move_enter(1);
        t.lookup(1, s, 0xb0, SC);
        t.swap_fault_exit(4, 1, s);
        t.delete(4, s, 0xb0);
        t.free(4, s);
        t.alloc(3, s, 0xa0);
        t.move_present(1, 0xb0);
        t.move_rmap(1, 0xb0, FS_ANON | FS_SWAPBACKED | FS_LOCKED, 0);
        t.move_exit(1, 4096);
        assert_eq!(t.kinds(), vec![(RuleId::SwapEntryAba, Severity::NearMiss)]);
        assert!(t.out[0].explanation.contains("not moved"));
    }

    #[test]
    fn a_siblings_swap_in_does_not_hide_a_real_reuse() {
        // Another thread of the mover's process faults S in, but the move
        // that follows is on the swap-PTE path: the stale folio is moved.
        let mut t = T::new();
        let s = swp_entry(1, 0x40);
        t.move_enter(1);
        t.lookup(1, s, 0xb0, SC);
        t.swap_fault_exit(4, 1, s);
        t.delete(4, s, 0xb0);
        t.free(4, s);
        t.alloc(3, s, 0xa0);
        t.insert(3, s, 0xa0);
        t.move_rmap(1, 0xb0, FS_ANON | FS_SWAPBACKED | FS_LOCKED, 0);
        t.move_exit(1, 4096);
        assert_eq!(t.kinds(), vec![(RuleId::SwapEntryAba, Severity::Violation)]);
        let f = &t.out[0];
        assert_eq!(f.objects.entries[0], "1:0x40");
        assert!(f.objects.folios.contains(&"0xb0".to_string()));
        assert_eq!(
            f.evidence.first().map(|e| e.probe.as_str()),
            Some("move_pages")
        );
    }

    #[test]
    fn a_present_signal_for_another_folio_does_not_excuse_the_move() {
        let mut t = T::new();
        let s = swp_entry(1, 0x40);
        t.move_enter(1);
        t.lookup(1, s, 0xb0, SC);
        reuse_after_lookup(&mut t, s);
        t.move_present(1, 0xc0);
        t.move_rmap(1, 0xb0, FS_ANON | FS_SWAPBACKED | FS_LOCKED, 0);
        t.move_exit(1, 4096);
        assert_eq!(t.kinds(), vec![(RuleId::SwapEntryAba, Severity::Violation)]);
    }

    fn reuse_after_lookup(t: &mut T, s: u64) {
        t.delete(2, s, 0xb0);
        t.free(2, s);
        t.alloc(3, s, 0xa0);
        t.insert(3, s, 0xa0);
    }

    #[test]
    fn without_the_present_path_probe_a_reuse_is_only_a_near_miss() {
        let mut t = T::new();
        t.a.set_attached(
            detector_common::ProbeId::ALL
                .iter()
                .copied()
                .filter(|p| *p != detector_common::ProbeId::MovePresent),
        );
        let s = swp_entry(1, 0x40);
        t.move_enter(1);
        reuse(&mut t, s);
        t.move_rmap(1, 0xb0, FS_ANON | FS_SWAPBACKED | FS_LOCKED, 0);
        t.move_exit(1, 4096);
        assert_eq!(t.kinds(), vec![(RuleId::SwapEntryAba, Severity::NearMiss)]);
        assert!(t.out[0].explanation.contains("does not show which path"));
    }

    #[test]
    fn repeated_lookups_of_one_entry_make_one_finding() {
        let mut t = T::new();
        let s = swp_entry(1, 0x40);
        let other = swp_entry(1, 0x41);
        t.move_enter(1);
        t.lookup(1, s, 0xb0, SC);
        t.lookup(1, s, 0xb0, SC);
        t.lookup(1, other, 0, 0);
        t.lookup(1, other, 0, 0);
        t.lookup(1, s, 0xb0, SC);
        reuse_after_lookup(&mut t, s);
        t.insert(5, other, 0xd0);
        t.move_exit(1, -11);
        assert_eq!(
            t.kinds(),
            vec![
                (RuleId::SwapEntryAba, Severity::NearMiss),
                (RuleId::MissedSwapcacheLookup, Severity::NearMiss)
            ]
        );
        assert!(t.out[0].explanation.contains("3 lookups"));
        assert!(t.out[1].explanation.contains("2 lookups"));
        assert_eq!(t.out[1].objects.entries, vec!["1:0x41".to_string()]);
    }

    #[test]
    fn reuse_of_a_sub_entry_of_a_large_folio_names_that_entry() {
        use detector_common::{EventKind, ProbeId, FS_LARGE};
        let mut t = T::new();
        let base = swp_entry(1, 0x80);
        let sub = base + 2;
        t.move_enter(1);
        // The lookup asked for S+2 and found the 4-page folio at S.
        let mut l = with_entry(ev(ProbeId::MovePagesLookup, EventKind::Exit, 1), sub);
        l = with_folio(l, 0xb0, SC | FS_LARGE, 6, 0);
        l.f_swap = base;
        l.f_nr_pages = 4;
        t.feed(l);
        // The whole folio leaves the swap cache and its four entries are
        // freed at once; only S+2 is allocated again, for another folio.
        let mut del = with_folio(
            ev(ProbeId::SwapCacheDelete, EventKind::Enter, 2),
            0xb0,
            SC | FS_LARGE,
            5,
            0,
        );
        del.f_swap = base;
        del.f_nr_pages = 4;
        t.feed(with_entry(del, base));
        let mut free = with_entry(ev(ProbeId::SwapEntryFree, EventKind::Enter, 2), base);
        free.nr = 4;
        t.feed(free);
        t.alloc(3, sub, 0xa0);
        t.move_rmap(1, 0xb0, FS_ANON | FS_SWAPBACKED | FS_LOCKED | FS_LARGE, 0);
        t.move_exit(1, 4096);
        assert_eq!(t.kinds(), vec![(RuleId::SwapEntryAba, Severity::Violation)]);
        assert_eq!(t.out[0].objects.entries[0], "1:0x82");
    }

    #[test]
    fn reuse_of_another_sub_entry_than_the_one_looked_up_is_nothing() {
        use detector_common::{EventKind, ProbeId, FS_LARGE};
        let mut t = T::new();
        let base = swp_entry(1, 0x80);
        t.move_enter(1);
        let mut l = with_entry(ev(ProbeId::MovePagesLookup, EventKind::Exit, 1), base + 2);
        l = with_folio(l, 0xb0, SC | FS_LARGE, 6, 0);
        l.f_swap = base;
        l.f_nr_pages = 4;
        t.feed(l);
        t.free(2, base + 3);
        t.alloc(3, base + 3, 0xa0);
        let mut mv = with_folio(
            ev(ProbeId::FolioMoveAnonRmap, EventKind::Enter, 1),
            0xb0,
            SC | FS_LOCKED | FS_LARGE,
            6,
            0,
        );
        mv.f_swap = base;
        mv.f_nr_pages = 4;
        t.feed(mv);
        t.move_exit(1, 4096);
        assert!(t.kinds().is_empty());
    }

    #[test]
    fn a_recycled_tid_does_not_inherit_a_window() {
        // The first mover exits inside its window (exit seen), a new task
        // gets the same tid and moves a folio an old lookup returned.
        let s = swp_entry(1, 0x40);
        for exit_seen in [true, false] {
            let mut t = T::new();
            t.set_start(1, 100);
            t.move_enter(1);
            t.lookup(1, s, 0xb0, SC);
            if exit_seen {
                t.task_exit(1);
            } else {
                t.lost(detector_common::ProbeId::TaskExit, 1);
            }
            reuse_after_lookup(&mut t, s);
            t.set_start(1, 200);
            t.move_rmap(1, 0xb0, FS_ANON | FS_SWAPBACKED | FS_LOCKED, 0);
            t.move_exit(1, 4096);
            assert!(t.kinds().is_empty(), "exit seen: {exit_seen}");
            assert_eq!(t.a.windows_abandoned(), 1);
            assert_eq!(t.a.open_windows(), 0);
        }
    }

    #[test]
    fn a_thread_of_another_process_with_the_tid_is_another_task() {
        let s = swp_entry(1, 0x40);
        let mut t = T::new();
        t.move_enter(1);
        t.lookup(1, s, 0xb0, SC);
        reuse_after_lookup(&mut t, s);
        let mut mv = with_folio(
            ev(
                detector_common::ProbeId::FolioMoveAnonRmap,
                detector_common::EventKind::Enter,
                1,
            ),
            0xb0,
            FS_ANON | FS_SWAPBACKED | FS_LOCKED,
            2,
            0,
        );
        mv.pid = 77;
        t.feed(mv);
        assert!(t.kinds().is_empty());
    }

    #[test]
    fn timestamps_out_of_stream_order_change_nothing() {
        // The stream is in ring-buffer order; a record whose CPU stalled
        // carries an older or newer clock than its neighbours. Rules follow
        // the stream order, and no window measures negative or ends idle.
        use detector_common::{EventKind, ProbeId};
        let s = swp_entry(1, 0x40);
        let mut t = T::with(super::super::Config {
            task_idle_ns: 10_000,
            ..Default::default()
        });
        t.move_enter(1);
        t.lookup(1, s, 0xb0, SC);
        // Reuse by another CPU, its records stamped far in the past.
        t.feed_late(
            with_folio(
                with_entry(ev(ProbeId::SwapCacheDelete, EventKind::Enter, 2), s),
                0xb0,
                SC,
                2,
                0,
            ),
            1_000_000,
        );
        t.feed_late(
            with_entry(ev(ProbeId::SwapEntryFree, EventKind::Enter, 2), s),
            1_000_000,
        );
        t.feed_late(
            with_folio(
                with_entry(ev(ProbeId::SwapEntryAlloc, EventKind::Exit, 3), s),
                0xa0,
                0x24,
                2,
                0,
            ),
            900_000,
        );
        t.move_rmap(1, 0xb0, FS_ANON | FS_SWAPBACKED | FS_LOCKED, 0);
        t.move_exit(1, 4096);
        assert_eq!(t.kinds(), vec![(RuleId::SwapEntryAba, Severity::Violation)]);
        assert_eq!(t.a.windows_abandoned(), 0);
        let w = t.a.windows().summary(super::WindowKind::MoveLookupToClose);
        assert_eq!(w.count, 1);
        assert!(w.max_ns < 1_000_000, "{w:?}");
    }

    #[test]
    fn an_idle_window_ends_without_a_finding() {
        let s = swp_entry(1, 0x40);
        let mut t = T::with(super::super::Config {
            task_idle_ns: 1_000_000,
            ..Default::default()
        });
        t.move_enter(1);
        t.lookup(1, s, 0xb0, SC);
        t.sleep(5_000_000);
        reuse_after_lookup(&mut t, s);
        t.move_rmap(1, 0xb0, FS_ANON | FS_SWAPBACKED | FS_LOCKED, 0);
        assert!(t.kinds().is_empty());
        assert_eq!(t.a.windows_abandoned(), 1);
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
