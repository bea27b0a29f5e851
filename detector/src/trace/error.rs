//! Errors a trace file can produce before any record is read (or when
//! writing). Problems after the header are not errors: the reader replays
//! what it can and reports them as an [`EndState`](super::EndState).

use std::io;

/// Every message is one sentence naming the file, what is wrong and, where
/// there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    // The OS error is part of the sentence, not a separate source: an error
    // chain printer would otherwise repeat it.
    #[error("cannot {action} {name}: {error}")]
    Io {
        action: &'static str,
        name: String,
        error: io::Error,
    },
    #[error("{name} is empty; the recording stopped before it wrote its header")]
    Empty { name: String },
    #[error("{name} is not a detector trace (bad magic); was it written by `detector record`?")]
    BadMagic { name: String },
    #[error("{name} is {what}, not a detector trace; pass the file `detector record` wrote")]
    Foreign { name: String, what: &'static str },
    #[error(
        "{name} uses trace format v{found}, but this detector reads only up to v{supported}; \
         use a newer detector to read it"
    )]
    NewerVersion {
        name: String,
        found: u32,
        supported: u32,
    },
    #[error("{name} claims trace format v{found}, which never existed; the file is damaged")]
    BadVersion { name: String, found: u32 },
    #[error(
        "{name} ends inside its header ({have} of {need} bytes); the recording stopped before \
         any event was written"
    )]
    TruncatedHeader { name: String, have: u64, need: u64 },
    #[error("{name} has a damaged header ({reason}); the file cannot be replayed")]
    CorruptHeader { name: String, reason: String },
    #[error(
        "{name} was recorded with event ABI v{found} ({size}-byte events), but this detector \
         decodes ABI v1 to v{supported}; use a matching detector version"
    )]
    AbiMismatch {
        name: String,
        found: u32,
        size: u32,
        supported: u32,
    },
    #[error("cannot write trace {name}: the header does not serialise ({reason})")]
    Encode { name: String, reason: String },
    #[error("invalid rotation settings: {0}")]
    Rotation(String),
}

impl TraceError {
    pub(crate) fn io(action: &'static str, name: &str, source: io::Error) -> Self {
        TraceError::Io {
            action,
            name: name.to_string(),
            error: source,
        }
    }
}
