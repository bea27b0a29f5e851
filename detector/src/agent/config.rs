//! The agent's settings: its flags, the TOML file `--config` names, and the
//! effective configuration both make (flags given override the file, the
//! file overrides the defaults).
//!
//! The file's keys are the long flag names in snake_case, grouped in
//! sections: the service's own at the top, then `[capture]`, `[analyzer]`,
//! `[record]` and `[snapshots]` (docs/agent.md). Every section rejects a key it does not
//! know, naming it. A new section is a struct with
//! `#[serde(deny_unknown_fields)]` and `Default`, one field of
//! [`ConfigFile`], one of [`AgentConfig`], and its lines in
//! [`AgentConfig::to_file`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::analyzer::RuleId;
use crate::cli::args::{parse_duration, parse_size, AnalyzerArgs, CaptureArgs};
use crate::flight::{FlightPolicy, SnapshotOn};

/// Where the metrics endpoint listens unless told otherwise: loopback
/// only (a scraper on another host needs the operator to say so), on the
/// port OpenMetrics exporters conventionally take near the node exporter.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";
/// How often a `stats` line is written unless told otherwise.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);
/// Segments a rotating recording keeps unless told otherwise (as `record`).
pub const DEFAULT_ROTATE_KEEP: u32 = 4;

/// Where snapshots go unless told otherwise: the package's state
/// directory (the unit's `StateDirectory=detector`).
pub const DEFAULT_SNAPSHOT_DIR: &str = "/var/lib/detector/snapshots";

/// `detector agent` flags. Each one given overrides the configuration file.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Configuration file (TOML; keys are these flags' names in snake_case,
    /// see docs/agent.md). Flags given override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Parse the configuration, print the effective one (file and flags
    /// merged, defaults filled in) and exit. Needs no privileges.
    #[arg(long)]
    pub check_config: bool,
    /// Serve /metrics (OpenMetrics), /healthz and /readyz here (default
    /// 127.0.0.1:9464; `off` serves nothing).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Findings as JSON lines: `-` for standard output (the default) or a
    /// file, appended to and reopened on SIGHUP.
    #[arg(long, value_name = "PATH")]
    pub findings: Option<String>,
    /// How often to write a `stats` line (default 60s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat: Option<Duration>,
    /// Least important log messages written to standard error (default info).
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// Turn on the kernel's BPF run-time statistics: per-probe cost in the
    /// metrics (costs a little per program run; needs CAP_SYS_ADMIN).
    #[arg(long)]
    pub stats: bool,
    /// Rules this deployment relies on, comma-separated, or `all` (the
    /// default): /readyz answers 200 only when their probes are attached.
    #[arg(long, value_name = "RULES", value_delimiter = ',')]
    pub ready_rules: Option<Vec<String>>,
    #[command(flatten)]
    pub capture: CaptureArgs,
    #[command(flatten)]
    pub analyzer: AnalyzerArgs,
    /// Keep a continuous recording in this trace file (replaced at start;
    /// on SIGHUP finished and started again, see docs/agent.md).
    #[arg(long = "record", value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// With --record: start a new segment past this size (e.g. 256M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub rotate_size: Option<u64>,
    /// With --rotate-size: segments kept on disk (default 4).
    #[arg(long, value_name = "N")]
    pub rotate_keep: Option<u32>,
    /// With --record: write kernel addresses as keyed pseudonyms (as
    /// `record --redact`).
    #[arg(long)]
    pub redact: bool,
    /// Flight recorder: write a snapshot (a replayable trace of the seconds
    /// around it) for each finding of this severity or worse (default off).
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub snapshot_on: Option<SnapshotMode>,
    /// Directory for snapshots (default /var/lib/detector/snapshots;
    /// created, mode 0700, when missing).
    #[arg(long, value_name = "DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// Stream time kept in memory before a trigger (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub flight_keep: Option<Duration>,
    /// Memory the flight recorder's buffer may take (default 64M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub flight_memory: Option<u64>,
    /// Stream time written after a trigger (default 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub snapshot_after: Option<Duration>,
    /// Snapshots the directory may hold (default 32).
    #[arg(long, value_name = "N")]
    pub snapshot_max_count: Option<u32>,
    /// Bytes the snapshots may take (default 2G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub snapshot_max_bytes: Option<u64>,
    /// Snapshots started in any 24 hours (default 24).
    #[arg(long, value_name = "N")]
    pub snapshots_per_day: Option<u32>,
}

