//! Streams of race-free noise with staged incidents (scenario scripts)
//! run through the pipeline into a flight recorder; every snapshot is then
//! replayed like `detector replay` does and must give its trigger back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::analyzer::Config;
use crate::event::StreamItem;
use crate::stream::{AnalyzerSetup, ConfigChoice, FileSource, Overrides, Pipeline, Source, Speed};
use crate::synth::Synth;
use crate::trace::{TraceEnd, TraceFormat, TraceHeader, TraceWriter};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
/// Stream start (a plausible CLOCK_MONOTONIC).
const T0: u64 = 100 * S;

/// A lazyfree near miss on folio `addr`: MADV_FREE marks it, a DIO read
/// pins it, reclaim tries to discard it and the refcount check keeps it.
/// The mark comes `mark_before` ahead of the reclaim.
fn near_miss(addr: u64, tid: u32, mark_before_us: u64) -> String {
    let t = mark_before_us;
    format!(
        "name nm\n\
         task app tid={tid} pid={tid} comm=app\n\
         task reclaim tid={r} pid={r} comm=reclaim\n\
         folio L {addr:#x}\n\
         0 app lazyfree_mark enter folio=L state=anon|swapbacked|anon_exclusive|lru ref=1 map=1\n\
         {t} app gup_grab exit folio=L state=anon|anon_exclusive ref=1025 map=1 nr=1 foll_pin ret=0\n\
         {t1} reclaim try_to_unmap_one enter folio=L state=anon|anon_exclusive ref=1026 map=1\n\
         {t2} reclaim try_to_unmap_one exit folio=L state=anon|swapbacked|anon_exclusive ref=1026 map=1 ret=0\n\
         {t3} app gup_put enter folio=L state=anon|swapbacked|anon_exclusive ref=1025 map=1 nr=1 foll_pin\n\
         expect lazyfree_extra_refs near_miss folio=L\n",
        r = tid + 1,
        t1 = t + 10,
        t2 = t + 11,
        t3 = t + 20,
    )
}

/// Seed 003 for real: the discard happens with the pin outstanding.
fn violation(addr: u64, tid: u32) -> String {
    format!(
        "name v\n\
         task app tid={tid} pid={tid} comm=bad\n\
         task pager tid={r} pid={tid} comm=bad\n\
         folio L {addr:#x}\n\
         10 app madvise_free enter addr=0x7f1000000000\n\
         11 app lazyfree_mark enter folio=L state=anon|swapbacked|anon_exclusive|lru ref=1 map=1\n\
         20 app gup_grab_fast exit folio=L state=anon|anon_exclusive|lru ref=1025 map=1 nr=1 foll_pin\n\
         30 pager try_to_unmap_one enter folio=L state=anon|anon_exclusive ref=1026 map=1 addr=0x7f1000000000\n\
         31 pager try_to_unmap_one exit folio=L state=anon ref=1025 map=0 ret=1\n\
         50 app unpin_user_page enter folio=L state=anon|dirty ref=1025 map=0 nr=1\n\
         expect lazyfree_extra_refs violation folio=L\n",
        r = tid + 1,
    )
}

/// Folio addresses for incidents, apart from the noise's and each other's.
fn folio(n: u64) -> u64 {
    0xffff_ea00_0800_0000 + n * 0x40
}

/// Noise every `step` from `T0` for `span`, and each incident's items
/// moved to start at `T0 + at`, merged in time order.
fn stream(span: u64, step: u64, incidents: &[(u64, String)]) -> Vec<StreamItem> {
    let mut out: Vec<StreamItem> = Synth::new(512)
        .take((span / step) as usize)
        .enumerate()
        .map(|(k, mut e)| {
            e.ts_ns = T0 + k as u64 * step;
            StreamItem::Event(e)
        })
        .collect();
    for (at, text) in incidents {
        let sc = crate::scenario::parse(text, "incident").unwrap();
        for mut it in sc.items {
            let ts = T0 + at + (it.ts_ns() - crate::scenario::BASE_NS);
            match &mut it {
                StreamItem::Event(e) => e.ts_ns = ts,
                StreamItem::Lost { ts_ns, .. } => *ts_ns = ts,
            }
            out.push(it);
        }
    }
    out.sort_by_key(StreamItem::ts_ns);
    out
}

struct Run {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    stats: FlightStats,
    /// Findings of the live stream at or above near-miss.
    live: Vec<Finding>,
}

fn config() -> Config {
    Config::default()
}

fn write_trace(path: &Path, items: &[StreamItem]) {
    let mut h = TraceHeader::new("test stream");
    h.kernel_release = "6.12.0-test".into();
    h.boot_id = "boot-1".into();
    h.analyzer_config = Some(config());
    // Snapshot names from stream time, deterministic.
    h.start_monotonic_ns = T0;
    h.start_realtime_ns = 1_700_000_000 * S;
    let mut w = TraceWriter::create(path, &h).unwrap();
    for it in items {
        w.write_item(it).unwrap();
    }
    let end = items.last().map_or(0, StreamItem::ts_ns);
    w.finish(TraceEnd::at(end, "test")).unwrap();
}

