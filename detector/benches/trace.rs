//! Trace write and read throughput. Run with
//! `cargo bench -p detector --bench trace [-- EVENTS]`.
//! Prints events per second; asserts nothing about speed.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::hint::black_box;
use std::time::Instant;

use detector::event::StreamItem;
use detector::trace::{EndState, TraceEnd, TraceHeader, TraceReader, TraceWriter};
use detector_common::Event;

fn event(i: u64) -> Event {
    Event {
        ts_ns: 1_000_000 + i * 13,
        folio: 0xffff_ea00_0000_0000 + ((i * 2654435761) & 0xffff_ffc0),
        entry: i & 0xfffff,
        pid: (i % 4096) as u32,
        tid: (i % 4099) as u32,
        cpu: (i % 2) as u32,
        probe: (i % 21) as u16,
        kind: (i % 2) as u8,
        valid: 0x17,
        f_refcount: 3,
        comm: *b"stress-ng\0\0\0\0\0\0\0",
        ..Event::default()
    }
}

fn rate(n: u64, secs: f64) -> String {
    format!("{:.1} M events/s", n as f64 / secs / 1e6)
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.trace");

    let t = Instant::now();
    let mut w = TraceWriter::create(&path, &TraceHeader::new("bench")).expect("create");
    for i in 0..n {
        w.write_event(&event(i)).expect("write");
        if i % 100_000 == 0 {
            w.write_lost(i, 1, i / 100_000).expect("write");
        }
    }
    let s = w.finish(TraceEnd::at(n, "bench")).expect("finish");
    let wsecs = t.elapsed().as_secs_f64();
    println!(
        "write: {n} events, {:.0} MiB in {wsecs:.2}s = {}",
        s.bytes as f64 / (1 << 20) as f64,
        rate(n, wsecs)
    );

    let t = Instant::now();
    let mut w = TraceWriter::new(std::io::sink(), &TraceHeader::new("bench")).expect("create");
    for i in 0..n {
        w.write_event(&event(i)).expect("write");
    }
    w.finish(TraceEnd::at(n, "bench")).expect("finish");
    println!("write to io::sink: {}", rate(n, t.elapsed().as_secs_f64()));

    // The same without the file system: CPU cost of encoding and decoding.
    let t = Instant::now();
    let mut mem = Vec::with_capacity(s.bytes as usize);
    let mut w = TraceWriter::new(&mut mem, &TraceHeader::new("bench")).expect("create");
    for i in 0..n {
        w.write_event(&event(i)).expect("write");
    }
    w.finish(TraceEnd::at(n, "bench")).expect("finish");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "write to a fresh Vec (page faults included): {}",
        rate(n, secs)
    );
    let t = Instant::now();
    let mut r = TraceReader::from_reader(mem.as_slice()).expect("open");
    let mut sum = 0u64;
    for (_, it) in r.by_ref() {
        if let StreamItem::Event(e) = it {
            sum = sum.wrapping_add(e.ts_ns ^ e.folio);
        }
    }
    black_box(sum);
    let secs = t.elapsed().as_secs_f64();
    println!("read from memory: {}", rate(n, secs));
    let t = Instant::now();
    let mut crc = 0u32;
    for chunk in mem.chunks_exact(160) {
        crc ^= crc32fast::hash(chunk);
    }
    black_box(crc);
    println!(
        "crc32 of 160-byte chunks alone: {}",
        rate(n, t.elapsed().as_secs_f64())
    );
    drop(mem);

    // Best of three so the first pass can warm the page cache.
    for pass in 0..3 {
        let t = Instant::now();
        let mut r = TraceReader::open(&path).expect("open");
        let (mut events, mut sum) = (0u64, 0u64);
        for (_, it) in r.by_ref() {
            if let StreamItem::Event(e) = it {
                events += 1;
                sum = sum.wrapping_add(e.ts_ns ^ e.folio);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        assert!(r.end_state().is_some_and(EndState::is_complete));
        assert_eq!(events, n);
        black_box(sum);
        println!(
            "read pass {pass}: {n} events in {secs:.2}s = {} ({:.0} MiB/s)",
            rate(n, secs),
            s.bytes as f64 / (1 << 20) as f64 / secs
        );
    }
}
