//! `detector record`: capture kernel events into a trace file.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use detector_common::{Filter, ProbeId};
use tokio::signal::unix::{signal, SignalKind};

use crate::analyzer::{Analyzer, Config as AnalyzerConfig, Finding};
use crate::bpfstats::{write_probe_costs, CostMeter};
use crate::capture::{monotonic_ns, Capture};
use crate::event::StreamItem;
use crate::loader::{self, AttachPolicy, LoadOptions, DEFAULT_RING_BYTES};
use crate::plan::AttachMode;
use crate::trace::{RotatingWriter, RotationPolicy, TraceEnd, TraceHeader};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trace file to write (replaced if it exists).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Stop after this long (e.g. 30s, 5m, 1h); default: until Ctrl-C / SIGTERM.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Only events of this process (thread group id).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only events of tasks in this cgroup v2 directory.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Start a new file segment when the current one exceeds this size (e.g. 256M).
    #[arg(long, value_parser = parse_size)]
    pub rotate_size: Option<u64>,
    /// How many segments to keep on disk when rotating (oldest deleted).
    #[arg(long, default_value_t = 4, requires = "rotate_size")]
    pub rotate_keep: u32,
    /// Ring buffer size in bytes (power of two, e.g. 4M).
    #[arg(long, value_parser = parse_size, default_value_t = DEFAULT_RING_BYTES as u64)]
    pub ring_size: u64,
    /// Attach modes to try.
    #[arg(long, value_enum, default_value_t = AttachPolicy::Auto)]
    pub attach: AttachPolicy,
    /// Drain the ring buffer at least this often (bounds how late a quiet
    /// stream reaches the file and the analyzer).
    #[arg(long, value_parser = parse_duration, default_value = "50ms")]
    pub drain_every: Duration,
    /// Unread bytes at which the kernel wakes the reader early (default: a
    /// quarter of the ring; 0 wakes on every record, which costs a wakeup
    /// per event on a busy kernel).
    #[arg(long, value_parser = parse_wakeup)]
    pub wakeup_bytes: Option<u64>,
    /// Turn off the in-kernel relevance filters (docs/probes.md): every call
    /// of every probe becomes an event, including the ones no rule uses.
    #[arg(long)]
    pub unfiltered: bool,
    /// Run the analyzer while recording: findings are printed as they
    /// happen and summarized at the end (the same findings `replay` gives).
    #[arg(long)]
    pub analyze: bool,
    /// With --analyze: measure, per event, the time from the kernel's
    /// timestamp to the moment the analyzer has processed it (when any
    /// finding it completes is available), and print percentiles at the end.
    #[arg(long, requires = "analyze")]
    pub latency: bool,
    /// Turn on the kernel's BPF run-time statistics for the run and print
    /// each probe's cost per event at the end (the kernel then times every
    /// program run, which itself costs a little).
    #[arg(long)]
    pub stats: bool,
}

/// `30s`, `5m`, `1h`, `250ms` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 30s, 5m, 1h)"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("`{s}` has an unknown unit (use ms, s, m or h)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("`{s}` must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// This process's CPU time so far (user, system) in seconds: what the
/// reader, the file and the analyzer cost, apart from the probes.
fn cpu_times() -> Option<(f64, f64)> {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid and writable for the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some((secs(ru.ru_utime), secs(ru.ru_stime)))
}

/// A size as [`parse_size`], or 0.
fn parse_wakeup(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    parse_size(s)
}

/// `4096`, `64K`, `4M`, `1G` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (try 4096, 64K, 4M, 1G)"))?;
    let mult: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("`{s}` has an unknown unit (use K, M or G)")),
    };
    v.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("`{s}` must be a positive size"))
}

/// Checks a `--ring-size` value: the kernel wants a power of two of at
/// least one page.
pub fn ring_bytes(size: u64) -> anyhow::Result<u32> {
    u32::try_from(size)
        .ok()
        .filter(|v| *v >= 4096 && v.is_power_of_two())
        .ok_or_else(|| {
            anyhow::anyhow!("--ring-size must be a power of two between 4K and 2G, got {size}")
        })
}

