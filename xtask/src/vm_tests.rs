//! The real-kernel tests: what each boots, runs and expects, and the guest
//! `/init` script that runs it.

use std::fmt::Write as _;

use detector_common::ProbeId;

use super::vm_kernel::KernelLine;

/// Swap device the guest uses.
#[derive(Clone, Copy, Debug)]
pub enum Swap {
    /// /dev/vda, a virtio disk: asynchronous swap-in through the swap cache.
    Disk,
    /// The same disk with this many MiB instead of the default: a tiny one
    /// stays full, so a freed slot is the next one allocated (the ABA on a
    /// swap entry needs its reuse inside a short window).
    DiskSized { mib: u64 },
    /// zram: SWP_SYNCHRONOUS_IO, so single-mapped entries take the
    /// synchronous swap-in path guarded by `swapcache_prepare`.
    Zram { mib: u32 },
}

/// What the lost-event counters must say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    Zero,
    /// A deliberately tiny ring buffer: losses must happen and be reported.
    Positive,
    /// kprobe mode: the kernel may skip a kprobe or kretprobe (recursion
    /// guard, kretprobe instance pool), which the programs count as lost.
    /// A few are tolerated; every one must be in the stream and the footer,
    /// and the other checks allow for them.
    Counted,
}

/// A window histogram that must be non-empty on this test.
#[derive(Clone, Copy, Debug)]
pub struct WindowExpect {
    /// Substring of the analyzer's window name.
    pub name: &'static str,
    pub min_samples: u64,
}

pub struct Expect {
    /// Probes the workload drives: each must fire when the plan attached it.
    pub probes: &'static [ProbeId],
    pub lost: Lost,
    /// Compare recorded swap reads with the guest's `pswpin` delta.
    pub pswpin_matches: bool,
    pub windows: &'static [WindowExpect],
}

pub struct VmTest {
    pub name: &'static str,
    pub about: &'static str,
    pub kernels: &'static [KernelLine],
    /// Kernel lines where the workload is expected to exit 77 (the feature
    /// does not exist there); a skip anywhere else is a failure.
    pub skips_on: &'static [KernelLine],
    pub swap: Swap,
    /// `memory.max` of the workload's cgroup.
    pub memory_max: &'static str,
    /// Workload argv (binary name first), run inside the cgroup.
    pub workload: &'static [&'static str],
    /// `record --ring-size`; `None` uses [`RING_BYTES`].
    pub ring_size: Option<u64>,
    /// `record --attach`: `Some("kprobe")` forces the fallback path where
    /// fentry would work, and the check then requires a kprobe-only plan.
    pub attach: Option<&'static str>,
    /// `record --unfiltered`: every call becomes an event, so a probe whose
    /// relevance filter the workload would not pass is still seen firing.
    pub unfiltered: bool,
    pub expect: Expect,
    /// Wall-clock limit for the whole boot.
    pub timeout_secs: u64,
}

/// Ring buffer for tests that must lose nothing: TCG runs the consumer in
/// bursts, so the ring has to absorb a few hundred ms of events at ~100k/s.
pub const RING_BYTES: u64 = 64 << 20;

const BOTH: &[KernelLine] = &[KernelLine::V6_12, KernelLine::V6_1];
const NEW: &[KernelLine] = &[KernelLine::V6_12];

use ProbeId as P;

const SWAP_CORE: &[ProbeId] = &[
    P::SwapCacheLookup,
    P::SwapCacheInsert,
    P::SwapCacheDelete,
    P::SwapEntryAlloc,
    P::SwapEntryFree,
    P::SwapcachePrepare,
    P::DoSwapPage,
    P::SwapRead,
    P::RemoveMapping,
];

const fn window(name: &'static str) -> WindowExpect {
    WindowExpect {
        name,
        min_samples: 1,
    }
}
const REALLOC: &[WindowExpect] = &[window("free->realloc")];
const GUP: &[WindowExpect] = &[window("gup pin")];
const PREP: &[WindowExpect] = &[window("prepare->clear")];

