//! Bounded per-object recent history: for a swap entry or a folio address,
//! the last few events that named it, with the entry's generation and who
//! looked it up.
//!
//! Bounded twice: a fixed number of records per object (a ring) and a fixed
//! number of objects (least recently touched is dropped first), so a
//! long-running session on a busy host keeps a constant footprint.

use std::collections::VecDeque;
use std::num::NonZeroUsize;

use detector_common::{swp_offset, swp_type, Event, ProbeId, V_FOLIO, V_RET};
use lru::LruCache;

use crate::event::EventExt;

/// What an object key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjKey {
    /// Swap entry (`swp_entry_t.val`).
    Entry(u64),
    /// Folio address.
    Folio(u64),
}

impl ObjKey {
    /// Parses what a person types: `T:OFFSET` (offset hex with or without
    /// `0x`, or decimal with a `d` suffix is not supported: the kernel prints
    /// hex) is a swap entry, `0xADDR` or a long bare hex number is a folio.
    pub fn parse(s: &str) -> Option<ObjKey> {
        let s = s.trim();
        if s.contains(':') {
            return crate::event::Entry::parse(s).map(ObjKey::Entry);
        }
        let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
        u64::from_str_radix(hex, 16).ok().map(ObjKey::Folio)
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ObjKey::Entry(v) => write!(f, "entry {}:{:#x}", swp_type(v), swp_offset(v)),
            ObjKey::Folio(a) => write!(f, "folio {a:#x}"),
        }
    }
}

/// One event as remembered for an object: the fields a person reads in a
/// history, copied so the record is small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjRecord {
    /// Position of the event in the stream (same numbering as the analyzer's
    /// evidence chain).
    pub index: u64,
    pub ts_ns: u64,
    pub folio: u64,
    /// Swap entry the event names, 0 when none.
    pub entry: u64,
    pub ret: i64,
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    /// Entry generation at this event (allocations of the entry seen so far).
    pub generation: u32,
    pub f_state: u32,
    pub refcount: i32,
    pub mapcount: i32,
    pub nr: u32,
    pub probe: u16,
    pub kind: u8,
    pub valid: u8,
    pub comm: [u8; 16],
}

impl ObjRecord {
    pub fn from_event(index: u64, ev: &Event, generation: u32) -> Self {
        ObjRecord {
            index,
            ts_ns: ev.ts_ns,
            folio: if ev.valid & V_FOLIO != 0 { ev.folio } else { 0 },
            entry: ev.swap_entry().unwrap_or(0),
            ret: ev.ret,
            pid: ev.pid,
            tid: ev.tid,
            cpu: ev.cpu,
            generation,
            f_state: ev.f_state,
            refcount: ev.f_refcount,
            mapcount: ev.mapcount(),
            nr: ev.nr,
            probe: ev.probe,
            kind: ev.kind,
            valid: ev.valid,
            comm: ev.comm,
        }
    }

    pub fn comm_str(&self) -> &str {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
        std::str::from_utf8(&self.comm[..end]).unwrap_or("?")
    }

    pub fn probe_name(&self) -> &'static str {
        ProbeId::from_u16(self.probe).map_or("?", |p| p.name())
    }

    pub fn has_ret(&self) -> bool {
        self.valid & V_RET != 0
    }
}

/// A task that looked an entry up, and how often.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Looker {
    pub tid: u32,
    pub count: u32,
    pub comm: [u8; 16],
}

impl Looker {
    pub fn comm_str(&self) -> &str {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
        std::str::from_utf8(&self.comm[..end]).unwrap_or("?")
    }
}

/// Distinct lookers remembered per object.
pub const LOOKERS: usize = 4;

#[derive(Clone, Debug)]
pub struct ObjHistory {
    pub records: VecDeque<ObjRecord>,
    /// Events that named this object since it was first seen (including
    /// those that fell out of the ring).
    pub total: u64,
    /// Allocations of the entry seen (entries only).
    pub generation: u32,
    /// Pages covered by the last event naming this object (entries of a
    /// large folio are allocated as an aligned block).
    pub nr: u32,
    pub lookers: [Looker; LOOKERS],
}

impl ObjHistory {
    fn new(cap: usize) -> Self {
        ObjHistory {
            records: VecDeque::with_capacity(cap),
            total: 0,
            generation: 0,
            nr: 1,
            lookers: [Looker::default(); LOOKERS],
        }
    }

    fn reset(&mut self) {
        self.records.clear();
        self.total = 0;
        self.generation = 0;
        self.nr = 1;
        self.lookers = [Looker::default(); LOOKERS];
    }

