//! The checks of a test run by `detector agent` (`GuestSetup::agent`): its
//! recording went through every trace check already; here its own outputs
//! are held to that recording's replay.
//!
//! - `findings.jsonl`: every line has the envelope (schema 1, a type, the
//!   boot id, the kernel release); the `finding` lines are, in order and
//!   field for field, the findings the host's replay of the recording
//!   reports; `stats` heartbeats came during the run and a `final` one
//!   last, counting those findings.
//! - `snapshots/`: the agent ran with `--snapshot-on near-miss`
//!   (`AGENT_SNAPSHOTS`); at least one `snapshot` line, each naming a
//!   trace and manifest that are on the disk, whose trigger is one of the
//!   finding lines, and whose trace, replayed on the host with the
//!   configuration its header holds, reports the trigger again (same rule,
//!   severity and objects).
//! - `metrics.txt`, scraped in the guest after the workload, between two
//!   snapshots of the findings file: per rule and severity, its
//!   `detector_findings_total` lies between the two snapshots' counts.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use detector::analyzer::Finding;
use detector::flight::Manifest;
use detector::sinks::analyze_file_with_stats;
use detector::stream::{ConfigChoice, Overrides};
use serde_json::Value;

use super::vm_check::Verdict;

/// Lines of a JSON-lines file, or why not.
fn read_lines(path: &Path) -> Result<Vec<Value>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}: {l}", path.display(), i + 1))
        })
        .collect()
}

/// Finding lines per (rule, severity).
fn count_findings(lines: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut m = BTreeMap::new();
    for l in lines.iter().filter(|l| l["type"] == "finding") {
        let key = (
            l["rule"].as_str().unwrap_or("?").to_string(),
            l["severity"].as_str().unwrap_or("?").to_string(),
        );
        *m.entry(key).or_default() += 1;
    }
    m
}

/// `detector_findings_total` samples of an exposition, per (rule,
/// severity).
pub(crate) fn scraped_findings(text: &str) -> BTreeMap<(String, String), u64> {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("detector_findings_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels.split(',').find_map(|kv| {
                let (key, v) = kv.split_once('=')?;
                (key == k).then(|| v.trim_matches('"').to_string())
            })
        };
        if let (Some(r), Some(s), Ok(n)) = (
            label("rule"),
            label("severity"),
            value.trim().parse::<f64>(),
        ) {
            m.insert((r, s), n as u64);
        }
    }
    m
}

