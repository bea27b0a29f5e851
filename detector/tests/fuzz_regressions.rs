//! Inputs the fuzz targets of `fuzz/` found crashing, each replayed through
//! what its target does (`tests/fuzz_inputs/<target>/`), plus what each one
//! must now produce instead of a panic.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::path::{Path, PathBuf};

use detector::analyzer::{Analyzer, Config};
use detector::scenario;
use detector::trace::{Redactor, TraceEnd, TraceHeader, TraceReader, TraceWriter};

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_inputs")
        .join(target);
    let mut v: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// The `scenario` target's body.
fn scenario_target(data: &[u8]) -> Option<Result<(), String>> {
    let text = std::str::from_utf8(data).ok()?;
    let sc = match scenario::parse(text, "fuzz.scn") {
        Ok(sc) => sc,
        Err(e) => return Some(Err(e.to_string())),
    };
    let mut w = TraceWriter::new(Vec::new(), &TraceHeader::new("fuzz")).unwrap();
    for item in &sc.items {
        w.write_item(item).unwrap();
    }
    let (_, bytes) = w.finish_into_inner(TraceEnd::at(0, "end")).unwrap();
    let back: Vec<_> = TraceReader::from_reader(bytes.as_slice())
        .unwrap()
        .map(|(_, it)| it)
        .collect();
    assert_eq!(back, sc.items);
    Some(Ok(()))
}

/// The `trace_reader` and `replay` targets' bodies.
fn trace_targets(data: &[u8]) {
    if let Ok(mut r) = TraceReader::from_reader(data) {
        let red = Redactor::with_key(1, 2);
        let _ = red.header(r.header());
        let mut cfg = r.header().analyzer_config.clone().unwrap_or_default();
        cfg.max_tracked = cfg.max_tracked.min(Config::default().max_tracked);
        let mut a = Analyzer::new(cfg);
        let mut found = Vec::new();
        while let Some((i, item)) = r.next_ref() {
            let _ = red.item(item);
            a.process(i, item, &mut found);
            found.clear();
        }
        a.finish(&mut found);
    }
}

#[test]
fn crashing_scenarios_are_refused_with_a_message() {
    let all = inputs("scenario");
    assert!(!all.is_empty());
    for p in &all {
        let data = std::fs::read(p).unwrap();
        let _ = scenario_target(&data);
    }
    // An event time so large that µs -> ns overflowed.
    let data = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_inputs/scenario/time-overflow.scn"),
    )
    .unwrap();
    let e = scenario_target(&data).unwrap().unwrap_err();
    assert!(e.contains("out of range"), "{e}");
}

#[test]
fn huge_expectation_counts_are_refused_instead_of_allocated() {
    let data = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_inputs/scenario/huge-repeat.scn"),
    )
    .unwrap();
    let e = scenario_target(&data).unwrap().unwrap_err();
    assert!(e.contains("expects more than"), "{e}");
    // Each line within the bound, the total over it.
    let mut text = String::from("name many\ntask a tid=1 pid=1 comm=x\n");
    for _ in 0..3 {
        text.push_str("expect eexist_storm info x40000 tid=a confidence=full\n");
    }
    let e = scenario::parse(&text, "many.scn").unwrap_err().to_string();
    assert!(e.contains("120000 findings"), "{e}");
}

#[test]
fn crashing_traces_replay_without_panicking() {
    for target in ["trace_reader", "replay"] {
        for p in inputs(target) {
            trace_targets(&std::fs::read(&p).unwrap());
        }
    }
}

#[test]
fn negative_numbers_at_the_edge_are_refused() {
    let text = "name n\ntask a tid=1 pid=1 comm=x\n-0x8000000000000000 a swap_entry_alloc exit\n";
    let e = scenario::parse(text, "edge.scn").unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
}
