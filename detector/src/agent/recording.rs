//! The agent's continuous recording (`--record FILE [--rotate-size S
//! --rotate-keep N]`): a [`TraceRecorder`] that never stops the stream.
//!
//! A write that fails (a full disk, a removed directory) is counted and
//! logged, the file is left as it is (a reader reports it cut off where
//! the writing failed), and a new capture is started at the path once the
//! backoff runs out or on SIGHUP; events in between are not recorded. A
//! reopen (SIGHUP) finishes the file being written and starts the next
//! segment at the path: with rotation the finished one becomes `FILE.1`,
//! without it the finished file stays wherever logrotate moved it.
//!
//! The pipeline owns the recorder, so requests from the sink's side (the
//! SIGHUP it noticed, a flush once a second) arrive through [`Requests`],
//! one relaxed load per item.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::jsonl::{FIRST_BACKOFF, MAX_BACKOFF};
use super::metrics::AgentMetrics;
use crate::event::StreamItem;
use crate::stream::{Recorder, TraceRecorder};
use crate::trace::{Redactor, RotationPolicy, TraceError, TraceHeader, TraceSummary};

const REOPEN: u8 = 1;
const FLUSH: u8 = 2;

/// Items between two looks at the clock while the recording is broken.
const RETRY_CHECK_EVERY: u32 = 256;

/// What the sink asks of the recorder it cannot reach.
#[derive(Clone, Debug, Default)]
pub struct Requests(Arc<AtomicU8>);

impl Requests {
    /// Finish the file and start the next segment (SIGHUP).
    pub fn reopen(&self) {
        self.0.fetch_or(REOPEN, Relaxed);
    }

    /// Write what is buffered (so a quiet stream reaches the disk).
    pub fn flush(&self) {
        self.0.fetch_or(FLUSH, Relaxed);
    }

    fn take(&self) -> u8 {
        // A plain load first: the common case, nothing asked, costs no
        // locked instruction per item.
        if self.0.load(Relaxed) == 0 {
            return 0;
        }
        self.0.swap(0, Relaxed)
    }
}

/// How the recording is made, to start it again after a failure.
pub struct RecordingPlan {
    pub path: PathBuf,
    pub header: TraceHeader,
    pub rotation: Option<RotationPolicy>,
    pub redact: bool,
}

impl RecordingPlan {
    fn start(&self) -> Result<TraceRecorder, TraceError> {
        // A restarted capture gets a new redaction key: pseudonyms are
        // stable within one capture, as with `record --redact`.
        let redact = if self.redact {
            Some(Redactor::new().map_err(|e| {
                TraceError::io(
                    "create",
                    &self.path.display().to_string(),
                    std::io::Error::other(e.to_string()),
                )
            })?)
        } else {
            None
        };
        TraceRecorder::create_with(&self.path, &self.header, self.rotation, redact)
    }
}

pub struct AgentRecorder {
    plan: RecordingPlan,
    rec: Option<TraceRecorder>,
    requests: Requests,
    metrics: Arc<AgentMetrics>,
    backoff: Duration,
    retry_at: Option<Instant>,
    until_check: u32,
    last_error: Option<String>,
}

impl AgentRecorder {
    /// Starts the recording (an error here is a configuration problem and
    /// is returned: nothing runs yet).
    pub fn start(
        plan: RecordingPlan,
        requests: Requests,
        metrics: Arc<AgentMetrics>,
    ) -> Result<AgentRecorder, TraceError> {
        let rec = plan.start()?;
        Ok(AgentRecorder {
            plan,
            rec: Some(rec),
            requests,
            metrics,
            backoff: FIRST_BACKOFF,
            retry_at: None,
            until_check: 0,
            last_error: None,
        })
    }

    /// Whether items are being recorded (not waiting for a restart).
    pub fn is_recording(&self) -> bool {
        self.rec.is_some()
    }

