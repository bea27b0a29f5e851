//! What the agent's metrics cost, with every series populated: every probe
//! attached with its cost counters (`--stats`), every rule and severity,
//! the four window histograms filled by a synthetic stream through the
//! analyzer.
//!
//! Reports the pipeline thread's side (copying the analyzer's counters
//! after a pull, rebinning the window histograms) and the scrape side
//! (encoding the OpenMetrics and Prometheus texts, and a whole `GET
//! /metrics` over loopback through the agent's HTTP server). Nothing is
//! asserted: timings are measured, never tested.
//!
//! `cargo bench -p detector --bench agent [-- EVENTS]` (default 2 000 000
//! synthetic events through the analyzer first).

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use detector::agent::http;
use detector::agent::metrics::{Format, WINDOW_BUCKETS_NS};
use detector::agent::AgentMetrics;
use detector::analyzer::{Analyzer, Config, RuleId, Severity, WindowKind};
use detector::bpfstats::{ProbeCost, ProgCost, ProgKind, RunStats};
use detector::event::StreamItem;
use detector::plan::{AttachMode, PlanEntry};
use detector::synth::Synth;
use detector_common::ProbeId;

fn per_call(f: &mut dyn FnMut(), n: u32) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n
}

fn main() {
    let events: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let plan: Vec<PlanEntry> = ProbeId::ALL
        .iter()
        .map(|p| PlanEntry {
            probe: p.name().into(),
            target: format!("kernel_function_{}", p.name()),
            mode: AttachMode::Fentry,
            entry: true,
            exit: true,
            note: String::new(),
            filter: String::new(),
        })
        .collect();
    let metrics = Arc::new(AgentMetrics::new(
        "6.12.57+deb12-cloud-amd64",
        &plan,
        RuleId::ALL,
        true,
    ));

    // The analyzer's state and windows from a stream.
    let mut a = Analyzer::new(Config::default());
    let mut out = Vec::new();
    let t0 = Instant::now();
    for (i, ev) in Synth::storm(4096).take(events).enumerate() {
        a.process(i as u64, &StreamItem::Event(ev), &mut out);
        out.clear();
    }
    let fed = t0.elapsed();
    // Every rule and severity counted, every probe's cost known. Every
    // window's series are written whether the mix opened it or not.
    for (i, r) in RuleId::ALL.iter().enumerate() {
        for (j, s) in [Severity::Violation, Severity::NearMiss, Severity::Info]
            .iter()
            .enumerate()
        {
            for _ in 0..(i + j) {
                metrics.finding(*r, *s);
            }
        }
    }
    let costs: Vec<ProbeCost> = ProbeId::ALL
        .iter()
        .map(|p| ProbeCost {
            probe: *p,
            mode: AttachMode::Fentry,
            entry: Some(ProgCost {
                kind: ProgKind::Fentry,
                stats: RunStats {
                    run_cnt: 1_000_000,
                    run_time_ns: 350_000_000,
                },
            }),
            exit: None,
        })
        .collect();
    metrics.publish_costs(&costs);
    metrics.set_running(true);

    let mut scratch = [0u64; WINDOW_BUCKETS_NS.len()];
    let publish = per_call(&mut || metrics.publish_analyzer(&a), 100_000);
    let windows = per_call(
        &mut || metrics.publish_windows(a.windows(), &mut scratch),
        1_000,
    );
    let filled: Vec<String> = WindowKind::ALL
        .iter()
        .map(|k| format!("{}={}", k.key(), a.windows().summary(*k).count))
        .collect();

    let mut bytes = (0, 0);
    let om = per_call(
        &mut || bytes.0 = metrics.render(Format::OpenMetrics).len(),
        2_000,
    );
    let prom = per_call(
        &mut || bytes.1 = metrics.render(Format::Prometheus).len(),
        2_000,
    );
    let series = metrics
        .render(Format::OpenMetrics)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();

    // A whole scrape over loopback, through the agent's server.
    let listener = http::bind("127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr = listener.local_addr().expect("address");
    http::spawn(listener, metrics.clone()).expect("server");
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let url = format!("http://{addr}/metrics");
    let mut lat: Vec<Duration> = (0..500)
        .map(|_| {
            let t = Instant::now();
            let body = agent
                .get(&url)
                .call()
                .expect("scrape")
                .body_mut()
                .read_to_string()
                .expect("body");
            assert!(body.ends_with("# EOF\n"));
            t.elapsed()
        })
        .collect();
    lat.sort();

    println!(
        "analyzer fed {events} synthetic events in {:.2?} ({:.0} events/s); windows {}",
        fed,
        events as f64 / fed.as_secs_f64(),
        filled.join(" ")
    );
    println!(
        "pipeline side, per pull: counters {publish:.2?}; window rebinning (once a second) \
         {windows:.2?}"
    );
    println!(
        "scrape side: {series} samples; OpenMetrics text {:.1?} ({} bytes), Prometheus text {:.1?} ({} bytes)",
        om, bytes.0, prom, bytes.1
    );
    println!(
        "GET /metrics over loopback: p50 {:.1?} p99 {:.1?} max {:.1?} (500 scrapes)",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        lat[lat.len() - 1]
    );
}
