//! Every file the tool writes is readable by its owner only, whatever the
//! umask: traces, rotated segments, exports, and files it overwrites.
//!
//! The umask is set to the usual 022 (which would give 0644) for this whole
//! test binary; the commands run as children and inherit it.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use detector::event::StreamItem;
use detector::trace::{RotatingWriter, RotationPolicy, TraceEnd, TraceHeader};
use detector_common::Event;

fn permissive_umask() {
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe { libc::umask(0o022) };
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

fn detector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_detector"))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run detector");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn simulate(out: &Path) {
    let scn = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/000_aba_reuse_moved.scn");
    run(detector().arg("simulate").arg(scn).arg("-o").arg(out));
}

#[test]
fn umask_would_allow_others_to_read() {
    permissive_umask();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("plain");
    std::fs::write(&p, b"x").unwrap();
    assert_eq!(mode(&p), 0o644, "the check below means something");
}

#[test]
fn simulated_traces_and_overwritten_files_are_0600() {
    permissive_umask();
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.trace");
    simulate(&fresh);
    assert_eq!(mode(&fresh), 0o600);

    let old = dir.path().join("old.trace");
    std::fs::write(&old, b"an older, world-readable file").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    simulate(&old);
    assert_eq!(mode(&old), 0o600);
    assert!(detector::trace::read_all(&old).unwrap().2.is_complete());

    let synthetic = dir.path().join("synthetic.trace");
    run(detector()
        .args(["simulate", "--synthetic", "100", "-o"])
        .arg(&synthetic));
    assert_eq!(mode(&synthetic), 0o600);
}

#[test]
fn exports_are_0600() {
    permissive_umask();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("s.trace");
    simulate(&trace);
    for (format, redact) in [
        ("perfetto", false),
        ("jsonl", false),
        ("trace", false),
        ("jsonl", true),
        ("trace", true),
    ] {
        let out: PathBuf = dir.path().join(format!("out-{format}-{redact}"));
        let mut cmd = detector();
        cmd.arg("export")
            .arg(&trace)
            .args(["--format", format, "-o"])
            .arg(&out);
        if redact {
            cmd.arg("--redact");
        }
        run(&mut cmd);
        assert_eq!(mode(&out), 0o600, "{format} redact={redact}");
    }
}

#[test]
fn rotated_segments_are_0600() {
    permissive_umask();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("cap.trace");
    let policy = RotationPolicy {
        max_bytes: 2000,
        keep: 0,
    };
    let mut w = RotatingWriter::create(&base, &TraceHeader::new("t"), policy).unwrap();
    // Enough for several 2000-byte segments of v2 (a few bytes an event).
    for i in 0..5000 {
        w.write_item(&StreamItem::Event(Event {
            ts_ns: i,
            ..Event::default()
        }))
        .unwrap();
    }
    let s = w.finish(TraceEnd::at(100, "done")).unwrap();
    assert!(s.files.len() > 3);
    for f in &s.files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
}