pub(crate) fn check_agent(dir: &Path, replayed: &[Finding], v: &mut Verdict) {
    let lines = match read_lines(&dir.join("findings.jsonl")) {
        Ok(l) => l,
        Err(e) => {
            v.failures
                .push(format!("the agent's findings file cannot be read: {e}"));
            return;
        }
    };
    let bad_envelope: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["schema"] != 1
                || !matches!(
                    l["type"].as_str(),
                    Some("finding" | "stats" | "lost" | "snapshot")
                )
                || l["boot_id"].as_str().is_none_or(str::is_empty)
                || l["kernel_release"].as_str().is_none_or(str::is_empty)
        })
        .collect();
    if let Some(first) = bad_envelope.first() {
        v.failures.push(format!(
            "{} line(s) of the agent's findings file lack the envelope (schema 1, type, boot_id, \
             kernel_release), e.g. {first}",
            bad_envelope.len()
        ));
    }

    // The findings, as the replay of the agent's own recording has them.
    let found: Result<Vec<Finding>, String> = lines
        .iter()
        .filter(|l| l["type"] == "finding")
        .map(|l| serde_json::from_value(l.clone()).map_err(|e| format!("{e}: {l}")))
        .collect();
    match found {
        Err(e) => v
            .failures
            .push(format!("a finding line is not a finding: {e}")),
        Ok(found) if found != replayed => {
            let first_diff = found
                .iter()
                .zip(replayed)
                .position(|(a, b)| a != b)
                .unwrap_or(found.len().min(replayed.len()));
            v.failures.push(format!(
                "the agent wrote {} finding line(s), the replay of its recording reports {} \
                 finding(s); they differ from #{}",
                found.len(),
                replayed.len(),
                first_diff + 1
            ));
        }
        Ok(found) => v.notes.push(format!(
            "agent: {} finding line(s), identical to the replay of its recording",
            found.len()
        )),
    }

    // Heartbeats during the run, the final line last.
    let stats: Vec<&Value> = lines.iter().filter(|l| l["type"] == "stats").collect();
    let beats = stats.iter().filter(|s| s["final"] == false).count();
    if beats == 0 {
        v.failures
            .push("the agent wrote no `stats` heartbeat during the run".to_string());
    }
    match lines.last() {
        Some(last) if last["type"] == "stats" && last["final"] == true => {
            if last["findings_total"].as_u64() != Some(replayed.len() as u64) {
                v.failures.push(format!(
                    "the agent's final stats line counts {} findings, the replay {}",
                    last["findings_total"],
                    replayed.len()
                ));
            }
            v.notes.push(format!(
                "agent: {beats} heartbeat(s); at the end {} events, {} lost, RSS {:.1} MiB, {} open fds, \
                 peak {} tracked objects",
                last["events"],
                last["lost"],
                last["rss_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64,
                last["open_fds"],
                last["peak_tracked_objects"]
            ));
        }
        _ => v.failures.push(
            "the agent's findings file does not end with a final `stats` line (SIGTERM must \
             flush one)"
                .to_string(),
        ),
    }
    let lost_lines = lines.iter().filter(|l| l["type"] == "lost").count();
    if lost_lines > 0 {
        v.notes
            .push(format!("agent: {lost_lines} lost-event line(s)"));
    }

    // The scrape, bounded by the findings file before and after it.
    let rc = fs::read_to_string(dir.join("metrics.rc")).unwrap_or_default();
    if rc.trim() != "0" {
        v.failures.push(format!(
            "scraping /metrics in the guest failed (wget exit {})",
            rc.trim()
        ));
        return;
    }
    let text = fs::read_to_string(dir.join("metrics.txt")).unwrap_or_default();
    if !text.ends_with("# EOF\n") {
        v.failures
            .push("the scraped /metrics is not an OpenMetrics document (no `# EOF`)".to_string());
    }
    let scraped = scraped_findings(&text);
    let snapshot = |name: &str| read_lines(&dir.join(name)).map(|l| count_findings(&l));
    let (before, after) = match (
        snapshot("findings.before-scrape.jsonl"),
        snapshot("findings.after-scrape.jsonl"),
    ) {
        (Ok(b), Ok(a)) => (b, a),
        (Err(e), _) | (_, Err(e)) => {
            v.failures
                .push(format!("a findings snapshot around the scrape: {e}"));
            return;
        }
    };
    let mut keys: Vec<&(String, String)> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut total = 0;
    for k in keys {
        let (b, a) = (
            before.get(k).copied().unwrap_or(0),
            after.get(k).copied().unwrap_or(0),
        );
        let s = scraped.get(k).copied().unwrap_or(0);
        total += s;
        if s < b || s > a {
            v.failures.push(format!(
                "detector_findings_total{{rule=\"{}\",severity=\"{}\"}} scraped {s}, but the \
                 findings file held {b} such lines before the scrape and {a} after",
                k.0, k.1
            ));
        }
    }
    let unlisted: u64 = scraped
        .iter()
        .filter(|(k, _)| !after.contains_key(*k))
        .map(|(_, n)| *n)
        .sum();
    if unlisted > 0 {
        v.failures.push(format!(
            "the scrape counts {unlisted} finding(s) of kinds the findings file never held"
        ));
    }
    v.notes.push(format!(
        "agent: /metrics scraped in the guest counts {total} finding(s) ({} bytes); /readyz {}",
        text.len(),
        match fs::read_to_string(dir.join("readyz.rc"))
            .unwrap_or_default()
            .trim()
        {
            "0" => "200",
            _ => "not 200",
        }
    ));
}

