//! A trace file as a source: as fast as it reads, or paced by the events'
//! timestamps (`live --replay --speed`). The segments of a rotated capture
//! read as one stream, oldest first.

use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::event::StreamItem;
use crate::trace::{EndState, TraceHeader, TraceReader};

use super::source::{Item, Pull, Source, SourceError, SourceInfo, BATCH};

/// Replay speed: how many seconds of trace per second of wall time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As fast as the reader goes.
    Max,
    Factor(f64),
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("`{0}` is not a replay speed: give a positive factor (1 = real time) or 0/max")]
pub struct BadSpeed(String);

impl std::str::FromStr for Speed {
    type Err = BadSpeed;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            Ok(0.0) => Ok(Speed::Max),
            Ok(v) if v.is_finite() && v > 0.0 => Ok(Speed::Factor(v)),
            _ => Err(BadSpeed(s.to_owned())),
        }
    }
}

/// How one segment of the stream ended.
#[derive(Clone, Debug)]
pub struct SegmentEnd {
    /// The segment's number from its header (0 for an unrotated trace).
    pub segment: u32,
    /// `None` when reading stopped before its end (the stream was stopped).
    pub end: Option<EndState>,
    /// Records read from it.
    pub records: u64,
}

/// Trace file(s) as a stream. Item indexes count across segments: a
/// complete segment advances them by the records its footer counts, so
/// evidence cites the same positions whichever segment a reader starts
/// with.
///
/// At full speed the files are read and decoded on a thread of its own
/// (see [`ReadAhead`]), so that decoding (zstd, the v2 items, the CRCs)
/// runs beside the analysis instead of before it. Items still arrive in
/// file order with the same indexes, so nothing downstream can tell.
pub struct FileSource {
    /// The readers and where they are; `None` while lent to the read-ahead
    /// thread.
    segs: Option<Segments>,
    /// Every segment's header, oldest first, kept here so that they stay
    /// readable while the readers are on the read-ahead thread.
    headers: Vec<TraceHeader>,
    ahead: Option<ReadAhead>,
    /// Read ahead on a thread at full speed (until the thread has handed
    /// the readers back, or could not be started).
    read_ahead: bool,
    /// The read-ahead thread died without handing the readers back.
    reader_failed: bool,
    info: SourceInfo,
    speed: Speed,
    /// First timestamp and the wall time it was released at.
    anchor: Option<(u64, Instant)>,
    /// An item read but not yet due.
    pending: Option<(u64, StreamItem)>,
}

/// The segments' readers and the position in the stream.
struct Segments {
    /// Oldest first; `cur` is the one being read.
    readers: Vec<TraceReader<File>>,
    cur: usize,
    /// Index of the current segment's first record.
    base: u64,
    /// Index after the last item handed over.
    next: u64,
    ended: Vec<SegmentEnd>,
    /// Every segment was read to its end.
    done: bool,
}

impl Segments {
    fn end_state(&self) -> Option<&EndState> {
        self.readers.get(self.cur).and_then(TraceReader::end_state)
    }

    /// The current segment is read to its end: on to the next one, if any.
    fn next_segment(&mut self) -> bool {
        if self.done {
            return false;
        }
        let r = &self.readers[self.cur];
        let records = self.next - self.base;
        let end = r.end_state().cloned();
        self.base += match &end {
            Some(EndState::Complete { footer }) => footer.records.max(records),
            _ => records,
        };
        self.next = self.base;
        self.ended.push(SegmentEnd {
            segment: r.header().segment,
            end,
            records,
        });
        if self.cur + 1 < self.readers.len() {
            self.cur += 1;
            true
        } else {
            self.done = true;
            false
        }
    }

