//! The package tier of `cargo xtask test` (`cargo xtask package --check`):
//! the .deb holds what it should with the right modes and metadata, its
//! man pages render and its completions parse; then, as root, it installs
//! with `dpkg -i`, the installed binary runs `doctor`, the unit verifies,
//! the unit's capability set is shown to suffice for a capture (tracepoint
//! mode, what this host allows) and each capability in it is tried away,
//! the system calls that capture makes are checked against the unit's
//! filter, and `dpkg -r` / `dpkg -P` leave the machine as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};

use super::{has, pages, CONFFILE, UNIT_PATH};

/// The uid and gid the capability runs take: `nobody`, standing in for the
/// unit's dynamic user (neither owns anything on the system).
const NOBODY: u32 = 65534;

#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) passed: Vec<String>,
    pub(crate) skipped: Vec<String>,
    /// What the checks measured or found, not judged: the unit's exposure
    /// score, what each capability turned out to be needed for.
    pub(crate) notes: Vec<String>,
}

impl Outcome {
    pub(crate) fn print(&self) {
        for p in &self.passed {
            println!("  passed: {p}");
        }
        for n in &self.notes {
            println!("  note: {n}");
        }
        for s in &self.skipped {
            println!("  skipped: {s}");
        }
    }
}

pub(crate) fn run(deb: &Path) -> Result<Outcome> {
    println!("==> package check: {}", deb.display());
    let mut o = Outcome::default();
    let version = pages::version();
    contents(deb, &version)?;
    o.passed
        .push("package: contents, modes, control fields, conffiles".into());
    lintian(deb, &mut o)?;
    let x = tempfile::tempdir()?;
    run_ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(x.path()))?;
    man_pages_render(x.path())?;
    o.passed
        .push("package: man pages render with groff -ww, no warning".into());
    completions_parse(x.path(), &mut o)?;
    let unit_text = std::fs::read_to_string(x.path().join(&UNIT_PATH[1..]))?;
    let unit = Unit::parse(&unit_text);

    if !is_root() {
        o.skipped
            .push("package: install, run and removal: dpkg -i needs root".into());
        return Ok(o);
    }
    if let Some(status) = status() {
        o.skipped.push(format!(
            "package: install: a detector package is already on this machine ({status}); the \
             test would replace it"
        ));
        return Ok(o);
    }
    let installed = Installed::install(deb)?;
    installed_checks(&version, &mut o)?;
    unit_checks(&mut o)?;
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        o.skipped
            .push("package: the unit's capability set: the kernel has no BTF".into());
    } else if !has("setpriv") || !has("prlimit") {
        o.skipped.push(
            "package: the unit's capability set: setpriv and prlimit (util-linux) are missing"
                .into(),
        );
    } else {
        capability_checks(&unit, &mut o)?;
        if has("strace") && has("systemd-analyze") {
            syscall_check(&unit, &mut o)?;
        } else {
            o.skipped.push(
                "package: the unit's system call filter: strace or systemd-analyze is missing \
                 (bash .ci/setup installs both)"
                    .into(),
            );
        }
    }
    installed.remove_and_purge()?;
    o.passed
        .push("package: dpkg -r keeps the conffile, dpkg -P removes everything".into());
    Ok(o)
}

