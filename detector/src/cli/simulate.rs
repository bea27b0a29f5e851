//! `detector simulate SCRIPT -o FILE`: compile a scenario script into a
//! real trace file (origin `simulate:<path>`), replayable like a capture.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::scenario::{self, Scenario};
use crate::trace::{TraceEnd, TraceHeader, TraceWriter};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Scenario script (see docs/scenarios.md).
    pub script: PathBuf,
    /// Trace file to write.
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn load(path: &Path) -> anyhow::Result<Scenario> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read scenario {}", path.display()))?;
    Ok(scenario::parse(&text, &path.display().to_string())?)
}

/// Writes the scenario's items as a trace file.
pub fn write_trace(sc: &Scenario, origin_path: &Path, out: &Path) -> anyhow::Result<()> {
    let mut header = TraceHeader::new(format!("simulate:{}", origin_path.display()));
    header.start_monotonic_ns = scenario::BASE_NS;
    header.kernel_release = "simulated".to_string();
    let mut w = TraceWriter::create(out, &header)
        .with_context(|| format!("cannot create trace {}", out.display()))?;
    for item in &sc.items {
        w.write_item(item)
            .with_context(|| format!("cannot write trace {}", out.display()))?;
    }
    let end_ns = sc
        .items
        .last()
        .map(crate::event::StreamItem::ts_ns)
        .unwrap_or(scenario::BASE_NS);
    w.finish(TraceEnd::at(end_ns, "end of scenario"))
        .with_context(|| format!("cannot finish trace {}", out.display()))?;
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sc = load(&args.script)?;
    write_trace(&sc, &args.script, &args.output)?;
    eprintln!(
        "detector: wrote {} item(s) of scenario `{}` to {}",
        sc.items.len(),
        sc.name,
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