    /// Hands up to `max` items to `f`, borrowed from the reader's decode
    /// slot; how many (0: the stream is over).
    #[inline]
    fn pull(&mut self, max: usize, f: &mut impl FnMut(u64, &StreamItem)) -> usize {
        let mut n = 0;
        while n < max {
            let base = self.base;
            if let Some((index, item)) = self.readers[self.cur].next_ref() {
                self.next = base + index + 1;
                f(base + index, item);
                n += 1;
                continue;
            }
            if !self.next_segment() {
                break;
            }
        }
        n
    }

    /// Decodes up to `slots.len()` items into `slots` (index, item); how
    /// many (0: the stream is over).
    fn fill(&mut self, slots: &mut [(u64, StreamItem)]) -> usize {
        let mut n = 0;
        while let Some(slot) = slots.get_mut(n) {
            let base = self.base;
            if let Some(index) = self.readers[self.cur].next_into(&mut slot.1) {
                self.next = base + index + 1;
                slot.0 = base + index;
                n += 1;
                continue;
            }
            if !self.next_segment() {
                break;
            }
        }
        n
    }

    /// The next item, copied out (paced replay holds on to it).
    fn next_item(&mut self) -> Option<(u64, StreamItem)> {
        loop {
            if let Some((index, item)) = self.readers[self.cur].next_item() {
                self.next = self.base + index + 1;
                return Some((self.base + index, item));
            }
            if !self.next_segment() {
                return None;
            }
        }
    }
}

/// Items decoded on the read-ahead thread: the first `len` of [`CHUNK`]
/// slots. The slots stay allocated and are decoded into in place.
struct Batch {
    slots: Vec<(u64, StreamItem)>,
    len: usize,
}

impl Batch {
    fn new() -> Batch {
        let empty = StreamItem::Lost {
            ts_ns: 0,
            probe: 0,
            total: 0,
        };
        Batch {
            slots: vec![(0, empty); CHUNK],
            len: 0,
        }
    }

    fn items(&self) -> &[(u64, StreamItem)] {
        self.slots.get(..self.len).unwrap_or(&[])
    }
}

enum AheadMsg {
    Items(Batch),
    /// The stream is over: the readers come back, holding how it ended.
    End(Box<Segments>),
}

/// Items per batch from the read-ahead thread: small enough that the
/// batches in flight stay in the caches, large enough that the channel's
/// cost per item is negligible.
const CHUNK: usize = 512;
/// Batches in flight: bounds the memory the thread can get ahead by.
const IN_FLIGHT: usize = 16;

/// The consumer's end of the read-ahead thread. Spent batches go back to
/// the thread for refilling, so the steady state allocates nothing; at
/// most `IN_FLIGHT + 2` batches ever exist. Dropping it ends the thread
/// (its next send fails).
struct ReadAhead {
    rx: Receiver<AheadMsg>,
    back: Sender<Batch>,
}

impl ReadAhead {
    /// Starts the thread over `segs`; gives them back when it cannot.
    fn spawn(segs: Segments) -> Result<ReadAhead, Segments> {
        let (tx, rx) = mpsc::sync_channel::<AheadMsg>(IN_FLIGHT);
        let (back, back_rx) = mpsc::channel::<Batch>();
        // The readers go over only once the thread runs, so that a failed
        // spawn leaves them here.
        let (segs_tx, segs_rx) = mpsc::channel::<Segments>();
        let spawned = std::thread::Builder::new()
            .name("detector-read".into())
            .spawn(move || {
                let Ok(mut segs) = segs_rx.recv() else {
                    return;
                };
                loop {
                    let mut batch = back_rx.try_recv().unwrap_or_else(|_| Batch::new());
                    batch.len = segs.fill(&mut batch.slots);
                    if batch.len == 0 {
                        break;
                    }
                    // A failed send: the consumer is gone, nothing to do.
                    if tx.send(AheadMsg::Items(batch)).is_err() {
                        return;
                    }
                }
                let _ = tx.send(AheadMsg::End(Box::new(segs)));
            });
        if spawned.is_err() {
            return Err(segs);
        }
        if let Err(mpsc::SendError(segs)) = segs_tx.send(segs) {
            return Err(segs);
        }
        Ok(ReadAhead { rx, back })
    }
}

