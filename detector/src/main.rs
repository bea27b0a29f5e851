// The binary links all of the library's dependencies and uses only the
// library and the command line's; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
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
    /// Run as a service: findings as JSON lines, Prometheus metrics,
    /// optional continuous recording (docs/agent.md).
    Agent(cli::agent::Args),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Doctor(a) => cli::doctor::run(a),
        Command::Record(a) => cli::record::run(a),
        Command::Replay(a) => cli::replay::run(a),
        Command::Simulate(a) => cli::simulate::run(a),
        Command::Live(a) => cli::live::run(a),
        Command::Export(a) => cli::export::run(a),
        Command::Agent(a) => {
            let sub = matches.subcommand_matches("agent");
            let given =
                |id: &str| sub.and_then(|m| m.value_source(id)) == Some(ValueSource::CommandLine);
            cli::agent::run(a, &given)
        }
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
