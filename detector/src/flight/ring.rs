//! The ring: the last `keep` of stream time, at most `memory` bytes, as
//! decoded [`StreamItem`]s in fixed-capacity chunks.
//!
//! Decoded items, not trace records: the snapshot is written through the
//! trace writer, whatever its on-disk format, and an item is a fixed-size
//! copy (no encoding on the per-event path). Chunks are allocated once, up
//! to `memory / chunk bytes`, and reused: the oldest chunk is recycled when
//! its newest item is older than `keep` or when the ring may not allocate
//! another. In the steady state nothing is allocated per event.

use std::collections::VecDeque;
use std::mem::size_of;

use detector_common::MAX_PROBES;

use crate::event::StreamItem;

/// Items per chunk at most: 4096 items are 640 KiB, ~100 chunks in the
/// default 64 MiB.
const CHUNK_ITEMS_MAX: usize = 4096;
/// Chunks the ring aims for at least, so that recycling the oldest one
/// gives up at most 1/16 of what it holds.
const CHUNKS_MIN: usize = 16;

/// Running lost totals per probe, as `StreamItem::Lost` carries them.
pub(crate) type LostTotals = [u64; MAX_PROBES as usize];

/// Items with consecutive stream indexes, `first` being the first one's.
struct Chunk {
    first: u64,
    /// Newest timestamp in the chunk (items are in stream order, which on
    /// a multi-CPU capture is nearly but not strictly time order).
    max_ts: u64,
    items: Vec<StreamItem>,
}

impl Chunk {
    fn next_index(&self) -> u64 {
        self.first + self.items.len() as u64
    }
}

pub(crate) struct Ring {
    chunks: VecDeque<Chunk>,
    /// A chunk recycled by time, kept for the next one needed.
    spare: Option<Chunk>,
    chunk_items: usize,
    max_chunks: usize,
    /// Chunks allocated and held (in the ring and the spare).
    allocated: usize,
    keep_ns: u64,
    /// Newest timestamp seen: the stream's now.
    now: u64,
    /// Lost totals as of the first item the ring holds.
    base_lost: LostTotals,
    len: usize,
    /// Newest timestamp of a chunk given up for memory (not for time).
    dropped_ts: Option<u64>,
}

/// Bytes one chunk of `n` items takes: its items and its slot in the
/// ring's deque.
fn chunk_bytes(n: usize) -> u64 {
    (n * size_of::<StreamItem>() + size_of::<Chunk>()) as u64
}

impl Ring {
    /// A ring of at most `memory` bytes (at least two chunks' worth, which
    /// the policy's minimum guarantees).
    pub(crate) fn new(keep_ns: u64, memory: u64) -> Self {
        let item = size_of::<StreamItem>() as u64;
        let per_chunk = (memory / item / CHUNKS_MIN as u64).clamp(1, CHUNK_ITEMS_MAX as u64);
        let chunk_items = per_chunk as usize;
        let max_chunks = (memory / chunk_bytes(chunk_items)).max(1) as usize;
        Ring {
            chunks: VecDeque::with_capacity(max_chunks),
            spare: None,
            chunk_items,
            max_chunks,
            allocated: 0,
            keep_ns,
            now: 0,
            base_lost: [0; MAX_PROBES as usize],
            len: 0,
            dropped_ts: None,
        }
    }

