//! A fleet of Parquet exports queried with DuckDB: for every capture, the
//! query counts the same events per probe as `detector replay --format
//! json` and the trace's footer, the same lost totals, and the same
//! findings per rule and severity as the replay's analysis.
//!
//! The fleet: a scenario with findings of seven rules, one with lost
//! events, the two slices of real 6.12 captures in `testdata/`, and a
//! synthetic finding storm longer than a row group.
//!
//! Needs Python with the `duckdb` package. `cargo xtask test` prepares a
//! virtual environment under `target/duckdb-venv/` and names its
//! interpreter in `DETECTOR_DUCKDB_PYTHON`, with `DETECTOR_REQUIRE_DUCKDB`
//! set so that the test cannot skip there; run alone, it uses that
//! environment when it exists and otherwise says it is skipped.
//! `DETECTOR_DUCKDB_TRACES` (paths separated by `:`) adds captures to the
//! fleet, such as real recordings too large to commit.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]
// Without the Parquet export there is nothing to query.
#![cfg(feature = "parquet")]

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use detector::analyzer::Finding;
use detector::event::StreamItem;
use detector::stream::{Ctx, FileSource, Pipeline, Sink, Source, Speed};
use detector::trace::EndState;
use serde_json::Value;

/// Several races in one capture, from the corpus's scenarios with their
/// own tasks, entries and folios: an ABA reuse, a stale move, an -EEXIST
/// storm, a swap-in without its cache pin, a pin of a non-exclusive folio,
/// a COW of a pinned folio, remove_mapping of a pinned folio, lost events.
const MIXED: &str = "\
name fleet_mixed_rules
description Several rules' findings in one capture (the Parquet export's DuckDB test).
config eexist_threshold=4
task mover tid=101 pid=100 comm=uffd_mover
task mover2 tid=102 pid=100 comm=uffd_mover
task owner tid=201 pid=200 comm=other
task kswapd tid=90 pid=90 comm=kswapd0
task sync tid=600 pid=600 comm=fault_a
task racer tid=601 pid=601 comm=fault_b
task io tid=500 pid=500 comm=io_uring
task app tid=400 pid=400 comm=app
10 mover move_pages enter addr=0x7f0000000000
12 mover move_pages_lookup exit space=SW0 entry=1:0x40 folio=B state=anon|swapbacked|swapcache swap=1:0x40 ref=3 map=0
14 owner do_swap_page exit pte=swap:1:0x40 addr=0x7e0000001000 ret=0
15 owner swap_cache_delete enter entry=1:0x40 folio=B state=anon|swapbacked|swapcache|locked swap=1:0x40 ref=3 map=1
16 owner swap_entry_free enter entry=1:0x40 nr=1
20 kswapd swap_entry_alloc exit entry=1:0x40 nr=1 folio=A state=anon|swapbacked|locked ref=2 map=0
21 kswapd swap_cache_insert exit entry=1:0x40 nr=1 folio=A state=anon|swapbacked|swapcache|locked swap=1:0x40 ref=3 map=0 ret=0
30 mover folio_move_anon_rmap enter folio=B state=anon|swapbacked|locked ref=2 map=1
31 mover move_pages exit ret=4096
40 mover2 move_pages enter addr=0x7f0000100000
42 mover2 move_pages_lookup exit space=SW0 entry=1:0x50 folio=C state=anon|swapbacked|swapcache swap=1:0x50 ref=3 map=0
45 owner swap_cache_delete enter entry=1:0x50 folio=C state=anon|swapbacked|swapcache|locked swap=1:0x50 ref=3 map=1
46 owner swap_entry_free enter entry=1:0x50 nr=1
50 mover2 folio_move_anon_rmap enter folio=C state=anon|swapbacked|locked ref=2 map=1
51 mover2 move_pages exit ret=4096
60 sync swapcache_prepare exit entry=2:0x10 nr=1 ret=0
61 racer swapcache_prepare exit entry=2:0x10 nr=1 ret=EEXIST
62 racer swapcache_prepare exit entry=2:0x10 nr=1 ret=EEXIST
63 racer swapcache_prepare exit entry=2:0x10 nr=1 ret=EEXIST
64 racer swapcache_prepare exit entry=2:0x10 nr=1 ret=EEXIST
65 racer swapcache_prepare exit entry=2:0x10 nr=1 ret=EEXIST
70 sync swapcache_clear enter entry=2:0x10 nr=1
80 racer swapcache_prepare exit entry=2:0x20 nr=1 ret=0
81 racer swapcache_clear enter entry=2:0x20 nr=1
90 sync swap_read enter entry=2:0x20 folio=P state=anon|swapbacked|locked ref=1 map=0
100 app gup_grab exit folio=G state=anon|lru ref=1026 map=2 nr=1 foll_pin ret=0
110 io gup_grab exit folio=F state=anon|anon_exclusive|lru ref=1025 map=1 nr=1 foll_pin ret=0
120 app do_wp_page enter folio=F state=anon|lru ref=1026 map=2 addr=0x7f2000000000
130 io gup_grab exit folio=H state=anon|anon_exclusive|swapbacked ref=1025 map=1 nr=1 foll_pin ret=0
140 kswapd remove_mapping enter folio=H state=anon|swapbacked|swapcache swap=1:0x99 ref=2 map=0
141 kswapd remove_mapping exit folio=H state=anon|swapbacked ref=0 map=0 ret=1
150 lost gup_grab_fast 12
expect swap_entry_aba violation entry=1:0x40 folio=B,A tid=mover,kswapd confidence=full
expect stale_folio_move violation entry=1:0x50 folio=C tid=mover2 confidence=full
expect eexist_storm info entry=2:0x10 tid=racer confidence=full
expect swapin_without_cache_pin violation entry=2:0x20 folio=P tid=sync confidence=full
expect pin_not_exclusive violation folio=G tid=app confidence=full
expect cow_of_pinned violation folio=F tid=io,app confidence=full
expect remove_mapping_pinned violation folio=H tid=io,kswapd confidence=full
";