    fn failed(&mut self, what: &str, e: &TraceError) {
        self.metrics.problems.recording_errors.fetch_add(1, Relaxed);
        self.rec = None;
        self.retry_at = Some(Instant::now() + self.backoff);
        self.until_check = 0;
        log::error!(
            "{what} the recording {} failed ({e}); events are not recorded until it starts again \
             (in {:?}, or on SIGHUP)",
            self.plan.path.display(),
            self.backoff
        );
        self.last_error = Some(e.to_string());
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn restart(&mut self) {
        match self.plan.start() {
            Ok(r) => {
                self.rec = Some(r);
                self.retry_at = None;
                self.backoff = FIRST_BACKOFF;
                self.metrics
                    .problems
                    .recording_reopens
                    .fetch_add(1, Relaxed);
                log::info!(
                    "the recording {} started again (a new capture: earlier segments of the \
                     path were replaced)",
                    self.plan.path.display()
                );
            }
            Err(e) => self.failed("restarting", &e),
        }
    }

    fn handle_requests(&mut self) {
        let req = self.requests.take();
        if req & REOPEN != 0 {
            match self.rec.as_mut() {
                Some(r) => match r.start_next_segment() {
                    Ok(()) => {
                        self.metrics
                            .problems
                            .recording_reopens
                            .fetch_add(1, Relaxed);
                        log::info!(
                            "the recording {} was reopened (the next segment started)",
                            self.plan.path.display()
                        );
                    }
                    Err(e) => self.failed("reopening", &e),
                },
                None => self.restart(),
            }
        }
        if req & FLUSH != 0 {
            if let Some(Err(e)) = self.rec.as_mut().map(TraceRecorder::flush) {
                self.failed("flushing", &e);
            }
        }
    }

    /// Broken: every so many items, see whether the backoff ran out.
    fn maybe_restart(&mut self) {
        if self.until_check > 0 {
            self.until_check -= 1;
            return;
        }
        self.until_check = RETRY_CHECK_EVERY;
        if self.retry_at.is_some_and(|t| Instant::now() >= t) {
            self.restart();
        }
    }
}

impl Recorder for AgentRecorder {
    fn write(&mut self, item: &StreamItem) -> Result<(), TraceError> {
        self.handle_requests();
        if self.rec.is_none() {
            self.maybe_restart();
        }
        if let Some(Err(e)) = self.rec.as_mut().map(|r| r.write(item)) {
            self.failed("writing", &e);
        }
        // Never an error: the stream goes on without the file.
        Ok(())
    }

    fn bytes(&self) -> u64 {
        self.rec.as_ref().map_or(0, Recorder::bytes)
    }

    fn path(&self) -> &Path {
        &self.plan.path
    }

    fn finish(self: Box<Self>, reason: &str) -> Result<TraceSummary, TraceError> {
        let AgentRecorder {
            plan,
            rec,
            metrics,
            last_error,
            ..
        } = *self;
        match rec {
            Some(r) => Box::new(r).finish(reason).inspect_err(|_| {
                metrics.problems.recording_errors.fetch_add(1, Relaxed);
            }),
            None => Err(TraceError::io(
                "write",
                &plan.path.display().to_string(),
                std::io::Error::other(
                    last_error.unwrap_or_else(|| "the recording was not running".to_string()),
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{existing_segments, read_all};
    use detector_common::Event;

    fn item(i: u64) -> StreamItem {
        StreamItem::Event(Event {
            ts_ns: 1000 + i,
            probe: 3,
            ..Event::default()
        })
    }

    fn metrics() -> Arc<AgentMetrics> {
        Arc::new(AgentMetrics::new("k", &[], &[], false))
    }

    #[test]
    fn reopen_finishes_the_file_and_starts_the_next_segment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.trace");
        let req = Requests::default();
        let m = metrics();
        let plan = RecordingPlan {
            path: path.clone(),
            header: TraceHeader::new("agent"),
            rotation: Some(RotationPolicy {
                max_bytes: 1 << 20,
                keep: 3,
            }),
            redact: false,
        };
        let mut r = Box::new(AgentRecorder::start(plan, req.clone(), m.clone()).unwrap());
        r.write(&item(1)).unwrap();
        r.write(&item(2)).unwrap();
        req.reopen();
        r.write(&item(3)).unwrap();
        r.finish("stopped").unwrap();
        let segs = existing_segments(&path);
        assert_eq!(segs.len(), 2, "{segs:?}");
        let (_, old, end) = read_all(&segs[0]).unwrap();
        assert!(end.is_complete());
        assert_eq!(old.len(), 2);
        let (h, new, _) = read_all(&segs[1]).unwrap();
        assert_eq!((new.len(), h.segment), (1, 1));
        assert_eq!(m.problems.recording_reopens.load(Relaxed), 1);
    }

    #[test]
    fn a_failed_write_is_counted_and_the_stream_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("gone");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("a.trace");
        let req = Requests::default();
        let m = metrics();
        let plan = RecordingPlan {
            path: path.clone(),
            header: TraceHeader::new("agent"),
            rotation: Some(RotationPolicy {
                max_bytes: 4096,
                keep: 2,
            }),
            redact: false,
        };
        let mut r = Box::new(AgentRecorder::start(plan, req.clone(), m.clone()).unwrap());
        // The directory goes away: the next rotation cannot rename into it.
        std::fs::remove_dir_all(&sub).unwrap();
        // Enough items to pass 4096 bytes in v2 (a few bytes each).
        for i in 0..5000 {
            assert!(r.write(&item(i)).is_ok());
        }
        assert!(!r.is_recording());
        assert_eq!(m.problems.recording_errors.load(Relaxed), 1);
        // SIGHUP while the directory is still gone: counted again.
        req.reopen();
        r.write(&item(500)).unwrap();
        assert!(!r.is_recording());
        assert_eq!(m.problems.recording_errors.load(Relaxed), 2);
        // The directory is back: the next reopen starts a new capture.
        std::fs::create_dir(&sub).unwrap();
        req.reopen();
        r.write(&item(501)).unwrap();
        assert!(r.is_recording());
        let s = r.finish("stopped").unwrap();
        assert_eq!(s.totals.events, 1);
        assert!(read_all(&path).unwrap().2.is_complete());
    }
}
