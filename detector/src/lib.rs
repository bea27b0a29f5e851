//! Userspace side of the anonymous-memory race detector.
//!
//! One module per concern. The analyzer is a pure library over [`Event`]s so
//! that live capture and offline replay run exactly the same code.
//!
//! [`Event`]: detector_common::Event

pub mod analyzer;
pub mod bpfstats;
pub mod btf;
pub mod capture;
pub mod cli;
pub mod event;
pub mod groups;
pub mod loader;
pub mod plan;
pub mod present;
pub mod scenario;
pub mod synth;
pub mod trace;
pub mod tui;
