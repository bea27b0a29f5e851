//! `cargo xtask vm-test` and `cargo xtask vm`: boot Debian kernels under
//! QEMU TCG with the detector and the workloads in an initramfs.
//!
//! Layout under `target/vm/<kernel>/`: `kernels/<package>/` (the unpacked
//! Debian package, kept between runs), `stage/` (the initramfs tree), and one
//! directory per test with `console.log`, `out/` (what the guest sent back)
//! and, with `--keep`, the disk images and the initramfs.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

// The helpers live next to this file; declared here so the dispatcher in
// main.rs only needs `mod vm;`.
mod vm_agent;
mod vm_check;
mod vm_findings;
pub(crate) mod vm_guest;
pub(crate) mod vm_image;
pub(crate) mod vm_inject;
pub(crate) mod vm_kernel;
pub(crate) mod vm_qemu;
pub(crate) mod vm_tally;
pub(crate) mod vm_tests;
mod vm_trace;

use vm_check::Verdict;
use vm_guest::GuestRun;
use vm_image::Stage;
use vm_kernel::KernelLine;
use vm_qemu::Boot;
use vm_tests::TESTS;

/// Which (test, kernel line) pairs `vm-test` runs when `--kernel` does not
/// name the lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Matrix {
    /// What CI runs: every test on one line, a smoke set on the others
    /// (`VmTest::ci`, see docs/vm-tests.md).
    #[default]
    Ci,
    /// Every test on every line it applies to.
    Full,
}

#[derive(clap::Args)]
pub(crate) struct TestArgs {
    /// Kernel line(s) to test; default: the lines `--matrix` selects.
    /// Naming lines runs every selected test on each of them.
    #[arg(long = "kernel", value_enum, num_args = 1..)]
    pub(crate) kernels: Vec<KernelLine>,
    /// `ci` (default): the CI selection; `full`: every test on every line.
    #[arg(long, value_enum, default_value_t = Matrix::Ci)]
    pub(crate) matrix: Matrix,
    /// Run only these tests (default: all). `--test list` prints the names.
    #[arg(long = "test", num_args = 1..)]
    pub(crate) tests: Vec<String>,
    /// Keep disk images and the initramfs of each test.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Use the binaries already in target/release instead of building them.
    #[arg(long)]
    pub(crate) no_build: bool,
}

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// Kernel line to boot.
    #[arg(long = "kernel", value_enum, default_value = "6.12")]
    pub(crate) kernel: KernelLine,
    /// A workload to run in the background (inside the `wl` cgroup) while
    /// the detector runs, e.g. `--workload "swap-hog --mib 200"`.
    #[arg(long)]
    pub(crate) workload: Option<String>,
    /// `memory.max` of the workload cgroup.
    #[arg(long, default_value = "64M")]
    pub(crate) memory_max: String,
    /// Size of the swap disk in MiB (a tiny one recycles freed slots at once).
    #[arg(long, default_value_t = SWAP_DISK_MIB)]
    pub(crate) swap_mib: u64,
    /// Guest wall-clock limit in seconds.
    #[arg(long, default_value_t = 900)]
    pub(crate) timeout: u64,
    /// Use the binaries already in target/release instead of building them.
    #[arg(long)]
    pub(crate) no_build: bool,
    /// Arguments for `detector` inside the guest (after `--`). Files written
    /// under /out come back to target/vm/<kernel>/run/out/.
    #[arg(last = true, required = true)]
    pub(crate) detector_args: Vec<String>,
}

/// Guest RAM (the brief's QEMU line; the cgroup, not RAM, makes the pressure).
const GUEST_MEMORY: &str = "512M";
// Small enough that the allocator wraps and reuses freed entries within a
// run (the free->realloc window), large enough for every workload.
const SWAP_DISK_MIB: u64 = 256;
const OUT_DISK_MIB: u64 = 4096;
const DATA_DISK_MIB: u64 = 64;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn vm_root(ws: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"))
        .join("vm")
}

fn binaries(ws: &Path, no_build: bool) -> Result<vm_image::Binaries> {
    if no_build {
        let target = vm_root(ws)
            .parent()
            .map(|p| p.join("release"))
            .context("target dir")?;
        let mut workloads = Vec::new();
        for e in fs::read_dir(ws.join("workloads/src/bin"))? {
            if let Some(stem) = e?.path().file_stem().and_then(|s| s.to_str()) {
                workloads.push(target.join(stem));
            }
        }
        return Ok(vm_image::Binaries {
            detector: target.join("detector"),
            workloads,
        });
    }
    vm_image::build_binaries(ws)
}

