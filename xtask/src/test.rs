//! `cargo xtask test`: every test tier, in the order CI runs them.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::ebpf;

#[derive(clap::Args)]
pub struct Args {
    /// Skip the real-kernel tests in QEMU (the slowest tier).
    #[arg(long)]
    pub no_vm: bool,
    /// Skip rustfmt and clippy.
    #[arg(long)]
    pub no_lint: bool,
}

fn cargo(args: &[&str]) -> Result<()> {
    println!("==> cargo {}", args.join(" "));
    let status = Command::new("cargo")
        .current_dir(ebpf::root())
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

pub fn run(a: &Args) -> Result<()> {
    // The userspace binary embeds the BPF object, so it is built first.
    ebpf::build(&ebpf::Args { debug: false })?;
    if !a.no_lint {
        cargo(&["fmt", "--all", "--check"])?;
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
    }
    // Unit, scenario, property, trace-format and TUI tests, plus the host
    // kernel's tracepoint mode (tests/host_*.rs, which need root).
    cargo(&["build", "--release", "-p", "detector", "-p", "workloads"])?;
    cargo(&["test", "--workspace"])?;
    if !a.no_vm {
        // Binaries were built above; every test on every kernel line.
        crate::vm::test(crate::vm::TestArgs {
            kernels: Vec::new(),
            tests: Vec::new(),
            keep: false,
            no_build: true,
        })?;
    }
    Ok(())
}
