//! Rule (b): stale folio moved. `folio_move_anon_rmap` on a folio whose
//! swap-cache state no longer matches what the same task looked up.
//!
//! `folio_move_anon_rmap` runs with the folio locked, so the folio state
//! read at its entry is stable: a folio that is not in the swap cache, or
//! whose `folio->swap` is another entry, is not the folio the swap PTE
//! names. Guarded kernels (`folio_swap_contains`-style recheck after the
//! seed-000 discussion) never get here with such a folio.

use detector_common::{Event, FS_SWAPCACHE, V_FOLIO_STATE};

use super::ev::Ev;
use super::state::Lookup;
use super::{Analyzer, Finding, RuleId, Severity};

/// The folio state at the move still says "swap-cache folio of `entry`".
/// Without a state snapshot nothing can be said, which counts as consistent.
pub(super) fn folio_still_names(e: &Event, entry: u64) -> bool {
    if e.valid & V_FOLIO_STATE == 0 {
        return true;
    }
    e.f_state & FS_SWAPCACHE != 0 && e.f_swap == entry
}

impl Analyzer {
    pub(super) fn check_stale_move(
        &mut self,
        l: &Lookup,
        move_ev: Ev,
        e: &Event,
        out: &mut Vec<Finding>,
    ) {
        if l.entry == 0 || folio_still_names(e, l.entry) || l.swapped_in_here {
            // Consistent, unknown, or the present-PTE path after the moving
            // process faulted the page in (a retried move_pages_pte).
            return;
        }
        let mut chain = Vec::with_capacity(l.chain.len() + 2);
        chain.push(l.ev);
        chain.extend_from_slice(&l.chain);
        chain.push(move_ev);
        let now = if e.f_state & FS_SWAPCACHE == 0 {
            "is no longer in the swap cache".to_string()
        } else {
            format!(
                "now belongs to swap entry {}",
                crate::event::fmt_entry(e.f_swap)
            )
        };
        let msg = format!(
            "move_pages looked up swap entry {} and got folio {:#x}, but when folio_move_anon_rmap moved it \
             (folio locked) the folio {now}: a stale folio was moved",
            crate::event::fmt_entry(l.entry),
            e.folio
        );
        self.emit(
            out,
            RuleId::StaleFolioMove,
            Severity::Violation,
            msg,
            &chain,
        );
    }
}
