//! What the check counts in one pass over a recorded stream, independently
//! of the analyzer: events per probe, lost records, the swap-cache
//! lookups against the inserts that named their folios, returns that
//! were not sign-extended, refcounts, large folios, the entries freed and
//! reused inside move windows, task lifetimes, and GUP-fast grabs dropped
//! by their re-check.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use detector::event::{fmt_entry, EventExt};
use detector_common::{
    swp_entry, swp_offset, swp_type, Event, EventKind, ProbeId, FS_LARGE, FS_SWAPCACHE, V_ADDR,
    V_ENTRY_PARTIAL, V_FOLIO, V_FOLIO_STATE, V_RET,
};

/// Per-probe counters and consistency tallies gathered in one pass.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) per_probe: BTreeMap<ProbeId, u64>,
    pub(super) unknown_probe: u64,
    pub(super) lost_by_probe: BTreeMap<u16, u64>,
    pub(super) lost_records: u64,
    pub(super) swap_read_pages: u64,
    /// entry -> folio named by the last insert (removed on delete).
    pub(super) cache: HashMap<u64, u64>,
    pub(super) lookups_checked: u64,
    /// Every lookup that disagreed with the recorded insert, and the first
    /// few as evidence.
    pub(super) lookup_mismatches: u64,
    pub(super) lookup_mismatch: Vec<String>,
    /// Exits of int-returning functions whose negative value was recorded
    /// without sign extension.
    pub(super) bad_returns: u64,
    pub(super) bad_return: Vec<String>,
    /// Lookups that found a different folio than the recorded insert, one
    /// that carries the entry in folio->swap (replaced by migration/split).
    pub(super) lookup_replaced: u64,
    pub(super) lookup_swap_field_checked: u64,
    pub(super) lookup_swap_field_bad: Vec<String>,
    pub(super) refcount_checked: u64,
    /// Lookup exits that returned a folio, and events with folio state.
    pub(super) lookup_folios: u64,
    pub(super) with_folio_state: u64,
    pub(super) refcount_bad: Vec<String>,
    pub(super) first_ns: u64,
    pub(super) last_ns: u64,
    /// Pages the write_folio tracepoint wrote (a large folio counts whole).
    pub(super) write_folio_pages: u64,
    /// Swap-cache inserts of large folios (folio state: FS_LARGE and more
    /// than one page), and the pages they covered.
    pub(super) large_inserts: u64,
    pub(super) large_insert_pages: u64,
    /// Lookups that returned a large swap-cache folio, and of those the
    /// ones for an entry past the folio's first (S+k, k > 0) that fell
    /// inside `folio->swap .. + nr_pages`.
    pub(super) large_lookups: u64,
    pub(super) large_lookups_inner: u64,
    pub(super) moves: MoveTally,
    /// GUP-fast grabs awaiting their task's next event, by task: a gup_put
    /// of the same folio next is the fast path's re-check dropping it.
    pub(super) fast_pending: HashMap<u32, u64>,
    /// Folio -> whether its last GUP event was such a drop.
    pub(super) fast_dropped_last: HashMap<u64, bool>,
    pub(super) lives: LifeTally,
}

/// Task lifetimes against `move_pages` windows, from the raw events: a
/// window must end (its `move_pages` exit) before its task exits, and a tid
/// must not start a new call while an earlier task's call on it is open.
#[derive(Default)]
pub(super) struct LifeTally {
    /// tid -> (pid, task start, the enter event) of its open call.
    pub(super) open: HashMap<u32, (u32, u32, String)>,
    pub(super) exits: u64,
    pub(super) outlived: Vec<String>,
}