/// Whether this process's effective uid is 0 (the `Uid:` line of
/// /proc/self/status: real, effective, saved, filesystem).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Runs `cmd`, failing with its stderr unless it succeeds; returns stdout.
fn run_ok(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every file the package must hold, with its mode as `dpkg-deb -c` shows
/// it; nothing else may be in it.
fn expected_files() -> Vec<(String, &'static str)> {
    const EXEC: &str = "-rwxr-xr-x";
    const DATA: &str = "-rw-r--r--";
    let mut files = vec![("/usr/bin/detector".to_string(), EXEC)];
    for page in std::iter::once("detector".to_string()).chain(pages::subcommand_pages()) {
        files.push((format!("/usr/share/man/man1/{page}.1.gz"), DATA));
    }
    for (_, c) in pages::completions() {
        files.push((format!("/{}", c.path), DATA));
    }
    for f in [
        UNIT_PATH,
        CONFFILE,
        "/usr/share/doc/detector/README.md",
        "/usr/share/doc/detector/copyright",
        "/usr/share/doc/detector/changelog.gz",
    ] {
        files.push((f.to_string(), DATA));
    }
    files
}

fn contents(deb: &Path, version: &str) -> Result<()> {
    let listing = run_ok(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    // `-rwxr-xr-x root/root 6123456 2026-12-02 03:46 ./usr/bin/detector`
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [mode, owner, _, _, _, path, ..] = f[..] else {
            bail!("unexpected dpkg-deb -c line: {line}");
        };
        ensure!(owner == "root/root", "{path} is owned by {owner}: {line}");
        if !mode.starts_with('d') {
            found.insert(path.trim_start_matches('.').to_string(), mode.to_string());
        } else {
            ensure!(mode == "drwxr-xr-x", "directory {path} has mode {mode}");
        }
    }
    let expected = expected_files();
    for (path, mode) in &expected {
        match found.get(path) {
            Some(m) => ensure!(m == mode, "{path} has mode {m}, not {mode}"),
            None => bail!("the package has no {path}:\n{listing}"),
        }
    }
    for path in found.keys() {
        ensure!(
            expected.iter().any(|(p, _)| p == path),
            "the package holds {path}, which it should not"
        );
    }

    let fields = run_ok(Command::new("dpkg-deb").arg("-f").arg(deb).args([
        "Package",
        "Version",
        "Architecture",
        "Depends",
    ]))?;
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .to_string()
    };
    ensure!(field("Package") == "detector", "{fields}");
    ensure!(field("Version") == version, "{fields}");
    let arch = run_ok(Command::new("dpkg").arg("--print-architecture"))?;
    ensure!(field("Architecture") == arch.trim(), "{fields}");
    // The binary links glibc at least; the C library must be a dependency.
    ensure!(
        field("Depends").split(", ").any(|d| d.starts_with("libc6")),
        "Depends lacks the C library: {fields}"
    );
    let conffiles = run_ok(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"))?;
    ensure!(
        conffiles.trim() == CONFFILE,
        "conffiles is {conffiles:?}, not {CONFFILE}"
    );
    Ok(())
}

/// Debian's package checker finds no error and no warning; its
/// informational tags are reported.
fn lintian(deb: &Path, o: &mut Outcome) -> Result<()> {
    if !has("lintian") {
        o.skipped
            .push("package: lintian is not installed (bash .ci/setup installs it)".into());
        return Ok(());
    }
    println!("==> lintian {}", deb.display());
    let out = Command::new("lintian")
        .args(["--display-info", "--pedantic", "--fail-on", "error,warning"])
        .arg(deb)
        .output()
        .context("running lintian")?;
    let report = String::from_utf8_lossy(&out.stdout);
    let serious: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    ensure!(
        serious.is_empty(),
        "lintian reports:\n{}",
        serious.join("\n")
    );
    // Non-zero also when lintian itself fails.
    ensure!(
        out.status.success(),
        "lintian failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    o.passed
        .push("package: lintian (pedantic) reports no error or warning".into());
    for l in report
        .lines()
        .filter(|l| l.starts_with("I: ") || l.starts_with("P: "))
    {
        o.notes.push(format!("lintian {l}"));
    }
    Ok(())
}

/// Every man page decompresses and renders with groff's warnings all on
/// (`-ww`) without a single one, and has the sections a page needs.
fn man_pages_render(root: &Path) -> Result<()> {
    let dir = root.join("usr/share/man/man1");
    let mut n = 0;
    for e in std::fs::read_dir(&dir)? {
        let path = e?.path();
        let text = run_ok(Command::new("gzip").arg("-dc").arg(&path))?;
        for section in [".TH ", ".SH NAME", ".SH SYNOPSIS", ".SH \"SEE ALSO\""] {
            ensure!(
                text.contains(section),
                "{} has no {section}",
                path.display()
            );
        }
        let mut groff = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running groff (groff-base)")?;
        if let Some(mut stdin) = groff.stdin.take() {
            std::io::Write::write_all(&mut stdin, text.as_bytes())?;
        }
        let out = groff.wait_with_output()?;
        let warnings = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && warnings.trim().is_empty(),
            "{} does not render cleanly: {warnings}",
            path.display()
        );
        n += 1;
    }
    ensure!(n > 1, "no man pages in {}", dir.display());
    Ok(())
}

/// Each completion script passes its shell's syntax check, for the shells
/// installed here.
fn completions_parse(root: &Path, o: &mut Outcome) -> Result<()> {
    for (shell, page) in pages::completions() {
        let shell = shell.to_string();
        let check = if shell == "fish" {
            "--no-execute"
        } else {
            "-n"
        };
        if !has(&shell) {
            o.skipped.push(format!(
                "package: the {shell} completion's syntax: {shell} is not installed"
            ));
            continue;
        }
        run_ok(Command::new(&shell).arg(check).arg(root.join(&page.path)))?;
        o.passed
            .push(format!("package: the {shell} completion parses"));
    }
    Ok(())
}

/// dpkg's view of the detector package, if it knows one (installed, or
/// removed with its conffile left).
fn status() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "detector"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty() && !s.ends_with("not-installed")).then_some(s)
}