/// The file name of a path the guest wrote, found in the results copied
/// to `dir/snapshots`.
fn on_host(dir: &Path, guest_path: &Value) -> Option<std::path::PathBuf> {
    let name = Path::new(guest_path.as_str()?).file_name()?;
    Some(dir.join("snapshots").join(name))
}

/// The snapshots of a run whose agent had them on (the guest's always
/// does, `AGENT_SNAPSHOTS`): checked against its findings file.
pub(crate) fn check_agent_snapshots(dir: &Path, v: &mut Verdict) {
    // When it cannot be read, check_agent has said so.
    let Ok(lines) = read_lines(&dir.join("findings.jsonl")) else {
        return;
    };
    let live: Vec<Finding> = lines
        .iter()
        .filter(|l| l["type"] == "finding")
        .filter_map(|l| serde_json::from_value(l.clone()).ok())
        .collect();
    check_snapshots(dir, &lines, &live, v);
}

/// Each `snapshot` line's files, its trigger among the findings, and the
/// trigger again in the snapshot's replay.
pub(crate) fn check_snapshots(dir: &Path, lines: &[Value], live: &[Finding], v: &mut Verdict) {
    let snaps: Vec<&Value> = lines.iter().filter(|l| l["type"] == "snapshot").collect();
    if snaps.is_empty() {
        v.failures.push(
            "the agent wrote no `snapshot` line (it snapshots near misses, and the workload \
             makes them)"
                .to_string(),
        );
        return;
    }
    let same = |a: &Finding, b: &Finding| {
        a.rule == b.rule && a.severity == b.severity && a.objects == b.objects
    };
    let mut replayed_ok = 0;
    let mut bytes = 0;
    for l in &snaps {
        let (Some(trace), Some(manifest)) =
            (on_host(dir, &l["path"]), on_host(dir, &l["manifest"]))
        else {
            v.failures
                .push(format!("a snapshot line names no files: {l}"));
            continue;
        };
        let m: Manifest = match fs::read(&manifest)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(m) => m,
            Err(e) => {
                v.failures
                    .push(format!("snapshot manifest {}: {e}", manifest.display()));
                continue;
            }
        };
        if l["finding_id"] != m.trigger.id || !live.contains(&m.trigger) {
            v.failures.push(format!(
                "snapshot {}: its trigger #{} is not one of the agent's finding lines",
                trace.display(),
                m.trigger.id
            ));
        }
        match analyze_file_with_stats(&trace, ConfigChoice::FromTrace(Overrides::default()), true) {
            Ok((report, _)) => {
                let found = report.findings.unwrap_or_default();
                if found.iter().any(|f| same(f, &m.trigger)) {
                    replayed_ok += 1;
                } else {
                    v.failures.push(format!(
                        "snapshot {} replays to {} finding(s), none of them its trigger #{} ({} {})",
                        trace.display(),
                        found.len(),
                        m.trigger.id,
                        m.trigger.rule,
                        m.trigger.severity
                    ));
                }
            }
            Err(e) => v
                .failures
                .push(format!("snapshot {} does not replay: {e}", trace.display())),
        }
        bytes += m.trace_bytes;
    }
    v.notes.push(format!(
        "agent: {} snapshot(s), {:.1} MiB of trace, {replayed_ok} replayed to their trigger",
        snaps.len(),
        bytes as f64 / (1 << 20) as f64
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scraped_counters_are_read_per_rule_and_severity() {
        let text = "# TYPE detector_findings counter\n\
            detector_findings_total{rule=\"lazyfree_extra_refs\",severity=\"near_miss\"} 812\n\
            detector_findings_total{rule=\"eexist_storm\",severity=\"info\"} 0\n\
            detector_findings_write_errors_total 0\n# EOF\n";
        let m = scraped_findings(text);
        assert_eq!(
            m.get(&("lazyfree_extra_refs".into(), "near_miss".into())),
            Some(&812)
        );
        assert_eq!(m.len(), 2);
    }

    fn write(dir: &Path, name: &str, text: &str) {
        fs::write(dir.join(name), text).unwrap();
    }

    fn finding_line(id: u64) -> String {
        format!(
            "{{\"schema\":1,\"type\":\"finding\",\"time_unix_ms\":1,\"boot_id\":\"b\",\
             \"kernel_release\":\"k\",\"id\":{id},\"rule\":\"lazyfree_extra_refs\",\
             \"severity\":\"near_miss\",\"objects\":{{\"entries\":[],\"folios\":[],\"tids\":[]}},\
             \"explanation\":\"x\",\"evidence\":[],\"confidence\":{{\"level\":\"full\",\
             \"lost_events\":0,\"note\":\"\"}},\"cause\":\"c\"}}\n"
        )
    }

    fn stats_line(last: bool, total: u64) -> String {
        format!(
            "{{\"schema\":1,\"type\":\"stats\",\"time_unix_ms\":1,\"boot_id\":\"b\",\
             \"kernel_release\":\"k\",\"final\":{last},\"findings_total\":{total},\"events\":5,\
             \"lost\":0,\"rss_bytes\":1048576}}\n"
        )
    }

    /// A result directory of a good run with `n` findings, scraped at `s`
    /// (the snapshot checks are [`snapshots_of_the_real_slice`]'s).
    fn run_dir(n: u64, s: u64) -> (tempfile::TempDir, Vec<Finding>) {
        let d = tempfile::tempdir().unwrap();
        let mut text = stats_line(false, 0);
        for i in 1..=n {
            text.push_str(&finding_line(i));
        }
        write(d.path(), "findings.before-scrape.jsonl", &text);
        write(d.path(), "findings.after-scrape.jsonl", &text);
        text.push_str(&stats_line(true, n));
        write(d.path(), "findings.jsonl", &text);
        write(d.path(), "metrics.rc", "0\n");
        write(d.path(), "readyz.rc", "0\n");
        write(
            d.path(),
            "metrics.txt",
            &format!(
                "detector_findings_total{{rule=\"lazyfree_extra_refs\",severity=\"near_miss\"}} {s}\n# EOF\n"
            ),
        );
        let replayed = read_lines(&d.path().join("findings.jsonl"))
            .unwrap()
            .into_iter()
            .filter(|l| l["type"] == "finding")
            .map(|l| serde_json::from_value(l).unwrap())
            .collect();
        (d, replayed)
    }

    /// The agent's sink with a near-miss recorder over the committed real
    /// capture (6.12, madvfree-dio): its lines, snapshots in `dir/snapshots`.
    fn real_agent_run(dir: &Path) -> Vec<Value> {
        use detector::agent::jsonl::JsonlOutput;
        use detector::agent::sink::AgentSink;
        use detector::agent::AgentMetrics;
        use detector::analyzer::RuleId;
        use detector::flight::{FlightPolicy, FlightRecorder, SnapshotOn};
        use detector::stream::{FileSource, Pipeline, Source, Speed};
        use std::sync::Arc;
        use std::time::Duration;

        let trace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../detector/testdata/real-madvfree-3400.dtr");
        let mut src = FileSource::open(&trace, Speed::Max).unwrap();
        let setup = ConfigChoice::FromTrace(Overrides::default()).setup(&src);
        let mut header = src.header().clone();
        header.analyzer_config = Some(setup.config.clone());
        let metrics = Arc::new(AgentMetrics::new("6.12", &header.plan, RuleId::ALL, false));
        let out = dir.join("findings.jsonl");
        let jsonl = JsonlOutput::file(&out, "b", "k", metrics.clone()).unwrap();
        let policy = FlightPolicy {
            on: SnapshotOn::NearMiss,
            // The guest's path is /out/snapshots; the host finds the files
            // by name under the results' snapshots/.
            dir: dir.join("snapshots"),
            after: Duration::from_secs(5),
            ..FlightPolicy::default()
        };
        let mut sink = AgentSink::new(
            metrics,
            jsonl,
            Duration::from_secs(60),
            Box::new(|| false),
            None,
        )
        .with_flight(FlightRecorder::new(&header, policy).unwrap());
        Pipeline::new(&mut src)
            .analyze(&setup)
            .run(&mut sink)
            .unwrap();
        drop(sink);
        read_lines(&out).unwrap()
    }

    #[test]
    fn snapshots_of_the_real_slice() {
        let d = tempfile::tempdir().unwrap();
        let lines = real_agent_run(d.path());
        let live: Vec<Finding> = lines
            .iter()
            .filter(|l| l["type"] == "finding")
            .map(|l| serde_json::from_value(l.clone()).unwrap())
            .collect();
        let mut v = Verdict::default();
        check_snapshots(d.path(), &lines, &live, &mut v);
        assert!(v.failures.is_empty(), "{:?}", v.failures);
        assert!(
            v.notes[0].contains("replayed to their trigger"),
            "{:?}",
            v.notes
        );

        // No snapshot line.
        let none: Vec<Value> = lines
            .iter()
            .filter(|l| l["type"] != "snapshot")
            .cloned()
            .collect();
        let mut v = Verdict::default();
        check_snapshots(d.path(), &none, &live, &mut v);
        assert!(
            v.failures[0].contains("no `snapshot` line"),
            "{:?}",
            v.failures
        );

        // A manifest whose trigger names another folio: not in the replay,
        // nor among the finding lines.
        let snap = lines.iter().find(|l| l["type"] == "snapshot").unwrap();
        let man = on_host(d.path(), &snap["manifest"]).unwrap();
        let mut m: Value = serde_json::from_slice(&fs::read(&man).unwrap()).unwrap();
        m["trigger"]["objects"]["folios"] = serde_json::json!(["0xdead000"]);
        fs::write(&man, serde_json::to_vec(&m).unwrap()).unwrap();
        let mut v = Verdict::default();
        check_snapshots(d.path(), &lines, &live, &mut v);
        assert!(
            v.failures
                .iter()
                .any(|f| f.contains("none of them its trigger")),
            "{:?}",
            v.failures
        );
        assert!(
            v.failures
                .iter()
                .any(|f| f.contains("not one of the agent's finding lines")),
            "{:?}",
            v.failures
        );
    }

    #[test]
    fn a_good_run_passes_and_each_mismatch_fails() {
        let (d, replayed) = run_dir(3, 3);
        let mut v = Verdict::default();
        check_agent(d.path(), &replayed, &mut v);
        assert!(v.failures.is_empty(), "{:?}", v.failures);

        // The scrape counts more than the file ever held.
        let (d, replayed) = run_dir(3, 4);
        let mut v = Verdict::default();
        check_agent(d.path(), &replayed, &mut v);
        assert!(v.failures[0].contains("scraped 4"), "{:?}", v.failures);

        // The replay found one more than the agent wrote.
        let (d, mut replayed) = run_dir(3, 3);
        replayed.push(replayed[0].clone());
        let mut v = Verdict::default();
        check_agent(d.path(), &replayed, &mut v);
        assert!(
            v.failures.iter().any(|f| f.contains("differ from #4")),
            "{:?}",
            v.failures
        );

        // No final line: SIGTERM did not flush.
        let (d, replayed) = run_dir(2, 2);
        let text = fs::read_to_string(d.path().join("findings.before-scrape.jsonl")).unwrap();
        write(d.path(), "findings.jsonl", &text);
        let mut v = Verdict::default();
        check_agent(d.path(), &replayed, &mut v);
        assert!(
            v.failures.iter().any(|f| f.contains("final `stats` line")),
            "{:?}",
            v.failures
        );
    }
}
