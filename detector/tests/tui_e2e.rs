//! End to end: the built `detector live --replay` runs inside tmux; keys are
//! sent the way a person types them and the screen is read back with
//! `tmux capture-pane`. Waits are deadlines for the screen to show
//! something, never timing assertions.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

mod tui_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_detector");
/// Generous: a loaded CI machine may be slow to start the binary.
const DEADLINE: Duration = Duration::from_secs(30);

fn have_tmux() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A private tmux server (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(cmd: &str, w: u16, h: u16) -> Tmux {
        let socket = format!("detector-e2e-{}-{}", std::process::id(), w);
        let t = Tmux { socket };
        let ok = t
            .tmux(&[
                "new-session",
                "-d",
                "-s",
                "ui",
                "-x",
                &w.to_string(),
                "-y",
                &h.to_string(),
                cmd,
            ])
            .status
            .success();
        assert!(ok, "tmux new-session failed");
        t
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("run tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "ui"]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "ui"];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success());
    }

    /// Types literal text (no key-name lookup).
    fn text(&self, s: &str) {
        assert!(self
            .tmux(&["send-keys", "-t", "ui", "-l", s])
            .status
            .success());
    }

    /// Waits until the screen shows `needle`; returns that screen.
    fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(needle) {
                return s;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "screen never showed {needle:?}; last screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the screen no longer shows `needle`.
    fn wait_without(&self, needle: &str) {
        let start = Instant::now();
        while self.screen().contains(needle) {
            assert!(start.elapsed() < DEADLINE, "screen kept showing {needle:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_gone(&self) {
        let start = Instant::now();
        while self.tmux(&["has-session", "-t", "ui"]).status.success() {
            assert!(
                start.elapsed() < DEADLINE,
                "the UI did not exit; screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

fn trace(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("aba.dtr");
    tui_support::write_trace(&path, &tui_support::stream(3000));
    path
}

#[test]
fn replay_in_tmux_switch_views_drill_filter_quit() {
    if !have_tmux() {
        eprintln!("tmux is not installed (.ci/setup installs it); skipping the end-to-end UI test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = trace(dir.path());
    let status = dir.path().join("status");
    let cmd = format!(
        "{BIN} live --replay {} --speed max; echo $? > {}",
        path.display(),
        status.display()
    );
    let t = Tmux::start(&cmd, 150, 40);

    // Overview: the plan, rates, the loss in red, the end of the replay.
    let s = t.wait_for("ended: end of trace");
    assert!(s.contains("swap_cache_get_folio"), "{s}");
    assert!(s.contains("lost 17"), "{s}");
    assert!(s.contains("1 violation"), "{s}");

    // Findings list, then the evidence chain.
    t.keys(&["2"]);
    let s = t.wait_for("findings: 1 in 1 group(s), newest first");
    assert!(
        s.contains("swap_entry_aba") && s.contains("uffd-mover/4242"),
        "{s}"
    );
    t.keys(&["Enter"]);
    let s = t.wait_for("evidence timeline");
    assert!(s.contains("VIOLATION"), "{s}");
    assert!(s.contains("PTE recheck passed on a reused entry"), "{s}");
    assert!(s.contains("kswapd0/77"), "{s}");
    t.keys(&["Escape"]);
    t.wait_for("findings: 1 in 1 group(s), newest first");

    // A filter that matches nothing, then one that matches.
    t.keys(&["/"]);
    t.text("pid:9001");
    t.keys(&["Enter"]);
    t.wait_for("no finding matches the filter");
    // Each Escape is followed by a wait for its effect: an Escape and the
    // next key in one read would be taken for an Alt chord.
    t.keys(&["Escape"]);
    t.wait_for("findings: 1 in 1 group(s), newest first");
    t.keys(&["/"]);
    t.text("comm:uffd");
    t.keys(&["Enter"]);
    let s = t.wait_for("groups matching `comm:uffd`: 1 of 1");
    assert!(s.contains("swap_entry_aba"), "{s}");

    // Objects: look up the reused entry.
    t.keys(&["Escape"]);
    t.wait_for("findings: 1 in 1 group(s), newest first");
    t.keys(&["3"]);
    t.wait_for("recent objects");
    t.keys(&["/"]);
    t.text("0:0x1a2b");
    t.keys(&["Enter"]);
    let s = t.wait_for("generation 1");
    assert!(s.contains("looked up by: uffd-mover/4242"), "{s}");

    // Windows, help, pause.
    t.keys(&["4"]);
    t.wait_for("move_pages lookup->close");
    t.keys(&["?"]);
    t.wait_for("pause the display");
    t.keys(&["Escape"]);
    t.wait_without("pause the display");
    t.keys(&["p"]);
    t.wait_for("PAUSED");

    t.keys(&["q"]);
    t.wait_gone();
    let code = std::fs::read_to_string(&status).unwrap();
    assert_eq!(code.trim(), "0", "exit status");
}

#[test]
fn tiny_terminal_says_so() {
    if !have_tmux() {
        eprintln!("tmux is not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = trace(dir.path());
    let t = Tmux::start(
        &format!("{BIN} live --replay {} --speed max", path.display()),
        40,
        10,
    );
    t.wait_for("terminal too small");
    // Growing the window brings the UI back.
    t.tmux(&["resize-window", "-t", "ui", "-x", "120", "-y", "30"]);
    t.wait_for("swap_cache_lookup");
    t.keys(&["C-c"]);
    t.wait_gone();
}

#[test]
fn without_a_terminal_it_says_so_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = trace(dir.path());
    let out = Command::new(BIN)
        .args(["live", "--replay"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal"), "{err}");
    assert!(
        err.contains("detector record") && err.contains("--plain"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
}

#[test]
fn plain_stream_prints_one_line_per_finding() {
    let dir = tempfile::tempdir().unwrap();
    let path = trace(dir.path());
    let rec = dir.path().join("again.dtr");
    let out = Command::new(BIN)
        .args(["live", "--plain", "--speed", "0", "--replay"])
        .arg(&path)
        .arg("--record")
        .arg(&rec)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(
        lines[0].contains("#1 violation swap_entry_aba [entry 0:0x1a2b"),
        "{stdout}"
    );
    assert!(lines[0].contains("task=uffd-mover/4242"), "{stdout}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lost events: swap_cache_lookup total 17"),
        "{err}"
    );
    // What was watched was recorded, and replays to the same finding.
    let again = Command::new(BIN)
        .args(["live", "--plain", "--speed", "max", "--replay"])
        .arg(&rec)
        .output()
        .unwrap();
    assert!(again.status.success(), "{again:?}");
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
}
