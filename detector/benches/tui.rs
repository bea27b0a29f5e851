//! Live UI under load: a large trace replayed as fast as the reader goes
//! through the real worker (analyzer + model), while the UI thread draws
//! frames into a TestBackend and types keys.
//!
//! Reports: stream throughput with the UI attached, frames per second the
//! render path sustains while the worker is saturated, the cost of one
//! frame, and input latency (a key arriving to the end of the frame that
//! shows it, including waiting for the model lock).
//!
//! `cargo bench -p detector --bench tui [-- EVENTS]`

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use detector::analyzer::Config;
use detector::event::StreamItem;
use detector::plan::{AttachMode, PlanEntry};
use detector::stream::AnalyzerSetup;
use detector::stream::{FileSource, Source, Speed};
use detector::trace::{TraceEnd, TraceHeader, TraceWriter};
use detector::tui::app::{UiState, View};
use detector::tui::draw_frame;
use detector::tui::model::{Model, SourceState};
use detector::tui::worker::{lock, Worker};
use detector_common::{
    swp_entry, Event, EventKind, ProbeId, FS_ANON, FS_LRU, FS_SWAPBACKED, FS_SWAPCACHE,
    FS_UPTODATE, V_ADDR, V_ENTRY, V_FOLIO, V_FOLIO_STATE, V_RET,
};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn ev(ts: u64, probe: ProbeId, kind: EventKind, tid: u32, s: u64, folio: u64, st: u32) -> Event {
    let mut e = Event {
        ts_ns: ts,
        probe: probe as u16,
        kind: kind as u8,
        tid,
        pid: tid,
        cpu: tid % 4,
        nr: 1,
        entry: s,
        folio,
        f_state: st,
        f_refcount: 2,
        f_mapcount: 1,
        f_swap: s,
        valid: V_ENTRY
            | if folio != 0 {
                V_FOLIO | V_FOLIO_STATE
            } else {
                0
            },
        ..Default::default()
    };
    e.comm[..6].copy_from_slice(b"memhog");
    e
}

