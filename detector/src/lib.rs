//! Userspace side of the anonymous-memory race detector.
//!
//! Events flow from a source through one pipeline to the analyzer and the
//! sinks ([`stream`], [`sinks`]); how anything looks is [`present`]'s;
//! `docs/architecture.md` maps the modules and what each may depend on.
//! The analyzer is a pure library over [`Event`]s so that live capture and
//! offline replay run exactly the same code.
//!
//! [`Event`]: detector_common::Event

// Every dependency is used by the library itself (the unit tests also link
// the dev-dependencies the integration tests use).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

// Items are `pub` only when other crates (the binary, tests, xtask) use
// them. Not yet for the modules others are editing (analyzer, plan, btf,
// scenario).

pub mod analyzer;
#[warn(unreachable_pub)]
pub mod bpfstats;
pub mod btf;
#[warn(unreachable_pub)]
pub mod cli;
#[warn(unreachable_pub)]
pub mod event;
#[warn(unreachable_pub)]
pub mod groups;
#[warn(unreachable_pub)]
pub mod loader;
pub mod plan;
#[warn(unreachable_pub)]
pub mod present;
pub mod scenario;
#[warn(unreachable_pub)]
pub mod sinks;
#[warn(unreachable_pub)]
pub mod stream;
#[warn(unreachable_pub)]
pub mod synth;
#[warn(unreachable_pub)]
pub mod trace;
#[warn(unreachable_pub)]
pub mod tui;
#[warn(unreachable_pub)]
pub mod usage;
