//! `export --redact`: a redacted copy of a trace gives the same findings
//! (rule, severity, cause, entries, tasks, counts, evidence), with every
//! folio and kernel pointer mapped through one consistent pseudonym, and
//! contains none of the original kernel addresses.
//!
//! The real captures are slices of captures made in a Debian 6.12 guest
//! (`detector/testdata/README.md`); the scenario corpus adds every rule.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use detector::analyzer::Finding;
use detector::event::{is_kernel_pointer, StreamItem};
use detector::sinks::analyze_file_with_stats;
use detector::stream::{ConfigChoice, Overrides};
use detector::trace::read_all;
use detector_common::Event;

fn detector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_detector"))
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn export(src: &Path, dst: &Path, format: &str, redact: bool) {
    let mut cmd = detector();
    cmd.arg("export")
        .arg(src)
        .args(["--format", format, "-o"])
        .arg(dst);
    if redact {
        cmd.arg("--redact");
    }
    let out = cmd.output().expect("run detector export");
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn findings(path: &Path) -> Vec<Finding> {
    let (report, _) =
        analyze_file_with_stats(path, ConfigChoice::FromTrace(Overrides::default()), true)
            .expect("analyze");
    report.findings.expect("every finding kept")
}

fn events(path: &Path) -> Vec<StreamItem> {
    read_all(path).expect("read trace").1
}

fn kernel(v: u64) -> bool {
    is_kernel_pointer(v as i64) || (0xff00_0000_0000_0000..0xffff_8000_0000_0000).contains(&v)
}

/// Original kernel pointer -> redacted value, built from the two files
/// record by record; fails on any field that changed though it is not a
/// kernel address, and on any mapping that is not one-to-one.
fn pointer_map(orig: &[StreamItem], red: &[StreamItem]) -> HashMap<u64, u64> {
    assert_eq!(orig.len(), red.len());
    let mut fwd = HashMap::new();
    let mut back = HashMap::new();
    let mut pair = |o: u64, r: u64| {
        if !kernel(o) {
            assert_eq!(o, r, "a value that is not a kernel address changed");
            return;
        }
        assert!(kernel(r), "{o:#x} became {r:#x}, not a kernel address");
        assert_ne!(o, r, "{o:#x} was not redacted");
        assert_eq!(*fwd.entry(o).or_insert(r), r, "{o:#x} has two pseudonyms");
        assert_eq!(
            *back.entry(r).or_insert(o),
            o,
            "{r:#x} stands for two pointers"
        );
    };
    for (o, r) in orig.iter().zip(red) {
        let (StreamItem::Event(o), StreamItem::Event(r)) = (o, r) else {
            assert_eq!(o, r, "lost records carry no address");
            continue;
        };
        pair(o.folio, r.folio);
        pair(o.ret as u64, r.ret as u64);
        pair(o.addr, r.addr);
        pair(o.f_mapping, r.f_mapping);
        assert_eq!(o.f_mapping & 0x3f, r.f_mapping & 0x3f, "mapping tag bits");
        let present = o.pte & (1 | 1 << 8) != 0;
        let pfn = 0x000f_ffff_ffff_f000u64;
        assert_eq!(o.pte & !pfn, r.pte & !pfn, "PTE flag bits");
        if !present || o.pte & pfn == 0 {
            assert_eq!(o.pte, r.pte, "a PTE without a frame changed");
        } else {
            assert_ne!(o.pte, r.pte, "a present PTE kept its frame");
        }
        // Everything else is exactly as it was.
        let rest = Event {
            folio: r.folio,
            ret: r.ret,
            addr: r.addr,
            f_mapping: r.f_mapping,
            pte: r.pte,
            ..*o
        };
        assert_eq!(&rest, r);
    }
    fwd
}

/// `s` with every original pointer written as its pseudonym.
fn map_text(s: &str, map: &HashMap<u64, u64>) -> String {
    let mut out = s.to_string();
    for (o, r) in map {
        out = out.replace(&format!("{o:#x}"), &format!("{r:#x}"));
    }
    out
}

/// A finding of the original file as the redacted file must report it.
fn through(f: &Finding, map: &HashMap<u64, u64>) -> Finding {
    let mut f = f.clone();
    f.explanation = map_text(&f.explanation, map);
    for folio in &mut f.objects.folios {
        *folio = map_text(folio, map);
    }
    for e in &mut f.evidence {
        e.note = map_text(&e.note, map);
        let s = &mut e.state;
        s.folio = s.folio.as_deref().map(|x| map_text(x, map));
        s.addr = s.addr.as_deref().map(|x| map_text(x, map));
        s.ret_text = s.ret_text.as_deref().map(|x| map_text(x, map));
        s.ret = s.ret.map(|r| map.get(&(r as u64)).map_or(r, |&x| x as i64));
    }
    f
}

/// Replays `src` and its redacted copy; returns how many findings matched.
fn same_findings_after_redaction(src: &Path, dir: &Path) -> usize {
    let red = dir.join(format!(
        "{}.redacted",
        src.file_name().unwrap().to_string_lossy()
    ));
    export(src, &red, "trace", true);
    let (h, _, end) = read_all(&red).unwrap();
    assert!(h.redacted);
    assert!(!h.layout.contains_key("vmemmap_base_sym"));
    assert!(end.is_complete(), "{end:?}");

    let map = pointer_map(&events(src), &events(&red));
    let want: Vec<Finding> = findings(src).iter().map(|f| through(f, &map)).collect();
    let got = findings(&red);
    assert_eq!(got.len(), want.len(), "{}", src.display());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "{}", src.display());
    }

    // None of the original kernel addresses is anywhere in the copy, in
    // binary or as text.
    let bytes = std::fs::read(&red).unwrap();
    let (orig_header, _, _) = read_all(src).unwrap();
    let mut secrets: Vec<u64> = map.keys().copied().collect();
    secrets.extend(orig_header.layout.get("vmemmap_base_sym").copied());
    for v in secrets.iter().filter(|&&v| v != 0) {
        assert!(
            !bytes.windows(8).any(|w| w == v.to_le_bytes()),
            "{v:#x} is still in {}",
            red.display()
        );
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&format!("{v:x}")), "{v:#x} as text");
        assert!(!text.contains(&v.to_string()), "{v} in decimal");
    }
    want.len()
}

