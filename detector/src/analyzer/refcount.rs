//! Rule (d): refcount vs mapcount invariants (seed 001).
//!
//! - `refcount_below_mapcount`: every mapping holds a reference, so
//!   `refcount < mapcount` is corruption. The snapshot reads both counters
//!   without a lock, and mapping takes the reference just before raising the
//!   mapcount, so one snapshot can straddle that; only a deficit seen in two
//!   consecutive snapshots of the folio is reported.
//! - `pin_not_exclusive`: FOLL_PIN on an anon folio requires it to be
//!   anon-exclusive (GUP unshares first). Slow GUP grabs under the PTL after
//!   that check, so a non-exclusive small anon folio there is a violation.
//!   GUP-fast grabs first and re-checks afterwards, dropping the pin on
//!   failure: only a fast pin the task kept (moved on without the drop) is
//!   reported, and only as a near miss (a `write_protect_seq` retry can
//!   still unpin the whole batch later).
//! - `cow_of_pinned`: `do_wp_page` on a maybe-DMA-pinned anon folio that is
//!   not anon-exclusive copies the page away from its DMA user (the "wrong
//!   COW"). Violation when a pin we saw taken is outstanding; near miss when
//!   only the refcount bias suggests a pin (GUP-fast may be about to drop it,
//!   or more than 1024 plain references exist).
//! - `remove_mapping_pinned`: `__remove_mapping` freezes the refcount to the
//!   expected value, so freeing a folio that still has a pin we saw taken
//!   means the pin was lost.

use detector_common::{
    Event, ProbeId, FS_ANON, FS_ANON_EXCLUSIVE, FS_KSM, FS_LARGE, V_FOLIO_STATE, V_PIN, V_RET,
};

use super::ev::Ev;
use super::state::PinRecord;
use super::windows::WindowKind;
use super::{Analyzer, Finding, RuleId, Severity};
use crate::event::{EventExt, GUP_PIN_COUNTING_BIAS};

/// A small, non-KSM anon folio that is not anon-exclusive. Large folios are
/// skipped: the snapshot's exclusive bit is the first page's, not
/// necessarily the pinned page's.
pub(super) fn small_anon_shared(f_state: u32) -> bool {
    f_state & FS_ANON != 0 && f_state & (FS_KSM | FS_LARGE) == 0 && f_state & FS_ANON_EXCLUSIVE == 0
}

impl Analyzer {
    pub(super) fn check_deficit(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        let map = e.mapcount();
        if map > 0 && e.f_refcount < map {
            let ev = self.ev(index, e, "refcount below mapcount");
            match self.deficits.remove(&e.folio) {
                Some(first) if first.index != index => {
                    let msg = format!(
                        "folio {:#x} has refcount {} < mapcount {} in two consecutive snapshots: a mapping exists \
                         without its reference, so the folio can be freed while still mapped",
                        e.folio, e.f_refcount, map
                    );
                    self.emit(
                        out,
                        RuleId::RefcountBelowMapcount,
                        Severity::Violation,
                        "two_snapshots",
                        msg,
                        &[first, ev],
                    );
                }
                _ => {
                    self.deficits.insert(e.folio, ev);
                }
            }
        } else if !self.deficits.is_empty() {
            self.deficits.remove(&e.folio);
        }
    }

    pub(super) fn on_grab(&mut self, index: u64, e: &Event, fast: bool, out: &mut Vec<Finding>) {
        if e.valid & V_PIN == 0 || e.folio == 0 {
            // FOLL_GET references are dropped with put_page(), which is not
            // probed: they cannot be tracked as outstanding.
            return;
        }
        if !fast && e.valid & V_RET != 0 && e.ret != 0 {
            return;
        }
        let ev = self.ev(
            index,
            e,
            if fast {
                "GUP-fast FOLL_PIN grab"
            } else {
                "GUP FOLL_PIN grab (under the PTL)"
            },
        );
        let nr = e.nr.max(1);
        let f = self.folios.entry(e.folio).or_default();
        f.pins = f.pins.saturating_add(nr);
        self.folio_present = e.folio;
        let epoch = self.pin_epoch;
        let rec = self.pins.entry(e.folio).or_insert(PinRecord {
            grab: ev,
            confirmed: !fast,
            epoch,
        });
        if !fast {
            rec.confirmed = true;
        }
        if fast {
            let t = self.task(e);
            if t.pending_fast.replace(ev).is_none() {
                self.pending_fast += 1;
            }
        } else if e.valid & V_FOLIO_STATE != 0 && small_anon_shared(e.f_state) {
            let msg = format!(
                "slow GUP took FOLL_PIN on anon folio {:#x} that is not anon-exclusive (refcount {}, mapcount {}): \
                 GUP must unshare first, so the pinned page can be COW-copied away from its DMA user",
                e.folio, e.f_refcount, ev.mapcount
            );
            self.emit(
                out,
                RuleId::PinNotExclusive,
                Severity::Violation,
                "slow_gup_pin",
                msg,
                &[ev],
            );
        }
    }

