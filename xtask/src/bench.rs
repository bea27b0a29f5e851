//! `cargo xtask bench-overhead`: what tracing costs the traced workload.
//!
//! One 6.12 guest boot runs the same swap-heavy workload (swap-hog in a
//! 64 MiB memory cgroup) untraced, under `detector record` to a file on the
//! results disk, under `detector record -o /dev/null` (probes, ring buffer
//! and encoding without the disk writes), and under
//! bpftrace attached to the same kernel functions with an in-kernel
//! `count()` per probe (the cheapest thing bpftrace can do there; the
//! detector does more per hit: the folio snapshot, a ring-buffer record,
//! the userspace write). Runs alternate so drift in the emulator hits all
//! three alike. This is a benchmark: it reports, it asserts nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::ebpf;
use crate::vm::vm_image::build_binaries;
use crate::vm::vm_kernel::KernelLine;
use crate::vm::vm_qemu::{boot, extract_results, Boot};
use crate::vm::vm_tests::{init_script, GuestRun, Swap};
use crate::vm::{boot_dir, prepare, vm_root};

#[derive(clap::Args)]
pub struct Args {
    /// Workload runs per configuration.
    #[arg(long, default_value_t = 3)]
    pub iterations: u32,
    /// Leave bpftrace out (it needs ~200 MB of libraries in the guest).
    #[arg(long)]
    pub no_bpftrace: bool,
    /// swap-hog working set in MiB (the cgroup allows 64).
    #[arg(long, default_value_t = 160)]
    pub mib: u32,
}

/// The probe set of the detector's 6.12 plan, for bpftrace.
const BPFTRACE_SCRIPT: &str = "\
kretfunc:vmlinux:swap_cache_get_folio, kretfunc:vmlinux:add_to_swap_cache,
kfunc:vmlinux:__delete_from_swap_cache, kretprobe:folio_alloc_swap,
kretfunc:vmlinux:swap_duplicate, kfunc:vmlinux:swap_entry_range_free,
kretfunc:vmlinux:swapcache_prepare, kfunc:vmlinux:swapcache_clear,
kfunc:vmlinux:do_swap_page, kretfunc:vmlinux:do_swap_page,
kfunc:vmlinux:folio_move_anon_rmap, kfunc:vmlinux:__remove_mapping,
kretfunc:vmlinux:__remove_mapping, kfunc:vmlinux:try_to_unmap_one,
kretfunc:vmlinux:try_to_unmap_one, kfunc:vmlinux:madvise_free_pte_range,
kretfunc:vmlinux:try_grab_folio, kretfunc:vmlinux:try_grab_folio_fast,
kfunc:vmlinux:gup_put_folio, kfunc:vmlinux:unpin_user_page,
kfunc:vmlinux:do_wp_page, kfunc:vmlinux:swap_read_folio,
tracepoint:vmscan:mm_vmscan_write_folio { @[probe] = count(); }
";

fn guest_script(a: &Args) -> String {
    let tracers = if a.no_bpftrace {
        "none detector devnull"
    } else {
        "none detector devnull bpftrace"
    };
    format!(
        r#"#!/bin/sh
# Started inside the workload cgroup: leave it, so the 64 MiB limit (and the
# memcg charge of BPF maps) applies to the workload only.
echo $$ > /sys/fs/cgroup/cgroup.procs
hog() {{ sh -c 'echo $$ > /sys/fs/cgroup/wl/cgroup.procs && exec swap-hog --mib {mib} --passes 2' > /tmp/hog.log 2>&1; grep -o 'secs=[0-9.]*' /tmp/hog.log | cut -d= -f2; }}
waitfor() {{ i=0; while ! grep -q "$2" "$1" 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; }}
for it in $(seq {n}); do
  for t in {tracers}; do
    case $t in
    none) echo "run none $(hog)";;
    detector)
      detector record -o /out/bench.dtr --ring-size 64M --duration 3600s > /tmp/rec.log 2>&1 &
      T=$!
      i=0; while [ ! -s /out/bench.dtr ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; sleep 1
      echo "run detector $(hog)"
      kill -INT $T; wait $T
      echo "detector-log $(grep -o '[0-9]* events in [0-9.]*s ([0-9]* events/s), lost [0-9]*' /tmp/rec.log)"
      rm -f /out/bench.dtr;;
    devnull)
      detector record -o /dev/null --ring-size 64M --duration 3600s > /tmp/rec.log 2>&1 &
      T=$!
      waitfor /tmp/rec.log attached; sleep 1
      echo "run devnull $(hog)"
      kill -INT $T; wait $T
      echo "devnull-log $(grep -o '[0-9]* events in [0-9.]*s ([0-9]* events/s), lost [0-9]*' /tmp/rec.log)";;
    bpftrace)
      bpftrace /bin/bench.bt > /tmp/bt.log 2>&1 &
      T=$!
      waitfor /tmp/bt.log Attaching; sleep 1
      echo "run bpftrace $(hog)"
      kill -INT $T; wait $T
      echo "bpftrace-log $(grep -c '^@' /tmp/bt.log) probes counted, $(head -1 /tmp/bt.log)";;
    esac
  done
