//! The synthetic mix through the real file path: `simulate --synthetic`
//! writes it, `replay` reads it back under a `--max-tracked` far below the
//! objects it names. No timing is asserted, only counts and bounds.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::process::Command;

use detector::analyzer::{Config, Severity};
use detector::cli::simulate::write_synthetic;
use detector::sinks::analyze_file_with_stats;
use detector::stream::{ConfigChoice, Overrides};

const EVENTS: u64 = 200_000;
/// About 2 * OBJECTS tracked objects without a bound, half of the entries
/// allocated: more than LIMIT even after every dead object is dropped.
const OBJECTS: u64 = 20_000;
const LIMIT: usize = 5_000;

#[test]
fn bounded_replay_of_a_synthetic_trace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synthetic.trace");
    let summary = write_synthetic(&path, EVENTS, OBJECTS).unwrap();
    assert_eq!(summary.totals.events, EVENTS);

    let cfg = Config {
        max_tracked: LIMIT,
        ..Config::default()
    };
    let (report, stats) = analyze_file_with_stats(&path, ConfigChoice::Given(cfg), false).unwrap();
    assert!(report.complete, "{}", report.end);
    assert_eq!(report.origin, "synthetic");
    assert_eq!(report.count(Severity::Violation), 0, "{:#?}", report.groups);
    // Race-free by construction: not even a near miss or an info.
    assert!(report.groups.is_empty(), "{:#?}", report.groups);
    assert_eq!(report.by_severity.total(), 0);
    assert_eq!(stats.events, EVENTS);
    assert_eq!(report.events, EVENTS);
    let tracked = stats.tracked.unwrap();
    assert_eq!(tracked.limit, LIMIT);
    assert!(tracked.peak <= LIMIT, "peak {} > {LIMIT}", tracked.peak);
    // The bound was actually reached, so the assertion above means something.
    assert!(report.evictions > 0);
    assert!(tracked.peak > LIMIT / 2, "peak {}", tracked.peak);

    // Unbounded, the same file needs far more than LIMIT objects.
    let (report, stats) =
        analyze_file_with_stats(&path, ConfigChoice::FromTrace(Overrides::default()), false)
            .unwrap();
    assert!(report.groups.is_empty());
    assert_eq!(report.config, Config::default());
    assert_eq!(report.evictions, 0);
    assert!(stats.tracked.unwrap().peak as u64 >= 2 * OBJECTS);
}

fn detector(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_detector"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_simulate_synthetic_then_replay_stats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cli.trace");
    let file = path.to_str().unwrap();
    let o = detector(&[
        "simulate",
        "--synthetic",
        &EVENTS.to_string(),
        "--objects",
        &OBJECTS.to_string(),
        "-o",
        file,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let limit = LIMIT.to_string();
    let o = detector(&["replay", file, "--stats", "--max-tracked", &limit]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    // Exit 0: no violation (the default --fail-on).
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("origin synthetic"), "{stdout}");
    let line = stderr
        .lines()
        .find(|l| l.contains("replayed"))
        .unwrap_or_else(|| panic!("no stats line in {stderr:?}"));
    assert!(
        line.contains(&format!("replayed {EVENTS} events in ")),
        "{line}"
    );
    assert!(line.contains(" events/s; peak RSS "), "{line}");
    let limit_note = format!(" (limit {LIMIT})");
    let peak: usize = line
        .split("tracked objects peak ")
        .nth(1)
        .and_then(|s| s.split(&limit_note).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the tracked peak in {line:?}"));
    assert!(line.contains(&limit_note), "{line}");
    assert!(line.contains("; cpu "), "{line}");
    assert!(peak <= LIMIT, "{line}");

    // Without --stats the line is absent.
    let o = detector(&["replay", file, "--max-tracked", &limit]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("replayed"));
}

#[test]
fn cli_simulate_needs_exactly_one_source() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.trace");
    let out = out.to_str().unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/000_aba_lost_events.scn"
    );
    for args in [
        vec!["simulate", "-o", out],
        vec!["simulate", script, "--synthetic", "10", "-o", out],
        vec!["simulate", script, "--objects", "10", "-o", out],
        vec!["simulate", "--synthetic", "10", "--objects", "0", "-o", out],
    ] {
        let o = detector(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!o.stderr.is_empty(), "{args:?}");
    }
    assert!(detector(&["simulate", script, "-o", out]).status.success());
    assert!(detector(&["simulate", "--synthetic", "10", "-o", out])
        .status
        .success());
}
