//! The live kernel source: a capture thread runs the lead's
//! [`Capture`](crate::capture::Capture) on its own tokio runtime and hands
//! batches to a [`ChannelSource`], so the UI sees the kernel exactly as it
//! sees a replay.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bpfstats::LiveCosts;
use crate::capture::{monotonic_ns, Capture};
use crate::loader::{self, LoadOptions};
use crate::trace::TraceHeader;

use super::model::SourceInfo;
use super::source::{CaptureMsg, ChannelSource, CostSlot};

/// Batches in flight between the capture thread and the worker. When the
/// worker falls this far behind, the capture thread blocks, the ring buffer
/// fills and the kernel counts what it drops: loss is shown, never hidden.
const IN_FLIGHT: usize = 64;
/// How often the per-probe lost counters are read.
const LOST_EVERY: Duration = Duration::from_millis(250);
const READ_WAIT: Duration = crate::capture::DEFAULT_DRAIN_EVERY;

/// A started live capture: the source, and the header a `--record` file
/// gets (this host, the resolved layout and the plan).
pub struct Live {
    pub source: ChannelSource,
    pub header: TraceHeader,
}

/// Loads and attaches the probes, then streams from a background thread.
/// Errors are one sentence (no root, no BTF, nothing attachable...).
pub fn start(opts: LoadOptions) -> Result<Live, String> {
    loader::preflight().map_err(|e| e.to_string())?;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<TraceHeader, String>>();
    let (tx, rx) = mpsc::sync_channel::<CaptureMsg>(IN_FLIGHT);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_thread = Arc::clone(&stop);
    let costs = Arc::new(CostSlot::default());
    let costs_thread = Arc::clone(&costs);
    std::thread::Builder::new()
        .name("detector-capture".into())
        .spawn(move || capture_thread(opts, ready_tx, tx, stop_thread, costs_thread))
        .map_err(|e| format!("cannot start the capture thread: {e}"))?;
    let header = ready_rx
        .recv()
        .map_err(|_| String::from("the capture thread ended before the probes were attached"))??;
    let info = SourceInfo {
        title: String::from("live"),
        kernel_release: header.kernel_release.clone(),
        plan: header.plan.clone(),
        live: true,
        degraded: loader::degraded_statement(&header.plan),
    };
    Ok(Live {
        source: ChannelSource::new(rx, info, stop).with_costs(costs),
        header,
    })
}

fn capture_thread(
    opts: LoadOptions,
    ready: mpsc::Sender<Result<TraceHeader, String>>,
    tx: mpsc::SyncSender<CaptureMsg>,
    stop: Arc<AtomicBool>,
    costs: Arc<CostSlot>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start the capture runtime: {e}")));
            return;
        }
    };
    rt.block_on(async move {
        let mut cap = match Capture::start(&opts) {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        // The capture thread owns the programs, so it reads their run time
        // too: a handful of bpf syscalls once a second, never on the UI path.
        let mut live_costs = LiveCosts::start(cap.loaded());
        costs.publish(live_costs.initial());
        let l = cap.loaded();
        let header =
            TraceHeader::for_this_host("live", &l.layout, l.plan.clone(), u64::from(l.ring_bytes));
        if ready.send(Ok(header)).is_err() {
            return;
        }
        let mut last_lost = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let mut batch = Vec::with_capacity(4096);
            if let Err(e) = cap.read_batch(&mut batch, READ_WAIT).await {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
            if last_lost.elapsed() >= LOST_EVERY {
                last_lost = Instant::now();
                if let Err(e) = cap.poll_lost(monotonic_ns(), &mut batch) {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
            if let Some(u) = live_costs.poll(cap.loaded()) {
                costs.publish(u);
            }
            if !batch.is_empty() && tx.send(Ok(batch)).is_err() {
                // The UI is gone; dropping the capture detaches the probes.
                return;
            }
        }
    });
}