/// The package installed by this check; purged again however the check
/// ends.
struct Installed {
    removed: bool,
}

impl Installed {
    fn install(deb: &Path) -> Result<Self> {
        println!("==> dpkg -i {}", deb.display());
        run_ok(Command::new("dpkg").arg("-i").arg(deb))?;
        Ok(Installed { removed: false })
    }

    fn remove_and_purge(mut self) -> Result<()> {
        println!("==> dpkg -r detector; dpkg -P detector");
        run_ok(Command::new("dpkg").args(["-r", "detector"]))?;
        ensure!(
            !Path::new("/usr/bin/detector").exists(),
            "dpkg -r left /usr/bin/detector"
        );
        ensure!(
            Path::new(CONFFILE).exists(),
            "dpkg -r removed the conffile {CONFFILE}"
        );
        ensure!(
            status().as_deref() == Some("deinstall ok config-files"),
            "after dpkg -r: {:?}",
            status()
        );
        run_ok(Command::new("dpkg").args(["-P", "detector"]))?;
        self.removed = true;
        for gone in [
            "/etc/detector",
            UNIT_PATH,
            "/usr/share/man/man1/detector.1.gz",
            "/usr/share/doc/detector",
        ] {
            ensure!(!Path::new(gone).exists(), "dpkg -P left {gone}");
        }
        ensure!(status().is_none(), "after dpkg -P: {:?}", status());
        Ok(())
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.removed {
            let _ = Command::new("dpkg")
                .args(["-P", "detector"])
                .stdout(Stdio::null())
                .status();
        }
    }
}

fn installed_checks(version: &str, o: &mut Outcome) -> Result<()> {
    ensure!(
        status().as_deref() == Some("install ok installed"),
        "after dpkg -i: {:?}",
        status()
    );
    let v = run_ok(Command::new("/usr/bin/detector").arg("--version"))?;
    ensure!(v.trim() == format!("detector {version}"), "--version: {v}");
    let help = run_ok(Command::new("/usr/bin/detector").arg("--help"))?;
    for sub in pages::subcommand_pages() {
        let name = sub.trim_start_matches("detector-");
        ensure!(help.contains(name), "--help does not list {name}: {help}");
        let page = run_ok(Command::new("man").args(["-w", &sub]))?;
        ensure!(
            page.trim() == format!("/usr/share/man/man1/{sub}.1.gz"),
            "man -w {sub}: {page}"
        );
    }
    // dpkg's record of every file's checksum matches what is on disk.
    let verify = run_ok(Command::new("dpkg").args(["--verify", "detector"]))?;
    ensure!(verify.trim().is_empty(), "dpkg --verify: {verify}");
    let complete = run_ok(Command::new("bash").args([
        "-c",
        "source /usr/share/bash-completion/completions/detector && complete -p detector",
    ]))?;
    ensure!(
        complete.contains("complete") && complete.trim_end().ends_with(" detector"),
        "bash completion: {complete}"
    );
    o.passed.push(
        "package: installed; --version, --help, man -w, dpkg --verify, bash completion".into(),
    );

    println!("==> /usr/bin/detector doctor");
    let doctor = run_ok(Command::new("/usr/bin/detector").arg("doctor"))?;
    // `3 fentry/fexit, 0 kprobe, 2 tracepoint, 11 unavailable`
    let summary = doctor
        .lines()
        .find(|l| l.contains(" fentry/fexit, ") && l.contains(" unavailable"))
        .with_context(|| format!("doctor printed no probe summary: {doctor}"))?;
    let counts: Vec<u64> = summary
        .split(", ")
        .filter_map(|part| part.split_whitespace().next()?.parse().ok())
        .collect();
    ensure!(
        counts.len() == 4 && counts[..3].iter().sum::<u64>() > 0,
        "doctor attached no probe: {summary}"
    );
    o.passed
        .push("package: the installed detector doctor attaches probes".into());
    o.notes.push(format!("installed doctor: {summary}"));
    Ok(())
}