/// Swap traffic over 64k entries at 1M events per trace second, with a
/// move_pages ABA every 50k events (a finding each).
fn write_trace(path: &std::path::Path, n: u64) {
    let mut h = TraceHeader::new("bench:tui");
    h.kernel_release = "6.12.95+deb12-cloud-amd64".into();
    h.plan = ProbeId::ALL
        .iter()
        .map(|p| PlanEntry {
            probe: p.name().into(),
            target: p.name().into(),
            mode: AttachMode::Fentry,
            entry: true,
            exit: true,
            note: String::new(),
            filter: String::new(),
        })
        .collect();
    let mut w = TraceWriter::create(path, &h).unwrap();
    let st = FS_ANON | FS_SWAPBACKED | FS_SWAPCACHE | FS_UPTODATE | FS_LRU;
    let base = 1_000_000_000_000u64;
    let mut i = 0;
    while i < n {
        let ts = base + i * 1_000;
        if i % 50_000 == 49_990 {
            let s = swp_entry(1, 0x10_0000 + i);
            let (a, b) = (
                0xffff_ea00_2000_0000 + i * 64,
                0xffff_ea00_3000_0000 + i * 64,
            );
            let mut e = ev(ts, ProbeId::MovePages, EventKind::Enter, 7, 0, 0, 0);
            e.valid = V_ADDR;
            w.write_event(&e).unwrap();
            let mut e = ev(
                ts + 1,
                ProbeId::MovePagesLookup,
                EventKind::Exit,
                7,
                s,
                a,
                st,
            );
            e.f_refcount = 3;
            e.f_mapcount = 0;
            e.addr = 0xffff_8880_0000_0000;
            e.valid |= V_ADDR;
            w.write_event(&e).unwrap();
            w.write_event(&ev(
                ts + 2,
                ProbeId::SwapEntryFree,
                EventKind::Enter,
                8,
                s,
                0,
                0,
            ))
            .unwrap();
            w.write_event(&ev(
                ts + 3,
                ProbeId::SwapEntryAlloc,
                EventKind::Exit,
                8,
                s,
                b,
                FS_ANON | FS_SWAPBACKED,
            ))
            .unwrap();
            let mut e = ev(
                ts + 4,
                ProbeId::FolioMoveAnonRmap,
                EventKind::Enter,
                7,
                0,
                a,
                FS_ANON | FS_SWAPBACKED,
            );
            e.valid &= !V_ENTRY;
            e.f_swap = 0;
            w.write_event(&e).unwrap();
            let mut e = ev(ts + 5, ProbeId::MovePages, EventKind::Exit, 7, 0, 0, 0);
            e.valid = V_RET;
            w.write_event(&e).unwrap();
            i += 6;
            continue;
        }
        let k = i % 65_536;
        let s = swp_entry(0, 0x8000 + k);
        let f = 0xffff_ea00_0100_0000 + k * 64;
        let probe = if i % 4 == 0 {
            ProbeId::SwapCacheInsert
        } else {
            ProbeId::SwapCacheLookup
        };
        w.write_event(&ev(
            ts,
            probe,
            EventKind::Exit,
            100 + (i % 8) as u32,
            s,
            f,
            st,
        ))
        .unwrap();
        if i % 200_000 == 0 {
            w.write_item(&StreamItem::Lost {
                ts_ns: ts,
                probe: ProbeId::SwapCacheLookup as u16,
                total: i / 1000,
            })
            .unwrap();
        }
        i += 1;
    }
    w.finish(TraceEnd::at(base + n * 1_000, "bench")).unwrap();
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.dtr");
    write_trace(&path, n);

    let source = FileSource::open(&path, Speed::Max).unwrap();
    let model = Arc::new(Mutex::new(Model::new(source.info())));
    let worker = Worker {
        source: Box::new(source),
        setup: Some(AnalyzerSetup::given(Config::default())),
        recorder: None,
        model: Arc::clone(&model),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let mut term = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let mut ui = UiState::default();
    let start = Instant::now();
    let handle = worker.spawn().unwrap();

    // The UI thread draws back to back (no frame cap) to find the ceiling,
    // and every 10th frame a key arrives first: its latency is measured to
    // the end of the frame that shows the new view.
    let keys = ['1', '2', '3', '4'];
    let mut frame_times = Vec::new();
    let mut latencies = Vec::new();
    let mut frames = 0u64;
    loop {
        let done = !matches!(lock(&model).state, SourceState::Running);
        if frames.is_multiple_of(10) {
            let k = keys[(frames / 10) as usize % keys.len()];
            let t0 = Instant::now();
            {
                let m = lock(&model);
                ui.handle_key(KeyEvent::new(KeyCode::Char(k), KeyModifiers::NONE), &m);
            }
            draw_frame(&mut term, &ui, &model).unwrap();
            latencies.push(t0.elapsed());
            assert_eq!(ui.view(), View::ALL[k as usize - '1' as usize]);
        } else {
            let t0 = Instant::now();
            draw_frame(&mut term, &ui, &model).unwrap();
            frame_times.push(t0.elapsed());
        }
        frames += 1;
        if done {
            break;
        }
    }
    let wall = start.elapsed();
    let report = handle.join().unwrap();
    let m = lock(&model);
    println!(
        "tui bench: {} items ({} findings) replayed at max speed with the UI attached",
        report.items,
        m.findings.total()
    );
    println!(
        "  stream throughput : {:.0} items/s ({:.2} s wall)",
        report.items as f64 / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!(
        "  frames            : {} in {:.2} s = {:.0} frames/s uncapped while the worker is saturated (the UI caps at 20)",
        frames,
        wall.as_secs_f64(),
        frames as f64 / wall.as_secs_f64()
    );
    println!(
        "  frame time        : p50 {:?}  p99 {:?}  max {:?}",
        pct(&mut frame_times, 0.5),
        pct(&mut frame_times, 0.99),
        pct(&mut frame_times, 1.0)
    );
    println!(
        "  input latency     : p50 {:?}  p99 {:?}  max {:?}  (key -> frame showing it, {} keys)",
        pct(&mut latencies, 0.5),
        pct(&mut latencies, 0.99),
        pct(&mut latencies, 1.0),
        latencies.len()
    );
    println!(
        "  objects in history: {} ({} dropped)",
        m.objects.len(),
        m.objects.dropped
    );
}
