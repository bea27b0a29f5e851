//! `detector export`: a trace in formats other tools open.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::sinks::{EventFormat, EventWriter};
use crate::stream::{FileSource, Pipeline, Source, Speed};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Chrome trace-event JSON: open it in Perfetto UI or chrome://tracing.
    Perfetto,
    /// One JSON object per event or lost record.
    Jsonl,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trace file written by `detector record` or `detector simulate`.
    pub file: PathBuf,
    /// Output file.
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Perfetto)]
    pub format: Format,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut source = FileSource::open(&args.file, Speed::Max)?;
    let out = File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let format = match args.format {
        Format::Perfetto => EventFormat::Perfetto,
        Format::Jsonl => EventFormat::Jsonl,
    };
    let cannot = || format!("cannot write {}", args.output.display());
    let mut sink =
        EventWriter::new(BufWriter::new(out), format, source.header()).with_context(cannot)?;
    Pipeline::new(&mut source)
        .run(&mut sink)
        .with_context(cannot)?;
    eprintln!(
        "detector: wrote {} records to {}",
        sink.written,
        args.output.display()
    );
    if let Some(end) = source.end_state() {
        if !end.is_complete() {
            eprintln!("detector: {end}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