/// systemd's own checks of the installed unit: `verify` must say nothing,
/// and the `security` exposure score is reported.
fn unit_checks(o: &mut Outcome) -> Result<()> {
    if !has("systemd-analyze") {
        o.skipped.push(
            "package: systemd-analyze verify: systemd is not installed (bash .ci/setup)".into(),
        );
        return Ok(());
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", UNIT_PATH])
        .output()
        .context("running systemd-analyze verify")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {UNIT_PATH}: {said}"
    );
    o.passed
        .push("package: systemd-analyze verify accepts the installed unit".into());
    let security = run_ok(Command::new("systemd-analyze").args([
        "security",
        "--offline=true",
        "--no-pager",
        UNIT_PATH,
    ]))?;
    if let Some(score) = security
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for detector.service: "))
    {
        o.notes.push(format!(
            "systemd-analyze security: exposure {} (0 = fully confined, 10 = none)",
            score.1.trim()
        ));
    }
    Ok(())
}

/// The unit's directives that matter here, in file order.
struct Unit {
    directives: Vec<(String, String, String)>,
}

impl Unit {
    fn parse(text: &str) -> Self {
        let mut section = String::new();
        let mut directives = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_string();
            } else if let Some((k, v)) = line
                .split_once('=')
                .filter(|_| !line.starts_with('#') && !line.starts_with(';'))
            {
                directives.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
            }
        }
        Unit { directives }
    }

    fn values(&self, key: &str) -> Vec<&str> {
        self.directives
            .iter()
            .filter(|(s, k, _)| s == "Service" && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// `AmbientCapabilities=`, as capability names.
    fn ambient(&self) -> Vec<String> {
        self.values("AmbientCapabilities")
            .iter()
            .flat_map(|v| v.split_whitespace())
            .map(str::to_string)
            .collect()
    }
}

/// One capture as the unit's user: `nobody`, no groups, exactly `caps` as
/// ambient (hence effective and permitted) capabilities and nothing else
/// in the bounding set, no new privileges, and (when `memlock` says this
/// machine allows it) locked memory unlimited as `LimitMEMLOCK=infinity`
/// sets it. `strace` prefixes the command when given.
struct CapRun {
    ok: bool,
    stderr: String,
    /// vmemmap_base as the trace header recorded it (0: /proc/kallsyms
    /// showed no address).
    vmemmap_base: u64,
    /// `detector: capabilities kept after attaching: ...`.
    kept: String,
}

struct Runner<'a> {
    dir: &'a Path,
    memlock: bool,
}

