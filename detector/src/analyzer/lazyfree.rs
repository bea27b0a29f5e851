//! Rule (c): lazyfree folio reclaimed with extra references (seed 003).
//!
//! MADV_FREE marks anon folios lazyfree (anon, !swapbacked). Reclaim may
//! drop a clean lazyfree folio's PTE without writing it anywhere; if a GUP
//! user (direct I/O read in flight) holds a reference, its data lands in a
//! page no one maps any more and userspace reads zeroes. The fix
//! (`ref_count == 1 + map_count` in `try_to_unmap_one`, after clearing the
//! PTE and a full barrier) keeps such folios.
//!
//! Proof used here (snapshots are unlocked, so one extra reference alone
//! may be a transient speculative one):
//! - violation: the unmap returned 1 and the folio's mapcount dropped, it
//!   was clean and lazyfree, and either a FOLL_PIN we saw taken was still
//!   outstanding, or the folio had references beyond 1 + mapcount both when
//!   the unmap started and after it finished;
//! - near miss: the kernel's check kept the folio (ret 0) while it had
//!   such extra references.

use crate::event::GUP_PIN_COUNTING_BIAS;
use detector_common::{Event, FS_ANON, FS_DIRTY, FS_KSM, FS_SWAPBACKED, V_FOLIO_STATE};

use super::ev::Ev;
use super::{Analyzer, Finding, RuleId, Severity};

pub(super) fn is_lazyfree(f_state: u32) -> bool {
    f_state & FS_ANON != 0 && f_state & (FS_SWAPBACKED | FS_KSM) == 0
}

/// A discard under a GUP-fast pin not yet past the fast path's re-check.
#[derive(Clone, Debug)]
pub(crate) struct Deferred {
    chain: Vec<Ev>,
    why: String,
    folio: u64,
}

/// An unmap in progress on a folio: the task inside `try_to_unmap_one`,
/// and the GUP-fast grab and put, when the fast path's re-check dropped a
/// pin on the folio meanwhile. The grab can land before the unmap's entry
/// snapshot and be dropped before its exit, which then shows no pin at all.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unmapping {
    pub(crate) tid: u32,
    pub(crate) fast_drop: Option<(Ev, Ev)>,
}

/// The explanation of a discard: the folio, why it held extra references,
/// and what that means.
fn discard_message(folio: u64, why: &str, tail: &str) -> String {
    format!(
        "reclaim discarded the PTE of clean lazyfree folio {folio:#x} while it held extra references ({why}): {tail}"
    )
}

const FAST_PIN_DROPPED_TAIL: &str =
    "GUP-fast's re-check then saw the PTE gone and dropped the pin, so \
     the I/O went to a page faulted afresh: no data was lost this time";

/// References beyond the isolation reference and one per mapping.
pub(super) fn extra_refs(ev: &Ev) -> i32 {
    ev.refcount - (1 + ev.mapcount)
}

impl Analyzer {
    /// MADV_FREE marked a folio lazyfree: kept as the first link of any
    /// lazyfree finding on it.
    pub(super) fn on_lazyfree_mark(&mut self, index: u64, e: &Event) {
        if e.folio == 0 || e.valid & detector_common::V_FOLIO == 0 {
            return;
        }
        let ev = self.ev(index, e, "MADV_FREE marked the folio lazyfree");
        self.lazyfree_marks.insert(e.folio, ev);
    }

