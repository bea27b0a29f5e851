//! `detector agent` against the kernel the tests run on, in tracepoint
//! (degraded) mode: its endpoints scraped with a real HTTP client, the
//! Prometheus text checked by `promtool`, SIGHUP reopening the findings
//! file and the recording after they were moved away, SIGTERM ending it
//! with status 0 and a final `stats` line.
//!
//! Needs root, kernel BTF and `promtool` (Debian's `prometheus` package,
//! which `.ci/setup` installs); CI runs as root.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use detector::trace::read_all;
use serde_json::Value;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn usable() -> bool {
    if !is_root() {
        eprintln!("host agent test needs root; skipped");
        return false;
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        eprintln!("host agent test needs kernel BTF; skipped");
        return false;
    }
    true
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill has no memory-safety preconditions; the pid is our
    // child's, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// Waits until `f` holds, or panics after `secs` saying `what`.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The value of `series` (name and labels, as printed) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

fn get(base: &str, path: &str, accept: Option<&str>) -> Reply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(format!("{base}{path}"));
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Reply {
        status: resp.status().as_u16(),
        content_type,
        body: resp.body_mut().read_to_string().unwrap(),
    }
}

/// Lints an exposition with `promtool check metrics`.
fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus; .ci/setup installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn agent_serves_metrics_reopens_on_sighup_and_stops_cleanly_on_sigterm() {
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let findings = dir.path().join("findings.jsonl");
    let trace = dir.path().join("agent.trace");
    let config = dir.path().join("agent.toml");
    // The config sets what the flags do not: a file and its flags merge.
    std::fs::write(
        &config,
        "heartbeat = \"1s\"\nstats = true\n[capture]\nattach = \"tracepoint\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_detector"))
        .arg("agent")
        .arg("--config")
        .arg(&config)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args(["--ready-rules", "refcount_below_mapcount"])
        .arg("--findings")
        .arg(&findings)
        .arg("--record")
        .arg(&trace)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start detector agent");

    // Its log: the address it serves on, and everything for the failure
    // messages.
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push(line);
        }
        all
    });
    let mut log = Vec::new();
    let base = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the agent never said where it serves: {log:#?}"));
        log.push(line.clone());
        if let Some(url) = line.split("on http://").nth(1) {
            break format!("http://{}", url.trim());
        }
    };
    assert!(
        log.iter()
            .any(|l| l.starts_with("detector: warning: DEGRADED MODE")),
        "{log:#?}"
    );

    // Memory churn: page frees and LRU insertions for the tracepoints.
    for _ in 0..20 {
        let v = vec![1u8; 8 << 20];
        std::hint::black_box(&v);
        std::thread::sleep(Duration::from_millis(50));
    }

    let health = get(&base, "/healthz", None);
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    // The one rule this deployment relies on can fire with tracepoints.
    let ready = get(&base, "/readyz", None);
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    assert_eq!(get(&base, "/nothing", None).status, 404);

    let om = get(&base, "/metrics", None);
    assert_eq!(om.status, 200);
    assert!(
        om.content_type
            .starts_with("application/openmetrics-text; version=1.0.0"),
        "{}",
        om.content_type
    );
    assert!(om.body.ends_with("# EOF\n"));
    let frees = sample(
        &om.body,
        "detector_probe_events_total{probe=\"tp_page_free\",mode=\"tracepoint\",target=\"kmem:mm_page_free\"}",
    );
    assert!(frees.is_some_and(|n| n > 0.0), "{}", om.body);
    assert_eq!(
        sample(
            &om.body,
            "detector_rule_coverage{rule=\"refcount_below_mapcount\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&om.body, "detector_rule_coverage{rule=\"swap_entry_aba\"}"),
        Some(0.0)
    );
    assert_eq!(sample(&om.body, "detector_pipeline_up"), Some(1.0));
    assert!(om
        .body
        .contains("detector_probe_bpf_runs_total{probe=\"tp_page_free\""));

    let prom = get(&base, "/metrics", Some("text/plain"));
    assert!(
        prom.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        prom.content_type
    );
    promtool(&prom.body);

    // A heartbeat arrived (1s), with the envelope.
    wait_for(30, "a stats line", || {
        lines(&findings).iter().any(|l| l["type"] == "stats")
    });
    let first = lines(&findings);
    assert!(first
        .iter()
        .all(|l| l["schema"] == 1 && l["boot_id"].is_string()));

    // logrotate: move both files away, then SIGHUP. New files appear at
    // the paths; the old ones stay complete where they were moved.
    let findings_old = dir.path().join("findings.jsonl.1");
    let trace_old = dir.path().join("agent.trace.1");
    std::fs::rename(&findings, &findings_old).unwrap();
    std::fs::rename(&trace, &trace_old).unwrap();
    signal(&child, libc::SIGHUP);
    wait_for(30, "the reopened findings file", || findings.exists());
    wait_for(30, "the reopened recording", || trace.exists());
    wait_for(30, "a stats line in the new findings file", || {
        lines(&findings).iter().any(|l| l["type"] == "stats")
    });
    let (_, old_items, old_end) = read_all(&trace_old).unwrap();
    assert!(
        old_end.is_complete(),
        "the moved recording was finished: {old_end:?}"
    );
    assert!(!old_items.is_empty());
    let reopened = get(&base, "/metrics", None);
    assert_eq!(
        sample(
            &reopened.body,
            "detector_reopens_total{output=\"findings\"}"
        ),
        Some(1.0)
    );

    signal(&child, libc::SIGTERM);
    let status = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(status.success(), "agent exited with {status}: {log:#?}");
    let last = lines(&findings).pop().expect("lines after the reopen");
    assert_eq!(last["type"], "stats", "{last}");
    assert_eq!(last["final"], true);
    assert!(last["events"].as_u64().unwrap() > 0);
    let (header, items, end) = read_all(&trace).unwrap();
    assert!(end.is_complete(), "{end:?}");
    assert!(!items.is_empty());
    assert_eq!(header.origin, "agent");
    assert!(
        log.iter().any(|l| l.contains("terminated (SIGTERM)")),
        "{log:#?}"
    );
}

#[test]
fn check_config_prints_the_effective_configuration_without_privileges() {
    // Parsing needs nothing: no root, no BPF.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "heartbeat = \"5s\"\n[capture]\nring_size = \"8M\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_detector"))
        .args(["agent", "--check-config", "--heartbeat", "7s", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("heartbeat = \"7s\""), "{text}");
    assert!(text.contains("ring_size = 8388608"), "{text}");

    std::fs::write(&config, "[capture]\nringsize = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_detector"))
        .args(["agent", "--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("unknown field `ringsize`"), "{err}");
}
