//! The one loop: Source → Recorder → Analyzer → Sink.
//!
//! Every command that moves a stream runs it: `record` (with or without
//! `--analyze`), `live` and `live --plain`, `replay`, the VM checks. Items
//! reach the recorder, the analyzer and the sink in stream order with the
//! index the source gave them, which is what makes a replay of a recording
//! produce exactly the live findings.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::analyzer::{Analyzer, Finding};
use crate::event::StreamItem;
use crate::trace::{TraceError, TraceSummary};

use super::analysis::{analyzer_for, AnalyzerSetup};
use super::recorder::Recorder;
use super::source::{Item, Pull, Source, SourceError};

/// Where the stream's items and findings go.
pub trait Sink {
    /// Whether the sink reads items. When neither it nor an analyzer does,
    /// a raw-capable source hands events straight to the recorder.
    fn wants_items(&self) -> bool {
        true
    }
    /// One item, after the recorder and the analyzer saw it. `found` holds
    /// the findings it completed; take what you keep, the rest is dropped.
    fn item(&mut self, index: u64, item: &StreamItem, found: &mut Vec<Finding>) -> io::Result<()>;
    /// A pull handed over items: everything so far is recorded and
    /// analyzed.
    fn pulled(&mut self, _ctx: &mut Ctx<'_>) -> io::Result<()> {
        Ok(())
    }
    /// Nothing arrived within the wait.
    fn idle(&mut self, _ctx: &mut Ctx<'_>) -> io::Result<()> {
        Ok(())
    }
    /// The recording failed; the stream goes on without it
    /// ([`OnRecordError::Continue`]).
    fn record_failed(&mut self, _e: &TraceError) -> io::Result<()> {
        Ok(())
    }
    /// The stream is over; the analyzer has not yet closed what is open.
    fn before_finish(&mut self, _analyzer: &Analyzer) {}
    /// The end: `found` holds what the analyzer's finish completed, the
    /// recording is finished.
    fn finish(&mut self, found: &mut Vec<Finding>, ctx: &mut Ctx<'_>) -> io::Result<()>;
}

/// No sink: nothing reads the items (a plain recording).
impl<S: Sink> Sink for Option<S> {
    fn wants_items(&self) -> bool {
        self.as_ref().is_some_and(Sink::wants_items)
    }
    fn item(&mut self, index: u64, item: &StreamItem, found: &mut Vec<Finding>) -> io::Result<()> {
        self.as_mut().map_or(Ok(()), |s| s.item(index, item, found))
    }
    fn pulled(&mut self, ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.as_mut().map_or(Ok(()), |s| s.pulled(ctx))
    }
    fn idle(&mut self, ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.as_mut().map_or(Ok(()), |s| s.idle(ctx))
    }
    fn record_failed(&mut self, e: &TraceError) -> io::Result<()> {
        self.as_mut().map_or(Ok(()), |s| s.record_failed(e))
    }
    fn before_finish(&mut self, analyzer: &Analyzer) {
        if let Some(s) = self.as_mut() {
            s.before_finish(analyzer);
        }
    }
    fn finish(&mut self, found: &mut Vec<Finding>, ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.as_mut().map_or(Ok(()), |s| s.finish(found, ctx))
    }
}

/// What a sink may look at between items.
pub struct Ctx<'a> {
    pub source: &'a mut dyn Source,
    pub analyzer: Option<&'a Analyzer>,
    /// The recording's path and bytes so far, while it goes on.
    pub recording: Option<(&'a Path, u64)>,
    /// Why the recording stopped, when it failed.
    pub record_error: Option<&'a TraceError>,
    /// At [`Sink::finish`]: how the stream ended.
    pub end: Option<&'a End>,
}

/// What a failed write to the recording does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnRecordError {
    /// The run fails (`record`: the file is the point).
    Fail,
    /// The recording stops and the stream goes on (the live view).
    Continue,
}

/// How a stream ended.
#[derive(Debug)]
pub enum End {
    /// The source finished; how (shown to the user).
    Finished(String),
    /// The stop condition said so; why.
    Stopped(String),
    Failed(SourceError),
}