/// The live findings the recorder saw, and the recorder.
struct Tap {
    rec: FlightRecorder,
    live: Vec<Finding>,
}

impl Sink for Tap {
    fn item(&mut self, index: u64, item: &StreamItem, found: &mut Vec<Finding>) -> io::Result<()> {
        self.live.extend(
            found
                .iter()
                .filter(|f| f.severity >= Severity::NearMiss)
                .cloned(),
        );
        Sink::item(&mut self.rec, index, item, found)
    }
    fn finish(&mut self, found: &mut Vec<Finding>, ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.live.extend(
            found
                .iter()
                .filter(|f| f.severity >= Severity::NearMiss)
                .cloned(),
        );
        Sink::finish(&mut self.rec, found, ctx)
    }
}

fn policy(dir: &Path) -> FlightPolicy {
    FlightPolicy {
        keep: Duration::from_secs(2),
        memory: 16 << 20,
        after: Duration::from_millis(500),
        after_max: Duration::from_secs(2),
        on: SnapshotOn::NearMiss,
        cooldown: Duration::from_secs(10),
        dir: dir.to_path_buf(),
        ..FlightPolicy::default()
    }
}

fn run_with(items: &[StreamItem], tweak: impl FnOnce(&mut FlightPolicy)) -> Run {
    run_in(TraceFormat::V2, items, tweak)
}

fn run_in(format: TraceFormat, items: &[StreamItem], tweak: impl FnOnce(&mut FlightPolicy)) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("live.trace");
    write_trace(&trace, items);
    let dir = tmp.path().join("snapshots");
    let mut p = policy(&dir);
    tweak(&mut p);
    let mut src = FileSource::open(&trace, Speed::Max).unwrap();
    let rec = FlightRecorder::new(src.header(), p)
        .unwrap()
        .with_format(format);
    let mut tap = Tap {
        rec,
        live: Vec::new(),
    };
    Pipeline::new(&mut src)
        .analyze(&AnalyzerSetup::given(config()))
        .run(&mut tap)
        .unwrap();
    Run {
        dir,
        stats: tap.rec.stats().clone(),
        live: tap.live,
        _tmp: tmp,
    }
}

fn run(items: &[StreamItem]) -> Run {
    run_with(items, |_| {})
}

/// The snapshots in `dir` with their manifests, oldest first.
fn snapshots(dir: &Path) -> Vec<(PathBuf, Manifest)> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v.into_iter()
        .map(|m| {
            let man: Manifest = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
            (dir.join(&man.trace), man)
        })
        .collect()
}

/// Every finding of a stream.
struct Collect(Vec<Finding>);

impl Sink for Collect {
    fn item(&mut self, _: u64, _: &StreamItem, found: &mut Vec<Finding>) -> io::Result<()> {
        self.0.append(found);
        Ok(())
    }
    fn finish(&mut self, found: &mut Vec<Finding>, _: &mut Ctx<'_>) -> io::Result<()> {
        self.0.append(found);
        Ok(())
    }
}

/// What `detector replay` finds in a snapshot: the file as a source, the
/// analyzer configured from its header (`tests/flight.rs` goes through
/// the replay command's own function).
fn replay(path: &Path) -> Vec<Finding> {
    let mut src = FileSource::open(path, Speed::Max).unwrap();
    let setup = ConfigChoice::FromTrace(Overrides::default()).setup(&src);
    assert_eq!(setup.origin, "from the trace header");
    let mut found = Collect(Vec::new());
    Pipeline::new(&mut src)
        .analyze(&setup)
        .run(&mut found)
        .unwrap();
    assert!(
        src.end_state()
            .is_some_and(crate::trace::EndState::is_complete),
        "{}: {:?}",
        path.display(),
        src.end_state()
    );
    found.0
}

/// The same finding: rule, severity, objects, cause, confidence, and the
/// evidence at the same times.
fn same(a: &Finding, b: &Finding) -> bool {
    let ts = |f: &Finding| f.evidence.iter().map(|e| e.ts_ns).collect::<Vec<_>>();
    a.rule == b.rule
        && a.severity == b.severity
        && a.objects == b.objects
        && a.cause == b.cause
        && a.confidence == b.confidence
        && ts(a) == ts(b)
}

