//! Project automation: `cargo xtask <command>`.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod ebpf;
mod test;
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
    /// Run every test tier: lint, unit/scenario/property, host, real-kernel VM.
    Test(test::Args),
    /// Benchmarks: overhead vs bpftrace, capacity, latency, per-probe cost, replay throughput.
    Bench(bench::Args),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::BuildEbpf(a) => ebpf::build(&a),
        Command::VmTest(a) => vm::test(a).map(|_| ()),
        Command::Vm(a) => vm::run(a),
        Command::Test(a) => test::run(&a),
        Command::Bench(a) => bench::run(&a),
    }
}
