// The binary links all of the library's dependencies and uses only the
// library and the command line's; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use detector::cli;

/// Race detector for Linux anonymous memory: watches the swap cache, swap
/// entries, folios, PTEs and GUP pins of the running kernel.
#[derive(Parser)]
#[command(name = "detector", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show how each probe would attach on this kernel, and why.
    Doctor(cli::doctor::Args),
    /// Capture events from the running kernel into a trace file.
    Record(cli::record::Args),
    /// Analyze a trace file (no root or BPF needed) and print findings.
    Replay(cli::replay::Args),
    /// Compile a scenario script into a trace file.
    Simulate(cli::simulate::Args),
    /// Live terminal UI (or `--replay FILE` to drive it from a trace).
    Live(cli::live::Args),
    /// Convert a trace for other tools (Perfetto timeline, JSON lines).
    Export(cli::export::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor(a) => cli::doctor::run(a),
        Command::Record(a) => cli::record::run(a),
        Command::Replay(a) => cli::replay::run(a),
        Command::Simulate(a) => cli::simulate::run(a),
        Command::Live(a) => cli::live::run(a),
        Command::Export(a) => cli::export::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One sentence: the error chain joined, no backtrace.
            eprintln!("detector: {e:#}");
            ExitCode::from(2)
        }
    }
}
