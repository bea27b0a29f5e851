//! Property tests: random streams built from a model of correct kernel
//! behaviour produce no violation, and the analyzer gives byte-identical
//! findings whether it is fed items directly or through a trace file.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use detector::analyzer::{Analyzer, Config, Finding, Severity};
use detector::event::StreamItem;
use detector::trace::{TraceEnd, TraceHeader, TraceReader, TraceWriter};
use detector_common::{
    swp_entry, Event, EventKind, ProbeId, FS_ANON, FS_ANON_EXCLUSIVE, FS_LOCKED, FS_SWAPBACKED,
    FS_SWAPCACHE, V_ADDR, V_ENTRY, V_FOLIO, V_FOLIO_STATE, V_PIN, V_RET,
};
use proptest::prelude::*;

/// One correct kernel operation, expanded into its events by [`Model`].
#[derive(Clone, Debug)]
enum Op {
    /// Swap a folio out to a free entry and reclaim it.
    SwapOut(u8),
    /// Synchronous swap-in of a swapped entry (prepare, read, clear, free).
    SyncSwapIn(u8),
    /// A racing swap-in answered -EEXIST once before the holder finished.
    RacingSwapIn(u8),
    /// UFFDIO_MOVE over an entry whose folio is still in the swap cache.
    MoveCached(u8),
    /// UFFDIO_MOVE lookup that misses; nothing is added meanwhile.
    MoveMiss(u8),
    /// GUP-fast pin of a shared folio, re-check fails, drop.
    FastGrabDrop(u8),
    /// Slow pin of an exclusive folio, released later.
    PinAndRelease(u8),
    /// MADV_FREE then clean discard of a lazyfree folio.
    LazyfreeDiscard(u8),
    /// Events lost somewhere.
    Lost(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u8>().prop_map(Op::SwapOut),
        any::<u8>().prop_map(Op::SyncSwapIn),
        any::<u8>().prop_map(Op::RacingSwapIn),
        any::<u8>().prop_map(Op::MoveCached),
        any::<u8>().prop_map(Op::MoveMiss),
        any::<u8>().prop_map(Op::FastGrabDrop),
        any::<u8>().prop_map(Op::PinAndRelease),
        any::<u8>().prop_map(Op::LazyfreeDiscard),
        any::<u8>().prop_map(Op::Lost),
    ]
}

#[derive(Default)]
struct Model {
    ts: u64,
    items: Vec<StreamItem>,
    /// Entries currently swapped out (no folio in the cache).
    swapped: Vec<u64>,
    next_offset: u64,
    next_folio: u64,
    lost: u64,
}

const SC: u32 = FS_ANON | FS_SWAPBACKED | FS_SWAPCACHE;

impl Model {
    fn ev(&mut self, probe: ProbeId, kind: EventKind, tid: u32) -> Event {
        self.ts += 700;
        let mut e = Event {
            ts_ns: self.ts,
            probe: probe as u16,
            kind: kind as u8,
            tid,
            pid: tid,
            nr: 1,
            ..Default::default()
        };
        e.comm[..4].copy_from_slice(b"prop");
        e
    }
    fn push(&mut self, e: Event) {
        self.items.push(StreamItem::Event(e));
    }
    fn folio(&mut self) -> u64 {
        self.next_folio += 1;
        0xffff_ea00_0000_0000 + self.next_folio * 0x40
    }
    fn entry(&mut self) -> u64 {
        self.next_offset += 1;
        swp_entry(1, self.next_offset)
    }
    fn fe(mut e: Event, folio: u64, st: u32, r: i32, m: i32) -> Event {
        e.folio = folio;
        e.f_state = st;
        e.f_refcount = r;
        e.f_mapcount = m;
        e.valid |= V_FOLIO | V_FOLIO_STATE;
        e
    }
    fn en(mut e: Event, entry: u64) -> Event {
        e.entry = entry;
        e.valid |= V_ENTRY;
        e
    }
    fn ret(mut e: Event, r: i64) -> Event {
        e.ret = r;
        e.valid |= V_RET;
        e
    }

