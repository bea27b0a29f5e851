//! No length field of a trace makes the reader allocate what it claims:
//! a header or record that says it is gigabytes long is refused, and one
//! that says it is just under the cap but is not there costs only what the
//! file holds. Checked with a global allocator that records the largest
//! allocation (its own test binary, one test, so nothing else allocates
//! while it measures).

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use detector::trace::{
    EndState, TraceEnd, TraceError, TraceFormat, TraceHeader, TraceReader, TraceWriter,
    MAX_HEADER_LEN, MAX_RECORD_PAYLOAD, PREAMBLE_LEN,
};
use detector_common::Event;

struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator, which
// upholds GlobalAlloc's contract; the bookkeeping is one atomic max.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout contract is passed through as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as for `dealloc`, and `new_size` comes from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Largest = Largest;

/// The reader's own buffer: 1 MiB, whatever the file.
const READ_BUFFER: usize = 1 << 20;

/// The largest single allocation while `f` runs.
fn largest_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    let out = f();
    (out, LARGEST.load(Ordering::Relaxed))
}

fn small_trace() -> Vec<u8> {
    let mut w = TraceWriter::with_format(
        Vec::new(),
        &TraceHeader::new("alloc"),
        "alloc".into(),
        TraceFormat::V1,
    )
    .unwrap();
    for i in 0..10 {
        w.write_event(&Event {
            ts_ns: i,
            ..Event::default()
        })
        .unwrap();
    }
    w.finish_into_inner(TraceEnd::at(10, "done")).unwrap().1
}

/// The file with its header length field set to `len`.
fn with_header_len(mut b: Vec<u8>, len: u32) -> Vec<u8> {
    b[12..16].copy_from_slice(&len.to_le_bytes());
    b
}

/// Offset of the first record (after the header and its CRC).
fn first_record(b: &[u8]) -> usize {
    PREAMBLE_LEN + u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize + 4
}

/// `b` cut after `keep` records, then one record framing that claims
/// `len` payload bytes of type `ty`, then `tail` bytes of payload.
fn with_claiming_record(b: &[u8], keep: usize, len: u32, ty: u16, tail: usize) -> Vec<u8> {
    let at = first_record(b) + keep * (8 + 152 + 4);
    let mut out = b[..at].to_vec();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend(std::iter::repeat_n(0x5a, tail));
    out
}

fn read_through(b: &[u8]) -> Result<(usize, EndState), TraceError> {
    let mut r = TraceReader::from_reader(b)?;
    let n = r.by_ref().count();
    Ok((n, r.end_state().cloned().expect("ended")))
}

#[test]
fn length_fields_cannot_make_the_reader_allocate_what_they_claim() {
    let good = small_trace();
    let (ok, largest) = largest_during(|| read_through(&good));
    assert_eq!(ok.unwrap().0, 10);
    assert!(largest <= READ_BUFFER, "a small trace took {largest} bytes");

    // A header claiming 4 GiB, and one just over the cap: refused before
    // anything is read.
    for claim in [u32::MAX, MAX_HEADER_LEN as u32 + 1] {
        let bad = with_header_len(good.clone(), claim);
        let (r, largest) = largest_during(|| read_through(&bad));
        assert!(
            matches!(r, Err(TraceError::CorruptHeader { .. })),
            "{claim}: {r:?}"
        );
        assert!(largest <= READ_BUFFER, "{claim}: {largest} bytes");
    }

    // A header claiming the cap in a file of a few hundred bytes: cut off,
    // at the cost of the read buffer only.
    let bad = with_header_len(good.clone(), MAX_HEADER_LEN as u32);
    let (r, largest) = largest_during(|| read_through(&bad));
    assert!(
        matches!(r, Err(TraceError::TruncatedHeader { .. })),
        "{r:?}"
    );
    assert!(largest <= READ_BUFFER, "{largest} bytes");

    // Records claiming 4 GiB: damage, found before any payload is read.
    for ty in [1u16, 3, 77] {
        let bad = with_claiming_record(&good, 4, u32::MAX, ty, 16);
        let (r, largest) = largest_during(|| read_through(&bad));
        let (n, end) = r.unwrap();
        assert_eq!(n, 4);
        assert!(matches!(end, EndState::Corrupt { .. }), "{ty}: {end:?}");
        assert!(largest <= READ_BUFFER, "type {ty}: {largest} bytes");
    }

    // A footer and a record of an unknown type claiming the 16 MiB cap
    // with a few bytes behind them: cut off, costing the read buffer.
    for ty in [3u16, 77] {
        let bad = with_claiming_record(&good, 4, MAX_RECORD_PAYLOAD as u32, ty, 100);
        let (r, largest) = largest_during(|| read_through(&bad));
        let (n, end) = r.unwrap();
        assert_eq!(n, 4);
        assert!(matches!(end, EndState::Truncated { .. }), "{ty}: {end:?}");
        assert!(largest <= READ_BUFFER, "type {ty}: {largest} bytes");
    }

    // Claiming the cap with 3 MiB really there: the buffer follows the
    // data (doubling), not the claim.
    let present = 3 << 20;
    let bad = with_claiming_record(&good, 4, MAX_RECORD_PAYLOAD as u32, 77, present);
    let (r, largest) = largest_during(|| read_through(&bad));
    assert!(matches!(r.unwrap().1, EndState::Truncated { .. }));
    assert!(
        largest <= 2 * (present + READ_BUFFER) && largest < MAX_RECORD_PAYLOAD,
        "{largest} bytes for {present} present"
    );
}
