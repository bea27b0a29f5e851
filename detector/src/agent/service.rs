//! One agent run: attach the probes, open the outputs, drop the
//! capabilities no longer needed, start the metrics endpoint, and carry
//! the stream through the pipeline until a stop signal.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

use super::config::{AgentConfig, FindingsTarget};
use super::http;
use super::jsonl::JsonlOutput;
use super::metrics::AgentMetrics;
use super::recording::{AgentRecorder, RecordingPlan, Requests};
use super::sink::{AgentSink, ReopenCheck};
use crate::analyzer::RuleId;
use crate::cli::args::ArgError;
use crate::groups::SeverityCounts;
use crate::loader::privileges::{self, Need, PrivilegeError};
use crate::plan::AttachMode;
use crate::present::describe_setup;
use crate::stream::{Base, End, KernelSource, OnRecordError, Pipeline, PipelineError, Source};
use crate::trace::{RotationPolicy, TraceError};

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Args(#[from] ArgError),
    #[error(transparent)]
    Source(#[from] crate::stream::SourceError),
    #[error("cannot open the findings file {}: {source}; fix the path or its directory's permissions", .path.display())]
    Findings {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the recording: {0}")]
    Recording(#[source] TraceError),
    #[error("cannot serve metrics on {addr}: {source}; pick another --metrics-addr or `off`")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the metrics endpoint: {0}")]
    Server(#[source] std::io::Error),
    #[error(transparent)]
    Flight(#[from] crate::flight::FlightError),
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// How a run ended when it ended cleanly.
#[derive(Debug)]
pub struct RunSummary {
    /// Why the stream stopped (`terminated (SIGTERM)`).
    pub stop: String,
    pub items: u64,
    pub findings: SeverityCounts,
    /// The source failed: the capture stopped on its own.
    pub failed: Option<String>,
    /// This process's CPU time (user + system) from the first pull to the
    /// end: the reader, the analyzer and the outputs, not the probes.
    pub cpu: std::time::Duration,
}

/// The directory `path` is created in.
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Runs the agent until `stop` says why (SIGTERM); `reopen` says when
/// SIGHUP arrived.
pub fn run(
    cfg: &AgentConfig,
    stop: impl FnMut() -> Option<String>,
    reopen: ReopenCheck,
) -> Result<RunSummary, AgentError> {
    let opts = cfg.capture.load_options()?;
    let mut source = KernelSource::start(&opts)?;
    if cfg.stats {
        source = source.with_live_costs();
        if let Some(why) = source
            .initial_costs()
            .and_then(|c| c.unavailable.as_deref())
        {
            log::warn!("per-probe BPF run time unavailable: {why}");
        }
    }
    let plan = source.header().plan.clone();
    let count = |m: AttachMode| plan.iter().filter(|p| p.mode == m).count();
    log::info!(
        "attached {} probes ({} fentry, {} kprobe, {} tracepoint), {} unavailable; ring buffer {} KiB",
        plan.len() - count(AttachMode::Unavailable),
        count(AttachMode::Fentry),
        count(AttachMode::Kprobe),
        count(AttachMode::Tracepoint),
        count(AttachMode::Unavailable),
        opts.ring_bytes / 1024
    );
    if let Some(s) = source.info().degraded {
        log::warn!("{s}");
    }
    let setup = cfg.analyzer.overrides().resolve(Base::Defaults);
    log::info!(
        "analyzer config {}",
        describe_setup(&setup.origin, &setup.config)
    );

    let mut header = source.header().clone();
    header.origin = "agent".to_string();
    header.analyzer_config = Some(setup.config.clone());
    let metrics = Arc::new(AgentMetrics::new(
        &header.kernel_release,
        &header.plan,
        &cfg.ready_rules,
        cfg.stats,
    ));
    let uncovered: Vec<&str> = RuleId::ALL
        .iter()
        .filter(|r| !metrics.covers(**r))
        .map(|r| r.name())
        .collect();
    if !uncovered.is_empty() {
        log::warn!(
            "rules that cannot report their most severe finding with the probes attached here: {}",
            uncovered.join(", ")
        );
    }

    let out = match &cfg.findings {
        FindingsTarget::Stdout => {
            JsonlOutput::stdout(&header.boot_id, &header.kernel_release, metrics.clone())
        }
        FindingsTarget::File(p) => {
            JsonlOutput::file(p, &header.boot_id, &header.kernel_release, metrics.clone()).map_err(
                |source| AgentError::Findings {
                    path: p.clone(),
                    source,
                },
            )?
        }
    };
    let requests = Requests::default();
    let recorder = match &cfg.record {
        Some(r) => Some(
            AgentRecorder::start(
                RecordingPlan {
                    path: r.path.clone(),
                    header: header.clone(),
                    rotation: Some(RotationPolicy {
                        max_bytes: r.rotate_size.unwrap_or(u64::MAX),
                        keep: if r.rotate_size.is_some() {
                            r.rotate_keep
                        } else {
                            1
                        },
                    }),
                    redact: r.redact,
                },
                requests.clone(),
                metrics.clone(),
            )
            .map_err(AgentError::Recording)?,
        ),
        None => None,
    };
    // The header carries the analyzer's configuration, so that every
    // snapshot replays with the live stream's settings.
    let flight = match &cfg.snapshots {
        Some(policy) => {
            let fr = crate::flight::FlightRecorder::new(&header, policy.clone())?;
            let st = fr.stats();
            log::info!(
                "snapshots on {} findings in {} ({} there already, {} bytes); buffer {} or {} MiB",
                policy.on.name(),
                policy.dir.display(),
                st.on_disk_count,
                st.on_disk_bytes,
                super::config::format_duration(policy.keep),
                policy.memory >> 20
            );
            Some(fr)
        }
        None => None,
    };
    let listener: Option<TcpListener> = match cfg.metrics_addr {
        Some(addr) => Some(http::bind(addr).map_err(|source| AgentError::Listen { addr, source })?),
        None => None,
    };

    // Attached, statistics on, the files open and the port bound: from
    // here the agent reads the ring and the maps, and creates files only
    // in the findings', the recording's and the snapshots' directories (a
    // reopen, a rotation, a snapshot).
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let FindingsTarget::File(p) = &cfg.findings {
        dirs.push(parent_dir(p));
    }
    if let Some(r) = &cfg.record {
        dirs.push(parent_dir(&r.path));
    }
    if let Some(p) = &cfg.snapshots {
        dirs.push(p.dir.clone());
    }
    dirs.sort();
    dirs.dedup();
    let mut checks: Vec<Box<dyn FnMut() -> bool>> = dirs
        .iter()
        .map(|d| {
            let d = d.clone();
            Box::new(move || privileges::can_create_in(&d)) as Box<dyn FnMut() -> bool>
        })
        .collect();
    let kept = match checks.as_mut_slice() {
        [] => source.drop_privileges(None)?,
        [one] => source.drop_privileges(Some(Need {
            candidates: privileges::DIRECTORY_CANDIDATES,
            check: &mut **one,
        }))?,
        many => {
            // Every directory in one check: the set kept must serve all.
            let mut all = || many.iter_mut().all(|c| c());
            source.drop_privileges(Some(Need {
                candidates: privileges::DIRECTORY_CANDIDATES,
                check: &mut all,
            }))?
        }
    };
    log::info!("capabilities kept after attaching: {kept}");

    if let Some(l) = listener {
        let addr = l.local_addr().ok();
        http::spawn(l, metrics.clone()).map_err(AgentError::Server)?;
        if let Some(a) = addr {
            log::info!("serving /metrics, /healthz and /readyz on http://{a}");
        }
    }

    let mut sink = AgentSink::new(
        metrics.clone(),
        out,
        cfg.heartbeat,
        reopen,
        recorder.as_ref().map(|_| requests.clone()),
    );
    if let Some(fr) = flight {
        sink = sink.with_flight(fr);
    }
    let mut pipeline = Pipeline::new(&mut source)
        .analyze(&setup)
        .wait(cfg.capture.drain_every)
        .stop_when(stop);
    if let Some(r) = recorder {
        pipeline = pipeline.record(Box::new(r), OnRecordError::Continue);
    }
    metrics.set_running(true);
    // Loading and verifying the programs costs seconds of system time on a
    // slow machine; the per-event figure is the pipeline's, from here on.
    let cpu_before = crate::usage::self_usage();
    let outcome = pipeline.run(&mut sink);
    metrics.set_running(false);
    let cpu = match (cpu_before, crate::usage::self_usage()) {
        (Some(a), Some(b)) => (b.user + b.sys).saturating_sub(a.user + a.sys),
        _ => std::time::Duration::ZERO,
    };
    let outcome = outcome?;
    let (stop, failed) = match outcome.end {
        End::Failed(e) => (String::from("source failed"), Some(e.to_string())),
        End::Finished(s) | End::Stopped(s) => (s, None),
    };
    Ok(RunSummary {
        stop,
        items: outcome.items,
        findings: *sink.findings(),
        failed,
        cpu,
    })
}