/// `--snapshot-on`: which findings make a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotMode {
    Off,
    Violation,
    #[serde(alias = "near_miss")]
    NearMiss,
}

/// How much the agent logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// A size in the file: bytes, or a string with a unit (`"256M"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// The configuration file as written. Durations are strings (`"60s"`),
/// sizes bytes or strings with a unit; values are checked when merged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_rules: Option<Vec<String>>,
    #[serde(default)]
    pub capture: CaptureSection,
    #[serde(default)]
    pub analyzer: AnalyzerSection,
    #[serde(default)]
    pub record: RecordSection,
    #[serde(default)]
    pub snapshots: SnapshotsSection,
}

/// `[capture]`: the flags of `record` and `live` that say what to capture.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring_size: Option<SizeValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unfiltered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_every: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wakeup_bytes: Option<SizeValue>,
    /// The programs' diagnostics (`--bpf-log`): off, error, warn, info,
    /// debug, trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_log: Option<String>,
}

/// `[analyzer]`: the analyzer settings `replay` and `record` take.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzerSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tracked: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eexist_threshold: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookups_per_window: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_idle: Option<String>,
}

/// `[record]`: the continuous recording (`--record` and its companions).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotate_size: Option<SizeValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotate_keep: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redact: Option<bool>,
}

/// `[snapshots]`: the flight recorder (`--snapshot-on` and its companions).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_on: Option<SnapshotMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flight_keep: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flight_memory: Option<SizeValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_max_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_max_bytes: Option<SizeValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshots_per_day: Option<u32>,
}

/// Where findings are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FindingsTarget {
    Stdout,
    File(PathBuf),
}

/// The continuous recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordConfig {
    pub path: PathBuf,
    /// `None`: one file.
    pub rotate_size: Option<u64>,
    pub rotate_keep: u32,
    pub redact: bool,
}

/// What the agent runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// `None`: no endpoint.
    pub metrics_addr: Option<SocketAddr>,
    pub findings: FindingsTarget,
    pub heartbeat: Duration,
    pub log_level: LogLevel,
    pub stats: bool,
    /// Rules /readyz waits for (every rule by default).
    pub ready_rules: Vec<RuleId>,
    pub capture: CaptureArgs,
    pub analyzer: AnalyzerArgs,
    pub record: Option<RecordConfig>,
    /// The flight recorder's policy; `None`: no snapshots.
    pub snapshots: Option<FlightPolicy>,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    // The cause is the error's source: `{:#}` prints it once, after this.
    #[error("cannot read the configuration file {} (give an existing file with --config)", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {}: {message}", .path.display())]
    Parse { path: PathBuf, message: String },
    #[error("`{key}`: {message}")]
    Value { key: &'static str, message: String },
}

/// A value of one of `record`'s enumerated flags: the flag when given on
/// the command line, else the file's word (one of the flag's values, any
/// case), else the flag's default. A word that is none of them is named
/// with the values it may take.
fn choice<T: ValueEnum + Copy>(
    given: bool,
    flag: T,
    word: Option<&str>,
    key: &'static str,
    what: &str,
) -> Result<T, ConfigError> {
    let Some(s) = word.filter(|_| !given) else {
        return Ok(flag);
    };
    T::from_str(s, true).map_err(|_| {
        let values: Vec<String> = T::value_variants()
            .iter()
            .filter_map(ValueEnum::to_possible_value)
            .map(|v| v.get_name().to_string())
            .collect();
        bad(key, format!("`{s}` is not {what} ({})", values.join(", ")))
    })
}

fn bad(key: &'static str, message: impl ToString) -> ConfigError {
    ConfigError::Value {
        key,
        message: message.to_string(),
    }
}

impl ConfigFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ConfigFile::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses a configuration's text; the error names the key and line.
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))
    }
}

