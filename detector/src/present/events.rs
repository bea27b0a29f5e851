//! Events as text lines and JSON lines (`detector replay --format text |
//! jsonl`, `detector export --format jsonl`, the Perfetto export's
//! arguments).
//!
//! Everything here writes straight into the caller's `Write` through
//! `fmt::Arguments` and small `Display` / `Serialize` wrappers, so
//! formatting an event allocates nothing. The JSON field names are part of
//! the documented interface (`docs/trace-format.md`).

use std::fmt;
use std::io::{self, Write};

use detector_common::{
    Event, FS_SWAPCACHE, V_ADDR, V_ENTRY, V_ENTRY_PARTIAL, V_FOLIO, V_FOLIO_STATE, V_PIN, V_PTE,
    V_RET,
};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;

use super::units::RelTime;
use crate::event::flags::{self, Names};
use crate::event::{errno_name, kind_name, Entry, EventExt, ProbeName, RetFmt, StreamItem};

/// One human-readable line per item, for a kernel developer:
///
/// ```text
/// #12 0.000123456 cpu1 stress/120:121 swap_cache_lookup exit folio=0xffffea0004d3c0c0 entry=0:0x1f3 nr=1 ret=0xffffea0004d3c0c0 [swapcache|swapbacked|anon ref=3 map=1 pin=0 swap=0:0x1f3]
/// #13 0.000200000 LOST swap_cache_insert total=42
/// ```
///
/// Times are `ts_ns - base_ns` (pass the header's `start_monotonic_ns`, or
/// the first event's time).
pub fn write_text<W: Write + ?Sized>(
    w: &mut W,
    base_ns: u64,
    index: u64,
    item: &StreamItem,
) -> io::Result<()> {
    match item {
        StreamItem::Lost {
            ts_ns,
            probe,
            total,
        } => writeln!(
            w,
            "#{index} {} LOST {} total={total}",
            RelTime {
                ts: *ts_ns,
                base: base_ns
            },
            ProbeName(*probe)
        ),
        StreamItem::Event(e) => {
            write!(
                w,
                "#{index} {} cpu{} {}/{}:{} {} {}",
                RelTime {
                    ts: e.ts_ns,
                    base: base_ns
                },
                e.cpu,
                e.comm_str(),
                e.pid,
                e.tid,
                ProbeName(e.probe),
                kind_name(e.kind)
            )?;
            if e.valid & V_FOLIO != 0 {
                write!(w, " folio={:#x}", e.folio)?;
            }
            if let Some(entry) = e.swap_entry() {
                write!(w, " entry={}", Entry(entry))?;
            } else if e.valid & V_ENTRY_PARTIAL != 0 {
                write!(w, " space={:#x} index={:#x}", e.addr, e.entry)?;
            }
            if e.nr != 0 {
                write!(w, " nr={}", e.nr)?;
            }
            if e.valid & V_PTE != 0 {
                write!(w, " pte={:#x}", e.pte)?;
            }
            if e.valid & V_ADDR != 0 && e.valid & V_ENTRY_PARTIAL == 0 {
                write!(w, " addr={:#x}", e.addr)?;
            }
            if e.arg != 0 {
                write!(w, " arg={:#x}", e.arg)?;
            }
            if e.valid & V_PIN != 0 {
                w.write_all(b" pin")?;
            }
            if e.valid & V_RET != 0 {
                write!(
                    w,
                    " ret={}",
                    RetFmt {
                        probe: e.probe_id(),
                        ret: e.ret
                    }
                )?;
            }
            if e.valid & V_FOLIO_STATE != 0 {
                write!(
                    w,
                    " [{} ref={} map={} pin={}",
                    Names(e.f_state),
                    e.f_refcount,
                    e.mapcount(),
                    e.f_pincount
                )?;
                if e.f_nr_pages > 1 {
                    write!(w, " pages={}", e.f_nr_pages)?;
                }
                if e.f_state & FS_SWAPCACHE != 0 {
                    write!(w, " swap={}", Entry(e.f_swap))?;
                }
                if e.maybe_dma_pinned() {
                    w.write_all(b" maybe_dma_pinned")?;
                }
                w.write_all(b"]")?;
            }
            w.write_all(b"\n")
        }
    }
}

/// A `u64` as a `"0x..."` string: JSON numbers above 2^53 lose precision in
/// most consumers, and kernel addresses are all above it.
struct Hex(u64);

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:#x}", self.0))
    }
}

/// Any `Display` value as a JSON string, without an intermediate `String`.
struct DisplayStr<T>(T);

impl<T: fmt::Display> Serialize for DisplayStr<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

struct EntryStr(u64);

impl Serialize for EntryStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Entry(self.0))
    }
}

