//! `detector export` produces documents other tools can open.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::process::Command;

fn detector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_detector"))
}

fn simulate(dir: &std::path::Path) -> std::path::PathBuf {
    let scn = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/000_aba_reuse_moved.scn"
    );
    let trace = dir.join("s.trace");
    let st = detector()
        .args(["simulate", scn, "-o"])
        .arg(&trace)
        .status()
        .expect("run simulate");
    assert!(st.success());
    trace
}

#[test]
fn perfetto_export_is_a_chrome_trace_with_the_move_window_as_a_slice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = simulate(dir.path());
    let out = dir.path().join("t.json");
    let st = detector()
        .arg("export")
        .arg(&trace)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("run export");
    assert!(st.success());
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("read export")).expect("valid JSON");
    let events = doc["traceEvents"].as_array().expect("traceEvents array");
    let phase = |ph: &str, name: &str| {
        events
            .iter()
            .filter(|e| e["ph"] == ph && e["name"] == name)
            .count()
    };
    assert_eq!(phase("B", "move_pages"), phase("E", "move_pages"));
    assert!(phase("B", "move_pages") >= 1);
    assert!(events.iter().any(|e| e["name"] == "folio_move_anon_rmap"));
}

#[test]
fn jsonl_export_has_one_object_per_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = simulate(dir.path());
    let out = dir.path().join("t.jsonl");
    let st = detector()
        .arg("export")
        .arg(&trace)
        .args(["--format", "jsonl", "-o"])
        .arg(&out)
        .status()
        .expect("run export");
    assert!(st.success());
    let text = std::fs::read_to_string(&out).expect("read export");
    let (_, items, _) = detector::trace::read_all(&trace).expect("read trace");
    assert_eq!(text.lines().count(), items.len());
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        assert!(v.get("index").is_some(), "{line}");
    }
}