fn assert_reproduces(path: &Path, m: &Manifest) -> Vec<Finding> {
    let found = replay(path);
    assert!(
        found.iter().any(|f| same(f, &m.trigger)),
        "{} does not reproduce its trigger {:?}; it gives {:?}",
        path.display(),
        m.trigger,
        found
            .iter()
            .map(|f| (f.rule, f.severity, &f.objects))
            .collect::<Vec<_>>()
    );
    // Evidence indexes map back through the manifest's offsets.
    let w = &m.window;
    let g = found.iter().find(|f| same(f, &m.trigger)).unwrap();
    for (live, snap) in m.trigger.evidence.iter().zip(&g.evidence) {
        if live.index >= w.first_index {
            assert_eq!(
                snap.index,
                live.index - w.first_index + w.baseline_records,
                "evidence index mapping"
            );
        }
    }
    found
}

#[test]
fn every_snapshot_replays_to_its_trigger() {
    // Three near misses and a violation, far enough apart to get one
    // snapshot each.
    let items = stream(
        30 * S,
        MS,
        &[
            (3 * S, near_miss(folio(1), 7000, 100_000)),
            (9 * S, near_miss(folio(2), 7010, 5)),
            (15 * S, violation(folio(3), 7020)),
            (22 * S, near_miss(folio(4), 7030, 1_500_000)),
        ],
    );
    let r = run(&items);
    assert_eq!(r.live.len(), 4, "{:?}", r.live);
    let snaps = snapshots(&r.dir);
    assert_eq!(snaps.len(), 4, "{:?}", r.stats);
    assert_eq!(r.stats.written, 4);
    assert_eq!(r.stats.errors, 0);
    for ((path, m), live) in snaps.iter().zip(&r.live) {
        assert_eq!(&m.trigger, live);
        assert_eq!(m.state, SnapshotState::Complete);
        assert!(m.evidence.complete, "{m:?}");
        assert_eq!(m.kernel_release, "6.12.0-test");
        assert_eq!(m.boot_id, "boot-1");
        assert_eq!(m.analyzer_config, Some(config()));
        assert_eq!(m.detector_version, env!("CARGO_PKG_VERSION"));
        // The window: `keep` before, `after` after.
        let keep_from = m.trigger_ns - 2 * S;
        assert!(
            m.window.start_ns >= keep_from && m.window.start_ns <= keep_from + MS,
            "{:?}",
            m.window
        );
        assert!(m.window.end_ns >= m.trigger_ns + 500 * MS - MS);
        assert!(m.window.end_ns <= m.trigger_ns + 500 * MS);
        assert_eq!(
            m.trace_bytes,
            std::fs::metadata(path).unwrap().len(),
            "{}",
            path.display()
        );
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("flight-"), "{name}");
        assert!(name.contains(live.rule.name()) && name.contains(live.severity.name()));
        assert_reproduces(path, m);
        use std::os::unix::fs::MetadataExt;
        for p in [path.clone(), path.with_extension("json")] {
            assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        }
    }
    assert_eq!(snaps[2].1.trigger.severity, Severity::Violation);
}

#[test]
fn violations_only_by_default() {
    let items = stream(
        20 * S,
        MS,
        &[
            (3 * S, near_miss(folio(1), 7000, 100)),
            (9 * S, violation(folio(3), 7020)),
        ],
    );
    let r = run_with(&items, |p| p.on = SnapshotOn::Violation);
    let snaps = snapshots(&r.dir);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].1.trigger.severity, Severity::Violation);
    assert_eq!(r.stats.triggers, 1);
}

#[test]
fn repeats_extend_then_merge_then_write_again_after_the_cooldown() {
    let same_folio = |at| (at, near_miss(folio(1), 7000, 50));
    let items = stream(
        40 * S,
        MS,
        &[
            same_folio(3 * S),
            // Inside the after-window: extends it.
            same_folio(3 * S + 300 * MS),
            same_folio(3 * S + 600 * MS),
            // After it closed, within the 10 s cool-down: merged.
            same_folio(8 * S),
            // After the cool-down: a new snapshot.
            same_folio(25 * S),
        ],
    );
    let r = run(&items);
    assert_eq!(r.live.len(), 5);
    let snaps = snapshots(&r.dir);
    assert_eq!(snaps.len(), 2, "{:?}", r.stats);
    let m = &snaps[0].1;
    assert_eq!(m.merged, 2);
    let last_repeat = r.live[2].evidence.last().unwrap().ts_ns;
    assert!(
        m.window.planned_end_ns >= last_repeat + 500 * MS,
        "extended: {:?}",
        m.window
    );
    assert!(m.window.end_ns > m.trigger_ns + 1000 * MS);
    assert_eq!(r.stats.merged, 3);
    assert_eq!(r.stats.written, 2);
    // The repeats are in the snapshot too.
    let found = assert_reproduces(&snaps[0].0, m);
    assert_eq!(found.iter().filter(|f| same(f, &r.live[2])).count(), 1);
    assert_reproduces(&snaps[1].0, &snaps[1].1);
}

