//! How a trace file ended, as a reader found it.

use std::fmt;

use super::header::TraceFooter;

/// How a trace ended, known once iteration has stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndState {
    /// The footer was read and checks out: every record was replayed.
    Complete { footer: TraceFooter },
    /// The file stops without a footer (the recorder was killed, the disk
    /// filled up, or the file is still being written). Every record before
    /// `byte_offset` was replayed.
    Truncated { byte_offset: u64, records_read: u64 },
    /// Record `record_index`, starting at `byte_offset`, is damaged; the
    /// `record_index` records before it were replayed.
    Corrupt {
        byte_offset: u64,
        record_index: u64,
        reason: String,
    },
    /// Reading failed (an I/O error, not a problem with the content).
    ReadError {
        byte_offset: u64,
        records_read: u64,
        message: String,
    },
}

impl EndState {
    pub fn is_complete(&self) -> bool {
        matches!(self, EndState::Complete { .. })
    }

    /// The footer, when the trace is complete.
    pub fn footer(&self) -> Option<&TraceFooter> {
        match self {
            EndState::Complete { footer } => Some(footer),
            _ => None,
        }
    }
}

impl fmt::Display for EndState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndState::Complete { footer } => write!(
                f,
                "complete: {} records ({} events, {} lost), stopped by {}",
                footer.records,
                footer.events,
                footer.lost_total,
                if footer.stop_reason.is_empty() {
                    "an unknown reason"
                } else {
                    &footer.stop_reason
                }
            ),
            EndState::Truncated {
                byte_offset,
                records_read,
            } => write!(
                f,
                "truncated at byte {byte_offset} after {records_read} complete records \
                 (no footer: the recording was cut off or is still running)"
            ),
            EndState::Corrupt {
                byte_offset,
                record_index,
                reason,
            } => write!(
                f,
                "damaged record {record_index} at byte {byte_offset} ({reason}); \
                 the {record_index} records before it were replayed"
            ),
            EndState::ReadError {
                byte_offset,
                records_read,
                message,
            } => write!(
                f,
                "read error at byte {byte_offset} after {records_read} records: {message}"
            ),
        }
    }
}
