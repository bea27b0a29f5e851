//! Least privilege on the host the tests run on: what an unprivileged user
//! is told, what works without privilege, and what a capture keeps after
//! attaching (tracepoint mode, which the host allows).
//!
//! Needs root (to attach, and to become another user with `setpriv`),
//! kernel BTF and util-linux's `setpriv`; skipped with a reason otherwise.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use detector::event::StreamItem;
use detector::trace::read_all;

const NOBODY: &str = "65534";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn usable() -> bool {
    if !is_root() {
        eprintln!("host privilege test needs root; skipped");
        return false;
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        eprintln!("host privilege test needs kernel BTF; skipped");
        return false;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("host privilege test needs setpriv (util-linux); skipped");
        return false;
    }
    true
}

/// A directory anyone may enter and write, holding a copy of the binary
/// anyone may run (the build tree may not be reachable by `nobody`).
struct World {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let bin = dir.path().join("detector");
    std::fs::copy(env!("CARGO_BIN_EXE_detector"), &bin).expect("copy the binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    World { dir, bin }
}

/// `detector args...` as uid/gid 65534 with no supplementary groups and
/// no capability at all.
fn as_nobody(w: &World, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(&w.bin)
    .args(args)
    .current_dir(w.dir.path())
    .stdin(Stdio::null());
    c
}

#[test]
fn without_privilege_capturing_commands_say_what_is_missing_in_one_sentence() {
    if !usable() {
        return;
    }
    let w = world();
    for args in [
        &["record", "-o", "x.trace", "--duration", "1s"][..],
        &["live", "--plain"][..],
        &["doctor"][..],
    ] {
        let out = as_nobody(&w, args).output().expect("run setpriv");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one sentence, got {stderr}");
        let line = lines[0];
        assert!(
            line.starts_with("detector: loading the BPF probes needs CAP_BPF and CAP_PERFMON"),
            "{args:?}: {line}"
        );
        assert!(line.contains("sudo") && line.contains("setcap"), "{line}");
        // One sentence: the error is not repeated by the cause chain.
        assert_eq!(line.matches("needs CAP_BPF").count(), 1, "{line}");
        assert!(!w.dir.path().join("x.trace").exists());
    }
}

#[test]
fn file_commands_work_without_privilege() {
    if !usable() {
        return;
    }
    let w = world();
    let scn = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/001_cow_of_pinned.scn");
    let local_scn = w.dir.path().join("s.scn");
    std::fs::copy(&scn, &local_scn).unwrap();
    std::fs::set_permissions(&local_scn, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = |args: &[&str]| {
        let out = as_nobody(&w, args).output().expect("run setpriv");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["simulate", "s.scn", "-o", "s.trace"]);
    let trace = w.dir.path().join("s.trace");
    assert_eq!(std::fs::metadata(&trace).unwrap().uid(), 65534);
    let report = run(&["replay", "s.trace", "--fail-on", "never"]);
    assert!(report.contains("cow_of_pinned"), "{report}");
    run(&["export", "s.trace", "-o", "s.json"]);
    run(&[
        "export", "s.trace", "--format", "trace", "--redact", "-o", "r.trace",
    ]);
    let report = run(&["replay", "r.trace", "--fail-on", "never"]);
    assert!(report.contains("cow_of_pinned"), "{report}");
    run(&["live", "--plain", "--replay", "s.trace", "--speed", "max"]);
}

/// The capability sets of every thread of `pid`, by name (`CapEff`, ...).
fn thread_caps(pid: u32) -> Vec<BTreeMap<String, u64>> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let Ok(status) = std::fs::read_to_string(t.unwrap().path().join("status")) else {
            continue;
        };
        let caps = status
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.starts_with("Cap")
                    .then(|| (k.to_string(), u64::from_str_radix(v.trim(), 16).ok()))
                    .and_then(|(k, v)| Some((k, v?)))
            })
            .collect();
        out.push(caps);
    }
    out
}

fn cap_bit(name: &str) -> u64 {
    match name {
        "CAP_DAC_OVERRIDE" => 1 << 1,
        "CAP_SYS_ADMIN" => 1 << 21,
        "CAP_BPF" => 1 << 39,
        other => panic!("the capture kept {other}, which it never needs"),
    }
}

/// Starts `child` and reads its stderr until the line naming the kept
/// capabilities; returns that set as bits, the stderr so far and the rest
/// of the stream.
fn kept_caps(child: &mut Child) -> (u64, String, BufReader<std::process::ChildStderr>) {
    let mut err = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).expect("read stderr");
        assert!(n > 0, "ended before dropping capabilities: {seen}");
        seen.push_str(&line);
        if let Some(kept) = line
            .trim()
            .strip_prefix("detector: capabilities kept after attaching: ")
        {
            let bits = match kept {
                "none" => 0,
                list => list.split(", ").map(cap_bit).fold(0, |a, b| a | b),
            };
            return (bits, seen, err);
        }
        assert!(Instant::now() < deadline, "{seen}");
    }
}

