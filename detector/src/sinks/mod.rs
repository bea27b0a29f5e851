//! What the end of the [pipeline](crate::stream::pipeline) feeds: a
//! report ([`report`]), a grouped printer of findings ([`print`]), a
//! latency measurement around it ([`latency`]), the items themselves as
//! text, JSON lines or a Perfetto document ([`events`]), or a trace file,
//! redacted or not ([`copy`]), events and findings as Parquet files
//! ([`parquet`]). The live view's sink, which
//! updates its model, is the UI's worker (`crate::tui::worker`).

pub mod copy;
pub mod events;
pub mod latency;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod print;
pub mod report;

#[cfg(feature = "parquet")]
pub use self::parquet::{ExportCounts, ParquetExport};
pub use copy::{Redacting, TraceCopy};
pub use events::{EventFormat, EventWriter};
pub use latency::Latency;
pub use print::{FindingPrinter, PrintSummary, Style};
pub use report::{analyze_file, analyze_file_with_stats, AnalyzeError, ReplayStats, ReportSink};
