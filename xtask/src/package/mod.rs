//! `cargo xtask package`: a Debian package of the detector, installable
//! like any system tool: the release binary, man pages and shell
//! completions generated from its clap definition, the hardened systemd
//! unit and the agent's configuration from `packaging/`
//! (docs/packaging.md).
//!
//! The tree is staged the way debhelper would (`target/package/debian/
//! detector/`, with a `debian/control` beside it for dpkg-shlibdeps) and
//! built by `dpkg-deb --build --root-owner-group`, so no root is needed.

pub(crate) mod check;
mod control;
mod pages;

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::ebpf;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Directory to write the .deb into (default: target/package).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Package the release binary as it is: skip building the BPF object
    /// and the binary.
    #[arg(long)]
    pub no_build: bool,
    /// Then test the package on this machine: contents, install with
    /// dpkg -i, run it, the unit's capability set, removal (needs root for
    /// the install; `cargo xtask test` runs this).
    #[arg(long)]
    pub check: bool,
}

/// The agent's configuration file, a conffile: dpkg keeps an edited copy
/// across upgrades and removal.
pub(crate) const CONFFILE: &str = "/etc/detector/agent.toml";
/// Where the unit goes: systemd's search path for package units (the same
/// directory as /lib/systemd/system on a merged-/usr system).
pub(crate) const UNIT_PATH: &str = "/usr/lib/systemd/system/detector.service";

pub(crate) fn run(a: &Args) -> Result<()> {
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| ebpf::root().join("target/package"));
    let deb = build(&out, !a.no_build)?;
    if a.check {
        let outcome = check::run(&deb)?;
        outcome.print();
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ebpf::root().join("target"))
}

