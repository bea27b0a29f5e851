//! `detector export`: a trace in formats other tools open, or a copy of it
//! with its kernel addresses redacted. The Parquet export also runs the
//! analyzer, as `replay` does, and writes its findings beside the events.

use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::args::AnalyzerArgs;
use crate::sinks::{EventFormat, EventWriter, Redacting, TraceCopy};
use crate::stream::{FileSource, Overrides, Pipeline, Source, Speed};
use crate::trace::{create_private, Redactor, TraceFormat};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Chrome trace-event JSON: open it in Perfetto UI or chrome://tracing.
    Perfetto,
    /// One JSON object per event or lost record.
    Jsonl,
    /// A trace file again (with --redact: a copy safe to share).
    Trace,
    /// A directory with events.parquet and findings.parquet (the analyzer
    /// runs as in `replay`): columns in docs/parquet.md.
    Parquet,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trace file written by `detector record` or `detector simulate`.
    pub file: PathBuf,
    /// Output file (created readable by its owner only); for parquet, a
    /// directory (created if missing) that receives events.parquet and
    /// findings.parquet.
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Perfetto)]
    pub format: Format,
    /// Replace kernel addresses (folios and other kernel pointers, frame
    /// numbers of present PTEs) with keyed pseudonyms, stable within the
    /// output and unrelated to any other file's; the header loses the
    /// kernel's layout addresses. User addresses, swap entries and tasks
    /// are kept. See docs/trace-format.md.
    #[arg(long)]
    pub redact: bool,
    /// Parquet: the capture_id column's value (default: 16 hex digits
    /// derived from the trace header, the same for every export of one
    /// capture).
    #[arg(long, value_name = "ID")]
    pub capture_id: Option<String>,
    /// Parquet: analyzer settings; each one given overrides the trace
    /// header's, as for `replay`.
    #[command(flatten)]
    pub analyzer: AnalyzerArgs,
    /// With --format trace: the format of the copy (v2, or v1 for tools
    /// that only read v1). Converting keeps every item exactly.
    #[arg(long, value_name = "v1|v2", default_value_t = TraceFormat::V2)]
    pub trace_format: TraceFormat,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let overrides = args.analyzer.overrides();
    if args.format != Format::Parquet {
        if overrides != Overrides::default() {
            anyhow::bail!(
                "the analyzer settings only apply to --format parquet (the other formats write \
                 events, not findings): drop them or export as parquet"
            );
        }
        if args.capture_id.is_some() {
            anyhow::bail!("--capture-id only applies to --format parquet: drop it");
        }
    }
    let mut source = FileSource::open(&args.file, Speed::Max)?;
    let redact = args.redact.then(Redactor::new).transpose()?;
    let header = match &redact {
        Some(r) => r.header(source.header()),
        None => source.header().clone(),
    };
    let cannot = || format!("cannot write {}", args.output.display());
    let create = || {
        create_private(&args.output)
            .with_context(|| format!("cannot create {}", args.output.display()))
    };
    let written = match args.format {
        Format::Perfetto | Format::Jsonl => {
            let format = if args.format == Format::Perfetto {
                EventFormat::Perfetto
            } else {
                EventFormat::Jsonl
            };
            let w = EventWriter::new(BufWriter::new(create()?), format, &header)
                .with_context(cannot)?;
            let mut sink = Redacting::new(w, redact);
            Pipeline::new(&mut source)
                .run(&mut sink)
                .with_context(cannot)?;
            format!("{} records", sink.inner.written)
        }
        Format::Trace => {
            let name = args.output.display().to_string();
            let copy = TraceCopy::with_format(create()?, &header, name, args.trace_format)
                .with_context(cannot)?;
            let mut sink = Redacting::new(copy, redact);
            Pipeline::new(&mut source)
                .run(&mut sink)
                .with_context(cannot)?;
            let records = sink.inner.records();
            sink.inner
                .finish_file(source.end_state())
                .with_context(cannot)?;
            format!("{records} records")
        }
        Format::Parquet => parquet(&args, overrides, &mut source, &header, redact)?,
    };
    eprintln!(
        "detector: wrote {written} to {}{}",
        args.output.display(),
        if args.redact {
            " (kernel addresses redacted)"
        } else {
            ""
        }
    );
    if let Some(end) = source.end_state() {
        if !end.is_complete() {
            eprintln!("detector: {end}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Events and findings as Parquet files in `args.output`; what was written.
#[cfg(feature = "parquet")]
fn parquet(
    args: &Args,
    overrides: Overrides,
    source: &mut FileSource,
    header: &crate::trace::TraceHeader,
    redact: Option<Redactor>,
) -> anyhow::Result<String> {
    let setup = crate::stream::ConfigChoice::FromTrace(overrides).setup(source);
    let mut sink = crate::sinks::ParquetExport::create(
        &args.output,
        header,
        &setup,
        args.capture_id.clone(),
        redact,
    )
    .with_context(|| format!("cannot write Parquet files in {}", args.output.display()))?;
    let cannot = || format!("cannot write {}", args.output.display());
    Pipeline::new(source)
        .analyze(&setup)
        .run(&mut sink)
        .with_context(cannot)?;
    let n = sink.commit().with_context(cannot)?;
    Ok(format!(
        "{} events, {} lost-event records and {} findings",
        n.events, n.lost_records, n.findings
    ))
}

#[cfg(not(feature = "parquet"))]
fn parquet(
    _: &Args,
    _: Overrides,
    _: &mut FileSource,
    _: &crate::trace::TraceHeader,
    _: Option<Redactor>,
) -> anyhow::Result<String> {
    anyhow::bail!(
        "this detector was built without Parquet support: rebuild it with the default features \
         (cargo feature `parquet`)"
    )
}