pub const TESTS: &[VmTest] = &[
    VmTest {
        name: "swap-pressure",
        about: "a memory hog under a 64M cgroup pushes 160 MiB through swap while the detector records",
        kernels: BOTH,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "64M",
        workload: &["swap-hog", "--mib", "160", "--passes", "2"],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: SWAP_CORE,
            lost: Lost::Zero,
            pswpin_matches: true,
            windows: REALLOC,
        },
        timeout_secs: 300,
    },
    VmTest {
        name: "kprobe-fallback",
        about: "the swap hog with --attach kprobe: every function probe through kprobe/kretprobe, same checks",
        kernels: NEW,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "64M",
        // Sized like swap-pressure: enough traffic for the allocator to wrap
        // around the 256 MiB swap disk, so freed entries are reallocated.
        workload: &["swap-hog", "--mib", "160", "--passes", "2"],
        ring_size: None,
        attach: Some("kprobe"),
        unfiltered: false,
        expect: Expect {
            probes: SWAP_CORE,
            lost: Lost::Counted,
            pswpin_matches: true,
            windows: REALLOC,
        },
        timeout_secs: 300,
    },
    VmTest {
        name: "tiny-ring",
        about: "the same hog with a 4 KiB ring buffer: events must be lost and the loss reported",
        kernels: NEW,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "32M",
        workload: &["swap-hog", "--mib", "64", "--passes", "2"],
        ring_size: Some(4096),
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: &[P::SwapCacheLookup, P::DoSwapPage],
            lost: Lost::Positive,
            pswpin_matches: false,
            windows: &[],
        },
        timeout_secs: 240,
    },
    VmTest {
        name: "uffd-move-swap",
        about: "UFFDIO_MOVE of swapped-out and swap-cached pages while other threads fault them in and reclaim pushes them out (seed 000)",
        kernels: BOTH,
        skips_on: &[KernelLine::V6_1],
        swap: Swap::Disk,
        memory_max: "48M",
        workload: &["uffd-move-swap", "--mib", "8", "--iterations", "12", "--seconds", "90"],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: &[
                P::MovePages,
                P::MovePagesLookup,
                P::FolioMoveAnonRmap,
                P::SwapCacheLookup,
                P::SwapEntryAlloc,
                P::SwapEntryFree,
                P::DoSwapPage,
            ],
            lost: Lost::Zero,
            pswpin_matches: true,
            windows: &[
                WindowExpect {
                    name: "move_pages lookup",
                    min_samples: 1,
                },
                WindowExpect {
                    name: "free->realloc",
                    min_samples: 1,
                },
            ],
        },
        timeout_secs: 420,
    },
    VmTest {
        name: "madvfree-dio",
        about: "MADV_FREE buffers used for O_DIRECT reads from a virtio disk while MADV_PAGEOUT reclaims them (seed 003)",
        kernels: NEW,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "48M",
        workload: &[
            "madvfree-dio", "--device", "/dev/vdc", "--mib", "4", "--iterations", "1000", "--seconds", "90",
        ],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: &[P::MadviseFree, P::TryToUnmapOne, P::GupGrabFast, P::GupPut],
            lost: Lost::Zero,
            pswpin_matches: true,
            windows: GUP,
        },
        timeout_secs: 420,
    },
    VmTest {
        name: "fork-pin-cow",
        about: "O_DIRECT reads pin buffer pages while the process forks and both sides write (seed 001)",
        kernels: NEW,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "64M",
        workload: &[
            "fork-pin-cow", "--device", "/dev/vdc", "--iterations", "800", "--seconds", "90",
        ],
        ring_size: None,
        attach: None,
        unfiltered: true,
        expect: Expect {
            probes: &[P::GupGrabFast, P::GupPut, P::DoWpPage],
            lost: Lost::Zero,
            pswpin_matches: true,
            windows: GUP,
        },
        timeout_secs: 420,
    },
    VmTest {
        name: "sync-swapin",
        about: "threads fault the same zram-swapped pages at once: synchronous swap-in and swapcache_prepare contention (seed 002)",
        kernels: NEW,
        skips_on: &[],
        swap: Swap::Zram { mib: 256 },
        memory_max: "max",
        workload: &["sync-swapin", "--mib", "8", "--threads", "4", "--iterations", "30", "--seconds", "90"],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: &[P::SwapcachePrepare, P::SwapcacheClear, P::DoSwapPage, P::SwapRead],
            lost: Lost::Zero,
            pswpin_matches: true,
            windows: PREP,
        },
        timeout_secs: 420,
    },
    VmTest {
        name: "benign-soak",
        about: "mixed swap-heavy load (hog, fork, MADV_FREE reuse, pageout) for a fixed count of iterations: no findings expected",
        kernels: NEW,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "48M",
        workload: &["benign-soak", "--mib", "64", "--iterations", "3", "--seconds", "90"],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: SWAP_CORE,
            lost: Lost::Zero,
            pswpin_matches: true,
            windows: REALLOC,
        },
        timeout_secs: 420,
    },
];

