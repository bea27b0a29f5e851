//! Builds a small but real trace for the TUI tests: a probe plan with a
//! degraded entry, a few seconds of swap traffic, lost events on one probe,
//! and a UFFDIO_MOVE whose looked-up swap entry is freed and reallocated
//! inside the move window (the ABA of seed 000), which the analyzer reports.
#![allow(dead_code)]

use std::path::Path;

use detector::event::StreamItem;
use detector::plan::{AttachMode, PlanEntry};
use detector::trace::{TraceEnd, TraceHeader, TraceWriter};
use detector_common::{
    swp_entry, Event, EventKind, ProbeId, FS_ANON, FS_LRU, FS_SWAPBACKED, FS_SWAPCACHE,
    FS_UPTODATE, V_ADDR, V_ENTRY, V_FOLIO, V_FOLIO_STATE, V_RET,
};

pub(crate) const MOVER_TID: u32 = 4242;
pub(crate) const RECLAIM_TID: u32 = 77;
pub(crate) const FOLIO_A: u64 = 0xffff_ea00_0004_2000;
pub(crate) const FOLIO_B: u64 = 0xffff_ea00_0004_3000;
pub(crate) const BASE_TS: u64 = 1_000_000_000_000;

pub(crate) fn entry_s() -> u64 {
    swp_entry(0, 0x1a2b)
}

fn plan_entry(probe: ProbeId, target: &str, mode: AttachMode, note: &str) -> PlanEntry {
    PlanEntry {
        probe: probe.name().to_string(),
        target: target.to_string(),
        mode,
        entry: mode != AttachMode::Unavailable,
        exit: matches!(mode, AttachMode::Fentry | AttachMode::Kprobe),
        note: note.to_string(),
        filter: String::new(),
    }
}

pub(crate) fn plan() -> Vec<PlanEntry> {
    use AttachMode::*;
    vec![
        plan_entry(ProbeId::SwapCacheLookup, "swap_cache_get_folio", Fentry, ""),
        plan_entry(ProbeId::SwapCacheInsert, "add_to_swap_cache", Fentry, ""),
        plan_entry(
            ProbeId::SwapCacheDelete,
            "__delete_from_swap_cache",
            Kprobe,
            "fentry refused: EBUSY",
        ),
        plan_entry(ProbeId::SwapEntryAlloc, "folio_alloc_swap", Fentry, ""),
        plan_entry(ProbeId::SwapEntryFree, "swap_entry_range_free", Fentry, ""),
        plan_entry(ProbeId::MovePages, "move_pages", Fentry, ""),
        plan_entry(ProbeId::MovePagesLookup, "__filemap_get_folio", Fentry, ""),
        plan_entry(ProbeId::MovePresent, "ptep_clear_flush", Fentry, ""),
        plan_entry(
            ProbeId::FolioMoveAnonRmap,
            "folio_move_anon_rmap",
            Fentry,
            "",
        ),
        plan_entry(
            ProbeId::TpWriteFolio,
            "vmscan:mm_vmscan_write_folio",
            Tracepoint,
            "degraded: swap-out seen only as writeback",
        ),
        plan_entry(
            ProbeId::GupGrabFast,
            "",
            Unavailable,
            "no try_grab_folio_fast on this kernel",
        ),
    ]
}

pub(crate) fn header() -> TraceHeader {
    let mut h = TraceHeader::new("test:tui");
    h.kernel_release = "6.12.95+deb12-cloud-amd64".to_string();
    h.plan = plan();
    h
}

fn ev(ts: u64, probe: ProbeId, kind: EventKind, tid: u32, comm: &[u8]) -> Event {
    let mut e = Event {
        ts_ns: ts,
        probe: probe as u16,
        kind: kind as u8,
        tid,
        pid: tid,
        cpu: tid % 2,
        nr: 1,
        ..Default::default()
    };
    e.comm[..comm.len()].copy_from_slice(comm);
    e
}