/// Boots one guest in `dir` and returns the outcome plus where its results are.
pub(crate) struct Prepared {
    pub(crate) stage: Stage,
    pub(crate) kernel: vm_kernel::Kernel,
}

pub(crate) fn prepare(ws: &Path, line: KernelLine, bins: &vm_image::Binaries) -> Result<Prepared> {
    let root = vm_root(ws);
    let kernel = vm_kernel::fetch(line, &root)?;
    let modules = kernel.modules(&vm_guest::all_modules())?;
    let stage = Stage::create(&root.join(line.as_str()).join("stage"), bins, &modules)?;
    Ok(Prepared { stage, kernel })
}

pub(crate) struct BootDir {
    pub(crate) dir: PathBuf,
    /// swap (/dev/vda), results (/dev/vdb, ext2), data (/dev/vdc).
    pub(crate) disks: Vec<PathBuf>,
    pub(crate) initrd: PathBuf,
}

pub(crate) fn boot_dir(dir: &Path) -> Result<BootDir> {
    boot_dir_with_swap(dir, SWAP_DISK_MIB)
}

pub(crate) fn boot_dir_with_swap(dir: &Path, swap_mib: u64) -> Result<BootDir> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    fs::create_dir_all(dir)?;
    let disks = vec![
        dir.join("swap.img"),
        dir.join("out.img"),
        dir.join("data.img"),
    ];
    vm_qemu::sparse_disk(&disks[0], swap_mib)?;
    vm_qemu::results_disk(&disks[1], OUT_DISK_MIB)?;
    vm_qemu::sparse_disk(&disks[2], DATA_DISK_MIB)?;
    Ok(BootDir {
        dir: dir.to_path_buf(),
        disks,
        initrd: dir.join("initrd.cpio"),
    })
}

fn cleanup(b: &BootDir) {
    for p in b.disks.iter().chain(std::iter::once(&b.initrd)) {
        let _ = fs::remove_file(p);
    }
}

fn selected_tests(names: &[String]) -> Result<Vec<&'static vm_tests::VmTest>> {
    if names.iter().any(|n| n == "list") {
        for t in TESTS {
            let ks: Vec<_> = t
                .kernels
                .iter()
                .map(|k| {
                    if t.ci.contains(k) {
                        format!("{}*", k.as_str())
                    } else {
                        k.as_str().to_string()
                    }
                })
                .collect();
            println!("{:<16} [{}] {}", t.name, ks.join(", "), t.about);
        }
        println!("(* = run by CI, `--matrix ci`; `--matrix full` runs every line listed)");
        return Ok(Vec::new());
    }
    if names.is_empty() {
        return Ok(TESTS.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            TESTS.iter().find(|t| t.name == n).with_context(|| {
                let all: Vec<_> = TESTS.iter().map(|t| t.name).collect();
                format!("no VM test named {n:?}; the tests are: {}", all.join(", "))
            })
        })
        .collect()
}

/// What a `vm-test` run ended with when nothing failed.
pub(crate) struct Outcome {
    pub(crate) passed: usize,
    /// `kernel/test` labels of the tests that were skipped, with why.
    pub(crate) skipped: Vec<String>,
}

