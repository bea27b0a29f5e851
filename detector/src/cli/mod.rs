//! Command-line surface: the clap definition of the whole command line
//! ([`Cli`]), one module per subcommand, each with an `Args` (clap) and a
//! `run` returning the process exit code; the flags several commands share
//! ([`args`]), the stop and reopen signals ([`signals`]) and the log
//! messages' form ([`logging`]).
//!
//! The definition lives in the library rather than the binary so that the
//! man pages and shell completions (`cargo xtask package`) are generated
//! from the very command line users type.

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

pub mod agent;
pub mod args;
pub mod doctor;
pub mod export;
pub mod live;
pub mod logging;
pub mod record;
pub mod replay;
pub mod signals;
pub mod simulate;

/// Race detector for Linux anonymous memory: watches the swap cache, swap
/// entries, folios, PTEs and GUP pins of the running kernel.
///
/// It attaches BPF probes to the unmodified running kernel (fentry/fexit,
/// else kprobes, else tracepoints) and reports, with the evidence, swap
/// entries reused under a UFFDIO_MOVE lookup (ABA), stale folio moves,
/// MADV_FREE reclaim racing direct I/O, refcount, mapcount and pin
/// invariants broken, and swap-cache pin contention. `doctor` shows what
/// this kernel allows. Watching the kernel (`doctor`, `record`, `live`)
/// needs CAP_BPF and CAP_PERFMON, or root; `replay`, `export`, `simulate`
/// and `live --replay` need no privilege.
#[derive(Parser, Debug)]
#[command(name = "detector", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// One variant per subcommand; its doc comment is the one-line help and
/// the man page's summary.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show how each probe would attach on this kernel, and why.
    Doctor(doctor::Args),
    /// Capture events from the running kernel into a trace file.
    Record(record::Args),
    /// Analyze a trace file (no root or BPF needed) and print findings.
    Replay(replay::Args),
    /// Compile a scenario script into a trace file.
    Simulate(simulate::Args),
    /// Live terminal UI (or `--replay FILE` to drive it from a trace).
    Live(live::Args),
    /// Convert a trace for other tools (Perfetto timeline, JSON lines).
    Export(export::Args),
    /// Run as a service: findings as JSON lines, Prometheus metrics,
    /// optional continuous recording (docs/agent.md).
    Agent(agent::Args),
}

impl Command {
    /// `matches` tells the agent which flags were typed (they override its
    /// configuration file; a default does not).
    fn run(self, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
        match self {
            Command::Doctor(a) => doctor::run(a),
            Command::Record(a) => record::run(a),
            Command::Replay(a) => replay::run(a),
            Command::Simulate(a) => simulate::run(a),
            Command::Live(a) => live::run(a),
            Command::Export(a) => export::run(a),
            Command::Agent(a) => {
                let sub = matches.subcommand_matches("agent");
                let given = |id: &str| {
                    sub.and_then(|m| m.value_source(id)) == Some(ValueSource::CommandLine)
                };
                agent::run(a, &given)
            }
        }
    }
}

/// Parses this process's command line (exiting with clap's message when it
/// is wrong), runs it and turns its outcome into the exit code: the
/// command's own, or 2 with the error on stderr as one line.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match cli.command.run(&matches) {
        Ok(code) => code,
        Err(e) => {
            // One sentence: the error chain joined, no backtrace.
            eprintln!("detector: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // clap's own checks (conflicting names, bad `requires`, ...), which
        // otherwise only fire when a user runs the faulty subcommand.
        Cli::command().debug_assert();
    }
}