struct FlagList(u32);

impl Serialize for FlagList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(flags::set(self.0).count()))?;
        for f in flags::set(self.0) {
            seq.serialize_element(f.name)?;
        }
        seq.end()
    }
}

struct FolioState<'a>(&'a Event);

impl Serialize for FolioState<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = s.serialize_map(Some(13))?;
        m.serialize_entry("flags", &FlagList(e.f_state))?;
        m.serialize_entry("state_bits", &e.f_state)?;
        m.serialize_entry("flags_raw", &Hex(e.f_flags))?;
        m.serialize_entry("refcount", &e.f_refcount)?;
        m.serialize_entry("mapcount", &e.mapcount())?;
        m.serialize_entry("page_mapcount", &e.f_mapcount)?;
        m.serialize_entry("large_mapcount", &e.f_large_mapcount)?;
        m.serialize_entry("entire_mapcount", &e.f_entire_mapcount)?;
        m.serialize_entry("pincount", &e.f_pincount)?;
        m.serialize_entry("maybe_dma_pinned", &e.maybe_dma_pinned())?;
        m.serialize_entry("nr_pages", &e.f_nr_pages)?;
        m.serialize_entry("swap", &EntryStr(e.f_swap))?;
        m.serialize_entry("mapping", &Hex(e.f_mapping))?;
        m.serialize_entry("index", &Hex(e.f_index))?;
        m.end()
    }
}

/// One item as the JSON object `write_jsonl` prints.
pub(super) struct JsonItem<'a> {
    pub(super) index: u64,
    pub(super) item: &'a StreamItem,
}

impl Serialize for JsonItem<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = match self.item {
            StreamItem::Lost {
                ts_ns,
                probe,
                total,
            } => {
                let mut m = s.serialize_map(Some(6))?;
                m.serialize_entry("index", &self.index)?;
                m.serialize_entry("type", "lost")?;
                m.serialize_entry("ts_ns", ts_ns)?;
                m.serialize_entry("probe", &ProbeName(*probe))?;
                m.serialize_entry("probe_id", probe)?;
                m.serialize_entry("total", total)?;
                return m.end();
            }
            StreamItem::Event(e) => e,
        };
        let opt = |bit: u8, v: u64| (e.valid & bit != 0).then_some(Hex(v));
        let mut m = s.serialize_map(Some(25))?;
        m.serialize_entry("index", &self.index)?;
        m.serialize_entry("type", "event")?;
        m.serialize_entry("ts_ns", &e.ts_ns)?;
        m.serialize_entry("cpu", &e.cpu)?;
        m.serialize_entry("pid", &e.pid)?;
        m.serialize_entry("tid", &e.tid)?;
        m.serialize_entry("comm", e.comm_str())?;
        m.serialize_entry("probe", &ProbeName(e.probe))?;
        m.serialize_entry("probe_id", &e.probe)?;
        m.serialize_entry("kind", kind_name(e.kind))?;
        m.serialize_entry("folio", &opt(V_FOLIO, e.folio))?;
        m.serialize_entry("entry", &e.swap_entry().map(EntryStr))?;
        m.serialize_entry("entry_raw", &opt(V_ENTRY, e.entry))?;
        m.serialize_entry("entry_partial", &(e.valid & V_ENTRY_PARTIAL != 0))?;
        m.serialize_entry("nr", &e.nr)?;
        m.serialize_entry("pte", &opt(V_PTE, e.pte))?;
        m.serialize_entry("addr", &opt(V_ADDR, e.addr))?;
        m.serialize_entry("ret", &(e.valid & V_RET != 0).then_some(e.ret))?;
        m.serialize_entry(
            "errno",
            &(e.valid & V_RET != 0).then(|| errno_name(e.ret)).flatten(),
        )?;
        m.serialize_entry("arg", &e.arg)?;
        m.serialize_entry("pin", &(e.valid & V_PIN != 0))?;
        m.serialize_entry("valid", &e.valid)?;
        m.serialize_entry(
            "folio_state",
            &(e.valid & V_FOLIO_STATE != 0).then_some(FolioState(e)),
        )?;
        // Last, so readers that take the keys in order see the old ones
        // where they were.
        m.serialize_entry(
            "ret_text",
            &(e.valid & V_RET != 0).then(|| {
                DisplayStr(RetFmt {
                    probe: e.probe_id(),
                    ret: e.ret,
                })
            }),
        )?;
        m.end()
    }
}

