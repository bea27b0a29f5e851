//! Flags more than one command takes: the capture's (flattened into
//! `record` and `live`, and into any command that captures) and the
//! analyzer's; and the parsers of durations and sizes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use detector_common::Filter;
use thiserror::Error;

use crate::loader::{AttachPolicy, BpfLog, LoadOptions, DEFAULT_RING_BYTES};
use crate::stream::Overrides;

/// How to capture from the running kernel.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct CaptureArgs {
    /// Only events of this process (thread group id).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Only events of tasks in this cgroup v2 directory.
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<PathBuf>,
    /// Ring buffer size in bytes, a power of two (e.g. 16M; default 4M).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub ring_size: Option<u64>,
    /// Attach modes to try.
    #[arg(long, value_enum, default_value_t = AttachPolicy::Auto)]
    pub attach: AttachPolicy,
    /// Turn off the in-kernel relevance filters (docs/probes.md): every call
    /// of every probe becomes an event, including the ones no rule uses.
    #[arg(long)]
    pub unfiltered: bool,
    /// Drain the ring buffer at least this often (bounds how late a quiet
    /// stream reaches the file and the analyzer).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "50ms")]
    pub drain_every: Duration,
    /// Unread bytes at which the kernel wakes the reader early (default: a
    /// quarter of the ring; 0 wakes on every record, which costs a wakeup
    /// per event on a busy kernel).
    #[arg(long, value_name = "BYTES", value_parser = parse_wakeup)]
    pub wakeup_bytes: Option<u64>,
    /// Show the BPF programs' own diagnostics on stderr at this level and
    /// above (a kernel read that failed, a folio or an argument that could
    /// not be read, a layout the programs did not expect; docs/probes.md).
    /// Off costs nothing per event.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = BpfLog::Off)]
    pub bpf_log: BpfLog,
    /// Test only: make the programs hit two diagnostic paths on every
    /// kernel (`loader::SELFTEST_ARG`).
    #[arg(long, hide = true)]
    pub bpf_log_selftest: bool,
}

/// A capture flag that cannot work, in one sentence.
#[derive(Debug, Error)]
pub enum ArgError {
    #[error("--ring-size must be a power of two between 4K and 2G, got {0}")]
    RingSize(u64),
    #[error(
        "--wakeup-bytes must be smaller than the ring buffer ({0} bytes): a ring that fills \
         before the threshold never wakes the reader early; lower it or raise --ring-size"
    )]
    Wakeup(u32),
    #[error(
        "cannot open cgroup {}; give a cgroup v2 directory such as /sys/fs/cgroup/mygroup",
        .path.display()
    )]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--cgroup {} is not a directory; give a cgroup v2 directory", .0.display())]
    NotCgroupDir(PathBuf),
}

impl CaptureArgs {
    /// What the loader is asked for; checked before anything is loaded.
    pub fn load_options(&self) -> Result<LoadOptions, ArgError> {
        let ring_bytes = match self.ring_size {
            Some(s) => ring_bytes(s)?,
            None => DEFAULT_RING_BYTES,
        };
        if self
            .wakeup_bytes
            .is_some_and(|w| w >= u64::from(ring_bytes))
        {
            return Err(ArgError::Wakeup(ring_bytes));
        }
        let cgroup_id = match &self.cgroup {
            Some(p) => cgroup_id(p)?,
            None => 0,
        };
        Ok(LoadOptions {
            ring_bytes,
            filter: Filter {
                tgid: self.pid.unwrap_or(0),
                _pad: 0,
                cgroup_id,
            },
            policy: self.attach,
            wakeup_bytes: self.wakeup_bytes,
            unfiltered: self.unfiltered,
            bpf_log: self.bpf_log,
            bpf_log_selftest: self.bpf_log_selftest,
        })
    }
}

/// The kernel wants a power of two of at least one page.
fn ring_bytes(size: u64) -> Result<u32, ArgError> {
    u32::try_from(size)
        .ok()
        .filter(|v| *v >= 4096 && v.is_power_of_two())
        .ok_or(ArgError::RingSize(size))
}

/// The cgroup v2 id the kernel reports for tasks in `dir`: the directory's
/// inode number.
fn cgroup_id(dir: &Path) -> Result<u64, ArgError> {
    let meta = std::fs::metadata(dir).map_err(|source| ArgError::Cgroup {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ArgError::NotCgroupDir(dir.to_path_buf()));
    }
    Ok(meta.ino())
}