    fn apply(&mut self, op: &Op) {
        let tid = |x: u8| 100 + (x % 7) as u32;
        match *op {
            Op::SwapOut(x) => {
                let (f, s, t) = (self.folio(), self.entry(), 90);
                let e = self.ev(ProbeId::SwapEntryAlloc, EventKind::Exit, t);
                self.push(Self::en(
                    Self::fe(e, f, FS_ANON | FS_SWAPBACKED | FS_LOCKED, 2, 1),
                    s,
                ));
                let e = self.ev(ProbeId::SwapCacheInsert, EventKind::Exit, t);
                let mut e = Self::ret(Self::en(Self::fe(e, f, SC | FS_LOCKED, 3, 1), s), 0);
                e.f_swap = s;
                self.push(e);
                let e = self.ev(ProbeId::TryToUnmapOne, EventKind::Enter, t);
                self.push(Self::fe(e, f, SC, 3, 1));
                let e = self.ev(ProbeId::TryToUnmapOne, EventKind::Exit, t);
                self.push(Self::ret(Self::fe(e, f, SC, 2, 0), 1));
                let e = self.ev(ProbeId::RemoveMapping, EventKind::Enter, t);
                self.push(Self::fe(e, f, SC, 2, 0));
                let e = self.ev(ProbeId::SwapCacheDelete, EventKind::Enter, t);
                self.push(Self::en(Self::fe(e, f, SC | FS_LOCKED, 0, 0), s));
                let e = self.ev(ProbeId::RemoveMapping, EventKind::Exit, t);
                self.push(Self::ret(Self::fe(e, f, FS_ANON | FS_SWAPBACKED, 0, 0), 1));
                let _ = x;
                self.swapped.push(s);
            }
            Op::SyncSwapIn(x) | Op::RacingSwapIn(x) => {
                if self.swapped.is_empty() {
                    return;
                }
                let s = self.swapped.remove(x as usize % self.swapped.len());
                let (t, f) = (tid(x), self.folio());
                let e = self.ev(ProbeId::SwapcachePrepare, EventKind::Exit, t);
                self.push(Self::ret(Self::en(e, s), 0));
                if matches!(op, Op::RacingSwapIn(_)) {
                    let e = self.ev(ProbeId::SwapcachePrepare, EventKind::Exit, t + 50);
                    self.push(Self::ret(Self::en(e, s), -17));
                }
                let e = self.ev(ProbeId::SwapRead, EventKind::Enter, t);
                self.push(Self::en(
                    Self::fe(e, f, FS_ANON | FS_SWAPBACKED | FS_LOCKED, 1, 0),
                    s,
                ));
                let e = self.ev(ProbeId::SwapcacheClear, EventKind::Enter, t);
                self.push(Self::en(e, s));
                let e = self.ev(ProbeId::SwapEntryFree, EventKind::Enter, t);
                self.push(Self::en(e, s));
            }
            Op::MoveCached(x) | Op::MoveMiss(x) => {
                let t = tid(x) + 20;
                let mut e = self.ev(ProbeId::MovePages, EventKind::Enter, t);
                e.addr = 0x7f00_0000_0000;
                e.valid |= V_ADDR;
                self.push(e);
                if matches!(op, Op::MoveCached(_)) {
                    let (f, s) = (self.folio(), self.entry());
                    let e = self.ev(ProbeId::SwapEntryAlloc, EventKind::Exit, 90);
                    self.push(Self::en(Self::fe(e, f, FS_ANON | FS_SWAPBACKED, 2, 0), s));
                    let e = self.ev(ProbeId::SwapCacheInsert, EventKind::Exit, 90);
                    self.push(Self::ret(Self::en(Self::fe(e, f, SC, 3, 0), s), 0));
                    let e = self.ev(ProbeId::MovePagesLookup, EventKind::Exit, t);
                    let mut e = Self::en(Self::fe(e, f, SC, 4, 0), s);
                    e.f_swap = s;
                    self.push(e);
                    let e = self.ev(ProbeId::FolioMoveAnonRmap, EventKind::Enter, t);
                    let mut e = Self::fe(e, f, SC | FS_LOCKED, 4, 0);
                    e.f_swap = s;
                    self.push(e);
                } else {
                    let s = self.entry();
                    let e = self.ev(ProbeId::SwapCacheLookup, EventKind::Exit, t);
                    self.push(Self::en(e, s));
                }
                let e = self.ev(ProbeId::MovePages, EventKind::Exit, t);
                self.push(Self::ret(e, 4096));
            }
            Op::FastGrabDrop(x) => {
                let (t, f) = (tid(x), self.folio());
                let mut e = self.ev(ProbeId::GupGrabFast, EventKind::Exit, t);
                e.valid |= V_PIN;
                self.push(Self::fe(e, f, FS_ANON, 1026, 2));
                let mut e = self.ev(ProbeId::GupPut, EventKind::Enter, t);
                e.valid |= V_PIN;
                self.push(Self::fe(e, f, FS_ANON, 1026, 2));
            }
            Op::PinAndRelease(x) => {
                let (t, f) = (tid(x), self.folio());
                let ex = FS_ANON | FS_SWAPBACKED | FS_ANON_EXCLUSIVE;
                let mut e = self.ev(ProbeId::GupGrab, EventKind::Exit, t);
                e.valid |= V_PIN;
                self.push(Self::ret(Self::fe(e, f, ex, 1025, 1), 0));
                let e = self.ev(ProbeId::DoWpPage, EventKind::Enter, t);
                self.push(Self::fe(e, f, ex, 1025, 1));
                let e = self.ev(ProbeId::UnpinUserPage, EventKind::Enter, t);
                self.push(Self::fe(e, f, ex, 1025, 1));
                let mut e = self.ev(ProbeId::GupPut, EventKind::Enter, t);
                e.valid |= V_PIN;
                self.push(Self::fe(e, f, ex, 1025, 1));
            }
            Op::LazyfreeDiscard(x) => {
                let (t, f) = (tid(x), self.folio());
                let mut e = self.ev(ProbeId::MadviseFree, EventKind::Enter, t);
                e.addr = 0x7f10_0000_0000;
                e.valid |= V_ADDR;
                self.push(e);
                let e = self.ev(ProbeId::TryToUnmapOne, EventKind::Enter, 90);
                self.push(Self::fe(e, f, FS_ANON, 2, 1));
                let e = self.ev(ProbeId::TryToUnmapOne, EventKind::Exit, 90);
                self.push(Self::ret(Self::fe(e, f, FS_ANON, 1, 0), 1));
            }
            Op::Lost(x) => {
                self.lost += 1 + x as u64 % 5;
                self.ts += 100;
                let probe = ProbeId::ALL[x as usize % ProbeId::ALL.len()] as u16;
                // Running total per probe: keep one probe's total monotonic.
                let _ = probe;
                self.items.push(StreamItem::Lost {
                    ts_ns: self.ts,
                    probe: ProbeId::GupGrabFast as u16,
                    total: self.lost,
                });
            }
        }
    }
}

