//! `detector replay` as a user runs it: a scenario compiled by `detector
//! simulate`, then replayed by the built binary. The configuration comes
//! from the trace header unless a flag overrides it, and a storm of
//! identical findings reads as one group while `--all` still lists each.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn detector(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_detector"))
        .args(args)
        .output()
        .unwrap()
}

fn simulate(dir: &Path, scenario: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(scenario);
    let out = dir.join(format!("{scenario}.dtr"));
    let o = detector(&[
        "simulate",
        script.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn json(file: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["replay", file.to_str().unwrap(), "--format", "json"];
    args.extend_from_slice(extra);
    let o = detector(&args);
    assert!(
        o.status.code().is_some_and(|c| c <= 1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn report(file: &Path, extra: &[&str]) -> String {
    let mut args = vec!["replay", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    String::from_utf8(detector(&args).stdout).unwrap()
}

#[test]
fn replay_uses_the_scenario_config_unless_a_flag_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    // `config eexist_threshold=4`: five -EEXIST answers make a storm.
    let file = simulate(dir.path(), "002_eexist_storm.scn");

    let v = json(&file, &[]);
    assert_eq!(v["report_version"], 2);
    assert_eq!(v["config"]["eexist_threshold"], 4);
    assert_eq!(v["config_source"], "from the trace header");
    assert_eq!(v["by_severity"]["info"], 1);
    assert_eq!(v["groups"][0]["rule"], "eexist_storm");
    let text = report(&file, &[]);
    assert!(
        text.contains("config     from the trace header: eexist_threshold=4 "),
        "{text}"
    );

    let v = json(&file, &["--eexist-threshold", "64"]);
    assert_eq!(v["config"]["eexist_threshold"], 64);
    assert_eq!(
        v["config_source"],
        "from the trace header, overridden by --eexist-threshold"
    );
    assert_eq!(v["by_severity"]["info"], 0);
    assert_eq!(v["groups"], serde_json::json!([]));
}

#[test]
fn a_storm_replays_to_one_group_and_all_lists_every_finding() {
    let dir = tempfile::tempdir().unwrap();
    let file = simulate(dir.path(), "002_swapin_pin_skipped_storm.scn");
    // Scenario times are µs after 1 s; the twelve swap-ins are at 105 µs,
    // 115 µs, ... 215 µs.
    let (first_ns, last_ns) = (1_000_105_000u64, 1_000_215_000u64);

    let v = json(&file, &[]);
    assert_eq!(v["by_severity"]["violation"], 12);
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{groups:#?}");
    let g = &groups[0];
    assert_eq!(g["rule"], "swapin_without_cache_pin");
    assert_eq!(g["severity"], "violation");
    assert_eq!(g["tid"], 700);
    assert_eq!(g["comm"], "stress");
    assert_eq!(g["cause"], "not_held");
    assert_eq!(g["count"], 12);
    assert_eq!(
        (g["first_id"].as_u64(), g["last_id"].as_u64()),
        (Some(1), Some(12))
    );
    assert_eq!(
        (g["first_ns"].as_u64(), g["last_ns"].as_u64()),
        (Some(first_ns), Some(last_ns))
    );
    let examples = g["examples"].as_array().unwrap();
    assert_eq!(examples.len(), 3);
    // Complete findings, evidence included.
    assert_eq!(examples[2]["id"], 3);
    assert_eq!(examples[0]["cause"], "not_held");
    assert_eq!(examples[0]["evidence"][0]["probe"], "swap_read");
    // Without --all the full list is not there (not an empty list that an
    // old reader would take for "no findings").
    assert!(v.get("findings").is_none());

    let all = json(&file, &["--all"]);
    let findings = all["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 12);
    let ids: Vec<u64> = findings.iter().map(|f| f["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (1..=12).collect::<Vec<_>>());
    assert_eq!(all["groups"][0]["count"], 12);

    let text = report(&file, &[]);
    assert!(
        text.contains(
            "== 12 x [violation] swapin_without_cache_pin task stress/700 cause not_held: \
             findings #1..#12, from 0.000095s to 0.000205s; 3 shown"
        ),
        "{text}"
    );
    assert_eq!(
        text.matches("[violation] swapin_without_cache_pin\n")
            .count(),
        3,
        "{text}"
    );
    assert!(text.contains("`--all` lists every finding"), "{text}");
    let text = report(&file, &["--all"]);
    assert_eq!(
        text.matches("[violation] swapin_without_cache_pin\n")
            .count(),
        12,
        "{text}"
    );
}

#[test]
fn live_plain_prints_the_first_findings_of_a_group_then_counts() {
    let dir = tempfile::tempdir().unwrap();
    let file = simulate(dir.path(), "002_swapin_pin_skipped_storm.scn");
    let o = detector(&[
        "live",
        "--replay",
        file.to_str().unwrap(),
        "--speed",
        "max",
        "--plain",
    ]);
    let out = String::from_utf8(o.stdout).unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for (i, l) in lines[..3].iter().enumerate() {
        assert!(
            l.contains(&format!(" #{} violation swapin_without_cache_pin [", i + 1)),
            "{l}"
        );
        assert!(
            l.contains(" task=stress/700 cause=not_held tid 700 read"),
            "{l}"
        );
    }
    assert!(
        lines[3].contains(
            " group violation swapin_without_cache_pin task=stress/700 cause=not_held count=10 \
             first=#1 latest=#10"
        ),
        "{out}"
    );
    assert!(
        err.contains("analyzer config from the trace header"),
        "{err}"
    );
    assert!(err.contains("12 findings"), "{err}");
    assert!(
        err.contains("group: 12 x [violation] swapin_without_cache_pin task stress/700"),
        "{err}"
    );
}