/// Whether this machine's root may lift RLIMIT_MEMLOCK as systemd does
/// for the unit (a container's root may lack CAP_SYS_RESOURCE).
fn can_lift_memlock() -> bool {
    Command::new("prlimit")
        .args(["--memlock=unlimited:unlimited", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn capture_as_unit_user(r: &Runner<'_>, caps: &[String], strace: Option<&Path>) -> Result<CapRun> {
    let dir = r.dir;
    let trace = dir.join("x.trace");
    let _ = std::fs::remove_file(&trace);
    let set = caps
        .iter()
        .map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<String>();
    let mut cmd = match strace {
        Some(prefix) => {
            let mut c = Command::new("strace");
            c.args(["-f", "-ff", "-qq", "-o"]).arg(prefix);
            c
        }
        None => Command::new("env"),
    };
    if r.memlock {
        cmd.args(["prlimit", "--memlock=unlimited:unlimited"]);
    }
    cmd.arg("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps=-all{set}"))
        .arg(format!("--ambient-caps=-all{set}"))
        .arg(format!("--bounding-set=-all{set}"))
        .arg("--no-new-privs")
        .args([
            "/usr/bin/detector",
            "record",
            "--attach",
            "tracepoint",
            "--duration",
            "2s",
            "-o",
        ])
        .arg(&trace)
        .current_dir(dir)
        .stdin(Stdio::null());
    let out = cmd.output().context("running setpriv")?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let kept = stderr
        .lines()
        .find_map(|l| l.strip_prefix("detector: capabilities kept after attaching: "))
        .unwrap_or("-")
        .to_string();
    let mut run = CapRun {
        ok: out.status.success(),
        stderr,
        vmemmap_base: 0,
        kept,
    };
    if run.ok {
        let (header, _, end) = detector::trace::read_all(&trace)
            .with_context(|| format!("reading back {}", trace.display()))?;
        ensure!(end.is_complete(), "the capture has no footer: {end:?}");
        run.vmemmap_base = header.layout.get("vmemmap_base_sym").copied().unwrap_or(0);
    }
    Ok(run)
}

/// A directory only the unit's user may use, as `StateDirectoryMode=0700`
/// makes /var/lib/detector.
fn private_dir() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// The unit's `AmbientCapabilities` suffice for a capture; then each is
/// taken away in turn to show what it is for: CAP_BPF and CAP_PERFMON are
/// required to load at all, CAP_SYSLOG is what shows /proc/kallsyms'
/// addresses (vmemmap_base). A capability with no visible effect in
/// tracepoint mode (the only mode this host allows) is reported as such.
fn capability_checks(unit: &Unit, o: &mut Outcome) -> Result<()> {
    let caps = unit.ambient();
    let bounding: BTreeSet<String> = unit
        .values("CapabilityBoundingSet")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(str::to_string)
        .collect();
    ensure!(
        bounding == caps.iter().cloned().collect(),
        "the unit's bounding set {bounding:?} differs from its ambient set {caps:?}"
    );
    let dir = private_dir()?;
    let runner = Runner {
        dir: dir.path(),
        memlock: can_lift_memlock(),
    };
    if !runner.memlock {
        o.notes.push(
            "root here may not lift RLIMIT_MEMLOCK (no CAP_SYS_RESOURCE): the capability runs \
             keep its limit instead of the unit's LimitMEMLOCK=infinity (a kernel that charges \
             BPF memory to the memory cgroup, 5.11 and later, ignores it)"
                .into(),
        );
    }
    println!(
        "==> detector record as uid {NOBODY} with {}",
        caps.join(" ")
    );
    let full = capture_as_unit_user(&runner, &caps, None)?;
    ensure!(
        full.ok,
        "a capture with the unit's capabilities ({}) failed: {}",
        caps.join(" "),
        full.stderr
    );
    // What root sees is what the unit's user must see.
    let root_sees = detector::loader::kernel_variables(["vmemmap_base"])[0] != 0;
    ensure!(
        !root_sees || full.vmemmap_base != 0,
        "with the unit's capabilities /proc/kallsyms showed no vmemmap_base, which root sees"
    );
    o.passed.push(format!(
        "package: a capture as an unprivileged user with exactly the unit's capabilities ({}) \
         works; kept after attaching: {}",
        caps.join(" "),
        full.kept
    ));
    for cap in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != cap).cloned().collect();
        let r = capture_as_unit_user(&runner, &fewer, None)?;
        let effect = if !r.ok {
            let why = r
                .stderr
                .lines()
                .find(|l| l.starts_with("detector: "))
                .unwrap_or("")
                .to_string();
            format!("required: without it the capture fails ({why})")
        } else if full.vmemmap_base != 0 && r.vmemmap_base == 0 {
            "needed for /proc/kallsyms: without it vmemmap_base reads as 0".to_string()
        } else if cap == "CAP_SYSLOG" && !root_sees {
            "not exercised here: this kernel has no vmemmap_base symbol to read from \
             /proc/kallsyms"
                .to_string()
        } else {
            "no visible effect in tracepoint mode (the other attach modes are not available on \
             this host)"
                .to_string()
        };
        if matches!(cap.as_str(), "CAP_BPF" | "CAP_PERFMON") {
            ensure!(
                !r.ok,
                "the capture worked without {cap}: the unit grants it for nothing"
            );
        }
        if cap == "CAP_SYSLOG" && root_sees {
            ensure!(
                r.ok && r.vmemmap_base == 0,
                "without CAP_SYSLOG the capture {}; the unit grants it for /proc/kallsyms",
                if r.ok {
                    "still read vmemmap_base"
                } else {
                    "failed"
                }
            );
        }
        o.notes.push(format!("{cap}: {effect}"));
    }
    Ok(())
}

