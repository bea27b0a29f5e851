//! Tracepoint (degraded) mode against the kernel the tests run on.
//!
//! Needs root and a kernel with BTF; CI runs as root. Forces
//! `--attach tracepoint` so the degraded path is exercised even on a kernel
//! that would allow fentry.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::process::Command;

use detector::event::StreamItem;
use detector::plan::AttachMode;
use detector::trace::read_all;
use detector_common::ProbeId;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn detector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_detector"))
}

/// Skips (with a reason on stderr) where the test cannot mean anything.
fn usable() -> bool {
    if !is_root() {
        eprintln!("host tracepoint test needs root; skipped");
        return false;
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        eprintln!("host tracepoint test needs kernel BTF; skipped");
        return false;
    }
    true
}

#[test]
fn doctor_reports_degraded_mode_and_what_it_cannot_see() {
    if !usable() {
        return;
    }
    let out = detector()
        .args(["doctor", "--attach", "tracepoint"])
        .output()
        .expect("run detector doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "doctor failed: {stderr}");
    assert!(stdout.contains("DEGRADED MODE"), "{stdout}");
    assert!(
        stdout.contains("tp_vmscan_write_folio  tracepoint"),
        "{stdout}"
    );
    // The roles it cannot see are named.
    assert!(
        stdout.contains("swap_cache_lookup") && stdout.contains("NOT seen"),
        "{stdout}"
    );
}

#[test]
fn records_tracepoint_events_into_a_replayable_file() {
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("host.trace");
    let (stderr, exited) = record_while_churning_threads(&[], &path);
    assert!(stderr.contains("DEGRADED MODE"), "{stderr}");

    let (header, items, end) = read_all(&path).expect("read the trace back");
    assert!(end.is_complete(), "file must end with a footer: {end:?}");
    let tp: Vec<_> = header
        .plan
        .iter()
        .filter(|p| p.mode == AttachMode::Tracepoint)
        .map(|p| p.probe.as_str())
        .collect();
    assert!(
        tp.contains(&"tp_page_free") && tp.contains(&"tp_lru_insertion"),
        "{tp:?}"
    );
    assert!(header
        .plan
        .iter()
        .all(|p| !matches!(p.mode, AttachMode::Fentry | AttachMode::Kprobe)));

    assert!(tp.contains(&"task_exit"), "{tp:?}");
    let mut frees = 0u64;
    let mut lru = 0u64;
    let mut our_exits = 0u64;
    for item in &items {
        if let StreamItem::Event(e) = item {
            match ProbeId::from_u16(e.probe) {
                Some(ProbeId::TpPageFree) => {
                    frees += 1;
                    assert!(e.folio != 0 && e.nr >= 1, "{e:?}");
                }
                Some(ProbeId::TpLruInsertion) => {
                    lru += 1;
                    // The folio state was read: a folio on its way to an
                    // LRU list has a reference.
                    assert!(e.f_refcount >= 1, "{e:?}");
                }
                // Reclaim writing an anonymous folio to swap: seen only
                // when the machine is under memory pressure while the test
                // runs, so it may or may not appear.
                Some(ProbeId::TpWriteFolio) => {
                    assert!(tp.contains(&"tp_vmscan_write_folio"), "{tp:?}");
                    assert!(e.folio != 0, "{e:?}");
                }
                // Any task on the host may exit; the threads this test ran
                // must be among them, with the start time the analyzer uses
                // to tell a recycled tid from its first owner.
                Some(ProbeId::TaskExit) => {
                    assert!(e.tid != 0 && e.pid != 0, "{e:?}");
                    if exited.contains(&e.tid) && e.pid == std::process::id() {
                        assert!(e.task_start != 0, "{e:?}");
                        our_exits += 1;
                    }
                }
                other => panic!("unexpected probe {other:?} in tracepoint mode"),
            }
        }
    }
    assert!(frees > 0, "no page frees seen in 3 s of allocation");
    assert!(
        our_exits > 0,
        "none of the {} threads that exited during the capture was seen exiting",
        exited.len()
    );
    assert!(lru > 0, "no LRU insertions seen in 3 s of allocation");
    assert!(header.kernel_release.len() > 1 && !header.boot_id.is_empty());
}

/// Allocates and frees memory for a while, so this process frees pages.
fn churn_memory() {
    churn_memory_for(20);
}

/// Like [`record_while_churning`], but the churn runs in short-lived
/// threads; returns their tids too.
fn record_while_churning_threads(extra: &[&str], path: &std::path::Path) -> (String, Vec<u32>) {
    let mut tids = Vec::new();
    let stderr = record_while(extra, path, || {
        for _ in 0..5 {
            let t = std::thread::spawn(|| {
                churn_memory_for(4);
                // SAFETY: gettid has no preconditions.
                unsafe { libc::gettid() as u32 }
            });
            tids.push(t.join().expect("churn thread"));
        }
    });
    (stderr, tids)
}

/// Runs `detector record --attach tracepoint --duration 4s <extra> -o path`
/// and, once its probes are attached, `load`; returns the recorder's stderr
/// after checking it succeeded.
fn record_while(extra: &[&str], path: &std::path::Path, load: impl FnOnce()) -> String {
    let child = detector()
        .args(["record", "--attach", "tracepoint", "--duration", "4s"])
        .args(extra)
        .arg("-o")
        .arg(path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start detector record");
    // The header is written once the probes are attached (loading them can
    // take seconds on a busy machine): only then is the load seen.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::metadata(path).map_or(true, |m| m.len() == 0)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    load();
    let out = child.wait_with_output().expect("wait for detector record");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "record failed: {stderr}");
    stderr
}

fn churn_memory_for(rounds: usize) {
    for _ in 0..rounds {
        let v: Vec<u8> = vec![1u8; 16 << 20];
        std::hint::black_box(&v);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// [`record_while`] with this thread allocating and freeing memory.
fn record_while_churning(extra: &[&str], path: &std::path::Path) -> String {
    record_while(extra, path, churn_memory)
}

#[test]
fn pid_filter_keeps_only_that_process() {
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pid.trace");
    let me = std::process::id();
    record_while_churning(&["--pid", &me.to_string()], &path);
    let (_, items, _) = read_all(&path).expect("read the trace back");
    let pids: Vec<u32> = items
        .iter()
        .filter_map(|i| match i {
            StreamItem::Event(e) => Some(e.pid),
            StreamItem::Lost { .. } => None,
        })
        .collect();
    assert!(
        !pids.is_empty(),
        "this process freed pages, yet no event was kept"
    );
    assert!(
        pids.iter().all(|p| *p == me),
        "events of other processes passed the filter"
    );
}

#[test]
fn rotation_keeps_n_replayable_segments() {
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rot.trace");
    // Small segments: format v2 takes a few bytes per page-free event.
    record_while_churning(&["--rotate-size", "32K", "--rotate-keep", "2"], &path);
    let segments = detector::trace::existing_segments(&path);
    assert_eq!(
        segments.len(),
        2,
        "keep 2 means two files on disk: {segments:?}"
    );
    for seg in &segments {
        let (header, items, end) = read_all(seg).expect("each segment replays");
        assert!(end.is_complete(), "{}: {end:?}", seg.display());
        assert!(!items.is_empty());
        assert!(header.plan.iter().any(|p| p.mode == AttachMode::Tracepoint));
    }
    // 3 s of page frees is far more than two 32 KiB segments: older ones
    // were deleted, so the newest segment's index is past 1.
    let (header, _, _) = read_all(&path).expect("newest segment");
    assert!(header.segment >= 2, "segment index {}", header.segment);
}

#[test]
fn stats_and_latency_report_per_probe_cost_and_percentiles() {
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stats.trace");
    let stderr = record_while_churning(&["--stats", "--analyze", "--latency"], &path);
    // The kernel's own run-time statistics, per probe, with a cost per event
    // for the probes that fired (page frees always do under churn).
    assert!(stderr.contains("per-probe BPF run time"), "{stderr}");
    let free_row = stderr
        .lines()
        .find(|l| l.starts_with("tp_page_free"))
        .unwrap_or_else(|| panic!("no tp_page_free row: {stderr}"));
    let ns: u64 = free_row
        .split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ns/event in `{free_row}`"));
    assert!(ns > 0, "{free_row}");
    assert!(
        stderr.contains("latency events: n=") && stderr.contains("p99="),
        "{stderr}"
    );
    assert!(stderr.contains("CPU since attach"), "{stderr}");
}

#[test]
fn wakeup_threshold_at_or_above_the_ring_is_refused() {
    // Checked before anything is loaded: no root needed.
    let out = detector()
        .args(["record", "-o", "/nonexistent/x", "--ring-size", "64K"])
        .args(["--wakeup-bytes", "64K"])
        .output()
        .expect("run detector record");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--wakeup-bytes must be smaller than the ring buffer"),
        "{stderr}"
    );
}
