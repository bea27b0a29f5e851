//! A whole trace file read the way `detector replay` reads it: header,
//! every record up to the end, how it ended. Nothing may panic, hang or
//! allocate what a length field merely claims.
#![no_main]

use libfuzzer_sys::fuzz_target;

use detector::trace::{Redactor, TraceReader};

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = TraceReader::from_reader(data) else {
        return;
    };
    let _ = r.header().layout();
    let redactor = Redactor::with_key(1, 2);
    let _ = redactor.header(r.header());
    while let Some((_, item)) = r.next_ref() {
        let _ = redactor.item(item);
    }
    if let Some(end) = r.end_state() {
        let _ = end.to_string();
    }
});
