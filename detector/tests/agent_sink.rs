//! The agent's sink on a recorded stream, without a kernel: every finding
//! `replay` reports is one `finding` line with the same content, every
//! growth of a lost total one `lost` line, the heartbeat and the final
//! `stats` line count what happened, a SIGHUP mid-stream moves the lines
//! to a new file, and the metrics count what the lines say.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use detector::agent::jsonl::{JsonlOutput, SCHEMA};
use detector::agent::metrics::Format;
use detector::agent::sink::AgentSink;
use detector::agent::AgentMetrics;
use detector::analyzer::{Config, Finding, RuleId, Severity};
use detector::plan::{AttachMode, PlanEntry};
use detector::sinks::analyze_file;
use detector::stream::{AnalyzerSetup, FileSource, Pipeline, Source, Speed};
use detector::synth::Synth;
use detector::trace::{TraceEnd, TraceHeader, TraceWriter};
use detector_common::ProbeId;
use serde_json::Value;

/// A storm of `swapin_without_cache_pin` violations with two losses of
/// `swap_read` events in it, every probe planned as attached.
fn write_trace(path: &Path) -> u64 {
    let mut header = TraceHeader::new("agent test");
    header.kernel_release = "6.12.0-test".into();
    header.boot_id = "0c1d-boot".into();
    header.plan = ProbeId::ALL
        .iter()
        .map(|p| PlanEntry {
            probe: p.name().into(),
            target: format!("fn_{}", p.name()),
            mode: AttachMode::Fentry,
            entry: true,
            exit: true,
            note: String::new(),
            filter: String::new(),
        })
        .collect();
    header.analyzer_config = Some(Config::default());
    let mut w = TraceWriter::create(path, &header).unwrap();
    let mut events = 0;
    for (i, ev) in Synth::storm(64).take(20_000).enumerate() {
        w.write_event(&ev).unwrap();
        events += 1;
        if i == 5_000 {
            w.write_lost(ev.ts_ns, ProbeId::SwapRead as u16, 7).unwrap();
        }
        if i == 9_000 {
            w.write_lost(ev.ts_ns, ProbeId::SwapRead as u16, 10)
                .unwrap();
        }
    }
    w.finish(TraceEnd::at(0, "done")).unwrap();
    events
}

fn read_lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The value of the sample `series` (name and labels, as printed).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn findings_lost_and_stats_lines_match_the_replay_and_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("storm.trace");
    let events = write_trace(&trace);
    let out = dir.path().join("findings.jsonl");
    let rotated = dir.path().join("findings.jsonl.1");

    let mut source = FileSource::open(&trace, Speed::Max).unwrap();
    let header = source.header().clone();
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
    // logrotate at the fourth pull: the file is moved away, then SIGHUP.
    let pulls = AtomicU32::new(0);
    let (out2, rotated2) = (out.clone(), rotated.clone());
    let reopen = Box::new(move || {
        if pulls.fetch_add(1, Ordering::Relaxed) == 3 {
            std::fs::rename(&out2, &rotated2).unwrap();
            true
        } else {
            false
        }
    });
    let mut sink = AgentSink::new(
        metrics.clone(),
        jsonl,
        Duration::from_nanos(1),
        reopen,
        None,
    );
    let setup = AnalyzerSetup::given(Config::default());
    Pipeline::new(&mut source)
        .analyze(&setup)
        .run(&mut sink)
        .unwrap();

    let replay = analyze_file(&trace, Config::default()).unwrap();
    let expected: Vec<Finding> = replay.findings.unwrap();
    assert!(expected.len() > 1000, "the storm made {}", expected.len());

    let first = read_lines(&rotated);
    let second = read_lines(&out);
    assert!(
        !first.is_empty() && !second.is_empty(),
        "SIGHUP split the lines"
    );
    let all: Vec<&Value> = first.iter().chain(&second).collect();
    for l in &all {
        assert_eq!(l["schema"], SCHEMA);
        assert_eq!(l["boot_id"], "0c1d-boot");
        assert_eq!(l["kernel_release"], "6.12.0-test");
    }
    let of = |t: &'static str| all.iter().filter(move |l| l["type"] == t).copied();

    // Findings: the replay's, in order, field for field.
    let found: Vec<Finding> = of("finding")
        .map(|l| serde_json::from_value((*l).clone()).unwrap())
        .collect();
    assert_eq!(found, expected);

    // Lost: one line per growth of the total.
    let lost: Vec<(u64, u64)> = of("lost")
        .map(|l| (l["total"].as_u64().unwrap(), l["new"].as_u64().unwrap()))
        .collect();
    assert_eq!(lost, [(7, 7), (10, 3)]);
    assert!(of("lost").all(|l| l["probe"] == "swap_read"));

    // Heartbeats (every pull, at this interval), then the final line.
    let stats: Vec<&Value> = of("stats").collect();
    assert!(stats.len() > 2, "{} stats lines", stats.len());
    let last = stats.last().unwrap();
    assert_eq!(last["final"], true);
    assert!(stats[..stats.len() - 1].iter().all(|s| s["final"] == false));
    assert_eq!(last["events"], events);
    assert_eq!(last["lost"], 10);
    assert_eq!(last["findings_total"], expected.len());
    assert_eq!(last["findings"]["violation"], expected.len());
    let swap_read = last["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["probe"] == "swap_read")
        .unwrap();
    assert_eq!(swap_read["lost"], 10);
    assert!(last["rss_bytes"].as_u64().unwrap() > 0);

    // The metrics say what the lines say.
    let text = metrics.render(Format::OpenMetrics);
    let series =
        "detector_findings_total{rule=\"swapin_without_cache_pin\",severity=\"violation\"}";
    assert_eq!(sample(&text, series) as usize, expected.len());
    assert_eq!(
        metrics.findings_of(RuleId::SwapinWithoutCachePin, Severity::Violation) as usize,
        expected.len()
    );
    assert_eq!(
        sample(
            &text,
            "detector_probe_lost_events_total{probe=\"swap_read\",mode=\"fentry\",target=\"fn_swap_read\"}"
        ),
        10.0
    );
    assert_eq!(sample(&text, "detector_events_total"), events as f64);
    assert_eq!(
        sample(&text, "detector_jsonl_lines_total{type=\"finding\"}") as usize,
        expected.len()
    );
    assert_eq!(
        sample(&text, "detector_reopens_total{output=\"findings\"}"),
        1.0
    );
    assert_eq!(sample(&text, "detector_findings_write_errors_total"), 0.0);
    // A stream item count the sink never saw one by one: every event and
    // the two lost records went through the analyzer.
    assert_eq!(
        sample(&text, "detector_stream_items_total"),
        (events + 2) as f64
    );
}
