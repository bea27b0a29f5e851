//! Event formatting: text and JSON lines.
