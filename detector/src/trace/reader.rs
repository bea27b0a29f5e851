//! Streaming trace reader.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use detector_common::{Event, ABI_VERSION, ABI_VERSION_MIN, EVENT_SIZE};

use super::end::EndState;
use super::error::TraceError;
use super::format::{
    decode_event, decode_event_into, decode_lost, record_crc, EVENT_RECORD_LEN, FORMAT_VERSION,
    LOST_PAYLOAD_LEN, MAGIC, MAX_HEADER_LEN, MAX_RECORD_PAYLOAD, PREAMBLE_LEN, RECORD_CRC_LEN,
    RECORD_EVENT, RECORD_FOOTER, RECORD_HEADER_LEN, RECORD_LOST,
};
use super::header::{TraceFooter, TraceHeader};
use super::v2::items::Decoder;
use super::v2::{
    decode_trailer, BlockEntry, BlockHeader, BLOCK_FOOTER, BLOCK_HEADER_LEN, BLOCK_ITEMS,
    CODEC_ZSTD, INDEX_ENTRY_LEN, TRAILER_LEN, ZSTD_WINDOW_LOG_MAX,
};
use crate::event::StreamItem;

/// Read size: large enough that one `read` covers ~7000 events.
const BUF_LEN: usize = 1 << 20;

/// Reads a trace: [`header`](Self::header) at once, then records by
/// iteration. Iteration yields `(record_index, item)` and never fails; it
/// stops at the footer, at the first damaged or incomplete record, or on a
/// read error, and [`end_state`](Self::end_state) says which.
pub struct TraceReader<R: Read> {
    src: R,
    name: String,
    header: TraceHeader,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// File offset of `buf[pos]`.
    offset: u64,
    records: u64,
    state: Option<EndState>,
    /// The item [`next_ref`](Self::next_ref) hands out; events are decoded
    /// straight into it, so the 152 bytes are copied once per record.
    cur: StreamItem,
    /// Format v2's block state; `None` for a v1 file.
    blocks: Option<Box<BlockState>>,
    /// File offset of the first record or block (after the header).
    data_start: u64,
}

/// What a v2 reader keeps between items: the decoded payload of the block
/// being read and the tables of its items. Every buffer is bounded by
/// [`MAX_BLOCK_LEN`](super::v2::MAX_BLOCK_LEN), whatever a file claims.
struct BlockState {
    dec: Decoder,
    /// The block's decoded payload is `raw[..raw_len]` (the buffer only
    /// grows, to the largest block met).
    raw: Vec<u8>,
    raw_len: usize,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    /// File offset of the block being read.
    block_offset: u64,
    /// Item blocks read, and the CRC of their index entries, to check the
    /// footer's index against the blocks the file really holds (only when
    /// every block was read: not after a seek).
    blocks: u64,
    index_crc: crc32fast::Hasher,
    check_index: bool,
}

impl BlockState {
    fn new() -> Self {
        BlockState {
            dec: Decoder::new(),
            raw: Vec::new(),
            raw_len: 0,
            zstd: None,
            block_offset: 0,
            blocks: 0,
            index_crc: crc32fast::Hasher::new(),
            check_index: true,
        }
    }

    /// Decodes a block's stored payload into `raw`; the message says why
    /// not.
    fn load(&mut self, h: &BlockHeader, stored: &[u8]) -> Result<(), String> {
        let len = h.raw_len as usize;
        if self.raw.len() < len {
            self.raw.resize(len, 0);
        }
        self.raw_len = 0;
        if h.codec != CODEC_ZSTD {
            self.raw[..len].copy_from_slice(stored);
            self.raw_len = len;
            return Ok(());
        }
        if self.zstd.is_none() {
            let mut d =
                zstd::bulk::Decompressor::new().map_err(|e| format!("cannot set up zstd: {e}"))?;
            d.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(
                ZSTD_WINDOW_LOG_MAX,
            ))
            .map_err(|e| format!("cannot set up zstd: {e}"))?;
            self.zstd = Some(d);
        }
        let Some(z) = self.zstd.as_mut() else {
            return Err("cannot set up zstd".to_string());
        };
        // Into a slice of exactly the claimed size: zstd cannot write past
        // it, and a payload that decodes to more (or less) is damage.
        match z.decompress_to_buffer(stored, &mut self.raw[..len]) {
            Ok(n) if n == len => {
                self.raw_len = len;
                Ok(())
            }
            Ok(n) => Err(format!(
                "block decompresses to {n} bytes, its header says {len}"
            )),
            Err(e) => Err(format!("block does not decompress ({e})")),
        }
    }
}

impl TraceReader<File> {
    /// Opens `path` and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TraceError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let f = File::open(path).map_err(|e| TraceError::io("open", &name, e))?;
        Self::from_reader_named(f, name)
    }
}

impl<R: Read> TraceReader<R> {
    /// Reads the header from `src`. The reader does its own buffering.
    pub fn from_reader(src: R) -> Result<Self, TraceError> {
        Self::from_reader_named(src, "trace stream".to_string())
    }