    fn note_looker(&mut self, ev: &Event) {
        if let Some(l) = self
            .lookers
            .iter_mut()
            .find(|l| l.count > 0 && l.tid == ev.tid)
        {
            l.count = l.count.saturating_add(1);
            return;
        }
        // Replace an empty slot, else the least frequent looker.
        let mut slot = 0;
        for (i, l) in self.lookers.iter().enumerate() {
            if l.count < self.lookers[slot].count {
                slot = i;
            }
        }
        self.lookers[slot] = Looker {
            tid: ev.tid,
            count: 1,
            comm: ev.comm,
        };
    }

    pub fn last_ts(&self) -> u64 {
        self.records.back().map_or(0, |r| r.ts_ns)
    }
}

/// Is this value a kernel pointer (a returned folio), not an error or NULL?
fn is_kernel_ptr(v: i64) -> bool {
    detector_common::is_kernel_ptr(v as u64)
}

fn is_lookup(probe: u16) -> bool {
    probe == ProbeId::SwapCacheLookup as u16 || probe == ProbeId::MovePagesLookup as u16
}

#[derive(Clone, Debug)]
pub struct ObjectIndex {
    map: LruCache<ObjKey, ObjHistory>,
    per_object: usize,
    /// Objects dropped because the index was full.
    pub dropped: u64,
}