#[test]
fn extension_stops_at_after_max() {
    let items = stream(
        20 * S,
        MS,
        &(0..12)
            .map(|k| (3 * S + k * 400 * MS, near_miss(folio(1), 7000, 50)))
            .collect::<Vec<_>>(),
    );
    let r = run(&items);
    let snaps = snapshots(&r.dir);
    let m = &snaps[0].1;
    assert!(m.window.end_ns <= m.trigger_ns + 2 * S, "{:?}", m.window);
    assert!(m.merged >= 3, "{m:?}");
}

#[test]
fn other_findings_inside_an_open_window_are_covered_not_written_again() {
    let items = stream(
        20 * S,
        MS,
        &[
            (3 * S, near_miss(folio(1), 7000, 50)),
            (3 * S + 200 * MS, near_miss(folio(2), 7010, 50)),
        ],
    );
    let r = run(&items);
    let snaps = snapshots(&r.dir);
    assert_eq!(snaps.len(), 1);
    let m = &snaps[0].1;
    assert_eq!(m.covered.len(), 1);
    assert_eq!(m.covered[0].objects, r.live[1].objects);
    assert_eq!(r.stats.covered, 1);
    let found = assert_reproduces(&snaps[0].0, m);
    assert!(found.iter().any(|f| same(f, &r.live[1])));
}

#[test]
fn a_violation_inside_a_near_miss_window_gets_its_own_snapshot() {
    let items = stream(
        20 * S,
        MS,
        &[
            (3 * S, near_miss(folio(1), 7000, 50)),
            (3 * S + 200 * MS, violation(folio(2), 7010)),
            (3 * S + 300 * MS, near_miss(folio(3), 7020, 50)),
        ],
    );
    let r = run(&items);
    let snaps = snapshots(&r.dir);
    assert_eq!(snaps.len(), 2, "{:?}", r.stats);
    let sev: Vec<Severity> = snaps.iter().map(|(_, m)| m.trigger.severity).collect();
    assert_eq!(sev, [Severity::NearMiss, Severity::Violation]);
    assert!(snaps[1].0.to_string_lossy().contains("-violation"));
    // The later near miss is covered by the first open snapshot.
    assert_eq!(snaps[0].1.covered.len(), 1);
    assert_eq!(snaps[0].1.covered[0].severity, Severity::NearMiss);
    for (p, m) in &snaps {
        assert_reproduces(p, m);
    }
}

#[test]
fn a_finding_older_than_every_open_window_gets_its_own_snapshot() {
    // B opens a snapshot at 3 s whose window starts at 1 s (keep = 2 s);
    // A completes inside B's after-window, but its mark (0.5 s) precedes
    // that window, which cannot explain it. The ring (4 s chunks here)
    // still holds the mark: A gets a snapshot of its own, open alongside.
    let items = stream(
        10 * S,
        MS,
        &[
            (S / 2, near_miss(folio(2), 7010, 2_800_000)),
            (3 * S, near_miss(folio(1), 7000, 50)),
        ],
    );
    let r = run(&items);
    let snaps = snapshots(&r.dir);
    assert_eq!(snaps.len(), 2, "{:?}", r.stats);
    assert_eq!(r.stats.covered, 0);
    for (p, m) in &snaps {
        assert!(m.evidence.complete, "{m:?}");
        assert_reproduces(p, m);
    }
}

#[test]
fn the_count_budget_refuses_new_snapshots() {
    let incidents: Vec<_> = (0..4)
        .map(|k| {
            (
                2 * S + k * 5 * S,
                near_miss(folio(k), 7000 + 10 * k as u32, 50),
            )
        })
        .collect();
    let r = run_with(&stream(25 * S, MS, &incidents), |p| p.max_count = 2);
    assert_eq!(snapshots(&r.dir).len(), 2);
    assert_eq!((r.stats.written, r.stats.suppressed_budget), (2, 2));
    // The evidence kept is the oldest: nothing was deleted.
    let snaps = snapshots(&r.dir);
    assert_eq!(snaps[0].1.trigger, r.live[0]);
    assert_eq!(snaps[1].1.trigger, r.live[1]);
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn the_byte_budget_refuses_and_cuts() {
    let incidents: Vec<_> = (0..3)
        .map(|k| {
            (
                3 * S + k * 5 * S,
                near_miss(folio(k), 7000 + 10 * k as u32, 50),
            )
        })
        .collect();
    let items = stream(20 * S, MS, &incidents);
    // 2.5 s of noise at 1 ms per snapshot: ~400 KiB each in v1's fixed
    // records (v2 compresses this repetitive noise to almost nothing, and
    // the arithmetic below is the budget's, the same in either format).
    // The first fits, the others would not.
    let budget = 700 << 10;
    let r = run_in(TraceFormat::V1, &items, |p| p.max_bytes = budget);
    let snaps = snapshots(&r.dir);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].1.state, SnapshotState::Complete);
    assert_eq!(r.stats.suppressed_budget, 2, "{:?}", r.stats);
    assert!(dir_bytes(&r.dir) <= budget);

    // A long after-window reaches the budget: the snapshot is cut there,
    // with its trigger in it.
    let budget = 600 << 10;
    let r = run_in(TraceFormat::V1, &items, |p| {
        p.max_bytes = budget;
        p.after = Duration::from_secs(2);
    });
    let snaps = snapshots(&r.dir);
    assert_eq!(snaps.len(), 1);
    let (p, m) = &snaps[0];
    assert_eq!(m.state, SnapshotState::CutBudget);
    assert!(m.window.end_ns < m.window.planned_end_ns);
    assert_eq!(r.stats.cut, 1);
    assert!(dir_bytes(&r.dir) <= budget, "{}", dir_bytes(&r.dir));
    assert_reproduces(p, m);
}

