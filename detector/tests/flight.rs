//! The flight recorder on a real capture: a slice of `detector record` in a
//! Debian 6.12 guest while `madvfree-dio` ran (16 lazyfree near misses on a
//! stock kernel, `testdata/README.md`), through the pipeline as the agent
//! runs it. Every snapshot must replay, as `detector replay` reads it, to
//! its trigger and to every finding its manifest says it covers.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use detector::analyzer::{Finding, Objects, RuleId, Severity};
use detector::event::StreamItem;
use detector::flight::{FlightPolicy, FlightRecorder, Manifest, SnapshotOn, SnapshotState};
use detector::sinks::analyze_file_with_stats;
use detector::stream::{ConfigChoice, Ctx, FileSource, Overrides, Pipeline, Sink, Source, Speed};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// The recorder, and the near misses and violations the live analyzer
/// reported.
struct Tap {
    rec: FlightRecorder,
    live: Vec<Finding>,
}

impl Sink for Tap {
    fn item(&mut self, index: u64, item: &StreamItem, found: &mut Vec<Finding>) -> io::Result<()> {
        let kept = found.iter().filter(|f| f.severity >= Severity::NearMiss);
        self.live.extend(kept.cloned());
        Sink::item(&mut self.rec, index, item, found)
    }
    fn finish(&mut self, found: &mut Vec<Finding>, ctx: &mut Ctx<'_>) -> io::Result<()> {
        let kept = found.iter().filter(|f| f.severity >= Severity::NearMiss);
        self.live.extend(kept.cloned());
        Sink::finish(&mut self.rec, found, ctx)
    }
}

fn record(trace: &Path, dir: &Path, keep: Duration, after: Duration) -> Tap {
    let mut src = FileSource::open(trace, Speed::Max).unwrap();
    let setup = ConfigChoice::FromTrace(Overrides::default()).setup(&src);
    let policy = FlightPolicy {
        keep,
        after,
        after_max: after * 4,
        on: SnapshotOn::NearMiss,
        dir: dir.to_path_buf(),
        ..FlightPolicy::default()
    };
    let mut tap = Tap {
        rec: FlightRecorder::new(src.header(), policy).unwrap(),
        live: Vec::new(),
    };
    Pipeline::new(&mut src)
        .analyze(&setup)
        .run(&mut tap)
        .unwrap();
    tap
}

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

/// Rule, severity, objects and evidence times of a finding.
type Id = (RuleId, Severity, Objects, Vec<u64>);

fn id(f: &Finding) -> Id {
    (
        f.rule,
        f.severity,
        f.objects.clone(),
        f.evidence.iter().map(|e| e.ts_ns).collect(),
    )
}

fn replay(path: &Path) -> Vec<Id> {
    let (report, _) =
        analyze_file_with_stats(path, ConfigChoice::FromTrace(Overrides::default()), true).unwrap();
    assert!(report.complete, "{}: {}", path.display(), report.end);
    report.findings.unwrap().iter().map(id).collect()
}

/// Every snapshot replays to its trigger and its covered findings; every
/// live finding is a trigger, covered, or merged. Returns the snapshots.
fn check(tap: &Tap, dir: &Path) -> Vec<(PathBuf, Manifest)> {
    let snaps = snapshots(dir);
    let st = tap.rec.stats();
    assert_eq!(st.errors, 0);
    assert_eq!(st.written as usize, snaps.len());
    let mut accounted = 0;
    let mut truncated = 0;
    for (path, m) in &snaps {
        assert_eq!(m.state, SnapshotState::Complete, "{}", path.display());
        assert!(m.evidence.complete, "{m:?}");
        assert!(tap.live.contains(&m.trigger));
        let found = replay(path);
        assert!(
            found.contains(&id(&m.trigger)),
            "{} lacks its trigger #{}",
            path.display(),
            m.trigger.id
        );
        for c in &m.covered {
            let live = tap.live.iter().find(|f| f.id == c.id).unwrap();
            assert!(
                found.contains(&id(live)),
                "{} lacks covered #{}",
                path.display(),
                c.id
            );
        }
        // Starting mid-stream loses no finding whose chain lies inside
        // the window...
        let w = &m.window;
        for f in tap.live.iter().filter(|f| {
            f.evidence[0].index >= w.first_index && f.evidence.last().unwrap().index <= w.last_index
        }) {
            assert!(found.contains(&id(f)), "{} lost #{}", path.display(), f.id);
        }
        // ...and invents none: each one is a live finding completed by the
        // same event (its chain shorter when the live one began before the
        // window).
        for g in found.iter().filter(|g| g.1 >= Severity::NearMiss) {
            let live = tap.live.iter().map(id).find(|f| {
                (f.0, f.1, &f.2) == (g.0, g.1, &g.2)
                    && f.3.last() == g.3.last()
                    && f.3.ends_with(&g.3)
            });
            assert!(live.is_some(), "{} invents {g:?}", path.display());
            if live.is_some_and(|f| f.3 != g.3) {
                truncated += 1;
            }
        }
        accounted += 1 + m.covered.len() as u64 + m.merged;
    }
    assert_eq!(st.triggers, tap.live.len() as u64);
    assert_eq!(
        accounted + (st.merged - snaps.iter().map(|(_, m)| m.merged).sum::<u64>()),
        st.triggers,
        "{st:?}"
    );
    eprintln!("{truncated} replayed finding(s) with the start of their chain before the window");
    snaps
}

#[test]
fn real_near_misses_replay_from_their_snapshots() {
    let trace = testdata("real-madvfree-3400.dtr");
    let tmp = tempfile::tempdir().unwrap();

    // keep 2 ms is shorter than the near misses' chains (~5 ms from the
    // MADV_FREE mark to reclaim): the pre-window reaches back to the
    // evidence. A 0.5 ms after-window closes before the second near miss,
    // whose snapshot then covers the 14 that follow within 0.2 ms.
    let dir = tmp.path().join("a");
    let tap = record(
        &trace,
        &dir,
        Duration::from_millis(2),
        Duration::from_micros(500),
    );
    assert_eq!(tap.live.len(), 16, "the fixture's near misses");
    let snaps = check(&tap, &dir);
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0].1.covered.len(), 0);
    assert_eq!(snaps[1].1.covered.len(), 14);
    for (_, m) in &snaps {
        assert!(
            m.trigger_ns - m.window.start_ns > 2_000_000,
            "{:?}",
            m.window
        );
        assert_eq!(m.window.first_index, m.evidence.earliest_index);
        assert_eq!(m.kernel_release, "6.12.117+deb12-cloud-amd64");
    }

    // A wide after-window: one snapshot holds all sixteen.
    let dir = tmp.path().join("b");
    let tap = record(
        &trace,
        &dir,
        Duration::from_millis(30),
        Duration::from_millis(5),
    );
    let snaps = check(&tap, &dir);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].1.covered.len(), 15);
}
