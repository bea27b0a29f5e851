//! Compact copy of the parts of an event a finding may cite later.
//!
//! Windows keep these instead of whole [`Event`]s or rendered
//! [`Evidence`]: they are `Copy`, fixed-size, and only turned into strings
//! when a finding is actually emitted.

use detector_common::{
    Event, EventKind, ProbeId, FS_LARGE, FS_SWAPCACHE, V_ADDR, V_ENTRY_PARTIAL, V_FOLIO,
    V_FOLIO_STATE, V_RET,
};

use super::finding::{Evidence, StateSnapshot};
use crate::event::{fmt_entry, EventExt, RetFmt};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Ev {
    pub index: u64,
    pub ts: u64,
    pub folio: u64,
    /// Full swap entry (explicit or decoded from a swap PTE), 0 when none.
    pub entry: u64,
    pub f_swap: u64,
    /// User virtual address the call concerned (`V_ADDR`), 0 when none.
    pub addr: u64,
    pub ret: i64,
    /// Running total of lost events when this event was seen.
    pub lost: u64,
    pub tid: u32,
    pub refcount: i32,
    pub mapcount: i32,
    pub pincount: i32,
    pub f_state: u32,
    pub probe: u16,
    pub kind: u8,
    pub valid: u8,
    pub has_entry: bool,
    pub comm: [u8; 16],
    pub note: &'static str,
}

impl Ev {
    pub(super) fn new(index: u64, e: &Event, lost: u64, note: &'static str) -> Ev {
        let entry = e.swap_entry();
        Ev {
            index,
            ts: e.ts_ns,
            folio: if e.valid & V_FOLIO != 0 { e.folio } else { 0 },
            entry: entry.unwrap_or(0),
            f_swap: e.f_swap,
            addr: if e.valid & V_ADDR != 0 { e.addr } else { 0 },
            ret: e.ret,
            lost,
            tid: e.tid,
            refcount: e.f_refcount,
            mapcount: e.mapcount(),
            pincount: e.f_pincount,
            f_state: e.f_state,
            probe: e.probe,
            kind: e.kind,
            valid: e.valid,
            has_entry: entry.is_some(),
            comm: e.comm,
            note,
        }
    }

    pub(super) fn with_note(mut self, note: &'static str) -> Ev {
        self.note = note;
        self
    }

    pub(super) fn has_state(&self) -> bool {
        self.valid & V_FOLIO_STATE != 0
    }

    pub(super) fn evidence(&self) -> Evidence {
        let probe = ProbeId::from_u16(self.probe)
            .map(|p| p.name().to_string())
            .unwrap_or_else(|| format!("probe#{}", self.probe));
        let kind = match EventKind::from_u8(self.kind) {
            Some(EventKind::Enter) => "enter",
            Some(EventKind::Exit) => "exit",
            Some(EventKind::Tracepoint) => "tracepoint",
            None => "?",
        };
        let end = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        let comm = String::from_utf8_lossy(&self.comm[..end]).into_owned();
        let st = self.has_state();
        let partial = self.valid & V_ENTRY_PARTIAL != 0;
        let state = StateSnapshot {
            folio: (self.folio != 0).then(|| format!("{:#x}", self.folio)),
            entry: if self.has_entry {
                Some(fmt_entry(self.entry))
            } else {
                None
            },
            folio_swap: (st && self.f_state & FS_SWAPCACHE != 0).then(|| fmt_entry(self.f_swap)),
            refcount: st.then_some(self.refcount),
            mapcount: st.then_some(self.mapcount),
            pincount: (st && self.f_state & FS_LARGE != 0).then_some(self.pincount),
            flags: st.then(|| flags_string(self.f_state)),
            ret: (self.valid & V_RET != 0).then_some(self.ret),
            ret_text: (self.valid & V_RET != 0).then(|| {
                RetFmt {
                    probe: ProbeId::from_u16(self.probe),
                    ret: self.ret,
                }
                .to_string()
            }),
            addr: (self.addr != 0).then(|| format!("{:#x}", self.addr)),
        };
        let mut note = self.note.to_string();
        if partial {
            note.push_str(" (entry known only as an index in a swap address space)");
        }
        Evidence {
            index: self.index,
            ts_ns: self.ts,
            probe,
            kind: kind.to_string(),
            tid: self.tid,
            comm,
            note,
            state,
        }
    }
}

/// `FS_*` bits as `a|b|c`; empty string when none are set.
pub fn flags_string(f: u32) -> String {
    crate::event::flags::evidence_text(f)
}

/// Parses the output of [`flags_string`] (and scenario scripts).
pub fn parse_flags(s: &str) -> Option<u32> {
    s.split(['|', ','])
        .filter(|p| !p.is_empty())
        .try_fold(0, |f, part| {
            crate::event::flags::by_name(part).map(|b| f | b)
        })
}
