//! The host side: the analyzer replaying a large synthetic trace, and
//! `detector record` in this kernel's own attach mode.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{HostReplay, TraceSize};

/// The reader's cost per event without emulation: `detector record` on the
/// host (whatever attach mode its kernel allows; tracepoints where function
/// tracing is refused) while `probe-load --mode fault` maps, touches and
/// unmaps pages.
pub(super) fn host_record(
    detector: &Path,
    probe_load: &Path,
    out: &Path,
    secs: u32,
) -> Result<Vec<String>> {
    // probe-load's one result line.
    let load = || -> Result<String> {
        let o = Command::new(probe_load)
            .args(["--mode", "fault", "--seconds", &secs.to_string()])
            .output()
            .context("running probe-load on the host")?;
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let untraced = load()?;
    let file = out.join("host.dtr");
    let rec = Command::new(detector)
        .args(["record", "--stats", "--duration"])
        .arg(format!("{}s", secs + 3))
        .arg("-o")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting detector record on the host")?;
    // Attaching takes well under this; the load starts on attached probes.
    std::thread::sleep(Duration::from_millis(1500));
    let traced = load()?;
    let o = rec
        .wait_with_output()
        .context("waiting for detector record")?;
    let _ = std::fs::remove_file(&file);
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        bail!("detector record on the host failed: {}", err.trim());
    }
    let mut lines = vec![
        format!("untraced: {untraced}"),
        format!("traced:   {traced}"),
    ];
    let mut in_table = false;
    for l in err.lines() {
        if l.starts_with("per-probe BPF run time") {
            in_table = true;
        }
        if in_table || l.contains("events in") || l.contains("CPU") || l.contains("attached") {
            lines.push(l.to_string());
        }
        if l.starts_with("note:") {
            in_table = false;
        }
    }
    Ok(lines)
}

pub(super) fn host_replay(
    root: &Path,
    detector: &Path,
    out: &Path,
    events: u64,
) -> Result<HostReplay> {
    // The same synthetic stream in both trace formats: their sizes, and
    // the replay of each.
    let mut files = Vec::new();
    for format in ["v2", "v1"] {
        let file = out.join(format!("synthetic-{format}.dtr"));
        let st = Command::new(detector)
            .args(["simulate", "--synthetic", &events.to_string(), "--objects"])
            .arg("2000000")
            .args(["--trace-format", format])
            .arg("-o")
            .arg(&file)
            .current_dir(root)
            .status()
            .context("running detector simulate --synthetic")?;
        if !st.success() {
            bail!("detector simulate --synthetic failed (see above)");
        }
        let bytes = std::fs::metadata(&file)
            .with_context(|| format!("reading the size of {}", file.display()))?
            .len();
        files.push((format, file, bytes));
    }
    let sizes = files
        .iter()
        .map(|(format, _, bytes)| TraceSize {
            capture: format!("synthetic mix, {events} events (`simulate --synthetic`)"),
            format: (*format).to_string(),
            bytes: *bytes,
            events,
        })
        .collect();
    let mut rows = Vec::new();
    for (label, format, extra) in [
        ("v2 file, default --max-tracked", "v2", None),
        ("v2 file, --max-tracked 400000", "v2", Some("400000")),
        ("v2 file, --max-tracked 100000", "v2", Some("100000")),
        ("v1 file, default --max-tracked", "v1", None),
    ] {
        let Some((_, file, _)) = files.iter().find(|f| f.0 == format) else {
            continue;
        };
        let mut c = Command::new(detector);
        c.arg("replay")
            .arg(file)
            .args(["--stats", "--fail-on", "never"]);
        if let Some(n) = extra {
            c.args(["--max-tracked", n]);
        }
        let o = c.output().context("running detector replay --stats")?;
        if !o.status.success() {
            bail!(
                "detector replay --stats failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let err = String::from_utf8_lossy(&o.stderr);
        let line = err
            .lines()
            .find_map(|l| l.find("replayed").map(|i| &l[i..]))
            .unwrap_or("no `replayed` line in the output")
            .to_string();
        rows.push((label.to_string(), line));
    }
    for (_, file, _) in &files {
        let _ = std::fs::remove_file(file);
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    Ok(HostReplay {
        cpu,
        rows,
        record: Vec::new(),
        sizes,
    })
}
