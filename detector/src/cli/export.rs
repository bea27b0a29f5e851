//! `detector export`: a trace in formats other tools open, or a copy of it
//! with its kernel addresses redacted.

use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::sinks::{EventFormat, EventWriter, Redacting, TraceCopy};
use crate::stream::{FileSource, Pipeline, Source, Speed};
use crate::trace::{create_private, Redactor, TraceFormat};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Chrome trace-event JSON: open it in Perfetto UI or chrome://tracing.
    Perfetto,
    /// One JSON object per event or lost record.
    Jsonl,
    /// A trace file again (with --redact: a copy safe to share).
    Trace,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trace file written by `detector record` or `detector simulate`.
    pub file: PathBuf,
    /// Output file (created readable by its owner only).
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
    /// With --format trace: the format of the copy (v2, or v1 for tools
    /// that only read v1). Converting keeps every item exactly.
    #[arg(long, value_name = "v1|v2", default_value_t = TraceFormat::V2)]
    pub trace_format: TraceFormat,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut source = FileSource::open(&args.file, Speed::Max)?;
    let redact = args.redact.then(Redactor::new).transpose()?;
    let header = match &redact {
        Some(r) => r.header(source.header()),
        None => source.header().clone(),
    };
    let out = create_private(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let cannot = || format!("cannot write {}", args.output.display());
    let written = match args.format {
        Format::Perfetto | Format::Jsonl => {
            let format = if args.format == Format::Perfetto {
                EventFormat::Perfetto
            } else {
                EventFormat::Jsonl
            };
            let w = EventWriter::new(BufWriter::new(out), format, &header).with_context(cannot)?;
            let mut sink = Redacting::new(w, redact);
            Pipeline::new(&mut source)
                .run(&mut sink)
                .with_context(cannot)?;
            sink.inner.written
        }
        Format::Trace => {
            let name = args.output.display().to_string();
            let copy = TraceCopy::with_format(out, &header, name, args.trace_format)
                .with_context(cannot)?;
            let mut sink = Redacting::new(copy, redact);
            Pipeline::new(&mut source)
                .run(&mut sink)
                .with_context(cannot)?;
            let records = sink.inner.records();
            sink.inner
                .finish_file(source.end_state())
                .with_context(cannot)?;
            records
        }
    };
    eprintln!(
        "detector: wrote {written} records to {}{}",
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
