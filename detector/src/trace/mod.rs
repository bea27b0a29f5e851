//! Versioned binary trace file: writer, reader, rotation.
//!
//! Format v1, byte by byte, is described in `docs/trace-format.md`. In short:
//! an 16-byte preamble (magic, format version, header length), a checksummed
//! JSON header ([`TraceHeader`]), then framed records, each with its own
//! CRC32, and finally a footer record ([`TraceFooter`]) with counts. A file
//! cut off anywhere still replays every complete record; the reader says
//! where and why it stopped ([`EndState`]).

mod end;
mod error;
mod format;
mod header;
mod private;
mod reader;
mod redact;
mod rotate;
pub mod v2;
mod writer;

pub use end::EndState;
pub use error::TraceError;
pub use format::{
    decode_event, encode_event, event_probe, event_ts, BadTraceFormat, TraceFormat, FORMAT_VERSION,
    MAGIC, MAX_HEADER_LEN, MAX_RECORD_PAYLOAD, PREAMBLE_LEN, RECORD_CRC_LEN, RECORD_EVENT,
    RECORD_FOOTER, RECORD_HEADER_LEN, RECORD_LOST,
};
pub use header::{layout_from_map, layout_to_map, TraceFooter, TraceHeader};
pub use private::{create_private, PRIVATE_MODE};
pub use reader::{read_all, TraceReader};
pub use redact::{RedactError, Redactor};
pub use rotate::{existing_segments, segment_path, RotatingWriter, RotationPolicy};
pub use writer::{TraceEnd, TraceSummary, TraceWriter};
