//! Replay throughput of reader + analyzer on one core, and analyzer memory
//! per tracked object. Not a test: prints numbers.
//!
//! `cargo bench -p detector --bench analyzer [-- EVENTS] [analyzer|reader|e2e|bounded]`

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use detector::analyzer::{Analyzer, Config};
use detector::event::StreamItem;
use detector::trace::{TraceEnd, TraceHeader, TraceReader, TraceWriter};
use detector_common::{
    swp_entry, Event, EventKind, ProbeId, FS_ANON, FS_LOCKED, FS_SWAPBACKED, FS_SWAPCACHE, V_ENTRY,
    V_FOLIO, V_FOLIO_STATE, V_PIN, V_RET,
};

/// A swap-heavy mix: swap-out, reclaim, sync swap-in, GUP-fast grab/drop.
fn synth(n: usize) -> Vec<Event> {
    let mut v = Vec::with_capacity(n);
    let mut ts = 1_000_000_000u64;
    let mut i = 0u64;
    let sc = FS_ANON | FS_SWAPBACKED | FS_SWAPCACHE;
    while v.len() < n {
        i += 1;
        let entry = swp_entry(1, 1 + (i % 200_000));
        let folio = 0xffff_ea00_0000_0000 + (i % 300_000) * 0x40;
        let tid = 100 + (i % 8) as u32;
        let mut mk = |probe: ProbeId, kind: EventKind, st: u32, r: i32| {
            ts += 100;
            let valid = if st == 0 {
                V_ENTRY | V_RET
            } else {
                V_FOLIO | V_FOLIO_STATE | V_ENTRY | V_RET
            };
            Event {
                ts_ns: ts,
                folio,
                entry,
                ret: 0,
                f_state: st,
                f_refcount: r,
                f_mapcount: 1,
                f_swap: entry,
                tid,
                pid: tid,
                nr: 1,
                probe: probe as u16,
                kind: kind as u8,
                valid,
                ..Default::default()
            }
        };
        v.push(mk(
            ProbeId::SwapEntryAlloc,
            EventKind::Exit,
            FS_ANON | FS_SWAPBACKED | FS_LOCKED,
            2,
        ));
        v.push(mk(
            ProbeId::SwapCacheInsert,
            EventKind::Exit,
            sc | FS_LOCKED,
            3,
        ));
        v.push(mk(ProbeId::TryToUnmapOne, EventKind::Enter, sc, 3));
        v.push(mk(ProbeId::TryToUnmapOne, EventKind::Exit, sc, 2));
        v.push(mk(
            ProbeId::SwapCacheDelete,
            EventKind::Enter,
            sc | FS_LOCKED,
            2,
        ));
        v.push(mk(ProbeId::SwapcachePrepare, EventKind::Exit, 0, 0));
        v.push(mk(
            ProbeId::SwapRead,
            EventKind::Enter,
            FS_ANON | FS_SWAPBACKED | FS_LOCKED,
            1,
        ));
        v.push(mk(ProbeId::SwapcacheClear, EventKind::Enter, 0, 0));
        v.push(mk(ProbeId::SwapEntryFree, EventKind::Enter, 0, 0));
        let mut g = mk(ProbeId::GupGrabFast, EventKind::Exit, FS_ANON, 1026);
        g.valid |= V_PIN;
        v.push(g);
        let mut p = mk(ProbeId::GupPut, EventKind::Enter, FS_ANON, 1026);
        p.valid |= V_PIN;
        v.push(p);
    }
    v.truncate(n);
    v
}

/// Analyzer alone, items already in memory.
#[inline(never)]
fn analyzer_only(items: &[StreamItem]) -> (f64, Analyzer, usize) {
    let mut a = Analyzer::new(Config::default());
    let mut out = Vec::new();
    let t = Instant::now();
    for (i, it) in items.iter().enumerate() {
        a.process(i as u64, it, &mut out);
    }
    a.finish(&mut out);
    (t.elapsed().as_secs_f64(), a, out.len())
}

/// Reader alone: decode and check every record, touch each event.
#[inline(never)]
fn reader_only(path: &Path) -> (f64, u64) {
    let t = Instant::now();
    let mut r = TraceReader::open(path).expect("open");
    let mut sum = 0u64;
    while let Some((_, it)) = r.next_ref() {
        if let StreamItem::Event(e) = it {
            sum = sum.wrapping_add(e.ts_ns ^ e.folio);
        }
    }
    assert!(r.end_state().is_some_and(|s| s.is_complete()));
    (t.elapsed().as_secs_f64(), black_box(sum))
}

/// Reader + analyzer from the file, one core.
#[inline(never)]
fn end_to_end(path: &Path) -> (f64, usize) {
    let t = Instant::now();
    let mut r = TraceReader::open(path).expect("open");
    let mut a = Analyzer::new(Config::default());
    let mut out = Vec::new();
    while let Some((i, it)) = r.next_ref() {
        a.process(i, it, &mut out);
    }
    a.finish(&mut out);
    assert!(r.end_state().is_some_and(|s| s.is_complete()));
    (t.elapsed().as_secs_f64(), out.len())
}

fn rate(n: usize, secs: f64) -> f64 {
    n as f64 / secs / 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    // `-- EVENTS e2e` (or `reader`, `analyzer`, `bounded`): one phase only,
    // for profilers.
    let only = args
        .iter()
        .find(|a| ["analyzer", "reader", "e2e", "bounded"].contains(&a.as_str()));
    let run = |phase: &str| only.is_none_or(|o| o == phase);
    let events = synth(n);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.trace");
    let mut w = TraceWriter::create(&path, &TraceHeader::new("bench")).expect("create");
    for e in &events {
        w.write_event(e).expect("write");
    }
    w.finish(TraceEnd::at(0, "bench")).expect("finish");
    drop(events);

    if run("analyzer") {
        let items: Vec<StreamItem> = TraceReader::open(&path)
            .expect("open")
            .map(|(_, it)| it)
            .collect();
        let (secs, a, findings) = analyzer_only(&items);
        println!(
            "analyzer only      {n} events in {secs:.3}s = {:.1} M events/s ({findings} findings)",
            rate(n, secs),
        );
        println!(
            "analyzer state     {} objects tracked, {} bytes = {:.1} bytes/object, {} evictions",
            a.tracked_objects(),
            a.state_bytes(),
            a.state_bytes() as f64 / a.tracked_objects().max(1) as f64,
            a.evictions()
        );
    }

    if run("reader") {
        let (secs, _) = reader_only(&path);
        println!(
            "reader only        {n} events in {secs:.3}s = {:.1} M events/s",
            rate(n, secs)
        );
    }

    if run("e2e") {
        let (secs, findings) = end_to_end(&path);
        println!(
            "reader + analyzer  {n} events in {secs:.3}s = {:.1} M events/s ({findings} findings)",
            rate(n, secs)
        );
    }

    if run("bounded") {
        // Bounded memory: same stream with a small table.
        let mut r = TraceReader::open(&path).expect("open");
        let mut a = Analyzer::new(Config {
            max_tracked: 50_000,
            ..Config::default()
        });
        let mut out = Vec::new();
        while let Some((i, it)) = r.next_item() {
            a.process(i, &it, &mut out);
        }
        // Tables keep their peak capacity after an eviction sweep, so divide
        // by the bound, not by the (just swept) current count.
        println!(
            "bounded (50k)      {} objects now, {} bytes = {:.1} bytes per allowed object, {} evictions",
            a.tracked_objects(),
            a.state_bytes(),
            a.state_bytes() as f64 / 50_000.0,
            a.evictions()
        );
    }
}