/// Analyzer settings on the command line. Each one given overrides the
/// trace header's configuration (replay) or the default (capture).
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct AnalyzerArgs {
    /// Most objects the analyzer tracks before evicting dead ones
    /// (default: the trace's setting, else 1048576).
    #[arg(long, value_name = "N")]
    pub max_tracked: Option<usize>,
    /// swapcache_prepare -EEXIST answers per entry that make a storm
    /// (default: the trace's setting, else 64).
    #[arg(long, value_name = "N")]
    pub eexist_threshold: Option<u32>,
    /// Lookups remembered per move_pages window (default: the trace's
    /// setting, else 16).
    #[arg(long, value_name = "N")]
    pub lookups_per_window: Option<usize>,
    /// Stream time without an event after which a task's open windows are
    /// closed without findings, e.g. 30s (default: the trace's, else 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub task_idle: Option<Duration>,
}

impl AnalyzerArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            max_tracked: self.max_tracked,
            eexist_threshold: self.eexist_threshold,
            lookups_per_window: self.lookups_per_window,
            task_idle: self.task_idle,
        }
    }
}

/// A duration or size flag that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("`{0}` is not a duration (try 30s, 5m, 1h)")]
    NotDuration(String),
    #[error("`{0}` has an unknown unit (use ms, s, m or h)")]
    DurationUnit(String),
    #[error("`{0}` must be a positive duration")]
    DurationNotPositive(String),
    #[error("`{0}` is not a size (try 4096, 64K, 4M, 1G)")]
    NotSize(String),
    #[error("`{0}` has an unknown unit (use K, M or G)")]
    SizeUnit(String),
    #[error("`{0}` must be a positive size")]
    SizeNotPositive(String),
}

/// `30s`, `5m`, `1h`, `250ms` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let v: f64 = num
        .parse()
        .map_err(|_| ParseError::NotDuration(s.to_owned()))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(ParseError::DurationUnit(s.to_owned())),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(ParseError::DurationNotPositive(s.to_owned()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `4096`, `64K`, `4M`, `1G` (binary units).
pub fn parse_size(s: &str) -> Result<u64, ParseError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: u64 = num.parse().map_err(|_| ParseError::NotSize(s.to_owned()))?;
    let mult: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(ParseError::SizeUnit(s.to_owned())),
    };
    v.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| ParseError::SizeNotPositive(s.to_owned()))
}

/// A size as [`parse_size`], or 0.
fn parse_wakeup(s: &str) -> Result<u64, ParseError> {
    if s.trim() == "0" {
        return Ok(0);
    }
    parse_size(s)
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
        assert_eq!(parse_wakeup("0"), Ok(0));
    }

    #[test]
    fn bpf_log_flag_parses_into_the_load_options() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            capture: CaptureArgs,
        }
        use clap::Parser;
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("detector").chain(args.iter().copied()))
                .map(|c| c.capture)
        };
        let off = parse(&[]).unwrap().load_options().unwrap();
        assert_eq!((off.bpf_log, off.bpf_log.global()), (BpfLog::Off, 0));
        assert!(!off.bpf_log_selftest);
        for (word, level, global) in [
            ("off", BpfLog::Off, 0),
            ("error", BpfLog::Error, 1),
            ("warn", BpfLog::Warn, 2),
            ("info", BpfLog::Info, 3),
            ("debug", BpfLog::Debug, 4),
            ("trace", BpfLog::Trace, 5),
        ] {
            let o = parse(&["--bpf-log", word]).unwrap().load_options().unwrap();
            assert_eq!((o.bpf_log, o.bpf_log.global()), (level, global), "{word}");
        }
        let e = parse(&["--bpf-log", "loud"]).err().unwrap().to_string();
        assert!(e.contains("possible values: off, error, warn"), "{e}");
        let o = parse(&["--bpf-log", "warn", "--bpf-log-selftest"])
            .unwrap()
            .load_options()
            .unwrap();
        assert!(o.bpf_log_selftest);
    }

    #[test]
    fn capture_flags_are_checked_before_loading() {
        let args = |ring: Option<u64>, wakeup: Option<u64>| CaptureArgs {
            pid: Some(7),
            cgroup: None,
            ring_size: ring,
            attach: AttachPolicy::Auto,
            unfiltered: false,
            drain_every: Duration::from_millis(50),
            wakeup_bytes: wakeup,
            bpf_log: BpfLog::Off,
            bpf_log_selftest: false,
        };
        let o = args(None, None).load_options().unwrap();
        assert_eq!((o.ring_bytes, o.filter.tgid), (DEFAULT_RING_BYTES, 7));
        assert!(matches!(
            args(Some(5000), None).load_options(),
            Err(ArgError::RingSize(5000))
        ));
        assert!(matches!(
            args(Some(65536), Some(65536)).load_options(),
            Err(ArgError::Wakeup(65536))
        ));
        let mut a = args(None, None);
        a.cgroup = Some(PathBuf::from("/nonexistent/cgroup"));
        let e = a.load_options().unwrap_err().to_string();
        assert!(
            e.starts_with("cannot open cgroup /nonexistent/cgroup"),
            "{e}"
        );
    }
}
