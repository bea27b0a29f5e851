//! The trace header and footer (JSON inside binary framing) and the layout
//! map.

use std::collections::BTreeMap;

use detector_common::{Layout, ABI_VERSION, EVENT_SIZE};
use serde::{Deserialize, Serialize};

use super::format::FORMAT_VERSION;
use crate::analyzer::Config as AnalyzerConfig;
use crate::plan::PlanEntry;

/// Everything needed to interpret a trace away from the machine that
/// recorded it. Stored as JSON so fields can be added without a format bump;
/// readers ignore fields they do not know and default the ones missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TraceHeader {
    /// Copy of the preamble's version, for tools that only read the JSON.
    pub format_version: u32,
    /// `detector_common::ABI_VERSION` of the events in this file.
    pub abi_version: u32,
    /// Bytes per event payload (152 for ABI v1).
    pub event_size: u32,
    /// `uname -r` of the traced kernel.
    pub kernel_release: String,
    /// `/proc/sys/kernel/random/boot_id`: timestamps are only comparable
    /// between traces with the same boot id.
    pub boot_id: String,
    pub hostname: String,
    /// Clock of every `ts_ns`: always `CLOCK_MONOTONIC`.
    pub clock: String,
    /// CLOCK_MONOTONIC and CLOCK_REALTIME read back to back at capture start,
    /// to turn event times into wall-clock times.
    pub start_monotonic_ns: u64,
    pub start_realtime_ns: u64,
    /// Resolved kernel layout, field name -> value (see [`layout_to_map`]).
    pub layout: BTreeMap<String, u64>,
    /// How each probe role was attached.
    pub plan: Vec<PlanEntry>,
    pub ring_buffer_bytes: u64,
    /// argv of the recording process.
    pub command_line: Vec<String>,
    /// `live` for a kernel capture, `simulate:<script>` for a compiled
    /// scenario, and so on.
    pub origin: String,
    /// 0 for the first file of a capture; +1 for each rotated segment.
    pub segment: u32,
    /// The analyzer configuration this capture is meant to be analyzed
    /// with (a scenario's `config` lines, the settings of `record` and
    /// `live`), so a replay reproduces those findings exactly. `None` in
    /// files written before it existed and in synthetic streams. Keys this
    /// build does not know are ignored and keys it misses (or cannot read)
    /// keep their defaults, so the field never makes a header unreadable.
    #[serde(deserialize_with = "config_over_defaults")]
    pub analyzer_config: Option<AnalyzerConfig>,
    /// Kernel addresses in this file are keyed pseudonyms (`--redact`, see
    /// [`Redactor`](super::Redactor)), and the header lacks what would give
    /// the kernel's layout away.
    pub redacted: bool,
}

/// Reads `analyzer_config` key by key over [`AnalyzerConfig::default`].
fn config_over_defaults<'de, D>(d: D) -> Result<Option<AnalyzerConfig>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde_json::Value;
    let Some(Value::Object(given)) = Option::<Value>::deserialize(d)? else {
        return Ok(None);
    };
    let defaults = AnalyzerConfig::default();
    let Ok(Value::Object(mut merged)) = serde_json::to_value(&defaults) else {
        return Ok(Some(defaults));
    };
    for (k, v) in given {
        if let Some(slot) = merged.get_mut(&k) {
            let old = std::mem::replace(slot, v);
            // A value this build cannot read keeps the default.
            if serde_json::from_value::<AnalyzerConfig>(Value::Object(merged.clone())).is_err() {
                merged.insert(k, old);
            }
        }
    }
    Ok(Some(
        serde_json::from_value(Value::Object(merged)).unwrap_or(defaults),
    ))
}

impl Default for TraceHeader {
    fn default() -> Self {
        TraceHeader {
            format_version: FORMAT_VERSION,
            abi_version: ABI_VERSION,
            event_size: EVENT_SIZE as u32,
            kernel_release: String::new(),
            boot_id: String::new(),
            hostname: String::new(),
            clock: "CLOCK_MONOTONIC".to_string(),
            start_monotonic_ns: 0,
            start_realtime_ns: 0,
            layout: BTreeMap::new(),
            plan: Vec::new(),
            ring_buffer_bytes: 0,
            command_line: Vec::new(),
            origin: String::new(),
            segment: 0,
            analyzer_config: None,
            redacted: false,
        }
    }
}

impl TraceHeader {
    /// A header with the format constants filled in and everything else
    /// empty: for simulated traces and tests.
    pub fn new(origin: impl Into<String>) -> Self {
        TraceHeader {
            origin: origin.into(),
            ..TraceHeader::default()
        }
    }

    /// A header describing the running host right now: kernel release, boot
    /// id, hostname, both clocks and this process's command line. Values
    /// that cannot be read are left empty rather than failing the capture.
    pub fn for_this_host(
        origin: impl Into<String>,
        layout: &Layout,
        plan: Vec<PlanEntry>,
        ring_buffer_bytes: u64,
    ) -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        TraceHeader {
            kernel_release: read("/proc/sys/kernel/osrelease"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            hostname: read("/proc/sys/kernel/hostname"),
            start_monotonic_ns: crate::event::clock_ns(libc::CLOCK_MONOTONIC),
            start_realtime_ns: crate::event::clock_ns(libc::CLOCK_REALTIME),
            layout: layout_to_map(layout),
            plan,
            ring_buffer_bytes,
            command_line: std::env::args().collect(),
            origin: origin.into(),
            ..TraceHeader::default()
        }
    }

    /// The layout as a struct; names this build does not know are dropped
    /// and names it misses stay at [`Layout::EMPTY`].
    pub fn layout(&self) -> Layout {
        layout_from_map(&self.layout)
    }
}

