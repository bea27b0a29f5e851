//! The guest side: the script the 6.12 guest runs, its boot, and the
//! lines it reports back.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{soak, AgentRun, Args, Cap, Guest, Phase, Plan, TraceSize};
use crate::vm::vm_guest::{init_script, GuestRun};
use crate::vm::vm_image::Binaries;
use crate::vm::vm_kernel::KernelLine;
use crate::vm::vm_qemu::{boot, extract_results, Boot};
use crate::vm::vm_tests::{GuestSetup, Swap};
use crate::vm::{boot_dir, prepare, vm_root};

/// The bpftrace side of the overhead comparison, kept in the repository.
const COMPARABLE_BT: &str = include_str!("../../bench/comparable.bt");

fn guest_script(p: &Plan) -> String {
    let tracers = if p.bpftrace {
        "none detector agent bpftrace"
    } else {
        "none detector agent"
    };
    let rates: Vec<String> = p.rates.iter().map(u64::to_string).collect();
    let loss_rates: Vec<String> = p.loss_rates.iter().map(u64::to_string).collect();
    let on = |ph: Phase| if p.phases.contains(&ph) { "1" } else { "0" };
    format!(
        r#"#!/bin/sh
# Started inside the workload cgroup: leave it, so its memory limit (and the
# memcg charge of BPF maps) applies to the workloads only.
echo $$ > /sys/fs/cgroup/cgroup.procs
B=/out/bench.log
wl() {{ sh -c 'echo $$ > /sys/fs/cgroup/wl/cgroup.procs && exec "$@"' wl "$@"; }}
# Every step is bounded: a step that hangs is reported (with the blocked
# tasks' kernel stacks) and the run goes on, instead of stalling the boot.
# With a pid: every thread of that process too, whatever its state (a
# process that ignores SIGINT is usually asleep, not blocked or running).
diag() {{ echo "log hung: $1" >> $B; for p in $(ls /proc | grep '^[0-9]'); do
  st=$(awk '{{print $3}}' /proc/$p/stat 2>/dev/null); case "$st" in D|R)
  echo "log hung-task $p $(cat /proc/$p/comm) $st $(tr '\n' ' ' < /proc/$p/stack 2>/dev/null | cut -c1-300)" >> $B;; esac; done
  [ -n "$2" ] && for t in /proc/$2/task/*; do
  echo "log hung-thread $2/${{t##*/}} $(cat $t/comm) $(awk '{{print $3}}' $t/stat) wchan=$(cat $t/wchan) $(tr '\n' ' ' < $t/stack 2>/dev/null | cut -c1-400)" >> $B; done; }}
# The watchdog holds none of the step's output open, so a command
# substitution around the step ends with the step.
bounded() {{ "$@" & P=$!
  ( sleep {bound}; kill -0 $P 2>/dev/null && {{ diag "step did not finish in {bound} s: $*" $P; kill -KILL $P; }} ) > /dev/null 2>&1 & D=$!
  wait $P; rc=$?; kill $D 2>/dev/null; [ $rc = 0 ] || echo "log step exited $rc: $*" >> $B; }}
soak() {{ bounded sh -c 'echo $$ > /sys/fs/cgroup/wl/cgroup.procs && exec benign-soak {soak}' > /tmp/soak.log 2>&1; grep -o 'secs=[0-9.]*' /tmp/soak.log | cut -d= -f2; }}
waitfor() {{ i=0; while ! grep -q "$2" "$1" 2>/dev/null && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done; }}
# detector record in the background until `stop`; $1 = log, rest = flags.
rec() {{ L=$1; shift; detector record --duration 3600s "$@" > $L 2>&1 & T=$!; waitfor $L attached; sleep 1; }}
stop() {{ kill -INT $T; i=0; while kill -0 $T 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
  if kill -0 $T 2>/dev/null; then diag "pid $T did not exit 60 s after SIGINT" $T; kill -KILL $T; fi; wait $T; }}
summary() {{ grep -o '[0-9]* events in [0-9.]*s ([0-9]* events/s), lost [0-9]*' $1; }}
echo "guest $(uname -r) $(grep -c ^processor /proc/cpuinfo) cpus $(grep MemTotal /proc/meminfo | tr -s ' ')" >> $B

# 1. overhead
[ {ov} = 1 ] && for it in $(seq {n}); do
  for t in {tracers}; do
    case $t in
    none) echo "run none $(soak)" >> $B;;
    detector)
      rec /tmp/rec.log -o /out/soak.dtr
      echo "run detector $(soak)" >> $B
      stop; echo "log detector $(summary /tmp/rec.log)" >> $B
      grep -e '^detector: CPU' -e '^detector: ring records' /tmp/rec.log | sed 's/^/log detector /' >> $B
      # The capture's size as recorded (v2) and converted to v1, once.
      if [ $it = 1 ]; then
        ev=$(grep -o '[0-9]* events in' /tmp/rec.log | cut -d' ' -f1)
        echo "size v2 $(ls -ln /out/soak.dtr | awk '{{print $5}}') $ev" >> $B
        detector export /out/soak.dtr --format trace --trace-format v1 -o /out/soak-v1.dtr > /dev/null 2>&1 \
          && echo "size v1 $(ls -ln /out/soak-v1.dtr | awk '{{print $5}}') $ev" >> $B
        rm -f /out/soak-v1.dtr
      fi
      rm -f /out/soak.dtr;;
    agent)
      # The service on the same load, as packaged (findings to a file, the
      # flight recorder at its default size, metrics on localhost): its CPU
      # from outside, attached to the load's end (USER_HZ ticks), its
      # resident memory at the end of the load, and 20 scrapes of a
      # populated /metrics (busybox date has no sub-second clock; uptime
      # has centiseconds).
      ip link set lo up; rm -rf /tmp/agent; mkdir -p /tmp/agent
      detector agent --findings /tmp/agent/findings.jsonl --heartbeat 3600s \
        --metrics-addr 127.0.0.1:9464 --snapshot-on violation --snapshot-dir /tmp/agent/snap \
        > /tmp/agent/log 2>&1 & T=$!
      waitfor /tmp/agent/log 'capabilities kept'; sleep 1
      c0=$(awk '{{print $14+$15}}' /proc/$T/stat)
      echo "run agent $(soak)" >> $B
      c1=$(awk '{{print $14+$15}}' /proc/$T/stat); rss=$(awk '/^VmRSS:/ {{print $2}}' /proc/$T/status)
      u0=$(cut -d' ' -f1 /proc/uptime)
      for i in $(seq 20); do timeout 10 wget -q -O /tmp/agent/metrics http://127.0.0.1:9464/metrics; done
      u1=$(cut -d' ' -f1 /proc/uptime)
      stop
      echo "agent cpu_ticks=$((c1-c0)) rss_kb=$rss scrapes=20 scrape_s=$(echo $u0 $u1 | awk '{{print $2-$1}}') series=$(grep -c '^detector_' /tmp/agent/metrics) metrics_bytes=$(wc -c < /tmp/agent/metrics)" >> $B
      grep '"type":"stats"' /tmp/agent/findings.jsonl | tail -1 | sed 's/^/agent-stats /' >> $B
      grep -iE 'error|warning' /tmp/agent/log | head -3 | sed 's/^/log agent-log /' >> $B;;
    bpftrace)
      # A perf buffer large enough that bpftrace, like the detector, keeps
      # (nearly) everything: a tracer that drops does less work.
      BPFTRACE_PERF_RB_PAGES=1024 bpftrace -B full -o /out/soak.bt /bin/comparable.bt > /tmp/bt.log 2>&1 & T=$!
      waitfor /out/soak.bt Attaching; sleep 1
      echo "run bpftrace $(soak)" >> $B
      stop; echo "log bpftrace $(grep -c . /out/soak.bt) lines, lost $(awk '/^Lost [0-9]+ events/ {{s+=$2}} END {{print s+0}}' /out/soak.bt) events" >> $B
      grep -i error /tmp/bt.log | head -3 | sed 's/^/log bpftrace-error /' >> $B; rm -f /out/soak.bt;;
    esac
  done
