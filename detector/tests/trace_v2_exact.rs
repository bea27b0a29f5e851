//! Format v2 changes nothing a reader sees: the same stream written as v1
//! and as v2 reads back to the same items, and replays to byte-identical
//! `replay --format json` reports and `--format jsonl` / `--format text` /
//! Perfetto exports. Over every scenario, the real-capture fixtures, the
//! synthetic mix, and random streams.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::path::{Path, PathBuf};

use detector::cli::simulate::{load, write_synthetic_as, write_trace_as};
use detector::event::StreamItem;
use detector::sinks::{analyze_file_with_stats, EventFormat, EventWriter};
use detector::stream::{ConfigChoice, FileSource, Overrides, Pipeline, Source, Speed};
use detector::trace::{
    read_all, EndState, TraceEnd, TraceFormat, TraceHeader, TraceReader, TraceWriter,
};
use detector_common::Event;
use proptest::prelude::*;

/// `replay --format json` of `path`, without the two fields that are not
/// about the stream: the file's name, and the analyzer's estimate of its
/// own memory (hash-table capacities, which vary between runs of one
/// binary on one file).
fn report_json(path: &Path) -> String {
    let (report, _) =
        analyze_file_with_stats(path, ConfigChoice::FromTrace(Overrides::default()), false)
            .unwrap();
    let mut v = serde_json::to_value(&report).unwrap();
    let obj = v.as_object_mut().unwrap();
    assert!(obj.remove("source").is_some());
    assert!(obj.remove("state_bytes").is_some());
    serde_json::to_string_pretty(&v).unwrap()
}

/// What `replay --format jsonl|text` and `export --format perfetto` print.
fn export(path: &Path, format: fn(u64) -> EventFormat) -> Vec<u8> {
    let mut source = FileSource::open(path, Speed::Max).unwrap();
    let mut out = Vec::new();
    let fmt = format(source.header().start_monotonic_ns);
    let header = source.header().clone();
    let mut sink = EventWriter::new(&mut out, fmt, &header).unwrap();
    Pipeline::new(&mut source).run(&mut sink).unwrap();
    drop(sink);
    out
}

const EXPORTS: [fn(u64) -> EventFormat; 3] = [
    |_| EventFormat::Jsonl,
    |base_ns| EventFormat::Text { base_ns },
    |_| EventFormat::Perfetto,
];

/// Asserts that two files of one stream read and replay the same.
fn same_everywhere(v1: &Path, v2: &Path) {
    let (h1, items1, end1) = read_all(v1).unwrap();
    let (h2, items2, end2) = read_all(v2).unwrap();
    assert_eq!((h1.format_version, h2.format_version), (1, 2));
    assert_eq!(items1, items2, "{}", v2.display());
    assert_eq!(end1, end2, "{}", v2.display());
    assert_eq!(report_json(v1), report_json(v2), "{}", v2.display());
    for f in EXPORTS {
        assert!(export(v1, f) == export(v2, f), "{}", v2.display());
    }
}

/// `items` written under `header` in `format`.
fn write(path: &Path, header: &TraceHeader, items: &[StreamItem], format: TraceFormat) {
    let mut w = TraceWriter::create_format(path, header, format).unwrap();
    for it in items {
        w.write_item(it).unwrap();
    }
    let end = items.last().map_or(0, StreamItem::ts_ns);
    w.finish(TraceEnd::at(end, "end of test")).unwrap();
}

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "scn"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_scenario_replays_the_same_from_v1_and_v2() {
    let dir = tempfile::tempdir().unwrap();
    let files = scenario_files();
    assert!(files.len() >= 40);
    for f in files {
        let sc = load(&f).unwrap();
        let (a, b) = (dir.path().join("a.dtr"), dir.path().join("b.dtr"));
        write_trace_as(&sc, &f, &a, TraceFormat::V1).unwrap();
        write_trace_as(&sc, &f, &b, TraceFormat::V2).unwrap();
        same_everywhere(&a, &b);
    }
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// The fixtures cut out of real 6.12 captures, converted to the other
/// format by the writer, as `export --format trace --trace-format` does.
#[test]
fn real_captures_replay_the_same_from_v1_and_v2() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "real-madvfree-3400.dtr",
        "real-uffd-106700.dtr",
        "real-madvfree-0-20000.v2.dtr",
        "real-uffd-100000-120000.v2.dtr",
    ] {
        let src = testdata(name);
        let (header, items, end) = read_all(&src).unwrap();
        assert!(end.is_complete(), "{name}: {end}");
        let footer = end.footer().unwrap();
        let (a, b) = (dir.path().join("a.dtr"), dir.path().join("b.dtr"));
        for (path, format) in [(&a, TraceFormat::V1), (&b, TraceFormat::V2)] {
            let mut w = TraceWriter::create_format(path, &header, format).unwrap();
            for it in &items {
                w.write_item(it).unwrap();
            }
            w.finish(TraceEnd {
                end_monotonic_ns: footer.end_monotonic_ns,
                end_realtime_ns: Some(footer.end_realtime_ns),
                stop_reason: footer.stop_reason.clone(),
            })
            .unwrap();
        }
        same_everywhere(&a, &b);
        // The fixture itself is one of the two, bit for bit in its items.
        assert_eq!(read_all(&src).unwrap().1, read_all(&a).unwrap().1);
    }
}

