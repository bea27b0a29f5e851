//! Where stream items come from. The live kernel capture and a trace-file
//! replay both implement [`Source`], so the worker, the model and the views
//! cannot tell them apart.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::bpfstats::CostUpdate;
use crate::event::StreamItem;
use crate::trace::{EndState, TraceError, TraceReader};

use super::model::SourceInfo;

/// Items handed over per pull at most: large enough to amortise the model
/// lock, small enough that a frame never waits long for it.
pub const BATCH: usize = 2048;

#[derive(Debug, Error)]
pub enum SourceError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("the live capture stopped: {0}")]
    Capture(String),
}

/// What one pull produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pull {
    /// Items were appended to the buffer.
    Items,
    /// Nothing arrived within the wait; time still passes.
    Idle,
    /// The source is finished; the text says how (shown to the user).
    End(String),
}

pub trait Source: Send {
    /// Title, kernel and probe plan, shown from the first frame on.
    fn info(&self) -> SourceInfo;
    /// Appends up to [`BATCH`] items, each with its position in the stream,
    /// waiting at most `wait` for the first one.
    fn pull(
        &mut self,
        buf: &mut Vec<(u64, StreamItem)>,
        wait: Duration,
    ) -> Result<Pull, SourceError>;
    /// The stream clock now, for sources where time passes without events
    /// (a quiet live system). `None` for replays, whose clock is the trace.
    fn clock_ns(&self) -> Option<u64> {
        None
    }
    /// The newest per-probe run-time reading into `out`, when one arrived
    /// since the last call. Replays have none: a trace records events, not
    /// what the probes cost.
    fn take_costs(&mut self, _out: &mut CostUpdate) -> bool {
        false
    }
}

/// The latest run-time reading, handed from the capture thread to the
/// worker. A newer reading replaces an unread one: only the latest matters,
/// and the capture thread must never wait for the UI.
#[derive(Debug, Default)]
pub struct CostSlot {
    inner: Mutex<(bool, CostUpdate)>,
}

impl CostSlot {
    pub fn publish(&self, u: &CostUpdate) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.clone_from(u);
        g.0 = true;
    }

    /// Copies the reading into `out` if it was not taken yet.
    pub fn take(&self, out: &mut CostUpdate) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !g.0 {
            return false;
        }
        out.clone_from(&g.1);
        g.0 = false;
        true
    }
}

/// Replay speed: how many seconds of trace per second of wall time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As fast as the reader goes.
    Max,
    Factor(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            Ok(0.0) => Ok(Speed::Max),
            Ok(v) if v.is_finite() && v > 0.0 => Ok(Speed::Factor(v)),
            _ => Err(format!(
                "`{s}` is not a replay speed: give a positive factor (1 = real time) or 0/max"
            )),
        }
    }
}

/// Drives the UI from a trace file, paced by the events' timestamps.
pub struct ReplaySource {
    reader: TraceReader<File>,
    info: SourceInfo,
    speed: Speed,
    /// First timestamp and the wall time it was released at.
    anchor: Option<(u64, Instant)>,
    /// An item read but not yet due.
    pending: Option<(u64, StreamItem)>,
}

impl ReplaySource {
    pub fn open(path: &Path, speed: Speed) -> Result<Self, SourceError> {
        let reader = TraceReader::open(path)?;
        let h = reader.header();
        let speed_txt = match speed {
            Speed::Max => String::from("max speed"),
            Speed::Factor(f) => format!("x{f}"),
        };
        let info = SourceInfo {
            title: format!(
                "replay {} ({speed_txt})",
                path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned()
                )
            ),
            kernel_release: h.kernel_release.clone(),
            plan: h.plan.clone(),
            live: false,
            degraded: crate::loader::degraded_statement(&h.plan),
        };
        Ok(ReplaySource {
            reader,
            info,
            speed,
            anchor: None,
            pending: None,
        })
    }

    pub fn header(&self) -> &crate::trace::TraceHeader {
        self.reader.header()
    }

    /// When `ts` is due on the wall clock, or `None` for "now".
    fn due(&mut self, ts: u64) -> Option<Instant> {
        let Speed::Factor(f) = self.speed else {
            return None;
        };
        if ts == 0 {
            return None;
        }
        let (t0, w0) = *self.anchor.get_or_insert((ts, Instant::now()));
        let dt = ts.saturating_sub(t0) as f64 / f;
        Some(w0 + Duration::from_nanos(dt.min(u64::MAX as f64 / 2.0) as u64))
    }
}

