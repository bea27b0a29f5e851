//! Userspace side of the anonymous-memory race detector.
//!
//! Events flow from a source through one pipeline to the analyzer and the
//! sinks ([`stream`], [`sinks`]); how anything looks is [`present`]'s;
//! `docs/architecture.md` maps the modules and what each may depend on.
//! The analyzer is a pure library over [`Event`]s so that live capture and
//! offline replay run exactly the same code.
//!
//! [`Event`]: detector_common::Event

// Integration tests use it (the property tests); the unit tests link it
// all the same.
#[cfg(test)]
use proptest as _;
// The agent's host test scrapes its endpoints with it.
#[cfg(test)]
use ureq as _;

// Items are `pub` only when other crates (the binary, tests, xtask) use
// them (`unreachable_pub` in the workspace lints).

pub mod agent;
pub mod analyzer;
pub mod bpfstats;
pub mod btf;
pub mod cli;
pub mod event;
pub mod flight;
pub mod groups;
pub mod loader;
pub mod plan;
pub mod present;
pub mod scenario;
pub mod sinks;
pub mod stream;
pub mod synth;
pub mod trace;
pub mod tui;
pub mod usage;
