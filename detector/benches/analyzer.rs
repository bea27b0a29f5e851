//! Replay throughput of reader + analyzer on one core, and analyzer memory
//! per tracked object. Not a test: prints numbers.
//!
//! `cargo bench -p detector --bench analyzer [-- EVENTS] [analyzer|reader|e2e|bounded]`

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use detector::analyzer::{Analyzer, Config};
use detector::event::StreamItem;
use detector::synth::{Synth, DEFAULT_OBJECTS};
use detector::trace::{EndState, TraceEnd, TraceHeader, TraceReader, TraceWriter};

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
    assert!(r.end_state().is_some_and(EndState::is_complete));
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
    assert!(r.end_state().is_some_and(EndState::is_complete));
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
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.trace");
    let mut w = TraceWriter::create(&path, &TraceHeader::new("bench")).expect("create");
    // The swap-heavy mix of `detector::synth`, streamed to the file.
    for e in Synth::new(DEFAULT_OBJECTS).take(n) {
        w.write_event(&e).expect("write");
    }
    w.finish(TraceEnd::at(0, "bench")).expect("finish");

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
