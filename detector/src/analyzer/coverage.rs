//! Which probes each rule needs before it can report what it exists to
//! report (its most severe finding), read from the rule's code: the events
//! it dispatches on, the state it builds from them, and the
//! [`Analyzer::set_attached`] checks it makes. The agent exports it as
//! `detector_rule_coverage{rule}` and gates `/readyz` on it.
//!
//! A requirement is a list of groups: the rule needs at least one attached
//! probe of every group (a group of one is a plain requirement). Probes
//! that only sharpen a finding (the swap-cache insert and delete that
//! complete an ABA's evidence chain, the pin that names a lazyfree
//! discard's cause) are not listed: without them the rule still fires.

use detector_common::ProbeId;

use super::{Analyzer, RuleId, Severity};

use ProbeId as P;

/// Probes whose events carry a snapshot of the folio's state (the BPF side
/// reads it for every event that names a folio): any of them feeds the
/// refcount/mapcount invariant. `swapcache_prepare` and `swapcache_clear`
/// name a folio on the swap-table kernels (7.x) only.
const FOLIO_STATE: &[ProbeId] = &[
    P::SwapCacheLookup,
    P::SwapCacheInsert,
    P::SwapCacheDelete,
    P::SwapEntryAlloc,
    P::SwapcachePrepare,
    P::SwapcacheClear,
    P::FolioMoveAnonRmap,
    P::MovePagesLookup,
    P::MovePresent,
    P::RemoveMapping,
    P::TryToUnmapOne,
    P::LazyfreeMark,
    P::GupGrab,
    P::GupGrabFast,
    P::GupPut,
    P::UnpinUserPage,
    P::DoWpPage,
    P::SwapRead,
    P::TpWriteFolio,
    P::TpLruInsertion,
];

/// The swap-cache lookup inside a `move_pages` window: the analyzer takes
/// either probe's exit as the window's lookup (`move_pages_lookup` is the
/// one the kernel calls there; `swap_cache_lookup` hooks the same function
/// on 6.18 and 7.x when the other is missing).
const LOOKUP_IN_MOVE: &[ProbeId] = &[P::MovePagesLookup, P::SwapCacheLookup];

/// A FOLL_PIN taken, slow or fast.
const PIN_GRAB: &[ProbeId] = &[P::GupGrab, P::GupGrabFast];

impl RuleId {
    /// The probe groups the rule needs (one attached probe of each) to
    /// report [`top_severity`](Self::top_severity).
    pub fn required_probes(self) -> &'static [&'static [ProbeId]] {
        match self {
            // The window, its lookup, the reallocation that changes the
            // entry's generation, the move, and the present-path probe
            // without which a move is never known to be on the swap path
            // (a near miss at most).
            RuleId::SwapEntryAba => &[
                &[P::MovePages],
                LOOKUP_IN_MOVE,
                &[P::SwapEntryAlloc],
                &[P::FolioMoveAnonRmap],
                &[P::MovePresent],
            ],
            // A miss inside the window and the insert that came after it.
            RuleId::MissedSwapcacheLookup => {
                &[&[P::MovePages], LOOKUP_IN_MOVE, &[P::SwapCacheInsert]]
            }
            RuleId::StaleFolioMove => &[
                &[P::MovePages],
                LOOKUP_IN_MOVE,
                &[P::FolioMoveAnonRmap],
                &[P::MovePresent],
            ],
            // The unmap's entry and exit snapshots: a pin bias in both
            // proves the discard without the grab having been seen.
            RuleId::LazyfreeExtraRefs => &[&[P::TryToUnmapOne]],
            RuleId::RefcountBelowMapcount => &[FOLIO_STATE],
            // Slow GUP only: a GUP-fast pin is judged a near miss at most.
            RuleId::PinNotExclusive => &[&[P::GupGrab]],
            // Without a pin seen taken, a COW of a biased folio is a near
            // miss, and a freed biased folio an info.
            RuleId::CowOfPinned => &[&[P::DoWpPage], PIN_GRAB],
            RuleId::RemoveMappingPinned => &[&[P::RemoveMapping], PIN_GRAB],
            RuleId::EexistStorm => &[&[P::SwapcachePrepare]],
            // The read, and the holder state `swapcache_prepare` builds
            // (the rule stays silent until it has seen one).
            RuleId::SwapinWithoutCachePin => &[&[P::SwapRead], &[P::SwapcachePrepare]],
        }
    }

    /// The most severe finding the rule reports.
    pub fn top_severity(self) -> Severity {
        match self {
            RuleId::MissedSwapcacheLookup => Severity::NearMiss,
            RuleId::EexistStorm => Severity::Info,
            _ => Severity::Violation,
        }
    }

    /// Whether the rule can report its top severity with the probes for
    /// which `attached` says yes.
    pub fn covered_by(self, attached: impl Fn(ProbeId) -> bool) -> bool {
        self.required_probes()
            .iter()
            .all(|group| group.iter().any(|p| attached(*p)))
    }

    /// The required probes that are not attached, one name per group that
    /// has none (the group's first probe names it).
    pub fn missing_probes(self, attached: impl Fn(ProbeId) -> bool) -> Vec<&'static str> {
        self.required_probes()
            .iter()
            .filter(|group| !group.iter().any(|p| attached(*p)))
            .filter_map(|group| group.first().map(|p| p.name()))
            .collect()
    }
}

