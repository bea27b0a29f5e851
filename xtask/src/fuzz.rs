//! `cargo xtask fuzz`: every fuzz target of `fuzz/` (cargo-fuzz, nightly)
//! for a bounded time each, starting from the committed seeds; a crash
//! fails the run and names the input libFuzzer saved.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::ebpf;

/// Each target and the seed directory it starts from (relative to the
/// repository): the scenario corpus is its own seed set, so a scenario
/// added there is a seed too.
pub(crate) const TARGETS: &[(&str, &str)] = &[
    ("trace_reader", "fuzz/seeds/trace_reader"),
    ("trace_blocks", "fuzz/seeds/trace_blocks"),
    ("trace_header", "fuzz/seeds/trace_header"),
    ("scenario", "detector/scenarios"),
    ("replay", "fuzz/seeds/trace_reader"),
];

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Seconds per target (libFuzzer's -max_total_time).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only these targets (default: all).
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
}

/// What one target's run did.
pub(crate) struct Run {
    pub target: String,
    /// libFuzzer's "Done N runs in S second(s)", when it printed it.
    pub summary: String,
}

fn fuzz_dir() -> PathBuf {
    ebpf::root().join("fuzz")
}

/// `cargo +nightly ...` in the repository root, without the variables the
/// outer (stable) cargo sets for its own build.
fn nightly() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(ebpf::root())
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .arg("+nightly");
    cmd
}

/// Whether `cargo +nightly fuzz` can run here.
pub(crate) fn available() -> bool {
    nightly()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) fn run(a: &Args) -> Result<Vec<Run>> {
    if !available() {
        bail!(
            "cargo-fuzz is not installed for the nightly toolchain; `bash .ci/setup` installs it \
             (or `cargo install cargo-fuzz`)"
        );
    }
    let mut runs = Vec::new();
    for (target, seeds) in TARGETS {
        if !a.targets.is_empty() && !a.targets.iter().any(|t| t == target) {
            continue;
        }
        runs.push(run_target(target, seeds, a.seconds)?);
    }
    for r in &runs {
        let what = if r.summary.is_empty() {
            "finished"
        } else {
            &r.summary
        };
        println!("fuzz {}: {what}, no crash", r.target);
    }
    if runs.is_empty() {
        bail!(
            "no fuzz target matches {:?}; the targets are {}",
            a.targets,
            TARGETS.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(runs)
}

fn run_target(target: &str, seeds: &str, seconds: u64) -> Result<Run> {
    let dir = fuzz_dir();
    // New inputs go to the first directory (ignored by git); the seeds
    // are only read.
    let corpus = dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = ebpf::root().join(seeds);
    println!("==> cargo +nightly fuzz run {target} for {seconds}s");
    let mut child = nightly()
        .args(["fuzz", "run", "--fuzz-dir"])
        .arg(&dir)
        .arg(target)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // A hang or a runaway allocation is a finding too.
        .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo +nightly fuzz")?;
    let mut summary = String::new();
    let mut artifact = None;
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let line = line?;
            if line.starts_with("Done ") {
                summary = line.clone();
            }
            if let Some(rest) = line.split("Test unit written to ").nth(1) {
                artifact = Some(rest.trim().to_string());
            }
            // libFuzzer's progress lines are many; keep the ones that say
            // something happened.
            if !line.starts_with('#') || line.contains("DONE") {
                eprintln!("{line}");
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        match artifact {
            Some(a) => bail!(
                "fuzz target {target} crashed; the input is {a}: add it to detector/tests/ as a \
                 regression test, fix, and run `cargo xtask fuzz --targets {target}` again"
            ),
            None => bail!("fuzz target {target} failed ({status}); see its output above"),
        }
    }
    Ok(Run {
        target: target.to_string(),
        summary,
    })
}
