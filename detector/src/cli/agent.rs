//! `detector agent`: the fleet service. The flags and the configuration
//! file are `agent::config`'s, the run is `agent::service`'s; this wires
//! the process's signals and logging to them.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context;

use crate::agent::{self, AgentConfig, ConfigFile};
use crate::cli::{logging, signals};

pub use crate::agent::AgentArgs as Args;

/// Runs the agent; `given` says which flags the command line gave (by
/// argument id), so that they, and only they, override the file.
pub fn run(args: Args, given: &dyn Fn(&str) -> bool) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(p) => ConfigFile::load(p)?,
        None => ConfigFile::default(),
    };
    let cfg = AgentConfig::merge(&args, &file, given).context("the configuration is not valid")?;
    if args.check_config {
        let mut out = std::io::stdout().lock();
        out.write_all(cfg.to_toml().as_bytes())
            .context("cannot write to standard output")?;
        return Ok(ExitCode::SUCCESS);
    }
    logging::init(cfg.log_level.filter(), cfg.capture.bpf_log.filter());
    signals::catch_stop_signals();
    signals::catch_reopen_signal();
    let summary = agent::run(&cfg, signals::caught, Box::new(signals::take_reopen))?;
    let f = summary.findings;
    match summary.failed {
        Some(e) => {
            log::error!("the capture stopped: {e}");
            Ok(ExitCode::from(1))
        }
        None => {
            log::info!(
                "{}: {} items, {} findings ({} violations, {} near misses, {} info); CPU since \
                 attach {:.2}s ({:.2} µs per item)",
                summary.stop,
                summary.items,
                f.total(),
                f.violation,
                f.near_miss,
                f.info,
                summary.cpu.as_secs_f64(),
                summary.cpu.as_secs_f64() * 1e6 / summary.items.max(1) as f64
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
