//! Streaming trace writer.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use detector_common::{Event, EVENT_SIZE, MAX_PROBES};

use super::error::TraceError;
use super::format::{
    encode_event, encode_lost, event_probe, event_ts, record_crc, EVENT_RECORD_LEN, FORMAT_VERSION,
    LOST_PAYLOAD_LEN, MAGIC, PREAMBLE_LEN, RECORD_EVENT, RECORD_FOOTER, RECORD_HEADER_LEN,
    RECORD_LOST,
};
use super::header::{TraceFooter, TraceHeader};
use super::private::create_private;
use crate::event::clock_ns;
use crate::event::StreamItem;

/// Records are gathered here and handed to the sink in one `write` call;
/// large enough that syscalls do not show up in the per-event cost.
const BUF_CAP: usize = 256 * 1024;

/// How and when a trace ended, for its footer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEnd {
    pub end_monotonic_ns: u64,
    /// `None`: derived from the header's start times and `end_monotonic_ns`.
    pub end_realtime_ns: Option<u64>,
    pub stop_reason: String,
}

impl TraceEnd {
    /// Ends now, by the host's clocks (live capture).
    pub fn now(stop_reason: impl Into<String>) -> Self {
        TraceEnd {
            end_monotonic_ns: clock_ns(libc::CLOCK_MONOTONIC),
            end_realtime_ns: Some(clock_ns(libc::CLOCK_REALTIME)),
            stop_reason: stop_reason.into(),
        }
    }

    /// Ends at a given monotonic time (simulated traces, tests).
    pub fn at(end_monotonic_ns: u64, stop_reason: impl Into<String>) -> Self {
        TraceEnd {
            end_monotonic_ns,
            end_realtime_ns: None,
            stop_reason: stop_reason.into(),
        }
    }
}

/// What a finished writer reports back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceSummary {
    /// Bytes written, over all segments.
    pub bytes: u64,
    /// Files written (1 without rotation).
    pub segments: u32,
    /// Files still on disk at the end, oldest first (empty when the writer
    /// was given a plain `Write`).
    pub files: Vec<PathBuf>,
    /// Counts over everything written. For a single file this is exactly
    /// its footer.
    pub totals: TraceFooter,
}

/// Per-file counters, kept in fixed arrays so counting costs no allocation.
#[derive(Clone, Debug)]
pub(crate) struct Counts {
    pub(crate) records: u64,
    pub(crate) events: u64,
    per_probe: [u64; MAX_PROBES as usize],
    per_probe_other: BTreeMap<u16, u64>,
    pub(crate) lost: BTreeMap<u16, u64>,
    first_ns: u64,
    last_ns: u64,
}

impl Counts {
    fn new(lost: BTreeMap<u16, u64>) -> Self {
        Counts {
            records: 0,
            events: 0,
            per_probe: [0; MAX_PROBES as usize],
            per_probe_other: BTreeMap::new(),
            lost,
            first_ns: u64::MAX,
            last_ns: 0,
        }
    }

    #[inline]
    fn event(&mut self, probe: u16, ts_ns: u64) {
        self.records += 1;
        self.events += 1;
        match self.per_probe.get_mut(usize::from(probe)) {
            Some(n) => *n += 1,
            None => *self.per_probe_other.entry(probe).or_default() += 1,
        }
        self.first_ns = self.first_ns.min(ts_ns);
        self.last_ns = self.last_ns.max(ts_ns);
    }

    /// Adds another file's counts (rotation totals); lost totals are running
    /// totals, so the newer map replaces the older one.
    pub(crate) fn absorb(&mut self, o: &Counts) {
        self.records += o.records;
        self.events += o.events;
        for (a, b) in self.per_probe.iter_mut().zip(o.per_probe.iter()) {
            *a += b;
        }
        for (p, n) in &o.per_probe_other {
            *self.per_probe_other.entry(*p).or_default() += n;
        }
        self.lost.clone_from(&o.lost);
        self.first_ns = self.first_ns.min(o.first_ns);
        self.last_ns = self.last_ns.max(o.last_ns);
    }

    pub(crate) fn empty() -> Self {
        Counts::new(BTreeMap::new())
    }