fn detector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_detector"))
}

fn run(c: &mut Command) -> Vec<u8> {
    let out = c.output().expect("run a command");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The Python that has `duckdb`, or why there is none.
fn python() -> Result<PathBuf, String> {
    let given = std::env::var_os("DETECTOR_DUCKDB_PYTHON").map(PathBuf::from);
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/duckdb-venv/bin/python");
    let py = given.unwrap_or(venv);
    let ok = Command::new(&py)
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(py)
    } else {
        Err(format!(
            "{} cannot import duckdb (cargo xtask test prepares it)",
            py.display()
        ))
    }
}

/// Per-probe event counts from the trace's footer (its own summary).
fn footer_events(trace: &Path) -> BTreeMap<String, u64> {
    struct Nothing;
    impl Sink for Nothing {
        fn item(&mut self, _: u64, _: &StreamItem, _: &mut Vec<Finding>) -> io::Result<()> {
            Ok(())
        }
        fn finish(&mut self, _: &mut Vec<Finding>, _: &mut Ctx<'_>) -> io::Result<()> {
            Ok(())
        }
    }
    let mut source = FileSource::open(trace, Speed::Max).expect("open the trace");
    Pipeline::new(&mut source)
        .run(&mut Nothing)
        .expect("read the trace");
    match source.end_state() {
        Some(EndState::Complete { footer }) => footer.events_per_probe.clone(),
        other => panic!("{}: no footer to compare with: {other:?}", trace.display()),
    }
}

/// What `detector replay --format json --all` says about a trace.
struct Replayed {
    items: u64,
    events_per_probe: BTreeMap<String, u64>,
    lost_per_probe: BTreeMap<String, u64>,
    findings_per_rule: BTreeMap<String, u64>,
    findings_per_severity: BTreeMap<String, u64>,
}

fn replay(trace: &Path) -> Replayed {
    let out = run(detector().arg("replay").arg(trace).args([
        "--format",
        "json",
        "--all",
        "--fail-on",
        "never",
    ]));
    let r: Value = serde_json::from_slice(&out).expect("replay prints JSON");
    let mut events_per_probe = BTreeMap::new();
    let mut lost_per_probe = BTreeMap::new();
    for p in r["probes"].as_array().expect("probes") {
        let name = p["probe"].as_str().expect("probe name").to_string();
        let events = p["events"].as_u64().expect("events");
        let lost = p["lost"].as_u64().expect("lost");
        if events > 0 {
            events_per_probe.insert(name.clone(), events);
        }
        if lost > 0 {
            lost_per_probe.insert(name, lost);
        }
    }
    let mut findings_per_rule = BTreeMap::new();
    let mut findings_per_severity = BTreeMap::new();
    for f in r["findings"].as_array().expect("--all lists findings") {
        let rule = f["rule"].as_str().expect("rule").to_string();
        let sev = f["severity"].as_str().expect("severity").to_string();
        *findings_per_rule.entry(rule).or_insert(0) += 1;
        *findings_per_severity.entry(sev).or_insert(0) += 1;
    }
    Replayed {
        items: r["items"].as_u64().expect("items"),
        events_per_probe,
        lost_per_probe,
        findings_per_rule,
        findings_per_severity,
    }
}

