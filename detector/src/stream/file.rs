//! A trace file as a source: as fast as it reads, or paced by the events'
//! timestamps (`live --replay --speed`). The segments of a rotated capture
//! read as one stream, oldest first.

use std::fs::File;
use std::path::Path;
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
pub struct FileSource {
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
    info: SourceInfo,
    speed: Speed,
    /// First timestamp and the wall time it was released at.
    anchor: Option<(u64, Instant)>,
    /// An item read but not yet due.
    pending: Option<(u64, StreamItem)>,
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
        Ok(FileSource {
            readers,
            cur: 0,
            base: 0,
            next: 0,
            ended: Vec::new(),
            done: false,
            info,
            speed,
            anchor: None,
            pending: None,
        })
    }

    /// How the file (the last segment read) ended, once reading reached it.
    pub fn end_state(&self) -> Option<&EndState> {
        self.readers.get(self.cur).and_then(TraceReader::end_state)
    }

    /// The headers of every segment, oldest first.
    pub fn segment_headers(&self) -> impl Iterator<Item = &TraceHeader> {
        self.readers.iter().map(TraceReader::header)
    }

    /// How each segment read so far ended, oldest first; the one being read
    /// is not listed until it ends.
    pub fn segment_ends(&self) -> &[SegmentEnd] {
        &self.ended
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

    /// As fast as the reader goes: items borrowed from its decode slot.
    fn pull_max(&mut self, f: &mut dyn FnMut(u64, Item<'_>)) -> Pull {
        let mut n = 0;
        while n < BATCH {
            let base = self.base;
            if let Some((index, item)) = self.readers[self.cur].next_ref() {
                self.next = base + index + 1;
                f(base + index, Item::Decoded(item));
                n += 1;
                continue;
            }
            if self.next_segment() {
                continue;
            }
            if n == 0 {
                return Pull::End(self.end_text());
            }
            break;
        }
        Pull::Items
    }

    /// Paced: items are released when their time comes.
    fn pull_paced(&mut self, wait: Duration, f: &mut dyn FnMut(u64, Item<'_>)) -> Pull {
        let deadline = Instant::now() + wait;
        let mut n = 0;
        while n < BATCH {
            let next = match self.pending.take() {
                Some(p) => p,
                None => match self.readers[self.cur].next_item() {
                    Some((index, item)) => {
                        self.next = self.base + index + 1;
                        (self.base + index, item)
                    }
                    None if self.next_segment() => continue,
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
        self.readers[0].header()
    }

    fn pull(
        &mut self,
        wait: Duration,
        _raw: bool,
        f: &mut dyn FnMut(u64, Item<'_>),
    ) -> Result<Pull, SourceError> {
        Ok(match self.speed {
            Speed::Max => self.pull_max(f),
            Speed::Factor(_) => self.pull_paced(wait, f),
        })
    }
}
