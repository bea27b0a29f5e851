//! Runs a trace through the pipeline into a flight recorder as the agent
//! would, then replays every snapshot and checks that it gives back its
//! trigger and the findings its manifest covers. Prints what it cost: the
//! ring's bytes per buffered second at the trace's event rate, and how long
//! opening (writing the pre-window) and closing a snapshot took.
//!
//! ```sh
//! cargo run --release -p detector --example flight_check -- \
//!     /work/notes/real-madvfree.dtr --on near-miss --keep 30 --after 5
//! ```
//!
//! `--synthetic RATE` instead feeds `keep + after` seconds of the
//! synthetic swap mix at RATE events/s straight to a recorder, with one
//! violation at `keep`: what writing a full ring costs at a high rate.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use detector::analyzer::{Finding, Severity};
use detector::event::StreamItem;
use detector::flight::{FlightPolicy, FlightRecorder, Manifest, SnapshotOn};
use detector::sinks::analyze_file_with_stats;
use detector::stream::{ConfigChoice, Ctx, FileSource, Overrides, Pipeline, Sink, Source, Speed};

struct Tap {
    rec: FlightRecorder,
    live: Vec<Finding>,
    /// Wall time of the item calls that opened or closed a snapshot.
    opens: Vec<Duration>,
    closes: Vec<Duration>,
    /// The ring's bytes and span when it held the most.
    peak: (u64, u64, u64),
}

impl Sink for Tap {
    fn item(&mut self, index: u64, item: &StreamItem, found: &mut Vec<Finding>) -> io::Result<()> {
        let kept = found.iter().filter(|f| f.severity >= Severity::NearMiss);
        self.live.extend(kept.cloned());
        let (started, written) = (self.rec.stats().started, self.rec.stats().written);
        let t = Instant::now();
        self.rec.item(index, item, found);
        let dt = t.elapsed();
        let s = self.rec.stats();
        if s.started > started {
            self.opens.push(dt);
        }
        if s.written > written {
            self.closes.push(dt);
        }
        if s.buffered_bytes > self.peak.0
            || (s.buffered_bytes == self.peak.0 && s.buffered_span_ns > self.peak.1)
        {
            self.peak = (s.buffered_bytes, s.buffered_span_ns, s.buffered_items);
        }
        Ok(())
    }
    fn finish(&mut self, found: &mut Vec<Finding>, ctx: &mut Ctx<'_>) -> io::Result<()> {
        let kept = found.iter().filter(|f| f.severity >= Severity::NearMiss);
        self.live.extend(kept.cloned());
        let t = Instant::now();
        let written = self.rec.stats().written;
        Sink::finish(&mut self.rec, found, ctx)?;
        if self.rec.stats().written > written {
            self.closes.push(t.elapsed());
        }
        Ok(())
    }
}

