//! Task lifetimes: a thread's state lives from its first event to its
//! exit, to `task_idle_ns` without an event, or to the moment its tid turns
//! out to belong to a new task. Whatever it left open then ends without
//! findings (counted in [`TaskLifetimes`](super::TaskLifetimes)).

use detector_common::Event;

use super::state::TaskState;
use super::{Analyzer, Finding};

impl Analyzer {
    /// The state of the task that produced `e`, created (and stamped with
    /// its identity) if absent. `check_identity` already dropped the state
    /// of an earlier task that had the same tid.
    pub(super) fn task(&mut self, e: &Event) -> &mut TaskState {
        let t = self.tasks.get_or_default(e.tid);
        t.touch(e);
        t
    }

    /// A tid names a new task when the thread group or the start time
    /// differs from the state's owner: whatever the old task left open (its
    /// exit lost, or outside this trace) is dropped without findings, so the
    /// new task can neither join nor close the old one's windows.
    ///
    /// Any event of the owner itself shows it is alive: a mover busy with
    /// lookups and moves inside one long window is not idle.
    pub(super) fn check_identity(&mut self, e: &Event, out: &mut Vec<Finding>) {
        let Some(t) = self.tasks.get_mut(&e.tid) else {
            return;
        };
        let other_group = t.pid != 0 && e.pid != 0 && t.pid != e.pid;
        let other_start = t.start != 0 && e.task_start != 0 && t.start != e.task_start;
        if other_group || other_start {
            self.lifetimes.tid_reuses += 1;
            if self.forget_task(e.tid, out) {
                self.lifetimes.windows_ended_by_new_task += 1;
            }
        } else {
            // Clocks of different CPUs interleave out of order: never back.
            t.last_ts = t.last_ts.max(e.ts_ns);
        }
    }

    /// The task is gone (exited, idle past `task_idle_ns`, or its tid reused):
    /// its open windows end without findings; a GUP-fast pin it kept is
    /// resolved as kept, as at the end of a trace. Returns whether a
    /// `move_pages` window was open.
    pub(super) fn forget_task(&mut self, tid: u32, out: &mut Vec<Finding>) -> bool {
        self.resolve_pending_fast(tid, None, out);
        let had_window = self.abandon_window(tid);
        self.tasks.remove(&tid);
        had_window
    }

    pub(super) fn on_task_exit(&mut self, e: &Event, out: &mut Vec<Finding>) {
        self.lifetimes.exits += 1;
        if self.tasks.get(&e.tid).is_some() && self.forget_task(e.tid, out) {
            self.lifetimes.windows_ended_by_exit += 1;
        }
    }

    /// Applies `task_idle_ns` along the stream. Only tasks with something
    /// open are in the table, so the scan is short.
    pub(super) fn sweep_idle(&mut self, out: &mut Vec<Finding>) {
        let now = self.last_ts;
        self.last_sweep_ts = now;
        let idle = self.cfg.task_idle_ns;
        let mut stale: Vec<(u64, u32)> = self
            .tasks
            .iter()
            .filter(|(_, t)| now.saturating_sub(t.last_ts) > idle)
            .map(|(k, t)| (t.last_ts, *k))
            .collect();
        // Table order differs between two analyzers; findings must not.
        stale.sort_unstable();
        for (_, tid) in stale {
            if self.forget_task(tid, out) {
                self.lifetimes.windows_ended_idle += 1;
            }
        }
    }

    pub(super) fn drop_task_if_idle(&mut self, tid: u32) {
        if self.tasks.get(&tid).is_some_and(TaskState::is_removable) {
            self.tasks.remove(&tid);
        }
    }
}
