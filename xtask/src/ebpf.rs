use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct Args {}

pub fn build(_a: &Args) -> Result<()> {
    bail!("build-ebpf is not available yet")
}