    pub(crate) fn footer(&self, end: &TraceEnd, header: &TraceHeader) -> TraceFooter {
        let mut events_per_probe = BTreeMap::new();
        for (p, &n) in self.per_probe.iter().enumerate() {
            if n > 0 {
                events_per_probe.insert(probe_label(p as u16), n);
            }
        }
        for (&p, &n) in &self.per_probe_other {
            events_per_probe.insert(probe_label(p), n);
        }
        let lost_per_probe: BTreeMap<String, u64> = self
            .lost
            .iter()
            .map(|(&p, &n)| (probe_label(p), n))
            .collect();
        let end_realtime_ns = end.end_realtime_ns.unwrap_or_else(|| {
            if header.start_realtime_ns == 0 {
                0
            } else {
                header.start_realtime_ns.saturating_add(
                    end.end_monotonic_ns
                        .saturating_sub(header.start_monotonic_ns),
                )
            }
        });
        TraceFooter {
            records: self.records,
            events: self.events,
            events_per_probe,
            lost_total: self.lost.values().sum(),
            lost_per_probe,
            first_event_ns: if self.events == 0 { 0 } else { self.first_ns },
            last_event_ns: self.last_ns,
            end_monotonic_ns: end.end_monotonic_ns,
            end_realtime_ns,
            stop_reason: end.stop_reason.clone(),
        }
    }
}

/// Name used for a probe id in footers (as every output names it).
fn probe_label(p: u16) -> String {
    crate::event::ProbeName(p).to_string()
}

/// Writes one trace file: header first, then records, then (on
/// [`finish`](Self::finish)) the footer. Records are buffered internally, so
/// the sink should be unbuffered (a `File`, not a `BufWriter<File>`).
///
/// Dropping a writer without `finish` leaves a footer-less file that the
/// reader reports as truncated, exactly like a killed recorder.
pub struct TraceWriter<W: Write> {
    out: W,
    name: String,
    header: TraceHeader,
    buf: Vec<u8>,
    /// Bytes handed to `out` so far.
    flushed: u64,
    counts: Counts,
    failed: bool,
}

impl TraceWriter<File> {
    /// Creates (or truncates) `path`, readable by its owner only (see
    /// [`create_private`]), and writes the header.
    pub fn create(path: impl AsRef<Path>, header: &TraceHeader) -> Result<Self, TraceError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = create_private(path).map_err(|e| TraceError::io("create", &name, e))?;
        Self::with_name(file, header, name)
    }
}

impl<W: Write> TraceWriter<W> {
    /// Writes the header to `out`.
    pub fn new(out: W, header: &TraceHeader) -> Result<Self, TraceError> {
        Self::with_name(out, header, "trace stream".to_string())
    }

