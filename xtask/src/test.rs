//! `cargo xtask test`: every test tier, in the order CI runs them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::ebpf;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Skip the real-kernel tests in QEMU (the slowest tier).
    #[arg(long)]
    pub no_vm: bool,
    /// Skip rustfmt and clippy.
    #[arg(long)]
    pub no_lint: bool,
    /// Skip the bounded fuzzing run (20 s per target).
    #[arg(long)]
    pub no_fuzz: bool,
}

fn cargo(args: &[&str]) -> Result<()> {
    println!("==> cargo {}", args.join(" "));
    let status = Command::new("cargo")
        .current_dir(ebpf::root())
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

/// Totals of `test result:` lines, for the closing summary.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    /// Ignored or skipped tests, by name (`target: test`), with the reason
    /// when one was given.
    skipped: Vec<String>,
}

/// The DuckDB release the Parquet export's host test queries with.
const DUCKDB: &str = "2.0.1";

/// A Python with DuckDB's package, for `detector/tests/host_duckdb.rs`: a
/// virtual environment under `target/duckdb-venv`, made once and kept
/// while it holds the pinned release (Debian's own Python is externally
/// managed: pip installs nothing into it).
fn duckdb_python() -> Result<PathBuf> {
    let venv = ebpf::root().join("target/duckdb-venv");
    let python = venv.join("bin/python");
    let check = format!("import duckdb, sys; sys.exit(duckdb.__version__ != '{DUCKDB}')");
    let ready = || {
        Command::new(&python)
            .args(["-c", &check])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready() {
        return Ok(python);
    }
    println!(
        "==> python3 -m venv {} && pip install duckdb=={DUCKDB}",
        venv.display()
    );
    let status = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .context("running python3 -m venv")?;
    if !status.success() {
        bail!(
            "cannot create the Python environment for the DuckDB test in {}: install python3-venv \
             (bash .ci/setup does)",
            venv.display()
        );
    }
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("duckdb=={DUCKDB}"))
        .status()
        .context("running pip")?;
    if !status.success() || !ready() {
        bail!(
            "cannot install duckdb=={DUCKDB} from PyPI into {}: check that PyPI is reachable",
            venv.display()
        );
    }
    Ok(python)
}

