//! Project automation: `cargo xtask <command>`.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod ebpf;
mod vm;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the BPF object (nightly, build-std, bpf-linker).
    BuildEbpf(ebpf::Args),
    /// Boot a Debian kernel under QEMU and run the real-kernel tests.
    VmTest(vm::TestArgs),
    /// Run any detector command inside the guest kernel.
    Vm(vm::RunArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::BuildEbpf(a) => ebpf::build(&a),
        Command::VmTest(a) => vm::test(a),
        Command::Vm(a) => vm::run(a),
    }
}