fn size(key: &'static str, v: Option<&SizeValue>) -> Result<Option<u64>, ConfigError> {
    match v {
        None => Ok(None),
        Some(SizeValue::Bytes(0)) => Err(bad(key, "must be a positive size")),
        Some(SizeValue::Bytes(n)) => Ok(Some(*n)),
        Some(SizeValue::Text(s)) => parse_size(s).map(Some).map_err(|e| bad(key, e)),
    }
}

fn duration(key: &'static str, v: Option<&String>) -> Result<Option<Duration>, ConfigError> {
    v.map(|s| parse_duration(s).map_err(|e| bad(key, e)))
        .transpose()
}

/// Rule names, or `all`.
fn rules(key: &'static str, names: &[String]) -> Result<Vec<RuleId>, ConfigError> {
    if names.iter().any(|n| n.trim() == "all") {
        return Ok(RuleId::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            RuleId::from_name(n.trim()).ok_or_else(|| {
                let known: Vec<&str> = RuleId::ALL.iter().map(|r| r.name()).collect();
                bad(
                    key,
                    format!("`{n}` is not a rule (rules: all, {})", known.join(", ")),
                )
            })
        })
        .collect()
}

fn metrics_addr(key: &'static str, s: &str) -> Result<Option<SocketAddr>, ConfigError> {
    match s.trim() {
        "" | "off" => Ok(None),
        a => a.parse().map(Some).map_err(|_| {
            bad(
                key,
                format!("`{a}` is not an address and port (try 127.0.0.1:9464, or off)"),
            )
        }),
    }
}

impl AgentConfig {
    /// The configuration `args` and `file` make together: a flag the
    /// command line gave (`given` says which, by argument id) wins, then
    /// the file, then the default.
    pub fn merge(
        args: &AgentArgs,
        file: &ConfigFile,
        given: &dyn Fn(&str) -> bool,
    ) -> Result<AgentConfig, ConfigError> {
        let metrics_addr = match &args.metrics_addr {
            Some(a) => metrics_addr("--metrics-addr", a)?,
            None => metrics_addr(
                "metrics_addr",
                file.metrics_addr.as_deref().unwrap_or(DEFAULT_METRICS_ADDR),
            )?,
        };
        let findings = match args.findings.as_deref().or(file.findings.as_deref()) {
            None | Some("-") => FindingsTarget::Stdout,
            Some("") => return Err(bad("findings", "give a file or `-` for standard output")),
            Some(p) => FindingsTarget::File(PathBuf::from(p)),
        };
        let heartbeat = match args.heartbeat {
            Some(d) => d,
            None => duration("heartbeat", file.heartbeat.as_ref())?.unwrap_or(DEFAULT_HEARTBEAT),
        };
        let ready_rules = match &args.ready_rules {
            Some(r) => rules("--ready-rules", r)?,
            None => match &file.ready_rules {
                Some(r) => rules("ready_rules", r)?,
                None => RuleId::ALL.to_vec(),
            },
        };

        let c = &file.capture;
        let a = &args.capture;
        let attach = choice(
            given("attach"),
            a.attach,
            c.attach.as_deref(),
            "capture.attach",
            "an attach mode",
        )?;
        let drain_every = if given("drain_every") {
            a.drain_every
        } else {
            duration("capture.drain_every", c.drain_every.as_ref())?.unwrap_or(a.drain_every)
        };
        let bpf_log = choice(
            given("bpf_log"),
            a.bpf_log,
            c.bpf_log.as_deref(),
            "capture.bpf_log",
            "a level",
        )?;
        let capture = CaptureArgs {
            pid: a.pid.or(c.pid),
            cgroup: a.cgroup.clone().or_else(|| c.cgroup.clone()),
            ring_size: match a.ring_size {
                Some(s) => Some(s),
                None => size("capture.ring_size", c.ring_size.as_ref())?,
            },
            attach,
            unfiltered: a.unfiltered || c.unfiltered.unwrap_or(false),
            drain_every,
            wakeup_bytes: match a.wakeup_bytes {
                Some(w) => Some(w),
                None => match &c.wakeup_bytes {
                    Some(SizeValue::Bytes(0)) => Some(0),
                    v => size("capture.wakeup_bytes", v.as_ref())?,
                },
            },
            bpf_log,
            bpf_log_selftest: a.bpf_log_selftest,
        };

        let z = &file.analyzer;
        let f = &args.analyzer;
        let analyzer = AnalyzerArgs {
            max_tracked: f.max_tracked.or(z.max_tracked),
            eexist_threshold: f.eexist_threshold.or(z.eexist_threshold),
            lookups_per_window: f.lookups_per_window.or(z.lookups_per_window),
            task_idle: match f.task_idle {
                Some(d) => Some(d),
                None => duration("analyzer.task_idle", z.task_idle.as_ref())?,
            },
        };

        let r = &file.record;
        let rotate_size = match args.rotate_size {
            Some(s) => Some(s),
            None => size("record.rotate_size", r.rotate_size.as_ref())?,
        };
        let rotate_keep = args.rotate_keep.or(r.rotate_keep);
        let redact = args.redact || r.redact.unwrap_or(false);
        let record = match args.record.clone().or_else(|| r.path.clone()) {
            Some(path) => {
                let rotate_keep = rotate_keep.unwrap_or(DEFAULT_ROTATE_KEEP);
                if rotate_keep == 0 {
                    return Err(bad("record.rotate_keep", "must be at least 1"));
                }
                Some(RecordConfig {
                    path,
                    rotate_size,
                    rotate_keep,
                    redact,
                })
            }
            None if rotate_size.is_some() || rotate_keep.is_some() || redact => {
                return Err(bad(
                    "record.path",
                    "rotate_size, rotate_keep and redact apply to a recording: give its path \
                     (`[record] path` or --record FILE)",
                ));
            }
            None => None,
        };
        let snapshots = snapshots(args, &file.snapshots)?;

        Ok(AgentConfig {
            metrics_addr,
            findings,
            heartbeat,
            log_level: args.log_level.or(file.log_level).unwrap_or(LogLevel::Info),
            stats: args.stats || file.stats.unwrap_or(false),
            ready_rules,
            capture,
            analyzer,
            record,
            snapshots,
        })
    }

