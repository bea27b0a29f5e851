//! What the analyzer reports: findings with their evidence chain.
//!
//! Field order is part of the JSON output (serde serializes in declaration
//! order), so only append fields, never reorder them.

use serde::{Deserialize, Serialize};

/// Stable rule identifiers. The serialized string is the public name (used
/// in JSON, scenario `expect` lines and the TUI); never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleId {
    /// A swap entry looked up inside a `move_pages` window was freed and
    /// allocated again before the window closed (seed 000, ABA).
    SwapEntryAba,
    /// A lookup inside a `move_pages` window found nothing, but a folio was
    /// added to the swap cache for that entry before the window closed.
    MissedSwapcacheLookup,
    /// `folio_move_anon_rmap` on a folio that no longer is the swap-cache
    /// folio of the entry the same task looked up.
    StaleFolioMove,
    /// Reclaim unmapped a clean lazyfree (MADV_FREE) folio that still had
    /// references beyond its mappings (seed 003).
    LazyfreeExtraRefs,
    /// `refcount < mapcount` on a folio.
    RefcountBelowMapcount,
    /// FOLL_PIN taken on an anon folio that is not anon-exclusive.
    PinNotExclusive,
    /// `do_wp_page` on a maybe-DMA-pinned anon folio that is not
    /// anon-exclusive: the COW copies the page away from its DMA user.
    CowOfPinned,
    /// `__remove_mapping` freed a folio that still had pins.
    RemoveMappingPinned,
    /// `swapcache_prepare` returned -EEXIST many times for one entry.
    EexistStorm,
    /// A synchronous swap-in read an entry whose SWAP_HAS_CACHE the reading
    /// task does not hold.
    SwapinWithoutCachePin,
}

impl RuleId {
    pub const ALL: &'static [RuleId] = &[
        RuleId::SwapEntryAba,
        RuleId::MissedSwapcacheLookup,
        RuleId::StaleFolioMove,
        RuleId::LazyfreeExtraRefs,
        RuleId::RefcountBelowMapcount,
        RuleId::PinNotExclusive,
        RuleId::CowOfPinned,
        RuleId::RemoveMappingPinned,
        RuleId::EexistStorm,
        RuleId::SwapinWithoutCachePin,
    ];

    /// The stable string, identical to the serialized form.
    pub fn name(self) -> &'static str {
        match self {
            RuleId::SwapEntryAba => "swap_entry_aba",
            RuleId::MissedSwapcacheLookup => "missed_swapcache_lookup",
            RuleId::StaleFolioMove => "stale_folio_move",
            RuleId::LazyfreeExtraRefs => "lazyfree_extra_refs",
            RuleId::RefcountBelowMapcount => "refcount_below_mapcount",
            RuleId::PinNotExclusive => "pin_not_exclusive",
            RuleId::CowOfPinned => "cow_of_pinned",
            RuleId::RemoveMappingPinned => "remove_mapping_pinned",
            RuleId::EexistStorm => "eexist_storm",
            RuleId::SwapinWithoutCachePin => "swapin_without_cache_pin",
        }
    }

    pub fn from_name(s: &str) -> Option<RuleId> {
        RuleId::ALL.iter().copied().find(|r| r.name() == s)
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How bad a finding is. Ordered: `Info < NearMiss < Violation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing (contention, a window that came close), not a race.
    Info,
    /// The race happened but a kernel guard caught it (or the evidence is
    /// only circumstantial; the explanation says which).
    NearMiss,
    /// The events prove the kernel acted on state that was no longer true.
    Violation,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::NearMiss => "near_miss",
            Severity::Violation => "violation",
        }
    }

    /// Accepts `near_miss` and `near-miss`.
    pub fn from_name(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "near_miss" | "near-miss" => Some(Severity::NearMiss),
            "violation" => Some(Severity::Violation),
            _ => None,
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The kernel objects a finding concerns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objects {
    /// Swap entries as `type:offset` (offset in hex).
    pub entries: Vec<String>,
    /// Folio addresses in hex.
    pub folios: Vec<String>,
    /// Thread ids involved, in order of first appearance in the evidence.
    pub tids: Vec<u32>,
}

/// Folio / entry state at one step of the evidence chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSnapshot {
    pub folio: Option<String>,
    pub entry: Option<String>,
    /// `folio->swap` as `type:offset` when the folio state was read.
    pub folio_swap: Option<String>,
    pub refcount: Option<i32>,
    pub mapcount: Option<i32>,
    pub pincount: Option<i32>,
    /// Decoded `FS_*` flags, `|`-separated (e.g. `anon|swapbacked|swapcache`).
    pub flags: Option<String>,
    /// Return value of an exit probe.
    pub ret: Option<i64>,
    /// `ret` as a person reads it: a folio address, `NULL` or
    /// `ERR(-ENOENT)` for probes that return a pointer, `-EEXIST` for a
    /// known errno, decimal otherwise ([`crate::event::RetFmt`]). Absent in
    /// findings written before it existed.
    #[serde(default)]
    pub ret_text: Option<String>,
    /// The user virtual address the call concerned (the faulting or moved
    /// address, the one reclaim unmapped), in hex. Absent when the probe
    /// has none, and in findings written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
}

/// One step of the ordered chain that proves a finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Index of the item in the stream (0-based, counting `Lost` items).
    pub index: u64,
    pub ts_ns: u64,
    pub probe: String,
    /// `enter`, `exit` or `tracepoint`.
    pub kind: String,
    pub tid: u32,
    pub comm: String,
    pub note: String,
    pub state: StateSnapshot,
}

impl Evidence {
    /// The return value formatted for people: `state.ret_text` when the
    /// finding carries it, else formatted here from the probe name.
    pub fn ret_display(&self) -> Option<String> {
        match (&self.state.ret_text, self.state.ret) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(r)) => Some(
                crate::event::RetFmt {
                    probe: detector_common::ProbeId::from_name(&self.probe),
                    ret: r,
                }
                .to_string(),
            ),
            (None, None) => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfidenceLevel {
    Full,
    /// Events were lost inside the finding's window: an event that would
    /// have changed the conclusion may be missing.
    Reduced,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confidence {
    pub level: ConfidenceLevel,
    /// Events lost (all probes) while the finding's window was open.
    pub lost_events: u64,
    pub note: String,
}

impl Confidence {
    pub fn full() -> Self {
        Confidence {
            level: ConfidenceLevel::Full,
            lost_events: 0,
            note: String::new(),
        }
    }

    /// Full when nothing was lost, reduced (with the reason) otherwise.
    pub fn from_lost(lost: u64) -> Self {
        if lost == 0 {
            Self::full()
        } else {
            Confidence {
                level: ConfidenceLevel::Reduced,
                lost_events: lost,
                note: format!(
                    "{lost} event(s) were lost while this window was open; one of them may be \
                     the event that would have closed or explained it"
                ),
            }
        }
    }
}

/// One conclusion of the analyzer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Sequence number of the finding within the analysis (1-based).
    pub id: u64,
    pub rule: RuleId,
    pub severity: Severity,
    pub objects: Objects,
    /// One line a kernel developer can check against the evidence.
    pub explanation: String,
    pub evidence: Vec<Evidence>,
    pub confidence: Confidence,
    /// Why, in a few stable words (`not_held`, ...), for grouping repeated
    /// findings ([`crate::groups`]): findings of one rule, severity and task
    /// with the same cause are one group. Empty when the rule does not say.
    #[serde(default)]
    pub cause: String,
}
