//! The flight recorder allocates nothing per event once its ring reached
//! its size: not while it only buffers, not while a snapshot's
//! after-window is written. Counted by a global allocator (its own test
//! binary, one test, so nothing else allocates while it counts).

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use detector::analyzer::{Confidence, Evidence, Finding, Objects, RuleId, Severity};
use detector::event::StreamItem;
use detector::flight::{FlightPolicy, FlightRecorder};
use detector::synth::Synth;
use detector::trace::TraceHeader;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator, which
// upholds GlobalAlloc's contract; the bookkeeping is one atomic add.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's layout contract is passed through as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`, and `new_size` comes from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MS: u64 = 1_000_000;

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
            comm: "t".into(),
            note: String::new(),
            state: Default::default(),
        }],
        confidence: Confidence::full(),
        cause: String::new(),
    }
}

#[test]
fn no_allocation_per_event() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = FlightPolicy {
        keep: Duration::from_secs(1),
        after: Duration::from_secs(30),
        after_max: Duration::from_secs(30),
        dir: tmp.path().to_path_buf(),
        ..FlightPolicy::default()
    };
    let mut rec = FlightRecorder::new(&TraceHeader::new("alloc"), policy).unwrap();
    let mut synth = Synth::new(1000);
    let mut i = 0u64;
    // Hands over the next event; returns its index and time.
    let mut next = |rec: &mut FlightRecorder, found: &[Finding]| {
        let mut e = synth.next().unwrap();
        e.ts_ns = 1_000 * MS + i * MS;
        rec.item(i, &StreamItem::Event(e), found);
        i += 1;
        (i - 1, e.ts_ns)
    };
    // 20 s at 1 ms: the ring (1 s, in chunks of 4096 items) is at its
    // size and recycling.
    for _ in 0..20_000 {
        next(&mut rec, &[]);
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..20_000 {
        next(&mut rec, &[]);
    }
    let buffering = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(buffering, 0, "allocations while buffering 20 000 events");

    // A snapshot opens (that allocates: a file, a manifest), then its
    // after-window is written item by item.
    let (at, ts) = next(&mut rec, &[]);
    next(&mut rec, &[violation(at, ts)]);
    assert_eq!(rec.stats().open, 1);
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..20_000 {
        next(&mut rec, &[]);
    }
    let writing = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(rec.stats().open, 1, "still inside the after-window");
    // Format v2 closes a block every 128 KiB of encoded items: a block
    // close may allocate (the block index, zstd's workspace growing to a
    // full block the first time), an event never does.
    assert!(
        writing <= 4,
        "{writing} allocations while writing 20 000 events"
    );
    rec.finish(&[]);
    assert_eq!(rec.stats().written, 1);
}