impl FileSource {
    pub fn open(path: &Path, speed: Speed) -> Result<Self, SourceError> {
        Self::open_segments(&[path], speed)
    }

    /// The segments of one capture, oldest first (as
    /// [`existing_segments`](crate::trace::existing_segments) lists them).
    /// The stream's header, title and plan are the first segment's.
    pub fn open_segments<P: AsRef<Path>>(paths: &[P], speed: Speed) -> Result<Self, SourceError> {
        let readers = paths
            .iter()
            .map(TraceReader::open)
            .collect::<Result<Vec<_>, _>>()?;
        let first = paths.first().map(AsRef::as_ref).unwrap_or(Path::new(""));
        let Some(h) = readers.first().map(TraceReader::header) else {
            return Err(SourceError::Start {
                what: "replay",
                source: std::io::Error::other("no trace file given"),
            });
        };
        let speed_txt = match speed {
            Speed::Max => String::from("max speed"),
            Speed::Factor(f) => format!("x{f}"),
        };
        let info = SourceInfo {
            title: format!(
                "replay {} ({speed_txt})",
                first.file_name().map_or_else(
                    || first.display().to_string(),
                    |n| n.to_string_lossy().into_owned()
                )
            ),
            kernel_release: h.kernel_release.clone(),
            plan: h.plan.clone(),
            live: false,
            degraded: crate::loader::degraded_statement(&h.plan),
        };
        let headers = readers.iter().map(|r| r.header().clone()).collect();
        Ok(FileSource {
            segs: Some(Segments {
                readers,
                cur: 0,
                base: 0,
                next: 0,
                ended: Vec::new(),
                done: false,
            }),
            headers,
            ahead: None,
            read_ahead: speed == Speed::Max,
            reader_failed: false,
            info,
            speed,
            anchor: None,
            pending: None,
        })
    }

    /// How the file (the last segment read) ended, once reading reached it.
    /// While a read-ahead thread reads, the end is not known here yet.
    pub fn end_state(&self) -> Option<&EndState> {
        self.segs.as_ref().and_then(Segments::end_state)
    }

    /// The headers of every segment, oldest first.
    pub fn segment_headers(&self) -> impl Iterator<Item = &TraceHeader> {
        self.headers.iter()
    }

    /// How each segment read so far ended, oldest first; the one being read
    /// is not listed until it ends (with a read-ahead thread, none is until
    /// the stream ended).
    pub fn segment_ends(&self) -> &[SegmentEnd] {
        self.segs.as_ref().map_or(&[], |s| &s.ended[..])
    }

    /// When `ts` is due on the wall clock, or `None` for "now".
    fn due(&mut self, ts: u64) -> Option<Instant> {
        let Speed::Factor(f) = self.speed else {
            return None;
        };
        if ts == 0 {
            return None;
        }
        let (t0, w0) = *self.anchor.get_or_insert((ts, Instant::now()));
        let dt = ts.saturating_sub(t0) as f64 / f;
        Some(w0 + Duration::from_nanos(dt.min(u64::MAX as f64 / 2.0) as u64))
    }

    fn end_text(&self) -> String {
        match self.end_state() {
            Some(EndState::Complete { footer }) => {
                format!("end of trace, {} records, complete", footer.records)
            }
            Some(EndState::Truncated { byte_offset, .. }) => {
                format!("trace cut off at byte {byte_offset}")
            }
            Some(EndState::Corrupt { byte_offset, .. }) => {
                format!("damaged record at byte {byte_offset}, replay stopped")
            }
            Some(EndState::ReadError { message, .. }) => format!("read error: {message}"),
            None => String::from("end of trace"),
        }
    }