done

# 3 + 4a. latency and per-probe BPF run time, on the same load
if [ {st} = 1 ]; then
rec /tmp/stats.log -o /dev/null --analyze --latency --stats
echo "run detector-stats $(soak)" >> $B
stop; summary /tmp/stats.log | sed 's/^/log detector-stats /' >> $B
grep -E '^  [a-z_]+ +[0-9]+ events' /tmp/stats.log | sed 's/^/perprobe /' >> $B
sed -n '/^latency/p' /tmp/stats.log | sed 's/^/latency /' >> $B
sed -n '/^per-probe BPF run time/,/^note:/p' /tmp/stats.log | sed 's/^/stats /' >> $B
grep '^detector: CPU' /tmp/stats.log | sed 's/^/log detector-stats /' >> $B
fi

# 4b. whole per-call cost: tight loops with and without the probes
[ {lp} = 1 ] && for m in gup madvise-free; do
  echo "loop $m none $(bounded probe-load --mode $m --seconds {loop} | grep -o 'ns_per_call=[0-9]*' | cut -d= -f2)" >> $B
  rec /tmp/loop.log -o /dev/null
  echo "loop $m detector $(bounded probe-load --mode $m --seconds {loop} | grep -o 'ns_per_call=[0-9]*' | cut -d= -f2)" >> $B
  stop
