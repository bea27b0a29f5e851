//! `detector export`: a trace in formats other tools open.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::present::events::write_jsonl;
use crate::present::perfetto::write_chrome_trace;
use crate::trace::TraceReader;

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
    let mut reader = TraceReader::open(&args.file)?;
    let header = reader.header().clone();
    let out = File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut w = BufWriter::new(out);
    let written = match args.format {
        Format::Perfetto => {
            write_chrome_trace(&mut w, &header, reader.by_ref().map(|(_, item)| item))
        }
        Format::Jsonl => {
            let mut n = 0u64;
            let mut r = Ok(());
            for (index, item) in reader.by_ref() {
                if let Err(e) = write_jsonl(&mut w, index, &item) {
                    r = Err(e);
                    break;
                }
                n += 1;
            }
            r.map(|()| n)
        }
    }
    .and_then(|n| w.flush().map(|()| n))
    .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "detector: wrote {written} records to {}",
        args.output.display()
    );
    if let Some(end) = reader.end_state() {
        if !end.is_complete() {
            eprintln!("detector: {end}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
