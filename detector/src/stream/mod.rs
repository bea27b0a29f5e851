//! The stream: where items come from, where they are recorded, and the one
//! loop that carries them through the analyzer to the sinks.
//!
//! ```text
//! Source ──► Recorder ──► Analyzer ──► Sink
//! (kernel,    (trace file,  (built by      (report, printer,
//!  file,       rotation,     analyzer_for)   the UI's model)
//!  channel)    raw bytes)
//! ```
//!
//! - [`source`]: the [`Source`] trait and what a pull hands over.
//! - [`kernel`]: the running kernel ([`capture`] reads its ring buffer);
//!   [`channel`]: the same from a capture thread; [`file`]: trace files.
//! - [`recorder`]: trace files, rotated or not, and the zero-copy path.
//! - [`analysis`]: where the analyzer's configuration comes from, and the
//!   one function that builds an analyzer for a stream.
//! - [`pipeline`]: the loop, and the [`Sink`] trait.

pub mod analysis;
pub mod capture;
pub mod channel;
pub mod file;
pub mod kernel;
pub mod pipeline;
pub mod recorder;
pub mod source;

pub use analysis::{analyzer_for, AnalyzerSetup, Base, ConfigChoice, Overrides};
pub use channel::{spawn_capture, CaptureMsg, ChannelSource, CostSlot};
pub use file::{FileSource, Speed};
pub use kernel::KernelSource;
pub use pipeline::{Ctx, End, OnRecordError, Outcome, Pipeline, PipelineError, Sink, FLUSH_EVERY};
pub use recorder::{Recorder, TraceRecorder};
pub use source::{Item, Pull, Source, SourceError, SourceInfo, BATCH};
