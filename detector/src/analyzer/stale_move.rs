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

/// The folio state at the move still says "swap-cache folio of `entry`":
/// in the swap cache, with `entry` one of its pages (a large folio's
/// `folio->swap` is its first entry). Without a state snapshot nothing can
/// be said, which counts as consistent.
pub(super) fn folio_still_names(e: &Event, entry: u64) -> bool {
    if e.valid & V_FOLIO_STATE == 0 {
        return true;
    }
    let pages = u64::from(e.f_nr_pages.max(1));
    e.f_state & FS_SWAPCACHE != 0 && e.f_swap <= entry && entry - e.f_swap < pages
}

impl Analyzer {
    /// The moved folio no longer names the entry its lookup was made for,
    /// though the entry was not reallocated. On the swap-PTE path that move
    /// acted on a stale folio; when the path is not known (no present-path
    /// probe on this kernel) the folio may also have been swapped in and
    /// mapped at the source again, which the present path moves correctly.
    pub(super) fn check_stale_move(
        &mut self,
        l: &Lookup,
        chain: &[Ev],
        e: &Event,
        swap_path: bool,
        out: &mut Vec<Finding>,
    ) {
        if l.entry == 0 || folio_still_names(e, l.entry) {
            return;
        }
        let cause = if e.f_state & FS_SWAPCACHE == 0 {
            "left_swap_cache"
        } else {
            "names_other_entry"
        };
        let now = if e.f_state & FS_SWAPCACHE == 0 {
            "is no longer in the swap cache".to_string()
        } else {
            format!(
                "now belongs to swap entry {}",
                crate::event::fmt_entry(e.f_swap)
            )
        };
        let entry = crate::event::fmt_entry(l.entry);
        let (severity, msg) = if swap_path {
            (
                Severity::Violation,
                format!(
                    "move_pages looked up swap entry {entry} and got folio {:#x}, but when folio_move_anon_rmap \
                     moved it on the swap-PTE path (folio locked) the folio {now}: a stale folio was moved",
                    e.folio
                ),
            )
        } else {
            (
                Severity::NearMiss,
                format!(
                    "move_pages looked up swap entry {entry} and got folio {:#x}; when folio_move_anon_rmap moved \
                     that folio it {now}, but this kernel does not show which path the move took (a folio \
                     swapped in and mapped at the source is moved correctly by the present-PTE path)",
                    e.folio
                ),
            )
        };
        self.emit(out, RuleId::StaleFolioMove, severity, cause, msg, chain);
    }
}