/// Kernel modules a guest needs (dependencies are resolved from modinfo).
pub fn modules_for(swap: Swap) -> Vec<&'static str> {
    let mut m = vec!["virtio_pci", "virtio_blk"];
    if let Swap::Zram { .. } = swap {
        m.push("zram");
    }
    m
}

/// Every module any test may load, so one staged tree serves all tests.
pub fn all_modules() -> Vec<&'static str> {
    let mut m = modules_for(Swap::Disk);
    m.push("zram");
    m
}

fn quote_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            shlex::try_quote(a)
                .map(|c| c.into_owned())
                .unwrap_or_else(|_| "''".into())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What one boot does after the common setup.
pub struct GuestRun {
    pub swap: Swap,
    pub memory_max: String,
    /// `detector record` around the workload, with these extra arguments.
    pub record: Option<Vec<String>>,
    pub workload: Option<Vec<String>>,
    /// Run `detector <args>` in the foreground with the console as its
    /// terminal (`cargo xtask vm`).
    pub foreground: Option<Vec<String>>,
}

/// The guest's `/init`: busybox sh, PID 1.
pub fn init_script(run: &GuestRun) -> String {
    let mut s = String::new();
    s.push_str(
        r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s
log() { echo "vmtest: $*"; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
mount -t debugfs nodev /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t cgroup2 none /sys/fs/cgroup
ulimit -l unlimited
for m in $(cat /lib/modules/order); do
    insmod /lib/modules/$m.ko || log "insmod $m failed"
done
waitdev() {
    i=0
    while [ ! -b "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    [ -b "$1" ] || log "device $1 did not appear"
}
waitdev /dev/vda; waitdev /dev/vdb; waitdev /dev/vdc
mount -t ext2 /dev/vdb /out || log "mounting the results disk failed"
log "kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpus, $(grep MemTotal /proc/meminfo)"
"#,
    );
    match run.swap {
        Swap::Disk | Swap::DiskSized { .. } => s.push_str(
            "mkswap /dev/vda >/dev/null && swapon /dev/vda || log 'swap on /dev/vda failed'\n",
        ),
        Swap::Zram { mib } => {
            let _ = writeln!(
                s,
                "waitdev /dev/zram0\necho {mib}M > /sys/block/zram0/disksize\n\
                 mkswap /dev/zram0 >/dev/null && swapon /dev/zram0 || log 'swap on zram failed'"
            );
        }
    }
    let _ = writeln!(
        s,
        "echo +memory > /sys/fs/cgroup/cgroup.subtree_control\nmkdir -p /sys/fs/cgroup/wl\n\
         echo {} > /sys/fs/cgroup/wl/memory.max",
        run.memory_max
    );
    s.push_str(
        "detector --version > /out/version.txt 2>&1\n\
         detector doctor > /out/doctor.txt 2>&1; echo $? > /out/doctor.rc\n",
    );
    if let Some(extra) = &run.record {
        let _ = writeln!(
            s,
            "detector record -o /out/trace.dtr --duration 3600s {} > /out/record.log 2>&1 &\nDPID=$!",
            quote_argv(extra)
        );
        // Start the workload only once the probes are attached (the header is
        // written after attach), so its whole run is captured.
        s.push_str(
            "i=0\nwhile [ ! -s /out/trace.dtr ] && kill -0 $DPID 2>/dev/null && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done\n\
             sleep 1\nkill -0 $DPID 2>/dev/null || log 'detector record exited early'\n",
        );
    }
    let in_cgroup = r#"sh -c 'echo $$ > /sys/fs/cgroup/wl/cgroup.procs && exec "$@"' wl"#;
    if let Some(w) = &run.workload {
        s.push_str(
            "cat /proc/uptime > /out/uptime.before; cat /proc/vmstat > /out/vmstat.before\n",
        );
        if run.foreground.is_some() {
            let _ = writeln!(
                s,
                // A head start for the foreground detector to load and attach.
                "(sleep 3; {in_cgroup} {} > /out/workload.log 2>&1; echo $? > /out/workload.rc) &\nWPID=$!",
                quote_argv(w)
            );
        } else {
            let _ = writeln!(
                s,
                "log 'running {}'\n{in_cgroup} {} > /out/workload.log 2>&1\necho $? > /out/workload.rc\n\
                 cat /proc/vmstat > /out/vmstat.after; cat /proc/uptime > /out/uptime.after\n\
                 cat /out/workload.log; log \"workload exit $(cat /out/workload.rc)\"",
                w.join(" "),
                quote_argv(w)
            );
        }
    }
    if let Some(args) = &run.foreground {
        let _ = writeln!(
            s,
            "setsid cttyhack detector {}\necho $? > /out/detector.rc\nlog \"detector exit $(cat /out/detector.rc)\"",
            quote_argv(args)
        );
        if run.workload.is_some() {
            s.push_str(
                "wait $WPID\ncat /proc/vmstat > /out/vmstat.after; cat /proc/uptime > /out/uptime.after\n",
            );
        }
    }
    if run.record.is_some() {
        s.push_str("kill -INT $DPID; wait $DPID; echo $? > /out/record.rc\ncat /out/record.log\n");
    }
    s.push_str(
        r#"dmesg > /out/dmesg.txt
cd /
sync && umount /out && log "results written" || log "writing the results disk failed"
poweroff -f
"#,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_runs_somewhere_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for t in TESTS {
            assert!(!t.kernels.is_empty(), "{}", t.name);
            assert!(names.insert(t.name), "duplicate {}", t.name);
        }
        assert!(TESTS.iter().any(|t| t.kernels.contains(&KernelLine::V6_1)));
    }

    #[test]
    fn init_quotes_arguments_and_ends_with_results() {
        let s = init_script(&GuestRun {
            swap: Swap::Zram { mib: 64 },
            memory_max: "64M".into(),
            record: Some(vec!["--ring-size".into(), "4096".into()]),
            workload: Some(vec!["swap-hog".into(), "a b".into()]),
            foreground: None,
        });
        assert!(s.contains("swap-hog 'a b'"));
        assert!(s.contains("/sys/block/zram0/disksize"));
        assert!(s.contains("--ring-size 4096"));
        assert!(s.trim_end().ends_with("poweroff -f"));
        let results = s.find("results written").unwrap_or(0);
        assert!(results > s.find("kill -INT $DPID").unwrap_or(usize::MAX));
    }
}