    /// Bytes held: the deque's slots and the capacity of every chunk
    /// allocated.
    pub(crate) fn bytes(&self) -> u64 {
        let slots = self.chunks.capacity() * size_of::<Chunk>();
        let items = self.allocated * self.chunk_items * size_of::<StreamItem>();
        (slots + items) as u64
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Stream index of the oldest item held.
    pub(crate) fn first_index(&self) -> Option<u64> {
        self.chunks.front().map(|c| c.first)
    }

    /// Timestamp of the oldest item held.
    pub(crate) fn oldest_ts(&self) -> Option<u64> {
        self.chunks
            .front()
            .and_then(|c| c.items.first())
            .map(StreamItem::ts_ns)
    }

    /// Newest timestamp of what the memory bound made the ring give up:
    /// items that were younger than `keep` when they went.
    pub(crate) fn dropped_ts(&self) -> Option<u64> {
        self.dropped_ts
    }

    pub(crate) fn now(&self) -> u64 {
        self.now
    }

    pub(crate) fn push(&mut self, index: u64, item: &StreamItem) {
        let ts = item.ts_ns();
        self.now = self.now.max(ts);
        let fits = self
            .chunks
            .back()
            .is_some_and(|c| c.items.len() < self.chunk_items && c.next_index() == index);
        if !fits {
            let mut c = self.take_chunk();
            c.first = index;
            c.max_ts = 0;
            self.chunks.push_back(c);
        }
        if let Some(c) = self.chunks.back_mut() {
            c.items.push(*item);
            c.max_ts = c.max_ts.max(ts);
            self.len += 1;
        }
        self.trim_by_time();
    }

    /// An empty chunk: the spare, a new one while the budget allows, else
    /// the oldest one.
    fn take_chunk(&mut self) -> Chunk {
        if let Some(c) = self.spare.take() {
            return c;
        }
        if self.allocated < self.max_chunks || self.chunks.is_empty() {
            self.allocated += 1;
            return Chunk {
                first: 0,
                max_ts: 0,
                items: Vec::with_capacity(self.chunk_items),
            };
        }
        match self.pop_oldest() {
            Some(c) => {
                self.dropped_ts = Some(self.dropped_ts.unwrap_or(0).max(c.max_ts));
                c
            }
            None => {
                self.allocated += 1;
                Chunk {
                    first: 0,
                    max_ts: 0,
                    items: Vec::with_capacity(self.chunk_items),
                }
            }
        }
    }

    /// Removes the oldest chunk, its losses moving into the base totals.
    fn pop_oldest(&mut self) -> Option<Chunk> {
        let mut c = self.chunks.pop_front()?;
        for it in &c.items {
            if let StreamItem::Lost { probe, total, .. } = it {
                apply_lost(&mut self.base_lost, *probe, *total);
            }
        }
        self.len -= c.items.len();
        c.items.clear();
        Some(c)
    }

    /// Recycles chunks whose newest item is older than `keep`; the newest
    /// chunk stays whatever its age.
    fn trim_by_time(&mut self) {
        let cutoff = self.now.saturating_sub(self.keep_ns);
        while self.chunks.len() > 1 && self.chunks.front().is_some_and(|c| c.max_ts < cutoff) {
            if let Some(c) = self.pop_oldest() {
                if self.spare.is_none() {
                    self.spare = Some(c);
                } else {
                    self.allocated -= 1;
                }
            }
        }
    }

    /// Stream index of the first item at or after `ts` (the newest chunk's
    /// end when none is).
    pub(crate) fn index_at(&self, ts: u64) -> Option<u64> {
        let c = self.chunks.iter().find(|c| c.max_ts >= ts)?;
        let off = c.items.iter().position(|it| it.ts_ns() >= ts).unwrap_or(0);
        Some(c.first + off as u64)
    }

    /// Lost totals as of just before the item at `index`.
    pub(crate) fn lost_before(&self, index: u64) -> LostTotals {
        let mut t = self.base_lost;
        for (i, it) in self.iter_from(self.first_index().unwrap_or(0)) {
            if i >= index {
                break;
            }
            if let StreamItem::Lost { probe, total, .. } = it {
                apply_lost(&mut t, *probe, *total);
            }
        }
        t
    }

    /// Items held from stream index `from` on, with their indexes.
    pub(crate) fn iter_from(&self, from: u64) -> impl Iterator<Item = (u64, &StreamItem)> {
        self.chunks
            .iter()
            .filter(move |c| c.next_index() > from)
            .flat_map(move |c| {
                let skip = from.saturating_sub(c.first) as usize;
                c.items
                    .iter()
                    .enumerate()
                    .skip(skip)
                    .map(move |(k, it)| (c.first + k as u64, it))
            })
    }
}

pub(crate) fn apply_lost(t: &mut LostTotals, probe: u16, total: u64) {
    if let Some(slot) = t.get_mut(usize::from(probe)) {
        *slot = (*slot).max(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use detector_common::Event;

    fn ev(ts: u64) -> StreamItem {
        StreamItem::Event(Event {
            ts_ns: ts,
            ..Event::default()
        })
    }

    #[test]
    fn bytes_never_exceed_memory_and_time_is_kept() {
        let memory = 256 << 10;
        let keep = 1_000_000;
        let mut r = Ring::new(keep, memory);
        let mut peak = 0;
        // 1 µs per item: 1000 items per keep, far fewer than memory holds.
        for i in 0..200_000u64 {
            r.push(i, &ev(i * 1000));
            peak = peak.max(r.bytes());
            assert!(r.bytes() <= memory, "{} > {memory} at {i}", r.bytes());
            if i * 1000 > keep {
                let oldest = r.oldest_ts().unwrap();
                assert!(oldest <= i * 1000 - keep, "keep not covered at {i}");
            }
        }
        assert!(peak > 0);
        // Time-bound: nowhere near the memory bound.
        assert!(r.len() < 1000 + 2 * r.chunk_items, "{}", r.len());
    }

    #[test]
    fn memory_bounds_a_fast_stream() {
        let memory = 128 << 10;
        let mut r = Ring::new(u64::MAX / 2, memory);
        for i in 0..100_000u64 {
            r.push(i, &ev(i));
            assert!(r.bytes() <= memory);
        }
        // Everything held is the newest, contiguous.
        let first = r.first_index().unwrap();
        let idx: Vec<u64> = r.iter_from(0).map(|(i, _)| i).collect();
        assert_eq!(idx.len(), r.len());
        assert_eq!(idx.first(), Some(&first));
        assert_eq!(idx.last(), Some(&99_999));
        assert!(idx.windows(2).all(|w| w[1] == w[0] + 1));
        // And most of the budget is used.
        assert!(r.len() as u64 * size_of::<StreamItem>() as u64 > memory / 2);
    }

    #[test]
    fn losses_before_an_index_include_recycled_chunks() {
        let mut r = Ring::new(10, MIN);
        let mut i = 0;
        r.push(
            i,
            &StreamItem::Lost {
                ts_ns: 1,
                probe: 3,
                total: 5,
            },
        );
        i += 1;
        for _ in 0..20_000 {
            r.push(i, &ev(1 + i * 100));
            i += 1;
        }
        r.push(
            i,
            &StreamItem::Lost {
                ts_ns: 1 + i * 100,
                probe: 3,
                total: 9,
            },
        );
        let lost_item = i;
        i += 1;
        r.push(i, &ev(1 + i * 100));
        assert!(r.first_index().unwrap() > 0, "the first Lost left the ring");
        assert_eq!(r.lost_before(lost_item)[3], 5);
        assert_eq!(r.lost_before(lost_item + 1)[3], 9);
        assert_eq!(r.index_at(1 + i * 100), Some(i));
    }

    const MIN: u64 = crate::flight::policy::MIN_MEMORY;

    #[test]
    fn a_gap_in_indexes_starts_a_chunk() {
        let mut r = Ring::new(u64::MAX / 2, 1 << 20);
        r.push(0, &ev(1));
        r.push(1, &ev(2));
        r.push(10, &ev(3));
        let idx: Vec<u64> = r.iter_from(0).map(|(i, _)| i).collect();
        assert_eq!(idx, [0, 1, 10]);
        let idx: Vec<u64> = r.iter_from(5).map(|(i, _)| i).collect();
        assert_eq!(idx, [10]);
    }
}
