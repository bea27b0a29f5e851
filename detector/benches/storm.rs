//! A finding storm through the live UI's path: the synthetic mix with and
//! without the swap-in pin (`Synth::storm`: one `swapin_without_cache_pin`
//! violation per 9 events, all of one group) is replayed at max speed
//! through the real worker (analyzer, grouping, model) while the UI thread
//! draws the findings view at its 20 frames per second.
//!
//! Reports, for each stream: items/s, findings, groups and rows the model
//! keeps, and the process's resident memory sampled every 100 ms, so a
//! storm that grew memory would show as a climbing RSS. Nothing is
//! asserted: timings are measured, never tested.
//!
//! `cargo bench -p detector --bench storm [-- EVENTS] [storm|calm]`
//! (default 9 600 000 events: about a million findings in the storm run;
//! each run writes a trace file of ~1.5 GB to a temporary directory). With
//! `storm` or `calm` only that stream runs, so its RSS is the process's own.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use detector::analyzer::Config;
use detector::cli::simulate::write_synthetic_stream;
use detector::stream::AnalyzerSetup;
use detector::stream::{FileSource, Source, Speed};
use detector::synth::DEFAULT_OBJECTS;
use detector::tui::app::UiState;
use detector::tui::draw_frame;
use detector::tui::model::{Model, SourceState};
use detector::tui::worker::{lock, Worker};
use detector::tui::FRAME;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn cpu() -> Duration {
    detector::usage::self_usage().map_or(Duration::ZERO, |u| u.user + u.sys)
}

/// Resident set size of this process now, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Run {
    items: u64,
    wall: Duration,
    /// CPU time (user + system) of the whole process during the run: the
    /// worker's, plus the UI thread's frames and the RSS sampler.
    cpu: Duration,
    findings: u64,
    groups: usize,
    rows: usize,
    /// RSS samples (KiB), every 100 ms.
    rss: Vec<u64>,
}

fn run(path: &std::path::Path) -> Run {
    let source = FileSource::open(path, Speed::Max).unwrap();
    let model = Arc::new(Mutex::new(Model::new(source.info())));
    let worker = Worker {
        source: Box::new(source),
        setup: Some(AnalyzerSetup::given(Config::default())),
        recorder: None,
        model: Arc::clone(&model),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut v = Vec::new();
            while !done.load(Ordering::Relaxed) {
                v.push(rss_kib());
                std::thread::sleep(Duration::from_millis(100));
            }
            v
        })
    };
    let mut term = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let mut ui = UiState::default();
    {
        let m = lock(&model);
        ui.handle_key(KeyEvent::new(KeyCode::Char('2'), KeyModifiers::NONE), &m);
    }
    let cpu0 = cpu();
    let start = Instant::now();
    let handle = worker.spawn().unwrap();
    loop {
        let finished = !matches!(lock(&model).state, SourceState::Running);
        draw_frame(&mut term, &ui, &model).unwrap();
        if finished {
            break;
        }
        std::thread::sleep(FRAME);
    }
    let wall = start.elapsed();
    let report = handle.join().unwrap();
    let cpu = cpu().saturating_sub(cpu0);
    done.store(true, Ordering::Relaxed);
    let rss = sampler.join().unwrap();
    let m = lock(&model);
    Run {
        items: report.items,
        wall,
        cpu,
        findings: m.findings.total(),
        groups: m.findings.len(),
        rows: m.findings.groups().iter().map(|g| g.examples.len()).sum(),
        rss,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(9_600_000);
    let only = |what: &str| args.iter().any(|a| a == what);
    let runs: Vec<(&str, bool)> = [("without storm", false), ("with storm", true)]
        .into_iter()
        .filter(|(_, storm)| {
            (!only("storm") && !only("calm")) || only(if *storm { "storm" } else { "calm" })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for (name, storm) in runs {
        let path = dir.path().join(format!("{storm}.dtr"));
        write_synthetic_stream(&path, n, DEFAULT_OBJECTS, storm).unwrap();
        let r = run(&path);
        std::fs::remove_file(&path).unwrap();
        let half = &r.rss[r.rss.len() / 2..];
        println!(
            "storm bench, {name}: {} items in {:.2} s = {:.2}M items/s (cpu {:.2} s = {:.2}M \
             items per cpu-s); {} findings in {} group(s), {} rows kept; RSS KiB first {} / \
             second-half min {} max {} / last {} ({} samples)",
            r.items,
            r.wall.as_secs_f64(),
            r.items as f64 / r.wall.as_secs_f64() / 1e6,
            r.cpu.as_secs_f64(),
            r.items as f64 / r.cpu.as_secs_f64().max(1e-9) / 1e6,
            r.findings,
            r.groups,
            r.rows,
            r.rss.first().copied().unwrap_or(0),
            half.iter().min().copied().unwrap_or(0),
            half.iter().max().copied().unwrap_or(0),
            r.rss.last().copied().unwrap_or(0),
            r.rss.len()
        );
    }
}
