//! `detector doctor`: what the running kernel lets the detector see.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::bpfstats::CostMeter;
use crate::btf::KernelBtf;
use crate::event::StreamItem;
use crate::loader::{self, AttachPolicy, BpfLog, LoadOptions, Loaded};
use crate::plan::AttachMode;
use crate::present::costs::write_span;
use crate::stream::{Item, KernelSource, Source};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Attach modes to try (auto: fentry, then kprobe, then tracepoints).
    #[arg(long, value_enum, default_value_t = AttachPolicy::Auto)]
    pub attach: AttachPolicy,
    /// Also print the struct offsets and flag bits resolved from BTF.
    #[arg(long)]
    pub layout: bool,
    /// Then measure what each attached probe costs per event (the kernel's
    /// BPF run-time statistics) while the system runs.
    #[arg(long)]
    pub stats: bool,
    /// How long `--stats` measures, in seconds.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 3,
        requires = "stats",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub stats_seconds: u64,
    /// Also print each attached program's size as the kernel holds it
    /// (instructions after verification, JIT bytes) and how many
    /// instructions the verifier processed to accept it.
    #[arg(long)]
    pub programs: bool,
    /// Load the programs with their diagnostics on at this level (what
    /// `record --bpf-log` loads), to see that they verify on this kernel;
    /// with --stats, the reports that arrive are shown on stderr.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = BpfLog::Off)]
    pub bpf_log: BpfLog,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel: {}", release.trim());
    loader::preflight()?;
    let btf = KernelBtf::open_vmlinux()?;
    let (mut layout, notes) = btf.layout()?;
    loader::resolve_kernel_variables(&mut layout);
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
    crate::cli::logging::init(log::LevelFilter::Off, args.bpf_log.filter());
    let mut source = KernelSource::start(&LoadOptions {
        policy: args.attach,
        bpf_log: args.bpf_log,
        ..LoadOptions::default()
    })?;
    // The kernel gives program sizes only to a process with CAP_BPF or
    // CAP_SYS_ADMIN: read them first.
    let programs = args.programs.then(|| program_sizes(source.loaded()));
    // With --stats, statistics are turned on first (they need
    // CAP_SYS_ADMIN), then the capabilities go.
    if !args.stats {
        source.drop_privileges(None)?;
    }
    let loaded = source.loaded();
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
        let sep = if p.note.is_empty() || p.filter.is_empty() {
            ""
        } else {
            "; "
        };
        println!(
            "{:<22} {:<12} {:<30} {:<6} {}{sep}{}",
            p.probe,
            p.mode.as_str(),
            if p.target.is_empty() { "-" } else { &p.target },
            hooks,
            p.filter,
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
    if let Some(rows) = programs {
        println!();
        print_program_sizes(&rows, args.bpf_log);
    }
    if args.stats {
        println!();
        measure(&mut source, Duration::from_secs(args.stats_seconds))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One loaded program: name, instructions as loaded (after verification:
/// the verifier removes what it proved dead), JIT bytes, instructions the
/// verifier processed. `None` where this kernel does not say.
type ProgramSize = (String, Option<u32>, u32, Option<u32>);

fn program_sizes(loaded: &Loaded) -> Vec<ProgramSize> {
    let mut rows: Vec<ProgramSize> = loaded
        .ebpf
        .programs()
        .filter_map(|(name, p)| {
            // Programs of roles that attached elsewhere are never loaded.
            let info = p.info().ok()?;
            Some((
                name.to_string(),
                info.size_translated().map(|b| b / 8),
                info.size_jitted(),
                info.verified_instruction_count(),
            ))
        })
        .collect();
    rows.sort();
    rows
}

fn print_program_sizes(rows: &[ProgramSize], level: BpfLog) {
    use clap::ValueEnum as _;
    let level = level
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    println!("loaded programs (--bpf-log {level}):");
    println!(
        "{:<34} {:>8} {:>10} {:>10}",
        "program", "insns", "JIT bytes", "verified"
    );
    let opt = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let (mut insns, mut jited, mut verified) = (0u64, 0u64, 0u64);
    for (name, xlated, jit, ver) in rows {
        println!("{name:<34} {:>8} {jit:>10} {:>10}", opt(*xlated), opt(*ver));
        insns += u64::from(xlated.unwrap_or(0));
        jited += u64::from(*jit);
        verified += u64::from(ver.unwrap_or(0));
    }
    println!(
        "{:<34} {insns:>8} {jited:>10} {verified:>10}",
        format!("total ({} programs)", rows.len())
    );
}

/// Lets the attached probes run for `span` with BPF statistics on, then
/// prints what each cost.
fn measure(source: &mut KernelSource, span: Duration) -> anyhow::Result<()> {
    // Nobody else reads the ring here. Once full, every later run would
    // take the cheap "no room, count it lost" path and the table would
    // flatter the probes, so it is drained (and the events dropped). What
    // queued up since attaching is not part of the measured span.
    source.drain(true, &mut |_, _| {})?;
    let meter = CostMeter::start(source.loaded());
    source.drop_privileges(None)?;
    let mut out = std::io::stdout().lock();
    if meter.unavailable().is_some() {
        write_span(&mut out, &meter.span(source.loaded()))?;
        return Ok(());
    }
    writeln!(
        out,
        "measuring probe run time for {}s while the system runs...",
        span.as_secs()
    )?;
    out.flush()?;
    let lost_total = |s: &KernelSource| s.lost_totals().iter().sum::<u64>();
    let lost_before = lost_total(source);
    let mut delivered = 0u64;
    let mut count = |_: u64, item: Item<'_>| {
        delivered += u64::from(matches!(item, Item::Decoded(StreamItem::Event(_))));
    };
    let deadline = Instant::now() + span;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        source.pull(left.min(Duration::from_millis(10)), false, &mut count)?;
    }
    write_span(&mut out, &meter.span(source.loaded()))?;
    let dropped = lost_total(source).saturating_sub(lost_before);
    writeln!(
        out,
        "{delivered} events delivered during the measurement, {dropped} lost"
    )?;
    Ok(())
}