/// Builds the package into `out` and returns the .deb's path. With
/// `compile`, builds the BPF object and the release binary first (both
/// incremental).
pub(crate) fn build(out: &Path, compile: bool) -> Result<PathBuf> {
    if compile {
        ebpf::build(&ebpf::Args { debug: false })?;
        println!("==> cargo build --release -p detector --bin detector");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(ebpf::root())
            .args(["build", "--release", "-p", "detector", "--bin", "detector"])
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("building the detector failed (see the cargo output above)");
        }
    }
    let binary = target_dir().join("release/detector");
    if !binary.is_file() {
        bail!(
            "{} does not exist; run `cargo xtask package` without --no-build",
            binary.display()
        );
    }
    let epoch = source_date_epoch();
    let pkgdir = target_dir().join("package/debian");
    let root = pkgdir.join("detector");
    if pkgdir.exists() {
        fs::remove_dir_all(&pkgdir).with_context(|| format!("clearing {}", pkgdir.display()))?;
    }
    let stage = Stage { root: root.clone() };

    // The binary, stripped as dh_strip does: the release profile keeps line
    // tables for the project's own profiling, which a system install does
    // not want (they triple the size).
    let bin = stage.copy(&binary, "usr/bin/detector", 0o755)?;
    run_tool(
        Command::new("strip")
            .args([
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
            ])
            .arg(&bin),
        "strip (binutils)",
    )?;

    let day = date(epoch, "+%F")?;
    for page in pages::man_pages(&day).context("rendering the man pages")? {
        stage.write(&format!("{}.gz", page.path), &gzip(&page.text)?, 0o644)?;
    }
    for (_, page) in pages::completions() {
        stage.write(&page.path, &page.text, 0o644)?;
    }

    let packaging = ebpf::root().join("packaging");
    stage.copy(&packaging.join("detector.service"), &UNIT_PATH[1..], 0o644)?;
    stage.copy(&packaging.join("agent.toml"), &CONFFILE[1..], 0o644)?;

    let version = pages::version();
    let maintainer = maintainer();
    let doc = "usr/share/doc/detector";
    stage.copy(
        &ebpf::root().join("README.md"),
        &format!("{doc}/README.md"),
        0o644,
    )?;
    stage.write(
        &format!("{doc}/copyright"),
        copyright(epoch)?.as_bytes(),
        0o644,
    )?;
    let changelog = format!(
        "detector ({version}) unstable; urgency=medium\n\n  \
         * Built by cargo xtask package from {}.\n\n -- {maintainer}  {}\n",
        git(&["describe", "--always", "--dirty"]).unwrap_or_else(|| "a source tree".into()),
        date(epoch, "-R")?,
    );
    stage.write(
        &format!("{doc}/changelog.gz"),
        &gzip(changelog.as_bytes())?,
        0o644,
    )?;

    // Control area. dpkg-shlibdeps reads debian/control to know which
    // package it works for.
    fs::write(
        pkgdir.join("control"),
        "Source: detector\n\nPackage: detector\nArchitecture: any\n",
    )?;
    let depends = control::depends(target_dir().join("package").as_path(), &bin)?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"), "dpkg")?;
    stage.write(
        "DEBIAN/control",
        control::Control {
            version: &version,
            arch: arch.trim(),
            maintainer: &maintainer,
            installed_size_kib: control::installed_size_kib(&root)?,
            depends: &depends,
        }
        .render()
        .as_bytes(),
        0o644,
    )?;
    stage.write(
        "DEBIAN/conffiles",
        format!("{CONFFILE}\n").as_bytes(),
        0o644,
    )?;
    stage.write("DEBIAN/postinst", control::POSTINST.as_bytes(), 0o755)?;
    stage.write("DEBIAN/prerm", control::PRERM.as_bytes(), 0o755)?;
    stage.write("DEBIAN/postrm", control::POSTRM.as_bytes(), 0o755)?;
    stage.write("DEBIAN/md5sums", stage.md5sums()?.as_bytes(), 0o644)?;
    stage.fix_dir_modes()?;

    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let deb = out.join(format!("detector_{version}_{}.deb", arch.trim()));
    println!(
        "==> dpkg-deb --build --root-owner-group -> {}",
        deb.display()
    );
    run_tool(
        Command::new("dpkg-deb")
            // Timestamps in the archive clamped to the source's date: the
            // same tree packs to the same bytes.
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .args(["--build", "--root-owner-group"])
            .arg(&root)
            .arg(&deb),
        "dpkg-deb",
    )?;
    let size = fs::metadata(&deb)?.len();
    println!(
        "package: {} ({} KiB, {} KiB installed)",
        deb.display(),
        size.div_ceil(1024),
        control::installed_size_kib(&root)?
    );
    Ok(deb)
}

/// The staged package tree.
struct Stage {
    root: PathBuf,
}

impl Stage {
    fn path(&self, rel: &str) -> Result<PathBuf> {
        let p = self.root.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        Ok(p)
    }

    fn write(&self, rel: &str, bytes: &[u8], mode: u32) -> Result<PathBuf> {
        let p = self.path(rel)?;
        fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        Ok(p)
    }