fn secs(v: &str) -> Result<Duration> {
    Ok(Duration::from_secs_f64(v.parse().context("seconds")?))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(trace) = args.first().map(PathBuf::from) else {
        bail!(
            "usage: flight_check TRACE|--synthetic RATE [--on violation|near-miss] [--keep S] \
             [--after S] [--memory-mib N] [--dir DIR]"
        );
    };
    let synthetic = (trace.as_os_str() == "--synthetic")
        .then(|| args.get(1).map(|r| r.parse::<u64>()))
        .flatten()
        .transpose()
        .context("--synthetic RATE (events per second)")?;
    let skip = if synthetic.is_some() { 2 } else { 1 };
    let tmp = tempfile::tempdir()?;
    let mut policy = FlightPolicy {
        dir: tmp.path().to_path_buf(),
        on: SnapshotOn::NearMiss,
        ..FlightPolicy::default()
    };
    let mut rest = args[skip..].iter();
    while let Some(flag) = rest.next() {
        let v = rest.next().context("a flag without its value")?;
        match flag.as_str() {
            "--on" => policy.on = SnapshotOn::from_name(v).context("--on")?,
            "--keep" => policy.keep = secs(v)?,
            "--after" => policy.after = secs(v)?,
            "--memory-mib" => policy.memory = v.parse::<u64>()? << 20,
            "--dir" => policy.dir = PathBuf::from(v),
            _ => bail!("unknown flag {flag}"),
        }
    }
    policy.after_max = policy.after_max.max(policy.after);
    policy.snapshot_bytes = policy.snapshot_bytes.max(policy.memory * 2);
    let dir = policy.dir.clone();
    if let Some(rate) = synthetic {
        return synthetic_run(rate, policy);
    }

    let mut src = FileSource::open(&trace, Speed::Max)?;
    let setup = ConfigChoice::FromTrace(Overrides::default()).setup(&src);
    let mut tap = Tap {
        rec: FlightRecorder::new(src.header(), policy)?,
        live: Vec::new(),
        opens: Vec::new(),
        closes: Vec::new(),
        peak: (0, 0, 0),
    };
    let t = Instant::now();
    let out = Pipeline::new(&mut src).analyze(&setup).run(&mut tap)?;
    let run = t.elapsed();
    let s = tap.rec.stats().clone();
    println!(
        "{}: {} items in {:.2?}; {} near misses and violations live",
        trace.display(),
        out.items,
        run,
        tap.live.len()
    );
    println!("{s:#?}");
    let (bytes, span, items) = tap.peak;
    let span_s = span as f64 / 1e9;
    println!(
        "ring at its peak: {:.1} MiB for {items} items over {span_s:.2} s: {:.2} MiB per \
         buffered second ({:.0} items/s, {} bytes/item)",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / (1 << 20) as f64 / span_s.max(1e-9),
        items as f64 / span_s.max(1e-9),
        bytes / items.max(1)
    );
    for n in tap.rec.take_notices() {
        println!("notice: {}", n.text);
    }

    let mut failures = 0;
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    manifests.retain(|p| p.extension().is_some_and(|x| x == "json"));
    manifests.sort();
    for (k, mpath) in manifests.iter().enumerate() {
        let m: Manifest = serde_json::from_slice(&std::fs::read(mpath)?)?;
        let path = dir.join(&m.trace);
        let t = Instant::now();
        let (report, _) =
            analyze_file_with_stats(&path, ConfigChoice::FromTrace(Overrides::default()), true)?;
        let replay = t.elapsed();
        let found = report.findings.unwrap_or_default();
        let times = |f: &Finding| f.evidence.iter().map(|e| e.ts_ns).collect::<Vec<_>>();
        let alike = |f: &Finding, g: &Finding| {
            (f.rule, f.severity, &f.objects) == (g.rule, g.severity, &g.objects)
        };
        let has = |f: &Finding| found.iter().any(|g| alike(f, g) && times(f) == times(g));
        // Live findings whose whole chain lies in the window must all come
        // back; a replayed one must be a live one completed by the same
        // event (its chain shorter when the live one began earlier).
        let w = &m.window;
        let inside: Vec<&Finding> = tap
            .live
            .iter()
            .filter(|f| {
                f.evidence.first().is_some_and(|e| e.index >= w.first_index)
                    && f.evidence.last().is_some_and(|e| e.index <= w.last_index)
            })
            .collect();
        let missing = inside.iter().filter(|f| !has(f)).count();
        let mut truncated = 0;
        let mut invented = 0;
        for g in found.iter().filter(|g| g.severity >= Severity::NearMiss) {
            match tap
                .live
                .iter()
                .find(|f| alike(f, g) && times(f).ends_with(&times(g)) && !g.evidence.is_empty())
            {
                Some(f) if times(f) != times(g) => truncated += 1,
                Some(_) => {}
                None => invented += 1,
            }
        }
        let trigger = has(&m.trigger);
        let covered = m
            .covered
            .iter()
            .filter(|c| tap.live.iter().any(|f| f.id == c.id && has(f)))
            .count();
        let ok = trigger
            && covered == m.covered.len()
            && m.evidence.complete
            && missing == 0
            && invented == 0;
        failures += usize::from(!ok);
        println!(
            "{} {}: {} items over {:.2} s, {:.1} MiB, open {:.1?} close {:.1?}, replay {:.1?}: \
             trigger {}, covered {}/{}, merged {}, evidence {}; {} live findings inside, {missing} \
             of them not replayed, {invented} replayed but not live, {truncated} with a chain \
             cut at the window's start",
            if ok { "ok  " } else { "FAIL" },
            Path::new(&m.trace).display(),
            m.window.items,
            (m.window.end_ns - m.window.start_ns) as f64 / 1e9,
            m.trace_bytes as f64 / (1 << 20) as f64,
            tap.opens.get(k).copied().unwrap_or_default(),
            tap.closes.get(k).copied().unwrap_or_default(),
            replay,
            if trigger { "reproduced" } else { "MISSING" },
            covered,
            m.covered.len(),
            m.merged,
            if m.evidence.complete {
                "complete"
            } else {
                "incomplete"
            },
            inside.len(),
        );
    }
    if failures > 0 {
        bail!("{failures} snapshot(s) did not replay to their findings");
    }
    Ok(())
}