done

# 2. capacity: one probe at fixed rates, default configuration (file on disk)
cap() {{ cfg=$1; r=$2; shift 2
  rec /tmp/cap.log -o /out/cap.dtr "$@"
  got=$(bounded probe-load --mode gup --rate $r --threads 2 --seconds {load} | grep -o ' rate=[0-9]*' | cut -d= -f2)
  sleep 0.5; stop
  echo "cap $cfg $r $got $(summary /tmp/cap.log)" >> $B; rm -f /out/cap.dtr; }}
if [ {cp} = 1 ]; then
for r in {rates}; do cap default $r; done
cap wake-every-record 0 --wakeup-bytes 0
cap ring-64M 0 --ring-size 64M
for ring in {loss_rings}; do for r in {loss_rates}; do cap ring-$ring $r --ring-size $ring; done; done
fi
if [ {sk} = 1 ]; then
{soak_script}
fi
echo "done" >> $B
"#,
        soak = p.soak,
        n = p.iterations,
        tracers = tracers,
        loop = p.loop_secs,
        load = p.load_secs,
        rates = rates.join(" "),
        loss_rings = p.loss_rings.join(" "),
        loss_rates = loss_rates.join(" "),
        bound = if p.iterations == 1 && p.load_secs <= 2 { 240 } else { 600 },
        ov = on(Phase::Overhead),
        st = on(Phase::Stats),
        lp = on(Phase::Loop),
        cp = on(Phase::Capacity),
        sk = on(Phase::Soak),
        soak_script = soak::script(p),
    )
}

