//! The agent's findings stream: JSON lines to standard output or a file.
//!
//! Every line is one object with `schema` ([`SCHEMA`]), `type`
//! (`finding`, `stats`, `lost` or `snapshot`), `time_unix_ms` (wall clock when
//! written), `boot_id` and `kernel_release`; a `finding` line's other keys
//! are the finding exactly as `replay --format json` lists it (the
//! analyzer's [`Finding`], serialized by serde), so one line parses as a
//! `Finding`. docs/agent.md describes every field.
//!
//! A file is opened for appending and reopened on request (SIGHUP, after
//! logrotate moved it). A failed write never stops the agent: it is
//! counted, the lines it lost are counted, the output is closed, and it is
//! reopened on the next SIGHUP or when the backoff runs out; lines written
//! meanwhile are dropped and counted.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::metrics::AgentMetrics;
use crate::analyzer::{Finding, RuleId, Severity};
use crate::flight::SnapshotState;
use crate::groups::SeverityCounts;
use crate::present::report::ProbeCount;
use crate::trace::PRIVATE_MODE;

/// Version of the line format. Fields and line types are only ever added
/// within a version (readers skip types they do not know); a change that
/// renames or removes one raises it.
pub const SCHEMA: u32 = 1;

/// First wait before a broken output is reopened; doubled per failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between reopen attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The fields every line starts with.
#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    schema: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    time_unix_ms: u64,
    boot_id: &'a str,
    kernel_release: &'a str,
    #[serde(flatten)]
    body: T,
}

/// A probe's lost-event total grew.
#[derive(Debug, Serialize)]
pub struct LostLine<'a> {
    pub probe: &'a str,
    /// The probe's running total.
    pub total: u64,
    /// Lost since the previous line of this probe.
    pub new: u64,
    /// Stream time (CLOCK_MONOTONIC ns) where the loss was seen.
    pub ts_ns: u64,
}

/// The flight recorder closed a snapshot on disk.
#[derive(Debug, Serialize)]
pub struct SnapshotLine<'a> {
    /// The trace (`detector replay` reads it) and its manifest.
    pub path: &'a Path,
    pub manifest: &'a Path,
    /// The finding that triggered it: its id (as on its `finding` line),
    /// rule and severity.
    pub finding_id: u64,
    pub rule: RuleId,
    pub severity: Severity,
    /// `complete`, `cut_size`, `cut_budget` or `stream_ended`.
    pub state: SnapshotState,
    pub trace_bytes: u64,
}

/// Problems the agent counted and went on after.
#[derive(Debug, Default, Serialize)]
pub struct ProblemCounts {
    pub findings_write_errors: u64,
    pub findings_lines_dropped: u64,
    pub recording_errors: u64,
    pub malformed_events: u64,
}

/// The periodic heartbeat, and the last line a stopped agent writes
/// (`final`).
#[derive(Debug, Serialize)]
pub struct StatsLine {
    #[serde(rename = "final")]
    pub last: bool,
    pub uptime_s: f64,
    pub items: u64,
    pub events: u64,
    pub lost: u64,
    /// Every probe that delivered or lost events (as `replay`'s report).
    pub probes: Vec<ProbeCount>,
    pub tracked_objects: u64,
    pub peak_tracked_objects: u64,
    pub evictions: u64,
    pub open_windows: u64,
    pub rss_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    /// Findings reported so far, by severity.
    pub findings: SeverityCounts,
    pub findings_total: u64,
    pub problems: ProblemCounts,
}

/// Where lines go.
enum Target {
    Stdout,
    File(PathBuf),
}

/// A finding, stats or lost line writer with its failure handling.
pub struct JsonlOutput {
    target: Target,
    out: Option<BufWriter<Box<dyn Write + Send>>>,
    /// Lines buffered since the last successful flush (lost with it).
    pending: u64,
    backoff: Duration,
    retry_at: Option<Instant>,
    boot_id: String,
    kernel_release: String,
    buf: Vec<u8>,
    metrics: Arc<AgentMetrics>,
}

