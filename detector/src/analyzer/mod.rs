//! Correlates the event stream into findings.
//!
//! A pure library: it sees [`StreamItem`]s one at a time (from a live
//! capture or a trace file, in the same order) and knows nothing of BPF,
//! files or terminals, so live and replay produce identical findings.
//!
//! Each rule lives in its own module; this one owns the shared state
//! (entries, folios, pins, tasks and their windows), the dispatch by probe
//! and lost-event accounting. `tasks` ends the state of tasks that are
//! gone, `memory` bounds the tables, `config` holds the settings and
//! counters. See `docs/analyzer.md`.

mod aba;
mod config;
mod contention;
mod coverage;
mod entries;
mod ev;
mod finding;
mod lazyfree;
mod memory;
mod objhash;
mod refcount;
mod stale_move;
mod state;
mod tasks;
#[cfg(test)]
mod testutil;
mod windows;

pub use config::{Config, Stats, TaskLifetimes};
pub use ev::{flags_string, parse_flags};
pub use finding::{
    Confidence, ConfidenceLevel, Evidence, Finding, Objects, RuleId, Severity, StateSnapshot,
};
pub use windows::{WindowKind, WindowStats, WindowSummary};

use detector_common::{swp_offset, swp_type, Event, ProbeId, V_ENTRY, V_FOLIO_STATE};
use hashbrown::HashMap;

use crate::event::{fmt_entry, StreamItem};
use ev::Ev;
use objhash::{EntryMap, FolioMap};
use state::{EntryState, FolioState, PinRecord, StormState, Tasks};

/// Learned mapping of a swap `address_space` pointer to its swap type and
/// first offset (filemap lookups that miss only report the index).
#[derive(Clone, Copy, Debug)]
struct SpaceMap {
    ty: u32,
    base: u64,
}

/// Entries per swap address space (`SWAP_ADDRESS_SPACE_SHIFT` = 14).
const SWAP_ADDRESS_SPACE_PAGES: u64 = 1 << 14;

pub struct Analyzer {
    cfg: Config,
    stats: Stats,
    windows: WindowStats,
    entries: EntryMap<EntryState>,
    folios: FolioMap<FolioState>,
    /// A folio known to be in `folios` (0: none). Consecutive events often
    /// name the same folio; this skips re-inserting it. Cleared whenever a
    /// folio leaves the table.
    folio_present: u64,
    pins: FolioMap<PinRecord>,
    storms: EntryMap<StormState>,
    /// Folios whose last snapshot showed refcount < mapcount.
    deficits: FolioMap<Ev>,
    tasks: Tasks,
    spaces: HashMap<u64, SpaceMap>,
    /// Tasks with an open `move_pages` window (scan list for entry events).
    open_windows: Vec<u32>,
    /// Tasks with a GUP-fast pin awaiting its re-check.
    pending_fast: usize,
    /// Folio -> the `lazyfree_mark` that made it lazyfree (MADV_FREE): the
    /// first link of a lazyfree finding's evidence.
    lazyfree_marks: FolioMap<Ev>,
    /// Folio -> a discard made while its only pin was a GUP-fast grab still
    /// awaiting the fast path's re-check: judged when the grab is confirmed
    /// (a violation) or dropped (the re-check saw the PTE gone and the I/O
    /// went to a page faulted afresh: a near miss).
    deferred_discards: FolioMap<lazyfree::Deferred>,
    /// Folio -> the unmap in progress on it (`try_to_unmap_one` entered,
    /// not yet returned), with any GUP-fast pin dropped at its re-check
    /// meanwhile.
    unmapping: FolioMap<lazyfree::Unmapping>,
    /// Bumped whenever pin-release events are lost: pins recorded before
    /// may have been released unseen.
    pin_epoch: u32,
    /// Probes the stream's source attached (bit per `ProbeId`). All by
    /// default; a rule that needs an unattached probe says what it cannot
    /// tell instead of guessing.
    attached: u64,
    /// Stream time of the last sweep for idle tasks.
    last_sweep_ts: u64,
    /// How task lifetimes ended windows (no findings are drawn from them).
    lifetimes: TaskLifetimes,
    /// Open lookups known only as (address space, index).
    unresolved: usize,
    alloc_seq: u64,
    /// Bumped whenever events of a probe that maintains SWAP_HAS_CACHE state
    /// are lost: holder state established before is no longer trusted.
    holder_epoch: u32,
    /// Any `swapcache_prepare` seen: the probe is attached.
    seen_prepare: bool,
    next_id: u64,
    evictions: u64,
    /// Highest `tracked_objects()` after any event (eviction included).
    peak_tracked: usize,
    clock: u32,
    last_ts: u64,
}

