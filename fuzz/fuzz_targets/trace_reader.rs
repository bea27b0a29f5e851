//! A whole trace file (v1 or v2) read the way `detector replay` reads it:
//! header, every record up to the end, how it ended; then, as a tool that
//! seeks would, the block index and a seek. Nothing may panic, hang or
//! allocate what a length field merely claims.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;

use detector::trace::{Redactor, TraceReader};

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = TraceReader::from_reader(Cursor::new(data)) else {
        return;
    };
    let _ = r.header().layout();
    let redactor = Redactor::with_key(1, 2);
    let _ = redactor.header(r.header());
    let mut n = 0u64;
    while let Some((_, item)) = r.next_ref() {
        let _ = redactor.item(item);
        n += 1;
    }
    if let Some(end) = r.end_state() {
        let _ = end.to_string();
    }
    let _ = r.block_index();
    if let Ok(true) = r.seek_item(n / 2) {
        if let Some((i, _)) = r.next_ref() {
            // v1 counts records of unknown types it skips: never less.
            assert!(i >= n / 2, "a seek to item {} landed on item {i}", n / 2);
        }
    }
});
