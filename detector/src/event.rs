//! Decoding helpers over the raw event ABI, and the stream item every
//! consumer (trace writer, analyzer, TUI) sees.

use detector_common::{
    swp_offset, swp_type, x86_64_pte_to_swp_entry, Event, EventKind, ProbeId, FS_LARGE, V_ENTRY,
    V_ENTRY_PARTIAL, V_PTE,
};

/// One item of the event stream, in the order the capture produced it.
/// Live capture, the trace file and the analyzer all use this order, which
/// is what makes replay produce exactly the live findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamItem {
    Event(Event),
    /// Running total of events a probe could not emit (ring buffer full),
    /// read from the kernel at `ts_ns`.
    Lost {
        ts_ns: u64,
        probe: u16,
        total: u64,
    },
}

impl StreamItem {
    /// When the item was observed (CLOCK_MONOTONIC ns).
    pub fn ts_ns(&self) -> u64 {
        match self {
            StreamItem::Event(e) => e.ts_ns,
            StreamItem::Lost { ts_ns, .. } => *ts_ns,
        }
    }
}

/// Pin bias of a small folio's refcount (`GUP_PIN_COUNTING_BIAS`).
pub const GUP_PIN_COUNTING_BIAS: i32 = 1024;
/// `-EEXIST`.
pub const EEXIST: i64 = -17;

/// Convenience accessors; all are cheap and allocation-free.
pub trait EventExt {
    fn probe_id(&self) -> Option<ProbeId>;
    fn event_kind(&self) -> Option<EventKind>;
    fn comm_str(&self) -> &str;
    /// The swap entry the event concerns: the explicit one, else the one in a
    /// swap PTE. `None` when the event names no entry or only part of one.
    fn swap_entry(&self) -> Option<u64>;
    /// Total mappings of the folio (`folio_mapcount()`).
    fn mapcount(&self) -> i32;
    /// `folio_maybe_dma_pinned()`.
    fn maybe_dma_pinned(&self) -> bool;
}

impl EventExt for Event {
    fn probe_id(&self) -> Option<ProbeId> {
        ProbeId::from_u16(self.probe)
    }
    fn event_kind(&self) -> Option<EventKind> {
        EventKind::from_u8(self.kind)
    }
    fn comm_str(&self) -> &str {
        let end = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        std::str::from_utf8(&self.comm[..end]).unwrap_or("?")
    }
    fn swap_entry(&self) -> Option<u64> {
        if self.valid & V_ENTRY != 0 && self.valid & V_ENTRY_PARTIAL == 0 {
            Some(self.entry)
        } else if self.valid & V_PTE != 0 {
            x86_64_pte_to_swp_entry(self.pte)
        } else {
            None
        }
    }
    fn mapcount(&self) -> i32 {
        if self.f_state & FS_LARGE != 0 && self.f_large_mapcount != 0 {
            self.f_large_mapcount
        } else {
            self.f_mapcount
        }
    }
    fn maybe_dma_pinned(&self) -> bool {
        if self.f_state & FS_LARGE != 0 {
            self.f_pincount > 0
        } else {
            self.f_refcount >= GUP_PIN_COUNTING_BIAS
        }
    }
}

/// `type:offset` in hex, the way the kernel prints swap entries.
pub fn fmt_entry(val: u64) -> String {
    format!("{}:{:#x}", swp_type(val), swp_offset(val))
}