impl Source for ReplaySource {
    fn info(&self) -> SourceInfo {
        self.info.clone()
    }

    fn pull(
        &mut self,
        buf: &mut Vec<(u64, StreamItem)>,
        wait: Duration,
    ) -> Result<Pull, SourceError> {
        let deadline = Instant::now() + wait;
        while buf.len() < BATCH {
            let next = match self.pending.take() {
                Some(p) => p,
                None => match self.reader.next_item() {
                    Some(p) => p,
                    None if buf.is_empty() => {
                        let how = match self.reader.end_state() {
                            Some(EndState::Complete { footer }) => {
                                format!("end of trace, {} records, complete", footer.records)
                            }
                            Some(EndState::Truncated { byte_offset, .. }) => {
                                format!("trace cut off at byte {byte_offset}")
                            }
                            Some(EndState::Corrupt { byte_offset, .. }) => {
                                format!("damaged record at byte {byte_offset}, replay stopped")
                            }
                            Some(EndState::ReadError { message, .. }) => {
                                format!("read error: {message}")
                            }
                            None => String::from("end of trace"),
                        };
                        return Ok(Pull::End(how));
                    }
                    None => break,
                },
            };
            if let Some(due) = self.due(next.1.ts_ns()) {
                let now = Instant::now();
                if due > now {
                    self.pending = Some(next);
                    if !buf.is_empty() || now >= deadline {
                        break;
                    }
                    std::thread::sleep((due - now).min(deadline - now));
                    continue;
                }
            }
            buf.push(next);
        }
        Ok(if buf.is_empty() {
            Pull::Idle
        } else {
            Pull::Items
        })
    }
}

/// What a capture thread sends: a batch of items in capture order, or the
/// sentence saying why the capture stopped.
pub type CaptureMsg = Result<Vec<StreamItem>, String>;

/// Live items arriving on a channel from a capture thread; the stream index
/// is assigned here, in arrival order. Dropping it tells the capture thread
/// to stop (through `stop`).
pub struct ChannelSource {
    rx: std::sync::mpsc::Receiver<CaptureMsg>,
    info: SourceInfo,
    next_index: u64,
    pending: Vec<StreamItem>,
    taken: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    costs: Option<Arc<CostSlot>>,
}

impl ChannelSource {
    pub fn new(
        rx: std::sync::mpsc::Receiver<CaptureMsg>,
        info: SourceInfo,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        ChannelSource {
            rx,
            info,
            next_index: 0,
            pending: Vec::new(),
            taken: 0,
            stop,
            costs: None,
        }
    }

    /// Per-probe run-time readings arrive through `slot`.
    pub fn with_costs(mut self, slot: Arc<CostSlot>) -> Self {
        self.costs = Some(slot);
        self
    }

    /// Moves up to [`BATCH`] pending items into `buf`.
    fn hand_over(&mut self, buf: &mut Vec<(u64, StreamItem)>) {
        let n = (self.pending.len() - self.taken).min(BATCH.saturating_sub(buf.len()));
        for item in &self.pending[self.taken..self.taken + n] {
            buf.push((self.next_index, *item));
            self.next_index += 1;
        }
        self.taken += n;
        if self.taken == self.pending.len() {
            self.pending.clear();
            self.taken = 0;
        }
    }
}

impl Drop for ChannelSource {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Source for ChannelSource {
    fn info(&self) -> SourceInfo {
        self.info.clone()
    }

    fn pull(
        &mut self,
        buf: &mut Vec<(u64, StreamItem)>,
        wait: Duration,
    ) -> Result<Pull, SourceError> {
        use std::sync::mpsc::RecvTimeoutError;
        if self.pending.is_empty() {
            match self.rx.recv_timeout(wait) {
                Ok(Ok(items)) => self.pending = items,
                Ok(Err(why)) => return Err(SourceError::Capture(why)),
                Err(RecvTimeoutError::Timeout) => return Ok(Pull::Idle),
                Err(RecvTimeoutError::Disconnected) => {
                    return Ok(Pull::End(String::from("capture stopped")))
                }
            }
        }
        self.hand_over(buf);
        Ok(if buf.is_empty() {
            Pull::Idle
        } else {
            Pull::Items
        })
    }

    fn clock_ns(&self) -> Option<u64> {
        Some(monotonic_ns())
    }

    fn take_costs(&mut self, out: &mut CostUpdate) -> bool {
        self.costs.as_ref().is_some_and(|s| s.take(out))
    }
}

/// CLOCK_MONOTONIC, the clock of every event timestamp.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
