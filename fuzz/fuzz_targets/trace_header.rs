//! The JSON inside a trace: the header (including the analyzer
//! configuration read key by key over the defaults, the layout map and
//! the redaction of its strings) and the footer.
#![no_main]

use libfuzzer_sys::fuzz_target;

use detector::trace::{Redactor, TraceFooter, TraceHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = serde_json::from_slice::<TraceHeader>(data) {
        let _ = h.layout();
        let r = Redactor::with_key(3, 4).header(&h);
        // What was read must write back out and read again.
        let json = serde_json::to_vec(&r).expect("a header read serialises");
        let back: TraceHeader = serde_json::from_slice(&json).expect("and reads back");
        assert_eq!(back, r);
    }
    let _ = serde_json::from_slice::<TraceFooter>(data);
});
