//! Event builders for the rule unit tests.

use detector_common::{
    Event, EventKind, ProbeId, V_ADDR, V_ENTRY, V_FOLIO, V_FOLIO_STATE, V_PIN, V_PTE, V_RET,
};

use super::{Analyzer, Config, Finding, RuleId, Severity};
use crate::event::StreamItem;

pub(super) struct T {
    pub a: Analyzer,
    pub out: Vec<Finding>,
    pub index: u64,
    pub ts: u64,
    /// Task start times stamped on the events of each tid (0: none).
    pub starts: std::collections::HashMap<u32, u32>,
    /// Every item fed, in order (to replay the stream through another
    /// analyzer).
    pub log: Vec<StreamItem>,
}

pub(super) fn ev(probe: ProbeId, kind: EventKind, tid: u32) -> Event {
    let mut e = Event {
        probe: probe as u16,
        kind: kind as u8,
        tid,
        pid: tid,
        nr: 1,
        ..Default::default()
    };
    e.comm[..4].copy_from_slice(b"test");
    e
}

pub(super) fn with_folio(
    mut e: Event,
    folio: u64,
    f_state: u32,
    refcount: i32,
    mapcount: i32,
) -> Event {
    e.folio = folio;
    e.f_state = f_state;
    e.f_refcount = refcount;
    e.f_mapcount = mapcount;
    e.valid |= V_FOLIO | V_FOLIO_STATE;
    e
}

pub(super) fn with_entry(mut e: Event, entry: u64) -> Event {
    e.entry = entry;
    e.valid |= V_ENTRY;
    e
}

pub(super) fn with_ret(mut e: Event, ret: i64) -> Event {
    e.ret = ret;
    e.valid |= V_RET;
    e
}

impl T {
    pub(super) fn new() -> T {
        T::with(Config::default())
    }

    pub(super) fn with(cfg: Config) -> T {
        T {
            a: Analyzer::new(cfg),
            out: Vec::new(),
            index: 0,
            ts: 1_000,
            starts: Default::default(),
            log: Vec::new(),
        }
    }

    /// From now on, events of `tid` come from a task started at `start`.
    pub(super) fn set_start(&mut self, tid: u32, start: u32) {
        self.starts.insert(tid, start);
    }

    /// Lets stream time pass without events.
    pub(super) fn sleep(&mut self, ns: u64) {
        self.ts += ns;
    }

    /// Feeds `e` stamped `back` ns before the stream's latest time: the event
    /// of a CPU that stalled between reserving its record and reading the
    /// clock comes later in the stream than its timestamp says.
    pub(super) fn feed_late(&mut self, mut e: Event, back: u64) {
        e.ts_ns = self.ts.saturating_sub(back);
        if e.task_start == 0 {
            e.task_start = self.starts.get(&e.tid).copied().unwrap_or(0);
        }
        self.process(StreamItem::Event(e));
    }

    fn process(&mut self, item: StreamItem) {
        self.a.process(self.index, &item, &mut self.out);
        self.log.push(item);
        self.index += 1;
    }

    pub(super) fn feed(&mut self, mut e: Event) {
        self.ts += 1_000;
        e.ts_ns = self.ts;
        if e.task_start == 0 {
            e.task_start = self.starts.get(&e.tid).copied().unwrap_or(0);
        }
        self.process(StreamItem::Event(e));
    }

    pub(super) fn lost(&mut self, probe: ProbeId, total: u64) {
        self.ts += 1_000;
        self.process(StreamItem::Lost {
            ts_ns: self.ts,
            probe: probe as u16,
            total,
        });
    }

    pub(super) fn kinds(&mut self) -> Vec<(RuleId, Severity)> {
        self.a.finish(&mut self.out);
        self.out.iter().map(|f| (f.rule, f.severity)).collect()
    }

    pub(super) fn gup_grab(
        &mut self,
        tid: u32,
        folio: u64,
        st: u32,
        refc: i32,
        map: i32,
        slow: bool,
    ) {
        let p = if slow {
            ProbeId::GupGrab
        } else {
            ProbeId::GupGrabFast
        };
        let mut e = with_folio(ev(p, EventKind::Exit, tid), folio, st, refc, map);
        e.valid |= V_PIN;
        if slow {
            e = with_ret(e, 0);
        }
        self.feed(e);
    }

    pub(super) fn gup_put(&mut self, tid: u32, folio: u64, st: u32, refc: i32, map: i32) {
        let mut e = with_folio(
            ev(ProbeId::GupPut, EventKind::Enter, tid),
            folio,
            st,
            refc,
            map,
        );
        e.valid |= V_PIN;
        self.feed(e);
    }

    /// try_to_unmap_one enter (ref, map) and exit (ref, map) with `ret`.
    pub(super) fn ttu(
        &mut self,
        tid: u32,
        folio: u64,
        st: u32,
        before: (i32, i32),
        after: (i32, i32),
        ret: i64,
    ) {
        self.feed(with_folio(
            ev(ProbeId::TryToUnmapOne, EventKind::Enter, tid),
            folio,
            st,
            before.0,
            before.1,
        ));
        let exit_state = if ret == 0 {
            st | detector_common::FS_SWAPBACKED
        } else {
            st
        };
        let e = with_folio(
            ev(ProbeId::TryToUnmapOne, EventKind::Exit, tid),
            folio,
            exit_state,
            after.0,
            after.1,
        );
        self.feed(with_ret(e, ret));
    }

