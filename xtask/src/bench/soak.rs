//! The soak: the long-running capture under benign-soak in a loop for
//! `--soak-minutes`, sampled every minute and judged for leaks.
//!
//! The guest starts `detector agent` (its own rotating `--record`, so the
//! probes are attached once) or, on a tree without the agent, `detector
//! live --plain` beside `detector record --rotate-size` as a stand-in.
//! Every minute it reads, from outside the processes, their RSS
//! (`VmRSS`), open fds (`/proc/PID/fd`) and threads, and the rotation's
//! files and sizes, and scrapes the agent's /metrics; the analyzer's
//! tracked objects, evictions, events and losses come from the agent's
//! heartbeats in its findings file, placed by their own uptime (the
//! stand-in exposes only its loss lines). The verdict (a benchmark asserts no timing, but a soak
//! must judge a leak) is [`verdict`]; its bounds are the constants below.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Result};

use super::Plan;

/// Segment size and count of the rotating recording: small enough that a
/// full soak rotates a few hundred times.
const ROTATE_SIZE: &str = "64M";
const ROTATE_KEEP: u32 = 3;
/// The analyzer's bound for the soak, low enough that benign-soak reaches
/// it early and eviction runs for most of the soak.
const MAX_TRACKED: u64 = 100_000;
/// Minute from which memory and fds must stay flat (start-up, the first
/// rotation and the analyzer reaching its bound happen before); half the
/// soak when it is shorter than twice this.
const WARMUP_MIN: u32 = 5;
/// RSS growth allowed from the warm-up sample to the last one: the larger
/// of these (allocator and page-cache noise, not a trend).
const RSS_SLACK_KIB: u64 = 8 * 1024;
const RSS_SLACK_PERCENT: u64 = 10;
/// Open fds may exceed the warm-up count by this much at a sample (a
/// rotation caught between opening the next segment and closing the
/// last), and must be back to it at the end.
const FD_SLACK: u64 = 1;

