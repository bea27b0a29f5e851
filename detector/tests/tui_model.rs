//! Sources, the plain finding stream and the UI's worker: every item
//! reaches the model in order, whatever the pacing or batching.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

mod tui_support;

use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use detector::analyzer::Config;
use detector::bpfstats::{CostUpdate, ProbeCost, ProgCost, ProgKind, RunStats};
use detector::event::StreamItem;
use detector::sinks::{FindingPrinter, Style};
use detector::stream::{
    AnalyzerSetup, CaptureMsg, ChannelSource, CostSlot, FileSource, Pipeline, Pull, Source,
    SourceError, SourceInfo, Speed, BATCH,
};
use detector::tui::model::Model;
use detector::tui::worker::{lock, Worker};
use detector_common::ProbeId;

fn drain(src: &mut dyn Source) -> (Vec<(u64, StreamItem)>, String) {
    let mut all = Vec::new();
    loop {
        let mut buf = Vec::new();
        match src.pull_into(&mut buf, Duration::from_millis(20)).unwrap() {
            Pull::Items => {
                assert!(buf.len() <= BATCH);
                all.extend(buf);
            }
            Pull::Idle => {}
            Pull::End(how) => return (all, how),
        }
    }
}

#[test]
fn speed_parsing() {
    assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
    assert_eq!("0".parse::<Speed>(), Ok(Speed::Max));
    assert_eq!("2.5".parse::<Speed>(), Ok(Speed::Factor(2.5)));
    assert!("-1".parse::<Speed>().is_err());
    assert!("fast".parse::<Speed>().is_err());
}

#[test]
fn paced_replay_delivers_every_item_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.dtr");
    let items = tui_support::stream(5000);
    tui_support::write_trace(&path, &items);
    // 3 s of trace at x1000: a few milliseconds of pacing.
    let mut src = FileSource::open(&path, Speed::Factor(1000.0)).unwrap();
    let (got, how) = drain(&mut src);
    assert_eq!(
        how,
        format!("end of trace, {} records, complete", items.len())
    );
    assert_eq!(got.len(), items.len());
    for (i, (index, item)) in got.iter().enumerate() {
        assert_eq!(*index, i as u64);
        assert_eq!(item, &items[i]);
    }
}

#[test]
fn truncated_trace_says_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.dtr");
    // Written in blocks of ten items (a live recording flushes about once a
    // second), so that half the file holds about half of them.
    tui_support::write_trace_flushed(&path, &tui_support::stream(100), 10);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    let mut src = FileSource::open(&path, Speed::Max).unwrap();
    let (got, how) = drain(&mut src);
    assert!(how.starts_with("trace cut off at byte"), "{how}");
    // Whole blocks of the 107 items, some but not all.
    assert!(got.len() < 107 && got.len() >= 10, "{}", got.len());
    assert_eq!(got.len() % 10, 0, "{}", got.len());
}

#[test]
fn channel_source_splits_large_batches_and_ends_when_capture_stops() {
    let (tx, rx) = mpsc::sync_channel(4);
    let stop = Arc::new(AtomicBool::new(false));
    let mut src = ChannelSource::new(rx, SourceInfo::default(), Arc::clone(&stop));
    let items = tui_support::stream(BATCH as u64 * 2 + 10);
    let n = items.len();
    tx.send(Ok(items.clone())).unwrap();
    drop(tx);
    let (got, how) = drain(&mut src);
    assert_eq!(how, "capture stopped");
    assert_eq!(got.len(), n);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, (idx, it))| *idx == i as u64 && *it == items[i]));
    drop(src);
    assert!(
        stop.load(std::sync::atomic::Ordering::Relaxed),
        "dropping the source stops the capture"
    );
}

#[test]
fn channel_source_reports_a_capture_failure() {
    let (tx, rx) = mpsc::sync_channel(1);
    let mut src = ChannelSource::new(rx, SourceInfo::default(), Arc::new(AtomicBool::new(false)));
    let failed: CaptureMsg = Err(SourceError::Capture(
        detector::stream::capture::CaptureError::Poll(std::io::Error::other(
            "ring buffer poll failed",
        )),
    ));
    tx.send(failed).unwrap();
    let mut buf = Vec::new();
    let e = src
        .pull_into(&mut buf, Duration::from_millis(10))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the live capture stopped: waiting on the ring buffer failed: ring buffer poll failed"
    );
}