fn folio(mut e: Event, f: u64, st: u32, refc: i32, map: i32, swap: u64) -> Event {
    e.folio = f;
    e.f_state = st;
    e.f_refcount = refc;
    e.f_mapcount = map;
    e.f_swap = swap;
    e.valid |= V_FOLIO | V_FOLIO_STATE;
    e
}

fn entry(mut e: Event, s: u64) -> Event {
    e.entry = s;
    e.valid |= V_ENTRY;
    e
}

fn ret(mut e: Event, r: i64) -> Event {
    e.ret = r;
    e.valid |= V_RET;
    e
}

/// Background swap traffic: `n` lookups and inserts spread over `secs`
/// seconds on other entries, from kswapd and a memory hog.
pub(crate) fn background(items: &mut Vec<StreamItem>, start: u64, secs: u64, n: u64) {
    let st = FS_ANON | FS_SWAPBACKED | FS_SWAPCACHE | FS_UPTODATE | FS_LRU;
    for i in 0..n {
        let ts = start + i * secs * 1_000_000_000 / n.max(1);
        let s = swp_entry(0, 0x8000 + i % 512);
        let f = 0xffff_ea00_0100_0000 + (i % 512) * 0x40;
        let (tid, comm): (u32, &[u8]) = if i % 3 == 0 {
            (RECLAIM_TID, b"kswapd0")
        } else {
            (9001, b"memhog")
        };
        let probe = if i % 4 == 0 {
            ProbeId::SwapCacheInsert
        } else {
            ProbeId::SwapCacheLookup
        };
        let e = folio(
            entry(ev(ts, probe, EventKind::Exit, tid, comm), s),
            f,
            st,
            2,
            1,
            s,
        );
        items.push(StreamItem::Event(e));
    }
}

/// The seed-000 interleaving: the mover looks entry S up inside its
/// move_pages window and gets folio A; reclaim frees S and allocates it again
/// for folio B before the mover's window closes.
pub(crate) fn aba(items: &mut Vec<StreamItem>, t: u64) {
    let st = FS_ANON | FS_SWAPBACKED | FS_SWAPCACHE | FS_UPTODATE;
    let s = entry_s();
    let mut e = ev(
        t,
        ProbeId::MovePages,
        EventKind::Enter,
        MOVER_TID,
        b"uffd-mover",
    );
    e.addr = 0x7f00_0000_0000;
    e.valid |= V_ADDR;
    items.push(StreamItem::Event(e));
    let mut e = folio(
        entry(
            ev(
                t + 1_000,
                ProbeId::MovePagesLookup,
                EventKind::Exit,
                MOVER_TID,
                b"uffd-mover",
            ),
            s,
        ),
        FOLIO_A,
        st,
        3,
        0,
        s,
    );
    e.addr = 0xffff_8880_0000_0000;
    e.valid |= V_ADDR;
    items.push(StreamItem::Event(e));
    items.push(StreamItem::Event(entry(
        ev(
            t + 5_000,
            ProbeId::SwapEntryFree,
            EventKind::Enter,
            RECLAIM_TID,
            b"kswapd0",
        ),
        s,
    )));
    items.push(StreamItem::Event(folio(
        entry(
            ev(
                t + 9_000,
                ProbeId::SwapEntryAlloc,
                EventKind::Exit,
                RECLAIM_TID,
                b"kswapd0",
            ),
            s,
        ),
        FOLIO_B,
        FS_ANON | FS_SWAPBACKED,
        2,
        0,
        s,
    )));
    items.push(StreamItem::Event(folio(
        ev(
            t + 14_000,
            ProbeId::FolioMoveAnonRmap,
            EventKind::Enter,
            MOVER_TID,
            b"uffd-mover",
        ),
        FOLIO_A,
        FS_ANON | FS_SWAPBACKED | FS_UPTODATE,
        2,
        0,
        0,
    )));
    items.push(StreamItem::Event(ret(
        ev(
            t + 20_000,
            ProbeId::MovePages,
            EventKind::Exit,
            MOVER_TID,
            b"uffd-mover",
        ),
        0,
    )));
}

