//! Decoding helpers over the raw event ABI.
