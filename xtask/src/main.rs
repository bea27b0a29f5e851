//! Project automation: `cargo xtask <command>`.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod ebpf;
mod fuzz;
mod kernel_build;
mod package;
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
    /// Build the fault-injected 6.12 test kernel (cached under target/kernel).
    BuildKernel(kernel_build::Args),
    /// Boot a Debian kernel under QEMU and run the real-kernel tests.
    VmTest(vm::TestArgs),
    /// Run any detector command inside the guest kernel.
    Vm(vm::RunArgs),
    /// Compare the 6.12-inject kernel's injection log with the detector's findings.
    InjectMatch(vm::vm_inject::MatchArgs),
    /// Run every test tier: lint, unit/scenario/property, host, real-kernel VM.
    Test(test::Args),
    /// Benchmarks: overhead vs bpftrace, capacity, latency, per-probe cost, replay throughput.
    Bench(bench::Args),
    /// Run the fuzz targets (cargo-fuzz, nightly) for a bounded time each.
    Fuzz(fuzz::Args),
    /// Build the Debian package (binary, man pages, completions, systemd unit).
    Package(package::Args),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::BuildEbpf(a) => ebpf::build(&a),
        Command::BuildKernel(a) => kernel_build::run(&a),
        Command::VmTest(a) => vm::test(a).map(|_| ()),
        Command::Vm(a) => vm::run(a),
        Command::InjectMatch(a) => vm::vm_inject::run_match(&a),
        Command::Test(a) => test::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Fuzz(a) => fuzz::run(&a).map(|_| ()),
        Command::Package(a) => package::run(&a),
    }
}
