use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct TestArgs {}

#[derive(clap::Args)]
pub struct RunArgs {}

pub fn test(_a: TestArgs) -> Result<()> {
    bail!("vm-test is not available yet")
}

pub fn run(_a: RunArgs) -> Result<()> {
    bail!("vm is not available yet")
}
