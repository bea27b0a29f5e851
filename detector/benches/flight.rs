//! What the flight recorder costs per event: buffering only, and while a
//! snapshot's after-window is written. Run with
//! `cargo bench -p detector --bench flight [-- EVENTS]`.
//! Prints events per second; asserts nothing about speed.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::time::{Duration, Instant};

use detector::analyzer::{Confidence, Evidence, Finding, Objects, RuleId, Severity};
use detector::event::StreamItem;
use detector::flight::{FlightPolicy, FlightRecorder};
use detector::synth::Synth;
use detector::trace::TraceHeader;

fn violation(index: u64, ts_ns: u64) -> Finding {
    Finding {
        id: 1,
        rule: RuleId::SwapinWithoutCachePin,
        severity: Severity::Violation,
        objects: Objects {
            folios: vec!["0x1".into()],
            ..Objects::default()
        },
        explanation: String::new(),
        evidence: vec![Evidence {
            index,
            ts_ns,
            probe: "swap_read".into(),
            kind: "enter".into(),
            tid: 1,
            comm: "bench".into(),
            note: String::new(),
            state: Default::default(),
        }],
        confidence: Confidence::full(),
        cause: String::new(),
    }
}

/// 100 000 events/s of stream time: the ring (64 MiB) is memory-bound.
const STEP: u64 = 10_000;

/// Hands `n` events to the recorder, `found` with the first; the seconds
/// it took.
fn run(
    rec: &mut FlightRecorder,
    events: &[StreamItem],
    i: &mut u64,
    n: u64,
    found: Option<Finding>,
) -> f64 {
    let t = Instant::now();
    for k in 0..n {
        let mut it = events[(*i % events.len() as u64) as usize];
        if let StreamItem::Event(e) = &mut it {
            e.ts_ns = 1_000_000_000 + *i * STEP;
        }
        let f = if k == 0 { found.as_slice() } else { &[] };
        rec.item(*i, &it, f);
        *i += 1;
    }
    t.elapsed().as_secs_f64()
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = FlightPolicy {
        after: Duration::from_secs(3600),
        after_max: Duration::from_secs(3600),
        snapshot_bytes: 4 << 30,
        max_bytes: 8 << 30,
        dir: dir.path().to_path_buf(),
        ..FlightPolicy::default()
    };
    let mut rec = FlightRecorder::new(&TraceHeader::new("bench"), policy).expect("recorder");
    let events: Vec<StreamItem> = Synth::new(100_000)
        .take(1 << 16)
        .map(StreamItem::Event)
        .collect();
    let mut i = 0u64;
    let secs = run(&mut rec, &events, &mut i, n, None);
    let s = rec.stats();
    println!(
        "buffering: {n} events in {secs:.2}s = {:.1} M events/s, {:.0} ns/event; ring {:.1} MiB, \
         {} items",
        n as f64 / secs / 1e6,
        secs * 1e9 / n as f64,
        s.buffered_bytes as f64 / (1 << 20) as f64,
        s.buffered_items
    );
    let ts = 1_000_000_000 + i * STEP;
    let trigger = violation(i, ts);
    // At most ~1.3 GiB of snapshot.
    let n = n.min(8_000_000);
    let secs = run(&mut rec, &events, &mut i, n, Some(trigger));
    println!(
        "with a snapshot open (the pre-window written first): {n} events in {secs:.2}s = {:.1} \
         M events/s, {:.0} ns/event; still open: {}",
        n as f64 / secs / 1e6,
        secs * 1e9 / n as f64,
        rec.stats().open
    );
    rec.finish(&[]);
    let s = rec.stats();
    println!(
        "written {} ({:.0} MiB), errors {}",
        s.written,
        s.on_disk_bytes as f64 / (1 << 20) as f64,
        s.errors
    );
}