#[test]
fn a_violation_displaces_the_oldest_near_miss() {
    let items = stream(
        25 * S,
        MS,
        &[
            (2 * S, near_miss(folio(1), 7000, 50)),
            (7 * S, near_miss(folio(2), 7010, 50)),
            (12 * S, violation(folio(3), 7020)),
            (17 * S, near_miss(folio(4), 7030, 50)),
        ],
    );
    let r = run_with(&items, |p| p.max_count = 2);
    let snaps = snapshots(&r.dir);
    let kept: Vec<_> = snaps.iter().map(|(_, m)| m.trigger.clone()).collect();
    assert_eq!(kept, vec![r.live[1].clone(), r.live[2].clone()]);
    assert_eq!(r.stats.displaced, 1);
    assert_eq!(r.stats.suppressed_budget, 1, "the last near miss");
}

#[test]
fn the_daily_rate_is_a_rolling_day() {
    let mut incidents: Vec<_> = (0..4)
        .map(|k| {
            (
                2 * S + k * 5 * S,
                near_miss(folio(k), 7000 + 10 * k as u32, 50),
            )
        })
        .collect();
    incidents.push((27 * S, near_miss(folio(9), 7090, 50)));
    // Everything from 25 s on happens a day later.
    let mut items = stream(32 * S, MS, &incidents);
    for it in &mut items {
        if it.ts_ns() >= T0 + 25 * S {
            if let StreamItem::Event(e) = it {
                e.ts_ns += DAY_NS;
            }
        }
    }
    let r = run_with(&items, |p| p.per_day = 2);
    assert_eq!(r.stats.suppressed_rate, 2, "{:?}", r.stats);
    assert_eq!(r.stats.written, 3);
    let snaps = snapshots(&r.dir);
    assert_eq!(snaps[2].1.trigger, r.live[4]);
    assert_reproduces(&snaps[2].0, &snaps[2].1);
}

/// Items fed straight to a recorder (no analyzer): `found` at chosen
/// items.
fn feed(rec: &mut FlightRecorder, items: &[StreamItem], findings: &[(usize, Finding)]) {
    for (i, it) in items.iter().enumerate() {
        let f: Vec<Finding> = findings
            .iter()
            .filter(|(at, _)| *at == i)
            .map(|(_, f)| f.clone())
            .collect();
        rec.item(i as u64, it, &f);
    }
}

fn fake(items: &[StreamItem], at: usize, first: usize, sev: Severity) -> Finding {
    let ev = |i: usize| crate::analyzer::Evidence {
        index: i as u64,
        ts_ns: items[i].ts_ns(),
        probe: "try_to_unmap_one".into(),
        kind: "enter".into(),
        tid: 1,
        comm: "x".into(),
        note: String::new(),
        state: Default::default(),
    };
    Finding {
        id: at as u64,
        rule: RuleId::LazyfreeExtraRefs,
        severity: sev,
        objects: crate::analyzer::Objects {
            folios: vec![format!("{:#x}", folio(at as u64))],
            ..Default::default()
        },
        explanation: String::new(),
        evidence: vec![ev(first), ev(at)],
        confidence: crate::analyzer::Confidence::full(),
        cause: String::new(),
    }
}