/// Runs the selected VM tests; returns how many passed and which were
/// skipped (or an error saying how many failed).
pub(crate) fn test(args: TestArgs) -> Result<Outcome> {
    let ws = workspace_root();
    let tests = selected_tests(&args.tests)?;
    if tests.is_empty() {
        return Ok(Outcome {
            passed: 0,
            skipped: Vec::new(),
        });
    }
    let runs = select_runs(&tests, &args.kernels, args.matrix);
    let mut lines: Vec<KernelLine> = runs.iter().map(|(l, _)| *l).collect();
    lines.dedup();
    let suite_start = Instant::now();
    let mut results: Vec<(String, Verdict, Duration)> = Vec::new();
    // `VM_TEST_RECHECK=1`: do not boot, re-run the host-side checks on the
    // results an earlier run left in target/vm/<kernel>/<test>/out (after an
    // analyzer change). An environment switch rather than a flag keeps
    // `TestArgs` stable for callers that build it directly.
    if std::env::var_os("VM_TEST_RECHECK").is_some_and(|v| v == "1") {
        for line in lines {
            for t in runs.iter().filter(|(l, _)| *l == line).map(|(_, t)| *t) {
                let label = format!("{}/{}", line.as_str(), t.name);
                let out = vm_root(&ws).join(line.as_str()).join(t.name).join("out");
                let start = Instant::now();
                let verdict = if out.is_dir() {
                    vm_check::check(t, line, &out)
                } else {
                    Verdict::error(format!("no earlier results in {}", out.display()))
                };
                verdict.print(&label, start.elapsed());
                results.push((label, verdict, start.elapsed()));
            }
        }
        return summarize(&results, suite_start.elapsed());
    }
    let bins = binaries(&ws, args.no_build)?;
    for line in lines {
        let prep = prepare(&ws, line, &bins)?;
        println!("== kernel {} ({})", line.as_str(), prep.kernel.describe());
        for t in runs.iter().filter(|(l, _)| *l == line).map(|(_, t)| *t) {
            let label = format!("{}/{}", line.as_str(), t.name);
            println!("-- {label}: {}", t.about);
            let start = Instant::now();
            let verdict = run_test(&ws, &prep, t, args.keep)
                .unwrap_or_else(|e| Verdict::error(format!("{e:#}")));
            let took = start.elapsed();
            verdict.print(&label, took);
            results.push((label, verdict, took));
        }
    }
    summarize(&results, suite_start.elapsed())
}