/// The system calls a capture as the unit's user makes, from `strace`
/// (every thread, from the exec of the detector on), must all pass the
/// unit's `SystemCallFilter=` as systemd expands its groups.
fn syscall_check(unit: &Unit, o: &mut Outcome) -> Result<()> {
    let allowed = allowed_syscalls(&unit.values("SystemCallFilter"))?;
    let dir = private_dir()?;
    let runner = Runner {
        dir: dir.path(),
        memlock: can_lift_memlock(),
    };
    let logs = tempfile::tempdir()?;
    let prefix = logs.path().join("st");
    println!("==> strace of the same capture");
    let r = capture_as_unit_user(&runner, &unit.ambient(), Some(&prefix))?;
    ensure!(r.ok, "the capture under strace failed: {}", r.stderr);
    let used = syscalls_after_exec(logs.path(), "/usr/bin/detector")?;
    ensure!(!used.is_empty(), "strace recorded no system call");
    let blocked: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    ensure!(
        blocked.is_empty(),
        "the unit's SystemCallFilter would refuse {blocked:?} (a capture calls them)"
    );
    o.passed.push(format!(
        "package: all {} system calls a tracepoint capture makes pass the unit's filter",
        used.len()
    ));
    o.notes.push(format!(
        "system calls of a capture: {}",
        used.iter().cloned().collect::<Vec<_>>().join(" ")
    ));
    Ok(())
}

/// The set `SystemCallFilter=` lines allow, with systemd's rules: the
/// first line is an allow list (no `~`), later lines add to it or (with
/// `~`) take from it; `@group`s expand through `systemd-analyze`.
fn allowed_syscalls(lines: &[&str]) -> Result<BTreeSet<String>> {
    let mut allowed = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        let (deny, items) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, *line),
        };
        ensure!(
            i > 0 || !deny,
            "the unit's first SystemCallFilter= is a deny list; this check expects an allow list"
        );
        for item in items.split_whitespace() {
            let names = if item.starts_with('@') {
                expand_group(item, &mut BTreeSet::new())?
            } else {
                BTreeSet::from([item.to_string()])
            };
            if deny {
                allowed.retain(|s| !names.contains(s));
            } else {
                allowed.extend(names);
            }
        }
    }
    Ok(allowed)
}

fn expand_group(group: &str, seen: &mut BTreeSet<String>) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    if !seen.insert(group.to_string()) {
        return Ok(out);
    }
    let text =
        run_ok(Command::new("systemd-analyze").args(["syscall-filter", "--no-pager", group]))?;
    for line in text.lines().skip(1) {
        let item = line.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        if item.starts_with('@') {
            out.extend(expand_group(item, seen)?);
        } else {
            out.insert(item.to_string());
        }
    }
    Ok(out)
}

