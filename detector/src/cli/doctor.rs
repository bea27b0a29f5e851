//! `detector doctor`: what the running kernel lets the detector see.

use std::process::ExitCode;

use crate::btf::KernelBtf;
use crate::loader::{self, AttachPolicy, LoadOptions};
use crate::plan::AttachMode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Attach modes to try (auto: fentry, then kprobe, then tracepoints).
    #[arg(long, value_enum, default_value_t = AttachPolicy::Auto)]
    pub attach: AttachPolicy,
    /// Also print the struct offsets and flag bits resolved from BTF.
    #[arg(long)]
    pub layout: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel: {}", release.trim());
    loader::preflight()?;
    let btf = KernelBtf::open_vmlinux()?;
    let (mut layout, notes) = btf.layout()?;
    layout.vmemmap_base_sym = loader::vmemmap_base_symbol();
    println!("BTF: {} (struct folio resolved)", crate::btf::VMLINUX_BTF);
    for (name, v) in crate::trace::layout_to_map(&layout) {
        let absent = v == detector_common::ABSENT as u64;
        if absent {
            println!("  note: {name} is not on this kernel");
        } else if args.layout {
            println!("  {name:<24} {v:#x}");
        }
    }
    for n in &notes {
        println!("  note: {n}");
    }

    // Attaching for real is the only honest answer: the kernel may refuse a
    // program type, a function may be notrace or inlined away.
    let loaded = loader::load(&LoadOptions {
        policy: args.attach,
        ..LoadOptions::default()
    })?;
    println!();
    println!(
        "{:<22} {:<12} {:<30} {:<6} note",
        "probe", "attached", "kernel target", "hooks"
    );
    for p in &loaded.plan {
        let hooks = match (p.entry, p.exit) {
            (true, true) => "in+out",
            (true, false) => "in",
            (false, true) => "out",
            (false, false) => "-",
        };
        println!(
            "{:<22} {:<12} {:<30} {:<6} {}",
            p.probe,
            p.mode.as_str(),
            if p.target.is_empty() { "-" } else { &p.target },
            hooks,
            p.note
        );
    }
    let count = |m: AttachMode| loaded.plan.iter().filter(|p| p.mode == m).count();
    println!();
    println!(
        "{} fentry/fexit, {} kprobe, {} tracepoint, {} unavailable",
        count(AttachMode::Fentry),
        count(AttachMode::Kprobe),
        count(AttachMode::Tracepoint),
        count(AttachMode::Unavailable)
    );
    if let Some(s) = loader::degraded_statement(&loaded.plan) {
        println!("{s}");
    }
    Ok(ExitCode::SUCCESS)
}