fn analyze(items: impl IntoIterator<Item = (u64, StreamItem)>, cfg: Config) -> Vec<Finding> {
    let mut a = Analyzer::new(cfg);
    let mut out = Vec::new();
    for (i, it) in items {
        a.process(i, &it, &mut out);
    }
    a.finish(&mut out);
    out
}

fn build(ops: &[Op]) -> Vec<StreamItem> {
    let mut m = Model {
        next_offset: 0x100,
        ..Default::default()
    };
    for op in ops {
        m.apply(op);
    }
    m.items
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn benign_streams_produce_no_violation(ops in prop::collection::vec(op(), 1..120), small in any::<bool>()) {
        let items = build(&ops);
        // A tiny table also exercises eviction on the same streams.
        let cfg = Config { max_tracked: if small { 32 } else { 1 << 20 }, ..Config::default() };
        let findings = analyze(items.into_iter().enumerate().map(|(i, x)| (i as u64, x)), cfg);
        let bad: Vec<_> = findings.iter().filter(|f| f.severity == Severity::Violation).collect();
        prop_assert!(bad.is_empty(), "{:#?}", bad);
    }

    #[test]
    fn direct_and_file_replay_give_identical_json(ops in prop::collection::vec(op(), 1..80), seed in any::<u8>()) {
        let mut items = build(&ops);
        // Splice in something that does produce findings.
        let mut m = Model { ts: items.len() as u64 * 1000 + 10_000_000, next_offset: 0x9000, next_folio: 5000, ..Default::default() };
        let f = m.folio();
        let mut e = m.ev(ProbeId::GupGrab, EventKind::Exit, 7 + seed as u32);
        e.valid |= V_PIN;
        m.push(Model::ret(Model::fe(e, f, FS_ANON, 1026, 2), 0));
        items.extend(m.items);

        let direct = analyze(items.iter().copied().enumerate().map(|(i, x)| (i as u64, x)), Config::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.trace");
        let mut w = TraceWriter::create(&path, &TraceHeader::new("proptest")).unwrap();
        for it in &items {
            w.write_item(it).unwrap();
        }
        w.finish(TraceEnd::at(1, "done")).unwrap();
        let reader = TraceReader::open(&path).unwrap();
        let replayed = analyze(reader, Config::default());
        let a = serde_json::to_vec(&direct).unwrap();
        let b = serde_json::to_vec(&replayed).unwrap();
        prop_assert!(!direct.is_empty());
        prop_assert_eq!(a, b);
    }
}
