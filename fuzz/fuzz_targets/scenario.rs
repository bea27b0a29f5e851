//! Scenario scripts (`detector simulate`): parsing, and the items of a
//! script that parses written out as a trace and read back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

use detector::scenario;
use detector::trace::{TraceEnd, TraceHeader, TraceReader, TraceWriter};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sc) = scenario::parse(text, "fuzz.scn") else {
        return;
    };
    let mut w = TraceWriter::new(Vec::new(), &TraceHeader::new("fuzz")).expect("header");
    for item in &sc.items {
        w.write_item(item).expect("write to memory");
    }
    let (_, bytes) = w
        .finish_into_inner(TraceEnd::at(0, "end"))
        .expect("finish in memory");
    let r = TraceReader::from_reader(bytes.as_slice()).expect("own trace reads");
    let back: Vec<_> = r.map(|(_, it)| it).collect();
    assert_eq!(back, sc.items);
});