/// Opens `path` for appending, mode 0600 when created (findings name
/// kernel addresses, as traces do). A file whose last line was cut off by
/// an earlier failure gets a line break, so the next line starts clean.
fn open_append(path: &Path) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .append(true)
        .read(true)
        .create(true)
        .mode(PRIVATE_MODE)
        .open(path)?;
    let meta = f.metadata()?;
    if meta.is_file() && meta.len() > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::End(-1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            f.write_all(b"\n")?;
        }
    }
    Ok(f)
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl JsonlOutput {
    /// Standard output.
    pub fn stdout(boot_id: &str, kernel_release: &str, metrics: Arc<AgentMetrics>) -> Self {
        let mut o = JsonlOutput::new(Target::Stdout, boot_id, kernel_release, metrics);
        o.out = Some(BufWriter::new(Box::new(io::stdout())));
        o
    }

    /// `path`, appended to; an error opening it is returned (at start, a
    /// path that cannot work is a configuration error).
    pub fn file(
        path: &Path,
        boot_id: &str,
        kernel_release: &str,
        metrics: Arc<AgentMetrics>,
    ) -> io::Result<Self> {
        let f = open_append(path)?;
        let mut o = JsonlOutput::new(
            Target::File(path.to_path_buf()),
            boot_id,
            kernel_release,
            metrics,
        );
        o.out = Some(BufWriter::new(Box::new(f)));
        Ok(o)
    }

    fn new(
        target: Target,
        boot_id: &str,
        kernel_release: &str,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        JsonlOutput {
            target,
            out: None,
            pending: 0,
            backoff: FIRST_BACKOFF,
            retry_at: None,
            boot_id: boot_id.trim().to_string(),
            kernel_release: kernel_release.to_string(),
            buf: Vec::with_capacity(4096),
            metrics,
        }
    }

    fn describe(&self) -> String {
        match &self.target {
            Target::Stdout => "standard output".to_string(),
            Target::File(p) => p.display().to_string(),
        }
    }

    /// Whether lines are being written (not waiting for a reopen).
    pub fn is_open(&self) -> bool {
        self.out.is_some()
    }

    fn line<T: Serialize>(&mut self, kind: &'static str, type_index: usize, body: T) {
        self.buf.clear();
        let line = Line {
            schema: SCHEMA,
            kind,
            time_unix_ms: now_unix_ms(),
            boot_id: &self.boot_id,
            kernel_release: &self.kernel_release,
            body,
        };
        if serde_json::to_writer(&mut self.buf, &line).is_err() {
            return;
        }
        self.buf.push(b'\n');
        let Some(out) = self.out.as_mut() else {
            self.metrics
                .problems
                .findings_lines_dropped
                .fetch_add(1, Relaxed);
            return;
        };
        self.pending += 1;
        match out.write_all(&self.buf) {
            Ok(()) => {
                self.metrics.lines[type_index].fetch_add(1, Relaxed);
            }
            Err(e) => self.failed(&e),
        }
    }

    pub fn finding(&mut self, f: &Finding) {
        self.line("finding", 0, f);
    }

    pub fn stats(&mut self, s: &StatsLine) {
        self.line("stats", 1, s);
    }

    pub fn lost(&mut self, l: &LostLine<'_>) {
        self.line("lost", 2, l);
    }

    pub fn snapshot(&mut self, l: &SnapshotLine<'_>) {
        self.line("snapshot", 3, l);
    }

    /// Writes what is buffered (once per pull).
    pub fn flush(&mut self) {
        if let Some(out) = self.out.as_mut() {
            match out.flush() {
                Ok(()) => {
                    self.pending = 0;
                    self.backoff = FIRST_BACKOFF;
                }
                Err(e) => self.failed(&e),
            }
        }
    }

    /// A write failed: count it and the lines it took with it, close the
    /// output without flushing again, and schedule the reopen.
    fn failed(&mut self, e: &io::Error) {
        let p = &self.metrics.problems;
        p.findings_write_errors.fetch_add(1, Relaxed);
        p.findings_lines_dropped.fetch_add(self.pending, Relaxed);
        self.pending = 0;
        if let Some(out) = self.out.take() {
            // Dropping a BufWriter flushes it; discard the buffer instead.
            let _ = out.into_parts();
        }
        self.retry_at = Some(Instant::now() + self.backoff);
        log::error!(
            "writing findings to {} failed ({e}); lines are dropped and counted until it is \
             reopened (in {:?}, or on SIGHUP)",
            self.describe(),
            self.backoff
        );
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Reopens the output (SIGHUP): a file is closed and opened again at
    /// its path, a broken standard output is tried again.
    pub fn reopen(&mut self) {
        if let Some(mut out) = self.out.take() {
            if out.flush().is_err() {
                let p = &self.metrics.problems;
                p.findings_write_errors.fetch_add(1, Relaxed);
                p.findings_lines_dropped.fetch_add(self.pending, Relaxed);
                let _ = out.into_parts();
            }
            self.pending = 0;
        }
        self.try_open();
    }

    /// Reopens a broken output once its backoff ran out.
    pub fn retry_if_due(&mut self, now: Instant) {
        if self.out.is_none() && self.retry_at.is_some_and(|t| now >= t) {
            self.try_open();
        }
    }

    fn try_open(&mut self) {
        let opened: io::Result<Box<dyn Write + Send>> = match &self.target {
            Target::Stdout => Ok(Box::new(io::stdout())),
            Target::File(p) => open_append(p).map(|f| Box::new(f) as Box<dyn Write + Send>),
        };
        match opened {
            Ok(w) => {
                self.out = Some(BufWriter::new(w));
                self.retry_at = None;
                self.metrics.problems.findings_reopens.fetch_add(1, Relaxed);
                log::info!("findings output {} (re)opened", self.describe());
            }
            Err(e) => {
                self.metrics
                    .problems
                    .findings_write_errors
                    .fetch_add(1, Relaxed);
                self.retry_at = Some(Instant::now() + self.backoff);
                log::warn!(
                    "cannot reopen findings output {} ({e}); next try in {:?}",
                    self.describe(),
                    self.backoff
                );
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyzer::{Confidence, Objects, RuleId, Severity};

    fn metrics() -> Arc<AgentMetrics> {
        Arc::new(AgentMetrics::new("6.12.0-test", &[], &[], false))
    }

    pub(crate) fn finding(id: u64) -> Finding {
        Finding {
            id,
            rule: RuleId::LazyfreeExtraRefs,
            severity: Severity::NearMiss,
            objects: Objects {
                entries: vec![],
                folios: vec!["0xffffea0000012340".into()],
                tids: vec![7],
            },
            explanation: "kept by the refcount check".into(),
            evidence: vec![],
            confidence: Confidence::full(),
            cause: "kept_by_refcount_check".into(),
        }
    }

    fn lines(p: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn every_line_has_the_envelope_and_a_finding_line_is_a_finding() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.jsonl");
        let m = metrics();
        let mut o = JsonlOutput::file(&p, "abc-boot\n", "6.12.0-test", m.clone()).unwrap();
        o.finding(&finding(1));
        o.lost(&LostLine {
            probe: "swap_cache_lookup",
            total: 9,
            new: 4,
            ts_ns: 123,
        });
        o.flush();
        let v = lines(&p);
        assert_eq!(v.len(), 2);
        for l in &v {
            assert_eq!(l["schema"], SCHEMA);
            assert_eq!(l["boot_id"], "abc-boot");
            assert_eq!(l["kernel_release"], "6.12.0-test");
            assert!(l["time_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
        }
        assert_eq!(v[0]["type"], "finding");
        assert_eq!(v[0]["rule"], "lazyfree_extra_refs");
        // The finding's own schema, exactly: the line reads back as it.
        let back: Finding = serde_json::from_value(v[0].clone()).unwrap();
        assert_eq!(back, finding(1));
        assert_eq!((&v[1]["type"], &v[1]["new"]), (&"lost".into(), &4.into()));
        assert_eq!(m.lines[0].load(Relaxed), 1);
        assert_eq!(m.lines[2].load(Relaxed), 1);
        // The file is private.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn reopen_follows_a_renamed_file_and_heals_a_cut_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.jsonl");
        let m = metrics();
        let mut o = JsonlOutput::file(&p, "b", "k", m.clone()).unwrap();
        o.finding(&finding(1));
        o.flush();
        // logrotate: rename, then SIGHUP.
        let moved = dir.path().join("f.jsonl.1");
        std::fs::rename(&p, &moved).unwrap();
        o.finding(&finding(2));
        o.reopen();
        o.finding(&finding(3));
        o.flush();
        assert_eq!(
            lines(&moved).len(),
            2,
            "the line before the reopen went to the old file"
        );
        let now = lines(&p);
        assert_eq!(now.len(), 1);
        assert_eq!(now[0]["id"], 3);
        assert_eq!(m.problems.findings_reopens.load(Relaxed), 1);

        // A line cut off mid-write: the next one starts on its own line.
        std::fs::write(&p, b"{\"schema\":1,\"ty").unwrap();
        o.reopen();
        o.finding(&finding(4));
        o.flush();
        let text = std::fs::read_to_string(&p).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["id"], 4);
    }

    #[test]
    fn a_full_disk_is_counted_and_the_output_retried_after_a_backoff() {
        let m = metrics();
        // /dev/full fails every write with ENOSPC.
        let mut o = JsonlOutput::file(Path::new("/dev/full"), "b", "k", m.clone()).unwrap();
        o.finding(&finding(1));
        o.finding(&finding(2));
        o.flush();
        let p = &m.problems;
        assert_eq!(p.findings_write_errors.load(Relaxed), 1);
        assert_eq!(p.findings_lines_dropped.load(Relaxed), 2);
        assert!(!o.is_open());
        // Broken: lines are dropped, not written, until the retry.
        o.finding(&finding(3));
        assert_eq!(p.findings_lines_dropped.load(Relaxed), 3);
        o.retry_if_due(Instant::now());
        assert!(!o.is_open(), "retried before the backoff ran out");
        o.retry_if_due(Instant::now() + FIRST_BACKOFF);
        assert!(o.is_open());
        assert_eq!(p.findings_reopens.load(Relaxed), 1);
        // Still full: the next failure waits twice as long.
        o.finding(&finding(4));
        o.flush();
        assert_eq!(p.findings_write_errors.load(Relaxed), 2);
        o.retry_if_due(Instant::now() + FIRST_BACKOFF);
        assert!(!o.is_open());
        o.retry_if_due(Instant::now() + FIRST_BACKOFF * 2);
        assert!(o.is_open());
    }
}
