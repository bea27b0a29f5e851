//! What `detector replay` does to an untrusted file: read it and run the
//! analyzer over every record, with the configuration its header records.
#![no_main]

use libfuzzer_sys::fuzz_target;

use detector::analyzer::{Analyzer, Config};
use detector::trace::TraceReader;

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = TraceReader::from_reader(data) else {
        return;
    };
    let mut cfg = r.header().analyzer_config.clone().unwrap_or_default();
    // Keep one input's memory bounded however large a limit it claims.
    cfg.max_tracked = cfg.max_tracked.min(Config::default().max_tracked);
    let mut a = Analyzer::new(cfg);
    if let Some(p) = detector::plan::attached_probes(&r.header().plan) {
        a.set_attached(p);
    }
    let mut found = Vec::new();
    while let Some((i, item)) = r.next_ref() {
        a.process(i, item, &mut found);
        found.clear();
    }
    a.finish(&mut found);
});