impl LifeTally {
    pub(super) fn event(&mut self, p: ProbeId, kind: Option<EventKind>, ev: &Event) {
        let same = |o: &(u32, u32, String)| o.0 == ev.pid && (o.1 == 0 || o.1 == ev.task_start);
        match (p, kind) {
            (ProbeId::MovePages, Some(EventKind::Enter)) => {
                if let Some(old) = self.open.get(&ev.tid).filter(|o| !same(o)) {
                    push_evidence(
                        &mut self.outlived,
                        format!(
                            "{} started while an earlier task's call on tid {} was open: {}",
                            describe(ev),
                            ev.tid,
                            old.2
                        ),
                    );
                }
                self.open
                    .insert(ev.tid, (ev.pid, ev.task_start, describe(ev)));
            }
            (ProbeId::MovePages, Some(EventKind::Exit)) => {
                self.open.remove(&ev.tid);
            }
            (ProbeId::TaskExit, _) => {
                self.exits += 1;
                if let Some(old) = self.open.remove(&ev.tid) {
                    push_evidence(
                        &mut self.outlived,
                        format!(
                            "{} while its move_pages call was open: {}",
                            describe(ev),
                            old.2
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

/// Lookups made inside `move_pages` (seed 000's window): how many saw
/// their entry freed, and allocated again, before the call returned. Counted from the raw events, independently of the analyzer.
#[derive(Default)]
pub(super) struct MoveTally {
    /// tid -> (entry, what happened to it) for each lookup in its open call.
    pub(super) open: HashMap<u32, Vec<(u64, u8)>>,
    /// `address_space` -> (swap type, first offset) for lookups that name
    /// only the swap-cache index (filemap_get_folio on 6.12).
    pub(super) spaces: HashMap<u64, (u32, u64)>,
    pub(super) calls: u64,
    pub(super) lookups: u64,
    pub(super) unresolved: u64,
    pub(super) freed: u64,
    pub(super) reused: u64,
}

const FREED: u8 = 1;
const REUSED: u8 = 2;
/// Pages per swap `address_space` (SWAP_ADDRESS_SPACE_SHIFT 14).
const SPACE_PAGES: u64 = 1 << 14;

impl MoveTally {
    pub(super) fn event(&mut self, p: ProbeId, kind: Option<EventKind>, ev: &Event) {
        match (p, kind) {
            (ProbeId::MovePages, Some(EventKind::Enter)) => {
                self.calls += 1;
                self.open.insert(ev.tid, Vec::new());
            }
            (ProbeId::MovePages, Some(EventKind::Exit)) => {
                for (_, st) in self.open.remove(&ev.tid).unwrap_or_default() {
                    self.freed += u64::from(st & FREED != 0);
                    self.reused += u64::from(st & REUSED != 0);
                }
            }
            (ProbeId::MovePagesLookup | ProbeId::SwapCacheLookup, Some(EventKind::Exit)) => {
                let partial = ev.valid & V_ENTRY_PARTIAL != 0;
                if p == ProbeId::MovePagesLookup && !partial && ev.valid & V_ADDR != 0 {
                    if let Some(e) = ev.swap_entry().filter(|&e| e != 0) {
                        let base = swp_offset(e) & !(SPACE_PAGES - 1);
                        self.spaces.insert(ev.addr, (swp_type(e), base));
                    }
                }
                let Some(list) = self.open.get_mut(&ev.tid) else {
                    return;
                };
                let entry = if partial {
                    self.spaces
                        .get(&ev.addr)
                        .map(|&(ty, base)| swp_entry(ty, base + (ev.entry & (SPACE_PAGES - 1))))
                } else {
                    ev.swap_entry()
                };
                self.lookups += 1;
                match entry {
                    Some(e) if e != 0 => list.push((e, 0)),
                    _ => self.unresolved += 1,
                }
            }
            (ProbeId::SwapEntryFree, Some(EventKind::Enter) | Some(EventKind::Tracepoint)) => {
                self.mark(ev, FREED);
            }
            (ProbeId::SwapEntryAlloc, Some(EventKind::Exit))
                if ev.valid & V_RET == 0 || ev.ret >= 0 =>
            {
                self.mark(ev, REUSED);
            }
            _ => {}
        }
    }

    fn mark(&mut self, ev: &Event, what: u8) {
        if self.open.is_empty() {
            return;
        }
        let Some(first) = ev.swap_entry().filter(|&e| e != 0) else {
            return;
        };
        let n = u64::from(ev.nr.max(1)).max(large_pages(ev));
        for list in self.open.values_mut() {
            for (e, st) in list.iter_mut() {
                if *e >= first && *e < first + n {
                    // An allocation of an entry that was looked up means it
                    // was freed in between, whether or not the free was
                    // seen (a free can be recorded before the lookup's
                    // exit, or batched).
                    *st |= what;
                }
            }
        }
    }
}

/// Pages of the event's folio when its state says it is large, else 1:
/// an insert or delete of a large folio covers all its entries even where
/// the event's `nr` says 1.
pub(super) fn large_pages(ev: &Event) -> u64 {
    if ev.valid & V_FOLIO_STATE != 0 && ev.f_state & FS_LARGE != 0 {
        u64::from(ev.f_nr_pages.max(1))
    } else {
        1
    }
}

pub(super) fn describe(ev: &Event) -> String {
    let probe = ev
        .probe_id()
        .map(detector_common::ProbeId::name)
        .unwrap_or("?");
    let kind = match ev.event_kind() {
        Some(EventKind::Enter) => "enter",
        Some(EventKind::Exit) => "exit",
        _ => "tp",
    };
    let mut s = format!(
        "t={} cpu={} {}:{} {probe}/{kind} folio={:#x}",
        ev.ts_ns,
        ev.cpu,
        ev.comm_str(),
        ev.tid,
        ev.folio
    );
    if let Some(e) = ev.swap_entry() {
        let _ = write!(s, " entry={}", fmt_entry(e));
    }
    if ev.valid & V_FOLIO_STATE != 0 {
        let _ = write!(
            s,
            " ref={} map={} state={:#x} swap={}",
            ev.f_refcount,
            ev.mapcount(),
            ev.f_state,
            fmt_entry(ev.f_swap)
        );
    }
    if ev.valid & V_RET != 0 {
        let _ = write!(s, " ret={:#x}", ev.ret);
    }
    s
}

pub(super) const MAX_EVIDENCE: usize = 5;

/// Whether `ret` can be what the role's function returned. The roles
/// checked return `int` (0 or a negative errno) on every supported kernel,
/// and the analyzer compares them with negative errnos (`-EEXIST`): a
/// negative `int` recorded as its zero-extended 32-bit pattern
/// (`0xffffffef`) silently disables every such rule.
pub(super) fn plausible_return(p: ProbeId, ret: i64) -> bool {
    let zero_extended_negative = (1..=0xffff_ffff).contains(&ret) && (ret as u32 as i32) < 0;
    match p {
        ProbeId::SwapcachePrepare | ProbeId::SwapCacheInsert | ProbeId::SwapEntryDup => {
            !zero_extended_negative
        }
        _ => true,
    }
}

/// The folio a lookup returned: the decoded one, else the raw return value
/// (a pointer; NULL on a miss).
pub(super) fn lookup_result(ev: &Event) -> u64 {
    if ev.valid & V_FOLIO != 0 {
        ev.folio
    } else if ev.valid & V_RET != 0 && detector_common::is_kernel_ptr(ev.ret as u64) {
        ev.ret as u64
    } else {
        0
    }
}

pub(super) fn push_evidence(list: &mut Vec<String>, s: String) {
    if list.len() < MAX_EVIDENCE {
        list.push(s);
    }
}

impl Tally {
    /// Follows GUP-fast grabs to their task's next event (see
    /// `fast_dropped_last`).
    pub(super) fn gup_fast(&mut self, p: ProbeId, ev: &Event) {
        let pending = self.fast_pending.remove(&ev.tid);
        let gup = matches!(
            p,
            ProbeId::GupGrab | ProbeId::GupGrabFast | ProbeId::GupPut | ProbeId::UnpinUserPage
        );
        if !gup || ev.folio == 0 {
            return;
        }
        let dropped = p == ProbeId::GupPut && pending == Some(ev.folio);
        self.fast_dropped_last.insert(ev.folio, dropped);
        if p == ProbeId::GupGrabFast {
            self.fast_pending.insert(ev.tid, ev.folio);
        }
    }

    pub(super) fn event(&mut self, ev: &Event) {
        if self.first_ns == 0 {
            self.first_ns = ev.ts_ns;
        }
        self.last_ns = self.last_ns.max(ev.ts_ns);
        let Some(p) = ev.probe_id() else {
            self.unknown_probe += 1;
            return;
        };
        *self.per_probe.entry(p).or_default() += 1;
        let kind = ev.event_kind();
        self.lives.event(p, kind, ev);
        self.gup_fast(p, ev);
        let has_state = ev.valid & V_FOLIO_STATE != 0;
        if has_state {
            self.with_folio_state += 1;
        }
        // A folio handed to a function (or returned by a lookup) is
        // referenced by the caller: a live folio never has refcount 0.
        let folio_held = match (p, kind) {
            // __remove_mapping deletes from the swap cache after freezing
            // the refcount to 0 (folio_ref_freeze): 0 is expected there.
            (ProbeId::SwapCacheDelete, _) => false,
            (_, Some(EventKind::Enter)) => true,
            (ProbeId::SwapCacheLookup, Some(EventKind::Exit)) => lookup_result(ev) != 0,
            _ => false,
        };
        if has_state && ev.folio != 0 && folio_held {
            self.refcount_checked += 1;
            if ev.f_refcount < 1 {
                push_evidence(&mut self.refcount_bad, describe(ev));
            }
        }
        self.moves.event(p, kind, ev);
        if kind == Some(EventKind::Exit) && ev.valid & V_RET != 0 && !plausible_return(p, ev.ret) {
            self.bad_returns += 1;
            push_evidence(&mut self.bad_return, describe(ev));
        }
        match (p, kind) {
            (ProbeId::TpWriteFolio, _) => {
                self.write_folio_pages += large_pages(ev);
            }
            (ProbeId::SwapRead, Some(EventKind::Enter)) => {
                self.swap_read_pages += u64::from(ev.nr.max(1));
            }
            // Recorded at entry, or at exit where 0 means it was inserted.
            (ProbeId::SwapCacheInsert, Some(EventKind::Enter))
            | (ProbeId::SwapCacheInsert, Some(EventKind::Exit))
                if kind == Some(EventKind::Enter) || ev.valid & V_RET == 0 || ev.ret == 0 =>
            {
                if let (Some(e), true) = (ev.swap_entry(), ev.valid & V_FOLIO != 0) {
                    let n = u64::from(ev.nr.max(1)).max(large_pages(ev));
                    if has_state && ev.f_state & FS_LARGE != 0 && ev.f_nr_pages > 1 {
                        self.large_inserts += 1;
                        self.large_insert_pages += u64::from(ev.f_nr_pages);
                    }
                    for i in 0..n {
                        self.cache.insert(e + i, ev.folio);
                    }
                }
            }
            (ProbeId::SwapCacheDelete, Some(EventKind::Enter)) => {
                if let Some(e) = ev.swap_entry() {
                    for i in 0..u64::from(ev.nr.max(1)).max(large_pages(ev)) {
                        self.cache.remove(&(e + i));
                    }
                }
            }
            (ProbeId::SwapCacheLookup, Some(EventKind::Exit)) if lookup_result(ev) != 0 => {
                self.lookup_folios += 1;
                let folio = lookup_result(ev);
                let Some(e) = ev.swap_entry() else { return };
                if let Some(&named) = self.cache.get(&e) {
                    self.lookups_checked += 1;
                    let covers = has_state
                        && ev.f_state & FS_SWAPCACHE != 0
                        && ev.f_swap <= e
                        && e < ev.f_swap + u64::from(ev.f_nr_pages.max(1));
                    if named != folio && covers {
                        // Page migration (compaction) and large-folio splits
                        // replace a swap-cache folio in place, without an
                        // insert; the new folio carries the entry.
                        self.lookup_replaced += 1;
                        self.cache.insert(e, folio);
                    } else if named != folio {
                        self.lookup_mismatches += 1;
                        push_evidence(
                            &mut self.lookup_mismatch,
                            format!(
                                "{} (last insert of this entry named folio {named:#x})",
                                describe(ev)
                            ),
                        );
                    }
                }
                // A folio still in the swap cache carries the entry it is
                // cached under: the looked-up entry must be one of its pages.
                // folio->swap reads 0 when the folio is being deleted from the
                // cache right now (the entry is cleared before the flag, and
                // the snapshot is not atomic): only a different entry is wrong.
                if has_state && ev.f_state & FS_SWAPCACHE != 0 && ev.f_swap != 0 {
                    self.lookup_swap_field_checked += 1;
                    let n = u64::from(ev.f_nr_pages.max(1));
                    if !(ev.f_swap <= e && e < ev.f_swap + n) {
                        push_evidence(&mut self.lookup_swap_field_bad, describe(ev));
                    } else if n > 1 {
                        self.large_lookups += 1;
                        self.large_lookups_inner += u64::from(e != ev.f_swap);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(entry: u64, folio: u64, f_swap: u64) -> Event {
        Event {
            ts_ns: 10,
            folio,
            entry,
            probe: ProbeId::SwapCacheLookup as u16,
            kind: EventKind::Exit as u8,
            valid: detector_common::V_ENTRY | V_FOLIO | V_FOLIO_STATE,
            f_state: FS_SWAPCACHE,
            f_swap,
            f_refcount: 2,
            f_nr_pages: 1,
            ..Event::default()
        }
    }

    #[test]
    fn lookup_of_another_folio_is_caught() {
        let mut t = Tally::default();
        let mut ins = lookup(5, 0x1000, 5);
        ins.probe = ProbeId::SwapCacheInsert as u16;
        ins.kind = EventKind::Enter as u8;
        t.event(&ins);
        t.event(&lookup(5, 0x1000, 5));
        assert!(t.lookup_mismatch.is_empty());
        // A different folio that carries the entry replaced the inserted
        // one (migration, split): noted, not a mismatch.
        t.event(&lookup(5, 0x2000, 5));
        assert!(t.lookup_mismatch.is_empty());
        assert_eq!(t.lookup_replaced, 1);
        // A different folio with no state to vouch for it is a mismatch.
        let mut other = lookup(5, 0x6000, 5);
        other.valid &= !V_FOLIO_STATE;
        t.event(&other);
        assert_eq!(t.lookup_mismatch.len(), 1);
        // A raw kernel pointer return (negative as i64) counts as a hit.
        let mut raw = lookup(5, 0, 5);
        raw.valid = detector_common::V_ENTRY | V_RET;
        raw.ret = 0xffff_8880_0000_1000u64 as i64;
        assert_eq!(lookup_result(&raw), 0xffff_8880_0000_1000);
        raw.ret = -17;
        assert_eq!(lookup_result(&raw), 0);
        t.event(&lookup(6, 0x3000, 5));
        assert_eq!(t.lookup_swap_field_bad.len(), 1);
        // Mid-delete snapshot: swapcache flag still set, folio->swap cleared.
        t.event(&lookup(9, 0x5000, 0));
        assert_eq!(t.lookup_swap_field_bad.len(), 1);
        let mut dead = lookup(7, 0x4000, 7);
        dead.f_refcount = 0;
        t.event(&dead);
        assert_eq!(t.refcount_bad.len(), 1);
    }

    fn at(probe: ProbeId, kind: EventKind, tid: u32, entry: u64) -> Event {
        Event {
            probe: probe as u16,
            kind: kind as u8,
            tid,
            entry,
            valid: detector_common::V_ENTRY,
            nr: 1,
            ..Event::default()
        }
    }

    #[test]
    fn large_insert_covers_every_entry_of_the_folio() {
        let mut t = Tally::default();
        // An insert of a 4-page folio whose event says nr = 1.
        let mut ins = lookup(40, 0x9000, 40);
        ins.probe = ProbeId::SwapCacheInsert as u16;
        ins.kind = EventKind::Enter as u8;
        ins.f_state |= FS_LARGE;
        ins.f_nr_pages = 4;
        ins.nr = 1;
        t.event(&ins);
        assert_eq!((t.large_inserts, t.large_insert_pages), (1, 4));
        // A lookup of S+2 matches the insert and falls inside folio->swap.
        let mut l = lookup(42, 0x9000, 40);
        l.f_state |= FS_LARGE;
        l.f_nr_pages = 4;
        t.event(&l);
        assert!(t.lookup_mismatch.is_empty() && t.lookup_swap_field_bad.is_empty());
        assert_eq!(t.lookups_checked, 1);
        assert_eq!((t.large_lookups, t.large_lookups_inner), (1, 1));
        // S+4 is outside the folio: folio->swap does not cover it.
        l.entry = 44;
        t.event(&l);
        assert_eq!(t.lookup_swap_field_bad.len(), 1);
    }

    #[test]
    fn move_window_counts_free_then_realloc_of_a_looked_up_entry() {
        let mut t = Tally::default();
        t.event(&at(ProbeId::MovePages, EventKind::Enter, 7, 0));
        let mut l = at(ProbeId::MovePagesLookup, EventKind::Exit, 7, 100);
        l.folio = 0x1000;
        l.valid |= V_FOLIO;
        t.event(&l);
        // Another task's lookup is not in the window.
        t.event(&at(ProbeId::SwapCacheLookup, EventKind::Exit, 8, 200));
        t.event(&at(ProbeId::SwapEntryFree, EventKind::Enter, 9, 100));
        // An allocation of another entry is not a reuse.
        t.event(&at(ProbeId::SwapEntryAlloc, EventKind::Exit, 9, 101));
        t.event(&at(ProbeId::MovePages, EventKind::Exit, 7, 0));
        let m = &t.moves;
        assert_eq!((m.calls, m.lookups, m.freed, m.reused), (1, 1, 1, 0));
        // An allocation of the looked-up entry is a reuse even when its
        // free was not seen inside the window.
        t.event(&at(ProbeId::MovePages, EventKind::Enter, 7, 0));
        t.event(&l);
        t.event(&at(ProbeId::SwapEntryAlloc, EventKind::Exit, 9, 100));
        t.event(&at(ProbeId::MovePages, EventKind::Exit, 7, 0));
        let m = &t.moves;
        assert_eq!((m.calls, m.lookups, m.freed, m.reused), (2, 2, 1, 1));
        // After the call returned, the entry is no longer watched.
        t.event(&at(ProbeId::SwapEntryFree, EventKind::Enter, 9, 100));
        assert_eq!(t.moves.freed, 1);
    }
}
