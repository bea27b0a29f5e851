//! Streaming trace writer.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use detector_common::{Event, EVENT_SIZE, MAX_PROBES};

use super::error::TraceError;
use super::format::{
    decode_event, encode_event, encode_lost, event_probe, event_ts, record_crc, TraceFormat,
    EVENT_RECORD_LEN, LOST_PAYLOAD_LEN, MAGIC, PREAMBLE_LEN, RECORD_EVENT, RECORD_FOOTER,
    RECORD_HEADER_LEN, RECORD_LOST,
};
use super::header::{TraceFooter, TraceHeader};
use super::private::create_private;
use super::v2::items::{Encoder, MAX_DEFINITIONS, MAX_EVENT_ITEM};
use super::v2::{
    encode_trailer, BlockEntry, BlockHeader, BLOCK_FOOTER, BLOCK_HEADER_LEN, BLOCK_ITEMS,
    BLOCK_TARGET, CODEC_STORED, CODEC_ZSTD, INDEX_ENTRY_LEN, MAX_BLOCK_LEN, MAX_INDEX_ENTRIES,
    TRAILER_LEN, ZSTD_LEVEL,
};
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
            // Saturating: totals copied from a damaged or crafted trace
            // (`export`) may be anything.
            lost_total: self
                .lost
                .values()
                .fold(0u64, |sum, &n| sum.saturating_add(n)),
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
/// Format v2 (the default, [`TraceFormat`]) gathers items into a block
/// that is compressed and handed to the sink when its decoded size reaches
/// [`BLOCK_TARGET`](super::v2) or when [`flush`](Self::flush) is called;
/// v1 writes 164-byte records through a 256 KiB buffer.
///
/// Dropping a writer without `finish` leaves a footer-less file that the
/// reader reports as truncated, exactly like a killed recorder.
pub struct TraceWriter<W: Write> {
    out: W,
    name: String,
    header: TraceHeader,
    /// v1: records waiting for one `write`; v2: the block being written out.
    buf: Vec<u8>,
    /// Bytes handed to `out` so far.
    flushed: u64,
    counts: Counts,
    failed: bool,
    /// Format v2's block state; `None` writes v1.
    blocks: Option<Box<Blocks>>,
}

/// A v2 writer's state: the open block, its compressor and the index of
/// the blocks written.
struct Blocks {
    enc: Encoder,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// Compressed payload of the block being closed.
    stored: Vec<u8>,
    index: Vec<BlockEntry>,
    /// More blocks than a footer can index: the file gets no index.
    unindexed: bool,
}

impl Blocks {
    fn new() -> Self {
        // A compressor that cannot be set up (out of memory) leaves blocks
        // stored as they are: bigger, still correct.
        let zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL)
            .and_then(|mut c| {
                c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))?;
                Ok(c)
            })
            .ok();
        Blocks {
            enc: Encoder::new(BLOCK_TARGET + MAX_EVENT_ITEM + MAX_DEFINITIONS),
            zstd,
            stored: Vec::with_capacity(zstd::zstd_safe::compress_bound(
                BLOCK_TARGET + MAX_EVENT_ITEM + MAX_DEFINITIONS,
            )),
            index: Vec::new(),
            unindexed: false,
        }
    }

    /// Compresses `raw` into `self.stored`; `None` when compressing does
    /// not make it smaller (or fails), and the block is stored as it is.
    fn compress(
        zstd: Option<&mut zstd::bulk::Compressor<'static>>,
        raw: &[u8],
        stored: &mut Vec<u8>,
    ) -> Option<usize> {
        let z = zstd?;
        stored.clear();
        stored.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        match z.compress_to_buffer(raw, stored) {
            Ok(n) if n < raw.len() => Some(n),
            _ => None,
        }
    }
}

impl TraceWriter<File> {
    /// Creates (or truncates) `path`, readable by its owner only (see
    /// [`create_private`]), and writes the header, in format v2.
    pub fn create(path: impl AsRef<Path>, header: &TraceHeader) -> Result<Self, TraceError> {
        Self::create_format(path, header, TraceFormat::default())
    }

    /// As [`create`](Self::create), in the given format.
    pub fn create_format(
        path: impl AsRef<Path>,
        header: &TraceHeader,
        format: TraceFormat,
    ) -> Result<Self, TraceError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = create_private(path).map_err(|e| TraceError::io("create", &name, e))?;
        Self::with_format(file, header, name, format)
    }
}

impl<W: Write> TraceWriter<W> {
    /// Writes the header to `out` (format v2).
    pub fn new(out: W, header: &TraceHeader) -> Result<Self, TraceError> {
        Self::with_name(out, header, "trace stream".to_string())
    }

    /// As [`new`](Self::new), naming the sink in error messages.
    pub fn with_name(out: W, header: &TraceHeader, name: String) -> Result<Self, TraceError> {
        Self::with_format(out, header, name, TraceFormat::default())
    }