    /// The configuration as a file that gives exactly it (every setting
    /// written out, defaults included): what `--check-config` prints.
    pub fn to_file(&self) -> ConfigFile {
        let text = |d: Duration| Some(format_duration(d));
        ConfigFile {
            metrics_addr: Some(
                self.metrics_addr
                    .map_or_else(|| "off".to_string(), |a| a.to_string()),
            ),
            findings: Some(match &self.findings {
                FindingsTarget::Stdout => "-".to_string(),
                FindingsTarget::File(p) => p.display().to_string(),
            }),
            heartbeat: text(self.heartbeat),
            log_level: Some(self.log_level),
            stats: Some(self.stats),
            ready_rules: Some(if self.ready_rules.len() == RuleId::ALL.len() {
                vec!["all".to_string()]
            } else {
                self.ready_rules
                    .iter()
                    .map(|r| r.name().to_string())
                    .collect()
            }),
            capture: CaptureSection {
                pid: self.capture.pid,
                cgroup: self.capture.cgroup.clone(),
                ring_size: Some(SizeValue::Bytes(
                    self.capture
                        .ring_size
                        .unwrap_or(u64::from(crate::loader::DEFAULT_RING_BYTES)),
                )),
                attach: self
                    .capture
                    .attach
                    .to_possible_value()
                    .map(|v| v.get_name().to_string()),
                unfiltered: Some(self.capture.unfiltered),
                drain_every: text(self.capture.drain_every),
                wakeup_bytes: self.capture.wakeup_bytes.map(SizeValue::Bytes),
                bpf_log: self
                    .capture
                    .bpf_log
                    .to_possible_value()
                    .map(|v| v.get_name().to_string()),
            },
            analyzer: {
                let c = self
                    .analyzer
                    .overrides()
                    .resolve(crate::stream::Base::Defaults)
                    .config;
                AnalyzerSection {
                    max_tracked: Some(c.max_tracked),
                    eexist_threshold: Some(c.eexist_threshold),
                    lookups_per_window: Some(c.lookups_per_window),
                    task_idle: text(Duration::from_nanos(c.task_idle_ns)),
                }
            },
            record: match &self.record {
                Some(r) => RecordSection {
                    path: Some(r.path.clone()),
                    rotate_size: r.rotate_size.map(SizeValue::Bytes),
                    rotate_keep: Some(r.rotate_keep),
                    redact: Some(r.redact),
                },
                None => RecordSection::default(),
            },
            snapshots: match &self.snapshots {
                Some(p) => SnapshotsSection {
                    snapshot_on: Some(match p.on {
                        SnapshotOn::Violation => SnapshotMode::Violation,
                        SnapshotOn::NearMiss => SnapshotMode::NearMiss,
                    }),
                    snapshot_dir: Some(p.dir.clone()),
                    flight_keep: text(p.keep),
                    flight_memory: Some(SizeValue::Bytes(p.memory)),
                    snapshot_after: text(p.after),
                    snapshot_max_count: Some(p.max_count),
                    snapshot_max_bytes: Some(SizeValue::Bytes(p.max_bytes)),
                    snapshots_per_day: Some(p.per_day),
                },
                None => SnapshotsSection {
                    snapshot_on: Some(SnapshotMode::Off),
                    ..SnapshotsSection::default()
                },
            },
        }
    }