/// Runs `cargo test ...`, echoing its output and adding up its results.
fn cargo_test(args: &[&str], env: &[(&str, PathBuf)], totals: &mut Totals) -> Result<()> {
    println!("==> cargo {}", args.join(" "));
    let mut child = Command::new("cargo")
        .current_dir(ebpf::root())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if let Some(out) = child.stdout.take() {
        let mut target = String::new();
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some(t) = ignored_test(&line) {
                totals.skipped.push(format!("{target}: {t}"));
            }
            if let Some(rest) = line.trim_start().strip_prefix("Running ") {
                target = rest.split(" (").next().unwrap_or(rest).to_string();
            }
            if let Some(rest) = line.strip_prefix("test result: ") {
                for part in rest.split(';') {
                    let mut words = part.split_whitespace().rev();
                    let (Some(what), Some(n)) = (words.next(), words.next()) else {
                        continue;
                    };
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => totals.passed += n,
                        "failed" => totals.failed += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        println!(
            "{} passed, {} failed, {} skipped",
            totals.passed,
            totals.failed.max(1),
            totals.skipped.len()
        );
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

/// The name (and reason) of a test libtest reports as ignored:
/// `test path::name ... ignored` or `test path::name ... ignored, reason`.
fn ignored_test(line: &str) -> Option<String> {
    let rest = line.strip_prefix("test ")?;
    let (name, status) = rest.split_once(" ... ")?;
    let reason = status.strip_prefix("ignored")?;
    Some(match reason.strip_prefix(", ") {
        Some(r) => format!("{name} ({r})"),
        None => name.to_string(),
    })
}

pub(crate) fn run(a: &Args) -> Result<()> {
    // `VM_TEST_RECHECK=1` makes the VM tier re-check old results instead of
    // booting kernels: a green run would then prove nothing about this tree.
    if !a.no_vm && std::env::var_os("VM_TEST_RECHECK").is_some() {
        bail!(
            "VM_TEST_RECHECK is set: `cargo xtask test` would re-check earlier results instead of \
             running the real-kernel tests; unset it (or pass --no-vm)"
        );
    }
    // The userspace binary embeds the BPF object, so it is built first.
    ebpf::build(&ebpf::Args { debug: false })?;
    if !a.no_lint {
        ebpf::lint()?;
        cargo(&["fmt", "--all", "--check"])?;
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
    }
    // Unit, scenario, property, trace-format and TUI tests, plus the host
    // kernel's tracepoint mode (tests/host_*.rs, which need root).
    cargo(&["build", "--release", "-p", "detector", "-p", "workloads"])?;
    let mut totals = Totals::default();
    // The Parquet export's DuckDB test (tests/host_duckdb.rs) may not skip
    // here.
    let duckdb = duckdb_python()?;
    cargo_test(
        &["test", "--workspace"],
        &[
            ("DETECTOR_DUCKDB_PYTHON", duckdb),
            ("DETECTOR_REQUIRE_DUCKDB", PathBuf::from("1")),
        ],
        &mut totals,
    )?;
    // The Debian package of the release binary just built: its contents,
    // then (as root) installed with dpkg, run, its unit's capabilities and
    // system call filter tried, and removed again (docs/packaging.md).
    let deb = crate::package::build(&ebpf::root().join("target/package"), false)?;
    let pkg = crate::package::check::run(&deb)?;
    pkg.print();
    totals.passed += pkg.passed.len() as u64;
    totals.skipped.extend(pkg.skipped);
    if !a.no_fuzz {
        // Every fuzz target for 20 s from the committed seeds: a crash
        // fails the run. CI's 90 minutes also hold the kernel build and the
        // VM suite; the long runs are `cargo xtask fuzz --seconds N` (10 min
        // each found the parser's two crashes).
        if crate::fuzz::available() {
            let runs = crate::fuzz::run(&crate::fuzz::Args {
                seconds: 20,
                targets: Vec::new(),
            })?;
            totals.passed += runs.len() as u64;
        } else {
            totals
                .skipped
                .push("fuzz: cargo-fuzz is not installed (bash .ci/setup installs it)".into());
        }
    }
    if !a.no_vm {
        // Binaries were built above; the CI matrix (every test on one
        // kernel line, a smoke set on the others: docs/vm-tests.md).
        let vm = crate::vm::test(crate::vm::TestArgs {
            kernels: Vec::new(),
            matrix: crate::vm::Matrix::Ci,
            tests: Vec::new(),
            keep: false,
            no_build: true,
        })?;
        totals.passed += vm.passed as u64;
        totals
            .skipped
            .extend(vm.skipped.into_iter().map(|s| format!("vm-test: {s}")));
        // The benchmark's smoke run: every phase still produces its numbers
        // (none is judged; a benchmark asserts no timing).
        println!("==> cargo xtask bench --quick");
        crate::bench::run(&crate::bench::Args {
            quick: true,
            iterations: 1,
            no_bpftrace: false,
            phases: crate::bench::Phase::ALL.to_vec(),
            soak_minutes: 30,
            guest_script: None,
            extra_bin: Vec::new(),
        })?;
        totals.passed += 1;
    }
    println!(
        "{} passed, {} failed, {} skipped",
        totals.passed,
        totals.failed,
        totals.skipped.len()
    );
    for s in &totals.skipped {
        println!("  skipped: {s}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ignored_test;

    #[test]
    fn ignored_tests_are_named_with_their_reason() {
        assert_eq!(
            ignored_test("test busy_window ... ignored, analyzer bug: x"),
            Some("busy_window (analyzer bug: x)".to_string())
        );
        assert_eq!(
            ignored_test("test a::b ... ignored"),
            Some("a::b".to_string())
        );
        assert_eq!(ignored_test("test a::b ... ok"), None);
        assert_eq!(ignored_test("running 3 tests"), None);
    }
}
