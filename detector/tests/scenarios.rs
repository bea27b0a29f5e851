//! Every scenario under `detector/scenarios/` goes through the file path
//! (script -> `simulate` -> trace file -> reader -> analyzer) and must
//! produce exactly the findings it declares.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::path::{Path, PathBuf};

use detector::analyzer::{Analyzer, ConfidenceLevel, Config, RuleId};
use detector::cli::simulate::{load, write_trace};
use detector::scenario::check_findings;
use detector::sinks::{analyze_file, analyze_file_with_stats};
use detector::stream::{ConfigChoice, Overrides};

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "scn"))
        .collect();
    v.sort();
    v
}

#[test]
fn corpus_is_large_enough_and_covers_every_rule() {
    let files = scenario_files();
    assert!(files.len() >= 25, "only {} scenarios", files.len());
    let mut seen = std::collections::BTreeSet::new();
    let mut benign = 0;
    for f in &files {
        let sc = load(f).unwrap();
        benign += sc.expect_none as usize;
        seen.extend(sc.expect.iter().map(|x| x.rule));
    }
    for r in RuleId::ALL {
        assert!(seen.contains(r), "no scenario expects {r}");
    }
    assert!(benign >= 10, "only {benign} benign look-alikes");
}

/// A race scenario says what its finding blames, not only which rule fires:
/// every expectation names at least one object (entry, folio or task) and
/// the confidence, so a rule that fires on the wrong folio or claims full
/// confidence across a loss fails.
#[test]
fn race_scenarios_name_objects_and_confidence() {
    let mut vague = Vec::new();
    for f in scenario_files() {
        let sc = load(&f).unwrap();
        for x in &sc.expect {
            let objects = x.entries.len() + x.folios.len() + x.tids.len();
            if objects == 0 || x.confidence.is_none() {
                vague.push(format!("{}: {x}", f.display()));
            }
        }
    }
    assert!(
        vague.is_empty(),
        "expectations without objects or confidence:\n{}",
        vague.join("\n")
    );
}

#[test]
fn every_scenario_produces_exactly_its_findings_through_a_trace_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for f in scenario_files() {
        let sc = load(&f).unwrap();
        let out = dir.path().join(format!("{}.trace", sc.name));
        write_trace(&sc, &f, &out).unwrap();
        let report = analyze_file(&out, sc.config.clone()).unwrap();
        assert!(report.complete, "{}: {}", sc.name, report.end);
        assert!(report.origin.starts_with("simulate:"));
        assert_eq!(report.items, sc.items.len() as u64, "{}", sc.name);
        let findings = report.findings.clone().unwrap_or_default();
        if let Err(e) = check_findings(&sc.expect, &findings) {
            failures.push(format!("{}:{e}", sc.name));
        }
        for finding in &findings {
            assert!(
                !finding.evidence.is_empty(),
                "{}: finding without evidence",
                sc.name
            );
            assert!(
                finding
                    .evidence
                    .windows(2)
                    .all(|w| w[0].index <= w[1].index),
                "{}: evidence out of order",
                sc.name
            );
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// What `detector replay FILE` does with no flag: the configuration comes
/// from the trace header, so a scenario's `config` lines hold on replay.
#[test]
fn every_scenario_replays_to_its_findings_with_the_config_its_trace_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut non_default = 0;
    for f in scenario_files() {
        let sc = load(&f).unwrap();
        let out = dir.path().join(format!("{}.trace", sc.name));
        write_trace(&sc, &f, &out).unwrap();
        let (report, _) =
            analyze_file_with_stats(&out, ConfigChoice::FromTrace(Overrides::default()), true)
                .unwrap();
        assert_eq!(report.config, sc.config, "{}", sc.name);
        assert_eq!(report.config_source, "from the trace header", "{}", sc.name);
        let findings = report.findings.unwrap_or_default();
        if let Err(e) = check_findings(&sc.expect, &findings) {
            failures.push(format!("{}:{e}", sc.name));
        }
        if sc.config != Config::default() {
            non_default += 1;
            // Without the header's config the same file would disagree:
            // what made replay and `cargo test` differ before.
            let defaults = analyze_file(&out, Config::default()).unwrap();
            let n = defaults.findings.unwrap_or_default().len();
            assert_ne!(
                n,
                sc.expect.len(),
                "{}: the config changes nothing",
                sc.name
            );
        }
    }
    assert!(non_default > 0, "no scenario has a config line");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn lost_events_inside_the_window_reduce_confidence() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/000_aba_lost_events.scn");
    let sc = load(&f).unwrap();
    let mut a = Analyzer::new(sc.config.clone());
    let mut out = Vec::new();
    for (i, it) in sc.items.iter().enumerate() {
        a.process(i as u64, it, &mut out);
    }
    a.finish(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].confidence.level, ConfidenceLevel::Reduced);
    assert_eq!(out[0].confidence.lost_events, 12);

    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/000_aba_reuse_moved.scn");
    let sc = load(&f).unwrap();
    let mut a = Analyzer::new(sc.config.clone());
    let mut out = Vec::new();
    for (i, it) in sc.items.iter().enumerate() {
        a.process(i as u64, it, &mut out);
    }
    assert_eq!(out[0].confidence.level, ConfidenceLevel::Full);
    assert_eq!(out[0].objects.entries, vec!["1:0x40".to_string()]);
}
