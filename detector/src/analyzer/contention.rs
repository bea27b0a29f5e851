//! Rule (e): swap-cache pin contention (seed 002).
//!
//! - `eexist_storm` (info): `swapcache_prepare` answering -EEXIST again and
//!   again for one entry while someone holds SWAP_HAS_CACHE: racing swap-ins
//!   spinning on the holder. Counted per holding window (reset when the
//!   entry is released, inserted, freed or successfully prepared).
//! - `swapin_without_cache_pin` (violation): a synchronous swap-in reads an
//!   entry into a folio outside the swap cache while the reading task does
//!   not hold SWAP_HAS_CACHE for it. That pin is what serializes the read
//!   against writeback, zswap invalidation and a racing swap-in. Reported
//!   only when the holder state was established by observed events since
//!   the last loss on the probes that maintain it.

use detector_common::{Event, FS_SWAPCACHE, V_FOLIO_STATE, V_RET};

use super::state::{eflags, StormState};
use super::windows::WindowKind;
use super::{full_entry, Analyzer, Finding, RuleId, Severity};
use crate::event::EEXIST;

impl Analyzer {
    pub(super) fn on_prepare(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        if full_entry(e).is_none() || e.valid & V_RET == 0 {
            return;
        }
        self.seen_prepare = true;
        let epoch = self.holder_epoch;
        if e.ret == 0 {
            for ent in Self::range(e) {
                let s = self.entry_mut(ent);
                s.holder = e.tid;
                s.prepare_ts = e.ts_ns.max(1);
                s.flags = (s.flags | eflags::HAS_CACHE | eflags::TRUSTED) & !eflags::FREE;
                s.epoch = epoch;
                self.end_storm(ent);
            }
        } else if e.ret == EEXIST {
            let threshold = self.cfg.eexist_threshold.max(1);
            let ent = e.entry;
            let ev = self.ev(
                index,
                e,
                "swapcache_prepare: -EEXIST, someone else holds SWAP_HAS_CACHE",
            );
            let st = self.storms.entry(ent).or_insert(StormState {
                first: ev,
                count: 0,
                reported: false,
            });
            st.count += 1;
            if st.count >= threshold && !st.reported {
                st.reported = true;
                let first = st.first.with_note("first -EEXIST of this holding window");
                let count = st.count;
                let last = ev.with_note("threshold reached");
                let holder = self.entries.get(&ent).map(|s| s.holder).unwrap_or(0);
                let held_by = if holder != 0 {
                    format!(" (held by tid {holder})")
                } else {
                    String::new()
                };
                let msg = format!(
                    "swapcache_prepare returned -EEXIST {count} times for swap entry {} within one holding \
                     window{held_by}: swap-ins are spinning on SWAP_HAS_CACHE",
                    crate::event::fmt_entry(ent)
                );
                self.emit(
                    out,
                    RuleId::EexistStorm,
                    Severity::Info,
                    "eexist_threshold",
                    msg,
                    &[first, last],
                );
            }
        }
    }

    pub(super) fn on_clear(&mut self, index: u64, e: &Event) {
        let _ = index;
        if full_entry(e).is_none() {
            return;
        }
        let epoch = self.holder_epoch;
        for ent in Self::range(e) {
            let s = self.entry_mut(ent);
            let prepared = s.prepare_ts;
            s.holder = 0;
            s.prepare_ts = 0;
            s.flags = (s.flags & !eflags::HAS_CACHE) | eflags::TRUSTED;
            s.epoch = epoch;
            if prepared != 0 {
                self.windows
                    .record(WindowKind::PrepareToClear, prepared, e.ts_ns);
            }
            self.end_storm(ent);
        }
    }

    pub(super) fn on_swap_read(&mut self, index: u64, e: &Event, out: &mut Vec<Finding>) {
        let Some(ent) = full_entry(e) else { return };
        if e.valid & V_FOLIO_STATE == 0 || e.f_state & FS_SWAPCACHE != 0 || !self.seen_prepare {
            // A swap-cache folio is itself the SWAP_HAS_CACHE holder.
            return;
        }
        let Some(s) = self.entries.get(&ent).copied() else {
            return;
        };
        if s.flags & eflags::TRUSTED == 0 || s.epoch != self.holder_epoch || s.holder == e.tid {
            return;
        }
        let ev = self.ev(
            index,
            e,
            "synchronous swap-in reads the entry into a folio outside the swap cache",
        );
        let (who, cause) = if s.holder != 0 {
            (format!("tid {} holds it", s.holder), "held_by_other_task")
        } else if s.flags & eflags::HAS_CACHE != 0 && s.folio != 0 {
            (
                format!("swap-cache folio {:#x} holds it", s.folio),
                "held_by_swapcache_folio",
            )
        } else if s.flags & eflags::FREE != 0 {
            ("the entry is free".to_string(), "entry_free")
        } else {
            ("nobody holds it".to_string(), "not_held")
        };
        let msg = format!(
            "tid {} read swap entry {} synchronously without holding SWAP_HAS_CACHE ({who}): the read is not \
             serialized against writeback, zswap invalidation or a racing swap-in",
            e.tid,
            crate::event::fmt_entry(ent)
        );
        self.emit(
            out,
            RuleId::SwapinWithoutCachePin,
            Severity::Violation,
            cause,
            msg,
            &[ev],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Config, RuleId, Severity};
    use detector_common::{swp_entry, ProbeId, FS_ANON, FS_SWAPBACKED, FS_SWAPCACHE};

    #[test]
    fn storm_reported_once_per_holding_window() {
        let mut t = T::with(Config {
            eexist_threshold: 3,
            ..Config::default()
        });
        let s = swp_entry(2, 0x10);
        t.prepare(1, s, 0);
        for _ in 0..10 {
            t.prepare(2, s, -17);
        }
        t.clear(1, s);
        t.prepare(2, s, -17);
        assert_eq!(t.kinds(), vec![(RuleId::EexistStorm, Severity::Info)]);
        assert_eq!(
            t.a.windows()
                .summary(super::WindowKind::PrepareToClear)
                .count,
            1
        );
    }

    #[test]
    fn sync_read_needs_the_pin_and_trusted_state() {
        let s = swp_entry(2, 0x20);
        let mut t = T::new();
        t.prepare(1, s, 0);
        t.clear(1, s);
        t.swap_read(2, s, 0xd0, FS_ANON | FS_SWAPBACKED);
        assert_eq!(
            t.kinds(),
            vec![(RuleId::SwapinWithoutCachePin, Severity::Violation)]
        );
        assert_eq!(t.out[0].cause, "not_held");

        let mut t = T::new();
        t.prepare(1, s, 0);
        t.swap_read(2, s, 0xd0, FS_ANON | FS_SWAPBACKED);
        assert_eq!(t.out[0].cause, "held_by_other_task");

        let mut t = T::new();
        t.prepare(2, s, 0);
        t.swap_read(2, s, 0xd0, FS_ANON | FS_SWAPBACKED);
        t.swap_read(3, s, 0xd8, FS_ANON | FS_SWAPBACKED | FS_SWAPCACHE);
        assert!(t.kinds().is_empty());

        let mut t = T::new();
        t.prepare(1, s, 0);
        t.clear(1, s);
        t.lost(ProbeId::SwapcachePrepare, 1);
        t.swap_read(2, s, 0xd0, FS_ANON | FS_SWAPBACKED);
        assert!(t.kinds().is_empty());
    }
}
