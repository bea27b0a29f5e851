//! The guest's initramfs: busybox-static, the detector and workload binaries
//! with the glibc libraries they link, the kernel modules, and an `/init`
//! written per test. Packed as an uncompressed newc cpio (the Debian kernels
//! refused a gzip one under QEMU).

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::vm_kernel::Module;

const BUSYBOX: &str = "/bin/busybox";

/// Release binaries the guest runs.
pub(crate) struct Binaries {
    pub(crate) detector: PathBuf,
    pub(crate) workloads: Vec<PathBuf>,
}

/// Builds the BPF object (embedded into the detector by its build script),
/// then the detector and every workload binary in release mode.
pub(crate) fn build_binaries(workspace: &Path) -> Result<Binaries> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .args(["run", "--quiet", "-p", "xtask", "--", "build-ebpf"])
        .current_dir(workspace)
        .status()
        .context("running cargo xtask build-ebpf")?;
    if !st.success() {
        bail!("building the BPF object failed (see above); the guest needs a detector with probes");
    }
    let st = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "-p",
            "detector",
            "-p",
            "workloads",
            "--bins",
        ])
        .current_dir(workspace)
        .status()
        .context("running cargo build")?;
    if !st.success() {
        bail!("building the detector and workloads failed (see the cargo output above)");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("release");
    let mut workloads = Vec::new();
    for e in fs::read_dir(workspace.join("workloads/src/bin"))? {
        let p = e?.path();
        if let Some(stem) = p
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|_| p.extension().is_some_and(|x| x == "rs"))
        {
            workloads.push(target.join(stem));
        }
    }
    workloads.sort();
    Ok(Binaries {
        detector: target.join("detector"),
        workloads,
    })
}

/// Shared libraries `ldd` lists for a dynamically linked binary.
fn ldd_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; vdso has no path.
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

fn copy_stripped(src: &Path, dst: &Path) -> Result<()> {
    if let Some(d) = dst.parent() {
        fs::create_dir_all(d)?;
    }
    // Release builds carry debug info (profile.release debug = 1); the guest
    // holds the initramfs in RAM, so drop it.
    let st = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(dst)
        .arg(src)
        .status();
    if !matches!(st, Ok(s) if s.success()) {
        fs::copy(src, dst).with_context(|| format!("copying {}", src.display()))?;
    }
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// A staged root tree, reused by every test of one kernel: only `/init`
/// changes between tests.
pub(crate) struct Stage {
    pub(crate) root: PathBuf,
}

impl Stage {
    pub(crate) fn create(dir: &Path, bins: &Binaries, modules: &[Module]) -> Result<Stage> {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        for d in [
            "bin",
            "sbin",
            "usr/bin",
            "usr/sbin",
            "lib/modules",
            "proc",
            "sys",
            "dev",
            "tmp",
            "out",
            "etc",
        ] {
            fs::create_dir_all(dir.join(d))?;
        }
        if !Path::new(BUSYBOX).exists() {
            bail!("{BUSYBOX} is missing; install busybox-static (`bash .ci/setup`)");
        }
        fs::copy(BUSYBOX, dir.join("bin/busybox"))?;
        symlink("busybox", dir.join("bin/sh"))?;
        let mut libs = BTreeSet::new();
        let all_bins = std::iter::once(&bins.detector).chain(bins.workloads.iter());
        for b in all_bins {
            if !b.exists() {
                bail!("{} was not built", b.display());
            }
            let name = b.file_name().context("binary without a name")?;
            copy_stripped(b, &dir.join("bin").join(name))?;
            libs.extend(ldd_libs(b)?);
        }
        // `inj-<workload>`: exec'd through this name, a workload's comm
        // starts with "inj-", which opts it (and its threads) into the
        // races the 6.12-inject kernel brings back; elsewhere it is a no-op.
        for w in &bins.workloads {
            if let Some(n) = w.file_name().and_then(|n| n.to_str()) {
                symlink(n, dir.join("bin").join(format!("inj-{n}")))?;
            }
        }
        for lib in libs {
            let rel = lib.strip_prefix("/").unwrap_or(&lib);
            let dst = dir.join(rel);
            if let Some(d) = dst.parent() {
                fs::create_dir_all(d)?;
            }
            // Follow symlinks: the guest needs the file under the name ldd printed.
            fs::copy(&lib, &dst).with_context(|| format!("copying {}", lib.display()))?;
        }
        let mut order = String::new();
        for m in modules {
            fs::write(
                dir.join("lib/modules").join(format!("{}.ko", m.name)),
                &m.image,
            )?;
            order.push_str(&m.name);
            order.push('\n');
        }
        fs::write(dir.join("lib/modules/order"), order)?;
        Ok(Stage {
            root: dir.to_path_buf(),
        })
    }

    /// Writes `/init` and packs the tree into `out` (uncompressed newc).
    pub(crate) fn pack(&self, init: &str, out: &Path) -> Result<()> {
        let init_path = self.root.join("init");
        fs::write(&init_path, init)?;
        fs::set_permissions(&init_path, fs::Permissions::from_mode(0o755))?;
        let mut files = Vec::new();
        walk(&self.root, &self.root, &mut files)?;
        let out_file =
            fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut child = Command::new("cpio")
            .args(["--quiet", "-o", "-H", "newc", "-R", "0:0"])
            .current_dir(&self.root)
            .stdin(Stdio::piped())
            .stdout(out_file)
            .spawn()
            .context("running cpio (install cpio)")?;
        {
            let mut stdin = child.stdin.take().context("cpio stdin")?;
            for f in &files {
                writeln!(stdin, "{f}")?;
            }
        }
        if !child.wait()?.success() {
            bail!("cpio failed to pack {}", self.root.display());
        }
        Ok(())
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let p = e.path();
        let rel = p.strip_prefix(base)?.to_string_lossy().into_owned();
        out.push(rel);
        if e.file_type()?.is_dir() {
            walk(base, &p, out)?;
        }
    }
    Ok(())
}