    /// Called before dispatch for every event while some GUP-fast grab
    /// awaits its re-check: the grabbing task doing anything but dropping
    /// that folio confirms the pin.
    pub(super) fn check_pending_fast(
        &mut self,
        index: u64,
        e: &Event,
        probe: ProbeId,
        out: &mut Vec<Finding>,
    ) {
        let Some(t) = self.tasks.get(&e.tid) else {
            return;
        };
        let Some(p) = t.pending_fast else { return };
        if p.index == index {
            return;
        }
        // The fast path drops a pin its re-check rejects with
        // gup_put_folio; an unpin_user_page is the pin's user done with it.
        let dropping = probe == ProbeId::GupPut && e.folio == p.folio;
        if !dropping {
            self.resolve_pending_fast(e.tid, Some(index), out);
        }
    }

    pub(super) fn resolve_pending_fast(
        &mut self,
        tid: u32,
        _at: Option<u64>,
        out: &mut Vec<Finding>,
    ) {
        let Some(p) = self.tasks.get_mut(&tid).and_then(|t| t.pending_fast.take()) else {
            return;
        };
        self.pending_fast = self.pending_fast.saturating_sub(1);
        self.drop_task_if_idle(tid);
        if let Some(rec) = self.pins.get_mut(&p.folio) {
            rec.confirmed = true;
        }
        self.judge_deferred_discard(p.folio, true, out);
        if p.has_state() && small_anon_shared(p.f_state) {
            let msg = format!(
                "GUP-fast kept a FOLL_PIN on anon folio {:#x} that was not anon-exclusive when grabbed; its \
                 re-check did not drop it at once (a later write_protect_seq retry may still unpin the batch)",
                p.folio
            );
            let ev = p.with_note("GUP-fast FOLL_PIN grab on a non-exclusive anon folio, kept");
            self.emit(
                out,
                RuleId::PinNotExclusive,
                Severity::NearMiss,
                "fast_pin_kept",
                msg,
                &[ev],
            );
        }
    }

    pub(super) fn on_put(&mut self, index: u64, e: &Event, unpin: bool, out: &mut Vec<Finding>) {
        let (folio, tid) = (e.folio, e.tid);
        if folio == 0 {
            return;
        }
        let nr = if unpin { 1 } else { e.nr.max(1) };
        // One task lookup for the whole event (the table is hit on nearly
        // every GUP event).
        let task = if unpin {
            let t = self.tasks.get_or_default(tid);
            t.touch(e);
            t.unpin_folio = folio;
            Some(t)
        } else {
            match self.tasks.get_mut(&tid) {
                Some(t) if t.unpin_folio == folio => {
                    // The gup_put_folio inside an unpin_user_page already
                    // counted.
                    t.unpin_folio = 0;
                    if t.is_removable() {
                        self.tasks.remove(&tid);
                    }
                    return;
                }
                _ if e.valid & V_PIN == 0 => return,
                t => t,
            }
        };
        let mut removable = false;
        let mut fast_dropped = None;
        if let Some(t) = task {
            if let Some(p) = t.pending_fast.filter(|p| p.folio == folio) {
                // GUP-fast grab, re-check failed, dropped: the benign case.
                t.pending_fast = None;
                self.pending_fast = self.pending_fast.saturating_sub(1);
                fast_dropped = Some(p);
            }
            removable = t.is_removable();
        }
        if let Some(grab) = fast_dropped {
            self.judge_deferred_discard(folio, false, out);
            // An unmap in progress on a lazyfree folio may have seen this
            // pin at its entry and will see it gone at its exit.
            if grab.has_state() && super::lazyfree::is_lazyfree(grab.f_state) {
                let lost = self.stats.lost;
                if let Some(u) = self.unmapping.get_mut(&folio) {
                    let put = Ev::new(index, e, lost, "GUP-fast's re-check dropped the pin");
                    u.fast_drop = Some((grab, put));
                }
            }
        }
        let released = match self.folios.get_mut(&folio) {
            Some(f) => {
                f.pins = f.pins.saturating_sub(nr);
                f.pins == 0
            }
            None => true,
        };
        if released {
            if let Some(rec) = self.pins.remove(&folio) {
                self.windows
                    .record(WindowKind::GrabToPut, rec.grab.ts, e.ts_ns);
            }
        }
        if removable {
            self.tasks.remove(&tid);
        }
    }