    /// [`to_file`](Self::to_file) as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.to_file()).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

/// The flight recorder's policy from the flags and `[snapshots]` (flags
/// win), or `None` when snapshots are off. The other settings may stay in
/// the file while `--snapshot-on off` turns snapshots off.
fn snapshots(args: &AgentArgs, s: &SnapshotsSection) -> Result<Option<FlightPolicy>, ConfigError> {
    let on = match args.snapshot_on.or(s.snapshot_on) {
        None | Some(SnapshotMode::Off) => SnapshotMode::Off,
        Some(m) => m,
    };
    let d = FlightPolicy::default();
    let keep = match args.flight_keep {
        Some(k) => k,
        None => duration("snapshots.flight_keep", s.flight_keep.as_ref())?.unwrap_or(d.keep),
    };
    let after = match args.snapshot_after {
        Some(a) => a,
        None => duration("snapshots.snapshot_after", s.snapshot_after.as_ref())?.unwrap_or(d.after),
    };
    let memory = match args.flight_memory {
        Some(m) => m,
        None => size("snapshots.flight_memory", s.flight_memory.as_ref())?.unwrap_or(d.memory),
    };
    let max_bytes = match args.snapshot_max_bytes {
        Some(m) => m,
        None => size(
            "snapshots.snapshot_max_bytes",
            s.snapshot_max_bytes.as_ref(),
        )?
        .unwrap_or(d.max_bytes),
    };
    let max_count = args
        .snapshot_max_count
        .or(s.snapshot_max_count)
        .unwrap_or(d.max_count);
    let per_day = args
        .snapshots_per_day
        .or(s.snapshots_per_day)
        .unwrap_or(d.per_day);
    let min_memory = crate::flight::MIN_MEMORY;
    if keep.is_zero() {
        return Err(bad("snapshots.flight_keep", "must be longer than zero"));
    }
    if memory < min_memory {
        return Err(bad(
            "snapshots.flight_memory",
            format!("must be at least {} KiB", min_memory >> 10),
        ));
    }
    if max_count == 0 {
        return Err(bad("snapshots.snapshot_max_count", "must be at least 1"));
    }
    if per_day == 0 {
        return Err(bad("snapshots.snapshots_per_day", "must be at least 1"));
    }
    if max_bytes < memory.saturating_add(1 << 20) {
        return Err(bad(
            "snapshots.snapshot_max_bytes",
            format!(
                "must exceed flight_memory ({memory} bytes) by at least 1 MiB, or no snapshot \
                 with a full buffer fits"
            ),
        ));
    }
    let on = match on {
        SnapshotMode::Off => return Ok(None),
        SnapshotMode::Violation => SnapshotOn::Violation,
        SnapshotMode::NearMiss => SnapshotOn::NearMiss,
    };
    let policy = FlightPolicy {
        keep,
        memory,
        after,
        // A repeat may stretch the after-window to a minute, never below
        // what was asked for.
        after_max: d.after_max.max(after),
        on,
        max_count,
        max_bytes,
        // One file must hold the buffer written at the trigger and the
        // after-window: four buffers' worth, never below the default.
        snapshot_bytes: d.snapshot_bytes.max(memory.saturating_mul(4)),
        per_day,
        cooldown: d.cooldown,
        dir: args
            .snapshot_dir
            .clone()
            .or_else(|| s.snapshot_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SNAPSHOT_DIR)),
    };
    policy
        .validate()
        .map_err(|e| bad("snapshots", e.to_string()))?;
    Ok(Some(policy))
}

