//! A finding as a row: formatted once, when it arrives, so that the UI's
//! frames and the one-line printer only copy strings.

use std::fmt::Write as _;

use super::finding::EvidenceState;
use crate::analyzer::{ConfidenceLevel, Finding, Severity};
use crate::event::StreamItem;

/// One step of a finding's evidence chain.
#[derive(Clone, Debug, PartialEq)]
pub struct EvidenceRow {
    pub index: u64,
    pub ts_ns: u64,
    /// The probe and the kind of event (`swap_cache_lookup exit`).
    pub probe: String,
    pub pid: u32,
    pub tid: u32,
    /// CPU when the event is still in [`EventMeta`].
    pub cpu: Option<u32>,
    pub comm: String,
    /// What this step means for the rule.
    pub note: String,
    /// Folio / entry state at this step ([`EvidenceState`], with the pin
    /// count).
    pub state: String,
}

/// A finding as rows and lines show it.
#[derive(Clone, Debug, PartialEq)]
pub struct FindingRow {
    /// The finding's id (arrival order, 1-based).
    pub seq: u64,
    /// The rule's short cause (`not_held`, ...), empty when it gives none.
    pub cause: String,
    pub rule: String,
    pub severity: Severity,
    /// Objects, formatted (`entry 0:0x40, folio 0xffff...`).
    pub objects: String,
    pub explanation: String,
    /// Time of the last evidence step (when the finding became true).
    pub ts_ns: u64,
    pub confidence: String,
    pub evidence: Vec<EvidenceRow>,
}

impl FindingRow {
    /// The task the finding is about: the one whose event completed it
    /// (the last evidence step), as findings are grouped.
    pub fn task(&self) -> Option<&EvidenceRow> {
        self.evidence.iter().max_by_key(|e| e.index)
    }
}

/// Recent events' CPU and pid by stream index: a finding's evidence names
/// the task but not the CPU, and rows show both. A ring of `2^n` slots,
/// filled as items pass.
pub struct EventMeta {
    slots: Vec<(u64, u32, u32)>,
}

impl EventMeta {
    pub fn new(capacity_pow2: u32) -> Self {
        EventMeta {
            slots: vec![(u64::MAX, 0, 0); 1usize << capacity_pow2],
        }
    }

    #[inline]
    pub fn record(&mut self, index: u64, item: &StreamItem) {
        if let StreamItem::Event(ev) = item {
            let n = self.slots.len();
            self.slots[(index as usize) & (n - 1)] = (index, ev.cpu, ev.pid);
        }
    }

    /// `(cpu, pid)` of event `index`, when it is recent enough to be kept.
    pub fn get(&self, index: u64) -> Option<(u32, u32)> {
        let n = self.slots.len();
        let (i, cpu, pid) = self.slots[(index as usize) & (n - 1)];
        (i == index).then_some((cpu, pid))
    }
}

/// Formats a finding for the list, the drill-down and the one-line printer.
pub fn finding_row(f: &Finding, meta: &EventMeta) -> FindingRow {
    let mut objects = String::new();
    for e in &f.objects.entries {
        sep(&mut objects);
        let _ = write!(objects, "entry {e}");
    }
    for a in &f.objects.folios {
        sep(&mut objects);
        let _ = write!(objects, "folio {a}");
    }
    let confidence = match f.confidence.level {
        ConfidenceLevel::Full => String::from("full"),
        ConfidenceLevel::Reduced => {
            format!(
                "reduced ({} events lost in the window)",
                f.confidence.lost_events
            )
        }
    };
    let evidence = f
        .evidence
        .iter()
        .map(|e| {
            let m = meta.get(e.index);
            let ret = e.ret_display();
            let state = EvidenceState {
                state: &e.state,
                ret: ret.as_deref(),
                pin: true,
            }
            .to_string();
            EvidenceRow {
                index: e.index,
                ts_ns: e.ts_ns,
                probe: if e.kind.is_empty() {
                    e.probe.clone()
                } else {
                    format!("{} {}", e.probe, e.kind)
                },
                pid: m.map_or(0, |(_, pid)| pid),
                tid: e.tid,
                cpu: m.map(|(cpu, _)| cpu),
                comm: e.comm.clone(),
                note: e.note.clone(),
                state: state.trim_start().to_owned(),
            }
        })
        .collect::<Vec<_>>();
    FindingRow {
        seq: f.id,
        cause: f.cause.clone(),
        rule: f.rule.name().to_owned(),
        severity: f.severity,
        objects,
        explanation: f.explanation.clone(),
        ts_ns: evidence.iter().map(|e| e.ts_ns).max().unwrap_or(0),
        confidence,
        evidence,
    }
}

fn sep(s: &mut String) {
    if !s.is_empty() {
        s.push_str(", ");
    }
}