#[test]
fn real_captures_give_the_same_findings_after_redaction() {
    let dir = tempfile::tempdir().unwrap();
    for (name, at_least) in [("real-madvfree-3400.dtr", 16), ("real-uffd-106700.dtr", 1)] {
        let n = same_findings_after_redaction(&testdata(name), dir.path());
        assert!(n >= at_least, "{name}: only {n} findings");
    }
}

#[test]
fn scenario_corpus_gives_the_same_findings_after_redaction() {
    let dir = tempfile::tempdir().unwrap();
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&scenarios)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "scn"))
        .collect();
    files.sort();
    let mut total = 0;
    for scn in &files {
        let trace = dir.path().join(format!(
            "{}.trace",
            scn.file_stem().unwrap().to_string_lossy()
        ));
        let st = detector()
            .args(["simulate"])
            .arg(scn)
            .arg("-o")
            .arg(&trace)
            .output()
            .unwrap();
        assert!(st.status.success(), "{}", scn.display());
        total += same_findings_after_redaction(&trace, dir.path());
    }
    assert!(
        total >= files.len() / 2,
        "only {total} findings in the corpus"
    );
}

#[test]
fn two_runs_give_unrelated_pseudonyms() {
    let dir = tempfile::tempdir().unwrap();
    let src = testdata("real-madvfree-3400.dtr");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    export(&src, &a, "trace", true);
    export(&src, &b, "trace", true);
    let ma = pointer_map(&events(&src), &events(&a));
    let mb = pointer_map(&events(&src), &events(&b));
    assert!(ma.len() > 10);
    let same = ma.iter().filter(|(k, v)| mb.get(k) == Some(v)).count();
    assert_eq!(same, 0, "the key must be new for every run");
}

#[test]
fn redacted_json_exports_hold_no_kernel_address() {
    let dir = tempfile::tempdir().unwrap();
    let src = testdata("real-uffd-106700.dtr");
    let plain = dir.path().join("plain.jsonl");
    export(&src, &plain, "jsonl", false);
    let red_trace = dir.path().join("r.trace");
    export(&src, &red_trace, "trace", true);
    let map = pointer_map(&events(&src), &events(&red_trace));
    assert!(!map.is_empty());
    let plain_text = std::fs::read_to_string(&plain).unwrap();
    let mut leaked_before = 0;
    for format in ["jsonl", "perfetto"] {
        let out = dir.path().join(format!("r.{format}"));
        export(&src, &out, format, true);
        let text = std::fs::read_to_string(&out).unwrap();
        for o in map.keys() {
            let hex = format!("{o:#x}");
            leaked_before += usize::from(plain_text.contains(&hex));
            assert!(!text.contains(&hex), "{format}: {hex}");
            assert!(!text.contains(&(*o as i64).to_string()), "{format}: {o}");
        }
    }
    assert!(leaked_before > 0, "the plain export shows the addresses");
}
