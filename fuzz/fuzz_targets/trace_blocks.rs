//! Format v2's blocks with their checksums made good: the input is
//! everything after a valid v2 header, and every block header and payload
//! CRC is recomputed before reading, so that mutations reach the block
//! checks, zstd, the item decoder and the footer instead of stopping at a
//! checksum. Nothing may panic, hang or allocate beyond the reader's caps;
//! seeking through whatever index the input claims must be as safe.
#![no_main]

use std::io::Cursor;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

use detector::trace::v2::BLOCK_HEADER_LEN;
use detector::trace::{Redactor, TraceHeader, TraceReader, TraceWriter};

/// Preamble, header JSON and header CRC of a v2 file.
fn header() -> &'static [u8] {
    static H: OnceLock<Vec<u8>> = OnceLock::new();
    H.get_or_init(|| {
        let mut out = Vec::new();
        let w = TraceWriter::new(&mut out, &TraceHeader::new("fuzz")).expect("header");
        drop(w);
        out
    })
}

/// Recomputes each block's payload and header CRC in place, walking the
/// blocks by their (fuzzed) stored lengths, as docs/trace-format.md lays
/// them out: stored length at 8, payload CRC at 20, header CRC at 40 over
/// bytes 0..40.
fn fix_checksums(b: &mut [u8], mut at: usize) {
    while at + BLOCK_HEADER_LEN <= b.len() {
        let stored = u32::from_le_bytes([b[at + 8], b[at + 9], b[at + 10], b[at + 11]]) as usize;
        let end = (at + BLOCK_HEADER_LEN).saturating_add(stored).min(b.len());
        let crc = crc32fast::hash(&b[at + BLOCK_HEADER_LEN..end]);
        b[at + 20..at + 24].copy_from_slice(&crc.to_le_bytes());
        let hcrc = crc32fast::hash(&b[at..at + 40]);
        b[at + 40..at + 44].copy_from_slice(&hcrc.to_le_bytes());
        at = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let h = header();
    let mut file = Vec::with_capacity(h.len() + data.len());
    file.extend_from_slice(h);
    file.extend_from_slice(data);
    fix_checksums(&mut file, h.len());

    let Ok(mut r) = TraceReader::from_reader(Cursor::new(&file)) else {
        return;
    };
    let redactor = Redactor::with_key(1, 2);
    let mut n = 0u64;
    while let Some((_, item)) = r.next_ref() {
        let _ = redactor.item(item);
        n += 1;
    }
    if let Some(end) = r.end_state() {
        let _ = end.to_string();
    }
    // Seeking goes through the claimed index (or a scan of block headers)
    // and must land where reading from the start lands.
    let _ = r.block_index();
    for at in [0, n / 2, n, n + 1] {
        if let Ok(true) = r.seek_item(at) {
            if let Some((i, _)) = r.next_ref() {
                assert_eq!(i, at, "a seek to item {at} landed on item {i}");
            }
        }
    }
});