#[test]
fn memory_is_bounded_on_a_long_fast_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let memory = 256 << 10;
    let p = FlightPolicy {
        memory,
        keep: Duration::from_secs(30),
        ..policy(tmp.path())
    };
    let mut rec = FlightRecorder::new(&TraceHeader::new("t"), p).unwrap();
    // 100 000 events a second for 10 s: 1M events, 150 MiB decoded.
    let mut s = Synth::new(4096);
    let mut peak = 0;
    for i in 0..1_000_000u64 {
        let mut e = s.next().unwrap();
        e.ts_ns = T0 + i * 10_000;
        rec.item(i, &StreamItem::Event(e), &[]);
        let st = rec.stats();
        assert!(st.buffered_bytes <= memory, "{} at {i}", st.buffered_bytes);
        peak = peak.max(st.buffered_bytes);
    }
    assert!(peak > memory / 2, "the ring used {peak} of {memory}");
    let st = rec.stats();
    assert!(st.buffered_items * size_of::<StreamItem>() as u64 <= memory);
    assert!(st.buffered_span_ns < 30 * S, "memory, not time, bounds it");
    // A trigger now says it could not reach back `keep`.
    let items: Vec<StreamItem> = (0..10u64)
        .map(|k| {
            StreamItem::Event(detector_common::Event {
                ts_ns: T0 + 10 * S + k,
                ..Default::default()
            })
        })
        .collect();
    for (k, it) in items.iter().enumerate() {
        let f = (k == 9).then(|| {
            let mut f = fake(&items, 9, 0, Severity::Violation);
            for e in &mut f.evidence {
                e.index += 1_000_000;
            }
            f
        });
        rec.item(1_000_000 + k as u64, it, f.as_slice());
    }
    rec.finish(&[]);
    let snaps = snapshots(tmp.path());
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].1.window.short_of_keep);
    assert_eq!(snaps[0].1.state, SnapshotState::StreamEnded);
}

#[test]
fn the_ring_keeps_stream_time() {
    let tmp = tempfile::tempdir().unwrap();
    let p = FlightPolicy {
        keep: Duration::from_secs(3),
        ..policy(tmp.path())
    };
    let mut rec = FlightRecorder::new(&TraceHeader::new("t"), p).unwrap();
    let mut s = Synth::new(64);
    for i in 0..20_000u64 {
        let mut e = s.next().unwrap();
        // 1 ms apart: 20 s.
        e.ts_ns = T0 + i * MS;
        rec.item(i, &StreamItem::Event(e), &[]);
        let span = rec.stats().buffered_span_ns;
        if i * MS > 3 * S {
            assert!(span >= 3 * S, "keep not covered: {span} at {i}");
        }
        // At most one chunk (4096 items here) beyond keep.
        assert!(span <= 3 * S + 4096 * MS, "{span} at {i}");
    }
    assert!(rec.stats().buffered_bytes < 16 << 20);
}

#[test]
fn evidence_older_than_the_ring_is_said() {
    // The mark is 5 s before the reclaim, `keep` is 2 s and the ring's
    // chunks hold 0.4 s: the mark is gone by the time the finding comes.
    let items = stream(15 * S, MS, &[(2 * S, near_miss(folio(1), 7000, 5_000_000))]);
    let r = run_with(&items, |p| p.memory = 1 << 20);
    let snaps = snapshots(&r.dir);
    assert_eq!(snaps.len(), 1);
    let m = &snaps[0].1;
    assert!(!m.evidence.complete);
    assert!(
        m.evidence.note.contains("before the oldest item"),
        "{}",
        m.evidence.note
    );
    assert!(m.evidence.earliest_index < m.window.first_index);
    assert_eq!(r.stats.evidence_incomplete, 1);
}

#[test]
fn the_pre_window_reaches_back_to_the_evidence_when_the_ring_has_it() {
    // The mark is 2.5 s before the reclaim with keep = 2 s: the ring
    // (chunks of 4096 items, 4 s here) still holds it.
    let items = stream(15 * S, MS, &[(2 * S, near_miss(folio(1), 7000, 2_500_000))]);
    let r = run(&items);
    let snaps = snapshots(&r.dir);
    let m = &snaps[0].1;
    assert!(m.evidence.complete, "{m:?}");
    assert_eq!(m.window.first_index, m.evidence.earliest_index);
    assert!(m.trigger_ns - m.window.start_ns > 2 * S);
    assert_reproduces(&snaps[0].0, m);
}

#[test]
fn losses_inside_the_window_are_reported_and_replayed() {
    // gup_put lost events: 5 long before the window, 9 by 6 s, 12 inside
    // the finding's chain (mark at 5.5 s, reclaim at 7 s), 20 after the
    // snapshot.
    let put = detector_common::ProbeId::GupPut as u16;
    let name = ProbeName(put).to_string();
    let lost = |t: u64, n: u64| format!("name lost\n{t} lost {name} {n}\nexpect none\n");
    let items = stream(
        20 * S,
        MS,
        &[
            (S, lost(0, 5)),
            (6 * S, lost(0, 9)),
            (S * 11 / 2, near_miss(folio(1), 7000, 1_500_000)),
            (7 * S, lost(0, 12)),
            (15 * S, lost(0, 20)),
        ],
    );
    let r = run(&items);
    let snaps = snapshots(&r.dir);
    assert_eq!(snaps.len(), 1);
    let (p, m) = &snaps[0];
    assert_eq!(m.lost.before_window.get(&name), Some(&5));
    assert_eq!(m.lost.per_probe.get(&name), Some(&7));
    assert_eq!(m.lost.total, 7);
    assert_eq!(m.window.baseline_records, 1);
    // Events lost while the finding's chain was open: 12 - 5. The replay
    // must say the same, so the losses before the window must not look
    // like losses inside it.
    assert_eq!(m.trigger.confidence.lost_events, 7);
    assert_reproduces(p, m);
    let (_, items_back, _) = crate::trace::read_all(p).unwrap();
    assert!(matches!(
        items_back.first(),
        Some(StreamItem::Lost { total: 5, .. })
    ));
}