/// Boots the guest and runs the guest phases; `None` in investigation mode.
pub(super) fn boot_guest(
    a: &Args,
    plan: &Plan,
    root: &Path,
    bins: &Binaries,
) -> Result<Option<(Guest, Duration)>> {
    let prep = prepare(root, KernelLine::V6_12, bins)?;
    std::fs::write(prep.stage.root.join("bin/comparable.bt"), COMPARABLE_BT)?;
    let script = match &a.guest_script {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => guest_script(plan),
    };
    std::fs::write(prep.stage.root.join("bin/bench.sh"), script)?;
    let init = init_script(&GuestRun {
        swap: Swap::Disk,
        memory_max: "48M".into(),
        record: None,
        workload: Some(vec!["sh".into(), "/bin/bench.sh".into()]),
        foreground: None,
        setup: GuestSetup::PLAIN,
    });
    let b = boot_dir(&vm_root(root).join("6.12/bench"))?;
    prep.stage.pack(&init, &b.initrd)?;
    let console = b.dir.join("console.log");
    let on = |ph: Phase| plan.phases.contains(&ph);
    println!(
        "booting 6.12: {} repetition(s) per tracer, {} capacity row(s){}…",
        if on(Phase::Overhead) {
            plan.iterations
        } else {
            0
        },
        if on(Phase::Capacity) {
            plan.capacity_rows()
        } else {
            0
        },
        if on(Phase::Soak) {
            format!(", a {}-minute soak", plan.soak_minutes)
        } else {
            String::new()
        }
    );
    let started = Instant::now();
    let outcome = boot(&Boot {
        vmlinuz: &prep.kernel.vmlinuz,
        initrd: &b.initrd,
        disks: b.disks.clone(),
        memory: if plan.bpftrace { "1536M" } else { "768M" },
        timeout: Duration::from_secs(
            900 + 300 * u64::from(plan.iterations) * 3
                + if plan.phases.contains(&Phase::Soak) {
                    60 * u64::from(plan.soak_minutes) + 600
                } else {
                    0
                },
        ),
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
    let res = b.dir.join("out");
    extract_results(&b.disks[1], &res)?;
    if a.guest_script.is_some() {
        println!("guest script finished; its files: {}", res.display());
        return Ok(None);
    }
    let log = std::fs::read_to_string(res.join("bench.log"))
        .with_context(|| format!("reading {}", res.join("bench.log").display()))?;
    let mut guest = parse_guest(&log);
    if plan.phases.contains(&Phase::Soak) {
        // The agent's JSON lines, or the stand-in's `live --plain` lines.
        let dir = res.join("soak");
        for (name, jsonl) in [("findings.jsonl", true), ("findings.txt", false)] {
            if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
                soak::read_output(&mut guest.soak, &text, jsonl);
            }
        }
    }
    if !guest.done {
        bail!(
            "the guest benchmark stopped early (see {} and {})",
            res.join("bench.log").display(),
            console.display()
        );
    }
    Ok(Some((guest, started.elapsed())))
}

pub(super) fn parse_guest(log: &str) -> Guest {
    let mut g = Guest::default();
    for line in log.lines() {
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "guest" => g.header = rest.to_string(),
            "run" => {
                let mut w = rest.split_whitespace();
                if let (Some(cfg), Some(Ok(s))) = (w.next(), w.next().map(str::parse::<f64>)) {
                    g.runs.entry(cfg.to_string()).or_default().push(s);
                } else {
                    g.logs
                        .push(format!("no time for `{rest}` (workload failed?)"));
                }
            }
            "log" => g.logs.push(rest.to_string()),
            "size" => {
                let w: Vec<&str> = rest.split_whitespace().collect();
                if let [format, bytes, events] = w.as_slice() {
                    if let (Ok(bytes), Ok(events)) = (bytes.parse(), events.parse()) {
                        g.sizes.push(TraceSize {
                            capture: "benign-soak under `detector record` (6.12 guest)".into(),
                            format: (*format).to_string(),
                            bytes,
                            events,
                        });
                    }
                }
            }
            "latency" => g.latency.push(rest.to_string()),
            "stats" => g.stats.push(rest.to_string()),
            "perprobe" => g.per_probe.push(rest.to_string()),
            "loop" => {
                let w: Vec<&str> = rest.split_whitespace().collect();
                if w.len() == 3 {
                    g.loops
                        .push((w[0].to_string(), w[1].to_string(), w[2].to_string()));
                }
            }
            "cap" => {
                if let Some(c) = parse_cap(rest) {
                    g.caps.push(c);
                }
            }
            "agent" => g.agent.push(parse_agent(rest)),
            "agent-stats" => {
                if let Some(last) = g.agent.last_mut() {
                    last.events = soak::parse_heartbeat(rest).map(|h| h.events);
                }
            }
            "done" => g.done = true,
            t if t.starts_with("soak-") => soak::parse_line(&mut g.soak, t, rest),
            _ => {}
        }
    }
    g
}