/// The (line, test) pairs to run, in line order: the named lines (every
/// selected test that applies to them), else what `matrix` selects.
fn select_runs(
    tests: &[&'static vm_tests::VmTest],
    kernels: &[KernelLine],
    matrix: Matrix,
) -> Vec<(KernelLine, &'static vm_tests::VmTest)> {
    let mut runs = Vec::new();
    for &line in KernelLine::EVERY {
        for &t in tests {
            let chosen = if kernels.is_empty() {
                match matrix {
                    Matrix::Ci => t.ci.contains(&line),
                    Matrix::Full => t.kernels.contains(&line),
                }
            } else {
                kernels.contains(&line) && t.kernels.contains(&line)
            };
            if chosen {
                runs.push((line, t));
            }
        }
    }
    runs
}

fn summarize(results: &[(String, Verdict, Duration)], wall: Duration) -> Result<Outcome> {
    println!("\n== summary ({wall:.0?} wall)");
    let mut failed = 0;
    let mut passed = 0;
    let mut skipped = Vec::new();
    for (label, v, took) in results {
        println!(
            "{:<28} {:<5} {:>6.1?}  {:<26} {}",
            label,
            v.status(),
            took,
            v.kernel_release(),
            v.headline()
        );
        match (v.passed(), &v.skipped) {
            (false, _) => failed += 1,
            (true, Some(why)) => skipped.push(format!("{label} ({why})")),
            (true, None) => passed += 1,
        }
    }
    println!(
        "{passed} passed, {failed} failed, {} skipped{}",
        skipped.len(),
        if skipped.is_empty() { "" } else { ":" }
    );
    for s in &skipped {
        println!("  skipped: {s}");
    }
    if failed > 0 {
        bail!("{failed} of {} VM tests failed", results.len());
    }
    Ok(Outcome { passed, skipped })
}

fn run_test(ws: &Path, prep: &Prepared, t: &vm_tests::VmTest, keep: bool) -> Result<Verdict> {
    let line = prep.kernel.line;
    let b = boot_dir_with_swap(
        &vm_root(ws).join(line.as_str()).join(t.name),
        t.swap_mib.unwrap_or(SWAP_DISK_MIB),
    )?;
    let ring = t.ring_size.unwrap_or(vm_tests::RING_BYTES);
    let mut record = vec!["--ring-size".to_string(), ring.to_string()];
    if t.unfiltered {
        record.push("--unfiltered".to_string());
    }
    if let Some(mode) = t.attach {
        record.extend(["--attach".to_string(), mode.to_string()]);
    }
    if let Some(b) = t.setup.bpf_log {
        record.extend(["--bpf-log".to_string(), b.level.to_string()]);
        if b.selftest {
            record.push("--bpf-log-selftest".to_string());
        }
    }
    if let Some((size, keep)) = t.setup.rotate {
        record.extend([
            "--rotate-size".to_string(),
            size.to_string(),
            "--rotate-keep".to_string(),
            keep.to_string(),
        ]);
    }
    let run = GuestRun {
        swap: t.swap,
        memory_max: t.memory_max.to_string(),
        record: Some(record),
        workload: Some(
            t.workload
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        ),
        foreground: None,
        setup: t.setup,
    };
    prep.stage.pack(&vm_guest::init_script(&run), &b.initrd)?;
    let console_log = b.dir.join("console.log");
    let outcome = vm_qemu::boot(&Boot {
        vmlinuz: &prep.kernel.vmlinuz,
        initrd: &b.initrd,
        disks: b.disks.clone(),
        memory: GUEST_MEMORY,
        timeout: Duration::from_secs(t.timeout_secs),
        console_log: &console_log,
        echo: false,
        interactive: false,
    })?;
    let out_dir = b.dir.join("out");
    let verdict = if outcome.timed_out {
        Verdict::error(format!(
            "the guest did not finish within {}s (killed); console in {}",
            t.timeout_secs,
            console_log.display()
        ))
    } else if !outcome.finished() {
        Verdict::error(format!(
            "the guest stopped before writing its results; console in {}",
            console_log.display()
        ))
    } else {
        vm_qemu::extract_results(&b.disks[1], &out_dir)?;
        vm_check::check(t, line, &out_dir)
    };
    if !verdict.passed() {
        println!("---- console ({}) ----", console_log.display());
        let lines: Vec<&str> = outcome.console.lines().collect();
        let from = lines.len().saturating_sub(80);
        for l in &lines[from..] {
            println!("  | {l}");
        }
        println!("---- end of console ----");
    }
    if !keep {
        cleanup(&b);
    }
    Ok(verdict)
}

pub(crate) fn run(args: RunArgs) -> Result<()> {
    let ws = workspace_root();
    let bins = binaries(&ws, args.no_build)?;
    let prep = prepare(&ws, args.kernel, &bins)?;
    let b = boot_dir_with_swap(
        &vm_root(&ws).join(args.kernel.as_str()).join("run"),
        args.swap_mib,
    )?;
    let workload = match &args.workload {
        Some(w) => Some(
            shlex::split(w)
                .filter(|v| !v.is_empty())
                .with_context(|| format!("--workload {w:?} is not a valid command line"))?,
        ),
        None => None,
    };
    let run = GuestRun {
        swap: vm_tests::Swap::Disk,
        memory_max: args.memory_max.clone(),
        record: None,
        workload,
        foreground: Some(args.detector_args.clone()),
        setup: vm_tests::GuestSetup::PLAIN,
    };
    prep.stage.pack(&vm_guest::init_script(&run), &b.initrd)?;
    eprintln!(
        "vm: booting {} ({}) under QEMU TCG; the guest powers off when `detector` exits",
        args.kernel.as_str(),
        prep.kernel.describe()
    );
    let console_log = b.dir.join("console.log");
    let outcome = vm_qemu::boot(&Boot {
        vmlinuz: &prep.kernel.vmlinuz,
        initrd: &b.initrd,
        disks: b.disks.clone(),
        memory: GUEST_MEMORY,
        timeout: Duration::from_secs(args.timeout),
        console_log: &console_log,
        echo: true,
        interactive: true,
    })?;
    if outcome.timed_out {
        bail!(
            "the guest did not finish within {}s and was killed",
            args.timeout
        );
    }
    if !outcome.finished() {
        bail!(
            "the guest stopped before writing its results; console in {}",
            console_log.display()
        );
    }
    let out_dir = b.dir.join("out");
    vm_qemu::extract_results(&b.disks[1], &out_dir)?;
    cleanup(&b);
    let rc = fs::read_to_string(out_dir.join("detector.rc")).unwrap_or_default();
    eprintln!(
        "vm: results in {} (detector exit {})",
        out_dir.display(),
        rc.trim()
    );
    match rc.trim() {
        "0" => Ok(()),
        other => bail!("`detector` exited with status {other} in the guest"),
    }
}