done
"#,
        mib = a.mib,
        n = a.iterations,
        tracers = tracers
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn run(a: &Args) -> Result<()> {
    let root = ebpf::root();
    let mut bins = build_binaries(&root)?;
    if !a.no_bpftrace {
        let bt = PathBuf::from("/usr/bin/bpftrace");
        if !bt.exists() {
            bail!("bpftrace is not installed; `apt-get install bpftrace` or pass --no-bpftrace");
        }
        bins.workloads.push(bt);
    }
    let prep = prepare(&root, KernelLine::V6_12, &bins)?;
    std::fs::write(prep.stage.root.join("bin/bench.bt"), BPFTRACE_SCRIPT)?;
    std::fs::write(prep.stage.root.join("bin/overhead.sh"), guest_script(a))?;
    let init = init_script(&GuestRun {
        swap: Swap::Disk,
        memory_max: "64M".into(),
        record: None,
        workload: Some(vec!["sh".into(), "/bin/overhead.sh".into()]),
        foreground: None,
    });
    let b = boot_dir(&vm_root(&root).join("6.12/bench-overhead"))?;
    prep.stage.pack(&init, &b.initrd)?;
    let dir = &b.dir;
    let console = dir.join("console.log");
    println!(
        "booting 6.12 for {} iteration(s) per configuration…",
        a.iterations
    );
    let outcome = boot(&Boot {
        vmlinuz: &prep.kernel.vmlinuz,
        initrd: &b.initrd,
        disks: b.disks.clone(),
        memory: if a.no_bpftrace { "512M" } else { "1536M" },
        timeout: Duration::from_secs(600 + 180 * u64::from(a.iterations) * 4),
        console_log: &console,
        echo: false,
        interactive: false,
    })?;
    if !outcome.finished() {
        bail!(
            "the guest did not finish (see {}){}",
            console.display(),
            if outcome.timed_out { ": timed out" } else { "" }
        );
    }
    let res = dir.join("out");
    extract_results(&b.disks[1], &res)?;
    report(&res.join("workload.log"))
}

fn report(log: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let mut runs: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("run"), Some(cfg), Some(secs)) => {
                if let Ok(s) = secs.parse::<f64>() {
                    runs.entry(cfg).or_default().push(s);
                }
            }
            (Some("run"), Some(cfg), None) => {
                println!("warning: run under {cfg} printed no time (workload failed?)");
            }
            _ => {}
        }
        if ["detector-log", "devnull-log", "bpftrace-log"]
            .iter()
            .any(|p| line.starts_with(p))
        {
            println!("{line}");
        }
    }
    let mut base = runs.get("none").cloned().unwrap_or_default();
    let base = median(&mut base);
    println!(
        "{:<10} {:>6} {:>12} {:>10}  runs (s)",
        "config", "n", "median (s)", "slowdown"
    );
    for cfg in ["none", "detector", "devnull", "bpftrace"] {
        let Some(v) = runs.get(cfg) else { continue };
        let mut sorted = v.clone();
        let m = median(&mut sorted);
        println!(
            "{cfg:<10} {:>6} {m:>12.2} {:>9.1}%  {v:?}",
            v.len(),
            (m / base - 1.0) * 100.0
        );
    }
    Ok(())
}