impl Analyzer {
    /// Whether `rule` can report its top severity with the probes this
    /// analyzer was told are attached ([`Analyzer::set_attached`]).
    pub fn covers(&self, rule: RuleId) -> bool {
        rule.covered_by(|p| self.is_attached(p))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Config, Finding};
    use super::*;
    use crate::event::StreamItem;
    use detector_common::{
        swp_entry, EventKind, FS_ANON, FS_ANON_EXCLUSIVE, FS_LOCKED, FS_SWAPBACKED, FS_SWAPCACHE,
    };

    const SC: u32 = FS_ANON | FS_SWAPBACKED | FS_SWAPCACHE;

    /// A stream that makes `rule` report its top severity, with events of
    /// other probes around it (which the rule must not need).
    fn scenario(rule: RuleId) -> (Config, Vec<StreamItem>) {
        let mut cfg = Config::default();
        let mut t = T::new();
        let s = swp_entry(1, 0x40);
        match rule {
            RuleId::SwapEntryAba => {
                t.move_enter(1);
                t.lookup(1, s, 0xb0, SC);
                t.delete(2, s, 0xb0);
                t.free(2, s);
                t.alloc(3, s, 0xa0);
                t.insert(3, s, 0xa0);
                t.move_rmap(1, 0xb0, FS_ANON | FS_SWAPBACKED | FS_LOCKED, 0);
                t.move_exit(1, 4096);
            }
            RuleId::MissedSwapcacheLookup => {
                t.move_enter(1);
                t.lookup(1, s, 0, 0);
                t.alloc(3, s, 0xa0);
                t.insert(3, s, 0xa0);
                t.move_exit(1, -11);
            }
            RuleId::StaleFolioMove => {
                t.move_enter(1);
                t.lookup(1, s, 0xb0, SC);
                t.delete(2, s, 0xb0);
                t.move_rmap(1, 0xb0, FS_ANON | FS_SWAPBACKED | FS_LOCKED, 0);
                t.move_exit(1, 4096);
            }
            RuleId::LazyfreeExtraRefs => {
                t.gup_grab(1, 0xa000, FS_ANON | FS_ANON_EXCLUSIVE, 1025, 1, true);
                t.ttu(2, 0xa000, FS_ANON, (1026, 1), (1025, 0), 1);
            }
            RuleId::RefcountBelowMapcount => {
                for tid in [2, 3] {
                    t.feed(with_folio(
                        ev(ProbeId::DoWpPage, EventKind::Enter, tid),
                        0xf0,
                        FS_ANON,
                        1,
                        2,
                    ));
                }
            }
            RuleId::PinNotExclusive => t.gup_grab(1, 0xf0, FS_ANON, 1026, 2, true),
            RuleId::CowOfPinned => {
                t.gup_grab(1, 0xf0, FS_ANON | FS_ANON_EXCLUSIVE, 1025, 1, true);
                t.feed(with_folio(
                    ev(ProbeId::DoWpPage, EventKind::Enter, 2),
                    0xf0,
                    FS_ANON,
                    1026,
                    2,
                ));
            }
            RuleId::RemoveMappingPinned => {
                t.gup_grab(1, 0xf0, FS_ANON | FS_ANON_EXCLUSIVE, 1025, 1, false);
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
            }
            RuleId::EexistStorm => {
                cfg.eexist_threshold = 3;
                t.prepare(1, s, 0);
                for _ in 0..4 {
                    t.prepare(2, s, -17);
                }
                t.clear(1, s);
            }
            RuleId::SwapinWithoutCachePin => {
                t.alloc(3, s, 0xa0);
                t.prepare(1, s, 0);
                t.swap_read(2, s, 0xc0, FS_ANON | FS_SWAPBACKED | FS_LOCKED);
                t.clear(1, s);
            }
        }
        (cfg, t.log)
    }