/// A duration as the parsers read it back: `60s`, `50ms`, or fractional
/// seconds below a millisecond.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", d.as_secs())
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::{AttachPolicy, BpfLog};
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AgentArgs,
    }

    /// The flags of `argv` and which of them the command line gave.
    fn flags(argv: &[&str]) -> (AgentArgs, impl Fn(&str) -> bool) {
        let m = Cli::command()
            .try_get_matches_from(std::iter::once("agent").chain(argv.iter().copied()))
            .unwrap();
        let args = Cli::from_arg_matches(&m).unwrap().args;
        let given =
            move |id: &str| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        (args, given)
    }

    fn merged(argv: &[&str], file: &str) -> Result<AgentConfig, ConfigError> {
        let (args, given) = flags(argv);
        let file = ConfigFile::parse(file).map_err(|message| ConfigError::Parse {
            path: PathBuf::from("t.toml"),
            message,
        })?;
        AgentConfig::merge(&args, &file, &given)
    }

    const FILE: &str = r#"
metrics_addr = "0.0.0.0:9500"
findings = "/var/lib/detector/findings.jsonl"
heartbeat = "30s"
log_level = "debug"
ready_rules = ["lazyfree_extra_refs", "eexist_storm"]

[capture]
pid = 42
ring_size = "16M"
attach = "kprobe"
drain_every = "100ms"
wakeup_bytes = 0
bpf_log = "warn"

[analyzer]
max_tracked = 5000
task_idle = "10s"