impl ObjectIndex {
    pub fn new(max_objects: usize, per_object: usize) -> Self {
        let cap = NonZeroUsize::new(max_objects.max(1)).unwrap_or(NonZeroUsize::MIN);
        ObjectIndex {
            map: LruCache::new(cap),
            per_object: per_object.max(1),
            dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Files one event under every object it names.
    pub fn ingest(&mut self, index: u64, ev: &Event) {
        let entry = ev.swap_entry();
        let folio = (ev.valid & V_FOLIO != 0 && ev.folio != 0).then_some(ev.folio);
        // A lookup's result is a folio too: who got which folio is the
        // question when an entry was reused.
        let returned = (is_lookup(ev.probe) && ev.valid & V_RET != 0 && is_kernel_ptr(ev.ret))
            .then_some(ev.ret as u64)
            .filter(|&f| Some(f) != folio);
        let mut generation = 0;
        let cap = self.per_object;
        if let Some(e) = entry {
            let is_alloc = ev.probe == ProbeId::SwapEntryAlloc as u16;
            let h = self.touch(ObjKey::Entry(e));
            // An allocation starts a new life of the entry; count it once
            // (entry and exit of the same call both name it).
            if is_alloc
                && (h
                    .records
                    .back()
                    .is_none_or(|r| r.probe != ev.probe || r.tid != ev.tid))
            {
                h.generation = h.generation.saturating_add(1);
            }
            generation = h.generation;
            if is_lookup(ev.probe) {
                h.note_looker(ev);
            }
            h.nr = ev.nr.max(1);
            Self::push(h, cap, ObjRecord::from_event(index, ev, generation));
        }
        for f in [folio, returned].into_iter().flatten() {
            let h = self.touch(ObjKey::Folio(f));
            if is_lookup(ev.probe) {
                h.note_looker(ev);
            }
            Self::push(h, cap, ObjRecord::from_event(index, ev, generation));
        }
    }

    fn push(h: &mut ObjHistory, cap: usize, rec: ObjRecord) {
        if h.records.len() >= cap {
            h.records.pop_front();
        }
        h.records.push_back(rec);
        h.total += 1;
    }

    /// The history for `key`, creating it (recycling the least recently
    /// touched object's buffer when full) and marking it most recent.
    fn touch(&mut self, key: ObjKey) -> &mut ObjHistory {
        let mut recycled = None;
        if !self.map.contains(&key) && self.map.len() >= self.map.cap().get() {
            self.dropped += 1;
            recycled = self.map.pop_lru().map(|(_, mut h)| {
                h.reset();
                h
            });
        }
        let per_object = self.per_object;
        self.map.get_or_insert_mut(key, || {
            recycled.unwrap_or_else(|| ObjHistory::new(per_object))
        })
    }

    /// Looks an object up without changing recency. A swap entry that is not
    /// indexed itself is found through the aligned block of a large folio
    /// that covers it.
    pub fn get(&self, key: ObjKey) -> Option<(ObjKey, &ObjHistory)> {
        if let Some(h) = self.map.peek(&key) {
            return Some((key, h));
        }
        let ObjKey::Entry(e) = key else {
            return None;
        };
        let off = swp_offset(e);
        // Swap entries of a large folio form a naturally aligned block of
        // up to 512 (PMD order 9) slots.
        for order in 1..=9u32 {
            let base_off = off & !((1u64 << order) - 1);
            let base = detector_common::swp_entry(swp_type(e), base_off);
            if let Some(h) = self.map.peek(&ObjKey::Entry(base)) {
                if u64::from(h.nr) > off - base_off {
                    return Some((ObjKey::Entry(base), h));
                }
            }
        }
        None
    }

    /// Objects, most recently touched first.
    pub fn iter_recent(&self) -> impl Iterator<Item = (&ObjKey, &ObjHistory)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use detector_common::{swp_entry, EventKind, V_ENTRY};

    fn ev(probe: ProbeId, entry: u64, folio: u64, tid: u32) -> Event {
        let mut e = Event {
            probe: probe as u16,
            kind: EventKind::Exit as u8,
            tid,
            pid: tid,
            ..Default::default()
        };
        if entry != 0 {
            e.entry = entry;
            e.valid |= V_ENTRY;
        }
        if folio != 0 {
            e.folio = folio;
            e.valid |= V_FOLIO;
        }
        e.comm[..4].copy_from_slice(b"task");
        e
    }

    #[test]
    fn parse_keys() {
        assert_eq!(
            ObjKey::parse("1:0x1f"),
            Some(ObjKey::Entry(swp_entry(1, 0x1f)))
        );
        assert_eq!(
            ObjKey::parse(" 0:ab "),
            Some(ObjKey::Entry(swp_entry(0, 0xab)))
        );
        assert_eq!(
            ObjKey::parse("0xffffea0001234500"),
            Some(ObjKey::Folio(0xffff_ea00_0123_4500))
        );
        assert_eq!(ObjKey::parse("pid:12"), None);
        assert_eq!(ObjKey::parse("99:1"), None);
        assert_eq!(ObjKey::parse("hello"), None);
    }

    #[test]
    fn generations_count_allocations_and_lookers_are_kept() {
        let s = swp_entry(0, 0x40);
        let mut idx = ObjectIndex::new(16, 8);
        idx.ingest(0, &ev(ProbeId::SwapEntryAlloc, s, 0xffff_ea00_0000_1000, 1));
        idx.ingest(1, &ev(ProbeId::SwapCacheLookup, s, 0, 7));
        idx.ingest(2, &ev(ProbeId::SwapEntryFree, s, 0, 1));
        idx.ingest(3, &ev(ProbeId::SwapEntryAlloc, s, 0xffff_ea00_0000_2000, 2));
        idx.ingest(4, &ev(ProbeId::SwapCacheLookup, s, 0, 7));
        let (_, h) = idx.get(ObjKey::Entry(s)).unwrap();
        assert_eq!(h.generation, 2);
        assert_eq!(h.records.len(), 5);
        assert_eq!(h.records[1].generation, 1);
        assert_eq!(h.records[4].generation, 2);
        assert_eq!(h.lookers[0].tid, 7);
        assert_eq!(h.lookers[0].count, 2);
        assert!(idx.get(ObjKey::Folio(0xffff_ea00_0000_2000)).is_some());
    }

    #[test]
    fn bounded_per_object_and_in_objects() {
        let mut idx = ObjectIndex::new(3, 4);
        for i in 0..10u64 {
            idx.ingest(i, &ev(ProbeId::SwapCacheLookup, swp_entry(0, 1), 0, 1));
        }
        let (_, h) = idx.get(ObjKey::Entry(swp_entry(0, 1))).unwrap();
        assert_eq!(h.records.len(), 4);
        assert_eq!(h.total, 10);
        assert_eq!(h.records[0].index, 6);
        for off in 2..8u64 {
            idx.ingest(
                100 + off,
                &ev(ProbeId::SwapEntryFree, swp_entry(0, off), 0, 1),
            );
        }
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.dropped, 4);
        // Most recent first.
        let keys: Vec<_> = idx.iter_recent().map(|(k, _)| *k).collect();
        assert_eq!(keys[0], ObjKey::Entry(swp_entry(0, 7)));
    }

    #[test]
    fn entry_inside_a_large_block_is_found() {
        let mut idx = ObjectIndex::new(8, 4);
        let mut e = ev(ProbeId::SwapEntryAlloc, swp_entry(1, 0x200), 0, 1);
        e.nr = 16;
        idx.ingest(0, &e);
        let (k, _) = idx.get(ObjKey::Entry(swp_entry(1, 0x20f))).unwrap();
        assert_eq!(k, ObjKey::Entry(swp_entry(1, 0x200)));
        assert!(idx.get(ObjKey::Entry(swp_entry(1, 0x210))).is_none());
    }
}
