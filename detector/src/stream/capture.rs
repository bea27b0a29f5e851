//! Ring-buffer reader: kernel events into the userspace side. Only
//! [`KernelSource`](super::kernel::KernelSource) drives it.
//!
//! Tokio wakes the reader when the ring buffer's fd is readable (epoll), so
//! there is no busy polling. Lost-event totals live in a per-CPU map on the
//! kernel side; they are polled on a timer and, when they change, inserted
//! into the stream as `StreamItem::Lost` at the point where they were seen,
//! so the file, the analyzer and the screen all see the loss in the same
//! place.

use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use detector_common::{Event, MAP_EVENTS, MAP_LOST, MAX_PROBES};
use tokio::io::unix::AsyncFd;

use crate::event::StreamItem;
use crate::loader::bpf_log::{BpfLogError, BpfLogReader};
use crate::loader::{self, BpfLog, LoadError, LoadOptions, Loaded};
use crate::plan::PlanEntry;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the BPF object has no {0} map; the embedded object does not match this binary")]
    MissingMap(&'static str),
    #[error("reading BPF map {0} failed: {1}")]
    Map(&'static str, String),
    #[error("waiting on the ring buffer failed: {0}")]
    Poll(#[from] std::io::Error),
    #[error(transparent)]
    BpfLog(#[from] BpfLogError),
}

/// How often readers drain the ring buffer when the kernel has not woken
/// them: the kernel wakes the reader only past a backlog threshold (see
/// `LoadOptions::wakeup_bytes`), so this bounds how stale a quiet stream
/// gets, and with it the latency from a kernel event to its finding.
pub const DEFAULT_DRAIN_EVERY: Duration = Duration::from_millis(50);

/// Rebuilds the [`Event`] a ring-buffer record carries
/// ([`detector_common::ring`]); `None` if it does not parse (a mismatched
/// object), which the caller counts.
pub fn event_from_bytes(b: &[u8]) -> Option<Event> {
    detector_common::ring::unpack(b).ok()
}

/// A running capture. Dropping it detaches every probe.
pub struct Capture {
    // Keeps programs and links alive.
    loaded: Loaded,
    ring: AsyncFd<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
    last_lost: [u64; MAX_PROBES as usize],
    /// Per probe, the programs whose recursion misses are lost events of
    /// that probe (see [`crate::bpfstats::recursion_misses`]).
    miss_programs: Vec<(usize, String)>,
    /// The part of `last_lost` that is skipped runs.
    last_skipped: [u64; MAX_PROBES as usize],
    /// Records that did not parse (should never happen with a matching object).
    pub malformed: u64,
    /// Bytes of the ring records read so far (each event's packed size,
    /// without the ring buffer's own 8-byte header).
    pub ring_bytes: u64,
    /// The programs' diagnostics, with `--bpf-log`.
    bpf_log: Option<BpfLogReader>,
}

fn sum_percpu(
    map: &PerCpuArray<MapData, u64>,
    idx: u32,
    name: &'static str,
) -> Result<u64, CaptureError> {
    let v = map
        .get(&idx, 0)
        .map_err(|e| CaptureError::Map(name, e.to_string()))?;
    Ok(v.iter().sum())
}

impl Capture {
    /// Loads and attaches the probes. Must run inside a tokio runtime.
    pub fn start(opts: &LoadOptions) -> Result<Capture, CaptureError> {
        let mut loaded = loader::load(opts)?;
        let ring = loaded
            .ebpf
            .take_map(MAP_EVENTS)
            .ok_or(CaptureError::MissingMap(MAP_EVENTS))?;
        let ring =
            RingBuf::try_from(ring).map_err(|e| CaptureError::Map(MAP_EVENTS, e.to_string()))?;
        let lost = loaded
            .ebpf
            .take_map(MAP_LOST)
            .ok_or(CaptureError::MissingMap(MAP_LOST))?;
        let lost =
            PerCpuArray::try_from(lost).map_err(|e| CaptureError::Map(MAP_LOST, e.to_string()))?;
        // SAFETY: the ring buffer owns its map fd for as long as the RingBuf
        // lives, and the RingBuf moves into the AsyncFd, so the fd stays open
        // and unchanged for the AsyncFd's whole lifetime.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| CaptureError::Poll(std::io::Error::other(e.to_string())))?;
        let miss_programs = miss_programs(&loaded.plan);
        let bpf_log = match opts.bpf_log {
            BpfLog::Off => None,
            _ => Some(BpfLogReader::start(&mut loaded.ebpf)?),
        };
        Ok(Capture {
            loaded,
            ring,
            lost,
            last_lost: [0; MAX_PROBES as usize],
            miss_programs,
            last_skipped: [0; MAX_PROBES as usize],
            malformed: 0,
            ring_bytes: 0,
            bpf_log,
        })
    }

    /// Logs the diagnostics the programs sent since the last call (none
    /// without `--bpf-log`). Never waits.
    pub fn flush_bpf_log(&mut self) {
        if let Some(l) = &mut self.bpf_log {
            l.flush();
        }
    }

    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    pub fn plan(&self) -> &[PlanEntry] {
        &self.loaded.plan
    }

    /// Waits until the ring buffer has data (or `max_wait` passes), then
    /// hands every event available to `f`, each rebuilt from its ring
    /// record. Returns the number handed over.
    pub async fn read_events(
        &mut self,
        max_wait: Duration,
        f: &mut dyn FnMut(&Event),
    ) -> Result<usize, CaptureError> {
        let mut guard = match tokio::time::timeout(max_wait, self.ring.readable_mut()).await {
            Ok(g) => g?,
            // The kernel signals the ring buffer only past the wakeup
            // backlog (and a wakeup can be lost between our last read and
            // clear_ready): draining on every timeout is what keeps a quiet
            // stream flowing, at most max_wait late.
            Err(_) => return Ok(self.drain_events(f)),
        };
        let n = drain_ring(
            guard.get_inner_mut(),
            &mut self.malformed,
            &mut self.ring_bytes,
            f,
        );
        guard.clear_ready();
        Ok(n)
    }

    /// Hands over whatever is in the ring buffer right now, without
    /// waiting (at shutdown, so nothing already captured is dropped).
    pub fn drain_events(&mut self, f: &mut dyn FnMut(&Event)) -> usize {
        drain_ring(
            self.ring.get_mut(),
            &mut self.malformed,
            &mut self.ring_bytes,
            f,
        )
    }

    /// Appends a `Lost` item for every probe whose total grew since the
    /// last call.
    pub fn poll_lost(
        &mut self,
        now_ns: u64,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), CaptureError> {
        for probe in detector_common::ProbeId::ALL {
            let idx = *probe as u32;
            let mut skipped = 0;
            for (_, name) in self
                .miss_programs
                .iter()
                .filter(|(i, _)| *i == idx as usize)
            {
                skipped += crate::bpfstats::recursion_misses(&self.loaded.ebpf, name).unwrap_or(0);
            }
            // Never below an earlier reading: a total that went down would
            // read as no loss at all downstream.
            let skipped = skipped.max(self.last_skipped[idx as usize]);
            self.last_skipped[idx as usize] = skipped;
            let total = sum_percpu(&self.lost, idx, MAP_LOST)? + skipped;
            let last = &mut self.last_lost[idx as usize];
            if total != *last {
                *last = total;
                out.push(StreamItem::Lost {
                    ts_ns: now_ns,
                    probe: *probe as u16,
                    total,
                });
            }
        }
        Ok(())
    }

    /// Lost totals as last polled, indexed by probe id.
    pub fn lost_totals(&self) -> &[u64; MAX_PROBES as usize] {
        &self.last_lost
    }

    /// Whether what the capture does after attaching still works with the
    /// current capabilities: a lookup in the lost counters and reading a
    /// program's information (recursion misses, run-time statistics). The
    /// ring buffer is memory mapped and needs nothing.
    pub fn can_read_maps(&self) -> bool {
        let lost = sum_percpu(&self.lost, 0, "LOST").is_ok();
        let info = match self.loaded.ebpf.programs().next() {
            Some((_, p)) => p.info().is_ok(),
            None => true,
        };
        lost && info
    }

    /// The part of [`lost_totals`](Self::lost_totals) that the kernel
    /// skipped rather than the ring buffer dropped, indexed by probe id.
    pub fn skipped_totals(&self) -> &[u64; MAX_PROBES as usize] {
        &self.last_skipped
    }
}

/// The programs whose skipped runs are lost events, per probe index. A
/// kprobe that only saves arguments for its kretprobe is left out: when it
/// is skipped, the kretprobe finds nothing stashed and already counts the
/// event in `LOST`.
fn miss_programs(plan: &[PlanEntry]) -> Vec<(usize, String)> {
    use crate::bpfstats::{programs_of, ProgKind};
    let mut v = Vec::new();
    for e in plan {
        let Some(probe) = detector_common::ProbeId::from_name(&e.probe) else {
            continue;
        };
        let (entry, exit) = programs_of(e);
        for kind in [entry, exit].into_iter().flatten() {
            if kind == ProgKind::Kprobe && !e.entry {
                continue;
            }
            v.push((probe as usize, kind.program_name(probe)));
        }
    }
    v
}

fn drain_ring(
    ring: &mut RingBuf<MapData>,
    malformed: &mut u64,
    ring_bytes: &mut u64,
    f: &mut dyn FnMut(&Event),
) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        match event_from_bytes(&item) {
            Some(ev) => {
                *ring_bytes += item.len() as u64;
                f(&ev);
                n += 1;
            }
            None => *malformed += 1,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::AttachMode;

    #[test]
    fn recursion_misses_count_where_the_event_is_lost() {
        let e = |probe: &str, mode, entry, exit| PlanEntry {
            probe: probe.into(),
            target: "f".into(),
            mode,
            entry,
            exit,
            note: String::new(),
            filter: String::new(),
        };
        let plan = [
            e("swap_read", AttachMode::Fentry, true, false),
            e("do_swap_page", AttachMode::Kprobe, true, true),
            // Exit-only in kprobe mode: a skipped kprobe leaves the
            // kretprobe nothing to emit, which LOST already counts.
            e("swap_cache_lookup", AttachMode::Kprobe, false, true),
            e("move_pages", AttachMode::Unavailable, false, false),
        ];
        let names: Vec<String> = miss_programs(&plan).into_iter().map(|(_, n)| n).collect();
        assert_eq!(
            names,
            [
                "fentry_swap_read",
                "kprobe_do_swap_page",
                "kretprobe_do_swap_page",
                "kretprobe_swap_cache_lookup"
            ]
        );
    }

    #[test]
    fn ring_records_become_events() {
        let ev = Event {
            ts_ns: 42,
            folio: 0xffff_ea00_0001_0000,
            probe: 3,
            nr: 1,
            comm: *b"kswapd0\0\0\0\0\0\0\0\0\0",
            ..Event::default()
        };
        let mut words = [0u64; detector_common::ring::RING_MAX_WORDS];
        let len = detector_common::ring::pack(&ev, &mut words);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(event_from_bytes(&bytes[..len]), Some(ev));
        assert_eq!(event_from_bytes(&bytes[..len - 8]), None);
        assert_eq!(event_from_bytes(&bytes[1..len]), None);
    }
}
