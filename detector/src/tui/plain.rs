//! `detector live --plain`: one line per finding on stdout, no terminal
//! needed. Lost-event changes and the end of the stream go to stderr so
//! stdout stays a clean list of findings.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use detector_common::{ProbeId, MAX_PROBES};

use crate::event::StreamItem;

use super::model::FindingRow;
use super::source::{Pull, Source};
use super::worker::{Analysis, EventMeta, Recorder};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct PlainSummary {
    pub items: u64,
    pub findings: u64,
    pub lost: u64,
    /// How the source ended.
    pub end: String,
    pub record_error: Option<String>,
}

/// One finding as a line: stream time, severity, rule, objects, task and
/// the explanation, tab-free so `cut -d' '` and grep work.
pub fn finding_line(f: &FindingRow, first_ts: u64) -> String {
    let task = f
        .task()
        .map_or_else(String::new, |e| format!(" task={}/{}", e.comm, e.tid));
    format!(
        "{:.6} #{} {} {} [{}]{} {}",
        f.ts_ns.saturating_sub(first_ts) as f64 / 1e9,
        f.seq,
        f.severity.as_str(),
        f.rule,
        f.objects,
        task,
        f.explanation
    )
}

pub fn run_plain(
    mut source: Box<dyn Source>,
    mut analysis: Box<dyn Analysis>,
    mut recorder: Option<Box<dyn Recorder>>,
    out: &mut dyn Write,
    err: &mut dyn Write,
    stop: &AtomicBool,
) -> std::io::Result<PlainSummary> {
    let mut sum = PlainSummary::default();
    let mut buf = Vec::with_capacity(super::source::BATCH);
    let mut found = Vec::new();
    let mut meta = EventMeta::new(16);
    let mut lost = vec![0u64; MAX_PROBES as usize];
    let mut first_ts = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            sum.end = String::from("interrupted");
            break;
        }
        buf.clear();
        match source.pull(&mut buf, Duration::from_millis(100)) {
            Ok(Pull::Items) => {}
            Ok(Pull::Idle) => continue,
            Ok(Pull::End(how)) => {
                sum.end = how;
                break;
            }
            Err(e) => {
                sum.end = format!("source failed: {e}");
                break;
            }
        }
        for (index, item) in &buf {
            meta.record(*index, item);
            analysis.process(*index, item, &meta, &mut found);
            if let Some(rec) = recorder.as_mut() {
                if let Err(e) = rec.write(item) {
                    writeln!(err, "detector: recording stopped: {e}")?;
                    sum.record_error = Some(e);
                    recorder = None;
                }
            }
            match item {
                StreamItem::Event(ev) => {
                    first_ts.get_or_insert(ev.ts_ns);
                }
                StreamItem::Lost { probe, total, .. } => {
                    if let Some(l) = lost.get_mut(usize::from(*probe)) {
                        if *total > *l {
                            sum.lost += total - *l;
                            *l = *total;
                            let name = ProbeId::from_u16(*probe).map_or("?", |p| p.name());
                            writeln!(err, "detector: lost events: {name} total {total}")?;
                        }
                    }
                }
            }
        }
        sum.items += buf.len() as u64;
        for f in found.drain(..) {
            sum.findings += 1;
            writeln!(out, "{}", finding_line(&f, first_ts.unwrap_or(0)))?;
        }
        out.flush()?;
    }
    analysis.finish(&meta, &mut found);
    for f in found.drain(..) {
        sum.findings += 1;
        writeln!(out, "{}", finding_line(&f, first_ts.unwrap_or(0)))?;
    }
    out.flush()?;
    if let Some(rec) = recorder.take() {
        if let Err(e) = rec.finish(&sum.end) {
            sum.record_error = Some(e);
        }
    }
    writeln!(
        err,
        "detector: {} items, {} findings, {} events lost; {}",
        sum.items, sum.findings, sum.lost, sum.end
    )?;
    Ok(sum)
}