/// `cpu_ticks=N rss_kb=N scrapes=N scrape_s=F series=N metrics_bytes=N`;
/// a value missing or garbled stays `None` and the report says so.
fn parse_agent(s: &str) -> AgentRun {
    let mut a = AgentRun::default();
    for (k, v) in s.split_whitespace().filter_map(|w| w.split_once('=')) {
        match k {
            "cpu_ticks" => a.cpu_ticks = v.parse().ok(),
            "rss_kb" => a.rss_kb = v.parse().ok(),
            "scrapes" => a.scrapes = v.parse().ok(),
            "scrape_s" => a.scrape_s = v.parse().ok(),
            "series" => a.series = v.parse().ok(),
            "metrics_bytes" => a.metrics_bytes = v.parse().ok(),
            _ => {}
        }
    }
    a
}

/// `default 50000 49870 250123 events in 6.1s (41003 events/s), lost 0`
fn parse_cap(s: &str) -> Option<Cap> {
    let w: Vec<&str> = s.split_whitespace().collect();
    if w.len() < 10 {
        return None;
    }
    Some(Cap {
        cfg: w[0].to_string(),
        target: w[1].parse().ok()?,
        achieved: w[2].parse().ok()?,
        events: w[3].parse().ok()?,
        lost: w.last()?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_script_is_valid_shell_with_every_phase() {
        let a = Args {
            quick: false,
            iterations: 2,
            no_bpftrace: true,
            phases: Phase::ALL.iter().copied().chain([Phase::Soak]).collect(),
            soak_minutes: 3,
            guest_script: None,
            extra_bin: Vec::new(),
        };
        let script = guest_script(&Plan::new(&a));
        assert!(script.contains("soak-config") && script.contains("minutes=3"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bench.sh");
        std::fs::write(&f, &script).unwrap();
        let o = std::process::Command::new("sh")
            .arg("-n")
            .arg(&f)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    #[test]
    fn parses_capacity_and_runs() {
        let g = parse_guest(
            "guest 6.12 2 cpus\nrun none 10.5\nrun detector\n\
             cap default 50000 49870 250123 events in 6.1s (41003 events/s), lost 7\n\
             size v2 5000000 1000000\nsize v1\ndone\n",
        );
        assert!(g.done);
        assert_eq!(g.runs["none"], vec![10.5]);
        assert_eq!(g.logs.len(), 1, "a run without a time is reported");
        assert_eq!(g.sizes.len(), 1, "a size line without numbers is left out");
        assert_eq!(
            (g.sizes[0].bytes, g.sizes[0].events),
            (5_000_000, 1_000_000)
        );
        let c = &g.caps[0];
        assert_eq!(
            (c.target, c.achieved, c.events, c.lost),
            (50000, 49870, 250123, 7)
        );
    }

    #[test]
    fn parses_an_agent_run_and_its_final_heartbeat() {
        let g = parse_guest(
            "run agent 11.2\n\
             agent cpu_ticks=281 rss_kb=90112 scrapes=20 scrape_s=0.61 series=212 metrics_bytes=30000\n\
             agent-stats {\"type\":\"stats\",\"uptime_s\":20.5,\"final\":true,\"events\":812000,\"lost\":0,\"tracked_objects\":5,\"peak_tracked_objects\":9,\"evictions\":0,\"findings_total\":1}\n\
             agent cpu_ticks=x rss_kb=1\n",
        );
        assert_eq!(g.runs["agent"], vec![11.2]);
        assert_eq!(g.agent.len(), 2);
        let a = &g.agent[0];
        assert_eq!(
            (a.cpu_ticks, a.rss_kb, a.scrapes, a.series, a.events),
            (Some(281), Some(90112), Some(20), Some(212), Some(812000))
        );
        let us = a.cpu_us_per_event().unwrap();
        assert!((us - 2810.0 * 1000.0 / 812000.0).abs() < 1e-9);
        assert_eq!((g.agent[1].cpu_ticks, g.agent[1].events), (None, None));
        assert_eq!(g.agent[1].cpu_us_per_event(), None);
    }
}