#[test]
fn the_synthetic_mix_replays_the_same_from_v1_and_v2() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.dtr"), dir.path().join("b.dtr"));
    for storm in [false, true] {
        write_synthetic_as(&a, 60_000, 5_000, storm, TraceFormat::V1).unwrap();
        write_synthetic_as(&b, 60_000, 5_000, storm, TraceFormat::V2).unwrap();
        let (h1, items1, _) = read_all(&a).unwrap();
        let (h2, items2, _) = read_all(&b).unwrap();
        assert_eq!(items1, items2);
        assert_eq!(
            report_json(&a),
            report_json(&b),
            "storm {storm} (command lines: {:?} / {:?})",
            h1.command_line,
            h2.command_line
        );
    }
}

fn arb_event() -> impl Strategy<Value = Event> {
    // Values drawn from small pools as well as from anywhere, so that
    // repeats (what v2 codes as "no change") and wild values both occur.
    let word = prop_oneof![
        0u64..4,
        any::<u64>(),
        (0u64..64).prop_map(|i| 0xffff_ea00_0000_0000 + i * 64)
    ];
    let half = prop_oneof![0u32..3, any::<u32>()];
    (
        (
            any::<u64>(),
            word.clone(),
            word.clone(),
            word.clone(),
            word.clone(),
        ),
        (word.clone(), word.clone(), word.clone(), word.clone(), word),
        (
            half.clone(),
            half.clone(),
            half.clone(),
            half.clone(),
            half.clone(),
        ),
        (
            half.clone(),
            half.clone(),
            half.clone(),
            half.clone(),
            half.clone(),
        ),
        (half.clone(), half, 0u16..40, 0u8..4, any::<u8>()),
        (0u8..3, any::<u32>()),
    )
        .prop_map(|(a, b, c, d, e, (comm, task_start))| {
            let mut name = [0u8; 16];
            name[..comm as usize * 5].fill(b'a' + comm);
            Event {
                ts_ns: a.0,
                folio: a.1,
                entry: a.2,
                pte: a.3,
                addr: a.4,
                ret: b.0 as i64,
                f_flags: b.1,
                f_swap: b.2,
                f_mapping: b.3,
                f_index: b.4,
                pid: c.0,
                tid: c.1,
                cpu: c.2,
                nr: c.3,
                f_refcount: c.4 as i32,
                f_mapcount: d.0 as i32,
                f_large_mapcount: d.1 as i32,
                f_entire_mapcount: d.2 as i32,
                f_pincount: d.3 as i32,
                f_nr_pages: d.4,
                f_state: e.0,
                arg: e.1,
                probe: e.2,
                kind: e.3,
                valid: e.4,
                comm: name,
                task_start,
            }
        })
}

fn arb_item() -> impl Strategy<Value = StreamItem> {
    prop_oneof![
        8 => arb_event().prop_map(StreamItem::Event),
        1 => (any::<u64>(), any::<u16>(), any::<u64>())
            .prop_map(|(ts_ns, probe, total)| StreamItem::Lost { ts_ns, probe, total }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the values, and wherever blocks are cut, v2 gives back
    /// exactly what was written.
    #[test]
    fn any_stream_round_trips_exactly_through_v2(
        items in proptest::collection::vec(arb_item(), 0..400),
        flushes in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        let mut buf = Vec::new();
        let mut w = TraceWriter::new(&mut buf, &TraceHeader::new("prop")).unwrap();
        let cuts: Vec<usize> = flushes.iter().map(|f| f.index(items.len() + 1)).collect();
        for (k, it) in items.iter().enumerate() {
            if cuts.contains(&k) {
                w.flush().unwrap();
            }
            w.write_item(it).unwrap();
        }
        w.finish(TraceEnd::at(0, "prop")).unwrap();
        let mut r = TraceReader::from_reader(buf.as_slice()).unwrap();
        let back: Vec<(u64, StreamItem)> = r.by_ref().collect();
        prop_assert!(r.end_state().is_some_and(EndState::is_complete), "{:?}", r.end_state());
        prop_assert_eq!(back.len(), items.len());
        for (k, ((i, got), want)) in back.iter().zip(&items).enumerate() {
            prop_assert_eq!(*i, k as u64);
            prop_assert_eq!(got, want);
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Streams of real probe ids with repeated folios, tasks and values
    /// give the same report and the same JSON lines from either format.
    #[test]
    fn random_streams_replay_the_same_from_v1_and_v2(
        items in proptest::collection::vec(arb_item(), 1..300),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.dtr"), dir.path().join("b.dtr"));
        let header = TraceHeader::new("prop");
        write(&a, &header, &items, TraceFormat::V1);
        write(&b, &header, &items, TraceFormat::V2);
        prop_assert_eq!(report_json(&a), report_json(&b));
        prop_assert!(export(&a, EXPORTS[0]) == export(&b, EXPORTS[0]));
    }
}