/// A full ring at `rate` events/s, one violation at `keep`, `after` more.
fn synthetic_run(rate: u64, policy: FlightPolicy) -> Result<()> {
    use detector::analyzer::{Confidence, Evidence, Objects, RuleId};
    use detector::trace::TraceHeader;
    let step = 1_000_000_000 / rate.max(1);
    let keep = policy.keep.as_nanos() as u64;
    let total = keep + policy.after.as_nanos() as u64 + 1_000_000_000;
    let mut rec = FlightRecorder::new(&TraceHeader::new("synthetic"), policy)?;
    let mut synth = detector::synth::Synth::new(100_000);
    let t0 = detector::synth::START_NS;
    let trigger_at = keep / step;
    let (mut open, mut close) = (Duration::ZERO, Duration::ZERO);
    for i in 0..total / step {
        let mut e = synth.next().context("synth")?;
        e.ts_ns = t0 + i * step;
        let found = (i == trigger_at).then(|| Finding {
            id: 1,
            rule: RuleId::SwapinWithoutCachePin,
            severity: Severity::Violation,
            objects: Objects {
                folios: vec![format!("{:#x}", e.folio)],
                ..Objects::default()
            },
            explanation: "synthetic".into(),
            evidence: vec![Evidence {
                index: i,
                ts_ns: e.ts_ns,
                probe: "swap_read".into(),
                kind: "enter".into(),
                tid: e.tid,
                comm: "synth".into(),
                note: String::new(),
                state: Default::default(),
            }],
            confidence: Confidence::full(),
            cause: String::new(),
        });
        let (started, written) = (rec.stats().started, rec.stats().written);
        let t = Instant::now();
        rec.item(i, &StreamItem::Event(e), found.as_slice());
        let dt = t.elapsed();
        if rec.stats().started > started {
            open = dt;
            let s = rec.stats();
            println!(
                "ring at the trigger: {:.1} MiB, {} items over {:.2} s ({:.2} MiB per buffered \
                 second)",
                s.buffered_bytes as f64 / (1 << 20) as f64,
                s.buffered_items,
                s.buffered_span_ns as f64 / 1e9,
                s.buffered_bytes as f64 / (1 << 20) as f64 / (s.buffered_span_ns as f64 / 1e9)
            );
        }
        if rec.stats().written > written {
            close = dt;
        }
    }
    rec.finish(&[]);
    println!("{:#?}", rec.stats());
    for n in rec.take_notices() {
        println!("notice: {}", n.text);
    }
    println!("open (pre-window written and flushed): {open:.1?}; close (footer, fsync, manifest): {close:.1?}");
    Ok(())
}