    /// As [`from_reader`](Self::from_reader), naming the source in errors.
    pub fn from_reader_named(src: R, name: String) -> Result<Self, TraceError> {
        let mut r = TraceReader {
            src,
            name,
            header: TraceHeader::default(),
            buf: vec![0; BUF_LEN],
            pos: 0,
            end: 0,
            offset: 0,
            records: 0,
            state: None,
            cur: StreamItem::Event(Event::default()),
            blocks: None,
            data_start: 0,
        };
        r.read_header()?;
        Ok(r)
    }

    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// Name used in messages (the path for [`open`](TraceReader::open)).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `None` while records remain; how the file ended once iteration stops.
    pub fn end_state(&self) -> Option<&EndState> {
        self.state.as_ref()
    }

    /// Records consumed so far (including the ones not yielded: unknown
    /// record types are skipped).
    pub fn records_read(&self) -> u64 {
        self.records
    }

    /// File offset of the next record.
    pub fn byte_offset(&self) -> u64 {
        self.offset
    }

    fn io_err(&self, e: io::Error) -> TraceError {
        TraceError::io("read", &self.name, e)
    }

    /// Makes `need` bytes available at `pos`. `Ok(false)`: the source ended
    /// first (whatever it had is still buffered).
    fn fill(&mut self, need: usize) -> io::Result<bool> {
        if self.end - self.pos >= need {
            return Ok(true);
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        while self.end < need {
            if self.end == self.buf.len() {
                // Only for a header or record larger than the buffer (a big
                // footer). The buffer grows as data arrives, at most
                // doubling, never past `need` (itself capped by
                // MAX_HEADER_LEN / MAX_RECORD_PAYLOAD): a length field
                // claiming more than the source holds makes the reader
                // allocate what the source has, not what it claims.
                let grown = self.buf.len().saturating_mul(2).clamp(1, need);
                self.buf.resize(grown, 0);
            }
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn avail(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    fn read_header(&mut self) -> Result<(), TraceError> {
        let complete = self.fill(PREAMBLE_LEN).map_err(|e| self.io_err(e))?;
        let name = self.name.clone();
        let have = self.avail();
        if have.is_empty() {
            return Err(TraceError::Empty { name });
        }
        let m = have.len().min(MAGIC.len());
        if have[..m] != MAGIC[..m] {
            return Err(match foreign_kind(have) {
                Some(what) => TraceError::Foreign { name, what },
                None => TraceError::BadMagic { name },
            });
        }
        if !complete {
            return Err(TraceError::TruncatedHeader {
                name,
                have: have.len() as u64,
                need: PREAMBLE_LEN as u64,
            });
        }
        let version = le_u32(have, 8);
        let json_len = le_u32(have, 12) as usize;
        if version == 0 {
            return Err(TraceError::BadVersion {
                name,
                found: version,
            });
        }
        if version > FORMAT_VERSION {
            return Err(TraceError::NewerVersion {
                name,
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if json_len > MAX_HEADER_LEN {
            return Err(TraceError::CorruptHeader {
                name,
                reason: format!("header length {json_len} is implausible"),
            });
        }
        let total = PREAMBLE_LEN + json_len + RECORD_CRC_LEN;
        if !self.fill(total).map_err(|e| self.io_err(e))? {
            return Err(TraceError::TruncatedHeader {
                name,
                have: self.avail().len() as u64,
                need: total as u64,
            });
        }
        let have = &self.buf[self.pos..self.pos + total];
        let crc = le_u32(have, total - RECORD_CRC_LEN);
        if crc32fast::hash(&have[MAGIC.len()..total - RECORD_CRC_LEN]) != crc {
            return Err(TraceError::CorruptHeader {
                name,
                reason: "header checksum mismatch".to_string(),
            });
        }
        let header: TraceHeader =
            serde_json::from_slice(&have[PREAMBLE_LEN..PREAMBLE_LEN + json_len]).map_err(|e| {
                TraceError::CorruptHeader {
                    name: name.clone(),
                    reason: format!("header is not valid JSON: {e}"),
                }
            })?;
        if !(ABI_VERSION_MIN..=ABI_VERSION).contains(&header.abi_version)
            || header.event_size as usize != EVENT_SIZE
        {
            return Err(TraceError::AbiMismatch {
                name,
                found: header.abi_version,
                size: header.event_size,
                supported: ABI_VERSION,
            });
        }
        self.header = header;
        // The preamble says how the rest is laid out, whatever the JSON says.
        self.header.format_version = version;
        if version >= 2 {
            self.blocks = Some(Box::new(BlockState::new()));
        }
        self.pos += total;
        self.offset = total as u64;
        self.data_start = self.offset;
        Ok(())
    }

    /// The trace format of the file (its preamble's version).
    pub fn format_version(&self) -> u32 {
        self.header.format_version
    }

    fn stop(&mut self, state: EndState) {
        self.state = Some(state);
    }

    #[cold]
    fn corrupt(&mut self, reason: String) {
        let s = EndState::Corrupt {
            byte_offset: self.offset,
            record_index: self.records,
            reason,
        };
        self.stop(s);
    }

    /// Makes `need` bytes available or records why not.
    #[inline]
    fn ensure(&mut self, need: usize) -> bool {
        if self.end - self.pos >= need {
            return true;
        }
        match self.fill(need) {
            Ok(true) => true,
            Ok(false) => {
                self.state = Some(EndState::Truncated {
                    byte_offset: self.offset,
                    records_read: self.records,
                });
                false
            }
            Err(e) => {
                self.state = Some(EndState::ReadError {
                    byte_offset: self.offset,
                    records_read: self.records,
                    message: e.to_string(),
                });
                false
            }
        }
    }

    /// The next record, or `None` at the end (see [`end_state`](Self::end_state)).
    #[inline]
    pub fn next_item(&mut self) -> Option<(u64, StreamItem)> {
        self.next_ref().map(|(i, it)| (i, *it))
    }

    /// As [`next_item`](Self::next_item), decoding into `out` and
    /// returning the item's index. A v2 block's items are decoded straight
    /// into `out` (every field of an event is written), which spares a
    /// consumer that keeps items (the read-ahead thread's batches) a copy
    /// of each; other records are decoded as usual and copied.
    #[inline]
    pub fn next_into(&mut self, out: &mut StreamItem) -> Option<u64> {
        if self.state.is_none() && self.blocks.is_some() {
            if !self.block_ready() {
                return None;
            }
            let b = self.blocks.as_deref_mut()?;
            return match b.dec.next(&b.raw[..b.raw_len], out) {
                Ok(()) => {
                    let index = self.records;
                    self.records += 1;
                    Some(index)
                }
                Err(reason) => {
                    let at = b.block_offset;
                    self.corrupt_at(at, format!("damaged item in the block: {reason}"));
                    None
                }
            };
        }
        let (index, item) = self.next_ref()?;
        *out = *item;
        Some(index)
    }

    /// As [`next_item`](Self::next_item), lending the item instead of
    /// copying it out: the reader decodes every event into one slot it owns,
    /// which is what a consumer that only looks at each item (the analyzer)
    /// wants.
    #[inline]
    pub fn next_ref(&mut self) -> Option<(u64, &StreamItem)> {
        if self.state.is_some() {
            return None;
        }
        if self.blocks.is_some() {
            return self.next_in_block();
        }
        // Fast path: a whole event record is buffered (nearly every call).
        if self.end - self.pos >= EVENT_RECORD_LEN {
            let rec = &self.buf[self.pos..self.pos + EVENT_RECORD_LEN];
            if le_u32(rec, 0) as usize == EVENT_SIZE
                && u16::from_le_bytes([rec[4], rec[5]]) == RECORD_EVENT
            {
                let body = &rec[..EVENT_RECORD_LEN - RECORD_CRC_LEN];
                if record_crc(body) != le_u32(rec, EVENT_RECORD_LEN - RECORD_CRC_LEN) {
                    self.corrupt("checksum mismatch".to_string());
                    return None;
                }
                let payload = <&[u8; EVENT_SIZE]>::try_from(&body[RECORD_HEADER_LEN..]);
                match (&mut self.cur, payload) {
                    (StreamItem::Event(slot), Ok(p)) => decode_event_into(p, slot),
                    (cur, Ok(p)) => *cur = StreamItem::Event(decode_event(p)),
                    // Unreachable: the slice is EVENT_SIZE bytes by
                    // construction; the general path reports it if not.
                    (_, Err(_)) => return self.next_general(),
                }
                return Some(self.advance(EVENT_RECORD_LEN));
            }
        }
        self.next_general()
    }

    /// Consumes a record of `total` bytes whose item is in `cur`.
    #[inline]
    fn advance(&mut self, total: usize) -> (u64, &StreamItem) {
        self.pos += total;
        self.offset += total as u64;
        let index = self.records;
        self.records += 1;
        (index, &self.cur)
    }

    /// Any record, including ones split across reads, damaged ones and the
    /// footer.
    fn next_general(&mut self) -> Option<(u64, &StreamItem)> {
        loop {
            if self.state.is_some() || !self.ensure(RECORD_HEADER_LEN) {
                return None;
            }
            let len = le_u32(&self.buf, self.pos) as usize;
            let ty = u16::from_le_bytes([self.buf[self.pos + 4], self.buf[self.pos + 5]]);
            if len > MAX_RECORD_PAYLOAD {
                self.corrupt(format!("record length {len} is implausible"));
                return None;
            }
            // Checked before reading the payload so that a damaged length
            // is reported as damage, not as a file cut short.
            let expected = match ty {
                RECORD_EVENT => EVENT_SIZE,
                RECORD_LOST => LOST_PAYLOAD_LEN,
                _ => len,
            };
            if len != expected {
                self.corrupt(format!(
                    "record type {ty} with {len} payload bytes, expected {expected}"
                ));
                return None;
            }
            let total = RECORD_HEADER_LEN + len + RECORD_CRC_LEN;
            if !self.ensure(total) {
                return None;
            }
            let rec = &self.buf[self.pos..self.pos + total];
            let body = &rec[..total - RECORD_CRC_LEN];
            let payload = &body[RECORD_HEADER_LEN..];
            if record_crc(body) != le_u32(rec, total - RECORD_CRC_LEN) {
                self.corrupt("checksum mismatch".to_string());
                return None;
            }
            let item = match ty {
                RECORD_EVENT => match <&[u8; EVENT_SIZE]>::try_from(payload) {
                    Ok(p) => StreamItem::Event(decode_event(p)),
                    Err(_) => {
                        self.corrupt(format!(
                            "event record of {len} bytes, expected {EVENT_SIZE}"
                        ));
                        return None;
                    }
                },
                RECORD_LOST => match decode_lost(payload) {
                    Some((ts_ns, probe, total)) => StreamItem::Lost {
                        ts_ns,
                        probe,
                        total,
                    },
                    None => {
                        self.corrupt(format!("lost record of {len} bytes, expected 24"));
                        return None;
                    }
                },
                RECORD_FOOTER => {
                    self.read_footer(total);
                    return None;
                }
                _ => {
                    // A record type from a later minor revision: its
                    // checksum is good, so step over it.
                    self.pos += total;
                    self.offset += total as u64;
                    self.records += 1;
                    continue;
                }
            };
            self.cur = item;
            return Some(self.advance(total));
        }
    }

    /// Format v2: the next item of the current block, reading the next
    /// block when this one is used up.
    #[inline]
    fn next_in_block(&mut self) -> Option<(u64, &StreamItem)> {
        if !self.block_ready() {
            return None;
        }
        let b = self.blocks.as_deref_mut()?;
        match b.dec.next(&b.raw[..b.raw_len], &mut self.cur) {
            Ok(()) => {
                let index = self.records;
                self.records += 1;
                Some((index, &self.cur))
            }
            Err(reason) => {
                let at = b.block_offset;
                self.corrupt_at(at, format!("damaged item in the block: {reason}"));
                None
            }
        }
    }

    /// Makes sure the current block has an item left, reading the next
    /// blocks as needed; `false` once reading has stopped.
    #[inline]
    fn block_ready(&mut self) -> bool {
        loop {
            if self.state.is_some() {
                return false;
            }
            let Some(b) = self.blocks.as_deref_mut() else {
                return false;
            };
            if b.dec.left() > 0 {
                return true;
            }
            if let Err(reason) = b.dec.check_end(&b.raw[..b.raw_len]) {
                let at = b.block_offset;
                self.corrupt_at(at, format!("damaged block: {reason}"));
                return false;
            }
            if !self.read_block() {
                return false;
            }
        }
    }

    #[cold]
    fn corrupt_at(&mut self, byte_offset: u64, reason: String) {
        let s = EndState::Corrupt {
            byte_offset,
            record_index: self.records,
            reason,
        };
        self.stop(s);
    }

    /// Reads the block at `offset`: `true` when it is an item block ready
    /// to decode; otherwise the reader has stopped (footer, damage, end).
    fn read_block(&mut self) -> bool {
        loop {
            if self.state.is_some() || !self.ensure(BLOCK_HEADER_LEN) {
                return false;
            }
            let mut hb = [0u8; BLOCK_HEADER_LEN];
            hb.copy_from_slice(&self.buf[self.pos..self.pos + BLOCK_HEADER_LEN]);
            let h = match BlockHeader::decode(&hb) {
                Ok(h) => h,
                Err(reason) => {
                    self.corrupt(reason);
                    return false;
                }
            };
            let total = BLOCK_HEADER_LEN + h.stored_len as usize;
            // The lengths are capped by `decode`, so this waits for at most
            // a block's worth of bytes, allocated as they arrive.
            if !self.ensure(total) {
                return false;
            }
            let stored = &self.buf[self.pos + BLOCK_HEADER_LEN..self.pos + total];
            if record_crc(stored) != h.payload_crc {
                self.corrupt("block checksum mismatch".to_string());
                return false;
            }
            match h.kind {
                BLOCK_ITEMS => {
                    if h.first_index != self.records {
                        let reason = format!(
                            "block says its first item is #{}, but {} items precede it",
                            h.first_index, self.records
                        );
                        self.corrupt(reason);
                        return false;
                    }
                    let Some(b) = self.blocks.as_deref_mut() else {
                        return false;
                    };
                    if let Err(reason) = b.load(&h, stored) {
                        self.corrupt(reason);
                        return false;
                    }
                    let entry = BlockEntry {
                        offset: self.offset,
                        first_index: h.first_index,
                        first_ts: h.first_ts,
                        items: h.items,
                    };
                    b.index_crc.update(&entry.encode());
                    b.blocks += 1;
                    b.block_offset = self.offset;
                    b.dec.start(h.items, h.first_ts);
                    self.pos += total;
                    self.offset += total as u64;
                    return true;
                }
                BLOCK_FOOTER => {
                    self.read_footer_block(&h, total);
                    return false;
                }
                _ => {
                    // A block kind from a later revision: it carries no
                    // items of the stream and its checksum is good.
                    self.pos += total;
                    self.offset += total as u64;
                }
            }
        }
    }

    /// v2's footer block at `pos` (`total` bytes, checked), then the
    /// trailer, then the end of the file.
    fn read_footer_block(&mut self, h: &BlockHeader, total: usize) {
        let Some(b) = self.blocks.as_deref_mut() else {
            return;
        };
        let stored = &self.buf[self.pos + BLOCK_HEADER_LEN..self.pos + total];
        if let Err(reason) = b.load(h, stored) {
            return self.corrupt(format!("footer block: {reason}"));
        }
        let raw = &b.raw[..b.raw_len];
        let parsed = parse_footer(raw).and_then(|(footer, entries)| {
            if footer.records != self.records || h.first_index != self.records {
                return Err(format!(
                    "footer counts {} items but {} precede it",
                    footer.records, self.records
                ));
            }
            if !entries.is_empty() && b.check_index {
                let n = (entries.len() / INDEX_ENTRY_LEN) as u64;
                if n != b.blocks || crc32fast::hash(entries) != b.index_crc.clone().finalize() {
                    return Err(format!(
                        "the footer's index of {n} blocks does not match the {} blocks read",
                        b.blocks
                    ));
                }
            }
            Ok(footer)
        });
        let footer = match parsed {
            Ok(f) => f,
            Err(reason) => return self.corrupt(reason),
        };
        let footer_offset = self.offset;
        match self.fill(total + TRAILER_LEN) {
            Ok(true) => {}
            Ok(false) => {
                // Cut inside the trailer: everything was read, but the
                // file does not end the way a finished one does.
                return self.stop(EndState::Truncated {
                    byte_offset: footer_offset,
                    records_read: self.records,
                });
            }
            Err(e) => {
                let s = EndState::ReadError {
                    byte_offset: footer_offset,
                    records_read: self.records,
                    message: e.to_string(),
                };
                return self.stop(s);
            }
        }
        let mut t = [0u8; TRAILER_LEN];
        t.copy_from_slice(&self.buf[self.pos + total..self.pos + total + TRAILER_LEN]);
        if decode_trailer(&t) != Some(footer_offset) {
            return self.corrupt("the trailer does not point at the footer block".to_string());
        }
        self.pos += total + TRAILER_LEN;
        self.offset += (total + TRAILER_LEN) as u64;
        match self.fill(1) {
            Ok(false) => self.stop(EndState::Complete { footer }),
            Ok(true) => {
                let s = EndState::Corrupt {
                    byte_offset: self.offset,
                    record_index: self.records,
                    reason: format!(
                        "data after the end of the trace (footer at byte {footer_offset})"
                    ),
                };
                self.stop(s);
            }
            Err(e) => {
                let s = EndState::ReadError {
                    byte_offset: self.offset,
                    records_read: self.records,
                    message: e.to_string(),
                };
                self.stop(s);
            }
        }
    }

    fn read_footer(&mut self, total: usize) {
        let payload = &self.buf[self.pos + RECORD_HEADER_LEN..self.pos + total - RECORD_CRC_LEN];
        let footer: TraceFooter = match serde_json::from_slice(payload) {
            Ok(f) => f,
            Err(e) => return self.corrupt(format!("footer is not valid JSON: {e}")),
        };
        if footer.records != self.records {
            return self.corrupt(format!(
                "footer counts {} records but {} precede it",
                footer.records, self.records
            ));
        }
        let footer_offset = self.offset;
        self.pos += total;
        self.offset += total as u64;
        match self.fill(1) {
            Ok(false) => self.stop(EndState::Complete { footer }),
            Ok(true) => {
                let s = EndState::Corrupt {
                    byte_offset: self.offset,
                    record_index: self.records + 1,
                    reason: format!("data after the footer (footer at byte {footer_offset})"),
                };
                self.stop(s);
            }
            Err(e) => {
                let s = EndState::ReadError {
                    byte_offset: self.offset,
                    records_read: self.records,
                    message: e.to_string(),
                };
                self.stop(s);
            }
        }
    }
}

impl<R: Read + Seek> TraceReader<R> {
    /// The block index in the footer of a complete v2 file, found through
    /// its trailer without reading the blocks. `None` for a v1 file, or a
    /// v2 file without a usable index (cut off, damaged at its end, or
    /// with more blocks than a footer indexes). Reading goes on where it
    /// was.
    pub fn block_index(&mut self) -> Result<Option<Vec<BlockEntry>>, TraceError> {
        if self.blocks.is_none() {
            return Ok(None);
        }
        let here = self.src.stream_position().map_err(|e| self.io_err(e))?;
        let found = self.index_at_end();
        self.src
            .seek(SeekFrom::Start(here))
            .map_err(|e| self.io_err(e))?;
        found.map_err(|e| self.io_err(e))
    }

    fn index_at_end(&mut self) -> io::Result<Option<Vec<BlockEntry>>> {
        let len = self.src.seek(SeekFrom::End(0))?;
        let least = self.data_start + (BLOCK_HEADER_LEN + TRAILER_LEN) as u64;
        if len < least {
            return Ok(None);
        }
        let mut t = [0u8; TRAILER_LEN];
        self.src.seek(SeekFrom::Start(len - TRAILER_LEN as u64))?;
        self.src.read_exact(&mut t)?;
        let Some(at) = decode_trailer(&t).filter(|&at| at >= self.data_start && at < len) else {
            return Ok(None);
        };
        let mut hb = [0u8; BLOCK_HEADER_LEN];
        self.src.seek(SeekFrom::Start(at))?;
        if self.src.read_exact(&mut hb).is_err() {
            return Ok(None);
        }
        let Ok(h) = BlockHeader::decode(&hb) else {
            return Ok(None);
        };
        let end = at + (BLOCK_HEADER_LEN + TRAILER_LEN) as u64 + u64::from(h.stored_len);
        if h.kind != BLOCK_FOOTER || end != len {
            return Ok(None);
        }
        // The stored bytes are in the file (its length says so) and
        // capped by `decode`.
        let mut stored = vec![0u8; h.stored_len as usize];
        self.src.read_exact(&mut stored)?;
        // Decoded apart from the block being read, which stays as it is.
        let mut b = BlockState::new();
        if record_crc(&stored) != h.payload_crc || b.load(&h, &stored).is_err() {
            return Ok(None);
        }
        let Ok((_, entries)) = parse_footer(&b.raw[..b.raw_len]) else {
            return Ok(None);
        };
        let entries: Vec<BlockEntry> = entries
            .chunks_exact(INDEX_ENTRY_LEN)
            .filter_map(BlockEntry::decode)
            .collect();
        Ok((!entries.is_empty()).then_some(entries))
    }

    /// Positions the reader after the first `index` items, so that the
    /// next item is item `index` (or the trace ends there): through the
    /// footer's block index when the file has one, by stepping over block
    /// headers when it does not (a cut file), and by reading records one by
    /// one in a v1 file. `Ok(false)`: the trace holds fewer items, and the
    /// reader is at its end ([`end_state`](Self::end_state) says how it
    /// ends).
    pub fn seek_item(&mut self, index: u64) -> Result<bool, TraceError> {
        if self.blocks.is_some() {
            let (at, first) = match self.block_index()? {
                Some(entries) => entries
                    .iter()
                    .rev()
                    .find(|e| e.first_index <= index)
                    .map_or((self.data_start, 0), |e| (e.offset, e.first_index)),
                None => self.scan_for(index)?,
            };
            self.rewind(at, first)?;
        } else if index < self.records || self.state.is_some() {
            let start = self.data_start;
            self.rewind(start, 0)?;
        }
        while self.records < index {
            if self.next_ref().is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads block headers (not payloads) from the first block on, to the
    /// block holding item `index`, or to where the blocks stop: its offset
    /// and first item.
    fn scan_for(&mut self, index: u64) -> Result<(u64, u64), TraceError> {
        let (mut at, mut first) = (self.data_start, 0u64);
        let mut hb = [0u8; BLOCK_HEADER_LEN];
        let len = self
            .src
            .seek(SeekFrom::End(0))
            .map_err(|e| self.io_err(e))?;
        loop {
            self.src
                .seek(SeekFrom::Start(at))
                .map_err(|e| self.io_err(e))?;
            if self.src.read_exact(&mut hb).is_err() {
                return Ok((at, first));
            }
            let Ok(h) = BlockHeader::decode(&hb) else {
                return Ok((at, first));
            };
            let next = at + (BLOCK_HEADER_LEN as u64) + u64::from(h.stored_len);
            // A block cut off is where reading will stop.
            if next > len {
                return Ok((at, first));
            }
            if h.kind == BLOCK_ITEMS {
                if h.first_index != first || index < first + u64::from(h.items) {
                    return Ok((at, first));
                }
                first += u64::from(h.items);
            } else if h.kind == BLOCK_FOOTER {
                return Ok((at, first));
            }
            at = next;
        }
    }

    /// Restarts reading at file offset `at`, where item `first` starts.
    fn rewind(&mut self, at: u64, first: u64) -> Result<(), TraceError> {
        self.src
            .seek(SeekFrom::Start(at))
            .map_err(|e| self.io_err(e))?;
        self.pos = 0;
        self.end = 0;
        self.offset = at;
        self.records = first;
        self.state = None;
        let from_start = at == self.data_start;
        if let Some(b) = self.blocks.as_deref_mut() {
            b.dec.start(0, 0);
            b.raw_len = 0;
            b.check_index = from_start;
            if from_start {
                b.blocks = 0;
                b.index_crc = crc32fast::Hasher::new();
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = (u64, StreamItem);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.next_item()
    }
}

#[inline(always)]
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A v2 footer block's payload: the footer JSON and the index entries'
/// bytes (a whole number of entries).
fn parse_footer(raw: &[u8]) -> Result<(TraceFooter, &[u8]), String> {
    let bad = || "footer block is malformed".to_string();
    let json_len = raw
        .get(..4)
        .map(|b| le_u32(b, 0) as usize)
        .ok_or_else(bad)?;
    let json = raw.get(4..4 + json_len).ok_or_else(bad)?;
    let rest = &raw[4 + json_len..];
    let n = rest
        .get(..4)
        .map(|b| le_u32(b, 0) as usize)
        .ok_or_else(bad)?;
    let entries = &rest[4..];
    if n.checked_mul(INDEX_ENTRY_LEN) != Some(entries.len()) {
        return Err(format!(
            "footer index claims {n} entries in {} bytes",
            entries.len()
        ));
    }
    let footer =
        serde_json::from_slice(json).map_err(|e| format!("footer is not valid JSON: {e}"))?;
    Ok((footer, entries))
}

/// Recognises common files people pass by mistake, for a better message.
fn foreign_kind(b: &[u8]) -> Option<&'static str> {
    let starts = |p: &[u8]| b.starts_with(p);
    if starts(b"PERFILE2") {
        Some("a perf.data file")
    } else if starts(&[0x1f, 0x8b]) {
        Some("gzip-compressed (decompress it first)")
    } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd-compressed (decompress it first)")
    } else if starts(b"\x7fELF") {
        Some("an ELF binary")
    } else if starts(b"{") || starts(b"[{") || starts(b"[\n") || starts(b"[ ") {
        Some("JSON text (perhaps a `detector replay --format jsonl` export)")
    } else if !b.is_empty()
        && b.iter()
            .all(|&c| c == b'\n' || c == b'\t' || c == b'\r' || (0x20..0x7f).contains(&c))
    {
        Some("a text file")
    } else {
        None
    }
}

/// Reads a whole trace into memory (tests and small files).
pub fn read_all(
    path: impl AsRef<Path>,
) -> Result<(TraceHeader, Vec<crate::event::StreamItem>, EndState), TraceError> {
    let mut r = TraceReader::open(path)?;
    let items: Vec<StreamItem> = r.by_ref().map(|(_, it)| it).collect();
    let end = r.end_state().cloned().unwrap_or(EndState::Truncated {
        byte_offset: r.byte_offset(),
        records_read: r.records_read(),
    });
    Ok((r.header, items, end))
}

/// Reads a whole trace from memory (tests).
#[cfg(test)]
pub(crate) fn read_bytes(b: &[u8]) -> Result<(TraceHeader, Vec<StreamItem>, EndState), TraceError> {
    let mut r = TraceReader::from_reader(b)?;
    let items: Vec<StreamItem> = r.by_ref().map(|(_, it)| it).collect();
    let end = r.end_state().cloned().unwrap_or(EndState::Truncated {
        byte_offset: r.byte_offset(),
        records_read: r.records_read(),
    });
    Ok((r.header, items, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{TraceEnd, TraceWriter};

    use crate::trace::TraceFormat;

    /// Events and lost records interleaved (so the lent slot changes
    /// variant both ways), a damaged event near the end.
    fn trace_bytes(format: TraceFormat) -> (Vec<StreamItem>, Vec<u8>) {
        let mut items = Vec::new();
        for i in 0..300u64 {
            let mut comm = [0u8; 16];
            comm[..3].copy_from_slice(b"cat");
            items.push(StreamItem::Event(Event {
                ts_ns: 10 + i,
                folio: 0xffff_ea00_0000_0000 + (i << 6),
                entry: i * 3,
                tid: i as u32,
                f_refcount: i as i32 - 7,
                probe: (i % 5) as u16,
                valid: i as u8,
                comm,
                ..Event::default()
            }));
            if i % 7 == 0 {
                items.push(StreamItem::Lost {
                    ts_ns: i,
                    probe: 2,
                    total: i,
                });
            }
        }
        let mut w =
            TraceWriter::with_format(Vec::new(), &TraceHeader::new("t"), "t".into(), format)
                .unwrap();
        for (k, it) in items.iter().enumerate() {
            w.write_item(it).unwrap();
            // Several v2 blocks, so items cross block boundaries too.
            if k % 50 == 49 {
                w.flush().unwrap();
            }
        }
        let (_, bytes) = w.finish_into_inner(TraceEnd::at(0, "t")).unwrap();
        (items, bytes)
    }

    /// Hands out at most `n` bytes per read, so records straddle refills.
    struct Chunks<'a>(&'a [u8], usize);

    impl Read for Chunks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn via_ref<R: Read>(mut r: TraceReader<R>) -> (Vec<(u64, StreamItem)>, Option<EndState>) {
        let mut got = Vec::new();
        while let Some((i, it)) = r.next_ref() {
            got.push((i, *it));
        }
        (got, r.end_state().cloned())
    }

    /// Through [`TraceReader::next_into`], into slots that start out
    /// holding other items (a lost total, an event with every field set),
    /// as the read-ahead thread's recycled slots do: every field must be
    /// overwritten.
    fn via_into<R: Read>(mut r: TraceReader<R>) -> (Vec<(u64, StreamItem)>, Option<EndState>) {
        let junk = Event {
            ts_ns: u64::MAX,
            folio: u64::MAX,
            entry: u64::MAX,
            pte: u64::MAX,
            addr: u64::MAX,
            ret: -1,
            f_flags: u64::MAX,
            f_swap: u64::MAX,
            f_mapping: u64::MAX,
            f_index: u64::MAX,
            pid: u32::MAX,
            tid: u32::MAX,
            cpu: u32::MAX,
            nr: u32::MAX,
            f_refcount: -1,
            f_mapcount: -1,
            f_large_mapcount: -1,
            f_entire_mapcount: -1,
            f_pincount: -1,
            f_nr_pages: u32::MAX,
            f_state: u32::MAX,
            arg: u32::MAX,
            probe: u16::MAX,
            kind: u8::MAX,
            valid: u8::MAX,
            comm: [0xff; 16],
            task_start: u32::MAX,
        };
        let mut slots = [
            StreamItem::Lost {
                ts_ns: 1,
                probe: 2,
                total: 3,
            },
            StreamItem::Event(junk),
            StreamItem::Event(junk),
        ];
        let mut got = Vec::new();
        for k in 0.. {
            let slot = &mut slots[k % 3];
            let Some(i) = r.next_into(slot) else { break };
            got.push((i, *slot));
            if k % 3 == 2 {
                slots = [
                    StreamItem::Event(junk),
                    StreamItem::Lost {
                        ts_ns: 4,
                        probe: 5,
                        total: 6,
                    },
                    StreamItem::Event(junk),
                ];
            }
        }
        (got, r.end_state().cloned())
    }

    #[test]
    fn lent_items_match_owned_items() {
        for format in [TraceFormat::V1, TraceFormat::V2] {
            lent_match_owned(format);
        }
    }

    fn lent_match_owned(format: TraceFormat) {
        let (items, bytes) = trace_bytes(format);
        let want: Vec<(u64, StreamItem)> = items
            .iter()
            .copied()
            .zip(0..)
            .map(|(it, i)| (i, it))
            .collect();
        for chunk in [1, 7, 163, 164, 165, 4096, usize::MAX] {
            let r = TraceReader::from_reader(Chunks(&bytes, chunk)).unwrap();
            let (got, end) = via_ref(r);
            assert_eq!(got, want, "chunk {chunk}");
            assert!(end.is_some_and(|e| e.is_complete()), "chunk {chunk}");
            let r = TraceReader::from_reader(Chunks(&bytes, chunk)).unwrap();
            let (into, end) = via_into(r);
            assert_eq!(into, want, "into, chunk {chunk}");
            assert!(end.is_some_and(|e| e.is_complete()), "into, chunk {chunk}");
        }
        let owned: Vec<(u64, StreamItem)> = TraceReader::from_reader(bytes.as_slice())
            .unwrap()
            .collect();
        assert_eq!(owned, want);
    }

    #[test]
    fn lent_and_owned_stop_at_the_same_damage() {
        for format in [TraceFormat::V1, TraceFormat::V2] {
            same_damage(format);
        }
    }

    fn same_damage(format: TraceFormat) {
        let (_, bytes) = trace_bytes(format);
        // Every byte of a record in the middle: header, payload, CRC.
        let start = bytes.len() / 2;
        for at in start..start + 170 {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            let (got, end) = via_ref(TraceReader::from_reader(bad.as_slice()).unwrap());
            let mut owned = TraceReader::from_reader(bad.as_slice()).unwrap();
            let want: Vec<(u64, StreamItem)> = owned.by_ref().collect();
            assert_eq!(got, want, "flip at {at}");
            assert_eq!(end.as_ref(), owned.end_state(), "flip at {at}");
            let (into, into_end) = via_into(TraceReader::from_reader(bad.as_slice()).unwrap());
            assert_eq!(into, want, "into, flip at {at}");
            assert_eq!(into_end, end, "into, flip at {at}");
            assert!(
                matches!(end, Some(EndState::Corrupt { .. })),
                "flip at {at}"
            );
        }
    }
}