    /// As [`with_name`](Self::with_name), in the given format.
    pub fn with_format(
        out: W,
        header: &TraceHeader,
        name: String,
        format: TraceFormat,
    ) -> Result<Self, TraceError> {
        let mut header = header.clone();
        // The constants describe this writer, whatever the caller filled in.
        header.format_version = format.version();
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
        buf.extend_from_slice(&format.version().to_le_bytes());
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
            blocks: (format == TraceFormat::V2).then(|| Box::new(Blocks::new())),
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

    /// The format this writer produces.
    pub fn format(&self) -> TraceFormat {
        if self.blocks.is_some() {
            TraceFormat::V2
        } else {
            TraceFormat::V1
        }
    }

    /// Bytes of the file so far, including records still buffered. In v2
    /// the open block counts at its decoded size (it will take at most
    /// that, compressed), so rotation by this figure never overshoots.
    pub fn bytes_written(&self) -> u64 {
        let open = match &self.blocks {
            Some(b) if b.enc.items > 0 => BLOCK_HEADER_LEN + b.enc.raw.len(),
            _ => 0,
        };
        self.flushed + (self.buf.len() + open) as u64
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
        if self.blocks.is_some() {
            return self.block_event(ev);
        }
        let mut payload = [0u8; EVENT_SIZE];
        encode_event(ev, &mut payload);
        self.write_event_bytes(&payload)
    }

    /// As [`write_event`](Self::write_event), from the event's on-disk
    /// bytes (on a little-endian host, the ring buffer's bytes). In v1 they
    /// are framed straight into the output buffer, no `Event` in between;
    /// v2 encodes them like any event. The capture path that only writes a
    /// file uses it.
    #[inline]
    pub fn write_event_bytes(&mut self, payload: &[u8; EVENT_SIZE]) -> Result<(), TraceError> {
        if self.blocks.is_some() {
            return self.block_event(&decode_event(payload));
        }
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
        if self.blocks.is_some() {
            self.check_failed()?;
            if let Some(b) = self.blocks.as_mut() {
                b.enc.lost(ts_ns, probe, total);
            }
            self.counts.records += 1;
            self.counts.lost.insert(probe, total);
            return self.close_block_if_full();
        }
        let payload = encode_lost(ts_ns, probe, total);
        self.write_record(RECORD_LOST, &payload)?;
        self.counts.records += 1;
        self.counts.lost.insert(probe, total);
        Ok(())
    }

    /// One event into the open v2 block.
    #[inline]
    fn block_event(&mut self, ev: &Event) -> Result<(), TraceError> {
        self.check_failed()?;
        let Some(b) = self.blocks.as_mut() else {
            return Ok(());
        };
        if !b.enc.event(ev) {
            // The block's task or shape table is full: the event opens the
            // next block, where both are empty.
            self.close_block()?;
            if let Some(b) = self.blocks.as_mut() {
                if !b.enc.event(ev) {
                    return Err(self.encode_error("an event does not fit an empty block"));
                }
            }
        }
        self.counts.event(ev.probe, ev.ts_ns);
        self.close_block_if_full()
    }

    #[inline]
    fn close_block_if_full(&mut self) -> Result<(), TraceError> {
        match &self.blocks {
            Some(b) if b.enc.raw.len() >= BLOCK_TARGET => self.close_block(),
            _ => Ok(()),
        }
    }

    #[cold]
    fn encode_error(&self, reason: &str) -> TraceError {
        TraceError::Encode {
            name: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    fn check_failed(&self) -> Result<(), TraceError> {
        if self.failed {
            return Err(TraceError::io(
                "write",
                &self.name,
                io::Error::other("an earlier write to this file failed"),
            ));
        }
        Ok(())
    }

    /// Compresses the open block and hands it to the sink.
    fn close_block(&mut self) -> Result<(), TraceError> {
        let offset = self.flushed + self.buf.len() as u64;
        {
            let Some(b) = self.blocks.as_mut() else {
                return Ok(());
            };
            if b.enc.items == 0 {
                return Ok(());
            }
            let first_index = self.counts.records - u64::from(b.enc.items);
            let Blocks {
                enc, zstd, stored, ..
            } = &mut **b;
            let raw = enc.raw.as_slice();
            let (codec, payload) = match Blocks::compress(zstd.as_mut(), raw, stored) {
                Some(_) => (CODEC_ZSTD, stored.as_slice()),
                None => (CODEC_STORED, raw),
            };
            let h = BlockHeader {
                kind: BLOCK_ITEMS,
                codec,
                stored_len: payload.len() as u32,
                raw_len: raw.len() as u32,
                items: enc.items,
                payload_crc: record_crc(payload),
                first_index,
                first_ts: enc.first_ts,
            };
            self.buf.extend_from_slice(&h.encode());
            self.buf.extend_from_slice(payload);
            if b.index.len() < MAX_INDEX_ENTRIES {
                b.index.push(BlockEntry {
                    offset,
                    first_index,
                    first_ts: b.enc.first_ts,
                    items: b.enc.items,
                });
            } else {
                b.unindexed = true;
            }
            b.enc.reset();
        }
        self.flush_buf()
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
        self.check_failed()?;
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

    /// Hands everything written so far to the sink and flushes it, so a
    /// reader (or a crash) sees it: in v2 the open block is closed, however
    /// few items it holds. A live recording calls this about once a second
    /// (see [`Recorder::flush`](crate::stream::Recorder::flush)), which
    /// bounds what a killed recorder loses.
    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.close_block()?;
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
        if self.blocks.is_some() {
            self.close_block()?;
            self.write_footer_block(&json)?;
        } else {
            self.write_record(RECORD_FOOTER, &json)?;
        }
        self.flush()?;
        let summary = TraceSummary {
            bytes: self.flushed,
            segments: 1,
            files: Vec::new(),
            totals: footer,
        };
        Ok((summary, self.out))
    }

    /// v2's end: the footer block (the footer JSON and the block index),
    /// then the trailer pointing at it.
    fn write_footer_block(&mut self, json: &[u8]) -> Result<(), TraceError> {
        let offset = self.flushed + self.buf.len() as u64;
        let records = self.counts.records;
        let Some(b) = self.blocks.as_mut() else {
            return Ok(());
        };
        let entries: &[BlockEntry] = if b.unindexed { &[] } else { &b.index };
        let mut raw = Vec::with_capacity(8 + json.len() + entries.len() * INDEX_ENTRY_LEN);
        raw.extend_from_slice(&(json.len() as u32).to_le_bytes());
        raw.extend_from_slice(json);
        raw.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            raw.extend_from_slice(&e.encode());
        }
        if raw.len() > MAX_BLOCK_LEN {
            return Err(self.encode_error("the footer is larger than a block may be"));
        }
        let mut stored = Vec::new();
        let (codec, payload) = match Blocks::compress(b.zstd.as_mut(), &raw, &mut stored) {
            Some(_) => (CODEC_ZSTD, stored.as_slice()),
            None => (CODEC_STORED, raw.as_slice()),
        };
        let h = BlockHeader {
            kind: BLOCK_FOOTER,
            codec,
            stored_len: payload.len() as u32,
            raw_len: raw.len() as u32,
            items: 0,
            payload_crc: record_crc(payload),
            first_index: records,
            first_ts: 0,
        };
        let mut out = Vec::with_capacity(BLOCK_HEADER_LEN + payload.len() + TRAILER_LEN);
        out.extend_from_slice(&h.encode());
        out.extend_from_slice(payload);
        out.extend_from_slice(&encode_trailer(offset));
        self.flush_buf()?;
        self.write_out(&out)
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
        for format in [TraceFormat::V1, TraceFormat::V2] {
            event_bytes_same_file(format);
        }
    }

    fn event_bytes_same_file(format: TraceFormat) {
        let header = TraceHeader::new("test");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut wa = TraceWriter::with_format(&mut a, &header, "a".into(), format).unwrap();
        let mut wb = TraceWriter::with_format(&mut b, &header, "b".into(), format).unwrap();
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
        for format in [TraceFormat::V1, TraceFormat::V2] {
            finish_counts(format);
        }
    }

    fn finish_counts(format: TraceFormat) {
        let mut out = Vec::new();
        let mut w =
            TraceWriter::with_format(&mut out, &TraceHeader::new("test"), "t".into(), format)
                .unwrap();
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
        if format == TraceFormat::V1 {
            assert_eq!(
                w.bytes_written(),
                hdr_bytes + 11 * EVENT_RECORD_LEN as u64 + 2 * 36
            );
        } else {
            // Nothing reached the sink yet; the open block counts at its
            // decoded size.
            assert_eq!(out_len(&w), hdr_bytes);
            assert!(w.bytes_written() > hdr_bytes + BLOCK_HEADER_LEN as u64);
        }
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
        let (_, items, end) = crate::trace::reader::read_bytes(&out).unwrap();
        assert_eq!(items.len(), 13);
        assert_eq!(end.footer(), Some(f));
    }

    fn out_len<W: Write>(w: &TraceWriter<W>) -> u64 {
        w.flushed
    }

    /// A flush closes the open block however small: what a killed
    /// recorder leaves is every item written before its last flush.
    #[test]
    fn a_flush_makes_every_item_so_far_readable() {
        let mut out = Vec::new();
        let mut w = TraceWriter::new(&mut out, &TraceHeader::new("test")).unwrap();
        for i in 0..3u64 {
            w.write_event(&Event {
                ts_ns: i,
                ..Event::default()
            })
            .unwrap();
            w.flush().unwrap();
        }
        w.write_lost(9, 1, 1).unwrap();
        drop(w);
        let (_, items, end) = crate::trace::reader::read_bytes(&out).unwrap();
        assert_eq!(items.len(), 3);
        assert!(matches!(
            end,
            crate::trace::EndState::Truncated {
                records_read: 3,
                ..
            }
        ));
    }
}
