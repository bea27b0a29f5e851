//! The swap-entry lifecycle the rules read: allocation generations, free,
//! swap-cache insert and delete, and who holds SWAP_HAS_CACHE. Entries a
//! `move_pages` window looked up are told what happened to them
//! ([`Analyzer::notify`]).

use detector_common::{Event, V_FOLIO, V_RET};

use super::aba::Happened;
use super::state::eflags;
use super::windows::WindowKind;
use super::{full_entry, Analyzer, Finding};

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
}