    pub(super) fn on_wp(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        if e.valid & V_FOLIO_STATE == 0 || e.folio == 0 || !small_anon_shared(e.f_state) {
            return;
        }
        let map = e.mapcount();
        if e.f_refcount - map.max(0) < GUP_PIN_COUNTING_BIAS {
            return;
        }
        let ev = self.ev(
            index,
            e,
            "write fault on a maybe-DMA-pinned, non-exclusive anon folio: COW will copy it",
        );
        let pin = self
            .pins
            .get(&e.folio)
            .filter(|p| p.confirmed)
            .map(|p| p.grab);
        match pin {
            Some(g) => {
                let msg = format!(
                    "do_wp_page on folio {:#x}, pinned (FOLL_PIN outstanding, refcount {}) but not anon-exclusive: \
                     the COW copies the page away from its DMA user (wrong COW)",
                    e.folio, e.f_refcount
                );
                let g = g.with_note("FOLL_PIN taken and not released");
                self.emit(
                    out,
                    RuleId::CowOfPinned,
                    Severity::Violation,
                    "pin_outstanding",
                    msg,
                    &[g, ev],
                );
            }
            None => {
                let msg = format!(
                    "do_wp_page on folio {:#x} whose refcount {} carries the pin bias but which is not \
                     anon-exclusive; no outstanding pin was seen (a GUP-fast grab about to be dropped, or many \
                     plain references), so this is circumstantial",
                    e.folio, e.f_refcount
                );
                self.emit(
                    out,
                    RuleId::CowOfPinned,
                    Severity::NearMiss,
                    "pin_bias_only",
                    msg,
                    &[ev],
                );
            }
        }
    }

    pub(super) fn on_remove_mapping_exit(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        let enter = self.tasks.get_mut(&e.tid).and_then(|t| t.rm_enter.take());
        self.drop_task_if_idle(e.tid);
        if e.valid & V_RET == 0 || e.ret != 1 || e.folio == 0 {
            return;
        }
        let exit = self.ev(
            index,
            e,
            "__remove_mapping freed the folio (refcount frozen)",
        );
        // Any outstanding pin counts, confirmed or not: a GUP-fast grab that
        // its re-check drops releases it with gup_put_folio before anything
        // could free the folio (the grab holds a reference), and a reader
        // asleep in direct I/O never produces the event that would confirm it.
        let pin = self.pins.get(&e.folio).map(|p| (p.grab, p.epoch));
        let enter = enter.filter(|x| x.folio == e.folio);
        if let Some((g, epoch)) = pin {
            let mut chain = vec![g.with_note("FOLL_PIN taken and not released")];
            chain.extend(enter);
            chain.push(exit);
            let (severity, cause, msg) = if epoch == self.pin_epoch {
                (
                    Severity::Violation,
                    "pin_outstanding",
                    format!(
                        "__remove_mapping freed folio {:#x} while a FOLL_PIN taken on it was still outstanding: \
                         the pin holder keeps using freed memory",
                        e.folio
                    ),
                )
            } else {
                (
                    Severity::NearMiss,
                    "pin_release_lost",
                    format!(
                        "__remove_mapping freed folio {:#x} while a FOLL_PIN taken on it looked outstanding, but \
                         pin-release events were lost since the grab: the release may have gone unseen",
                        e.folio
                    ),
                )
            };
            self.emit(
                out,
                RuleId::RemoveMappingPinned,
                severity,
                cause,
                msg,
                &chain,
            );
        } else if let Some(en) = enter.filter(|x| x.has_state() && maybe_pinned(x)) {
            let msg = format!(
                "__remove_mapping freed folio {:#x} whose refcount {} looked pinned when it started; no unpin was \
                 observed in between (circumstantial: the pin may have been dropped through an unprobed path)",
                e.folio, en.refcount
            );
            self.emit(
                out,
                RuleId::RemoveMappingPinned,
                Severity::Info,
                "pin_looked_outstanding",
                msg,
                &[en, exit],
            );
        }
        self.on_folio_freed(e.folio);
    }
}