/// Counts written as the last record. Lost totals are the capture-wide
/// running totals as of the end of this file (they include losses that
/// happened while earlier segments were written).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TraceFooter {
    /// Records before the footer (events + lost records + any others).
    pub records: u64,
    /// Event records in this file.
    pub events: u64,
    /// Event records per probe name (`ProbeId::name()`, or `probe_<n>` for
    /// an id this build does not know).
    pub events_per_probe: BTreeMap<String, u64>,
    /// Last running lost total seen per probe name.
    pub lost_per_probe: BTreeMap<String, u64>,
    /// Sum of `lost_per_probe`.
    pub lost_total: u64,
    /// Earliest and latest event `ts_ns` in this file (0 with no events).
    pub first_event_ns: u64,
    pub last_event_ns: u64,
    /// CLOCK_MONOTONIC / CLOCK_REALTIME when the file was finished.
    pub end_monotonic_ns: u64,
    pub end_realtime_ns: u64,
    /// Why the capture (or this segment) ended: `duration`, `interrupted`,
    /// `rotated`, `end of script`, ...
    pub stop_reason: String,
}

macro_rules! layout_fields {
    ($m:ident) => {
        $m!(
            folio_flags,
            folio_mapping,
            folio_index,
            folio_swap,
            folio_mapcount,
            folio_refcount,
            folio_large_mapcount,
            folio_entire_mapcount,
            folio_pincount,
            folio_nr_pages,
            vmf_orig_pte,
            vmf_address,
            pg_locked,
            pg_swapcache,
            pg_swapbacked,
            pg_anon_exclusive,
            pg_head,
            pg_dirty,
            pg_lru,
            pg_writeback,
            pg_uptodate,
            foll_pin,
            page_size_of,
            page_compound_head,
            task_start_time,
            si_type,
            si_cluster_info,
            ci_size_of,
            cluster_pages,
            vma_mm,
            vma_flags,
            vm_droppable_bit,
            mm_pgd;
            vmemmap_base_sym,
            page_offset_base_sym
        )
    };
}

/// The layout as name -> value, so a reader built against a different
/// `Layout` still shows every field the recorder resolved.
pub fn layout_to_map(l: &Layout) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    macro_rules! put {
        ($($f32:ident),*; $($f64:ident),*) => {
            $(m.insert(stringify!($f32).to_string(), u64::from(l.$f32));)*
            $(m.insert(stringify!($f64).to_string(), l.$f64);)*
        };
    }
    layout_fields!(put);
    m
}

/// Inverse of [`layout_to_map`]. Values too wide for a 32-bit field are
/// treated as absent.
pub fn layout_from_map(m: &BTreeMap<String, u64>) -> Layout {
    let mut l = Layout::EMPTY;
    macro_rules! get {
        ($($f32:ident),*; $($f64:ident),*) => {
            $(if let Some(&v) = m.get(stringify!($f32)) {
                l.$f32 = u32::try_from(v).unwrap_or(detector_common::ABSENT);
            })*
            $(if let Some(&v) = m.get(stringify!($f64)) {
                l.$f64 = v;
            })*
        };
    }
    layout_fields!(get);
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_map_round_trips() {
        let mut l = Layout::EMPTY;
        l.folio_flags = 0;
        l.folio_swap = 40;
        l.foll_pin = 1 << 18;
        l.vmemmap_base_sym = 0xffff_ffff_8200_0000;
        let m = layout_to_map(&l);
        // Every byte of the struct must be covered by a named field, so a
        // field added to `Layout` without being added here fails this test.
        let u64_fields = 2;
        // `Layout::_pad`, which keeps the u64 aligned without a hole.
        let padding = 4;
        assert_eq!(
            (m.len() - u64_fields) * 4 + u64_fields * 8 + padding,
            std::mem::size_of::<Layout>()
        );
        assert_eq!(m["folio_swap"], 40);
        assert_eq!(layout_from_map(&m), l);
    }

    #[test]
    fn header_tolerates_unknown_and_missing_fields() {
        let h: TraceHeader =
            serde_json::from_str(r#"{"origin":"live","future_field":[1,2]}"#).unwrap();
        assert_eq!(h.origin, "live");
        assert_eq!(h.clock, "CLOCK_MONOTONIC");
        assert_eq!(h.analyzer_config, None);
    }

    #[test]
    fn analyzer_config_round_trips_and_reads_over_defaults() {
        let mut h = TraceHeader::new("simulate:x.scn");
        let cfg = AnalyzerConfig {
            eexist_threshold: 4,
            task_idle_ns: 5,
            ..AnalyzerConfig::default()
        };
        h.analyzer_config = Some(cfg.clone());
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains(r#""analyzer_config":{"#), "{json}");
        let back: TraceHeader = serde_json::from_str(&json).unwrap();
        assert_eq!(back.analyzer_config, Some(cfg));

        // Written by another version: a key this build lacks, one missing,
        // one of the wrong type. The header still reads.
        let h: TraceHeader = serde_json::from_str(
            r#"{"analyzer_config":{"eexist_threshold":9,"future_knob":true,"max_tracked":"many"}}"#,
        )
        .unwrap();
        let c = h.analyzer_config.unwrap();
        assert_eq!(c.eexist_threshold, 9);
        assert_eq!(c.max_tracked, AnalyzerConfig::default().max_tracked);
        assert_eq!(
            c.lookups_per_window,
            AnalyzerConfig::default().lookups_per_window
        );
        let h: TraceHeader = serde_json::from_str(r#"{"analyzer_config":null}"#).unwrap();
        assert_eq!(h.analyzer_config, None);
    }
}
