//! Where stream items come from. The kernel capture, a trace file and a
//! capture thread's channel all implement [`Source`], so the pipeline and
//! every sink cannot tell them apart.

use std::time::Duration;

use detector_common::EVENT_SIZE;
use thiserror::Error;

use crate::bpfstats::CostUpdate;
use crate::event::StreamItem;
use crate::plan::PlanEntry;
use crate::trace::{TraceError, TraceHeader};

use super::capture::CaptureError;

/// Items handed over per pull at most by the sources that choose (a file,
/// a channel): large enough to amortise a sink's per-pull work (the UI's
/// model lock), small enough that a frame never waits long for it.
pub const BATCH: usize = 2048;

/// Where the stream comes from, shown from the first frame on.
#[derive(Clone, Debug, Default)]
pub struct SourceInfo {
    /// "replay trace.dtr (x10)", "live", ...
    pub title: String,
    pub kernel_release: String,
    pub plan: Vec<PlanEntry>,
    /// A running kernel, not a recording: time passes without events, and
    /// the analyzer's configuration starts from the defaults rather than
    /// from a trace header.
    pub live: bool,
    /// What this plan cannot see, when it is degraded (shown loudly).
    pub degraded: Option<String>,
}

/// One item as a source hands it over.
#[derive(Clone, Copy, Debug)]
pub enum Item<'a> {
    Decoded(&'a StreamItem),
    /// An event as the trace file's bytes, not decoded: only from a source
    /// that is [`Source::raw_capable`], and only when the pull asked for it.
    Raw(&'a [u8; EVENT_SIZE]),
}

/// What one pull produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pull {
    /// Items were handed over.
    Items,
    /// Nothing arrived within the wait; time still passes.
    Idle,
    /// The source is finished; the text says how (shown to the user).
    End(String),
}

#[derive(Debug, Error)]
pub enum SourceError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// Not a `source`: the sentence already holds the cause, and an error
    /// chain printer would repeat it.
    #[error("the live capture stopped: {0}")]
    Capture(CaptureError),
    /// The probes could not be loaded (no capability, no BTF, nothing
    /// attachable): the capture never started.
    #[error(transparent)]
    Load(crate::loader::LoadError),
    #[error("cannot start the {what}: {source}")]
    Start {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the capture thread ended before the probes were attached")]
    CaptureGone,
    #[error("the thread reading the trace file stopped before the file's end (a bug: please report it with the file)")]
    ReaderGone,
    #[error(transparent)]
    Privileges(#[from] crate::loader::privileges::PrivilegeError),
}

impl From<CaptureError> for SourceError {
    fn from(e: CaptureError) -> Self {
        match e {
            CaptureError::Load(e) => SourceError::Load(e),
            other => SourceError::Capture(other),
        }
    }
}

pub trait Source: Send {
    /// Title, kernel and probe plan.
    fn info(&self) -> SourceInfo;
    /// The header a recording of this stream starts from: the file's own,
    /// or this host, the resolved layout and the plan for a capture.
    fn header(&self) -> &TraceHeader;
    /// Hands items to `f`, each with its position in the stream, waiting at
    /// most `wait` for the first. With `raw`, a raw-capable source hands
    /// events over as [`Item::Raw`]; lost-event items stay decoded.
    fn pull(
        &mut self,
        wait: Duration,
        raw: bool,
        f: &mut dyn FnMut(u64, Item<'_>),
    ) -> Result<Pull, SourceError>;
    /// Whether [`pull`](Self::pull) can hand events over undecoded.
    fn raw_capable(&self) -> bool {
        false
    }
    /// Hands over what is already captured, without waiting: a stopped
    /// capture loses nothing the kernel delivered. Files and channels have
    /// nothing pending that a stop should still deliver.
    fn drain(&mut self, _raw: bool, _f: &mut dyn FnMut(u64, Item<'_>)) -> Result<(), SourceError> {
        Ok(())
    }
    /// The stream clock now, for sources where time passes without events
    /// (a quiet live system). `None` for files, whose clock is the trace.
    fn clock_ns(&self) -> Option<u64> {
        None
    }
    /// The newest per-probe run-time reading into `out`, when one arrived
    /// since the last call. Files have none: a trace records events, not
    /// what the probes cost.
    fn take_costs(&mut self, _out: &mut CostUpdate) -> bool {
        false
    }
    /// Records the source could not turn into items (a ring-buffer record
    /// that did not parse), so far. Files report damage through their end
    /// state instead.
    fn malformed(&self) -> u64 {
        0
    }
    /// [`pull`](Self::pull) into a buffer, decoded.
    fn pull_into(
        &mut self,
        buf: &mut Vec<(u64, StreamItem)>,
        wait: Duration,
    ) -> Result<Pull, SourceError> {
        self.pull(wait, false, &mut |index, item| {
            if let Item::Decoded(i) = item {
                buf.push((index, *i));
            }
        })
    }
}
