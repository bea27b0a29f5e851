//! The per-thread UFFDIO_MOVE window: `move_pages` opens and closes it, and
//! the probes of functions every task calls (`__filemap_get_folio`,
//! `ptep_clear_flush`, the general swap-cache lookup) ask whether the
//! current thread is inside one.

use crate::maps::IN_MOVE;
use crate::task::current_tid;

#[inline(always)]
pub(crate) fn move_window_open() {
    let _ = IN_MOVE.insert(&current_tid(), &1, 0);
}

#[inline(always)]
pub(crate) fn move_window_close() {
    let _ = IN_MOVE.remove(&current_tid());
}

#[inline(always)]
pub(crate) fn in_move_window() -> bool {
    // SAFETY: only presence is checked; the value is not dereferenced.
    unsafe { IN_MOVE.get(&current_tid()) }.is_some()
}