    /// As fast as the reader goes.
    fn pull_max(&mut self, f: &mut dyn FnMut(u64, Item<'_>)) -> Result<Pull, SourceError> {
        if self.reader_failed {
            return Err(SourceError::ReaderGone);
        }
        if self.read_ahead && self.ahead.is_none() {
            if let Some(segs) = self.segs.take() {
                match ReadAhead::spawn(segs) {
                    Ok(ra) => self.ahead = Some(ra),
                    Err(segs) => {
                        self.segs = Some(segs);
                        self.read_ahead = false;
                    }
                }
            }
        }
        if self.ahead.is_some() {
            return self.pull_ahead(f);
        }
        let Some(segs) = self.segs.as_mut() else {
            return Ok(Pull::End(self.end_text()));
        };
        // Items borrowed from the reader's decode slot.
        if segs.pull(BATCH, &mut |index, item| f(index, Item::Decoded(item))) == 0 {
            return Ok(Pull::End(self.end_text()));
        }
        Ok(Pull::Items)
    }

    /// From the read-ahead thread: up to [`BATCH`] items, waiting for them
    /// as long as reading takes (as reading on this thread would).
    fn pull_ahead(&mut self, f: &mut dyn FnMut(u64, Item<'_>)) -> Result<Pull, SourceError> {
        let Some(ra) = self.ahead.as_ref() else {
            return Ok(Pull::End(self.end_text()));
        };
        let mut n = 0;
        while n + CHUNK <= BATCH {
            match ra.rx.recv() {
                Ok(AheadMsg::Items(batch)) => {
                    for (index, item) in batch.items() {
                        f(*index, Item::Decoded(item));
                    }
                    n += batch.len;
                    // The thread is gone only when the stream is over.
                    let _ = ra.back.send(batch);
                }
                Ok(AheadMsg::End(segs)) => {
                    self.segs = Some(*segs);
                    self.ahead = None;
                    self.read_ahead = false;
                    break;
                }
                // The thread sends `End` before it returns, so it panicked
                // (a bug, reported by the panic hook): the stream fails
                // rather than end as if the file ended here.
                Err(_) => {
                    self.ahead = None;
                    self.read_ahead = false;
                    self.reader_failed = true;
                    break;
                }
            }
        }
        if n > 0 {
            Ok(Pull::Items)
        } else if self.reader_failed {
            Err(SourceError::ReaderGone)
        } else {
            Ok(Pull::End(self.end_text()))
        }
    }

    /// Paced: items are released when their time comes.
    fn pull_paced(&mut self, wait: Duration, f: &mut dyn FnMut(u64, Item<'_>)) -> Pull {
        let deadline = Instant::now() + wait;
        let mut n = 0;
        while n < BATCH {
            let next = match self.pending.take() {
                Some(p) => p,
                None => match self.segs.as_mut().and_then(Segments::next_item) {
                    Some(item) => item,
                    None if n == 0 => return Pull::End(self.end_text()),
                    None => break,
                },
            };
            if let Some(due) = self.due(next.1.ts_ns()) {
                let now = Instant::now();
                if due > now {
                    self.pending = Some(next);
                    if n > 0 || now >= deadline {
                        break;
                    }
                    std::thread::sleep((due - now).min(deadline - now));
                    continue;
                }
            }
            f(next.0, Item::Decoded(&next.1));
            n += 1;
        }
        if n == 0 {
            Pull::Idle
        } else {
            Pull::Items
        }
    }
}

impl Source for FileSource {
    fn info(&self) -> SourceInfo {
        self.info.clone()
    }

    fn header(&self) -> &TraceHeader {
        &self.headers[0]
    }

    fn pull(
        &mut self,
        wait: Duration,
        _raw: bool,
        f: &mut dyn FnMut(u64, Item<'_>),
    ) -> Result<Pull, SourceError> {
        match self.speed {
            Speed::Max => self.pull_max(f),
            Speed::Factor(_) => Ok(self.pull_paced(wait, f)),
        }
    }
}
