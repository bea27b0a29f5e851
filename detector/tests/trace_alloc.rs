//! No length field of a trace makes the reader allocate what it claims:
//! a header or record that says it is gigabytes long is refused, and one
//! that says it is just under the cap but is not there costs only what the
//! file holds. In v2 a block's decoded size is allocated once its stored
//! bytes are there and check out, and never beyond `MAX_BLOCK_LEN` (zstd
//! allocates through the same allocator). Checked with a global allocator
//! that records the largest allocation (its own test binary, one test, so
//! nothing else allocates while it measures).

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use detector::trace::v2::{BlockHeader, BLOCK_ITEMS, CODEC_STORED, CODEC_ZSTD, MAX_BLOCK_LEN};
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

    v2_blocks_cannot_make_the_reader_allocate_beyond_the_cap();

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

/// A v2 trace of 10 000 events in a few blocks, and where its first block
/// starts.
fn small_v2() -> (Vec<u8>, usize) {
    let mut w = TraceWriter::new(Vec::new(), &TraceHeader::new("alloc")).unwrap();
    let first = w.bytes_written() as usize;
    for i in 0..10_000 {
        w.write_event(&Event {
            ts_ns: i,
            folio: 0xffff_ea00_0000_0000 + (i % 777) * 64,
            ..Event::default()
        })
        .unwrap();
    }
    (
        w.finish_into_inner(TraceEnd::at(10, "done")).unwrap().1,
        first,
    )
}

/// The v2 file cut at its first block, then `h` (with a good header
/// checksum and, when `payload` is given, a good payload checksum).
fn with_block(b: &[u8], at: usize, h: BlockHeader, payload: &[u8], pad: usize) -> Vec<u8> {
    let mut out = b[..at].to_vec();
    let h = BlockHeader {
        payload_crc: crc32fast::hash(payload),
        ..h
    };
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(payload);
    out.extend(std::iter::repeat_n(0x5a, pad));
    out
}

fn v2_blocks_cannot_make_the_reader_allocate_beyond_the_cap() {
    let (good, first) = small_v2();
    let (ok, largest) = largest_during(|| read_through(&good));
    assert_eq!(ok.unwrap().0, 10_000);
    assert!(
        largest <= READ_BUFFER,
        "a small v2 trace took {largest} bytes"
    );

    let block = |stored_len, raw_len, codec| BlockHeader {
        kind: BLOCK_ITEMS,
        codec,
        stored_len,
        raw_len,
        items: 1,
        payload_crc: 0,
        first_index: 0,
        first_ts: 0,
    };
    // Sizes above the cap: damage, before anything is allocated for them.
    for (stored, raw) in [
        (u32::MAX, 100),
        (100, u32::MAX),
        (MAX_BLOCK_LEN as u32 + 1, 8),
    ] {
        let bad = with_block(&good, first, block(stored, raw, CODEC_ZSTD), &[], 64);
        let (r, largest) = largest_during(|| read_through(&bad));
        assert!(
            matches!(r.unwrap().1, EndState::Corrupt { .. }),
            "{stored} {raw}"
        );
        assert!(largest <= READ_BUFFER, "{stored} {raw}: {largest} bytes");
    }
    // The cap claimed, a few bytes there: cut off, costing the read buffer.
    let claim = block(MAX_BLOCK_LEN as u32, MAX_BLOCK_LEN as u32, CODEC_STORED);
    let bad = with_block(&good, first, claim, &[], 100);
    let (r, largest) = largest_during(|| read_through(&bad));
    assert!(matches!(r.unwrap().1, EndState::Truncated { .. }));
    assert!(largest <= READ_BUFFER, "{largest} bytes");

    // A zstd frame that inflates far beyond what its block claims, and
    // one claiming the cap: zstd writes into the claimed size and no more.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
    for raw in [1000, MAX_BLOCK_LEN as u32] {
        let h = block(bomb.len() as u32, raw, CODEC_ZSTD);
        let bad = with_block(&good, first, h, &bomb, 0);
        let (r, largest) = largest_during(|| read_through(&bad));
        assert!(matches!(r.unwrap().1, EndState::Corrupt { .. }), "{raw}");
        assert!(
            largest <= (raw as usize).max(READ_BUFFER),
            "{raw}: {largest} bytes for a {}-byte bomb",
            bomb.len()
        );
    }
}