#[test]
fn plain_stream_lines_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.dtr");
    tui_support::write_trace(&path, &tui_support::stream(200));
    let mut src = FileSource::open(&path, Speed::Max).unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut printer = FindingPrinter::new(&mut out, &mut err, Style::Line);
    Pipeline::new(&mut src)
        .analyze(&AnalyzerSetup::given(Config::default()))
        .run(&mut printer)
        .unwrap();
    let sum = printer.into_summary();
    assert_eq!(sum.findings, 1);
    assert_eq!(sum.lost, 17);
    assert_eq!(sum.items, 207);
    let out = String::from_utf8(out).unwrap();
    // Stream time of the finding: the ABA sits in the middle of 3 s.
    assert!(out.starts_with("1.5"), "{out}");
    assert!(
        out.contains(" #1 violation swap_entry_aba [entry 0:0x1a2b, folio 0xffffea0000042000"),
        "{out}"
    );
    let err = String::from_utf8(err).unwrap();
    assert!(
        err.contains("207 items, 1 findings, 17 events lost; end of trace"),
        "{err}"
    );
}

fn tracepoint_cost(probe: ProbeId, run_cnt: u64, run_time_ns: u64) -> ProbeCost {
    ProbeCost {
        probe,
        mode: detector::plan::AttachMode::Tracepoint,
        entry: Some(ProgCost {
            kind: ProgKind::Tracepoint,
            stats: RunStats {
                run_cnt,
                run_time_ns,
            },
        }),
        exit: None,
    }
}

#[test]
fn cost_slot_keeps_only_the_newest_unread_reading() {
    let slot = CostSlot::default();
    let mut out = CostUpdate::default();
    assert!(!slot.take(&mut out), "nothing published yet");
    let first = CostUpdate {
        unavailable: Some("first".into()),
        ..CostUpdate::default()
    };
    let second = CostUpdate {
        total: vec![tracepoint_cost(ProbeId::TpPageFree, 4, 2000)],
        recent: vec![tracepoint_cost(ProbeId::TpPageFree, 2, 600)],
        unavailable: None,
    };
    slot.publish(&first);
    slot.publish(&second);
    assert!(slot.take(&mut out));
    assert_eq!(out, second);
    assert!(!slot.take(&mut out), "a reading is taken once");
}

#[test]
fn live_costs_reach_the_model_through_the_worker() {
    let (tx, rx) = mpsc::sync_channel(4);
    let slot = Arc::new(CostSlot::default());
    let src = ChannelSource::new(rx, SourceInfo::default(), Arc::new(AtomicBool::new(false)))
        .with_costs(Arc::clone(&slot));
    slot.publish(&CostUpdate {
        total: vec![tracepoint_cost(ProbeId::TpPageFree, 1000, 500_000)],
        recent: vec![tracepoint_cost(ProbeId::TpPageFree, 10, 3_000)],
        unavailable: None,
    });
    tx.send(Ok(tui_support::stream(50))).unwrap();
    drop(tx);
    let model = Arc::new(std::sync::Mutex::new(Model::new(SourceInfo::default())));
    Worker {
        source: Box::new(src),
        setup: Some(AnalyzerSetup::given(Config::default())),
        recorder: None,
        model: Arc::clone(&model),
        stop: Arc::new(AtomicBool::new(false)),
    }
    .run();
    let m = lock(&model);
    assert_eq!(
        m.probes[ProbeId::TpPageFree as usize].ns_per_event,
        Some(300.0)
    );
    assert_eq!(
        m.probes[ProbeId::SwapCacheLookup as usize].ns_per_event,
        None
    );
}

#[test]
fn replays_have_no_costs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.dtr");
    tui_support::write_trace(&path, &tui_support::stream(10));
    let mut src = FileSource::open(&path, Speed::Max).unwrap();
    assert!(!src.take_costs(&mut CostUpdate::default()));
}
