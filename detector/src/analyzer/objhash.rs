//! How the object tables hash their keys (swap entries, folio addresses).
//!
//! Keys that are close are used close together: the kernel allocates swap
//! offsets in clusters, one after the other, and reclaim and swap-in walk
//! them in that order; folios of neighbouring pages sit 64 bytes apart in
//! the vmemmap. A hash that scatters every key makes each lookup in a table
//! of a million objects a cache miss (what profiles of `replay` showed as
//! the analyzer's largest cost). [`Locality`] keeps runs of 16 neighbouring
//! keys in 16 neighbouring buckets, and scatters the runs.
//!
//! A trace file can be hostile, so the runs are scattered by foldhash with
//! a random seed (what hashbrown uses by default): which keys collide
//! cannot be chosen without knowing the seed. Inside a run the keys take
//! distinct buckets, so a run adds no collisions of its own.

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashMap;

/// Keys per run: one hashbrown probe group.
const RUN_BITS: u32 = 4;
const RUN_MASK: u64 = (1 << RUN_BITS) - 1;
/// hashbrown compares the top 7 bits of a hash before the key; the
/// position in the run goes there too, so the keys of a run (which share
/// the rest of those bits) do not all pass that test.
const TAG_SHIFT: u32 = 57;

/// Builds [`LocalityHasher`]s. `GRAIN` is how many low bits of the key do
/// not tell neighbours apart (6 for folio addresses: a `struct folio` per
/// 64 bytes; 0 for swap entries, whose offset is in the low bits).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Locality<const GRAIN: u32> {
    seed: foldhash::fast::RandomState,
}

impl<const GRAIN: u32> BuildHasher for Locality<GRAIN> {
    type Hasher = LocalityHasher<GRAIN>;

    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        LocalityHasher {
            run: self.seed.build_hasher(),
            key: 0,
        }
    }
}

/// See [`Locality`]. Only `u64` keys get the locality; anything else
/// written is hashed by foldhash alone.
#[derive(Clone)]
pub(crate) struct LocalityHasher<const GRAIN: u32> {
    run: foldhash::fast::FoldHasher,
    key: u64,
}

impl<const GRAIN: u32> Hasher for LocalityHasher<GRAIN> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.run.write(bytes);
    }

    #[inline]
    fn write_u64(&mut self, key: u64) {
        self.key = key;
    }

    #[inline]
    fn finish(&self) -> u64 {
        let pos = (self.key >> GRAIN) & RUN_MASK;
        let mut run = self.run.clone();
        run.write_u64(self.key >> GRAIN >> RUN_BITS);
        ((run.finish() << RUN_BITS) | pos) ^ (pos << TAG_SHIFT)
    }
}

/// A table keyed by swap entry.
pub(crate) type EntryMap<V> = HashMap<u64, V, Locality<0>>;
/// A table keyed by folio address.
pub(crate) type FolioMap<V> = HashMap<u64, V, Locality<6>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_share_a_run_and_runs_scatter() {
        let s = Locality::<6>::default();
        let base = 0xffff_ea00_0000_0000u64;
        let h: Vec<u64> = (0..32).map(|i| s.hash_one(base + i * 64)).collect();
        // One run: consecutive buckets, distinct tags.
        for i in 1..16 {
            assert_eq!(h[i] & RUN_MASK, (h[0] & RUN_MASK) + i as u64);
            assert_eq!(h[i] >> RUN_BITS & 0xff, h[0] >> RUN_BITS & 0xff);
            assert_ne!(h[i] >> TAG_SHIFT, h[0] >> TAG_SHIFT);
        }
        // The next run lands elsewhere.
        assert_ne!(h[16] >> RUN_BITS, h[0] >> RUN_BITS);
        // Two seeds place a run differently.
        let t = Locality::<6>::default();
        assert_ne!(t.hash_one(base), s.hash_one(base));
    }

    #[test]
    fn tables_work_as_tables() {
        let mut m: EntryMap<u32> = EntryMap::default();
        for k in 0..10_000u64 {
            m.insert(k * 7, k as u32);
        }
        for k in 0..10_000u64 {
            assert_eq!(m.get(&(k * 7)), Some(&(k as u32)));
            assert_eq!(m.get(&(k * 7 + 1)), None);
        }
        m.retain(|k, _| k % 2 == 0);
        assert_eq!(m.len(), 5_000);
    }
}