/// The guest's soak, a shell fragment of the benchmark script (`$B` is the
/// report, `wl`, `waitfor` and `stop` its helpers).
pub(super) fn script(p: &Plan) -> String {
    const S: &str = r#"
# 6. soak: the long-running capture under benign-soak in a loop; every
# minute, from outside, its RSS, open fds and threads and the rotation's
# files; tracked objects and losses from its own heartbeat.
S=/out/soak; mkdir -p $S
if detector agent --help > /dev/null 2>&1; then MODE=agent; else MODE=live+record; fi
echo "soak-config mode=$MODE minutes=@MIN@ max_tracked=@MT@ rotate_size=@ROT@ rotate_keep=@KEEP@" >> $B
if [ $MODE = agent ]; then
  # Its metrics are scraped every minute, as a monitoring system would.
  ip link set lo up
  # As packaged: violations snapshotted, so the flight recorder holds its
  # default 30 s / 64 MiB all along and its memory is in every sample.
  detector agent --findings $S/findings.jsonl --heartbeat 60s --max-tracked @MT@ \
    --metrics-addr 127.0.0.1:9464 --snapshot-on violation --snapshot-dir $S/snap \
    --record $S/rec.dtr --rotate-size @ROT@ --rotate-keep @KEEP@ > $S/agent.log 2>&1 & A=$!
  PIDS="agent:$A"; waitfor $S/agent.log 'capabilities kept'
else
  # Two captures, the probes attached twice: the agent's own --record
  # avoids that.
  detector live --plain --max-tracked @MT@ > $S/findings.txt 2> $S/live.log & A=$!
  waitfor $S/live.log 'capabilities kept'
  detector record -o $S/rec.dtr --rotate-size @ROT@ --rotate-keep @KEEP@ > $S/record.log 2>&1 & R=$!
  waitfor $S/record.log 'capabilities kept'
  PIDS="live:$A record:$R"
fi
grep -h 'capabilities kept' $S/*.log | sed 's/^/soak-log /' >> $B
touch /tmp/soak.on
( n=0; while [ -e /tmp/soak.on ]; do n=$((n+1))
    timeout -s KILL @BOUND@ sh -c 'echo $$ > /sys/fs/cgroup/wl/cgroup.procs && exec benign-soak @ARGS@' > /tmp/soak-wl.log 2>&1
    echo "soak-run $n $? $(grep -o 'secs=[0-9.]*' /tmp/soak-wl.log | cut -d= -f2)" >> $B
    grep -i 'benign-soak:' /tmp/soak-wl.log | head -3 | sed 's/^/soak-log /' >> $B
  done ) & W=$!
sample() { m=$1
  for pr in $PIDS; do r=${pr%%:*}; p=${pr#*:}
    rss=$(awk '/^VmRSS:/ {print $2}' /proc/$p/status 2>/dev/null)
    if [ -n "$rss" ]; then
      echo "soak-sample $m $r rss_kb=$rss hwm_kb=$(awk '/^VmHWM:/ {print $2}' /proc/$p/status) fds=$(ls /proc/$p/fd | wc -l) threads=$(awk '/^Threads:/ {print $2}' /proc/$p/status)" >> $B
    else echo "soak-sample $m $r gone" >> $B; fi
  done
  echo "soak-files $m $(for f in $S/rec.dtr*; do [ -e "$f" ] && stat -c %s "$f"; done | tr '\n' ' ')" >> $B
  [ -e $S/live.log ] && echo "soak-lost $m $(awk '/lost events:/ {t[$4]=$6} END {s=0; for (k in t) s+=t[k]; print s}' $S/live.log)" >> $B
  # Busybox 1.35's wget crashes with -T: timeout bounds it instead.
  [ $MODE = agent ] && echo "soak-metrics $m $(timeout 20 wget -q -O - http://127.0.0.1:9464/metrics 2>/dev/null | grep -c .)" >> $B
}
t0=$(cut -d. -f1 /proc/uptime); m=0
while :; do sample $m; [ $m -ge @MIN@ ] && break; m=$((m+1))
  d=$((t0 + 60*m - $(cut -d. -f1 /proc/uptime))); [ $d -gt 0 ] && sleep $d; done
rm -f /tmp/soak.on; wait $W
for pr in $PIDS; do T=${pr#*:}; stop; echo "soak-exit ${pr%%:*} $?" >> $B; done
grep -hE 'events in|CPU since|items,|error|failed' $S/*.log | sed 's/^/soak-log /' >> $B
rm -f $S/rec.dtr*
echo "soak-end" >> $B
"#;
    S.replace("@MIN@", &p.soak_minutes.to_string())
        .replace("@MT@", &MAX_TRACKED.to_string())
        .replace("@ROT@", ROTATE_SIZE)
        .replace("@KEEP@", &ROTATE_KEEP.to_string())
        .replace("@BOUND@", "600")
        .replace("@ARGS@", p.soak)
}

/// A process's memory and descriptors at one sample, read from `/proc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub fds: u64,
    pub threads: u64,
}

/// What an agent's `stats` line says.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Heartbeat {
    pub uptime_s: f64,
    /// The line written when the agent stopped.
    pub last: bool,
    pub events: u64,
    pub lost: u64,
    pub tracked: u64,
    /// The most the analyzer tracked at once since the start.
    pub peak_tracked: u64,
    pub evictions: u64,
    pub findings: u64,
}

/// One benign-soak run of the loop.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Run {
    pub status: i32,
    pub secs: Option<f64>,
}

/// Everything the guest reported about the soak.
#[derive(Debug, Default)]
pub(super) struct Soak {
    pub mode: String,
    pub minutes: u32,
    pub max_tracked: u64,
    pub rotate_size: String,
    pub keep: u32,
    /// Per role (`agent`, or `live` and `record`), per minute; `None` when
    /// the process was gone.
    pub samples: BTreeMap<String, BTreeMap<u32, Option<Mem>>>,
    /// Sizes of the rotation's files present at each minute.
    pub files: BTreeMap<u32, Vec<u64>>,
    /// The agent's periodic `stats` lines by the minute of their uptime.
    pub heartbeats: BTreeMap<u32, Heartbeat>,
    /// Its `stats` line written on stopping.
    pub final_stats: Option<Heartbeat>,
    /// `stats` lines that did not parse (named in the verdict).
    pub bad_heartbeats: Vec<String>,
    /// The stand-in's lost total at each minute.
    pub lost: BTreeMap<u32, u64>,
    /// Lines of the agent's /metrics page at each minute (0: no answer).
    pub metrics: BTreeMap<u32, u64>,
    pub runs: Vec<Run>,
    /// Exit status of each capture process after SIGINT.
    pub exits: Vec<(String, i32)>,
    pub logs: Vec<String>,
    pub findings: Findings,
    pub done: bool,
}

/// Findings the capture wrote, counted from its output file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Findings {
    pub read: bool,
    pub total: u64,
    pub violations: u64,
}

/// `rss_kb=1 hwm_kb=2 fds=3 threads=4`
fn parse_mem(words: &[&str]) -> Option<Mem> {
    let field = |k: &str| {
        words
            .iter()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('=')?.parse::<u64>().ok())
    };
    Some(Mem {
        rss_kib: field("rss_kb")?,
        hwm_kib: field("hwm_kb")?,
        fds: field("fds")?,
        threads: field("threads")?,
    })
}

/// The agent's `stats` line (docs/agent.md): `uptime_s`, `final`,
/// `events`, `lost` (the total), `tracked_objects`,
/// `peak_tracked_objects`, `evictions`, `findings_total`.
pub(super) fn parse_heartbeat(json: &str) -> Option<Heartbeat> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    if v.get("type")?.as_str()? != "stats" {
        return None;
    }
    let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    Some(Heartbeat {
        uptime_s: v.get("uptime_s")?.as_f64()?,
        last: v.get("final")?.as_bool()?,
        events: num("events")?,
        lost: num("lost")?,
        tracked: num("tracked_objects")?,
        peak_tracked: num("peak_tracked_objects")?,
        evictions: num("evictions")?,
        findings: num("findings_total")?,
    })
}

/// Lines of the benchmark log starting with `soak-` (the tag and the rest).
pub(super) fn parse_line(s: &mut Soak, tag: &str, rest: &str) {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let minute = || words.first().and_then(|w| w.parse::<u32>().ok());
    match tag {
        "soak-config" => {
            for w in &words {
                match w.split_once('=') {
                    Some(("mode", v)) => s.mode = v.to_string(),
                    Some(("minutes", v)) => s.minutes = v.parse().unwrap_or(0),
                    Some(("max_tracked", v)) => s.max_tracked = v.parse().unwrap_or(0),
                    Some(("rotate_size", v)) => s.rotate_size = v.to_string(),
                    Some(("rotate_keep", v)) => s.keep = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        "soak-sample" => {
            if let (Some(m), Some(role)) = (minute(), words.get(1)) {
                s.samples
                    .entry((*role).to_string())
                    .or_default()
                    .insert(m, parse_mem(&words[2..]));
            }
        }
        "soak-files" => {
            if let Some(m) = minute() {
                let sizes = words[1..].iter().filter_map(|w| w.parse().ok()).collect();
                s.files.insert(m, sizes);
            }
        }
        "soak-lost" => {
            if let (Some(m), Some(Ok(n))) = (minute(), words.get(1).map(|w| w.parse())) {
                s.lost.insert(m, n);
            }
        }
        "soak-metrics" => {
            if let Some(m) = minute() {
                let n = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(0);
                s.metrics.insert(m, n);
            }
        }
        "soak-run" => {
            if let Some(Ok(status)) = words.get(1).map(|w| w.parse()) {
                s.runs.push(Run {
                    status,
                    secs: words.get(2).and_then(|w| w.parse().ok()),
                });
            }
        }
        "soak-exit" => {
            if let (Some(role), Some(Ok(st))) = (words.first(), words.get(1).map(|w| w.parse())) {
                s.exits.push(((*role).to_string(), st));
            }
        }
        "soak-log" => s.logs.push(rest.to_string()),
        "soak-end" => s.done = true,
        _ => {}
    }
}

/// Reads the capture's output: the agent's JSON lines (findings by
/// `severity`, and the `stats` heartbeats, placed at the minute nearest
/// their `uptime_s`), or `live --plain`'s lines (`TIME #ID SEVERITY RULE
/// ...`; a group's later findings are only counted there, but its first
/// ones are always printed, so a violation always shows).
pub(super) fn read_output(s: &mut Soak, text: &str, jsonl: bool) {
    let mut f = Findings {
        read: true,
        ..Findings::default()
    };
    for line in text.lines() {
        let severity = if jsonl {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            match v.get("type").and_then(serde_json::Value::as_str) {
                Some("finding") => {}
                Some("stats") => {
                    match parse_heartbeat(line) {
                        Some(h) if h.last => s.final_stats = Some(h),
                        Some(h) => {
                            // Rounded to the minute: nonnegative and small.
                            let m = (h.uptime_s / 60.0).round() as u32;
                            s.heartbeats.insert(m, h);
                        }
                        None => s.bad_heartbeats.push(line.chars().take(200).collect()),
                    }
                    continue;
                }
                _ => continue,
            }
            v.get("severity")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .to_string()
        } else {
            let w: Vec<&str> = line.split_whitespace().collect();
            if !w.get(1).is_some_and(|id| id.starts_with('#')) {
                continue;
            }
            w.get(2).copied().unwrap_or("").to_string()
        };
        f.total += 1;
        if severity == "violation" {
            f.violations += 1;
        }
    }
    s.findings = f;
}

/// One judged property of the soak.
#[derive(Debug)]
pub(super) struct Check {
    pub what: String,
    /// `None`: not observable in this mode (the stand-in has no heartbeat).
    pub pass: Option<bool>,
    pub detail: String,
}

fn check(what: impl Into<String>, pass: bool, detail: String) -> Check {
    Check {
        what: what.into(),
        pass: Some(pass),
        detail,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The minute from which memory and fds must be flat.
pub(super) fn warmup(minutes: u32) -> u32 {
    WARMUP_MIN.min(minutes / 2)
}

/// The soak judged: memory and fds flat after the warm-up, every process
/// alive throughout, the analyzer within its bound, no violation, the
/// rotation within its count, every workload run clean.
pub(super) fn verdict(s: &Soak) -> Vec<Check> {
    let mut v = Vec::new();
    let last = s.minutes;
    let warm = warmup(s.minutes);
    for (role, by_min) in &s.samples {
        let missing: Vec<u32> = (0..=last)
            .filter(|m| !matches!(by_min.get(m), Some(Some(_))))
            .collect();
        v.push(check(
            format!("`{role}` ran and was sampled at every minute 0–{last}"),
            missing.is_empty(),
            if missing.is_empty() {
                format!("{} samples", by_min.len())
            } else {
                format!("gone or not sampled at minute(s) {missing:?}")
            },
        ));
        let at = |m: u32| by_min.get(&m).copied().flatten();
        let (Some(w), Some(l)) = (at(warm), at(last)) else {
            continue;
        };
        let after: Vec<Mem> = (warm..=last).filter_map(at).collect();
        let peak = after.iter().map(|m| m.rss_kib).max().unwrap_or(0);
        let bound = RSS_SLACK_KIB.max(w.rss_kib * RSS_SLACK_PERCENT / 100);
        let growth = l.rss_kib.saturating_sub(w.rss_kib);
        v.push(check(
            format!(
                "`{role}` RSS from minute {warm} to the end grows by at most {:.1} MiB (the larger of {} MiB and {RSS_SLACK_PERCENT}%)",
                mib(bound),
                RSS_SLACK_KIB / 1024
            ),
            growth <= bound,
            format!(
                "{:.1} MiB at minute {warm}, {:.1} MiB at minute {last} ({:+.1} MiB), peak {:.1} MiB after the warm-up, high-water mark {:.1} MiB",
                mib(w.rss_kib),
                mib(l.rss_kib),
                mib(l.rss_kib) - mib(w.rss_kib),
                mib(peak),
                mib(l.hwm_kib)
            ),
        ));
        let fd_max = after.iter().map(|m| m.fds).max().unwrap_or(0);
        let fd_min = after.iter().map(|m| m.fds).min().unwrap_or(0);
        v.push(check(
            format!("`{role}` open fds constant from minute {warm} (at most +{FD_SLACK} during a rotation, back at the end)"),
            fd_max <= w.fds + FD_SLACK && l.fds == w.fds,
            format!("{} at minute {warm}, {fd_min}–{fd_max} after, {} at the end", w.fds, l.fds),
        ));
    }
    if s.samples.is_empty() {
        v.push(check("the capture was sampled", false, "no samples".into()));
    }
    if s.mode == "agent" {
        let over: Vec<(u32, u64)> = s
            .heartbeats
            .iter()
            .filter(|(_, h)| h.tracked > s.max_tracked)
            .map(|(m, h)| (*m, h.tracked))
            .collect();
        // The agent's own peak covers the moments between heartbeats.
        let peak = s
            .heartbeats
            .values()
            .chain(s.final_stats.as_ref())
            .map(|h| h.peak_tracked.max(h.tracked))
            .max()
            .unwrap_or(0);
        let beats = s.heartbeats.len();
        let end = s.final_stats.unwrap_or_default();
        v.push(check(
            format!(
                "analyzer tracked objects ≤ --max-tracked {} at every heartbeat and at its peak",
                s.max_tracked
            ),
            over.is_empty()
                && peak <= s.max_tracked
                && beats + 1 >= last as usize
                && s.final_stats.is_some()
                && s.bad_heartbeats.is_empty(),
            if s.bad_heartbeats.is_empty() {
                format!(
                    "{beats} heartbeats{}, peak {peak}; at the end {} events, {} lost, {} evictions{}",
                    if s.final_stats.is_some() { " and the final line" } else { ", no final line" },
                    end.events,
                    end.lost,
                    end.evictions,
                    if over.is_empty() {
                        String::new()
                    } else {
                        format!("; over the bound at {over:?}")
                    }
                )
            } else {
                format!("unreadable heartbeats: {}", s.bad_heartbeats.join("; "))
            },
        ));
        let silent: Vec<u32> = (0..=last)
            .filter(|m| s.metrics.get(m).is_none_or(|n| *n == 0))
            .collect();
        v.push(check(
            "the agent's /metrics answered at every minute",
            silent.is_empty(),
            if silent.is_empty() {
                format!(
                    "{} scrapes, {} lines in the last",
                    s.metrics.len(),
                    s.metrics.values().last().copied().unwrap_or(0)
                )
            } else {
                format!("no answer at minute(s) {silent:?}")
            },
        ));
    } else {
        v.push(Check {
            what: "analyzer tracked objects ≤ --max-tracked".into(),
            pass: None,
            detail: format!(
                "not observable with {} (no heartbeat); `replay --stats` of a segment shows the peak",
                s.mode
            ),
        });
    }
    v.push(check(
        "no `violation` finding",
        s.findings.read && s.findings.violations == 0,
        if s.findings.read {
            format!(
                "{} violation(s) among {} finding(s)",
                s.findings.violations, s.findings.total
            )
        } else {
            "the findings file was not read".into()
        },
    ));
    let most = s.files.values().map(Vec::len).max().unwrap_or(0);
    v.push(check(
        format!("rotation keeps at most {} files", s.keep),
        most <= s.keep as usize && !s.files.is_empty(),
        format!("at most {most} file(s) present at a sample"),
    ));
    let bad: Vec<&Run> = s.runs.iter().filter(|r| r.status != 0).collect();
    v.push(check(
        "every benign-soak run of the loop exited 0 (its own data checks passed)",
        !s.runs.is_empty() && bad.is_empty(),
        format!(
            "{} run(s), {} failed{}",
            s.runs.len(),
            bad.len(),
            bad.first()
                .map_or(String::new(), |r| format!(" (first: status {})", r.status))
        ),
    ));
    let bad_exits: Vec<&(String, i32)> = s.exits.iter().filter(|e| e.1 != 0).collect();
    v.push(check(
        "every capture stopped cleanly on SIGINT",
        !s.exits.is_empty() && bad_exits.is_empty(),
        s.exits
            .iter()
            .map(|(r, c)| format!("{r} {c}"))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    v
}

/// What the soak must have produced at all (its values are judged by
/// [`verdict`]).
pub(super) fn missing(s: &Soak) -> Option<String> {
    if !s.done {
        Some("the soak's end (the guest stopped before it)".into())
    } else if s.samples.is_empty() {
        Some("the soak's samples".into())
    } else {
        None
    }
}

/// Fails when the verdict does.
pub(super) fn judge(s: &Soak) -> Result<()> {
    let failed: Vec<String> = verdict(s)
        .into_iter()
        .filter(|c| c.pass == Some(false))
        .map(|c| format!("{} ({})", c.what, c.detail))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("the soak failed: {}", failed.join("; "))
    }
}

/// The soak's section of the report: the verdict, the per-minute table and
/// the RSS curve.
pub(super) fn render(p: &Plan, s: &Soak) -> String {
    let mut o = String::new();
    let checks = verdict(s);
    let pass = checks.iter().all(|c| c.pass != Some(false));
    let _ = writeln!(
        o,
        "### 6. Soak: {} minutes of benign-soak in a loop under {}\n",
        s.minutes,
        match s.mode.as_str() {
            "agent" => format!(
                "`detector agent --heartbeat 60s --max-tracked {} --record … --rotate-size {} --rotate-keep {}`",
                s.max_tracked, s.rotate_size, s.keep
            ),
            _ => format!(
                "`detector live --plain --max-tracked {}` and `detector record --rotate-size {} --rotate-keep {}` (the stand-in: two captures)",
                s.max_tracked, s.rotate_size, s.keep
            ),
        }
    );
    let _ = writeln!(
        o,
        "Run: `cargo xtask bench --phases soak --soak-minutes {}`, benign-soak `{}` restarted {} time(s). Verdict: **{}**.\n",
        p.soak_minutes,
        p.soak,
        s.runs.len(),
        if pass { "pass" } else { "FAIL" }
    );
    for c in &checks {
        let mark = match c.pass {
            Some(true) => "pass",
            Some(false) => "**FAIL**",
            None => "n/a",
        };
        let _ = writeln!(o, "- {mark}: {} — {}", c.what, c.detail);
    }
    for l in &s.logs {
        let _ = writeln!(o, "- log: {l}");
    }
    let roles: Vec<&String> = s.samples.keys().collect();
    let _ = write!(o, "\n| minute |");
    let mut rule = String::from("|---|");
    for r in &roles {
        let _ = write!(o, " {r} RSS MiB | {r} fds | {r} threads |");
        rule.push_str("---|---|---|");
    }
    let _ = writeln!(
        o,
        " tracked | evictions | events this minute | lost (total) | rotation files (MiB) |"
    );
    let _ = writeln!(o, "{rule}---|---|---|---|---|");
    let mut prev_events = 0;
    for m in 0..=s.minutes {
        let _ = write!(o, "| {m} |");
        for r in &roles {
            match s.samples[*r].get(&m).copied().flatten() {
                Some(x) => {
                    let _ = write!(o, " {:.1} | {} | {} |", mib(x.rss_kib), x.fds, x.threads);
                }
                None => o.push_str(" gone | – | – |"),
            }
        }
        let hb = s.heartbeats.get(&m);
        let lost = hb
            .map(|h| h.lost)
            .or_else(|| s.lost.get(&m).copied())
            .map_or("–".into(), |l| l.to_string());
        let files = s.files.get(&m).map_or("–".into(), |f| {
            f.iter()
                .map(|b| format!("{:.0}", *b as f64 / 1_048_576.0))
                .collect::<Vec<_>>()
                .join(" + ")
        });
        match hb {
            Some(h) => {
                let _ = writeln!(
                    o,
                    " {} | {} | {} | {lost} | {files} |",
                    h.tracked,
                    h.evictions,
                    h.events.saturating_sub(prev_events)
                );
                prev_events = h.events;
            }
            None => {
                let _ = writeln!(o, " – | – | – | {lost} | {files} |");
            }
        }
    }
    // The curve: RSS per minute as a bar scaled to the soak's peak.
    for r in &roles {
        let series: Vec<(u32, u64)> = s.samples[*r]
            .iter()
            .filter_map(|(m, x)| x.map(|x| (*m, x.rss_kib)))
            .collect();
        let peak = series.iter().map(|x| x.1).max().unwrap_or(1).max(1);
        let _ = writeln!(
            o,
            "\n`{r}` RSS, MiB per minute (bar: share of the peak, {:.1} MiB):\n\n```",
            mib(peak)
        );
        for (m, kib) in series {
            let width = (kib * 50).div_ceil(peak) as usize;
            let _ = writeln!(o, "{m:>4} {:>7.1} {}", mib(kib), "#".repeat(width));
        }
        let _ = writeln!(o, "```");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A soak log: `minutes` samples of one agent whose RSS grows by
    /// `leak_kib` a minute and whose fds grow by one every `fd_every`
    /// minutes (0: never).
    fn log(minutes: u32, leak_kib: u64, fd_every: u32, violation: bool) -> Soak {
        let mut text = format!(
            "soak-config mode=agent minutes={minutes} max_tracked=100000 rotate_size=64M rotate_keep=3\n"
        );
        let mut events = 0;
        let mut jsonl = String::new();
        for m in 0..=minutes {
            let rss = 30_000 + u64::from(m) * leak_kib;
            let fds = 12 + m.checked_div(fd_every).unwrap_or(0);
            let _ = writeln!(
                text,
                "soak-sample {m} agent rss_kb={rss} hwm_kb={rss} fds={fds} threads=4"
            );
            let _ = writeln!(text, "soak-files {m} 67108864 1000 ");
            let _ = writeln!(text, "soak-metrics {m} 240");
            events += 3_000_000;
            if m > 0 {
                // A heartbeat a little late, as under load.
                let _ = writeln!(
                    jsonl,
                    r#"{{"schema":1,"type":"stats","final":{},"uptime_s":{}.5,"events":{events},"lost":2,"tracked_objects":{},"peak_tracked_objects":0,"evictions":{},"findings":{{"violation":0}},"findings_total":1}}"#,
                    m == minutes,
                    60 * m + 4,
                    60_000 + 1000 * m,
                    m * 10
                );
            }
            if m == 1 {
                jsonl.push_str(if violation {
                    "{\"type\":\"finding\",\"severity\":\"violation\"}\n"
                } else {
                    "{\"type\":\"finding\",\"severity\":\"info\"}\n"
                });
            }
        }
        text.push_str("soak-run 1 0 10.5\nsoak-run 2 0 11.0\nsoak-exit agent 0\nsoak-end\n");
        let mut s = Soak::default();
        for line in text.lines() {
            let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
            parse_line(&mut s, tag, rest);
        }
        read_output(&mut s, &jsonl, true);
        s
    }

    fn failed(s: &Soak) -> Vec<String> {
        verdict(s)
            .into_iter()
            .filter(|c| c.pass == Some(false))
            .map(|c| c.what)
            .collect()
    }

    #[test]
    fn parses_samples_heartbeats_and_files() {
        let s = log(3, 0, 0, false);
        assert_eq!((s.mode.as_str(), s.minutes, s.keep), ("agent", 3, 3));
        assert_eq!(s.samples["agent"].len(), 4);
        assert_eq!(
            s.samples["agent"][&2],
            Some(Mem {
                rss_kib: 30_000,
                hwm_kib: 30_000,
                fds: 12,
                threads: 4
            })
        );
        assert_eq!(s.files[&1], vec![67_108_864, 1000]);
        // Placed by their uptime (124.5 s is minute 2), the last one apart.
        let h = s.heartbeats[&2];
        assert_eq!(
            (h.events, h.lost, h.tracked, h.evictions),
            (9_000_000, 2, 62_000, 20)
        );
        assert_eq!(s.heartbeats.len(), 2);
        assert_eq!(s.final_stats.map(|h| h.events), Some(12_000_000));
        assert_eq!(s.runs.len(), 2);
        assert!(s.done);
        assert_eq!(s.findings.total, 1, "a stats line is not a finding");
        assert!(judge(&s).is_ok(), "{:?}", failed(&s));
    }

    #[test]
    fn a_gone_process_and_a_bad_heartbeat_are_reported() {
        let mut s = Soak::default();
        parse_line(
            &mut s,
            "soak-config",
            "mode=agent minutes=2 max_tracked=10 rotate_keep=3",
        );
        parse_line(
            &mut s,
            "soak-sample",
            "0 agent rss_kb=1 hwm_kb=1 fds=3 threads=1",
        );
        parse_line(&mut s, "soak-sample", "1 agent gone");
        read_output(&mut s, "{\"type\":\"stats\"}\nnot json\n", true);
        assert_eq!(s.samples["agent"][&1], None);
        assert!(s.heartbeats.is_empty());
        assert_eq!(
            s.bad_heartbeats.len(),
            1,
            "only a stats line is a heartbeat"
        );
        let f = failed(&s);
        assert!(
            f.iter().any(|w| w.contains("sampled at every minute")),
            "{f:?}"
        );
        assert!(f.iter().any(|w| w.contains("tracked objects")), "{f:?}");
    }

    #[test]
    fn a_memory_leak_fails() {
        // 1 MiB a minute: 25 MiB over minutes 5-30, above the 8 MiB bound.
        let s = log(30, 1024, 0, false);
        let f = failed(&s);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("RSS"), "{f:?}");
        assert!(judge(&s).is_err());
        // Growth inside the warm-up only passes.
        assert!(judge(&log(30, 0, 0, false)).is_ok());
    }

    #[test]
    fn an_fd_leak_a_violation_and_tracked_over_the_bound_fail() {
        let f = failed(&log(30, 0, 7, false));
        assert!(f.len() == 1 && f[0].contains("fds"), "{f:?}");
        let f = failed(&log(30, 0, 0, true));
        assert!(f.len() == 1 && f[0].contains("violation"), "{f:?}");
        let mut s = log(30, 0, 0, false);
        s.max_tracked = 80_000;
        let f = failed(&s);
        assert!(f.len() == 1 && f[0].contains("tracked"), "{f:?}");
        s.max_tracked = 100_000;
        // Over the bound only between two heartbeats: the agent's peak says.
        if let Some(h) = s.final_stats.as_mut() {
            h.peak_tracked = 100_001;
        }
        let f = failed(&s);
        assert!(f.len() == 1 && f[0].contains("tracked"), "{f:?}");
        if let Some(h) = s.final_stats.as_mut() {
            h.peak_tracked = 100_000;
        }
        s.files.insert(9, vec![1, 2, 3, 4]);
        let f = failed(&s);
        assert!(f.len() == 1 && f[0].contains("rotation"), "{f:?}");
        s.files.insert(9, vec![1, 2, 3]);
        s.metrics.insert(12, 0);
        let f = failed(&s);
        assert!(f.len() == 1 && f[0].contains("/metrics"), "{f:?}");
    }

    #[test]
    fn plain_findings_count_violations_only_on_finding_lines() {
        let text = "12.5s #3 violation swap_aba [e=1:2] task=x/1 ...\n\
                    13.0s #4 info pin_contention [..]\n\
                    14.0s group violation swap_aba task=x/1 count=10 first=#3 latest=#9: ...\n\
                    detector: not a finding\n";
        let mut s = Soak::default();
        read_output(&mut s, text, false);
        assert_eq!((s.findings.total, s.findings.violations), (2, 1));
    }

    #[test]
    fn warmup_is_five_minutes_or_half_a_short_soak() {
        assert_eq!(warmup(30), 5);
        assert_eq!(warmup(3), 1);
    }
}