fn counts(v: &Value, key: &str) -> BTreeMap<String, u64> {
    v[key]
        .as_object()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().expect("a count")))
        .collect()
}

#[test]
fn duckdb_over_a_fleet_of_exports_counts_what_replay_reports() {
    let py = match python() {
        Ok(p) => p,
        Err(why) if std::env::var_os("DETECTOR_REQUIRE_DUCKDB").is_some() => {
            panic!("DETECTOR_REQUIRE_DUCKDB is set but {why}")
        }
        Err(why) => {
            eprintln!("DuckDB fleet test skipped: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut traces: Vec<(String, PathBuf)> = Vec::new();

    let script = d.join("mixed.scn");
    std::fs::write(&script, MIXED).expect("write the scenario");
    let mixed = d.join("mixed.trace");
    run(detector()
        .arg("simulate")
        .arg(&script)
        .arg("-o")
        .arg(&mixed));
    traces.push(("mixed".into(), mixed));

    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/000_aba_lost_events.scn");
    let lost = d.join("aba-lost.trace");
    run(detector().arg("simulate").arg(&corpus).arg("-o").arg(&lost));
    traces.push(("aba-lost".into(), lost));

    // Slices of real 6.12 captures (detector/testdata/README.md): real
    // hosts, plans and addresses, near misses of two rules.
    for name in ["real-madvfree-3400", "real-uffd-106700"] {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("testdata/{name}.dtr"));
        traces.push((name.into(), p));
    }

    // More findings than one batch, more events than one row group.
    let storm = d.join("storm.trace");
    run(detector()
        .args([
            "simulate",
            "--synthetic",
            "300000",
            "--objects",
            "5000",
            "--storm",
            "-o",
        ])
        .arg(&storm));
    traces.push(("storm".into(), storm));

    for (i, p) in std::env::var("DETECTOR_DUCKDB_TRACES")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        traces.push((format!("extra-{i}"), PathBuf::from(p)));
    }

    let fleet = d.join("fleet");
    for (id, trace) in &traces {
        run(detector()
            .arg("export")
            .arg(trace)
            .args(["--format", "parquet", "--capture-id", id, "-o"])
            .arg(fleet.join(id)));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/duckdb/fleet_counts.py");
    let out = run(Command::new(&py).arg(&script).arg(&fleet));
    let fleet_counts: Value = serde_json::from_slice(&out).expect("the query prints JSON");

    for (id, trace) in &traces {
        let got = &fleet_counts[id.as_str()];
        assert!(
            got.is_object(),
            "capture {id} is not in the fleet: {fleet_counts}"
        );
        let want = replay(trace);
        let events = counts(got, "events_per_probe");
        assert_eq!(events, want.events_per_probe, "{id}: events per probe");
        assert_eq!(
            events,
            footer_events(trace),
            "{id}: events per probe (footer)"
        );
        assert_eq!(
            counts(got, "lost_per_probe"),
            want.lost_per_probe,
            "{id}: lost per probe"
        );
        assert_eq!(got["rows"].as_u64(), Some(want.items), "{id}: rows");
        assert_eq!(
            counts(got, "findings_per_rule"),
            want.findings_per_rule,
            "{id}: findings per rule"
        );
        assert_eq!(
            counts(got, "findings_per_severity"),
            want.findings_per_severity,
            "{id}: findings per severity"
        );
        let host = FileSource::open(trace, Speed::Max)
            .expect("open the trace")
            .header()
            .hostname
            .clone();
        assert_eq!(got["hosts"], serde_json::json!([host]), "{id}: host");
        assert_eq!(got["findings_without_events"], 0, "{id}");
        assert_eq!(got["steps_not_matching_events"], 0, "{id}");
    }
    // The mixed capture holds the findings its script declares: seven
    // rules, one finding each.
    let mut declared = BTreeMap::new();
    for e in detector::scenario::parse(MIXED, "mixed")
        .expect("parse")
        .expect
    {
        *declared.entry(e.rule.name().to_string()).or_insert(0) += 1;
    }
    assert_eq!(declared.len(), 7);
    assert_eq!(
        counts(&fleet_counts["mixed"], "findings_per_rule"),
        declared
    );
    assert!(
        !counts(&fleet_counts["aba-lost"], "lost_per_probe").is_empty(),
        "the lost-event records are rows"
    );
    for real in ["real-madvfree-3400", "real-uffd-106700"] {
        let rules = counts(&fleet_counts[real], "findings_per_rule");
        assert!(!rules.is_empty(), "{real}: the slice holds findings");
    }
    let storm_findings: u64 = counts(&fleet_counts["storm"], "findings_per_rule")
        .values()
        .sum();
    assert!(storm_findings > 1024, "{storm_findings} storm findings");
}