[record]
path = "/var/lib/detector/agent.trace"
rotate_size = 268435456
rotate_keep = 3
"#;

    #[test]
    fn defaults_without_a_file() {
        let c = merged(&[], "").unwrap();
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.findings, FindingsTarget::Stdout);
        assert_eq!(c.heartbeat, DEFAULT_HEARTBEAT);
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.ready_rules, RuleId::ALL);
        assert_eq!(c.capture.attach, AttachPolicy::Auto);
        assert_eq!(c.capture.drain_every, Duration::from_millis(50));
        assert_eq!(c.capture.bpf_log, BpfLog::Off);
        assert_eq!(c.record, None);
        assert!(!c.stats);
    }

    #[test]
    fn the_file_overrides_defaults_and_flags_override_the_file() {
        let c = merged(&[], FILE).unwrap();
        assert_eq!(c.metrics_addr, Some("0.0.0.0:9500".parse().unwrap()));
        assert_eq!(
            c.findings,
            FindingsTarget::File("/var/lib/detector/findings.jsonl".into())
        );
        assert_eq!(c.heartbeat, Duration::from_secs(30));
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(
            c.ready_rules,
            [RuleId::LazyfreeExtraRefs, RuleId::EexistStorm]
        );
        assert_eq!(c.capture.pid, Some(42));
        assert_eq!(c.capture.ring_size, Some(16 << 20));
        assert_eq!(c.capture.attach, AttachPolicy::Kprobe);
        assert_eq!(c.capture.drain_every, Duration::from_millis(100));
        assert_eq!(c.capture.wakeup_bytes, Some(0));
        assert_eq!(c.capture.bpf_log, BpfLog::Warn);
        assert_eq!(c.analyzer.max_tracked, Some(5000));
        assert_eq!(c.analyzer.task_idle, Some(Duration::from_secs(10)));
        let r = c.record.unwrap();
        assert_eq!(r.path, PathBuf::from("/var/lib/detector/agent.trace"));
        assert_eq!((r.rotate_size, r.rotate_keep), (Some(256 << 20), 3));

        // A flag given wins, even one equal to its own default (which only
        // the command line, not the value, can tell).
        let c = merged(
            &[
                "--attach",
                "auto",
                "--drain-every",
                "50ms",
                "--findings",
                "-",
                "--pid",
                "7",
                "--heartbeat",
                "5s",
                "--metrics-addr",
                "off",
                "--max-tracked",
                "100",
                "--ready-rules",
                "all",
                "--record",
                "/tmp/x.trace",
                "--rotate-keep",
                "9",
            ],
            FILE,
        )
        .unwrap();
        assert_eq!(c.capture.attach, AttachPolicy::Auto);
        assert_eq!(c.capture.drain_every, Duration::from_millis(50));
        assert_eq!(c.findings, FindingsTarget::Stdout);
        assert_eq!(c.capture.pid, Some(7));
        assert_eq!(c.heartbeat, Duration::from_secs(5));
        assert_eq!(c.metrics_addr, None);
        assert_eq!(c.analyzer.max_tracked, Some(100));
        assert_eq!(c.ready_rules, RuleId::ALL);
        let r = c.record.unwrap();
        assert_eq!(r.path, PathBuf::from("/tmp/x.trace"));
        // Not given: still the file's.
        assert_eq!((r.rotate_size, r.rotate_keep), (Some(256 << 20), 9));
        assert_eq!(c.capture.ring_size, Some(16 << 20));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = merged(&[], "heartbeet = \"5s\"").unwrap_err().to_string();
        assert!(e.contains("heartbeet"), "{e}");
        let e = merged(&[], "[capture]\nring = 4096")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ring`"), "{e}");
        let e = merged(&[], "[snapshot]\nsnapshot_on = \"violation\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`snapshot`"), "{e}");
        let e = merged(&[], "[snapshots]\nkeep = \"5s\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`keep`"), "{e}");
        let e = merged(&[], "heartbeat = \"5x\"").unwrap_err().to_string();
        assert!(
            e.starts_with("`heartbeat`: `5x` has an unknown unit"),
            "{e}"
        );
        let e = merged(&[], "[capture]\nattach = \"uprobe\"")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("`capture.attach`"), "{e}");
        let e = merged(&[], "ready_rules = [\"aba\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`aba` is not a rule"), "{e}");
        let e = merged(&[], "metrics_addr = \"localhost\"")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("`metrics_addr`"), "{e}");
        let e = merged(&[], "[record]\nrotate_keep = 2")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("`record.path`"), "{e}");
        let e = merged(&[], "[record]\npath = \"/t\"\nrotate_keep = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 1"), "{e}");
    }

    #[test]
    fn the_printed_configuration_reads_back_as_itself() {
        for (argv, file) in [
            (&[][..], ""),
            (&[][..], FILE),
            (
                &["--stats", "--unfiltered", "--wakeup-bytes", "1M"][..],
                FILE,
            ),
            (
                &["--snapshot-on", "near-miss", "--flight-memory", "8M"][..],
                FILE,
            ),
        ] {
            // Every effective setting is printed (defaults resolved), so
            // the text is a fixed point, and what it gives is what was
            // merged.
            let c = merged(argv, file).unwrap();
            let text = c.to_toml();
            let again = merged(&[], &text).unwrap();
            assert_eq!(again.to_toml(), text);
            assert_eq!(
                (&again.findings, again.heartbeat, &again.record),
                (&c.findings, c.heartbeat, &c.record)
            );
            assert_eq!(again.snapshots, c.snapshots);
            assert_eq!(
                again.capture.load_options().unwrap().ring_bytes,
                c.capture.load_options().unwrap().ring_bytes
            );
        }
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(
            parse_duration(&format_duration(Duration::from_micros(5))),
            Ok(Duration::from_micros(5))
        );
    }

    #[test]
    fn snapshots_are_off_unless_asked_for_and_flags_override_the_section() {
        let c = merged(&[], "").unwrap();
        assert_eq!(c.snapshots, None);
        // Settings without `snapshot_on` keep them off.
        let c = merged(&[], "[snapshots]\nflight_keep = \"10s\"").unwrap();
        assert_eq!(c.snapshots, None);

        let file = r#"
[snapshots]
snapshot_on = "violation"
snapshot_dir = "/var/lib/detector/snapshots"
flight_keep = "20s"
flight_memory = "32M"
snapshot_after = "3s"
snapshot_max_count = 10
snapshot_max_bytes = "1G"
snapshots_per_day = 5
"#;
        let p = merged(&[], file).unwrap().snapshots.unwrap();
        assert_eq!(p.on, SnapshotOn::Violation);
        assert_eq!(p.dir, PathBuf::from(DEFAULT_SNAPSHOT_DIR));
        assert_eq!(p.keep, Duration::from_secs(20));
        assert_eq!(p.memory, 32 << 20);
        assert_eq!(p.after, Duration::from_secs(3));
        assert_eq!((p.max_count, p.max_bytes, p.per_day), (10, 1 << 30, 5));

        let p = merged(
            &[
                "--snapshot-on",
                "near-miss",
                "--snapshot-dir",
                "/tmp/snaps",
                "--flight-keep",
                "30s",
                "--flight-memory",
                "64M",
                "--snapshot-after",
                "5s",
                "--snapshots-per-day",
                "9",
            ],
            file,
        )
        .unwrap()
        .snapshots
        .unwrap();
        assert_eq!(p.on, SnapshotOn::NearMiss);
        assert_eq!(p.dir, PathBuf::from("/tmp/snaps"));
        assert_eq!(p.keep, Duration::from_secs(30));
        assert_eq!(p.memory, 64 << 20);
        assert_eq!(p.after, Duration::from_secs(5));
        assert_eq!(p.per_day, 9);
        // Not given: still the file's.
        assert_eq!((p.max_count, p.max_bytes), (10, 1 << 30));
        // A large buffer gets a snapshot file that holds it.
        assert!(p.snapshot_bytes >= 2 * p.memory);

        // `off` on the command line wins over the file.
        let c = merged(&["--snapshot-on", "off"], file).unwrap();
        assert_eq!(c.snapshots, None);
        // The file's `near_miss` spelling is accepted too.
        let c = merged(&[], "[snapshots]\nsnapshot_on = \"near_miss\"").unwrap();
        assert_eq!(c.snapshots.unwrap().on, SnapshotOn::NearMiss);
    }

    #[test]
    fn bad_snapshot_settings_are_named_in_one_sentence() {
        for (argv, file, key) in [
            (
                &["--snapshot-on", "violation"][..],
                "[snapshots]\nflight_keep = \"0s\"",
                "`snapshots.flight_keep`",
            ),
            (
                &["--snapshot-on", "violation", "--flight-memory", "1K"][..],
                "",
                "`snapshots.flight_memory`",
            ),
            (
                &["--snapshot-on", "violation", "--snapshots-per-day", "0"][..],
                "",
                "`snapshots.snapshots_per_day`",
            ),
            (
                &["--snapshot-on", "violation", "--snapshot-max-count", "0"][..],
                "",
                "`snapshots.snapshot_max_count`",
            ),
            (
                &["--snapshot-on", "violation", "--snapshot-max-bytes", "64M"][..],
                "",
                "`snapshots.snapshot_max_bytes`",
            ),
            (
                &[][..],
                "[snapshots]\nsnapshot_on = \"violation\"\nflight_memory = \"4Q\"",
                "`snapshots.flight_memory`",
            ),
        ] {
            let e = merged(argv, file).unwrap_err().to_string();
            assert!(e.starts_with(key), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = merged(&[], "[snapshots]\nsnapshot_on = \"info\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("info"), "{e}");
        assert!(Cli::command()
            .try_get_matches_from(["agent", "--snapshot-on", "info"])
            .is_err());
    }

    #[test]
    fn the_packaged_configuration_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.toml");
        let file = ConfigFile::load(&path).unwrap();
        let (args, given) = flags(&[]);
        let c = AgentConfig::merge(&args, &file, &given).unwrap();
        assert_eq!(
            c.findings,
            FindingsTarget::File("/var/lib/detector/findings.jsonl".into())
        );
        assert_eq!(c.metrics_addr, Some(DEFAULT_METRICS_ADDR.parse().unwrap()));
        let p = c.snapshots.unwrap();
        assert_eq!(p.on, SnapshotOn::Violation);
        assert_eq!(p.dir, PathBuf::from(DEFAULT_SNAPSHOT_DIR));
    }
}
