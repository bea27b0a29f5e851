//! The folio state bits (`FS_*`) the probes record, and their names: one
//! table for the trace text, the JSON, the evidence of findings and the
//! UI's short codes.

use std::fmt;

use detector_common::{
    FS_ANON, FS_ANON_EXCLUSIVE, FS_DIRTY, FS_KSM, FS_LARGE, FS_LOCKED, FS_LRU, FS_SWAPBACKED,
    FS_SWAPCACHE, FS_UPTODATE, FS_WRITEBACK,
};

/// One folio state bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolioFlag {
    pub bit: u32,
    /// The name in text, JSON and evidence (`swapcache`).
    pub name: &'static str,
    /// The UI's short code (`sc`, see docs/tui.md).
    pub code: &'static str,
}

/// Every bit, in the order the trace text and JSON list them (documented
/// in docs/trace-format.md).
pub const FOLIO_FLAGS: [FolioFlag; 11] = [
    flag(FS_LOCKED, "locked", "lk"),
    flag(FS_SWAPCACHE, "swapcache", "sc"),
    flag(FS_SWAPBACKED, "swapbacked", "sb"),
    flag(FS_ANON_EXCLUSIVE, "anon_exclusive", "ax"),
    flag(FS_LARGE, "large", "lg"),
    flag(FS_ANON, "anon", "an"),
    flag(FS_KSM, "ksm", "ksm"),
    flag(FS_DIRTY, "dirty", "dt"),
    flag(FS_LRU, "lru", "lru"),
    flag(FS_WRITEBACK, "writeback", "wb"),
    flag(FS_UPTODATE, "uptodate", "ud"),
];

/// The order evidence in findings lists the bits in: the mapping type
/// (anon, ksm) first, then the page flags. Reports and their JSON carry
/// these strings, so the order is kept apart from [`FOLIO_FLAGS`]'.
pub const EVIDENCE_ORDER: [u32; 11] = [
    FS_ANON,
    FS_KSM,
    FS_SWAPBACKED,
    FS_SWAPCACHE,
    FS_ANON_EXCLUSIVE,
    FS_LOCKED,
    FS_LARGE,
    FS_DIRTY,
    FS_LRU,
    FS_WRITEBACK,
    FS_UPTODATE,
];

const fn flag(bit: u32, name: &'static str, code: &'static str) -> FolioFlag {
    FolioFlag { bit, name, code }
}

/// The flags set in `bits`, in table order.
pub fn set(bits: u32) -> impl Iterator<Item = &'static FolioFlag> {
    FOLIO_FLAGS.iter().filter(move |f| bits & f.bit != 0)
}

/// The bit called `name` (`exclusive` is accepted for `anon_exclusive`,
/// as scenario scripts write it).
pub fn by_name(name: &str) -> Option<u32> {
    if name == "exclusive" {
        return Some(FS_ANON_EXCLUSIVE);
    }
    FOLIO_FLAGS.iter().find(|f| f.name == name).map(|f| f.bit)
}

/// The names of the set bits joined by `|` in table order, `-` when none:
/// the trace text's form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Names(pub u32);

impl fmt::Display for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for flag in set(self.0) {
            if any {
                f.write_str("|")?;
            }
            f.write_str(flag.name)?;
            any = true;
        }
        if !any {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// The names of the set bits joined by `|` in [`EVIDENCE_ORDER`], empty
/// when none: the form evidence steps carry.
pub fn evidence_text(bits: u32) -> String {
    let mut s = String::new();
    for bit in EVIDENCE_ORDER.iter().filter(|b| bits & **b != 0) {
        if !s.is_empty() {
            s.push('|');
        }
        s.push_str(
            FOLIO_FLAGS
                .iter()
                .find(|f| f.bit == *bit)
                .map_or("?", |f| f.name),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bit_once_in_both_orders() {
        let all = FOLIO_FLAGS.iter().fold(0, |a, f| a | f.bit);
        assert_eq!(all.count_ones(), 11);
        assert_eq!(EVIDENCE_ORDER.iter().fold(0, |a, b| a | b), all);
        assert_eq!(Names(0).to_string(), "-");
        assert_eq!(
            Names(FS_SWAPCACHE | FS_SWAPBACKED | FS_ANON).to_string(),
            "swapcache|swapbacked|anon"
        );
    }

    #[test]
    fn the_analyzer_reads_and_writes_the_same_names() {
        // The evidence text is the analyzer's own; this keeps the two
        // from drifting apart until the analyzer uses this table.
        for bits in 0..(1u32 << 11) {
            let b = FOLIO_FLAGS
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .fold(0, |a, (_, f)| a | f.bit);
            assert_eq!(evidence_text(b), crate::analyzer::flags_string(b));
        }
        for f in &FOLIO_FLAGS {
            assert_eq!(crate::analyzer::parse_flags(f.name), Some(f.bit));
            assert_eq!(by_name(f.name), Some(f.bit));
        }
        assert_eq!(
            by_name("exclusive"),
            crate::analyzer::parse_flags("exclusive")
        );
    }
}
