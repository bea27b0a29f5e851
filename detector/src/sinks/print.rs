//! Findings printed as they arrive, grouped (`live --plain`, `record
//! --analyze`): the first few of each group in full, then one line each
//! time the group's count reaches 10, 100, 1000, ..., so a storm cannot
//! flood the output; at the end, every group of more than one finding.
//! Lost-event changes and the end go to the second writer, so that the
//! first stays a clean list of findings.

use std::io::{self, Write};

use detector_common::{ProbeId, MAX_PROBES};

use crate::analyzer::Finding;
use crate::event::StreamItem;
use crate::groups::{is_decade, GroupInput, Groups};
use crate::present::finding::{decade_line, finding_line, group_line, render_finding};
use crate::present::row::{finding_row, EventMeta};
use crate::stream::{Ctx, End, Sink};
use crate::trace::TraceError;

/// How a finding kept as an example prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// One line (`live --plain`: grep and cut work on it).
    Line,
    /// In full, with its evidence, as the report prints it (`record
    /// --analyze`, for a person watching the capture).
    Block,
}

/// What was printed, for the caller's exit status and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PrintSummary {
    pub items: u64,
    pub findings: u64,
    pub lost: u64,
    /// How the stream ended.
    pub end: String,
    pub record_error: Option<String>,
}

pub struct FindingPrinter<O: Write, E: Write> {
    out: O,
    err: E,
    style: Style,
    groups: Groups<()>,
    meta: EventMeta,
    lost: Vec<u64>,
    first_ts: Option<u64>,
    summary: PrintSummary,
}

impl<O: Write, E: Write> FindingPrinter<O, E> {
    /// Findings to `out`, the rest to `err`.
    pub fn new(out: O, err: E, style: Style) -> Self {
        FindingPrinter {
            out,
            err,
            style,
            groups: Groups::default(),
            meta: EventMeta::new(16),
            lost: vec![0; MAX_PROBES as usize],
            first_ts: None,
            summary: PrintSummary::default(),
        }
    }

    pub fn summary(&self) -> &PrintSummary {
        &self.summary
    }

    pub fn into_summary(self) -> PrintSummary {
        self.summary
    }

    /// Prints the first findings of each group and a line per decade of
    /// each group's count; the rest are only counted.
    fn emit(&mut self, found: &mut Vec<Finding>) -> io::Result<()> {
        let base = self.first_ts.unwrap_or(0);
        for f in found.drain(..) {
            self.summary.findings += 1;
            let g = GroupInput::of(&f);
            let placed = self.groups.add(g, || ());
            if placed.example {
                match self.style {
                    Style::Line => writeln!(
                        self.out,
                        "{}",
                        finding_line(&finding_row(&f, &self.meta), base)
                    )?,
                    Style::Block => render_finding(&mut self.out, &f)?,
                }
            } else if is_decade(placed.count) {
                let first = match placed.group.and_then(|i| self.groups.get(i)) {
                    Some(grp) => grp.span.first_id,
                    None => self.groups.overflow().span.first_id,
                };
                writeln!(self.out, "{}", decade_line(&g, &placed, first, base))?;
            }
        }
        Ok(())
    }

    fn lost(&mut self, probe: u16, total: u64) -> io::Result<()> {
        if let Some(l) = self.lost.get_mut(usize::from(probe)) {
            if total > *l {
                self.summary.lost += total - *l;
                *l = total;
                let name = ProbeId::from_u16(probe).map_or("?", |p| p.name());
                writeln!(self.err, "detector: lost events: {name} total {total}")?;
            }
        }
        Ok(())
    }
}

impl<O: Write, E: Write> Sink for FindingPrinter<O, E> {
    fn item(&mut self, index: u64, item: &StreamItem, found: &mut Vec<Finding>) -> io::Result<()> {
        self.summary.items += 1;
        self.meta.record(index, item);
        match item {
            StreamItem::Event(ev) => {
                self.first_ts.get_or_insert(ev.ts_ns);
            }
            StreamItem::Lost { probe, total, .. } => self.lost(*probe, *total)?,
        }
        // Printed as they arrive (a pull can be long), while the
        // evidence's CPU and pid are still in `meta`.
        if !found.is_empty() {
            self.emit(found)?;
        }
        Ok(())
    }

    fn pulled(&mut self, _ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.out.flush()
    }

    fn record_failed(&mut self, e: &TraceError) -> io::Result<()> {
        writeln!(self.err, "detector: recording stopped: {e}")?;
        self.summary.record_error = Some(e.to_string());
        Ok(())
    }

    fn finish(&mut self, found: &mut Vec<Finding>, ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.emit(found)?;
        self.out.flush()?;
        self.summary.end = match ctx.end {
            Some(End::Finished(how)) | Some(End::Stopped(how)) => how.clone(),
            Some(End::Failed(e)) => format!("source failed: {e}"),
            None => String::new(),
        };
        if self.summary.record_error.is_none() {
            self.summary.record_error = ctx.record_error.map(ToString::to_string);
        }
        let s = &self.summary;
        writeln!(
            self.err,
            "detector: {} items, {} findings, {} events lost; {}",
            s.items, s.findings, s.lost, s.end
        )?;
        let base = self.first_ts.unwrap_or(0);
        for g in self.groups.groups().iter().filter(|g| g.span.count > 1) {
            writeln!(self.err, "detector: group: {}", group_line(g, base))?;
        }
        let o = self.groups.overflow();
        if o.span.count > 0 {
            writeln!(
                self.err,
                "detector: {} findings of kinds beyond the group limit: #{}..#{}",
                o.span.count, o.span.first_id, o.span.last_id
            )?;
        }
        self.err.flush()
    }
}
