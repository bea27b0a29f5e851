//! Items arriving on a channel from a capture thread. The live view runs
//! the [`KernelSource`] on a thread of its own so that reading the ring
//! buffer never waits for the analysis or the screen; batches in flight are
//! bounded, so a consumer that falls behind makes the ring fill and the
//! kernel count what it drops: loss is shown, never hidden.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::bpfstats::CostUpdate;
use crate::event::{monotonic_ns, StreamItem};
use crate::loader::privileges::Kept;
use crate::loader::LoadOptions;
use crate::trace::TraceHeader;

use super::kernel::KernelSource;
use super::source::{Item, Pull, Source, SourceError, SourceInfo, BATCH};

/// Batches in flight between the capture thread and the consumer.
const IN_FLIGHT: usize = 64;

/// What a capture thread sends: a batch of items in capture order, or why
/// the capture stopped.
pub type CaptureMsg = Result<Vec<StreamItem>, SourceError>;

/// The latest run-time reading, handed from the capture thread to the
/// consumer. A newer reading replaces an unread one: only the latest
/// matters, and the capture thread must never wait for the UI.
#[derive(Debug, Default)]
pub struct CostSlot {
    inner: Mutex<(bool, CostUpdate)>,
}

impl CostSlot {
    pub fn publish(&self, u: &CostUpdate) {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.1.clone_from(u);
        g.0 = true;
    }

    /// Copies the reading into `out` if it was not taken yet.
    pub fn take(&self, out: &mut CostUpdate) -> bool {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !g.0 {
            return false;
        }
        out.clone_from(&g.1);
        g.0 = false;
        true
    }
}

/// Live items from a capture thread; the stream index is assigned here, in
/// arrival order. Dropping it tells the capture thread to stop.
pub struct ChannelSource {
    rx: Receiver<CaptureMsg>,
    info: SourceInfo,
    header: TraceHeader,
    next_index: u64,
    pending: Vec<StreamItem>,
    taken: usize,
    stop: Arc<AtomicBool>,
    costs: Option<Arc<CostSlot>>,
    kept: Kept,
}

impl ChannelSource {
    pub fn new(rx: Receiver<CaptureMsg>, info: SourceInfo, stop: Arc<AtomicBool>) -> Self {
        ChannelSource {
            rx,
            info,
            header: TraceHeader::new("live"),
            next_index: 0,
            pending: Vec::new(),
            taken: 0,
            stop,
            costs: None,
            kept: Kept::default(),
        }
    }

    /// The capabilities the capture thread kept after attaching.
    pub fn capabilities_kept(&self) -> &Kept {
        &self.kept
    }

    /// Per-probe run-time readings arrive through `slot`.
    pub fn with_costs(mut self, slot: Arc<CostSlot>) -> Self {
        self.costs = Some(slot);
        self
    }

    /// The header a recording of this stream starts from.
    pub fn with_header(mut self, header: TraceHeader) -> Self {
        self.header = header;
        self
    }

    /// Hands over up to [`BATCH`] pending items.
    fn hand_over(&mut self, f: &mut dyn FnMut(u64, Item<'_>)) -> usize {
        let n = (self.pending.len() - self.taken).min(BATCH);
        for item in &self.pending[self.taken..self.taken + n] {
            f(self.next_index, Item::Decoded(item));
            self.next_index += 1;
        }
        self.taken += n;
        if self.taken == self.pending.len() {
            self.pending.clear();
            self.taken = 0;
        }
        n
    }
}

impl Drop for ChannelSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Source for ChannelSource {
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
        if self.pending.is_empty() {
            match self.rx.recv_timeout(wait) {
                Ok(Ok(items)) => self.pending = items,
                Ok(Err(why)) => return Err(why),
                Err(RecvTimeoutError::Timeout) => return Ok(Pull::Idle),
                Err(RecvTimeoutError::Disconnected) => {
                    return Ok(Pull::End(String::from("capture stopped")))
                }
            }
        }
        Ok(if self.hand_over(f) == 0 {
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

/// Starts a [`KernelSource`] (with live costs) on a capture thread of its
/// own and returns the channel end, once the probes are attached. Each read
/// of the ring buffer waits at most `drain_every`, which bounds how stale a
/// quiet stream gets and how late the thread sees a stop.
pub fn spawn_capture(
    opts: LoadOptions,
    drain_every: Duration,
) -> Result<ChannelSource, SourceError> {
    let (ready_tx, ready_rx) =
        mpsc::channel::<Result<(SourceInfo, TraceHeader, Kept), SourceError>>();
    let (tx, rx) = mpsc::sync_channel::<CaptureMsg>(IN_FLIGHT);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_thread = Arc::clone(&stop);
    let costs = Arc::new(CostSlot::default());
    let costs_thread = Arc::clone(&costs);
    std::thread::Builder::new()
        .name("detector-capture".into())
        .spawn(move || {
            // The capture thread owns the programs, so it reads their run
            // time too: a handful of bpf syscalls once a second, never on
            // the consumer's path.
            let kernel = match KernelSource::start(&opts) {
                Ok(k) => k.with_live_costs(),
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            if let Some(u) = kernel.initial_costs() {
                costs_thread.publish(u);
            }
            // Statistics are on: nothing this thread does from here needs
            // more than reading the maps.
            let kept = match kernel.drop_privileges(None) {
                Ok(k) => k,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            if ready_tx
                .send(Ok((kernel.info(), kernel.header().clone(), kept)))
                .is_ok()
            {
                forward(kernel, drain_every, &tx, &stop_thread, &costs_thread);
            }
        })
        .map_err(|source| SourceError::Start {
            what: "capture thread",
            source,
        })?;
    let (info, header, kept) = ready_rx.recv().map_err(|_| SourceError::CaptureGone)??;
    let mut source = ChannelSource::new(rx, info, stop)
        .with_costs(costs)
        .with_header(header);
    source.kept = kept;
    Ok(source)
}

/// The capture thread's work: pulls from the kernel, sends batches on.
fn forward(
    mut kernel: KernelSource,
    wait: Duration,
    tx: &SyncSender<CaptureMsg>,
    stop: &AtomicBool,
    costs: &CostSlot,
) {
    let mut update = CostUpdate::default();
    while !stop.load(Ordering::Relaxed) {
        let mut batch = Vec::with_capacity(4096);
        let pulled = kernel.pull(wait, false, &mut |_, item| {
            if let Item::Decoded(i) = item {
                batch.push(*i);
            }
        });
        if let Err(e) = pulled {
            let _ = tx.send(Err(e));
            return;
        }
        if kernel.take_costs(&mut update) {
            costs.publish(&update);
        }
        if !batch.is_empty() && tx.send(Ok(batch)).is_err() {
            // The consumer is gone; dropping the capture detaches the
            // probes.
            return;
        }
    }
}