#[test]
fn a_missing_directory_is_counted_and_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    let mut rec = FlightRecorder::new(&TraceHeader::new("t"), policy(&dir)).unwrap();
    let items: Vec<StreamItem> = (0..4000u64)
        .map(|k| {
            StreamItem::Event(detector_common::Event {
                ts_ns: T0 + k * MS,
                ..Default::default()
            })
        })
        .collect();
    std::fs::remove_dir(&dir).unwrap();
    feed(
        &mut rec,
        &items[..2000],
        &[(1000, fake(&items, 1000, 990, Severity::Violation))],
    );
    assert_eq!(rec.stats().errors, 1);
    assert_eq!(rec.stats().written, 0);
    let n = rec.take_notices();
    assert!(
        n.iter()
            .any(|n| n.level == NoticeLevel::Warn && n.text.contains("No such file")),
        "{n:?}"
    );
    // The operator puts it back: the next one is written.
    std::fs::create_dir(&dir).unwrap();
    for (i, it) in items.iter().enumerate().skip(2000) {
        let f: Vec<Finding> = (i == 3000)
            .then(|| fake(&items, 3000, 2990, Severity::Violation))
            .into_iter()
            .collect();
        rec.item(i as u64, it, &f);
    }
    rec.finish(&[]);
    assert_eq!(rec.stats().written, 1);
    assert_eq!(snapshots(&dir).len(), 1);
}

/// Runs in a child process with a file-size limit (`RLIMIT_FSIZE`), so
/// that writing a snapshot fails halfway.
#[test]
fn a_write_failing_midway_removes_the_partial_snapshot() {
    const CHILD: &str = "DETECTOR_FLIGHT_FSIZE_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "flight::tests::a_write_failing_midway_removes_the_partial_snapshot",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let limit = libc::rlimit {
        rlim_cur: 256 << 10,
        rlim_max: 256 << 10,
    };
    // SAFETY: setrlimit reads a valid rlimit; signal sets a disposition.
    // The process is this test's own child.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &raw const limit), 0);
    }
    let tmp = tempfile::tempdir().unwrap();
    // v1: its fixed records make the 256 KiB limit fall inside the
    // pre-window (v2 would write these identical events in a few KiB).
    let mut rec = FlightRecorder::new(&TraceHeader::new("t"), policy(tmp.path()))
        .unwrap()
        .with_format(TraceFormat::V1);
    // 3 s at 0.5 ms: the 2 s pre-window is ~650 KiB of trace.
    let items: Vec<StreamItem> = (0..8000u64)
        .map(|k| {
            StreamItem::Event(detector_common::Event {
                ts_ns: T0 + k * 500_000,
                ..Default::default()
            })
        })
        .collect();
    feed(
        &mut rec,
        &items,
        &[
            (6000, fake(&items, 6000, 5990, Severity::Violation)),
            // Later, a small one: evidence right before, keep short.
        ],
    );
    rec.finish(&[]);
    assert_eq!(rec.stats().errors, 1, "{:?}", rec.stats());
    assert_eq!(rec.stats().written, 0);
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "partial files left: {left:?}");
    // The recorder goes on: a small snapshot still fits the limit.
    let p = FlightPolicy {
        keep: Duration::from_millis(100),
        after: Duration::from_millis(50),
        ..policy(tmp.path())
    };
    let mut rec = FlightRecorder::new(&TraceHeader::new("t"), p).unwrap();
    feed(
        &mut rec,
        &items,
        &[(6000, fake(&items, 6000, 5990, Severity::Violation))],
    );
    rec.finish(&[]);
    assert_eq!((rec.stats().written, rec.stats().errors), (1, 0));
}

