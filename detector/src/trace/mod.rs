//! Versioned binary trace file: writer, reader, rotation.