    /// As [`new`](Self::new), naming the sink in error messages.
    pub fn with_name(out: W, header: &TraceHeader, name: String) -> Result<Self, TraceError> {
        let mut header = header.clone();
        // The constants describe this writer, whatever the caller filled in.
        header.format_version = FORMAT_VERSION;
        header.abi_version = detector_common::ABI_VERSION;
        header.event_size = EVENT_SIZE as u32;
        let json = serde_json::to_vec(&header).map_err(|e| TraceError::Encode {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        let json_len = u32::try_from(json.len()).map_err(|_| TraceError::Encode {
            name: name.clone(),
            reason: "header larger than 4 GiB".to_string(),
        })?;
        let mut buf = Vec::with_capacity(BUF_CAP.max(PREAMBLE_LEN + json.len() + 4));
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf.extend_from_slice(&json_len.to_le_bytes());
        buf.extend_from_slice(&json);
        let crc = crc32fast::hash(&buf[MAGIC.len()..]);
        buf.extend_from_slice(&crc.to_le_bytes());
        let mut w = TraceWriter {
            out,
            name,
            header,
            buf,
            flushed: 0,
            counts: Counts::empty(),
            failed: false,
        };
        // The header goes out at once so that even a capture killed before
        // its first flush leaves a file that identifies itself.
        w.flush()?;
        Ok(w)
    }

    /// The header as written (with the format constants filled in).
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// Bytes of the file so far, including records still buffered.
    pub fn bytes_written(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    /// Event records written so far.
    pub fn events_written(&self) -> u64 {
        self.counts.events
    }

    /// Records (events and lost totals) written so far.
    pub fn records_written(&self) -> u64 {
        self.counts.records
    }

    pub fn write_item(&mut self, item: &StreamItem) -> Result<(), TraceError> {
        match item {
            StreamItem::Event(ev) => self.write_event(ev),
            StreamItem::Lost {
                ts_ns,
                probe,
                total,
            } => self.write_lost(*ts_ns, *probe, *total),
        }
    }

    #[inline]
    pub fn write_event(&mut self, ev: &Event) -> Result<(), TraceError> {
        let mut payload = [0u8; EVENT_SIZE];
        encode_event(ev, &mut payload);
        self.write_event_bytes(&payload)
    }

    /// As [`write_event`](Self::write_event), from the event's on-disk
    /// bytes (on a little-endian host, the ring buffer's bytes): framed
    /// straight into the output buffer, no `Event` in between. The capture
    /// path that only writes a file uses it.
    #[inline]
    pub fn write_event_bytes(&mut self, payload: &[u8; EVENT_SIZE]) -> Result<(), TraceError> {
        if self.buf.len() + EVENT_RECORD_LEN > self.buf.capacity() {
            self.flush_buf()?;
        }
        let start = self.buf.len();
        let mut frame = [0u8; RECORD_HEADER_LEN];
        frame[0..4].copy_from_slice(&(EVENT_SIZE as u32).to_le_bytes());
        frame[4..6].copy_from_slice(&RECORD_EVENT.to_le_bytes());
        self.buf.extend_from_slice(&frame);
        self.buf.extend_from_slice(payload);
        let crc = record_crc(&self.buf[start..]);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.counts.event(event_probe(payload), event_ts(payload));
        Ok(())
    }

    /// A running total of events `probe` could not emit, read at `ts_ns`.
    pub fn write_lost(&mut self, ts_ns: u64, probe: u16, total: u64) -> Result<(), TraceError> {
        let payload = encode_lost(ts_ns, probe, total);
        self.write_record(RECORD_LOST, &payload)?;
        self.counts.records += 1;
        self.counts.lost.insert(probe, total);
        Ok(())
    }

    fn write_record(&mut self, ty: u16, payload: &[u8]) -> Result<(), TraceError> {
        debug_assert!(ty != RECORD_EVENT || payload.len() == EVENT_SIZE);
        debug_assert!(ty != RECORD_LOST || payload.len() == LOST_PAYLOAD_LEN);
        let len = u32::try_from(payload.len()).map_err(|_| TraceError::Encode {
            name: self.name.clone(),
            reason: "record larger than 4 GiB".to_string(),
        })?;
        let mut frame = [0u8; RECORD_HEADER_LEN];
        frame[0..4].copy_from_slice(&len.to_le_bytes());
        frame[4..6].copy_from_slice(&ty.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&frame);
        h.update(payload);
        let crc = h.finalize();
        self.push(&frame)?;
        self.push(payload)?;
        self.push(&crc.to_le_bytes())
    }

    #[inline]
    fn push(&mut self, bytes: &[u8]) -> Result<(), TraceError> {
        if self.buf.len() + bytes.len() > self.buf.capacity() {
            self.flush_buf()?;
        }
        if bytes.len() > self.buf.capacity() {
            // Only a huge footer gets here; write it straight through.
            return self.write_out(bytes);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn write_out(&mut self, bytes: &[u8]) -> Result<(), TraceError> {
        if self.failed {
            return Err(TraceError::io(
                "write",
                &self.name,
                io::Error::other("an earlier write to this file failed"),
            ));
        }
        match self.out.write_all(bytes) {
            Ok(()) => {
                self.flushed += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Some unknown prefix reached the file; refuse to append
                // after it so the file ends in a (detectable) cut record.
                self.failed = true;
                Err(TraceError::io("write", &self.name, e))
            }
        }
    }

    fn flush_buf(&mut self) -> Result<(), TraceError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let r = self.write_out(&buf);
        self.buf = buf;
        self.buf.clear();
        r
    }

    /// Hands buffered records to the sink and flushes it, so a reader (or a
    /// crash) sees everything written so far.
    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.flush_buf()?;
        self.out
            .flush()
            .map_err(|e| TraceError::io("flush", &self.name, e))
    }

    /// Writes the footer and flushes.
    pub fn finish(self, end: TraceEnd) -> Result<TraceSummary, TraceError> {
        self.finish_into_inner(end).map(|(s, _)| s)
    }

    /// As [`finish`](Self::finish), also returning the sink.
    pub fn finish_into_inner(mut self, end: TraceEnd) -> Result<(TraceSummary, W), TraceError> {
        let footer = self.counts.footer(&end, &self.header);
        let json = serde_json::to_vec(&footer).map_err(|e| TraceError::Encode {
            name: self.name.clone(),
            reason: e.to_string(),
        })?;
        self.write_record(RECORD_FOOTER, &json)?;
        self.flush()?;
        let summary = TraceSummary {
            bytes: self.flushed,
            segments: 1,
            files: Vec::new(),
            totals: footer,
        };
        Ok((summary, self.out))
    }

    /// Counters of this file (for rotation totals).
    pub(crate) fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Starts this file's lost totals from the running totals of an earlier
    /// segment of the same capture.
    pub(crate) fn inherit_lost(&mut self, lost: BTreeMap<u16, u64>) {
        self.counts.lost = lost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_bytes_write_the_same_file_as_events() {
        let header = TraceHeader::new("test");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut wa = TraceWriter::new(&mut a, &header).unwrap();
        let mut wb = TraceWriter::new(&mut b, &header).unwrap();
        for i in 0..5000u64 {
            let ev = Event {
                ts_ns: 1_000 + i * 7,
                folio: 0xffff_ea00_0000_0000 + i * 64,
                probe: (i % 23) as u16,
                f_refcount: i as i32,
                comm: *b"swap-hog\0\0\0\0\0\0\0\0",
                ..Event::default()
            };
            wa.write_event(&ev).unwrap();
            let mut bytes = [0u8; EVENT_SIZE];
            encode_event(&ev, &mut bytes);
            assert_eq!(
                (event_ts(&bytes), event_probe(&bytes)),
                (ev.ts_ns, ev.probe)
            );
            wb.write_event_bytes(&bytes).unwrap();
        }
        let end = TraceEnd::at(99_999, "test done");
        let sa = wa.finish(end.clone()).unwrap();
        let sb = wb.finish(end).unwrap();
        assert_eq!(sa.totals.events_per_probe, sb.totals.events_per_probe);
        let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
        assert_eq!(
            (a.len(), first_diff),
            (b.len(), None),
            "both paths must produce identical files"
        );
    }

    #[test]
    fn finish_counts_events_and_lost() {
        let mut out = Vec::new();
        let mut w = TraceWriter::new(&mut out, &TraceHeader::new("test")).unwrap();
        let hdr_bytes = w.bytes_written();
        for i in 0..10u64 {
            let ev = Event {
                ts_ns: 100 + i,
                probe: (i % 2) as u16,
                ..Event::default()
            };
            w.write_event(&ev).unwrap();
        }
        w.write_lost(200, 3, 7).unwrap();
        w.write_lost(300, 3, 9).unwrap();
        w.write_event(&Event {
            probe: 999,
            ts_ns: 150,
            ..Event::default()
        })
        .unwrap();
        assert_eq!(
            w.bytes_written(),
            hdr_bytes + 11 * EVENT_RECORD_LEN as u64 + 2 * 36
        );
        let s = w.finish(TraceEnd::at(400, "test done")).unwrap();
        let f = &s.totals;
        assert_eq!(f.events, 11);
        assert_eq!(f.records, 13);
        assert_eq!(f.events_per_probe["swap_cache_lookup"], 5);
        assert_eq!(f.events_per_probe["swap_cache_insert"], 5);
        assert_eq!(f.events_per_probe["probe_999"], 1);
        assert_eq!(f.lost_per_probe["swap_entry_alloc"], 9);
        assert_eq!(f.lost_total, 9);
        assert_eq!((f.first_event_ns, f.last_event_ns), (100, 150));
        assert_eq!(f.stop_reason, "test done");
        assert_eq!(s.bytes, out.len() as u64);
    }
}