impl Analyzer {
    pub fn new(cfg: Config) -> Self {
        Analyzer {
            cfg,
            stats: Stats::default(),
            windows: WindowStats::default(),
            entries: EntryMap::default(),
            folios: FolioMap::default(),
            folio_present: 0,
            pins: FolioMap::default(),
            storms: EntryMap::default(),
            deficits: FolioMap::default(),
            tasks: Tasks::default(),
            spaces: HashMap::new(),
            open_windows: Vec::new(),
            pending_fast: 0,
            lazyfree_marks: FolioMap::default(),
            deferred_discards: FolioMap::default(),
            unmapping: FolioMap::default(),
            pin_epoch: 0,
            attached: u64::MAX,
            last_sweep_ts: 0,
            lifetimes: TaskLifetimes::default(),
            unresolved: 0,
            alloc_seq: 0,
            holder_epoch: 0,
            seen_prepare: false,
            next_id: 1,
            evictions: 0,
            peak_tracked: 0,
            clock: 0,
            last_ts: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn windows(&self) -> &WindowStats {
        &self.windows
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Tells the analyzer which probes the source attached (the trace
    /// header's plan, or the live loader's). Rules that depend on an
    /// unattached probe report what they cannot decide instead of guessing.
    /// Without a call every probe counts as attached (scenario streams).
    pub fn set_attached(&mut self, probes: impl IntoIterator<Item = ProbeId>) {
        self.attached = probes
            .into_iter()
            .fold(0, |m, p| m | 1u64 << (p as u32 & 63));
    }

    fn is_attached(&self, p: ProbeId) -> bool {
        self.attached & (1u64 << (p as u32 & 63)) != 0
    }

    /// Windows closed without findings because their task exited, went idle
    /// past `task_idle_ns`, or its tid now belongs to another task.
    pub fn windows_abandoned(&self) -> u64 {
        let l = &self.lifetimes;
        l.windows_ended_by_exit + l.windows_ended_idle + l.windows_ended_by_new_task
    }

    /// Task exits, recycled tids and the windows they ended.
    pub fn lifetimes(&self) -> &TaskLifetimes {
        &self.lifetimes
    }

    /// `move_pages` windows still open (tasks inside UFFDIO_MOVE now, or
    /// whose end has not been seen yet).
    pub fn open_windows(&self) -> usize {
        self.open_windows.len()
    }

    pub fn tracked_objects(&self) -> usize {
        self.entries.len()
            + self.folios.len()
            + self.pins.len()
            + self.storms.len()
            + self.deficits.len()
            + self.tasks.len()
            + self.lazyfree_marks.len()
            + self.deferred_discards.len()
            + self.unmapping.len()
    }

    /// Highest [`tracked_objects`](Self::tracked_objects) seen after an
    /// event was processed: what `max_tracked` bounds (an event may add a
    /// few objects before the eviction it triggers removes them).
    pub fn peak_tracked_objects(&self) -> usize {
        self.peak_tracked
    }

    /// Feeds one stream item; findings it completes are appended to `out`.
    /// `index` is the item's position in the stream (cited as evidence).
    pub fn process(&mut self, index: u64, item: &StreamItem, out: &mut Vec<Finding>) {
        self.stats.items += 1;
        match item {
            StreamItem::Event(e) => self.event(index, e, out),
            StreamItem::Lost { probe, total, .. } => self.lost(*probe, *total),
        }
    }

    /// End of stream: resolves what is still pending (windows still open
    /// when the trace ended are reported as such).
    pub fn finish(&mut self, out: &mut Vec<Finding>) {
        let tids: Vec<u32> = self.open_windows.clone();
        for tid in tids {
            self.close_window(tid, None, out);
        }
        // In grab order: the task table's iteration order differs between
        // two analyzers (hash seeds), and live and replay must agree.
        let mut pending: Vec<(u64, u32)> = self
            .tasks
            .iter()
            .filter_map(|(k, t)| t.pending_fast.map(|p| (p.index, *k)))
            .collect();
        pending.sort_unstable();
        for (_, tid) in pending {
            self.resolve_pending_fast(tid, None, out);
        }
    }

    fn lost(&mut self, probe: u16, total: u64) {
        let i = probe as usize;
        if i >= self.stats.lost_per_probe.len() {
            return;
        }
        let prev = self.stats.lost_per_probe[i];
        if total <= prev {
            return;
        }
        self.stats.lost_per_probe[i] = total;
        self.stats.lost += total - prev;
        match ProbeId::from_u16(probe) {
            Some(
                ProbeId::SwapcachePrepare
                | ProbeId::SwapcacheClear
                | ProbeId::SwapEntryAlloc
                | ProbeId::SwapEntryFree
                | ProbeId::SwapCacheInsert
                | ProbeId::SwapCacheDelete,
            ) => self.holder_epoch = self.holder_epoch.wrapping_add(1),
            Some(ProbeId::GupPut | ProbeId::UnpinUserPage) => {
                self.pin_epoch = self.pin_epoch.wrapping_add(1);
            }
            _ => {}
        }
    }

    fn event(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        self.stats.events += 1;
        self.clock = (self.stats.events >> 8) as u32;
        self.last_ts = self.last_ts.max(e.ts_ns);
        let Some(probe) = ProbeId::from_u16(e.probe) else {
            self.stats.unknown_probe += 1;
            return;
        };
        if let Some(c) = self.stats.events_per_probe.get_mut(e.probe as usize) {
            *c += 1;
        }
        if !self.tasks.is_empty() {
            self.check_identity(e, out);
            if e.ts_ns
                >= self
                    .last_sweep_ts
                    .saturating_add(self.cfg.task_idle_ns / 4 + 1)
            {
                self.sweep_idle(out);
            }
        }
        if self.pending_fast > 0 {
            self.check_pending_fast(index, e, probe, out);
        }
        if e.valid & V_FOLIO_STATE != 0 && e.folio != 0 {
            self.observe_folio(index, e, out);
        }
        use detector_common::EventKind::{Enter, Exit, Tracepoint};
        let kind = e.kind;
        let is = |k: detector_common::EventKind| kind == k as u8;
        match probe {
            ProbeId::SwapEntryAlloc if is(Exit) => self.on_alloc(index, e, out),
            ProbeId::SwapEntryFree if !is(Exit) => self.on_free(index, e, out),
            ProbeId::SwapCacheInsert if is(Exit) => self.on_insert(index, e, out),
            ProbeId::SwapCacheDelete if !is(Exit) => self.on_delete(index, e, out),
            ProbeId::SwapcachePrepare if is(Exit) => self.on_prepare(index, e, out),
            ProbeId::SwapcacheClear if !is(Exit) => self.on_clear(index, e),
            ProbeId::SwapRead if !is(Exit) => self.on_swap_read(index, e, out),
            ProbeId::MovePages if is(Enter) => self.open_window(index, e, out),
            ProbeId::MovePages if is(Exit) => {
                let close = self.ev(index, e, "move_pages returned");
                self.close_window(e.tid, Some(close), out);
            }
            ProbeId::MovePagesLookup | ProbeId::SwapCacheLookup if is(Exit) => {
                self.on_lookup(index, e);
            }
            ProbeId::FolioMoveAnonRmap if !is(Exit) => self.on_move(index, e, out),
            ProbeId::MovePresent if is(Exit) => self.on_move_present(index, e),
            ProbeId::LazyfreeMark if !is(Exit) => self.on_lazyfree_mark(index, e),
            ProbeId::TaskExit => self.on_task_exit(e, out),
            ProbeId::TryToUnmapOne if is(Enter) => {
                let ev = self.ev(index, e, "reclaim starts unmapping the folio");
                if let Some(prev) = self.task(e).ttu_enter.replace(ev) {
                    // Its exit was lost: that unmap is over.
                    self.unmapping.remove(&prev.folio);
                }
                if e.folio != 0 {
                    let u = lazyfree::Unmapping {
                        tid: e.tid,
                        fast_drop: None,
                    };
                    self.unmapping.insert(e.folio, u);
                }
            }
            ProbeId::TryToUnmapOne if is(Exit) => self.on_unmap_exit(index, e, out),
            ProbeId::RemoveMapping if is(Enter) => {
                let ev = self.ev(index, e, "__remove_mapping starts");
                self.task(e).rm_enter = Some(ev);
            }
            ProbeId::RemoveMapping if is(Exit) => self.on_remove_mapping_exit(index, e, out),
            ProbeId::GupGrab if is(Exit) => self.on_grab(index, e, false, out),
            ProbeId::GupGrabFast if is(Exit) => self.on_grab(index, e, true, out),
            ProbeId::GupPut if !is(Exit) => self.on_put(index, e, false, out),
            ProbeId::UnpinUserPage if !is(Exit) => self.on_put(index, e, true, out),
            ProbeId::DoWpPage if is(Enter) => self.on_wp(index, e, out),
            ProbeId::TpPageFree if is(Tracepoint) => self.on_folio_freed(e.folio),
            ProbeId::TpWriteFolio if is(Tracepoint) => self.on_tp_write(e),
            _ => {}
        }
        let mut tracked = self.tracked_objects();
        if tracked > self.cfg.max_tracked {
            self.evict();
            tracked = self.tracked_objects();
        }
        self.peak_tracked = self.peak_tracked.max(tracked);
    }

    fn ev(&self, index: u64, e: &Event, note: &'static str) -> Ev {
        Ev::new(index, e, self.stats.lost, note)
    }

    /// The entry's holding window ended: its -EEXIST count starts over.
    /// Storms are rare, so skip hashing the key when there are none.
    #[inline]
    fn end_storm(&mut self, entry: u64) {
        if !self.storms.is_empty() {
            self.storms.remove(&entry);
        }
    }

    #[inline]
    fn entry_mut(&mut self, entry: u64) -> &mut EntryState {
        let clock = self.clock;
        let s = self.entries.entry(entry).or_default();
        s.last_seen = clock;
        s
    }

    /// Entries `entry .. entry + nr` (nr of at least one), bounded so a
    /// corrupt `nr` cannot stall the analyzer. A large folio covers one
    /// entry per page: events recorded before probes reported the folio's
    /// page count (ABI v1) still name the whole range through its state.
    fn range(e: &Event) -> impl Iterator<Item = u64> {
        let pages = if e.valid & V_FOLIO_STATE != 0 && e.f_state & detector_common::FS_LARGE != 0 {
            e.f_nr_pages
        } else {
            1
        };
        let nr = e.nr.max(pages).clamp(1, 512) as u64;
        let base = e.entry;
        (0..nr).map(move |i| base + i)
    }

    fn observe_folio(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        if self.folio_present != e.folio {
            self.folios.entry(e.folio).or_default();
            self.folio_present = e.folio;
        }
        self.check_deficit(index, e, out);
    }

    fn on_folio_freed(&mut self, folio: u64) {
        if folio == 0 {
            return;
        }
        self.folios.remove(&folio);
        self.folio_present = 0;
        self.pins.remove(&folio);
        self.deficits.remove(&folio);
        self.lazyfree_marks.remove(&folio);
    }

    fn on_tp_write(&mut self, e: &Event) {
        // Degraded mode: a swap-out write names the folio and its entry.
        if e.valid & V_FOLIO_STATE != 0 && e.f_state & detector_common::FS_SWAPCACHE != 0 {
            let folio = e.folio;
            let s = self.entry_mut(e.f_swap);
            s.folio = folio;
        }
    }

    /// Turns a chain of events into a finding and appends it to `out`.
    fn emit(
        &mut self,
        out: &mut Vec<Finding>,
        rule: RuleId,
        severity: Severity,
        cause: &'static str,
        explanation: String,
        chain: &[Ev],
    ) {
        let mut objects = Objects::default();
        let mut min_lost = self.stats.lost;
        for ev in chain {
            min_lost = min_lost.min(ev.lost);
            if ev.has_entry {
                let s = fmt_entry(ev.entry);
                if !objects.entries.contains(&s) {
                    objects.entries.push(s);
                }
            }
            if ev.folio != 0 {
                let s = format!("{:#x}", ev.folio);
                if !objects.folios.contains(&s) {
                    objects.folios.push(s);
                }
            }
            if ev.tid != 0 && !objects.tids.contains(&ev.tid) {
                objects.tids.push(ev.tid);
            }
        }
        let mut evidence: Vec<Evidence> = chain.iter().map(Ev::evidence).collect();
        evidence.sort_by_key(|e| e.index);
        let id = self.next_id;
        self.next_id += 1;
        out.push(Finding {
            id,
            rule,
            severity,
            objects,
            explanation,
            evidence,
            confidence: Confidence::from_lost(self.stats.lost - min_lost),
            cause: cause.to_string(),
        });
    }

    /// Learns which swap type / offset range a swap address space covers,
    /// from a filemap lookup that found a folio (it names the full entry).
    fn learn_space(&mut self, space: u64, entry: u64) {
        if space == 0 || self.spaces.len() >= 4096 {
            return;
        }
        let base = swp_offset(entry) & !(SWAP_ADDRESS_SPACE_PAGES - 1);
        self.spaces.insert(
            space,
            SpaceMap {
                ty: swp_type(entry),
                base,
            },
        );
    }

    fn resolve_space(&self, space: u64, index: u64) -> Option<u64> {
        self.spaces.get(&space).map(|m| {
            detector_common::swp_entry(m.ty, m.base + (index & (SWAP_ADDRESS_SPACE_PAGES - 1)))
        })
    }
}

/// `true` when the event names a usable full entry.
fn full_entry(e: &Event) -> Option<u64> {
    if e.valid & V_ENTRY != 0 && e.valid & detector_common::V_ENTRY_PARTIAL == 0 && e.entry != 0 {
        Some(e.entry)
    } else {
        None
    }
}