/// Every thread holds exactly `kept` (effective, permitted, bounding) and
/// nothing to hand on (inheritable, ambient).
fn assert_reduced(pid: u32, kept: u64) {
    let threads = thread_caps(pid);
    assert!(!threads.is_empty());
    for t in &threads {
        assert_eq!(t["CapEff"], kept, "{t:x?}");
        assert_eq!(t["CapPrm"], kept, "{t:x?}");
        assert_eq!(t["CapInh"], 0, "{t:x?}");
        assert_eq!(t["CapAmb"], 0, "{t:x?}");
        assert_eq!(t["CapBnd"], kept, "{t:x?}");
    }
}

fn my_caps() -> u64 {
    thread_caps(std::process::id())[0]["CapEff"]
}

#[test]
fn record_drops_every_capability_it_does_not_need_once_attached() {
    if !usable() {
        return;
    }
    assert_ne!(my_caps(), 0, "the test starts with capabilities to drop");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.trace");
    let mut child = Command::new(env!("CARGO_BIN_EXE_detector"))
        .args([
            "record",
            "--attach",
            "tracepoint",
            "--duration",
            "3s",
            "--stats",
            "--redact",
            "-o",
        ])
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start detector record");
    let (kept, _, mut rest) = kept_caps(&mut child);
    // Reading the maps needs nothing from Linux 6.5 on, CAP_BPF before.
    assert_eq!(kept & !cap_bit("CAP_BPF"), 0, "kept {kept:#x}");
    assert_reduced(child.id(), kept);
    let mut tail = String::new();
    std::io::Read::read_to_string(&mut rest, &mut tail).unwrap();
    assert!(child.wait().unwrap().success(), "{tail}");
    // Lost counters and program statistics were still read after the drop.
    assert!(tail.contains("per-probe BPF run time"), "{tail}");
    assert!(!tail.contains("unavailable"), "{tail}");

    let (h, items, end) = read_all(&path).unwrap();
    assert!(end.is_complete());
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    assert!(h.redacted && !h.layout.contains_key("vmemmap_base_sym"));
    let folios = items
        .iter()
        .filter_map(|i| match i {
            StreamItem::Event(e) if e.folio != 0 => Some(e.folio),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert!(!folios.is_empty());
    assert!(folios.iter().all(|&f| f >= 0xff00_0000_0000_0000));
}

#[test]
fn a_rotating_record_into_a_directory_only_root_may_write_keeps_dac_override() {
    if !usable() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("theirs");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("rot.trace");
    let record = |extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_detector"))
            .args(["record", "--attach", "tracepoint", "--duration", "3s"])
            .args(extra)
            .arg("-o")
            .arg(&path)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start detector record");
        let (kept, _, mut rest) = kept_caps(&mut child);
        assert_reduced(child.id(), kept);
        let mut tail = String::new();
        std::io::Read::read_to_string(&mut rest, &mut tail).unwrap();
        assert!(child.wait().unwrap().success(), "{tail}");
        kept
    };
    // Rotation creates files later: root's override is all that allows it.
    let kept = record(&["--rotate-size", "256K", "--rotate-keep", "3"]);
    assert_ne!(kept & cap_bit("CAP_DAC_OVERRIDE"), 0, "kept {kept:#x}");
    let segments = detector::trace::existing_segments(&path);
    assert!(segments.len() > 1, "{segments:?}");
    for s in &segments {
        assert_eq!(std::fs::metadata(s).unwrap().mode() & 0o777, 0o600);
    }
    // One file, opened before the drop: nothing of the kind is kept.
    let kept = record(&[]);
    assert_eq!(kept & cap_bit("CAP_DAC_OVERRIDE"), 0, "kept {kept:#x}");
}

#[test]
fn live_drops_capabilities_on_every_thread() {
    if !usable() {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_detector"))
        .args(["live", "--plain", "--attach", "tracepoint"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start detector live");
    let (kept, _, mut rest) = kept_caps(&mut child);
    assert_eq!(kept & !cap_bit("CAP_BPF"), 0, "kept {kept:#x}");
    let threads = thread_caps(child.id());
    assert!(
        threads.len() >= 2,
        "the capture runs on a thread of its own"
    );
    // The capture thread keeps what reading the maps needs; the others
    // need nothing.
    for t in &threads {
        assert_eq!(t["CapEff"] & !kept, 0, "{t:x?}");
        assert_eq!(t["CapPrm"], t["CapEff"], "{t:x?}");
        assert_eq!((t["CapInh"], t["CapAmb"]), (0, 0), "{t:x?}");
    }
    // SAFETY: kill sends a signal to the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut tail = String::new();
    std::io::Read::read_to_string(&mut rest, &mut tail).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {tail}");
}