    pub(super) fn move_enter(&mut self, tid: u32) {
        let mut e = ev(ProbeId::MovePages, EventKind::Enter, tid);
        e.addr = 0x7000_0000;
        e.valid |= V_ADDR;
        self.feed(e);
    }

    pub(super) fn move_exit(&mut self, tid: u32, ret: i64) {
        self.feed(with_ret(ev(ProbeId::MovePages, EventKind::Exit, tid), ret));
    }

    pub(super) fn lookup(&mut self, tid: u32, entry: u64, folio: u64, st: u32) {
        let mut e = with_entry(ev(ProbeId::MovePagesLookup, EventKind::Exit, tid), entry);
        if folio != 0 {
            e = with_folio(e, folio, st, 3, 0);
            e.f_swap = entry;
        }
        e.addr = 0xffff_8880_0000_0000;
        e.valid |= V_ADDR;
        self.feed(e);
    }

    pub(super) fn alloc(&mut self, tid: u32, entry: u64, folio: u64) {
        let e = with_folio(
            ev(ProbeId::SwapEntryAlloc, EventKind::Exit, tid),
            folio,
            0x24,
            2,
            0,
        );
        self.feed(with_entry(e, entry));
    }

    pub(super) fn free(&mut self, tid: u32, entry: u64) {
        self.feed(with_entry(
            ev(ProbeId::SwapEntryFree, EventKind::Enter, tid),
            entry,
        ));
    }

    pub(super) fn insert(&mut self, tid: u32, entry: u64, folio: u64) {
        let mut e = with_folio(
            ev(ProbeId::SwapCacheInsert, EventKind::Exit, tid),
            folio,
            0x26,
            3,
            0,
        );
        e.f_swap = entry;
        self.feed(with_ret(with_entry(e, entry), 0));
    }

    pub(super) fn delete(&mut self, tid: u32, entry: u64, folio: u64) {
        let mut e = with_folio(
            ev(ProbeId::SwapCacheDelete, EventKind::Enter, tid),
            folio,
            0x26,
            3,
            0,
        );
        e.f_swap = entry;
        self.feed(with_entry(e, entry));
    }

    pub(super) fn move_rmap(&mut self, tid: u32, folio: u64, st: u32, swap: u64) {
        let mut e = with_folio(
            ev(ProbeId::FolioMoveAnonRmap, EventKind::Enter, tid),
            folio,
            st,
            2,
            0,
        );
        e.f_swap = swap;
        self.feed(e);
    }

    pub(super) fn prepare(&mut self, tid: u32, entry: u64, ret: i64) {
        self.feed(with_ret(
            with_entry(ev(ProbeId::SwapcachePrepare, EventKind::Exit, tid), entry),
            ret,
        ));
    }

    pub(super) fn clear(&mut self, tid: u32, entry: u64) {
        self.feed(with_entry(
            ev(ProbeId::SwapcacheClear, EventKind::Enter, tid),
            entry,
        ));
    }

    pub(super) fn swap_read(&mut self, tid: u32, entry: u64, folio: u64, st: u32) {
        let e = with_folio(
            ev(ProbeId::SwapRead, EventKind::Enter, tid),
            folio,
            st,
            1,
            0,
        );
        self.feed(with_entry(e, entry));
    }

    /// The present-PTE path of a move: `ptep_clear_flush` in the window
    /// returned the PTE mapping `folio`.
    pub(super) fn move_present(&mut self, tid: u32, folio: u64) {
        let mut e = with_folio(
            ev(ProbeId::MovePresent, EventKind::Exit, tid),
            folio,
            detector_common::FS_ANON | detector_common::FS_SWAPBACKED,
            2,
            1,
        );
        e.pte = 0x8000_0000_0123_4867;
        e.addr = 0x7000_0000;
        e.valid |= V_PTE | V_ADDR | V_RET;
        self.feed(e);
    }

    pub(super) fn task_exit(&mut self, tid: u32) {
        self.feed(ev(ProbeId::TaskExit, EventKind::Tracepoint, tid));
    }

    pub(super) fn swap_fault_exit(&mut self, tid: u32, pid: u32, entry: u64) {
        let mut e = ev(ProbeId::DoSwapPage, EventKind::Exit, tid);
        e.pid = pid;
        // x86_64 swap PTE for `entry` (type in the top bits, offset inverted).
        let ty = detector_common::swp_type(entry) as u64;
        let off = detector_common::swp_offset(entry);
        e.pte = ((!off) << 14 >> 5) & !0x1ff | (ty << 59) | 0b10;
        e.pte &= !1;
        e.addr = 0x7000_1000;
        e.valid |= V_PTE | V_ADDR;
        self.feed(with_ret(e, 0));
    }
}