impl End {
    /// The footer's stop reason for a recording of the stream.
    pub fn reason(&self) -> &str {
        match self {
            End::Finished(s) | End::Stopped(s) => s,
            End::Failed(_) => "source failed",
        }
    }
}

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("writing the trace file failed: {0}")]
    Record(#[source] TraceError),
    #[error("{0}")]
    Sink(#[source] io::Error),
}

/// What a run did.
pub struct Outcome {
    pub end: End,
    /// Items handed over by the source.
    pub items: u64,
    /// The analyzer after its finish (its windows, counters, lifetimes).
    pub analyzer: Option<Analyzer>,
    /// The finished recording, or why writing it failed.
    pub recording: Option<Result<TraceSummary, TraceError>>,
}

type StopWhen<'a> = Box<dyn FnMut() -> Option<String> + 'a>;

/// How often a live stream's recording is flushed ([`Recorder::flush`]):
/// a v2 trace then never holds more than this much of a quiet stream in a
/// block not yet written, so a killed recorder loses at most about a
/// second of events (plus what the ring buffer held).
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// A configured run over one source.
pub struct Pipeline<'a> {
    source: &'a mut dyn Source,
    recorder: Option<Box<dyn Recorder>>,
    on_record_error: OnRecordError,
    analyzer: Option<Analyzer>,
    wait: Duration,
    stop: Option<StopWhen<'a>>,
}

impl<'a> Pipeline<'a> {
    pub fn new(source: &'a mut dyn Source) -> Self {
        Pipeline {
            source,
            recorder: None,
            on_record_error: OnRecordError::Fail,
            analyzer: None,
            wait: Duration::from_millis(50),
            stop: None,
        }
    }

    /// Runs the analyzer, built for this source's plan.
    pub fn analyze(mut self, setup: &AnalyzerSetup) -> Self {
        self.analyzer = Some(analyzer_for(&self.source.header().plan, setup));
        self
    }

    /// Records every item.
    pub fn record(mut self, recorder: Box<dyn Recorder>, on_error: OnRecordError) -> Self {
        self.recorder = Some(recorder);
        self.on_record_error = on_error;
        self
    }

    /// How long one pull may wait before the stop condition is looked at
    /// again (and, live, how stale a quiet stream may get).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Ends the run, after handing over what the source already captured,
    /// when `f` returns why.
    pub fn stop_when(mut self, f: impl FnMut() -> Option<String> + 'a) -> Self {
        self.stop = Some(Box::new(f));
        self
    }

    pub fn run<S: Sink + ?Sized>(self, sink: &mut S) -> Result<Outcome, PipelineError> {
        let Pipeline {
            source,
            recorder,
            on_record_error,
            analyzer,
            wait,
            mut stop,
        } = self;
        let raw = analyzer.is_none()
            && !sink.wants_items()
            && source.raw_capable()
            && recorder.as_ref().is_some_and(|r| r.accepts_raw());
        // Files replay as fast as they read and end with a footer; only a
        // live stream (time passes without events) needs flushing by time.
        let flush_every = source.clock_ns().is_some().then_some(FLUSH_EVERY);
        let mut last_flush = Instant::now();
        let mut flow = Flow {
            recorder,
            on_record_error,
            record_error: None,
            analyzer,
            found: Vec::new(),
            items: 0,
            failed: None,
        };
        let end = loop {
            if let Some(why) = stop.as_mut().and_then(|f| f()) {
                let drained = source.drain(raw, &mut |i, it| flow.step(sink, i, it));
                flow.check()?;
                break match drained {
                    Ok(()) => End::Stopped(why),
                    Err(e) => End::Failed(e),
                };
            }
            let pulled = source.pull(wait, raw, &mut |i, it| flow.step(sink, i, it));
            flow.check()?;
            if flush_every.is_some_and(|every| last_flush.elapsed() >= every) {
                last_flush = Instant::now();
                flow.flush(sink);
                flow.check()?;
            }
            let mut ctx = flow.ctx(source);
            match pulled {
                Ok(Pull::Items) => sink.pulled(&mut ctx),
                Ok(Pull::Idle) => sink.idle(&mut ctx),
                Ok(Pull::End(how)) => break End::Finished(how),
                Err(e) => break End::Failed(e),
            }
            .map_err(PipelineError::Sink)?;
        };
        if let Some(a) = flow.analyzer.as_mut() {
            sink.before_finish(a);
            a.finish(&mut flow.found);
        }
        let finished = flow.recorder.take().map(|r| r.finish(end.reason()));
        let recording = match flow.record_error.take() {
            Some(e) => Some(Err(e)),
            None => finished,
        };
        let recording = match (on_record_error, recording) {
            (OnRecordError::Fail, Some(Err(e))) => return Err(PipelineError::Record(e)),
            (_, r) => r,
        };
        let mut ctx = Ctx {
            source,
            analyzer: flow.analyzer.as_ref(),
            recording: None,
            record_error: recording.as_ref().and_then(|r| r.as_ref().err()),
            end: Some(&end),
        };
        sink.finish(&mut flow.found, &mut ctx)
            .map_err(PipelineError::Sink)?;
        Ok(Outcome {
            end,
            items: flow.items,
            analyzer: flow.analyzer,
            recording,
        })
    }
}

