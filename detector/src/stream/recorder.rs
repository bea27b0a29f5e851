//! Where a stream is recorded: a trace file, rotated by size or not. The
//! undecoded path, an event as the trace file's bytes, is a capability a
//! recorder says it has ([`Recorder::accepts_raw`]); the pipeline uses it
//! when the source offers it and nothing else needs decoded events. The
//! kernel source no longer does: its ring records are packed, not file
//! bytes.

use std::path::Path;

use detector_common::EVENT_SIZE;

use crate::event::StreamItem;
use crate::trace::{
    decode_event, Redactor, RotatingWriter, RotationPolicy, TraceEnd, TraceError, TraceFormat,
    TraceHeader, TraceSummary,
};

pub trait Recorder: Send {
    fn write(&mut self, item: &StreamItem) -> Result<(), TraceError>;
    /// Whether [`write_raw`](Self::write_raw) costs less than decoding and
    /// [`write`](Self::write).
    fn accepts_raw(&self) -> bool {
        false
    }
    /// An event as the trace file's bytes.
    fn write_raw(&mut self, b: &[u8; EVENT_SIZE]) -> Result<(), TraceError> {
        self.write(&StreamItem::Event(decode_event(b)))
    }
    /// Hands everything written so far to the file (a v2 trace closes its
    /// open block). A live pipeline calls it about once a second, which
    /// bounds what a killed recorder loses.
    fn flush(&mut self) -> Result<(), TraceError> {
        Ok(())
    }
    /// Bytes written so far.
    fn bytes(&self) -> u64;
    fn path(&self) -> &Path;
    /// Writes the footer. Called once, when the stream ends.
    fn finish(self: Box<Self>, reason: &str) -> Result<TraceSummary, TraceError>;
}

/// A trace file (`record -o`, `live --record`), rotated when given a
/// policy, its kernel addresses redacted when given a [`Redactor`].
pub struct TraceRecorder {
    writer: RotatingWriter,
    redact: Option<Redactor>,
}

impl TraceRecorder {
    /// Starts the file (replacing it and segments an earlier capture left
    /// under the same name). Without `rotation` it is one file.
    pub fn create(
        path: &Path,
        header: &TraceHeader,
        rotation: Option<RotationPolicy>,
    ) -> Result<Self, TraceError> {
        Self::create_with(path, header, rotation, None)
    }

    /// As [`create`](Self::create); with `redact`, the header and every
    /// event are redacted as they are written (`--redact`).
    pub fn create_with(
        path: &Path,
        header: &TraceHeader,
        rotation: Option<RotationPolicy>,
        redact: Option<Redactor>,
    ) -> Result<Self, TraceError> {
        Self::create_format(path, header, rotation, redact, TraceFormat::default())
    }

    /// As [`create_with`](Self::create_with), in the given trace format
    /// (`--trace-format`).
    pub fn create_format(
        path: &Path,
        header: &TraceHeader,
        rotation: Option<RotationPolicy>,
        redact: Option<Redactor>,
        format: TraceFormat,
    ) -> Result<Self, TraceError> {
        let policy = rotation.unwrap_or(RotationPolicy {
            max_bytes: u64::MAX,
            keep: 1,
        });
        let writer = match &redact {
            Some(r) => RotatingWriter::create_format(path, &r.header(header), policy, format)?,
            None => RotatingWriter::create_format(path, header, policy, format)?,
        };
        Ok(TraceRecorder { writer, redact })
    }
}

impl TraceRecorder {
    /// Finishes the file being written (footer) and starts the next
    /// segment at the same path ([`RotatingWriter::rotate_now`]).
    pub fn start_next_segment(&mut self) -> Result<(), TraceError> {
        self.writer.rotate_now()
    }

    /// Writes what is buffered to the file.
    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.writer.flush()
    }
}

impl Recorder for TraceRecorder {
    #[inline]
    fn write(&mut self, item: &StreamItem) -> Result<(), TraceError> {
        match &self.redact {
            Some(r) => self.writer.write_item(&r.item(item)),
            None => self.writer.write_item(item),
        }
    }

    fn accepts_raw(&self) -> bool {
        true
    }

    #[inline]
    fn write_raw(&mut self, b: &[u8; EVENT_SIZE]) -> Result<(), TraceError> {
        match &self.redact {
            Some(r) => self.writer.write_event_bytes(&r.event_bytes(b)),
            None => self.writer.write_event_bytes(b),
        }
    }

    fn flush(&mut self) -> Result<(), TraceError> {
        self.writer.flush()
    }

    fn bytes(&self) -> u64 {
        self.writer.bytes_written()
    }

    fn path(&self) -> &Path {
        self.writer.path()
    }

    fn finish(self: Box<Self>, reason: &str) -> Result<TraceSummary, TraceError> {
        self.writer.finish(TraceEnd::now(reason))
    }
}
