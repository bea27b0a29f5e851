//! `detector live --plain`: one line per finding on stdout, no terminal
//! needed. Findings are grouped (`crate::groups`): the first few of each
//! group get their line, then one `group` line each time the group's count
//! reaches 10, 100, 1000, ..., so a storm cannot flood the output. Lost-event
//! changes and the end of the stream (with every group's count) go to
//! stderr so stdout stays a clean list of findings.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use detector_common::{ProbeId, MAX_PROBES};

use crate::analyzer::Finding;
use crate::event::StreamItem;
use crate::groups::{is_decade, GroupInput, Groups};
use crate::present::finding::{decade_line, finding_line, group_line};
use crate::present::row::{finding_row, EventMeta};

use super::source::{Pull, Source};
use super::worker::{Analysis, Recorder};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct PlainSummary {
    pub items: u64,
    pub findings: u64,
    pub lost: u64,
    /// How the source ended.
    pub end: String,
    pub record_error: Option<String>,
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
    let mut groups: Groups<()> = Groups::default();
    let mut meta = EventMeta::new(16);
    let mut lost = vec![0u64; MAX_PROBES as usize];
    let mut first_ts = None;
    let note = analysis.describe();
    if !note.is_empty() {
        writeln!(err, "detector: analyzer config {note}")?;
    }
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
            analysis.process(*index, item, &mut found);
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
            // Printed as they arrive (a batch can be long), while the
            // evidence's CPU and pid are still in `meta`.
            if !found.is_empty() {
                emit(&mut found, &mut groups, &meta, first_ts, out, &mut sum)?;
            }
        }
        sum.items += buf.len() as u64;
        out.flush()?;
    }
    analysis.finish(&mut found);
    emit(&mut found, &mut groups, &meta, first_ts, out, &mut sum)?;
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
    let base = first_ts.unwrap_or(0);
    for g in groups.groups().iter().filter(|g| g.span.count > 1) {
        writeln!(err, "detector: group: {}", group_line(g, base))?;
    }
    let o = groups.overflow();
    if o.span.count > 0 {
        writeln!(
            err,
            "detector: {} findings of kinds beyond the group limit: #{}..#{}",
            o.span.count, o.span.first_id, o.span.last_id
        )?;
    }
    Ok(sum)
}

/// Prints the first findings of each group in full and a line per decade
/// of each group's count; the rest are only counted.
fn emit(
    found: &mut Vec<Finding>,
    groups: &mut Groups<()>,
    meta: &EventMeta,
    first_ts: Option<u64>,
    out: &mut dyn Write,
    sum: &mut PlainSummary,
) -> std::io::Result<()> {
    let base = first_ts.unwrap_or(0);
    for f in found.drain(..) {
        sum.findings += 1;
        let g = GroupInput::of(&f);
        let placed = groups.add(g, || ());
        if placed.example {
            writeln!(out, "{}", finding_line(&finding_row(&f, meta), base))?;
        } else if is_decade(placed.count) {
            let first = match placed.group.and_then(|i| groups.get(i)) {
                Some(grp) => grp.span.first_id,
                None => groups.overflow().span.first_id,
            };
            writeln!(out, "{}", decade_line(&g, &placed, first, base))?;
        }
    }
    Ok(())
}