/// One JSON object per line; field names and types are documented in
/// `docs/trace-format.md` and stable within a major version.
pub fn write_jsonl<W: Write + ?Sized>(w: &mut W, index: u64, item: &StreamItem) -> io::Result<()> {
    serde_json::to_writer(&mut *w, &JsonItem { index, item }).map_err(io::Error::from)?;
    w.write_all(b"\n")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use detector_common::{swp_entry, EventKind, ProbeId, FS_ANON, FS_SWAPBACKED};

    /// One `swapcache_prepare` exit returning -EEXIST, with folio state:
    /// the event the formatters' tests print.
    pub(crate) fn sample() -> Event {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"stress");
        Event {
            ts_ns: 2_000_123_456,
            folio: 0xffff_ea00_04d3_c0c0,
            entry: swp_entry(1, 0x1f3),
            ret: -17,
            pid: 120,
            tid: 121,
            cpu: 1,
            nr: 1,
            f_refcount: 3,
            f_mapcount: 1,
            f_state: FS_SWAPCACHE | FS_SWAPBACKED | FS_ANON,
            f_swap: swp_entry(1, 0x1f3),
            f_nr_pages: 1,
            probe: ProbeId::SwapcachePrepare as u16,
            kind: EventKind::Exit as u8,
            valid: V_FOLIO | V_ENTRY | V_RET | V_FOLIO_STATE,
            comm,
            ..Event::default()
        }
    }

    #[test]
    fn text_line_decodes_the_event() {
        let mut out = Vec::new();
        write_text(&mut out, 1_000_000_000, 7, &StreamItem::Event(sample())).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "#7 1.000123456 cpu1 stress/120:121 swapcache_prepare exit folio=0xffffea0004d3c0c0 \
             entry=1:0x1f3 nr=1 ret=-EEXIST [swapcache|swapbacked|anon ref=3 map=1 pin=0 \
             swap=1:0x1f3]\n"
        );
        let mut out = Vec::new();
        let lost = StreamItem::Lost {
            ts_ns: 5,
            probe: 2,
            total: 42,
        };
        write_text(&mut out, 10, 8, &lost).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "#8 -0.000000005 LOST swap_cache_delete total=42\n"
        );
    }

    #[test]
    fn pointer_returns_print_as_folio_null_or_err() {
        let line = |ret: i64| {
            let mut e = sample();
            e.probe = ProbeId::SwapCacheLookup as u16;
            e.ret = ret;
            let mut out = Vec::new();
            write_text(&mut out, 0, 1, &StreamItem::Event(e)).unwrap();
            let mut j = Vec::new();
            write_jsonl(&mut j, 1, &StreamItem::Event(e)).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
            (String::from_utf8(out).unwrap(), v)
        };
        let (text, v) = line(0xffff_ea00_04d3_c0c0u64 as i64);
        assert!(text.contains(" ret=0xffffea0004d3c0c0 "), "{text}");
        assert_eq!(v["ret_text"], "0xffffea0004d3c0c0");
        // The number stays for machines.
        assert_eq!(v["ret"], 0xffff_ea00_04d3_c0c0u64 as i64);
        let (text, v) = line(0);
        assert!(text.contains(" ret=NULL "), "{text}");
        assert_eq!(v["ret_text"], "NULL");
        let (text, v) = line(-2);
        assert!(text.contains(" ret=ERR(-ENOENT) "), "{text}");
        assert_eq!(v["ret_text"], "ERR(-ENOENT)");
        assert_eq!(v["errno"], "ENOENT");
    }

    #[test]
    fn jsonl_object_has_the_documented_fields() {
        let mut out = Vec::new();
        write_jsonl(&mut out, 3, &StreamItem::Event(sample())).unwrap();
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["index"], 3);
        assert_eq!(v["type"], "event");
        assert_eq!(v["probe"], "swapcache_prepare");
        assert_eq!(v["kind"], "exit");
        assert_eq!(v["folio"], "0xffffea0004d3c0c0");
        assert_eq!(v["entry"], "1:0x1f3");
        assert_eq!(v["ret"], -17);
        assert_eq!(v["errno"], "EEXIST");
        assert_eq!(v["ret_text"], "-EEXIST");
        assert_eq!(v["pte"], serde_json::Value::Null);
        assert_eq!(v["comm"], "stress");
        let fs = &v["folio_state"];
        assert_eq!(
            fs["flags"],
            serde_json::json!(["swapcache", "swapbacked", "anon"])
        );
        assert_eq!(fs["refcount"], 3);
        assert_eq!(fs["swap"], "1:0x1f3");

        let mut out = Vec::new();
        let lost = StreamItem::Lost {
            ts_ns: 5,
            probe: 99,
            total: 42,
        };
        write_jsonl(&mut out, 4, &lost).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"index":4,"type":"lost","ts_ns":5,"probe":"probe_99","probe_id":99,"total":42})
        );
    }
}