/// The whole stream: 3 s of background with the ABA in the middle and a
/// loss report on the lookup probe.
pub(crate) fn stream(background_events: u64) -> Vec<StreamItem> {
    let mut items = Vec::new();
    background(&mut items, BASE_TS, 3, background_events);
    let mid = items.len() / 2;
    let mut tail = items.split_off(mid);
    let t = match tail.first() {
        Some(StreamItem::Event(e)) => e.ts_ns,
        _ => BASE_TS,
    };
    aba(&mut items, t);
    items.push(StreamItem::Lost {
        ts_ns: t + 30_000,
        probe: ProbeId::SwapCacheLookup as u16,
        total: 17,
    });
    // Keep time order: the tail starts after the ABA.
    for it in &mut tail {
        if let StreamItem::Event(e) = it {
            e.ts_ns += 40_000;
        }
    }
    items.append(&mut tail);
    items
}

pub(crate) fn write_trace(path: &Path, items: &[StreamItem]) {
    write_trace_flushed(path, items, usize::MAX);
}

/// As [`write_trace`], flushed (a v2 block closed) every `every` items.
pub(crate) fn write_trace_flushed(path: &Path, items: &[StreamItem], every: usize) {
    let mut w = TraceWriter::create(path, &header()).unwrap();
    for (k, it) in items.iter().enumerate() {
        w.write_item(it).unwrap();
        if k % every == every - 1 {
            w.flush().unwrap();
        }
    }
    let end = match items.last() {
        Some(StreamItem::Event(e)) => e.ts_ns,
        _ => BASE_TS,
    };
    w.finish(TraceEnd::at(end, "test")).unwrap();
}

pub(crate) const STORM_TID: u32 = 700;

/// A kernel that skips the swap-in pin: after one pinned swap-in shows the
/// prepare probe works, task `stress` reads `n` swapped-out entries without
/// SWAP_HAS_CACHE, one `swapin_without_cache_pin` finding each, all with
/// cause `not_held`. Starts at `t`, 1 µs per swap-in.
pub(crate) fn storm(items: &mut Vec<StreamItem>, t: u64, n: u64) {
    use detector_common::FS_LOCKED;
    let other = 601;
    let s0 = swp_entry(2, 0x20);
    items.push(StreamItem::Event(ret(
        entry(
            ev(
                t,
                ProbeId::SwapcachePrepare,
                EventKind::Exit,
                other,
                b"fault_b",
            ),
            s0,
        ),
        0,
    )));
    items.push(StreamItem::Event(entry(
        ev(
            t + 100,
            ProbeId::SwapcacheClear,
            EventKind::Enter,
            other,
            b"fault_b",
        ),
        s0,
    )));
    let anon = FS_ANON | FS_SWAPBACKED;
    for i in 0..n {
        let ts = t + 1_000 + i * 1_000;
        let s = swp_entry(2, 0x1000 + i);
        let f = 0xffff_ea00_0200_0000 + i * 0x40;
        let g = 0xffff_ea00_0300_0000 + i * 0x40;
        let k = |dt, probe, kind| ev(ts + dt, probe, kind, RECLAIM_TID, b"kswapd0");
        items.push(StreamItem::Event(folio(
            entry(k(0, ProbeId::SwapEntryAlloc, EventKind::Exit), s),
            f,
            anon | FS_LOCKED,
            2,
            1,
            s,
        )));
        items.push(StreamItem::Event(folio(
            entry(k(100, ProbeId::SwapCacheDelete, EventKind::Enter), s),
            f,
            anon | FS_SWAPCACHE | FS_LOCKED,
            0,
            0,
            s,
        )));
        items.push(StreamItem::Event(folio(
            entry(
                ev(
                    ts + 500,
                    ProbeId::SwapRead,
                    EventKind::Enter,
                    STORM_TID,
                    b"stress",
                ),
                s,
            ),
            g,
            anon | FS_LOCKED,
            1,
            0,
            s,
        )));
    }
}
