//! Builds the BPF object and puts it where `detector/build.rs` embeds it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Build without optimizations (the verifier may reject the result).
    #[arg(long)]
    pub debug: bool,
}

/// Workspace root (xtask lives one level below it).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where the embedded object is expected by `detector/build.rs`.
pub(crate) fn object_path() -> PathBuf {
    root().join("target/bpf/detector.bpf.o")
}

/// `cargo +nightly` in the BPF crate, with the stable toolchain's variables
/// removed (they would otherwise leak into the nightly build: RUSTC, the
/// rustup toolchain pin, the workspace target dir).
fn nightly(dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir)
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .arg("+nightly");
    cmd
}

/// rustfmt and clippy on the BPF crate, for its own target (bpfel, with
/// build-std as its `.cargo/config.toml` sets up, like `build`).
pub(crate) fn lint() -> Result<()> {
    let dir = root().join("detector-ebpf");
    for args in [
        &["fmt", "--check"][..],
        &[
            "clippy",
            "--release",
            "--ignore-rust-version",
            "--",
            "-D",
            "warnings",
        ][..],
    ] {
        println!("==> (detector-ebpf) cargo +nightly {}", args.join(" "));
        let status = nightly(&dir)
            .args(args)
            .status()
            .with_context(|| format!("running `cargo +nightly {}`", args[0]))?;
        if !status.success() {
            bail!(
                "`cargo +nightly {}` failed on detector-ebpf (see above); run it in detector-ebpf/ to fix",
                args.join(" ")
            );
        }
    }
    Ok(())
}

pub(crate) fn build(a: &Args) -> Result<()> {
    let dir = root().join("detector-ebpf");
    let profile = if a.debug { "debug" } else { "release" };
    let mut cmd = nightly(&dir);
    cmd.args(["build", "--ignore-rust-version"]);
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
    // The detector's build script reruns when the object's mtime changes:
    // an unchanged object is left alone, so that a warm tree does not
    // recompile the detector after every `build-ebpf`.
    let unchanged = match (std::fs::read(&built), std::fs::read(&out)) {
        (Ok(new), Ok(old)) => new == old,
        _ => false,
    };
    if !unchanged {
        std::fs::copy(&built, &out)
            .with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
    }
    println!("BPF object: {}", out.display());
    Ok(())
}
