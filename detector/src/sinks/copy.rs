//! A stream written back out as a trace file (`export --format trace`):
//! with [`Redacting`] in front, a redacted copy to share.

use std::io::{self, Write};

use crate::analyzer::Finding;
use crate::event::StreamItem;
use crate::stream::{Ctx, Sink};
use crate::trace::{
    EndState, Redactor, TraceEnd, TraceError, TraceFormat, TraceHeader, TraceSummary, TraceWriter,
};

pub struct TraceCopy<W: Write> {
    w: TraceWriter<W>,
    last_ts: u64,
}

impl<W: Write> TraceCopy<W> {
    /// Writes `header` (as given: redact it first for a redacted copy).
    pub fn new(out: W, header: &TraceHeader, name: String) -> Result<Self, TraceError> {
        Self::with_format(out, header, name, TraceFormat::default())
    }

    /// As [`new`](Self::new), in the given trace format.
    pub fn with_format(
        out: W,
        header: &TraceHeader,
        name: String,
        format: TraceFormat,
    ) -> Result<Self, TraceError> {
        Ok(TraceCopy {
            w: TraceWriter::with_format(out, header, name, format)?,
            last_ts: header.start_monotonic_ns,
        })
    }

    /// Records written.
    pub fn records(&self) -> u64 {
        self.w.records_written()
    }

    /// Writes the footer. A complete source keeps its end (time, reason);
    /// one that was cut off or damaged ends at its last item, and the
    /// footer's reason says how the source ended.
    pub fn finish_file(self, source_end: Option<&EndState>) -> Result<TraceSummary, TraceError> {
        let end = match source_end {
            Some(EndState::Complete { footer }) => TraceEnd {
                end_monotonic_ns: footer.end_monotonic_ns,
                end_realtime_ns: Some(footer.end_realtime_ns),
                stop_reason: footer.stop_reason.clone(),
            },
            Some(other) => {
                TraceEnd::at(self.last_ts, format!("copy of a trace that ended: {other}"))
            }
            None => TraceEnd::at(self.last_ts, "copy stopped before the end of its source"),
        };
        self.w.finish(end)
    }
}

impl<W: Write> Sink for TraceCopy<W> {
    fn item(
        &mut self,
        _index: u64,
        item: &StreamItem,
        _found: &mut Vec<Finding>,
    ) -> io::Result<()> {
        self.last_ts = self.last_ts.max(item.ts_ns());
        self.w.write_item(item).map_err(io::Error::other)
    }

    fn finish(&mut self, _found: &mut Vec<Finding>, _ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.w.flush().map_err(io::Error::other)
    }
}

/// Hands the inner sink every item with its kernel addresses redacted
/// (`export --redact`); with no redactor, the items as they are.
pub struct Redacting<S> {
    pub inner: S,
    redact: Option<Redactor>,
}

impl<S: Sink> Redacting<S> {
    pub fn new(inner: S, redact: Option<Redactor>) -> Self {
        Redacting { inner, redact }
    }
}

impl<S: Sink> Sink for Redacting<S> {
    fn wants_items(&self) -> bool {
        self.inner.wants_items()
    }

    fn item(&mut self, index: u64, item: &StreamItem, found: &mut Vec<Finding>) -> io::Result<()> {
        match &self.redact {
            Some(r) => self.inner.item(index, &r.item(item), found),
            None => self.inner.item(index, item, found),
        }
    }

    fn pulled(&mut self, ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.inner.pulled(ctx)
    }

    fn idle(&mut self, ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.inner.idle(ctx)
    }

    fn record_failed(&mut self, e: &TraceError) -> io::Result<()> {
        self.inner.record_failed(e)
    }

    fn before_finish(&mut self, analyzer: &crate::analyzer::Analyzer) {
        self.inner.before_finish(analyzer);
    }

    fn finish(&mut self, found: &mut Vec<Finding>, ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.inner.finish(found, ctx)
    }
}