    pub(super) fn on_unmap_exit(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        let Some(t) = self.tasks.get_mut(&e.tid) else {
            return;
        };
        let Some(enter) = t.ttu_enter.take() else {
            return;
        };
        if t.is_removable() {
            self.tasks.remove(&e.tid);
        }
        // A GUP-fast pin dropped at its re-check while this unmap ran.
        let fast_drop = match self.unmapping.get(&enter.folio) {
            Some(u) if u.tid == e.tid => self
                .unmapping
                .remove(&enter.folio)
                .and_then(|u| u.fast_drop),
            _ => None,
        };
        if enter.folio != e.folio || !enter.has_state() || e.valid & V_FOLIO_STATE == 0 {
            return;
        }
        // Lazyfree at entry, or by the time the call returned: MADV_FREE's
        // batch may clear PG_swapbacked while reclaim is in this call.
        let lazyfree = is_lazyfree(enter.f_state) || is_lazyfree(e.f_state);
        if !lazyfree || enter.f_state & FS_DIRTY != 0 {
            return;
        }
        let exit = self.ev(index, e, "");
        // The story starts where MADV_FREE made the folio lazyfree.
        let mark = self
            .lazyfree_marks
            .remove(&e.folio)
            .map(|m| m.with_note("MADV_FREE marked the folio lazyfree"));
        // Any outstanding pin, confirmed or not (a DIO reader sleeps with its
        // pin held); one whose release may have been lost is not proof.
        let (pin, pin_trusted) = match self.pins.get(&e.folio) {
            Some(p) => (Some(p.grab), p.epoch == self.pin_epoch),
            None => (None, true),
        };
        let extra_before = extra_refs(&enter);
        let unmapped = e.ret == 1 && exit.mapcount < enter.mapcount;
        if unmapped && is_lazyfree(exit.f_state) && exit.f_state & FS_DIRTY == 0 {
            let extra_after = extra_refs(&exit);
            if let Some((grab, put)) = fast_drop.filter(|_| pin.is_none()) {
                // The pin was there when the unmap began (the grab lands
                // before the entry's snapshot) and gone by its exit: the
                // same outcome as a deferred discard whose pin was dropped.
                let mut chain = Vec::with_capacity(5);
                chain.extend(mark);
                chain.push(grab.with_note("GUP-fast FOLL_PIN grab"));
                chain.push(
                    enter.with_note("reclaim starts unmapping a clean lazyfree (MADV_FREE) folio"),
                );
                chain.push(put);
                chain.push(exit.with_note("PTE discarded: the folio's data is no longer mapped"));
                let msg = discard_message(
                    e.folio,
                    "a GUP-fast pin taken as the unmap began",
                    FAST_PIN_DROPPED_TAIL,
                );
                self.emit(
                    out,
                    RuleId::LazyfreeExtraRefs,
                    Severity::NearMiss,
                    "fast_pin_dropped",
                    msg,
                    &chain,
                );
                return;
            }
            if pin.is_some() || (extra_before > 0 && extra_after > 0) {
                let mut chain = Vec::with_capacity(4);
                chain.extend(mark);
                if let Some(g) = pin {
                    chain
                        .push(g.with_note("FOLL_PIN taken (e.g. direct I/O) and not yet released"));
                }
                chain.push(
                    enter.with_note("reclaim starts unmapping a clean lazyfree (MADV_FREE) folio"),
                );
                chain.push(exit.with_note("PTE discarded: the folio's data is no longer mapped"));
                let why = match pin {
                    Some(_) => "an outstanding GUP pin".to_string(),
                    None => format!(
                        "refcount {} > 1 + mapcount {} before and refcount {} > 1 + mapcount {} after",
                        enter.refcount, enter.mapcount, exit.refcount, exit.mapcount
                    ),
                };
                // A DMA pin shows in the refcount as GUP_PIN_COUNTING_BIAS
                // (small folios) even when its grab was not seen. Smaller
                // extra counts are not proof: the per-CPU LRU batch MADV_FREE
                // queued the folio on holds one (measured on the injected
                // kernel: a reader's own MADV_PAGEOUT discarding its batched
                // buffer, refcount 3 -> 2, data intact), as does any racing
                // lookup.
                let pinned_refs =
                    extra_before >= GUP_PIN_COUNTING_BIAS && extra_after >= GUP_PIN_COUNTING_BIAS;
                let refs_only = extra_before > 0 && extra_after > 0;
                let pinned = pin.is_some() && pin_trusted;
                let cause = match (pinned, pinned_refs, refs_only) {
                    (true, _, _) => "discarded_pinned",
                    (false, true, _) => "discarded_pin_bias",
                    (false, false, true) if pin.is_none() => "discarded_extra_refs",
                    _ => "pin_release_lost",
                };
                let (severity, tail) = match cause {
                    "discarded_pinned" | "discarded_pin_bias" => (
                        Severity::Violation,
                        "a direct-I/O read into it completes into an unmapped page and userspace reads zeroes",
                    ),
                    "discarded_extra_refs" => (
                        Severity::NearMiss,
                        "no pin was seen and the count is below the pin bias, so the references may be \
                         transient (the per-CPU LRU batch, a racing lookup) or a FOLL_GET direct I/O \
                         (older kernels): not proof of lost data",
                    ),
                    _ => (
                        Severity::NearMiss,
                        "but pin-release events were lost since the pin was taken, so it may have been \
                         released unseen",
                    ),
                };
                // The only pin is a GUP-fast grab its task has not moved on
                // from: the fast path re-checks the PTE after grabbing and
                // drops the pin when it changed (as this discard changed
                // it), then faults a fresh page for the I/O. Judge when the
                // grab is confirmed or dropped.
                let unconfirmed_fast = cause == "discarded_pinned"
                    && self.pins.get(&e.folio).is_some_and(|p| !p.confirmed)
                    && pin.is_some_and(|g| {
                        self.tasks
                            .get(&g.tid)
                            .and_then(|t| t.pending_fast)
                            .is_some_and(|p| p.folio == e.folio)
                    });
                if unconfirmed_fast {
                    self.deferred_discards.insert(
                        e.folio,
                        Deferred {
                            chain,
                            why,
                            folio: e.folio,
                        },
                    );
                    return;
                }
                let msg = discard_message(e.folio, &why, tail);
                self.emit(out, RuleId::LazyfreeExtraRefs, severity, cause, msg, &chain);
            }
        } else if e.ret == 0 && (pin.is_some() || extra_before > 0) {
            // try_to_unmap_one keeps a lazyfree folio for one of two reasons:
            // the refcount check (the seed-003 guard) or a write since
            // MADV_FREE (the PTE's dirty bit is moved to the folio first).
            // Dirty at exit means the write decided it, so the extra
            // references were never put to the test.
            let redirtied = exit.f_state & FS_DIRTY != 0;
            let mut chain = Vec::with_capacity(4);
            chain.extend(mark);
            if let Some(g) = pin {
                chain.push(g.with_note("FOLL_PIN taken (e.g. direct I/O) and not yet released"));
            }
            chain.push(enter.with_note(
                "reclaim starts unmapping a clean lazyfree (MADV_FREE) folio with extra references",
            ));
            let cause = if redirtied {
                "written_again"
            } else {
                "kept_by_refcount_check"
            };
            // What the extra references were: the counts at entry, or a pin
            // that landed while the call ran.
            let refs = if extra_before > 0 {
                format!(
                    "refcount {} > 1 + mapcount {}",
                    enter.refcount, enter.mapcount
                )
            } else {
                "an outstanding GUP pin".to_string()
            };
            let (note, msg, severity) = if redirtied {
                (
                    "try_to_unmap_one kept the folio: it was written again after MADV_FREE",
                    format!(
                        "reclaim found lazyfree folio {:#x} ({refs}) written again since MADV_FREE \
                         and kept it; the refcount guard was not what decided",
                        e.folio
                    ),
                    Severity::Info,
                )
            } else {
                (
                    "try_to_unmap_one kept the folio (refcount != 1 + mapcount check)",
                    format!(
                        "reclaim tried to discard clean lazyfree folio {:#x} with {refs}; the \
                         kernel's refcount check kept it mapped",
                        e.folio
                    ),
                    Severity::NearMiss,
                )
            };
            chain.push(exit.with_note(note));
            self.emit(out, RuleId::LazyfreeExtraRefs, severity, cause, msg, &chain);
        }
    }
}

