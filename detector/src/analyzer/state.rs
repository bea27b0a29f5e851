//! Per-object state: swap entries, folios, GUP pins, tasks and their windows.
//!
//! Kept deliberately small (see `Analyzer::state_bytes`): one `EntryState`
//! or `FolioState` per tracked object, with the rarely needed, larger
//! records (pins, storms, suspicious snapshots) in side maps that only hold
//! the few objects currently in such a state.

use hashbrown::HashMap;

use super::ev::Ev;

pub(crate) mod eflags {
    /// SWAP_HAS_CACHE is held (by a task through `swapcache_prepare`, or by
    /// a folio in the swap cache / being swapped out).
    pub(crate) const HAS_CACHE: u8 = 1 << 0;
    /// The entry was returned to the allocator and not allocated since.
    pub(crate) const FREE: u8 = 1 << 1;
    /// The SWAP_HAS_CACHE state was established by an observed event (not
    /// guessed): only then may a missing holder be reported.
    pub(crate) const TRUSTED: u8 = 1 << 2;
}

/// One swap entry (`type:offset`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EntryState {
    /// Global allocation sequence number of the last allocation of this
    /// entry; 0 when the entry was allocated before the trace started.
    pub gen: u64,
    /// Folio currently in the swap cache for this entry (0 when none known).
    pub folio: u64,
    /// When the entry went back to the allocator (0 when not free).
    pub free_ts: u64,
    /// `swapcache_prepare` success time (prepare->clear window), 0 if none.
    pub prepare_ts: u64,
    /// Task holding SWAP_HAS_CACHE through `swapcache_prepare`, 0 if none.
    pub holder: u32,
    /// `holder_epoch` of the analyzer when the holder state was established.
    pub epoch: u32,
    /// Coarse clock of the last event touching the entry (eviction order).
    pub last_seen: u32,
    /// Open lookups (in `move_pages` windows) naming this entry.
    pub watchers: u16,
    pub flags: u8,
}

/// One folio seen with a state snapshot or a FOLL_PIN grab. No rule reads
/// a folio's earlier snapshot back (the refcount rules use the current
/// event and the `deficits` side table), so only what is read is kept: the
/// table's membership (tracked objects, eviction, pin release) and the pin
/// count.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FolioState {
    /// Outstanding FOLL_PIN references we saw taken and not yet dropped.
    pub pins: u32,
}

/// First FOLL_PIN grab of a folio that is still outstanding. A pin is
/// outstanding from its grab until its own release (`unpin_user_page`, or
/// `gup_put_folio` with FOLL_PIN), however long its holder sleeps: a
/// direct-I/O reader waits in I/O with its pins held.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PinRecord {
    pub grab: Ev,
    /// GUP-fast grabs are only confirmed once the grabbing task moved on
    /// without dropping them (the fast path re-checks the PTE and the
    /// anon-exclusive bit *after* grabbing, then drops). Only the rules
    /// about *what* was pinned (COW of a pinned folio) wait for this; a
    /// folio freed or discarded under any outstanding pin is a violation.
    pub confirmed: bool,
    /// `pin_epoch` of the analyzer at the grab: a different value means
    /// release events may have been lost since, so the pin may be gone.
    pub epoch: u32,
}

/// A lookup made inside a `move_pages` window.
#[derive(Clone, Debug)]
pub(crate) struct Lookup {
    pub ev: Ev,
    /// Full entry; 0 when only (`space`, `index`) is known.
    pub entry: u64,
    pub space: u64,
    pub index: u64,
    /// Folio found (0: the lookup missed).
    pub folio: u64,
    /// Entry generation at lookup time.
    pub gen: u64,
    pub freed: bool,
    pub reused: bool,
    /// A folio was added to the swap cache for the entry after the lookup.
    pub inserted: bool,
    /// The looked-up folio was passed to `folio_move_anon_rmap` on the
    /// swap-PTE path (the path that moves what the lookup returned).
    pub moved: bool,
    /// Events that happened to the entry while the lookup was open.
    pub chain: Vec<Ev>,
}

impl Lookup {
    pub(super) fn empty(ev: Ev) -> Lookup {
        Lookup {
            ev,
            entry: 0,
            space: 0,
            index: 0,
            folio: 0,
            gen: 0,
            freed: false,
            reused: false,
            inserted: false,
            moved: false,
            chain: Vec::new(),
        }
    }
}

/// Most events a lookup's chain keeps; later ones are counted, not stored.
pub(crate) const CHAIN_MAX: usize = 12;

/// A `move_pages` call (UFFDIO_MOVE) in progress on one task.
#[derive(Debug)]
pub(crate) struct MoveWindow {
    pub open: Ev,
    /// Slots are reused across windows so steady state allocates nothing.
    pub lookups: Vec<Lookup>,
    pub active: usize,
    /// Next slot to overwrite once `active` reached the configured bound.
    pub next: usize,
    /// The source PTE the present-PTE path just cleared in this window
    /// (`move_present` with the folio it mapped), consumed by the
    /// `folio_move_anon_rmap` that follows it.
    pub present: Option<Ev>,
    /// Index of the latest lookup of this window (the one a swap-PTE move
    /// acts on), `usize::MAX` when none.
    pub latest: usize,
}

