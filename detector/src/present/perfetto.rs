//! A trace as a Chrome trace-event document (`detector export --format
//! perfetto`), which Perfetto UI and `chrome://tracing` open.

use std::collections::HashSet;
use std::io::{self, Write};

use detector_common::{EventKind, ProbeId};

use super::events::JsonItem;
use super::units::RelMicros;
use crate::event::{kind_name, EventExt, ProbeName, StreamItem};
use crate::trace::TraceHeader;

/// Probes whose enter/exit pairs become duration slices in the Chrome
/// export: the windows a race needs to hit.
const SLICE_PROBES: &[ProbeId] = &[ProbeId::MovePages, ProbeId::DoSwapPage];

/// A Chrome trace-event JSON document (opened by Perfetto UI and
/// `chrome://tracing`), written item by item: one track per task (pid/tid,
/// named by comm), each event an instant with its decoded fields as args,
/// the `move_pages` and `do_swap_page` windows as duration slices, and lost
/// totals as counters. Times are microseconds since the header's
/// `start_monotonic_ns` (or the first item when that is 0).
pub struct ChromeTrace {
    base: Option<u64>,
    named: HashSet<(u32, u32)>,
    sep: &'static str,
    /// Trace events written so far.
    pub written: u64,
}

impl ChromeTrace {
    /// Writes the document's start.
    pub fn begin<W: Write + ?Sized>(w: &mut W, header: &TraceHeader) -> io::Result<Self> {
        w.write_all(b"{\"displayTimeUnit\":\"ns\",\"otherData\":")?;
        serde_json::to_writer(
            &mut *w,
            &serde_json::json!({
                "kernel_release": header.kernel_release,
                "hostname": header.hostname,
                "origin": header.origin,
                "boot_id": header.boot_id,
            }),
        )?;
        w.write_all(b",\"traceEvents\":[\n")?;
        Ok(ChromeTrace {
            base: (header.start_monotonic_ns != 0).then_some(header.start_monotonic_ns),
            named: HashSet::new(),
            sep: "",
            written: 0,
        })
    }

    /// Writes one stream item (`index`: its position in the stream).
    pub fn item<W: Write + ?Sized>(
        &mut self,
        w: &mut W,
        index: u64,
        item: &StreamItem,
    ) -> io::Result<()> {
        let ts_ns = item.ts_ns();
        let b = *self.base.get_or_insert(ts_ns);
        let ts = RelMicros(ts_ns as i128 - b as i128);
        let sep = self.sep;
        match item {
            StreamItem::Lost { probe, total, .. } => {
                write!(
                    w,
                    "{sep}{{\"ph\":\"C\",\"pid\":0,\"name\":\"lost {}\",\"ts\":{ts},\"args\":{{\"total\":{total}}}}}",
                    ProbeName(*probe)
                )?;
                self.written += 1;
            }
            StreamItem::Event(e) => {
                let mut sep = sep;
                if self.named.insert((e.pid, e.tid)) {
                    write!(w, "{sep}{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{},\"tid\":{},\"args\":{{\"name\":", e.pid, e.tid)?;
                    serde_json::to_writer(
                        &mut *w,
                        &format_args!("{}/{}", e.comm_str(), e.tid).to_string(),
                    )?;
                    w.write_all(b"}}")?;
                    sep = ",\n";
                    self.written += 1;
                }
                let sliced = e.probe_id().is_some_and(|p| SLICE_PROBES.contains(&p));
                let ph = match e.event_kind() {
                    Some(EventKind::Enter) if sliced => "B",
                    Some(EventKind::Exit) if sliced => "E",
                    _ => "i",
                };
                write!(
                    w,
                    "{sep}{{\"ph\":\"{ph}\",\"pid\":{},\"tid\":{},\"ts\":{ts},\"name\":\"{}\",\"cat\":\"{}\"",
                    e.pid,
                    e.tid,
                    ProbeName(e.probe),
                    kind_name(e.kind)
                )?;
                if ph == "i" {
                    w.write_all(b",\"s\":\"t\"")?;
                }
                w.write_all(b",\"args\":")?;
                serde_json::to_writer(&mut *w, &JsonItem { index, item })?;
                w.write_all(b"}")?;
                self.written += 1;
            }
        }
        self.sep = ",\n";
        Ok(())
    }

    /// Writes the document's end and flushes. Returns the number of trace
    /// events written.
    pub fn end<W: Write + ?Sized>(self, w: &mut W) -> io::Result<u64> {
        w.write_all(b"\n]}\n")?;
        w.flush()?;
        Ok(self.written)
    }
}

/// A whole document from `items` (see [`ChromeTrace`]). Returns the
/// number of trace events written.
pub fn write_chrome_trace<W: Write, I: IntoIterator<Item = StreamItem>>(
    mut w: W,
    header: &TraceHeader,
    items: I,
) -> io::Result<u64> {
    let mut t = ChromeTrace::begin(&mut w, header)?;
    for (index, item) in items.into_iter().enumerate() {
        t.item(&mut w, index as u64, &item)?;
    }
    t.end(&mut w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::events::tests::sample;

    #[test]
    fn chrome_trace_is_valid_json_with_slices() {
        let mut enter = sample();
        enter.probe = ProbeId::MovePages as u16;
        enter.kind = EventKind::Enter as u8;
        let mut exit = enter;
        exit.kind = EventKind::Exit as u8;
        exit.ts_ns += 1500;
        let items = vec![
            StreamItem::Event(enter),
            StreamItem::Event(sample()),
            StreamItem::Lost {
                ts_ns: enter.ts_ns,
                probe: 1,
                total: 3,
            },
            StreamItem::Event(exit),
        ];
        let mut h = TraceHeader::new("test");
        h.start_monotonic_ns = 2_000_000_000;
        let mut out = Vec::new();
        let n = write_chrome_trace(&mut out, &h, items).unwrap();
        assert_eq!(n, 5);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let evs = v["traceEvents"].as_array().unwrap();
        let phases: Vec<&str> = evs.iter().map(|e| e["ph"].as_str().unwrap()).collect();
        assert_eq!(phases, ["M", "B", "i", "C", "E"]);
        assert_eq!(evs[0]["args"]["name"], "stress/121");
        assert_eq!(evs[1]["ts"].as_f64().unwrap(), 123.456);
        assert_eq!(evs[4]["ts"].as_f64().unwrap(), 124.956);
        assert_eq!(evs[2]["args"]["errno"], "EEXIST");
    }
}