impl Analyzer {
    /// A deferred discard's GUP-fast pin was confirmed (`kept`: the task
    /// moved on with it, the I/O went to the discarded page) or dropped by
    /// the fast path's re-check (the I/O went to a page faulted afresh).
    pub(super) fn judge_deferred_discard(
        &mut self,
        folio: u64,
        kept: bool,
        out: &mut Vec<Finding>,
    ) {
        if self.deferred_discards.is_empty() {
            return;
        }
        let Some(d) = self.deferred_discards.remove(&folio) else {
            return;
        };
        let (severity, cause, tail) = if kept {
            (
                Severity::Violation,
                "discarded_pinned",
                "the GUP-fast pin was kept past its re-check: a direct-I/O read into it completes into an \
                 unmapped page and userspace reads zeroes",
            )
        } else {
            (
                Severity::NearMiss,
                "fast_pin_dropped",
                FAST_PIN_DROPPED_TAIL,
            )
        };
        let msg = discard_message(d.folio, &d.why, tail);
        self.emit(
            out,
            RuleId::LazyfreeExtraRefs,
            severity,
            cause,
            msg,
            &d.chain,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{RuleId, Severity};
    use detector_common::{FS_ANON, FS_SWAPBACKED};

    const LAZY: u32 = FS_ANON;

    /// As on the injected kernel: reclaim's entry snapshot already shows a
    /// GUP-fast pin (the grab's exit event arrives after it), the fast
    /// path's re-check sees the PTE gone and drops the pin before the
    /// unmap's exit, which shows no pin left.
    #[test]
    fn a_fast_pin_dropped_inside_the_unmap_is_a_near_miss() {
        use super::super::testutil::{ev, with_folio, with_ret};
        use detector_common::{EventKind, ProbeId};
        let mut t = T::new();
        t.feed(with_folio(
            ev(ProbeId::TryToUnmapOne, EventKind::Enter, 1),
            0xa000,
            LAZY,
            1026,
            1,
        ));
        t.gup_grab(2, 0xa000, LAZY, 1026, 1, false);
        t.gup_put(2, 0xa000, LAZY, 1026, 1);
        let exit = with_folio(
            ev(ProbeId::TryToUnmapOne, EventKind::Exit, 1),
            0xa000,
            LAZY,
            1,
            0,
        );
        t.feed(with_ret(exit, 1));
        assert_eq!(
            t.kinds(),
            vec![(RuleId::LazyfreeExtraRefs, Severity::NearMiss)]
        );
        let f = &t.out[0];
        assert_eq!(f.cause, "fast_pin_dropped");
        // Grab, unmap entry, the put that dropped it, unmap exit.
        assert_eq!(f.evidence.len(), 4, "{:#?}", f.evidence);

        // The same drop long before the unmap began proves nothing about it.
        let mut t = T::new();
        t.gup_grab(2, 0xa000, LAZY, 1026, 1, false);
        t.gup_put(2, 0xa000, LAZY, 1026, 1);
        t.ttu(1, 0xa000, LAZY, (2, 1), (1, 0), 1);
        assert_eq!(t.kinds(), vec![]);
    }

    #[test]
    fn pinned_lazyfree_discard_is_a_violation() {
        let mut t = T::new();
        t.gup_grab(
            1,
            0xa000,
            LAZY | detector_common::FS_ANON_EXCLUSIVE,
            1025,
            1,
            true,
        );
        t.ttu(2, 0xa000, LAZY, (1026, 1), (1025, 0), 1);
        assert_eq!(
            t.kinds(),
            vec![(RuleId::LazyfreeExtraRefs, Severity::Violation)]
        );
    }

    #[test]
    fn the_seed_003_chain_starts_where_madv_free_marked_the_folio() {
        use detector_common::{EventKind, ProbeId};
        let mut t = T::new();
        t.feed(with_folio(
            ev(ProbeId::LazyfreeMark, EventKind::Enter, 1),
            0xa000,
            FS_ANON | FS_SWAPBACKED,
            1,
            1,
        ));
        // The direct-I/O reader pins the page with GUP-fast and sleeps.
        t.gup_grab(
            1,
            0xa000,
            LAZY | detector_common::FS_ANON_EXCLUSIVE,
            1025,
            1,
            false,
        );
        t.ttu(7, 0xa000, LAZY, (1026, 1), (1025, 0), 1);
        assert_eq!(
            t.kinds(),
            vec![(RuleId::LazyfreeExtraRefs, Severity::Violation)]
        );
        let probes: Vec<&str> = t.out[0].evidence.iter().map(|e| e.probe.as_str()).collect();
        assert_eq!(
            probes,
            [
                "lazyfree_mark",
                "gup_grab_fast",
                "try_to_unmap_one",
                "try_to_unmap_one"
            ]
        );
    }

    #[test]
    fn a_pin_whose_release_may_be_lost_is_a_near_miss() {
        let mut t = T::new();
        t.gup_grab(
            1,
            0xa000,
            LAZY | detector_common::FS_ANON_EXCLUSIVE,
            1025,
            1,
            false,
        );
        t.lost(detector_common::ProbeId::UnpinUserPage, 1);
        // Only one snapshot shows extra references: the pin is the evidence.
        t.ttu(7, 0xa000, LAZY, (2, 1), (1, 0), 1);
        assert_eq!(
            t.kinds(),
            vec![(RuleId::LazyfreeExtraRefs, Severity::NearMiss)]
        );
    }

    #[test]
    fn kept_by_kernel_check_is_a_near_miss() {
        let mut t = T::new();
        t.ttu(2, 0xa000, LAZY, (3, 1), (3, 1), 0);
        assert_eq!(
            t.kinds(),
            vec![(RuleId::LazyfreeExtraRefs, Severity::NearMiss)]
        );
    }

    #[test]
    fn kept_because_written_again_is_info_not_a_near_miss() {
        use detector_common::{EventKind, ProbeId, FS_DIRTY};
        let mut t = T::new();
        t.feed(with_folio(
            ev(ProbeId::TryToUnmapOne, EventKind::Enter, 2),
            0xa000,
            LAZY,
            3,
            1,
        ));
        // The PTE was dirty: the kernel marks the folio dirty and
        // swap-backed again and keeps it, whatever the refcount says.
        let exit = with_folio(
            ev(ProbeId::TryToUnmapOne, EventKind::Exit, 2),
            0xa000,
            LAZY | FS_SWAPBACKED | FS_DIRTY,
            3,
            1,
        );
        t.feed(with_ret(exit, 0));
        assert_eq!(t.kinds(), vec![(RuleId::LazyfreeExtraRefs, Severity::Info)]);
    }

    #[test]
    fn clean_discard_without_extra_refs_is_benign() {
        let mut t = T::new();
        t.ttu(2, 0xa000, LAZY, (2, 1), (1, 0), 1);
        assert!(t.kinds().is_empty());
    }

    #[test]
    fn transient_reference_only_after_is_benign() {
        let mut t = T::new();
        t.ttu(2, 0xa000, LAZY, (2, 1), (2, 0), 1);
        assert!(t.kinds().is_empty());
    }

    #[test]
    fn swapbacked_folio_is_not_lazyfree() {
        let mut t = T::new();
        t.ttu(2, 0xa000, LAZY | FS_SWAPBACKED, (5, 1), (4, 0), 1);
        assert!(t.kinds().is_empty());
    }
}
