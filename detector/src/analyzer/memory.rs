//! Bounded memory: what the analyzer's tables hold and how dead objects
//! are evicted when they pass `max_tracked`.

use hashbrown::HashMap;

use super::ev::Ev;
use super::state;
use super::Analyzer;

impl Analyzer {
    /// Bytes held by the analyzer's object tables (capacity, not length:
    /// what the allocator actually gave us), excluding histograms.
    pub fn state_bytes(&self) -> usize {
        fn table<K, V, S>(m: &HashMap<K, V, S>) -> usize {
            // hashbrown: one control byte per bucket plus the slot itself.
            m.capacity() * (std::mem::size_of::<(K, V)>() + 1)
        }
        let lookups: usize = self
            .tasks
            .values()
            .map(|t| {
                let w = t.window.as_ref().map(|w| &w.lookups[..]).unwrap_or(&[]);
                w.iter()
                    .chain(t.pool.iter())
                    .map(|l| {
                        std::mem::size_of::<state::Lookup>()
                            + l.chain.capacity() * std::mem::size_of::<Ev>()
                    })
                    .sum::<usize>()
            })
            .sum();
        table(&self.entries)
            + table(&self.folios)
            + table(&self.pins)
            + table(&self.storms)
            + table(&self.deficits)
            + table(&self.lazyfree_marks)
            + table(&self.deferred_discards)
            + table(&self.unmapping)
            + self.tasks.bytes()
            + table(&self.spaces)
            + lookups
    }

    /// Bounded memory: drop dead objects first (free entries nobody
    /// watches, folios without pins), then the least recently seen half.
    pub(super) fn evict(&mut self) {
        let before = self.tracked_objects();
        let idle = self.cfg.task_idle_ns;
        let now = self.last_ts;
        let stale: Vec<u32> = self
            .tasks
            .iter()
            .filter(|(_, t)| now.saturating_sub(t.last_ts) > idle)
            .map(|(k, _)| *k)
            .collect();
        for tid in stale {
            if self.abandon_window(tid) {
                self.lifetimes.windows_ended_idle += 1;
            }
            if let Some(t) = self.tasks.get(&tid) {
                if t.pending_fast.is_some() {
                    self.pending_fast = self.pending_fast.saturating_sub(1);
                }
            }
            self.tasks.remove(&tid);
        }
        // The clocks of the entries kept are gathered in the same pass: a
        // pass over a table of a million entries costs more than the
        // handful of comparisons it makes per entry.
        let mut clocks: Vec<u32> = Vec::with_capacity(self.entries.len());
        self.entries.retain(|_, s| {
            let keep = s.watchers > 0 || s.flags & state::eflags::FREE == 0;
            if keep {
                clocks.push(s.last_seen);
            }
            keep
        });
        let pins = &self.pins;
        self.folios.retain(|k, _| pins.contains_key(k));
        self.folio_present = 0;
        let target = self.cfg.max_tracked - self.cfg.max_tracked / 4;
        if self.tracked_objects() > target {
            if !clocks.is_empty() {
                let mid = clocks.len() / 2;
                let (_, cut, _) = clocks.select_nth_unstable(mid);
                let cut = *cut;
                self.entries
                    .retain(|_, s| s.watchers > 0 || s.last_seen > cut);
            }
            self.deficits.clear();
            self.lazyfree_marks.clear();
            self.storms.retain(|_, s| !s.reported);
        }
        if self.tracked_objects() > target && self.pins.len() > self.cfg.max_tracked / 4 {
            self.pins.retain(|_, p| p.confirmed);
        }
        // A discard waits on its folio's unconfirmed pin: gone with it.
        let pins = &self.pins;
        self.deferred_discards.retain(|k, _| pins.contains_key(k));
        // An unmap whose exit was lost never ends: losing the record of one
        // still open loses at most a fast_pin_dropped near miss.
        self.unmapping.clear();
        self.evictions += before.saturating_sub(self.tracked_objects()) as u64;
    }
}
