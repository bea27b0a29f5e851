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
//!
//! On the swap-table kernels (7.x) SWAP_HAS_CACHE is gone: a swap-in pins
//! the entry by allocating its folio straight into the swap cache
//! (`swap_cache_alloc_folio`, the `swapcache_prepare` role there), which
//! returns that folio, locked, or -EEXIST when another folio already holds
//! the entry; racers then find that folio and wait on its lock. The pin is
//! the swap-cache folio, and it ends when the folio leaves the swap cache
//! (`swap_cache_del_folio`, the `swapcache_clear` role). Both rules read the
//! same there: -EEXIST storms are racers failing to take the pin, and a
//! swap read into a folio outside the swap cache is a read nobody pinned.
//! A successful prepare that returns a folio makes that folio the holder,
//! as an insert does on the older kernels' asynchronous path.

use detector_common::{Event, FS_SWAPCACHE, V_FOLIO, V_FOLIO_STATE, V_RET};

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
        // 7.x: the pinned swap-cache folio itself came back.
        let pinned_folio = e.valid & V_FOLIO != 0 && e.folio != 0 && e.ret as u64 == e.folio;
        if pinned_folio {
            for ent in Self::range(e) {
                let s = self.entry_mut(ent);
                s.holder = 0;
                s.folio = e.folio;
                s.prepare_ts = e.ts_ns.max(1);
                s.flags = (s.flags | eflags::HAS_CACHE | eflags::TRUSTED) & !eflags::FREE;
                s.epoch = epoch;
                self.end_storm(ent);
            }
        } else if e.ret == 0 {
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
    use detector_common::{
        swp_entry, EventKind, ProbeId, FS_ANON, FS_LOCKED, FS_SWAPBACKED, FS_SWAPCACHE,
    };

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

    /// 7.x: `swap_cache_alloc_folio` returns the pinned folio, which was
    /// inserted inside the call; the swap-in side drops the cache with
    /// `swap_cache_del_folio` (the clear role), then the delete and the
    /// free follow.
    fn pinned_alloc(t: &mut T, tid: u32, s: u64, folio: u64) {
        t.insert(tid, s, folio);
        let e = with_folio(
            ev(ProbeId::SwapcachePrepare, EventKind::Exit, tid),
            folio,
            FS_ANON | FS_SWAPBACKED | FS_SWAPCACHE | FS_LOCKED,
            2,
            0,
        );
        t.feed(with_ret(with_entry(e, s), folio as i64));
    }

    #[test]
    fn swap_table_pin_is_the_cache_folio() {
        const SC: u32 = FS_ANON | FS_SWAPBACKED | FS_SWAPCACHE;
        let s = swp_entry(1, 0x30);
        let folio = 0xff00_0000_0040_0000;
        let mut t = T::new();
        pinned_alloc(&mut t, 1, s, folio);
        t.swap_read(1, s, folio, SC | FS_LOCKED);
        // A racer took the existing folio from the cache: no read of its own.
        t.swap_read(2, s, folio, SC | FS_LOCKED);
        t.clear(1, s);
        t.delete(1, s, folio);
        t.free(1, s);
        assert!(t.kinds().is_empty());
        assert_eq!(
            t.a.windows()
                .summary(super::WindowKind::PrepareToClear)
                .count,
            1
        );

        // The pin held by the folio: another task reading the entry into
        // a folio outside the swap cache read it unpinned.
        let mut t = T::new();
        pinned_alloc(&mut t, 1, s, folio);
        t.swap_read(2, s, 0xff00_0000_0080_0000, FS_ANON | FS_SWAPBACKED);
        assert_eq!(
            t.kinds(),
            vec![(RuleId::SwapinWithoutCachePin, Severity::Violation)]
        );
        assert!(t.out[0].explanation.contains("swap-cache folio"));
    }

    #[test]
    fn swap_table_eexist_is_a_failed_pin() {
        let mut t = T::with(Config {
            eexist_threshold: 2,
            ..Config::default()
        });
        let s = swp_entry(1, 0x31);
        pinned_alloc(&mut t, 1, s, 0xff00_0000_0040_0000);
        // ERR_PTR(-EEXIST) as the raw return value.
        for _ in 0..3 {
            t.prepare(2, s, -17);
        }
        assert_eq!(t.kinds(), vec![(RuleId::EexistStorm, Severity::Info)]);
    }
}