/// System call names in `strace -ff` logs (one file per task): in the
/// file whose task executed `program`, those from that exec on; every
/// call of the other tasks, which that program started.
fn syscalls_after_exec(dir: &Path, program: &str) -> Result<BTreeSet<String>> {
    let exec = format!("execve(\"{program}\"");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    let texts: Vec<String> = files
        .iter()
        .map(std::fs::read_to_string)
        .collect::<std::io::Result<_>>()?;
    let main = texts
        .iter()
        .position(|t| {
            t.lines()
                .any(|l| l.starts_with(&exec) && l.ends_with("= 0"))
        })
        .with_context(|| format!("no strace log shows the exec of {program}"))?;
    let mut names = BTreeSet::new();
    for (i, text) in texts.iter().enumerate() {
        let from = if i == main {
            text.lines()
                .position(|l| l.starts_with(&exec) && l.ends_with("= 0"))
                .unwrap_or(0)
        } else {
            0
        };
        for line in text.lines().skip(from) {
            if let Some(name) = syscall_name(line) {
                names.insert(name.to_string());
            }
        }
    }
    Ok(names)
}

/// `openat(AT_FDCWD, ...) = 3` -> `openat`; signals, exits and resumed
/// halves of calls are not calls.
fn syscall_name(line: &str) -> Option<&str> {
    let (name, _) = line.split_once('(')?;
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = include_str!("../../../packaging/detector.service");

    #[test]
    fn every_directive_of_the_unit_follows_a_comment() {
        // A block of directives (lines up to a blank one) starts with a
        // comment saying why; section headers need none.
        let mut justified = false;
        for line in UNIT.lines().map(str::trim) {
            if line.is_empty() {
                justified = false;
            } else if line.starts_with('#') {
                justified = true;
            } else if line.starts_with('[') {
                justified = false;
            } else {
                let key = line.split('=').next().unwrap_or(line);
                if ["Description", "Documentation", "WantedBy"].contains(&key) {
                    continue;
                }
                assert!(justified, "no comment explains {line}");
            }
        }
    }

    #[test]
    fn the_unit_grants_the_same_capabilities_it_bounds() {
        let unit = Unit::parse(UNIT);
        let ambient: BTreeSet<String> = unit.ambient().into_iter().collect();
        let bounding: BTreeSet<String> = unit
            .values("CapabilityBoundingSet")
            .iter()
            .flat_map(|v| v.split_whitespace())
            .map(str::to_string)
            .collect();
        assert_eq!(ambient, bounding);
        assert!(ambient.contains("CAP_BPF") && ambient.contains("CAP_PERFMON"));
        assert!(!ambient.contains("CAP_SYS_ADMIN"));
        assert_eq!(
            unit.values("ExecStart"),
            ["/usr/bin/detector agent --config /etc/detector/agent.toml"]
        );
        assert_eq!(unit.values("StateDirectory"), ["detector"]);
        assert_eq!(unit.values("UMask"), ["0077"]);
    }

    #[test]
    fn strace_lines_name_their_call() {
        assert_eq!(
            syscall_name("openat(AT_FDCWD, \"/x\", O_RDONLY) = 3"),
            Some("openat")
        );
        assert_eq!(
            syscall_name("bpf(BPF_MAP_CREATE, {...}, 72) = 4"),
            Some("bpf")
        );
        assert_eq!(syscall_name("--- SIGCHLD {si_signo=SIGCHLD} ---"), None);
        assert_eq!(syscall_name("+++ exited with 0 +++"), None);
        assert_eq!(syscall_name("<... futex resumed>) = 0"), None);
    }

    #[test]
    fn syscalls_count_from_the_exec_of_the_program() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("st.100"),
            "setresuid(65534, 65534, -1) = 0\n\
             execve(\"/usr/bin/detector\", [\"detector\"], 0x7ff /* 3 vars */) = 0\n\
             bpf(BPF_PROG_LOAD, {...}, 148) = 5\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("st.101"), "futex(0x1, FUTEX_WAIT) = 0\n").unwrap();
        let names = syscalls_after_exec(dir.path(), "/usr/bin/detector").unwrap();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["bpf", "execve", "futex"]
        );
    }
}
