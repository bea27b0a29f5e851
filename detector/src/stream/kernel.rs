//! The running kernel as a source: the probes attached, the ring buffer
//! read on the caller's thread, lost-event totals polled into the stream
//! where they were seen, and (for the live view) the probes' run time.
//!
//! This is the one capture loop: `record` pulls from it directly, the live
//! view through a capture thread and a
//! [`ChannelSource`](super::channel::ChannelSource).

use std::time::{Duration, Instant};

use detector_common::{Event, MAX_PROBES};

use crate::bpfstats::{CostUpdate, LiveCosts};
use crate::event::{monotonic_ns, StreamItem};
use crate::loader::privileges::{self, Kept, Need, PrivilegeError};
use crate::loader::{self, LoadOptions, Loaded};
use crate::trace::TraceHeader;

use super::capture::{Capture, CaptureError};
use super::source::{Item, Pull, Source, SourceError, SourceInfo};

/// How often the per-probe lost counters are read.
const LOST_EVERY: Duration = Duration::from_millis(250);

/// A capture of the running kernel. Dropping it detaches every probe.
pub struct KernelSource {
    // Dropped before the runtime it is registered with.
    cap: Capture,
    rt: tokio::runtime::Runtime,
    header: TraceHeader,
    info: SourceInfo,
    next_index: u64,
    last_lost_poll: Instant,
    lost: Vec<StreamItem>,
    costs: Option<LiveCosts>,
}

impl KernelSource {
    /// Loads and attaches the probes. Errors are one sentence (no root, no
    /// BTF, nothing attachable...).
    pub fn start(opts: &LoadOptions) -> Result<Self, SourceError> {
        loader::preflight().map_err(CaptureError::from)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| SourceError::Start {
                what: "capture runtime",
                source,
            })?;
        // The ring buffer registers with the runtime's reactor.
        let cap = {
            let _in_runtime = rt.enter();
            Capture::start(opts)?
        };
        let l = cap.loaded();
        let header =
            TraceHeader::for_this_host("live", &l.layout, l.plan.clone(), u64::from(l.ring_bytes));
        let info = SourceInfo {
            title: String::from("live"),
            kernel_release: header.kernel_release.clone(),
            plan: header.plan.clone(),
            live: true,
            degraded: loader::degraded_statement(&header.plan),
        };
        Ok(KernelSource {
            cap,
            rt,
            header,
            info,
            next_index: 0,
            last_lost_poll: Instant::now(),
            lost: Vec::new(),
            costs: None,
        })
    }

    /// Also measure what each probe costs, read about once a second
    /// ([`Source::take_costs`]). This turns the kernel's BPF statistics on,
    /// which itself costs a little per program run.
    pub fn with_live_costs(mut self) -> Self {
        self.costs = Some(LiveCosts::start(self.cap.loaded()));
        self
    }

    /// The reading to show before the first one is due.
    pub fn initial_costs(&self) -> Option<&CostUpdate> {
        self.costs.as_ref().map(LiveCosts::initial)
    }

    pub fn loaded(&self) -> &Loaded {
        self.cap.loaded()
    }

    /// Drops every capability this thread no longer needs, once everything
    /// that needs one is done (statistics turned on, files created): what
    /// is kept is what reading the maps needs on this kernel, found by
    /// trying, plus what `also` needs (a rotating recording's directory).
    pub fn drop_privileges(&self, mut also: Option<Need<'_>>) -> Result<Kept, PrivilegeError> {
        let mut maps = || self.cap.can_read_maps();
        let mut needs = vec![Need {
            candidates: privileges::BPF_READ_CANDIDATES,
            check: &mut maps,
        }];
        // Reborrowed, so that both needs share this call's lifetime.
        needs.extend(also.as_mut().map(|n| Need {
            candidates: n.candidates,
            check: &mut *n.check,
        }));
        privileges::drop_privileges(&mut needs)
    }

    /// Lost totals as last polled, indexed by probe id.
    pub fn lost_totals(&self) -> &[u64; MAX_PROBES as usize] {
        self.cap.lost_totals()
    }

    /// The part of the lost totals that the kernel skipped (a probe
    /// already running on that CPU) rather than the ring buffer dropped.
    pub fn skipped_totals(&self) -> &[u64; MAX_PROBES as usize] {
        self.cap.skipped_totals()
    }

    /// Bytes of ring records read so far, the ring buffer's record headers
    /// left out.
    pub fn ring_bytes(&self) -> u64 {
        self.cap.ring_bytes
    }

    /// Lost totals that changed since the last poll, into the stream.
    fn poll_lost(&mut self, f: &mut dyn FnMut(u64, Item<'_>)) -> Result<(), SourceError> {
        self.last_lost_poll = Instant::now();
        self.lost.clear();
        self.cap.poll_lost(monotonic_ns(), &mut self.lost)?;
        for item in &self.lost {
            f(self.next_index, Item::Decoded(item));
            self.next_index += 1;
        }
        Ok(())
    }
}

/// Hands one event to `f`. Always decoded: the ring buffer holds packed
/// records, not the trace file's bytes, so handing them over undecoded
/// would mean encoding each event only for the recorder to decode it again.
fn hand_over(next: &mut u64, ev: &Event, f: &mut dyn FnMut(u64, Item<'_>)) {
    f(*next, Item::Decoded(&StreamItem::Event(*ev)));
    *next += 1;
}

impl Source for KernelSource {
    fn info(&self) -> SourceInfo {
        self.info.clone()
    }

    fn header(&self) -> &TraceHeader {
        &self.header
    }

    fn pull(
        &mut self,
        wait: Duration,
        _raw: bool,
        f: &mut dyn FnMut(u64, Item<'_>),
    ) -> Result<Pull, SourceError> {
        let next = &mut self.next_index;
        let read = self
            .rt
            .block_on(self.cap.read_events(wait, &mut |b| hand_over(next, b, f)))
            .map_err(SourceError::from)?;
        // Nothing waits on aya-log's ring buffer: the programs' reports are
        // rare, and each pass reads them, at most `wait` after they were sent.
        self.cap.flush_bpf_log();
        let mut lost = 0;
        if self.last_lost_poll.elapsed() >= LOST_EVERY {
            let before = self.next_index;
            self.poll_lost(f)?;
            lost = self.next_index - before;
        }
        Ok(if read > 0 || lost > 0 {
            Pull::Items
        } else {
            Pull::Idle
        })
    }

    fn drain(&mut self, _raw: bool, f: &mut dyn FnMut(u64, Item<'_>)) -> Result<(), SourceError> {
        let next = &mut self.next_index;
        self.cap.drain_events(&mut |b| hand_over(next, b, f));
        self.cap.flush_bpf_log();
        self.poll_lost(f)
    }

    fn clock_ns(&self) -> Option<u64> {
        Some(monotonic_ns())
    }

    /// Ring-buffer records that did not parse (a mismatched object).
    fn malformed(&self) -> u64 {
        self.cap.malformed
    }

    fn take_costs(&mut self, out: &mut CostUpdate) -> bool {
        let Some(costs) = self.costs.as_mut() else {
            return false;
        };
        match costs.poll(self.cap.loaded()) {
            Some(u) => {
                out.clone_from(u);
                true
            }
            None => false,
        }
    }
}
