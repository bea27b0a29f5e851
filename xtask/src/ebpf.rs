//! Builds the BPF object and puts it where `detector/build.rs` embeds it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Build without optimizations (the verifier may reject the result).
    #[arg(long)]
    pub debug: bool,
}

/// Workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where the embedded object is expected by `detector/build.rs`.
pub fn object_path() -> PathBuf {
    root().join("target/bpf/detector.bpf.o")
}

pub fn build(a: &Args) -> Result<()> {
    let dir = root().join("detector-ebpf");
    let profile = if a.debug { "debug" } else { "release" };
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&dir)
        // The stable toolchain's variables would otherwise leak into the
        // nightly build (RUSTC, the rustup toolchain pin).
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .args(["+nightly", "build", "--ignore-rust-version"]);
    if !a.debug {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .context("running `cargo +nightly build` for the BPF programs")?;
    if !status.success() {
        bail!(
            "building the BPF programs failed; they need the nightly toolchain with rust-src \
             and bpf-linker (`bash .ci/setup` installs both)"
        );
    }
    let built = dir
        .join("target/bpfel-unknown-none")
        .join(profile)
        .join("detector");
    let out = object_path();
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(&built, &out)
        .with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
    println!("BPF object: {}", out.display());
    Ok(())
}