    fn copy(&self, from: &Path, rel: &str, mode: u32) -> Result<PathBuf> {
        let p = self.path(rel)?;
        fs::copy(from, &p)
            .with_context(|| format!("copying {} to {}", from.display(), p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        Ok(p)
    }

    /// Every regular file outside DEBIAN/ but the conffile, relative, with
    /// its MD5 (what `dpkg --verify` checks the install against; dpkg
    /// records conffiles' sums on its own).
    fn md5sums(&self) -> Result<String> {
        let mut files = Vec::new();
        collect_files(&self.root, &self.root, &mut files)?;
        files.retain(|f| !f.starts_with("DEBIAN/") && format!("/{f}") != CONFFILE);
        files.sort();
        output(
            Command::new("md5sum").current_dir(&self.root).args(&files),
            "md5sum",
        )
    }

    /// Directories 0755 whatever the umask made them (the tree ends up
    /// as the installed system's directories).
    fn fix_dir_modes(&self) -> Result<()> {
        fn walk(dir: &Path) -> std::io::Result<()> {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
            for e in fs::read_dir(dir)? {
                let e = e?;
                if e.file_type()?.is_dir() {
                    walk(&e.path())?;
                }
            }
            Ok(())
        }
        walk(&self.root).context("setting directory modes")
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            collect_files(root, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// gzip -9n: maximum compression and no name or time stamp in the header
/// (Debian policy 12.1 for man pages; the same bytes every build).
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running gzip")?;
    let mut stdin = child.stdin.take().context("gzip's stdin")?;
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().context("running gzip")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writing to gzip panicked"))?
        .context("writing to gzip")?;
    if !out.status.success() {
        bail!("gzip failed");
    }
    Ok(out.stdout)
}

/// Whether `program` is on PATH.
fn has(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {what}; is it installed (bash .ci/setup)?"))?;
    if !status.success() {
        bail!("{what} failed (see above)");
    }
    Ok(())
}

fn output(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {what}; is it installed (bash .ci/setup)?"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .current_dir(ebpf::root())
        .args(args)
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// The time every date in the package is taken from: `SOURCE_DATE_EPOCH`
/// when set (the reproducible-builds convention), else the last commit's.
fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .or_else(|| git(&["log", "-1", "--format=%ct"]))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `epoch` formatted by date(1) (`+%F`, `-R`), in UTC.
fn date(epoch: u64, format: &str) -> Result<String> {
    Ok(output(
        Command::new("date")
            .env("LC_ALL", "C")
            .args(["-u", "-d", &format!("@{epoch}"), format]),
        "date",
    )?
    .trim()
    .to_string())
}

/// `DEBFULLNAME <DEBEMAIL>` as Debian's tools take it, else the last
/// commit's author.
fn maintainer() -> String {
    match (std::env::var("DEBFULLNAME"), std::env::var("DEBEMAIL")) {
        (Ok(name), Ok(mail)) if !name.is_empty() && !mail.is_empty() => {
            format!("{name} <{mail}>")
        }
        _ => git(&["log", "-1", "--format=%an <%ae>"])
            .unwrap_or_else(|| "detector maintainers <detector@localhost>".into()),
    }
}

/// The machine-readable copyright file: the project's licence, and the
/// Rust crates linked into the binary with theirs (from `cargo tree`).
fn copyright(epoch: u64) -> Result<String> {
    let tree = output(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(ebpf::root())
            .args([
                "tree",
                "-p",
                "detector",
                "-e",
                "normal,no-proc-macro",
                "--prefix",
                "none",
                "--format",
                "{p}|{l}",
            ]),
        "cargo tree",
    )?;
    // `name v1.2.3|MIT OR Apache-2.0`, ` (*)` after a crate seen before, a
    // path after the version of a crate of this workspace.
    let mut crates: Vec<String> = tree
        .lines()
        .filter_map(|l| {
            let (pkg, licence) = l.trim_end_matches(" (*)").split_once('|')?;
            let mut words = pkg.split_whitespace();
            let (name, version) = (words.next()?, words.next()?);
            (!name.starts_with("detector")).then(|| format!("{name} {version} ({licence})"))
        })
        .collect();
    crates.sort();
    crates.dedup();
    let mut s = String::from(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: detector\n\
         Comment: The binary statically links these Rust crates, each under the\n \
         licence in parentheses:\n",
    );
    for c in &crates {
        s.push_str(&format!(" {c}\n"));
    }
    // Years from the first commit to the source's date (lintian wants a
    // year in the notice).
    let first = git(&["log", "--reverse", "--format=%cd", "--date=format:%Y"])
        .and_then(|l| l.lines().next().map(str::to_string));
    let last = date(epoch, "+%Y")?;
    let years = match first {
        Some(f) if f != last => format!("{f}-{last}"),
        _ => last,
    };
    s.push_str(&LICENCES.replace("@YEARS@", &years));
    Ok(s)
}

const LICENCES: &str = "
Files: *
Copyright: @YEARS@ the detector authors
License: MIT or Apache-2.0

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the \"Software\"), to
 deal in the Software without restriction, including without limitation the
 rights to use, copy, modify, merge, publish, distribute, sublicense, and/or
 sell copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING
 FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS
 IN THE SOFTWARE.

License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
";