fn maybe_pinned(ev: &Ev) -> bool {
    if ev.f_state & FS_LARGE != 0 {
        ev.pincount > 0
    } else {
        ev.refcount >= GUP_PIN_COUNTING_BIAS
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{RuleId, Severity};
    use detector_common::{EventKind, ProbeId, FS_ANON, FS_ANON_EXCLUSIVE};

    #[test]
    fn slow_pin_of_shared_folio_is_a_violation_fast_drop_is_not() {
        let mut t = T::new();
        t.gup_grab(1, 0xf0, FS_ANON, 1026, 2, true);
        assert_eq!(
            t.kinds(),
            vec![(RuleId::PinNotExclusive, Severity::Violation)]
        );

        let mut t = T::new();
        t.gup_grab(1, 0xf0, FS_ANON, 1026, 2, false);
        t.gup_put(1, 0xf0, FS_ANON, 1026, 2);
        t.gup_grab(1, 0xf8, FS_ANON | FS_ANON_EXCLUSIVE, 1025, 1, false);
        t.gup_put(1, 0xf8, FS_ANON | FS_ANON_EXCLUSIVE, 1025, 1);
        assert!(t.kinds().is_empty());
        assert_eq!(t.a.tracked_objects(), 2, "two folios, no task or pin left");
    }

    #[test]
    fn kept_fast_pin_on_shared_folio_is_a_near_miss() {
        let mut t = T::new();
        t.gup_grab(1, 0xf0, FS_ANON, 1026, 2, false);
        t.gup_grab(1, 0xf8, FS_ANON | FS_ANON_EXCLUSIVE, 1025, 1, false);
        assert_eq!(
            t.kinds(),
            vec![(RuleId::PinNotExclusive, Severity::NearMiss)]
        );
    }

    #[test]
    fn fast_pins_pending_at_the_end_are_reported_in_grab_order() {
        let mut t = T::new();
        let tids: Vec<u32> = (0..40).map(|i| 1000 - i * 7).collect();
        for (i, tid) in tids.iter().enumerate() {
            t.gup_grab(*tid, 0x1000 + i as u64 * 0x40, FS_ANON, 1026, 2, false);
        }
        assert_eq!(t.kinds().len(), tids.len());
        let order: Vec<u32> = t.out.iter().map(|f| f.objects.tids[0]).collect();
        assert_eq!(order, tids);
    }

    #[test]
    fn a_freed_folio_seen_again_is_tracked_again() {
        let mut t = T::new();
        let wp = |tid| {
            with_folio(
                ev(ProbeId::DoWpPage, EventKind::Enter, tid),
                0xf0,
                FS_ANON,
                1,
                1,
            )
        };
        t.feed(wp(1));
        t.feed(wp(2));
        assert_eq!(t.a.tracked_objects(), 1);
        t.feed(with_folio(
            ev(ProbeId::TpPageFree, EventKind::Tracepoint, 1),
            0xf0,
            FS_ANON,
            0,
            0,
        ));
        assert_eq!(t.a.tracked_objects(), 0);
        t.feed(wp(1));
        assert_eq!(t.a.tracked_objects(), 1);
    }

    #[test]
    fn cow_of_pinned_and_deficit() {
        let mut t = T::new();
        t.gup_grab(1, 0xf0, FS_ANON | FS_ANON_EXCLUSIVE, 1025, 1, true);
        t.feed(with_folio(
            ev(ProbeId::DoWpPage, EventKind::Enter, 2),
            0xf0,
            FS_ANON,
            1026,
            2,
        ));
        assert_eq!(t.kinds(), vec![(RuleId::CowOfPinned, Severity::Violation)]);

        let mut t = T::new();
        t.feed(with_folio(
            ev(ProbeId::DoWpPage, EventKind::Enter, 2),
            0xf0,
            FS_ANON,
            1,
            2,
        ));
        t.feed(with_folio(
            ev(ProbeId::DoWpPage, EventKind::Enter, 3),
            0xf0,
            FS_ANON,
            2,
            2,
        ));
        assert!(t.kinds().is_empty());
        t.feed(with_folio(
            ev(ProbeId::DoWpPage, EventKind::Enter, 2),
            0xf0,
            FS_ANON,
            1,
            2,
        ));
        t.feed(with_folio(
            ev(ProbeId::DoWpPage, EventKind::Enter, 3),
            0xf0,
            FS_ANON,
            1,
            2,
        ));
        assert_eq!(
            t.kinds(),
            vec![(RuleId::RefcountBelowMapcount, Severity::Violation)]
        );
    }

    fn remove_mapping(t: &mut T, tid: u32, folio: u64) {
        t.feed(with_folio(
            ev(ProbeId::RemoveMapping, EventKind::Enter, tid),
            folio,
            FS_ANON,
            1026,
            0,
        ));
        let e = with_folio(
            ev(ProbeId::RemoveMapping, EventKind::Exit, tid),
            folio,
            FS_ANON,
            0,
            0,
        );
        t.feed(with_ret(e, 1));
    }

    #[test]
    fn a_sleeping_direct_io_pin_is_outstanding() {
        // A GUP-fast FOLL_PIN by a reader that then sleeps in I/O: it never
        // produces another event, so the pin is never "confirmed", yet it is
        // outstanding until its own release.
        let mut t = T::new();
        t.gup_grab(1, 0xf0, FS_ANON | FS_ANON_EXCLUSIVE, 1025, 1, false);
        remove_mapping(&mut t, 9, 0xf0);
        assert_eq!(
            t.kinds(),
            vec![(RuleId::RemoveMappingPinned, Severity::Violation)]
        );
        assert_eq!(t.out[0].evidence[0].probe, "gup_grab_fast");
    }

    #[test]
    fn a_released_pin_or_a_lost_release_is_not_proof() {
        let mut t = T::new();
        t.gup_grab(1, 0xf0, FS_ANON | FS_ANON_EXCLUSIVE, 1025, 1, false);
        t.gup_put(1, 0xf0, FS_ANON | FS_ANON_EXCLUSIVE, 1025, 1);
        remove_mapping(&mut t, 9, 0xf0);
        assert_eq!(
            t.kinds(),
            vec![(RuleId::RemoveMappingPinned, Severity::Info)]
        );

        let mut t = T::new();
        t.gup_grab(1, 0xf0, FS_ANON | FS_ANON_EXCLUSIVE, 1025, 1, false);
        t.lost(ProbeId::GupPut, 2);
        remove_mapping(&mut t, 9, 0xf0);
        assert_eq!(
            t.kinds(),
            vec![(RuleId::RemoveMappingPinned, Severity::NearMiss)]
        );
    }

    #[test]
    fn remove_mapping_of_pinned_folio() {
        let mut t = T::new();
        t.gup_grab(1, 0xf0, FS_ANON | FS_ANON_EXCLUSIVE, 1025, 1, true);
        t.feed(with_folio(
            ev(ProbeId::RemoveMapping, EventKind::Enter, 9),
            0xf0,
            FS_ANON,
            2,
            0,
        ));
        let e = with_folio(
            ev(ProbeId::RemoveMapping, EventKind::Exit, 9),
            0xf0,
            FS_ANON,
            0,
            0,
        );
        t.feed(with_ret(e, 1));
        assert_eq!(
            t.kinds(),
            vec![(RuleId::RemoveMappingPinned, Severity::Violation)]
        );
    }
}