    /// The findings of `items` (those of probes `keep` says no to left
    /// out) through an analyzer told that only those probes are attached.
    fn analyze(cfg: &Config, items: &[StreamItem], keep: &dyn Fn(ProbeId) -> bool) -> Vec<Finding> {
        let mut a = Analyzer::new(cfg.clone());
        a.set_attached(ProbeId::ALL.iter().copied().filter(|p| keep(*p)));
        let mut out = Vec::new();
        let mut index = 0;
        for item in items {
            let kept = match item {
                StreamItem::Event(e) => ProbeId::from_u16(e.probe).is_some_and(keep),
                StreamItem::Lost { .. } => true,
            };
            if kept {
                a.process(index, item, &mut out);
                index += 1;
            }
        }
        a.finish(&mut out);
        out
    }

    fn at_top(rule: RuleId, found: &[Finding]) -> usize {
        found
            .iter()
            .filter(|f| f.rule == rule && f.severity == rule.top_severity())
            .count()
    }

    #[test]
    fn every_rule_fires_with_exactly_its_required_probes() {
        for &rule in RuleId::ALL {
            let (cfg, items) = scenario(rule);
            let all = analyze(&cfg, &items, &|_| true);
            assert_eq!(at_top(rule, &all), 1, "{rule}: {all:#?}");

            // Only the required probes attached (their events kept, every
            // other probe's dropped): the rule still fires, so the table
            // lists enough.
            let required = |p: ProbeId| rule.required_probes().iter().any(|g| g.contains(&p));
            let only = analyze(&cfg, &items, &required);
            assert_eq!(
                at_top(rule, &only),
                1,
                "{rule} with only {:?}",
                rule.required_probes()
            );
            assert!(rule.covered_by(required));

            // Any one group gone (its probes unattached, their events
            // removed): the rule no longer reaches its top severity, so
            // every group listed is needed.
            for group in rule.required_probes() {
                let without = |p: ProbeId| !group.contains(&p);
                let found = analyze(&cfg, &items, &without);
                assert_eq!(
                    at_top(rule, &found),
                    0,
                    "{rule} without {group:?}: {found:#?}"
                );
                assert!(!rule.covered_by(without));
                assert_eq!(rule.missing_probes(without), [group[0].name()]);
            }
        }
    }

    #[test]
    fn the_analyzer_reports_coverage_of_what_it_was_told() {
        let mut a = Analyzer::new(Config::default());
        assert!(RuleId::ALL.iter().all(|r| a.covers(*r)));
        // Degraded mode: tracepoints only.
        a.set_attached([
            ProbeId::TpPageFree,
            ProbeId::TpLruInsertion,
            ProbeId::TpWriteFolio,
            ProbeId::TaskExit,
        ]);
        let covered: Vec<RuleId> = RuleId::ALL
            .iter()
            .copied()
            .filter(|r| a.covers(*r))
            .collect();
        assert_eq!(covered, [RuleId::RefcountBelowMapcount]);
    }
}
