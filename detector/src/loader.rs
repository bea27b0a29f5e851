//! Loads the BPF object, resolves the probe plan and attaches it.