#[test]
fn a_quiet_stream_closes_by_the_clock() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rec = FlightRecorder::new(&TraceHeader::new("t"), policy(tmp.path())).unwrap();
    let items: Vec<StreamItem> = (0..100u64)
        .map(|k| {
            StreamItem::Event(detector_common::Event {
                ts_ns: T0 + k * MS,
                ..Default::default()
            })
        })
        .collect();
    feed(
        &mut rec,
        &items,
        &[(99, fake(&items, 99, 50, Severity::Violation))],
    );
    assert_eq!(rec.stats().open, 1);
    let (_, m) = &snapshots(tmp.path())[0];
    assert_eq!(m.state, SnapshotState::Open, "the open manifest is on disk");
    // Past the after-window, but late items may still come.
    rec.tick_at(T0 + 99 * MS + 900 * MS);
    assert_eq!(rec.stats().open, 1);
    rec.tick_at(T0 + 99 * MS + 1_501 * MS);
    assert_eq!((rec.stats().open, rec.stats().written), (0, 1));
    let (p, m) = &snapshots(tmp.path())[0];
    assert_eq!(m.state, SnapshotState::Complete);
    assert_eq!(m.window.items, 100);
    assert!(crate::trace::read_all(p).unwrap().2.is_complete());
}

#[test]
fn snapshots_already_on_disk_count_against_budget_and_rate() {
    let tmp = tempfile::tempdir().unwrap();
    for k in 0..2 {
        let stem = format!("flight-2025010{k}T000000.000Z-swap_entry_aba-violation");
        std::fs::write(tmp.path().join(format!("{stem}.trace")), [0u8; 10]).unwrap();
        std::fs::write(tmp.path().join(format!("{stem}.json")), [0u8; 10]).unwrap();
    }
    let items: Vec<StreamItem> = (0..100u64)
        .map(|k| {
            StreamItem::Event(detector_common::Event {
                ts_ns: T0 + k * MS,
                ..Default::default()
            })
        })
        .collect();
    // Written just now: they count in today's rate.
    let p = FlightPolicy {
        per_day: 2,
        ..policy(tmp.path())
    };
    let mut rec = FlightRecorder::new(&TraceHeader::new("t"), p).unwrap();
    assert_eq!(rec.stats().on_disk_count, 2);
    feed(
        &mut rec,
        &items,
        &[(99, fake(&items, 99, 50, Severity::Violation))],
    );
    assert_eq!(rec.stats().suppressed_rate, 1);
    // And in the count budget; a violation never displaces a violation.
    let p = FlightPolicy {
        max_count: 2,
        ..policy(tmp.path())
    };
    let mut rec = FlightRecorder::new(&TraceHeader::new("t"), p).unwrap();
    feed(
        &mut rec,
        &items,
        &[(99, fake(&items, 99, 50, Severity::Violation))],
    );
    assert_eq!(rec.stats().suppressed_budget, 1);
    assert_eq!(rec.stats().displaced, 0);

    // A near miss is on disk too, but removing it would not be enough for
    // the byte budget: nothing is removed.
    let stem = "flight-20250103T000000.000000Z-lazyfree_extra_refs-near_miss";
    std::fs::write(tmp.path().join(format!("{stem}.trace")), [0u8; 10]).unwrap();
    let p = FlightPolicy {
        max_bytes: MIN_BYTES,
        max_count: 3,
        ..policy(tmp.path())
    };
    let mut rec = FlightRecorder::new(&TraceHeader::new("t"), p).unwrap();
    let big: Vec<StreamItem> = (0..2000u64)
        .map(|k| {
            StreamItem::Event(detector_common::Event {
                ts_ns: T0 + k * MS,
                ..Default::default()
            })
        })
        .collect();
    feed(
        &mut rec,
        &big,
        &[(1999, fake(&big, 1999, 1990, Severity::Violation))],
    );
    assert_eq!(rec.stats().suppressed_budget, 1);
    assert_eq!(rec.stats().displaced, 0);
    assert!(tmp.path().join(format!("{stem}.trace")).exists());
}

const MIN_BYTES: u64 = super::policy::MIN_MEMORY;

#[test]
fn the_recorder_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<FlightRecorder>();
}

#[test]
fn keys_are_rule_severity_and_objects_not_tasks() {
    let items: Vec<StreamItem> = (0..10u64)
        .map(|k| {
            StreamItem::Event(detector_common::Event {
                ts_ns: T0 + k,
                ..Default::default()
            })
        })
        .collect();
    let a = fake(&items, 5, 1, Severity::NearMiss);
    let mut b = a.clone();
    b.objects.tids = vec![42];
    assert_eq!(Key::of(&a), Key::of(&b), "tasks do not split a key");
    let mut c = a.clone();
    c.objects.folios = vec!["0x1".into()];
    assert_ne!(Key::of(&a), Key::of(&c));
    let mut d = a.clone();
    d.severity = Severity::Violation;
    assert_ne!(
        Key::of(&a),
        Key::of(&d),
        "a violation is never a near miss's repeat"
    );
    let mut e = a.clone();
    e.objects.folios.clear();
    e.objects.tids = vec![7];
    let mut f = e.clone();
    f.objects.tids = vec![8];
    assert_ne!(Key::of(&e), Key::of(&f), "tasks when nothing else is named");
}
