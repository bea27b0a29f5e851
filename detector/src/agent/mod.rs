//! `detector agent`: the detector as a long-running service on every host
//! of a fleet (docs/agent.md).
//!
//! It is the same flow as `record` and `live`, one [`Pipeline`] over a
//! [`KernelSource`], with the service's ends:
//!
//! - [`config`]: the flags, the TOML file, and the effective configuration
//!   they make (flags over the file over the defaults);
//! - [`sink`]: the pipeline's sink, which composes the findings stream and
//!   the metrics, and passes SIGHUP on;
//! - [`jsonl`]: findings, heartbeats and lost-event notices as JSON lines,
//!   with the output's failure handling and reopening;
//! - [`recording`]: the optional continuous recording, a
//!   [`TraceRecorder`] that never stops the stream;
//! - [`metrics`]: the series (atomics the pipeline thread stores into
//!   between pulls) and their OpenMetrics / Prometheus text;
//! - [`http`]: `/metrics`, `/healthz` and `/readyz`;
//! - [`service`]: one run, from attaching to the stop signal.
//!
//! [`Pipeline`]: crate::stream::Pipeline
//! [`KernelSource`]: crate::stream::KernelSource
//! [`TraceRecorder`]: crate::stream::TraceRecorder

pub mod config;
pub mod http;
pub mod jsonl;
pub mod metrics;
pub mod recording;
pub mod service;
pub mod sink;

pub use config::{AgentArgs, AgentConfig, ConfigFile};
pub use metrics::AgentMetrics;
pub use service::{run, AgentError, RunSummary};
