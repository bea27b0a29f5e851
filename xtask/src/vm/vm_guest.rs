//! The guest's side of a test: the kernel modules it loads and its
//! `/init` script (busybox sh), which sets up swap, the cgroup and the
//! guest settings, runs `detector record` around the workload and writes
//! the results disk.

use std::fmt::Write as _;

use super::vm_tests::{GuestSetup, Swap};

/// Kernel modules a guest needs (dependencies are resolved from modinfo).
fn modules_for(swap: Swap) -> Vec<&'static str> {
    let mut m = vec!["virtio_pci", "virtio_blk"];
    if let Swap::Zram { .. } = swap {
        m.extend(ZRAM);
    }
    m
}

/// zram and the compressor it defaults to where that is a module (6.1:
/// lzo-rle, requested at run time, which the initramfs has no modprobe
/// for; later kernels build their zram backends in).
const ZRAM: [&str; 2] = ["zram", "lzo_rle?"];

/// Every module any test may load, so one staged tree serves all tests.
pub(crate) fn all_modules() -> Vec<&'static str> {
    let mut m = modules_for(Swap::Disk);
    m.extend(ZRAM);
    m
}

fn quote_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            shlex::try_quote(a)
                .map(std::borrow::Cow::into_owned)
                .unwrap_or_else(|_| "''".into())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The guest's agent keeps a flight recorder and snapshots near misses
/// (a stock kernel gives them under the madvfree-dio workload) on the
/// results disk; the host replays each one (`vm_agent`). Bounded so that
/// a few snapshots of a 30 s buffer fit the disk and the guest's memory.
pub(crate) const AGENT_SNAPSHOTS: &str = "--snapshot-on near-miss --snapshot-dir /out/snapshots \
     --flight-memory 32M --snapshot-max-bytes 256M --snapshots-per-day 6";

/// Where the guest's agent serves its metrics.
pub(crate) const AGENT_ADDR: &str = "127.0.0.1:9464";
/// The agent's heartbeat in the guest: several during a run.
const AGENT_HEARTBEAT: &str = "5s";
/// Seconds the guest waits after the workload before scraping: more than a
/// heartbeat, so a heartbeat written after the workload is in the file, and
/// the findings of the last events are long flushed (every pull flushes).
const AGENT_SETTLE: u32 = 6;

/// What one boot does after the common setup.
pub(crate) struct GuestRun {
    pub(crate) swap: Swap,
    pub(crate) memory_max: String,
    /// `detector record` around the workload, with these extra arguments.
    pub(crate) record: Option<Vec<String>>,
    pub(crate) workload: Option<Vec<String>>,
    /// Run `detector <args>` in the foreground with the console as its
    /// terminal (`cargo xtask vm`).
    pub(crate) foreground: Option<Vec<String>>,
    pub(crate) setup: GuestSetup,
}

/// Every mTHP counter as `hugepages-<size>/<counter> <value>` lines (the
/// `/proc/vmstat` format), written to `/out/mthp.WHEN`.
const MTHP_SNAPSHOT: &str = "for f in /sys/kernel/mm/transparent_hugepage/hugepages-*kB/stats/*; do \
     g=${f#/sys/kernel/mm/transparent_hugepage/}; echo \"${g%%/stats/*}/${f##*/} $(cat $f)\"; done > /out/mthp.WHEN\n";

/// The guest's `/init`: busybox sh, PID 1.
pub(crate) fn init_script(run: &GuestRun) -> String {
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
    if !run.setup.mthp.is_empty() {
        // Large folios take swap entries only from the clusters of a
        // solid-state device: tell the kernel the virtio disk is one.
        s.push_str(
            "T=/sys/kernel/mm/transparent_hugepage\n\
             echo 0 > /sys/block/vda/queue/rotational || log 'cannot mark vda non-rotational'\n\
             for d in $T/hugepages-*kB; do echo never > $d/enabled; done\n",
        );
        for size in run.setup.mthp {
            let _ = writeln!(
                s,
                "echo always > $T/hugepages-{size}/enabled || log 'mTHP size {size} is not available'"
            );
        }
        s.push_str(
            "log \"mTHP top level: $(cat $T/enabled); vda rotational=$(cat /sys/block/vda/queue/rotational)\"\n\
             for d in $T/hugepages-*kB; do log \"${d##*/}: $(cat $d/enabled)\"; done\n",
        );
    }
    if let Some(n) = run.setup.pid_max {
        let _ = writeln!(
            s,
            "echo {n} > /proc/sys/kernel/pid_max || log 'cannot set pid_max'\nlog \"pid_max $(cat /proc/sys/kernel/pid_max)\""
        );
    }
    match run.swap {
        Swap::Disk => s.push_str(
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
    // `--programs`: each program's size and verifier work on this kernel,
    // with the diagnostics level the recording uses.
    let doctor_level = run
        .setup
        .bpf_log
        .map(|b| format!(" --bpf-log {}", b.level))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "detector --version > /out/version.txt 2>&1\n\
         detector doctor --programs{doctor_level} > /out/doctor.txt 2>&1; echo $? > /out/doctor.rc"
    );
    if let Some(extra) = &run.record {
        if run.setup.agent {
            // The endpoint listens on loopback, which an initramfs leaves
            // down.
            let _ = writeln!(
                s,
                "ip link set lo up || log 'cannot bring up lo'\n\
                 detector agent --record /out/trace.dtr --findings /out/findings.jsonl \
                 --heartbeat {AGENT_HEARTBEAT} --metrics-addr {AGENT_ADDR} {AGENT_SNAPSHOTS} {} > /out/record.log 2>&1 &\nDPID=$!",
                quote_argv(extra)
            );
        } else {
            let _ = writeln!(
                s,
                "detector record -o /out/trace.dtr --duration 3600s {} > /out/record.log 2>&1 &\nDPID=$!",
                quote_argv(extra)
            );
        }
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
        if !run.setup.mthp.is_empty() {
            s.push_str(MTHP_SNAPSHOT.replace("WHEN", "before").as_str());
        }
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
                 tail -n 20 /out/workload.log; log \"workload exit $(cat /out/workload.rc)\"",
                w.join(" "),
                quote_argv(w)
            );
            if !run.setup.mthp.is_empty() {
                s.push_str(MTHP_SNAPSHOT.replace("WHEN", "after").as_str());
            }
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
    if run.record.is_some() && run.setup.agent {
        // The workload is over: once a heartbeat has passed, the findings
        // file is flushed and quiet. Scrape between two snapshots of it, so
        // the check can bound what the scrape may count, then SIGTERM.
        let _ = writeln!(
            s,
            "sleep {AGENT_SETTLE}\n\
             cp /out/findings.jsonl /out/findings.before-scrape.jsonl\n\
             wget -q -O /out/metrics.txt http://{AGENT_ADDR}/metrics; echo $? > /out/metrics.rc\n\
             wget -q -O /out/readyz.txt http://{AGENT_ADDR}/readyz; echo $? > /out/readyz.rc\n\
             cp /out/findings.jsonl /out/findings.after-scrape.jsonl\n\
             kill -TERM $DPID; wait $DPID; echo $? > /out/record.rc\ntail -n 20 /out/record.log"
        );
    } else if run.record.is_some() {
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