/// The cgroup v2 id the kernel reports for tasks in `dir`: the directory's
/// inode number.
pub fn cgroup_id(dir: &std::path::Path) -> anyhow::Result<u64> {
    let meta = std::fs::metadata(dir).with_context(|| {
        format!(
            "cannot open cgroup {}; give a cgroup v2 directory such as /sys/fs/cgroup/mygroup",
            dir.display()
        )
    })?;
    if !meta.is_dir() {
        bail!(
            "--cgroup {} is not a directory; give a cgroup v2 directory",
            dir.display()
        );
    }
    Ok(meta.ino())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ring_bytes = ring_bytes(args.ring_size)?;
    if args.rotate_keep == 0 {
        bail!("--rotate-keep must be at least 1");
    }
    if args
        .wakeup_bytes
        .is_some_and(|w| w >= u64::from(ring_bytes))
    {
        bail!(
            "--wakeup-bytes must be smaller than the ring buffer ({ring_bytes} bytes): a ring that fills before the threshold never wakes the reader early; lower it or raise --ring-size"
        );
    }
    let cgroup_id = match &args.cgroup {
        Some(p) => cgroup_id(p)?,
        None => 0,
    };
    loader::preflight()?;
    let opts = LoadOptions {
        ring_bytes,
        filter: Filter {
            tgid: args.pid.unwrap_or(0),
            _pad: 0,
            cgroup_id,
        },
        policy: args.attach,
        wakeup_bytes: args.wakeup_bytes,
        unfiltered: args.unfiltered,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    rt.block_on(record(args, opts))
}

async fn record(args: Args, opts: LoadOptions) -> anyhow::Result<ExitCode> {
    let mut cap = Capture::start(&opts)?;
    let meter = args.stats.then(|| CostMeter::start(cap.loaded()));
    let plan = cap.plan().to_vec();
    let count = |m: AttachMode| plan.iter().filter(|p| p.mode == m).count();
    eprintln!(
        "detector: attached {} probes ({} fentry, {} kprobe, {} tracepoint), {} unavailable; ring buffer {} KiB",
        plan.len() - count(AttachMode::Unavailable),
        count(AttachMode::Fentry),
        count(AttachMode::Kprobe),
        count(AttachMode::Tracepoint),
        count(AttachMode::Unavailable),
        opts.ring_bytes / 1024
    );
    if let Some(s) = loader::degraded_statement(&plan) {
        eprintln!("detector: {s}");
    }

    let header =
        TraceHeader::for_this_host("live", &cap.loaded().layout, plan, opts.ring_bytes as u64);
    let policy = RotationPolicy {
        max_bytes: args.rotate_size.unwrap_or(u64::MAX),
        keep: if args.rotate_size.is_some() {
            args.rotate_keep
        } else {
            1
        },
    };
    let mut out = RotatingWriter::create(&args.output, &header, policy)
        .with_context(|| format!("cannot create {}", args.output.display()))?;

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let deadline = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);

    let started = Instant::now();
    // Loading and verifying the programs costs seconds of system time on a
    // slow machine; the per-event figure is the reader's, from here on.
    let cpu_at_attach = cpu_times();
    let mut batch: Vec<StreamItem> = Vec::with_capacity(8192);
    let mut sink = Sink {
        per_probe: [0; detector_common::MAX_PROBES as usize],
        events: 0,
        items: 0,
        analyzer: args
            .analyze
            .then(|| Analyzer::new(AnalyzerConfig::default())),
        findings: Vec::new(),
        printed: 0,
        latency: if args.latency {
            Some(Latency::new()?)
        } else {
            None
        },
    };
    let mut last_lost_poll = Instant::now();
    let stop_reason;
    loop {
        tokio::select! {
            biased;
            _ = sigint.recv() => { stop_reason = "interrupted (SIGINT)"; break; }
            _ = sigterm.recv() => { stop_reason = "terminated (SIGTERM)"; break; }
            _ = &mut deadline => { stop_reason = "duration elapsed"; break; }
            r = read(&mut cap, &mut sink, &mut out, &mut batch, args.drain_every) => { r?; }
        }
        if last_lost_poll.elapsed() >= Duration::from_millis(250) {
            cap.poll_lost(monotonic_ns(), &mut batch)?;
            last_lost_poll = Instant::now();
        }
        sink.write_batch(&mut out, &mut batch)?;
    }
    // Everything the kernel already handed over goes into the file.
    if sink.raw() {
        let mut failed = None;
        cap.drain_raw(&mut |b| sink.raw_event(&mut out, b, &mut failed));
        written(failed)?;
    } else {
        cap.drain(&mut batch);
    }
    cap.poll_lost(monotonic_ns(), &mut batch)?;
    sink.write_batch(&mut out, &mut batch)?;
    if let Some(a) = sink.analyzer.as_mut() {
        a.finish(&mut sink.findings);
        sink.print_new();
    }
    let Sink {
        per_probe,
        events,
        findings,
        latency,
        ..
    } = sink;
    let lost: BTreeMap<&str, u64> = ProbeId::ALL
        .iter()
        .map(|p| (p.name(), cap.lost_totals()[*p as usize]))
        .filter(|(_, v)| *v > 0)
        .collect();
    let skipped_total: u64 = cap.skipped_totals().iter().sum();
    let malformed = cap.malformed;
    let mut costs = Vec::new();
    if let Some(m) = &meter {
        let _ = write_probe_costs(m, cap.loaded(), &mut costs);
    }
    drop(meter);
    drop(cap);
    let summary = out
        .finish(TraceEnd::now(stop_reason))
        .with_context(|| format!("finishing {}", args.output.display()))?;

    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let lost_total: u64 = lost.values().sum();
    eprintln!(
        "detector: {stop_reason}: {events} events in {secs:.1}s ({:.0} events/s), lost {lost_total}, {} bytes in {} file(s): {}",
        events as f64 / secs,
        summary.bytes,
        summary.files.len(),
        args.output.display()
    );
    if let (Some((u0, s0)), Some((u1, s1))) = (cpu_at_attach, cpu_times()) {
        let (user, sys) = (u1 - u0, s1 - s0);
        eprintln!(
            "detector: CPU since attach {:.2}s user + {:.2}s system ({:.2} µs per event)",
            user,
            sys,
            (user + sys) * 1e6 / events.max(1) as f64
        );
    }
    for p in ProbeId::ALL {
        let n = per_probe[*p as usize];
        let l = lost.get(p.name()).copied().unwrap_or(0);
        if n > 0 || l > 0 {
            eprintln!("  {:<22} {:>10} events {:>8} lost", p.name(), n, l);
        }
    }
    if malformed > 0 {
        eprintln!("detector: {malformed} ring-buffer records had the wrong size and were skipped");
    }
    if lost_total > 0 {
        eprintln!(
            "detector: events were lost (the ring buffer filled, or in kprobe mode the kernel skipped a probe); a larger --ring-size or a --pid/--cgroup filter reduces ring-buffer loss"
        );
    }
    if skipped_total > 0 {
        eprintln!(
            "detector: {skipped_total} of the lost events are calls the kernel did not trace because the probe was already running on that CPU (a preempted probe on a preemptible kernel, or kprobe recursion), not ring-buffer overflow"
        );
    }
    if let Some(l) = &latency {
        l.print();
    }
    if !costs.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&costs));
    }
    if args.analyze {
        eprintln!(
            "detector: analysis: {} finding(s); `detector replay {}` gives the full report",
            findings.len(),
            args.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Where captured items go: the file first, then the analyzer (in the same
/// order, with the same record numbers a reader of the file will see).
struct Sink {
    per_probe: [u64; detector_common::MAX_PROBES as usize],
    events: u64,
    items: u64,
    analyzer: Option<Analyzer>,
    findings: Vec<Finding>,
    printed: usize,
    latency: Option<Latency>,
}

/// Kernel timestamp to analyzed, in microseconds, for every event and for
/// the events that completed a finding.
struct Latency {
    events: hdrhistogram::Histogram<u64>,
    findings: hdrhistogram::Histogram<u64>,
}

impl Latency {
    fn new() -> anyhow::Result<Latency> {
        // Microseconds, three significant digits, up to an hour.
        let h = || {
            hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .context("creating the latency histogram")
        };
        Ok(Latency {
            events: h()?,
            findings: h()?,
        })
    }

    fn print(&self) {
        for (what, h) in [("events", &self.events), ("findings", &self.findings)] {
            if h.is_empty() {
                eprintln!("latency {what}: none");
                continue;
            }
            eprintln!(
                "latency {what}: n={} p50={:.2}ms p99={:.2}ms max={:.2}ms (kernel timestamp to analyzed)",
                h.len(),
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.max() as f64 / 1000.0
            );
        }
    }
}

/// One read of the ring buffer into the sink. When nothing needs decoded
/// events (no analyzer, no latency), events go from the ring buffer's
/// memory into the file's buffer without being copied out first: on a busy
/// kernel the reader's per-event work is most of what recording costs.
async fn read(
    cap: &mut Capture,
    sink: &mut Sink,
    out: &mut RotatingWriter,
    batch: &mut Vec<StreamItem>,
    wait: Duration,
) -> anyhow::Result<()> {
    if !sink.raw() {
        cap.read_batch(batch, wait).await?;
        return Ok(());
    }
    let mut failed = None;
    cap.read_raw(wait, &mut |b| sink.raw_event(out, b, &mut failed))
        .await?;
    written(failed)
}

/// The outcome of a raw read, whose per-event callback keeps the first
/// write error instead of returning it.
fn written(failed: Option<crate::trace::TraceError>) -> anyhow::Result<()> {
    match failed {
        Some(e) => Err(e).context("writing the trace file"),
        None => Ok(()),
    }
}

impl Sink {
    /// Whether events can skip decoding (see [`read`]). The ring buffer
    /// holds native-endian events and the file little-endian ones.
    fn raw(&self) -> bool {
        cfg!(target_endian = "little") && self.analyzer.is_none() && self.latency.is_none()
    }

    fn count(&mut self, probe: u16) {
        self.events += 1;
        if let Some(c) = self.per_probe.get_mut(usize::from(probe)) {
            *c += 1;
        }
    }

    fn raw_event(
        &mut self,
        out: &mut RotatingWriter,
        b: &[u8; detector_common::EVENT_SIZE],
        failed: &mut Option<crate::trace::TraceError>,
    ) {
        if failed.is_some() {
            return;
        }
        self.count(crate::trace::event_probe(b));
        self.items += 1;
        if let Err(e) = out.write_event_bytes(b) {
            *failed = Some(e);
        }
    }

    fn write_batch(
        &mut self,
        out: &mut RotatingWriter,
        batch: &mut Vec<StreamItem>,
    ) -> anyhow::Result<()> {
        for item in batch.iter() {
            if let StreamItem::Event(e) = item {
                self.count(e.probe);
            }
            out.write_item(item).context("writing the trace file")?;
            if let Some(a) = self.analyzer.as_mut() {
                a.process(self.items, item, &mut self.findings);
            }
            self.items += 1;
        }
        if let Some(l) = self.latency.as_mut() {
            // One clock read per batch: every event of the batch became
            // analyzed (and its findings available) by now.
            let now = monotonic_ns();
            for item in batch.iter() {
                if let StreamItem::Event(e) = item {
                    l.events
                        .saturating_record(now.saturating_sub(e.ts_ns) / 1000);
                }
            }
            for f in &self.findings[self.printed..] {
                if let Some(last) = f.evidence.iter().map(|e| e.ts_ns).max() {
                    l.findings
                        .saturating_record(now.saturating_sub(last) / 1000);
                }
            }
        }
        batch.clear();
        self.print_new();
        Ok(())
    }

    fn print_new(&mut self) {
        let mut err = std::io::stderr().lock();
        for f in &self.findings[self.printed..] {
            let _ = crate::report::render_finding(&mut err, f);
        }
        self.printed = self.findings.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("4T").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("0").is_err());
    }
}