/// Per-task state; a task is only tracked while something is open for it.
#[derive(Debug, Default)]
pub(crate) struct TaskState {
    /// Who the state belongs to: a tid is given to a new task after the old
    /// one exits, and the new one must not inherit anything. `pid` is the
    /// thread group, `start` the low bits of the task's start time (0 when
    /// the trace does not carry it).
    pub pid: u32,
    pub start: u32,
    pub last_ts: u64,
    pub window: Option<MoveWindow>,
    /// Pooled lookup slots of a closed window, reused by the next one.
    pub pool: Vec<Lookup>,
    /// A GUP-fast FOLL_PIN grab awaiting the fast path's re-check.
    pub pending_fast: Option<Ev>,
    /// `try_to_unmap_one` entry, matched with its exit.
    pub ttu_enter: Option<Ev>,
    /// `__remove_mapping` entry, matched with its exit.
    pub rm_enter: Option<Ev>,
    /// Folio of an `unpin_user_page` whose inner `gup_put_folio` must not
    /// be counted a second time.
    pub unpin_folio: u64,
}

impl TaskState {
    /// Marks the state as the event's task's (identity on first use) and
    /// records the time it was last active.
    #[inline]
    pub(super) fn touch(&mut self, e: &detector_common::Event) {
        if self.pid == 0 && self.start == 0 {
            self.pid = e.pid;
            self.start = e.task_start;
        }
        self.last_ts = e.ts_ns;
    }

    pub(super) fn is_idle(&self) -> bool {
        self.window.is_none()
            && self.pending_fast.is_none()
            && self.ttu_enter.is_none()
            && self.rm_enter.is_none()
            && self.unpin_folio == 0
    }

    /// Nothing open and no pooled lookup slots: the task can be forgotten.
    pub(super) fn is_removable(&self) -> bool {
        self.is_idle() && self.pool.is_empty()
    }
}

/// An entry receiving `swapcache_prepare` -EEXIST answers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StormState {
    pub first: Ev,
    pub count: u32,
    pub reported: bool,
}

/// Tasks by tid. A task is inserted and removed around nearly every
/// reclaim unmap and GUP-fast grab, and a `TaskState` is several hundred
/// bytes: boxing it makes the table move 8 bytes instead, and removed boxes
/// are kept for the next insert so that churn allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    map: HashMap<u32, Box<TaskState>>,
    /// Boxes of removed tasks, all in the `TaskState::default()` state.
    /// Kept boxed: they move back into `map` as they are.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<TaskState>>,
}

/// Spare boxes kept: enough for the tasks that are usually in flight at
/// once, without holding on to the peak after a burst.
const SPARE_TASKS: usize = 64;

impl Tasks {
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    #[inline]
    pub(super) fn get(&self, tid: &u32) -> Option<&TaskState> {
        self.map.get(tid).map(|b| &**b)
    }

    #[inline]
    pub(super) fn get_mut(&mut self, tid: &u32) -> Option<&mut TaskState> {
        self.map.get_mut(tid).map(|b| &mut **b)
    }

    /// The task, inserted in its default state if absent.
    #[inline]
    pub(super) fn get_or_default(&mut self, tid: u32) -> &mut TaskState {
        let spare = &mut self.spare;
        self.map
            .entry(tid)
            .or_insert_with(|| spare.pop().unwrap_or_default())
    }

    #[inline]
    pub(super) fn remove(&mut self, tid: &u32) {
        if let Some(mut t) = self.map.remove(tid) {
            if self.spare.len() >= SPARE_TASKS {
                return;
            }
            if t.is_idle() && t.pool.capacity() == 0 {
                // The common case: only the identity and timestamp differ
                // from default.
                t.last_ts = 0;
                t.pid = 0;
                t.start = 0;
            } else {
                *t = TaskState::default();
            }
            self.spare.push(t);
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&u32, &TaskState)> {
        self.map.iter().map(|(k, v)| (k, &**v))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &TaskState> {
        self.map.values().map(|v| &**v)
    }

    /// Bytes held: table slots and control bytes, and every box, live or
    /// spare.
    pub(super) fn bytes(&self) -> usize {
        self.map.capacity() * (std::mem::size_of::<(u32, Box<TaskState>)>() + 1)
            + (self.map.len() + self.spare.len()) * std::mem::size_of::<TaskState>()
            + self.spare.capacity() * std::mem::size_of::<Box<TaskState>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use detector_common::Event;

    fn fresh(t: &TaskState) -> bool {
        t.is_removable() && t.last_ts == 0 && t.pool.capacity() == 0 && t.pid == 0 && t.start == 0
    }

    #[test]
    fn recycled_tasks_start_from_default() {
        let ev = Ev::new(1, &Event::default(), 0, "x");
        let mut tasks = Tasks::default();
        // Idle task: only the timestamp is set.
        let t = tasks.get_or_default(1);
        t.last_ts = 5;
        t.pid = 1;
        t.start = 77;
        tasks.remove(&1);
        assert_eq!(tasks.len(), 0);
        assert!(fresh(tasks.get_or_default(2)));
        // Busy task removed (as eviction does): everything is reset.
        let t = tasks.get_or_default(3);
        t.last_ts = 9;
        t.ttu_enter = Some(ev);
        t.pending_fast = Some(ev);
        t.unpin_folio = 7;
        t.pool.push(Lookup::empty(ev));
        tasks.remove(&3);
        tasks.remove(&2);
        assert!(tasks.get(&3).is_none());
        for tid in [4, 5] {
            assert!(fresh(tasks.get_or_default(tid)));
        }
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks.iter().count(), 2);
    }

    #[test]
    fn spare_boxes_are_bounded() {
        let mut tasks = Tasks::default();
        for tid in 0..1000 {
            tasks.get_or_default(tid);
        }
        for tid in 0..1000 {
            tasks.remove(&tid);
        }
        assert!(tasks.spare.len() <= SPARE_TASKS);
        assert!(tasks.bytes() < 1000 * std::mem::size_of::<TaskState>());
    }
}