/// The per-item path and what it accumulates.
struct Flow {
    recorder: Option<Box<dyn Recorder>>,
    on_record_error: OnRecordError,
    /// Why the recording stopped mid-stream ([`OnRecordError::Continue`]).
    record_error: Option<TraceError>,
    analyzer: Option<Analyzer>,
    found: Vec<Finding>,
    items: u64,
    /// A fatal error met inside a pull; the rest of the pull is skipped.
    failed: Option<PipelineError>,
}

impl Flow {
    #[inline]
    fn step<S: Sink + ?Sized>(&mut self, sink: &mut S, index: u64, item: Item<'_>) {
        if self.failed.is_some() {
            return;
        }
        self.items += 1;
        let item = match item {
            Item::Raw(b) => {
                let r = self.recorder.as_mut().map(|r| r.write_raw(b));
                if let Some(Err(e)) = r {
                    self.record_failed(sink, e);
                }
                return;
            }
            Item::Decoded(item) => item,
        };
        if let Some(Err(e)) = self.recorder.as_mut().map(|r| r.write(item)) {
            self.record_failed(sink, e);
        }
        if let Some(a) = self.analyzer.as_mut() {
            a.process(index, item, &mut self.found);
        }
        if let Err(e) = sink.item(index, item, &mut self.found) {
            self.failed = Some(PipelineError::Sink(e));
        }
        self.found.clear();
    }

    /// Flushes the recording (time-based, live streams only).
    fn flush<S: Sink + ?Sized>(&mut self, sink: &mut S) {
        if let Some(Err(e)) = self.recorder.as_mut().map(|r| r.flush()) {
            self.record_failed(sink, e);
        }
    }

    fn record_failed<S: Sink + ?Sized>(&mut self, sink: &mut S, e: TraceError) {
        match self.on_record_error {
            OnRecordError::Fail => self.failed = Some(PipelineError::Record(e)),
            OnRecordError::Continue => {
                // The file is left without a footer: a reader reports it
                // as cut off where the writing failed.
                self.recorder = None;
                if let Err(io) = sink.record_failed(&e) {
                    self.failed = Some(PipelineError::Sink(io));
                }
                self.record_error = Some(e);
            }
        }
    }

    fn check(&mut self) -> Result<(), PipelineError> {
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn ctx<'b>(&'b self, source: &'b mut dyn Source) -> Ctx<'b> {
        Ctx {
            source,
            analyzer: self.analyzer.as_ref(),
            recording: self.recorder.as_ref().map(|r| (r.path(), r.bytes())),
            record_error: self.record_error.as_ref(),
            end: None,
        }
    }
}
