//! `detector replay FILE`: analyze a trace file offline (no root, no BPF).

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::analyzer::{Analyzer, Config, Severity};
use crate::event::StreamItem;
use crate::output::{write_jsonl, write_text};
use crate::report::Report;
use crate::trace::TraceReader;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Summary, findings with evidence, window histograms.
    Report,
    /// The whole report as one JSON document.
    Json,
    /// Decoded events, one per line (no analysis).
    Text,
    /// Decoded events as JSON lines (no analysis).
    Jsonl,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOn {
    Violation,
    NearMiss,
    Never,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trace file written by `detector record` or `detector simulate`.
    pub file: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Report)]
    pub format: Format,
    /// Exit with status 1 when a finding at or above this severity exists.
    #[arg(long, value_enum, default_value_t = FailOn::Violation)]
    pub fail_on: FailOn,
    /// Most objects the analyzer tracks before evicting dead ones.
    #[arg(long)]
    pub max_tracked: Option<usize>,
    /// swapcache_prepare -EEXIST answers per entry that make a storm.
    #[arg(long)]
    pub eexist_threshold: Option<u32>,
}

impl Args {
    pub fn config(&self) -> Config {
        let mut c = Config::default();
        if let Some(n) = self.max_tracked {
            c.max_tracked = n.max(16);
        }
        if let Some(n) = self.eexist_threshold {
            c.eexist_threshold = n.max(1);
        }
        c
    }
}

/// Runs the analyzer over a whole trace file and builds the report. A
/// truncated or damaged file is not an error: what was read is analyzed and
/// the report says where reading stopped.
pub fn analyze_file(path: &std::path::Path, cfg: Config) -> anyhow::Result<Report> {
    let mut reader = TraceReader::open(path)?;
    let mut analyzer = Analyzer::new(cfg);
    let mut findings = Vec::new();
    let (mut first, mut last) = (u64::MAX, 0u64);
    // Borrowed from the reader's decode slot: one copy per event, not two.
    while let Some((index, item)) = reader.next_ref() {
        if let StreamItem::Event(e) = item {
            first = first.min(e.ts_ns);
            last = last.max(e.ts_ns);
        }
        analyzer.process(index, item, &mut findings);
    }
    analyzer.finish(&mut findings);
    if first == u64::MAX {
        first = 0;
    }
    Ok(Report::build(
        &path.display().to_string(),
        reader.header(),
        reader.end_state(),
        (first, last),
        &analyzer,
        findings,
    ))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match args.format {
        Format::Text | Format::Jsonl => {
            let mut reader = TraceReader::open(&args.file)?;
            let base = reader.header().start_monotonic_ns;
            while let Some((index, item)) = reader.next_item() {
                let r = if args.format == Format::Text {
                    write_text(&mut out, base, index, &item)
                } else {
                    write_jsonl(&mut out, index, &item)
                };
                if let Err(e) = r {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Ok(ExitCode::SUCCESS);
                    }
                    return Err(e).context("cannot write to standard output");
                }
            }
            let _ = out.flush();
            if let Some(end) = reader.end_state().filter(|e| !e.is_complete()) {
                eprintln!("detector: {}: {end}", args.file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Format::Report | Format::Json => {
            let report = analyze_file(&args.file, args.config())?;
            let r = if args.format == Format::Json {
                serde_json::to_writer_pretty(&mut out, &report)
                    .map_err(io::Error::other)
                    .and_then(|_| writeln!(out))
            } else {
                report.render(&mut out)
            };
            match r.and_then(|_| out.flush()) {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                    return Err(e).context("cannot write to standard output")
                }
                _ => {}
            }
            let failing = match args.fail_on {
                FailOn::Violation => report.count(Severity::Violation),
                FailOn::NearMiss => report.count(Severity::NearMiss),
                FailOn::Never => 0,
            };
            Ok(if failing > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
