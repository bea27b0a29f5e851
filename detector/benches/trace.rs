//! Trace write and read throughput, and bytes per event, in both formats.
//! Run with `cargo bench -p detector --bench trace [-- EVENTS] [FILE]
//! [v1|v2]`: a number sets the synthetic events (default 10 M); a trace
//! file adds the same figures for its events (a real capture: the mix
//! `record` really writes); `v1` or `v2` measures that format only (for
//! `perf stat`, whose counts do not depend on the machine's load). Prints
//! events per second and CPU per event; asserts nothing about speed.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use detector::event::StreamItem;
use detector::trace::{
    encode_event, EndState, TraceEnd, TraceFormat, TraceHeader, TraceReader, TraceWriter,
};
use detector::usage::self_usage;
use detector_common::{Event, EVENT_SIZE};

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

/// This process's CPU seconds (user + system) so far.
fn cpu() -> f64 {
    self_usage().map_or(0.0, |u| (u.user + u.sys).as_secs_f64())
}

/// Wall seconds and CPU nanoseconds per item of `f` over `n` items.
fn timed(n: u64, f: impl FnOnce()) -> (f64, f64) {
    let (t, c) = (Instant::now(), cpu());
    f();
    let secs = t.elapsed().as_secs_f64();
    (secs, (cpu() - c) * 1e9 / n.max(1) as f64)
}

/// The figures for one stream of items in one format.
fn measure(label: &str, items: &[StreamItem], format: TraceFormat, dir: &Path) {
    let n = items.len() as u64;
    let path = dir.join(format!("bench-{format}.trace"));
    let header = TraceHeader::new("bench");

    // To a file, as `record` writes: events as the ring buffer's bytes.
    let mut bytes = 0;
    let (secs, ns) = timed(n, || {
        let mut w = TraceWriter::create_format(&path, &header, format).expect("create");
        let mut raw = [0u8; EVENT_SIZE];
        for it in items {
            match it {
                StreamItem::Event(e) => {
                    encode_event(e, &mut raw);
                    w.write_event_bytes(&raw).expect("write");
                }
                other @ StreamItem::Lost { .. } => w.write_item(other).expect("write"),
            }
        }
        bytes = w.finish(TraceEnd::at(n, "bench")).expect("finish").bytes;
    });
    println!(
        "{label} {format}: write {n} items to a file: {} ({ns:.0} ns CPU/item), {:.1} MiB = {:.2} bytes/item",
        rate(n, secs),
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / n.max(1) as f64
    );

    // The encoder alone: no file system.
    let (secs, ns) = timed(n, || {
        let mut w =
            TraceWriter::with_format(std::io::sink(), &header, "sink".into(), format).expect("new");
        for it in items {
            w.write_item(it).expect("write");
        }
        w.finish(TraceEnd::at(n, "bench")).expect("finish");
    });
    println!(
        "{label} {format}: write to io::sink: {} ({ns:.0} ns CPU/item)",
        rate(n, secs)
    );

    let mem = std::fs::read(&path).expect("read back");
    let (secs, ns) = timed(n, || {
        let mut r = TraceReader::from_reader(mem.as_slice()).expect("open");
        let mut sum = 0u64;
        while let Some((_, it)) = r.next_ref() {
            if let StreamItem::Event(e) = it {
                sum = sum.wrapping_add(e.ts_ns ^ e.folio);
            }
        }
        assert!(r.end_state().is_some_and(EndState::is_complete));
        black_box(sum);
    });
    println!(
        "{label} {format}: read from memory: {} ({ns:.0} ns CPU/item)",
        rate(n, secs)
    );
    drop(mem);

    // Best of three so the first pass can warm the page cache.
    for pass in 0..3 {
        let (secs, ns) = timed(n, || {
            let mut r = TraceReader::open(&path).expect("open");
            let (mut got, mut sum) = (0u64, 0u64);
            while let Some((_, it)) = r.next_ref() {
                got += 1;
                if let StreamItem::Event(e) = it {
                    sum = sum.wrapping_add(e.ts_ns ^ e.folio);
                }
            }
            assert!(r.end_state().is_some_and(EndState::is_complete));
            assert_eq!(got, n);
            black_box(sum);
        });
        println!(
            "{label} {format}: read pass {pass}: {} ({ns:.0} ns CPU/item, {:.0} MiB/s of file)",
            rate(n, secs),
            bytes as f64 / (1 << 20) as f64 / secs
        );
    }
    let _ = std::fs::remove_file(&path);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let file: Option<PathBuf> = args
        .iter()
        .filter(|a| a.parse::<u64>().is_err() && !a.starts_with('-'))
        .map(PathBuf::from)
        .find(|p| p.is_file());
    let only: Option<TraceFormat> = args.iter().find_map(|a| a.parse().ok());
    let formats: Vec<TraceFormat> = [TraceFormat::V1, TraceFormat::V2]
        .into_iter()
        .filter(|f| only.is_none_or(|o| o == *f))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");

    let mut items: Vec<StreamItem> = Vec::with_capacity(n as usize);
    for i in 0..n {
        items.push(StreamItem::Event(event(i)));
        if i % 100_000 == 0 {
            items.push(StreamItem::Lost {
                ts_ns: i,
                probe: 1,
                total: i / 100_000,
            });
        }
    }
    for &format in &formats {
        measure("synthetic", &items, format, dir.path());
    }
    drop(items);

    let t = Instant::now();
    let mut crc = 0u32;
    let chunk = [0x5au8; 160];
    for _ in 0..n {
        crc ^= crc32fast::hash(black_box(&chunk));
    }
    black_box(crc);
    println!(
        "crc32 of 160-byte chunks alone: {}",
        rate(n, t.elapsed().as_secs_f64())
    );

    if let Some(f) = file {
        let mut r = TraceReader::open(&f).expect("open the trace given");
        let items: Vec<StreamItem> = r.by_ref().map(|(_, it)| it).collect();
        let label = f
            .file_name()
            .map_or_else(|| "file".into(), |s| s.to_string_lossy().into_owned());
        for &format in &formats {
            measure(&label, &items, format, dir.path());
        }
    }
}
