//! The agent's sink with the flight recorder on a real capture (6.12
//! guest, `madvfree-dio`, stock kernel: near misses), without a kernel:
//! each snapshot the recorder closes is one `snapshot` line naming a trace
//! and a manifest on disk, the trace replays to its trigger (same rule,
//! severity and objects), the trigger is one of the `finding` lines, and
//! the metrics count what the lines say. A stop in the middle of an
//! after-window (SIGTERM) still leaves that snapshot on disk.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use detector::agent::jsonl::JsonlOutput;
use detector::agent::metrics::Format;
use detector::agent::sink::AgentSink;
use detector::agent::AgentMetrics;
use detector::analyzer::{Finding, RuleId, Severity};
use detector::flight::{FlightPolicy, FlightRecorder, Manifest, SnapshotOn, SnapshotState};
use detector::sinks::analyze_file_with_stats;
use detector::stream::{ConfigChoice, FileSource, Overrides, Pipeline, Source, Speed};
use serde_json::Value;

fn real_slice() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/real-madvfree-3400.dtr")
}

fn read_lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// The agent's sink with a near-miss recorder over `trace`, into `dir`;
/// `stop_after_first` stops the stream at the first pull after a finding
/// (as SIGTERM would). Returns the lines and the metrics.
fn run_agent(trace: &Path, dir: &Path, stop_after_first: bool) -> (Vec<Value>, Arc<AgentMetrics>) {
    let out = dir.join("findings.jsonl");
    let snaps = dir.join("snapshots");
    let mut source = FileSource::open(trace, Speed::Max).unwrap();
    let header = source.header().clone();
    let setup = ConfigChoice::FromTrace(Overrides::default()).setup(&source);
    // The header handed to the recorder carries the analyzer config, as
    // the agent's does.
    let mut given = header.clone();
    given.analyzer_config = Some(setup.config.clone());
    let metrics = Arc::new(AgentMetrics::new(
        &header.kernel_release,
        &header.plan,
        RuleId::ALL,
        false,
    ));
    let jsonl = JsonlOutput::file(
        &out,
        &header.boot_id,
        &header.kernel_release,
        metrics.clone(),
    )
    .unwrap();
    let policy = FlightPolicy {
        keep: Duration::from_secs(30),
        after: Duration::from_secs(5),
        on: SnapshotOn::NearMiss,
        dir: snaps,
        ..FlightPolicy::default()
    };
    let mut sink = AgentSink::new(
        metrics.clone(),
        jsonl,
        Duration::from_secs(3600),
        Box::new(|| false),
        None,
    )
    .with_flight(FlightRecorder::new(&given, policy).unwrap());
    let m = metrics.clone();
    let stop = move || {
        let any = RuleId::ALL.iter().any(|r| {
            m.findings_of(*r, Severity::NearMiss) + m.findings_of(*r, Severity::Violation) > 0
        });
        (stop_after_first && any).then(|| "terminated (SIGTERM)".to_string())
    };
    Pipeline::new(&mut source)
        .analyze(&setup)
        .stop_when(stop)
        .run(&mut sink)
        .unwrap();
    drop(sink);
    (read_lines(&out), metrics)
}

/// Rule, severity and objects: what makes a finding "the same".
fn key(f: &Finding) -> (RuleId, Severity, String) {
    (
        f.rule,
        f.severity,
        serde_json::to_string(&f.objects).unwrap(),
    )
}

/// Checks each `snapshot` line against its files and its replay; returns
/// the manifests.
fn check_snapshots(lines: &[Value]) -> Vec<Manifest> {
    let findings: Vec<Finding> = lines
        .iter()
        .filter(|l| l["type"] == "finding")
        .map(|l| serde_json::from_value(l.clone()).unwrap())
        .collect();
    let mut out = Vec::new();
    for l in lines.iter().filter(|l| l["type"] == "snapshot") {
        let path = PathBuf::from(l["path"].as_str().unwrap());
        let manifest = PathBuf::from(l["manifest"].as_str().unwrap());
        assert!(path.is_file(), "{l}");
        let m: Manifest = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), m.trace);
        assert_eq!(l["finding_id"], m.trigger.id);
        assert_eq!(l["rule"], m.trigger.rule.name());
        assert_eq!(
            l["severity"],
            serde_json::to_value(m.trigger.severity).unwrap()
        );
        assert_eq!(l["trace_bytes"], std::fs::metadata(&path).unwrap().len());
        // The trigger is one of the finding lines, field for field.
        assert!(findings.contains(&m.trigger), "{l}");
        // The snapshot replays (with the configuration its header holds)
        // to its trigger.
        let (report, _) =
            analyze_file_with_stats(&path, ConfigChoice::FromTrace(Overrides::default()), true)
                .unwrap();
        let replayed = report.findings.unwrap();
        assert!(
            replayed.iter().any(|f| key(f) == key(&m.trigger)),
            "{} does not replay to its trigger #{}",
            path.display(),
            m.trigger.id
        );
        out.push(m);
    }
    out
}

#[test]
fn snapshots_are_written_announced_replayable_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, metrics) = run_agent(&real_slice(), dir.path(), false);
    let manifests = check_snapshots(&lines);
    assert!(!manifests.is_empty(), "no snapshot line");
    assert!(manifests
        .iter()
        .all(|m| m.analyzer_config.is_some() && m.trigger.severity >= Severity::NearMiss));

    // The snapshot lines come before the final stats line.
    let last = lines.last().unwrap();
    assert_eq!(
        (&last["type"], &last["final"]),
        (&"stats".into(), &true.into())
    );

    let text = metrics.render(Format::OpenMetrics);
    let n = manifests.len() as f64;
    assert_eq!(sample(&text, "detector_snapshots_written_total"), n);
    assert_eq!(
        sample(&text, "detector_jsonl_lines_total{type=\"snapshot\"}"),
        n
    );
    assert_eq!(sample(&text, "detector_snapshots_on_disk"), n);
    assert_eq!(sample(&text, "detector_snapshot_write_errors_total"), 0.0);
    assert!(sample(&text, "detector_flight_buffered_bytes") > 0.0);
    assert!(sample(&text, "detector_flight_buffered_span_seconds") > 0.0);
    for reason in ["budget", "rate", "busy"] {
        sample(
            &text,
            &format!("detector_snapshots_suppressed_total{{reason=\"{reason}\"}}"),
        );
    }
    // Every near miss of the stream started a snapshot, or was merged into
    // one, or lay inside one's window (covered).
    let near = lines
        .iter()
        .filter(|l| l["type"] == "finding" && l["severity"] != "info")
        .count() as f64;
    let merged = sample(&text, "detector_snapshots_merged_total");
    let covered: f64 = manifests
        .iter()
        .map(|m| (m.covered.len() + m.covered_more as usize) as f64)
        .sum();
    assert_eq!(n + merged + covered, near);
}

#[test]
fn a_stop_inside_the_after_window_still_writes_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = run_agent(&real_slice(), dir.path(), true);
    let manifests = check_snapshots(&lines);
    assert_eq!(manifests.len(), 1, "{lines:?}");
    assert_eq!(manifests[0].state, SnapshotState::StreamEnded);
}

#[test]
fn without_snapshots_no_flight_series_appear() {
    let metrics = AgentMetrics::new("6.12", &[], RuleId::ALL, false);
    let text = Arc::new(metrics).render(Format::OpenMetrics);
    assert!(!text.contains("detector_snapshots"), "{text}");
    assert!(!text.contains("detector_flight"), "{text}");
}
